"""Access ``atomo_core`` as ComfyUI loaded it (inside our package), so isinstance checks agree in host tests."""

from __future__ import annotations


def core(ours):
    return ours("atomo_core")
