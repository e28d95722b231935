"""Motion LoRAs: low-rank updates of a motion module's temporal attention (AnimateDiff's v2 camera LoRAs).

The released files (``v2_lora_PanLeft.ckpt``, ``..._ZoomIn``, ``..._TiltUp``, ``..._RollingClockwise``, ...) hold,
for every temporal attention ``...motion_modules.M.temporal_transformer.transformer_blocks.0.attention_blocks.N``,
the pairs ``processor.to_{q,k,v,out}_lora.{down,up}.weight`` (``down [r, C]``, ``up [C, r]``, rank 64 in the
released files), and nothing else. AnimateDiff applies them as ``W <- W + alpha * up @ down`` on ``to_q``, ``to_k``,
``to_v`` and ``to_out.0`` (no rank scaling; ``alpha`` is the strength, 1.0 in its configs). A file that also has
``<pair>.alpha`` keys (the kohya convention) is scaled by ``alpha / rank``, as ComfyUI does for every LoRA.

``motion_lora_targets`` reads a file's pairs and maps each to the motion-module weight it updates (the key map
ComfyUI's LoRA loader takes), refusing files that are something else with a message that says what they are.
The maths (``merged_weight``) is here for tests and tools; in ComfyUI the weight patching does it.
"""

from __future__ import annotations

import re

import torch

from .errors import MotionModuleFormatError

_PAIR = re.compile(r"^(?P<prefix>.*\.attention_blocks\.\d+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\."
                   r"(?P<side>down|up)\.weight$")
_TARGET = {"to_q": "to_q.weight", "to_k": "to_k.weight", "to_v": "to_v.weight", "to_out": "to_out.0.weight"}


class MotionLoRAError(MotionModuleFormatError):
    """A file given as a motion LoRA is not one, or does not fit the attached motion module."""


def _is_lora_key(key: str) -> bool:
    return any(s in key for s in ("_lora.", "lora_down", "lora_up", ".lora.", "lora_A", "lora_B"))


def _describe_other(state_dict: dict[str, torch.Tensor], name: str) -> str:
    keys = list(state_dict)
    if any(_is_lora_key(k) for k in keys):
        if any(k.startswith("lora_unet_") or k.startswith("lora_te") for k in keys) or not any(
                ".motion_modules." in k for k in keys):
            return (f"'{name}' is a LoRA for the image layers (an ordinary SD LoRA, or the AnimateDiff v3 domain "
                    "adapter v3_sd15_adapter.ckpt), not a motion LoRA. Load it with ComfyUI's LoraLoaderModelOnly "
                    "(or Load LoRA) on the checkpoint's MODEL.")
        return (f"'{name}' is a LoRA for motion-module layers other than the temporal attention's q/k/v/out "
                "projections, a layout no released motion LoRA has; it cannot be applied here.")
    if any(".motion_modules." in k for k in keys):
        return (f"'{name}' is a motion module, not a motion LoRA. Load it with Load Motion Module; this node takes "
                "the small camera-motion LoRAs (e.g. v2_lora_ZoomIn.ckpt).")
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in keys):
        return f"'{name}' is a whole checkpoint, not a motion LoRA. Load it with Load Checkpoint."
    sample = ", ".join(f"'{k}'" for k in sorted(keys)[:3]) or "no tensors at all"
    return (f"'{name}' is not a motion LoRA: expected keys such as 'down_blocks.0.motion_modules.0.temporal_transformer."
            f"transformer_blocks.0.attention_blocks.0.processor.to_q_lora.down.weight', found {sample}.")


def motion_lora_targets(state_dict: dict[str, torch.Tensor], name: str) -> dict[str, str]:
    """``{pair prefix: module weight key}`` for every LoRA pair of the file, e.g.
    ``"...attention_blocks.0.processor.to_out" -> "...attention_blocks.0.to_out.0.weight"``.

    The prefix is what ComfyUI's LoRA loader completes with ``_lora.up.weight``/``_lora.down.weight`` (and reads
    ``.alpha`` from). Raises ``MotionLoRAError`` for files that are not motion LoRAs, or pairs with a missing half
    or shapes that are not ``down [r, C_in]``/``up [C_out, r]``."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    rest = []
    for key, value in state_dict.items():
        match = _PAIR.match(key)
        if match:
            pairs.setdefault(f"{match['prefix']}.processor.{match['proj']}", {})[match["side"]] = value
        elif key != "animatediff_config":  # a training-config entry some files carry
            rest.append(key)
    if not pairs:
        raise MotionLoRAError(_describe_other(state_dict, name))
    other = [k for k in rest if not (k.endswith(".alpha") and k[: -len(".alpha")] in pairs)]
    if other:
        raise MotionLoRAError(
            f"'{name}' has {len(other)} keys besides the temporal attention's LoRA pairs (e.g. '{sorted(other)[0]}'); "
            "released motion LoRAs have none. It may be a LoRA of another kind; refusing it rather than applying part.")
    targets = {}
    for prefix, sides in pairs.items():
        if set(sides) != {"down", "up"}:
            missing = ({"down", "up"} - set(sides)).pop()
            raise MotionLoRAError(f"'{name}' is incomplete: '{prefix}_lora.{missing}.weight' is missing.")
        down, up = sides["down"], sides["up"]
        if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
            raise MotionLoRAError(
                f"'{name}': '{prefix}' has down {tuple(down.shape)} and up {tuple(up.shape)}; a LoRA pair is "
                "down [rank, C_in] and up [C_out, rank].")
        owner = prefix.rsplit(".processor.", 1)[0]
        targets[prefix] = f"{owner}.{_TARGET[prefix.rsplit('.', 1)[1]]}"
    return targets


def merged_weight(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor, strength: float,
                  alpha: float | None = None) -> torch.Tensor:
    """``W + strength * scale * up @ down`` in float32, ``scale = alpha / rank`` when the file has an alpha, else 1
    (AnimateDiff's own rule)."""
    scale = 1.0 if alpha is None else float(alpha) / down.shape[0]
    return weight.float() + strength * scale * (up.float() @ down.float())
