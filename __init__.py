"""ComfyUI-AtomoVideo: image-to-video for SD-1.5 (AtomoVideo, arXiv 2403.01800) as ComfyUI nodes.

ComfyUI imports this file as a package and calls ``comfy_entrypoint`` (V3 node schema). Outside ComfyUI
(tests, tools) importing it does nothing but define the entry point, so ``atomo_core`` stays usable alone.
"""

from __future__ import annotations

try:
    from comfy_api.latest import ComfyExtension
except ImportError:  # not running inside ComfyUI
    ComfyExtension = None

if ComfyExtension is not None:

    class AtomoVideoExtension(ComfyExtension):
        async def get_node_list(self):
            from .nodes import node_list

            return node_list()

    async def comfy_entrypoint() -> AtomoVideoExtension:
        return AtomoVideoExtension()
