from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import GaussianBlur as PILGaussianBlur
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from deeppatch.errors import DeepPatchError
from deeppatch.perturbations import BLUR_SIGMAS, blur_kernel_size, gaussian_blur, get_perturbation


def test_kernel_sizes_are_the_papers():
    assert [blur_kernel_size(s) for s in BLUR_SIGMAS] == [3, 5, 7, 9, 11, 13]


@pytest.mark.parametrize("sigma", BLUR_SIGMAS)
def test_separable_blur_equals_torchvision_2d_blur(sigma):
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    k = blur_kernel_size(sigma)
    ref = TF.gaussian_blur(x, [k, k], [sigma, sigma])
    assert torch.allclose(gaussian_blur(x, sigma), ref, atol=1e-6)


@pytest.mark.parametrize("sigma", BLUR_SIGMAS)
def test_quantised_blur_is_within_one_level_of_the_reference_pil_path(sigma):
    """The reference blurred uint8 PIL images; our 8-bit option differs by at most 1/255."""
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=g)
    k = blur_kernel_size(sigma)
    pil = torch.stack([pil_to_tensor(PILGaussianBlur(k, sigma)(to_pil_image(img))) for img in images]).float() / 255
    ours = gaussian_blur(images.float() / 255, sigma, quantize=True)
    assert (ours - pil).abs().max().item() <= 1 / 255 + 1e-6
    assert (ours * 255 - torch.round(ours * 255)).abs().max() < 1e-4
    unquantised = gaussian_blur(images.float() / 255, sigma)
    assert (unquantised - pil).abs().max().item() <= 0.5 / 255 + 1e-6


def test_random_mix_is_seeded_and_half_clean():
    family = get_perturbation("blur")
    x = torch.rand(2000, 1, 8, 8)
    out1, cond1 = family.random_mix(x, torch.Generator().manual_seed(3))
    out2, cond2 = family.random_mix(x, torch.Generator().manual_seed(3))
    assert torch.equal(out1, out2) and torch.equal(cond1, cond2)
    clean = cond1 == -1
    assert 0.45 < clean.float().mean() < 0.55
    assert torch.equal(out1[clean], x[clean])
    assert set(cond1[~clean].tolist()) == set(range(6))
    i = int((cond1 == 5).nonzero()[0])
    assert torch.allclose(out1[i], gaussian_blur(x[i : i + 1], 3.0)[0])


def test_bad_blur_arguments():
    with pytest.raises(DeepPatchError, match="positive"):
        gaussian_blur(torch.rand(1, 1, 8, 8), 0.0)
    with pytest.raises(DeepPatchError, match="valid choices"):
        get_perturbation("fog-of-war")
