"""Perturbed data: batched tensor perturbations vs per-image PIL / NumPy in a DataLoader.

* blur: the paper's six sigmas, each on a sixth of 10,000 Fashion-MNIST-sized images (the
  perturbed sets the stages generate with `expand`). Ours: `GaussianBlur.perturb_split`, batched
  separable convolutions on tensors. Reference: the reference implementation's path, a Dataset of
  PIL images with torchvision's GaussianBlur(kernel, sigma) and ToTensor, in a DataLoader
  (batch 256, no worker processes: with 2 cores, workers would also take the cores our batched
  path uses for its intra-op threads).
* corruptions: five of the 15 whose original per-image code is PIL / NumPy / SciPy
  (gaussian_noise, contrast, pixelate, jpeg_compression, zoom_blur; severity 3), 2,000 images each.
  Ours: `CommonCorruptions.perturb_split`. Reference: those per-image definitions (PIL BOX resizes,
  a PIL JPEG round trip, scipy.ndimage.zoom per zoom factor, NumPy noise) in a DataLoader.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from perf_data import smooth_images
from PIL import Image

from deeppatch.data import TensorSplit
from deeppatch.perturbations.blur import BLUR_SIGMAS, GaussianBlur, blur_kernel_size
from deeppatch.perturbations.corruptions import PARAMS, CommonCorruptions, zoom_factors
from deeppatch.seeding import make_generator, numpy_rng

HERE = str(Path(__file__).resolve())
IMAGES = 10_000
CORRUPTIONS = ("gaussian_noise", "contrast", "pixelate", "jpeg_compression", "zoom_blur")
SEVERITY = 3
LOADER_BATCH = 256


def images(n: int) -> TensorSplit:
    """Image-like uint8 pixels (upsampled low-resolution noise), labels 0."""
    return TensorSplit(smooth_images(n, "perturb-images"), torch.zeros(n, dtype=torch.long))


def _parts(n_total: int, conditions: int) -> int:
    return max(1, n_total // conditions)


# --------------------------------------------------------------------------------------------
# ours: batched on tensors


def blur_batched(n_total: int = IMAGES, device: str = "cpu") -> Callable[[], torch.Tensor]:
    family = GaussianBlur(BLUR_SIGMAS)
    split = images(_parts(n_total, len(BLUR_SIGMAS))).to(device)
    return lambda: torch.cat([family.perturb_split(split, c).x for c in range(len(BLUR_SIGMAS))])


def corrupt_batched(n_total: int = IMAGES, device: str = "cpu") -> Callable[[], torch.Tensor]:
    family = CommonCorruptions(CORRUPTIONS, (SEVERITY,), quantize=True)
    split = images(_parts(n_total, len(CORRUPTIONS))).to(device)

    def run() -> torch.Tensor:
        g = make_generator(0, "perf", "corrupt", device=device)
        return torch.cat([family.perturb_split(split, c, generator=g).x for c in range(len(CORRUPTIONS))])

    return run


# --------------------------------------------------------------------------------------------
# reference: per-image PIL / NumPy in a DataLoader


class _PerImage(torch.utils.data.Dataset):
    """Image i of `n` sources under condition i // n, one PIL image at a time."""

    def __init__(self, x: torch.Tensor, conditions: list[Callable[[Image.Image, int], np.ndarray]]) -> None:
        self.x = x.numpy()
        self.conditions = conditions

    def __len__(self) -> int:
        return len(self.x) * len(self.conditions)

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self.x)
        img = Image.fromarray(self.x[i % n, 0])  # grey "L" image
        out = self.conditions[i // n](img, i)
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).unsqueeze(0)


def _drain(dataset: torch.utils.data.Dataset) -> torch.Tensor:
    loader = torch.utils.data.DataLoader(dataset, batch_size=LOADER_BATCH, shuffle=False, num_workers=0)
    return torch.cat(list(loader))


def _pil_blur(sigma: float) -> Callable[[Image.Image, int], np.ndarray]:
    from torchvision import transforms

    t = transforms.Compose([transforms.GaussianBlur(blur_kernel_size(sigma), sigma=sigma), transforms.ToTensor()])
    return lambda img, i: t(img)[0].numpy()


def blur_pil(n_total: int = IMAGES, device: str = "cpu") -> Callable[[], torch.Tensor]:
    dataset = _PerImage(images(_parts(n_total, len(BLUR_SIGMAS))).x, [_pil_blur(s) for s in BLUR_SIGMAS])
    return lambda: _drain(dataset)


