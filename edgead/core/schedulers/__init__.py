"""Diffusion math shared by training (torch tensors) and runtime (numpy arrays).

Torch-free on purpose: the functions only use arithmetic operators and ``.clip`` so the same
code runs on both array types, and training and runtime cannot drift apart.
"""

from .noise_schedule import alphas_cumprod
from .norm_guided import NormGuidedOneStepScheduler

__all__ = ["NormGuidedOneStepScheduler", "alphas_cumprod"]
