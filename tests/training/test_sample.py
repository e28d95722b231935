"""The trainer's validation sampler keeps the given frames exactly when asked (the nodes' lock) and leaves them to
the model otherwise (how the toy experiment measures first-frame fidelity)."""

from __future__ import annotations

import torch

from atomo_core.atomovideo_format import new_atomovideo_module
from atomo_core.training.base import tiny_base
from atomo_core.training.objective import training_alphas_cumprod
from atomo_core.training.sample import sample_clip
from atomo_core.training.unet import TemporalUNet


def test_lock_given_keeps_the_given_frames_exactly():
    base = tiny_base(seed=0)
    model = TemporalUNet(base.unet, new_atomovideo_module(max_frames=8, widths=base.widths)).eval()
    with torch.no_grad():
        model.unet.conv_in.image_weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    given = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    context, empty = base.encode_text(["a fox"]), base.encode_text([""])
    ab = training_alphas_cumprod()
    runs = {lock: sample_clip(model, ab, given, 4, context, empty, steps=3, cfg=2.0, image_cfg=1.5,
                              generator=torch.Generator().manual_seed(3), lock_given=lock) for lock in (True, False)}
    assert runs[True].shape == (4, 4, 8, 8)
    assert torch.equal(runs[True][:2], given)  # the last DDIM step lands on x0 (ab_prev = 1): exactly the given
    assert (runs[False][:2] - given).abs().max() > 1e-2  # free: the random model's own frames