def _noise(img: Image.Image, i: int) -> np.ndarray:
    x = np.asarray(img, dtype=np.float32) / 255
    rng = numpy_rng(0, "perf", "noise", i)
    return np.floor(np.clip(x + rng.normal(size=x.shape, scale=PARAMS["gaussian_noise"][SEVERITY - 1]), 0, 1)
                    * 255) / 255


def _contrast(img: Image.Image, i: int) -> np.ndarray:
    x = np.asarray(img, dtype=np.float32) / 255
    c = PARAMS["contrast"][SEVERITY - 1]
    m = x.mean()
    return np.floor(np.clip((x - m) * c + m, 0, 1) * 255) / 255


def _pixelate(img: Image.Image, i: int) -> np.ndarray:
    c = PARAMS["pixelate"][SEVERITY - 1]
    w, h = img.size
    small = img.resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX), dtype=np.float32) / 255


def _jpeg(img: Image.Image, i: int) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=PARAMS["jpeg_compression"][SEVERITY - 1])
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255


def _centre_zoom(x: np.ndarray, zoom: float) -> np.ndarray:
    """Crop the centre 1/zoom of the image, enlarge it by `zoom` (linear), keep the centre."""
    from scipy.ndimage import zoom as nd_zoom

    n = x.shape[0]
    crop = int(np.ceil(n / zoom))
    top = (n - crop) // 2
    big = nd_zoom(x[top:top + crop, top:top + crop], zoom, order=1)
    trim = (big.shape[0] - n) // 2
    return big[trim:trim + n, trim:trim + n]


def _zoom_blur(img: Image.Image, i: int) -> np.ndarray:
    x = np.asarray(img, dtype=np.float32) / 255
    out = x.copy()
    factors = zoom_factors(SEVERITY)
    for z in factors:
        out += _centre_zoom(x, z)
    return np.floor(np.clip(out / (len(factors) + 1), 0, 1) * 255) / 255


REFERENCE = {"gaussian_noise": _noise, "contrast": _contrast, "pixelate": _pixelate, "jpeg_compression": _jpeg,
             "zoom_blur": _zoom_blur}


def corrupt_pil(n_total: int = IMAGES, device: str = "cpu") -> Callable[[], torch.Tensor]:
    dataset = _PerImage(images(_parts(n_total, len(CORRUPTIONS))).x, [REFERENCE[c] for c in CORRUPTIONS])
    return lambda: _drain(dataset)


# --------------------------------------------------------------------------------------------
# benchmarks


def _bench(benchmark, perf, name: str, ours_factory, reference_factory, n_total: int, conditions: int,
           check_close: float | None):
    device = str(perf.device)
    ours, reference = ours_factory(n_total, device), reference_factory(n_total, "cpu")
    outputs: dict[str, torch.Tensor] = {}
    rounds = 3 if n_total <= IMAGES else 1
    row = perf.compare(benchmark, name, lambda: outputs.__setitem__("ours", ours()),
                       lambda: outputs.__setitem__("reference", reference()), rounds=rounds,
                       work=_parts(n_total, conditions) * conditions, unit="image", target=">= 5x")
    assert outputs["ours"].shape == outputs["reference"].shape
    if check_close is not None:  # same images up to 8-bit rounding: a correctness check, not a timing one
        diff = (outputs["ours"].cpu() - outputs["reference"]).abs().max().item()
        row["max_abs_diff"] = diff
        benchmark.extra_info["max_abs_diff"] = diff
        assert diff <= check_close
    if perf.memory:
        extra = {"ours_memory": perf.peak_memory(HERE, ours_factory.__name__, n_total=n_total, device=device),
                 "reference_memory": perf.peak_memory(HERE, reference_factory.__name__, n_total=n_total)}
        row.update(extra)
        benchmark.extra_info.update(extra)


def test_blur_batched_vs_pil(benchmark, perf):
    _bench(benchmark, perf, "blur 10k images (6 sigmas): batched tensors vs PIL DataLoader", blur_batched, blur_pil,
           perf.size(IMAGES, 60), len(BLUR_SIGMAS), check_close=1.0 / 255 + 1e-6)


def test_corruptions_batched_vs_per_image(benchmark, perf):
    _bench(benchmark, perf, "corruptions 10k images (5 kinds): batched tensors vs per-image PIL/NumPy",
           corrupt_batched, corrupt_pil, perf.size(IMAGES, 50), len(CORRUPTIONS), check_close=None)
