"""Perturbation families: functions on batches of [0, 1] images, on the compute device."""

from deeppatch.perturbations.base import Perturbation, get_perturbation, perturbation_names
from deeppatch.perturbations.blur import BLUR_SIGMAS, GaussianBlur, blur_kernel_size, gaussian_blur

__all__ = [
    "BLUR_SIGMAS",
    "GaussianBlur",
    "Perturbation",
    "blur_kernel_size",
    "gaussian_blur",
    "get_perturbation",
    "perturbation_names",
]
