"""Training tests: diffusers/transformers import torchvision when it is installed; make a CUDA-only wheel importable."""

import _torchvision_shim

_torchvision_shim.install()
