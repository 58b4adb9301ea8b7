"""The 15 common corruptions of Hendrycks & Dietterich (ICLR 2019), batched, on tensors.

Each corruption maps a float batch (N, C, H, W) in [0, 1], on any device, to a batch of the same
shape in [0, 1]. The five severities use the constants the authors used to build CIFAR-10-C
(`make_cifar_c.py`); this is our own implementation of those definitions, vectorised over the
batch, reproducing the arithmetic of the libraries the generator called (helpers in
`corruption_ops`). Every random draw comes from the `torch.Generator` passed in, so a corrupted set
is a pure function of (images, generator seed). Each random corruption also has a ``*_given``
variant that takes its draws explicitly (used by the fidelity tests to replay fixed draws).

Given the same draws, every corruption equals the original at 32 px after 8-bit storage
(tests/test_corruptions_fidelity.py). What still differs (docs/suites-corruptions.md has the table
with measurements):

* random numbers come from torch, not NumPy, so images differ one by one from the released arrays;
* ImageMagick (motion blur, snow), OpenCV (defocus disk, affine warp, grey conversion, frost
  shrinking), scikit-image (HSV, salt and pepper, Gaussian) and PIL's BOX resize are reproduced,
  not called; JPEG uses libjpeg through torchvision. Measured identical to those libraries, except
  that cv2 4.10's fused multiply-adds in RGB->grey move about 1 in 600,000 snow values by a level;
* the last bits of the 2018 library versions (which decide whether flat regions lose a level in
  defocus and glass blur) are today's SciPy / OpenCV 3-4 ones;
* glass blur at shifts above 1 px (images of 48 px and more) approximates the sequential loop;
* the sixth frost photograph is not shipped (the original never draws it).

Sizes other than 32 px: parameters measured in pixels (blur radii and sigmas, glass-blur shuffle
distance, motion length, the frost images' scale) are scaled by ``min(H, W) / 32``; parameters
defined relative to the image (pixelate factor, zoom factors, elastic amplitudes, which the
original writes as multiples of the image size) keep their meaning. So a 28x28 Fashion-MNIST image
gets the CIFAR-10-C corruption "drawn at 28/32 the size". Channel counts other than 3 are handled
per channel (grey images are grey throughout; brightness, snow and frost use the RGB formulas only
when C == 3).

`quantize=True` stores results the way the released arrays were stored: ``np.uint8`` of the float
result (truncation). Corruptions whose original output was already 8-bit (motion blur, snow's flake
layer, pixelate, JPEG) produce those 8-bit values themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import torch

from deeppatch.data import to_float
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.perturbations import corruption_ops as ops
from deeppatch.perturbations.base import Perturbation
from deeppatch.seeding import make_generator

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 32  # the image side the CIFAR-10-C pixel constants were chosen for

# CIFAR-10-C constants (make_cifar_c.py), one entry per severity 1..5.
PARAMS: Mapping[str, tuple] = MappingProxyType({
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of salt-and-pepper values
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, anti-alias sigma
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, max shift, iters
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma (angle ~ U(-45, 45))
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),  # zoom factors np.arange(1, stop, 0.01): 7, 12, 16, 21, 26 of them
    # snow: flake mean, flake std, zoom, threshold, motion radius, motion sigma, blend
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image weight, frost weight
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog strength, fractal decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor towards the per-channel mean
    # elastic: displacement alpha, its smoothing sigma, affine jitter; fractions of the image size
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # downscale factor (box filter down, box filter up)
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
})
RANDOM_CORRUPTIONS = frozenset({
    "gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
    "elastic_transform",
})


def _scale(x: torch.Tensor) -> float:
    return min(x.shape[-2:]) / REFERENCE_SIZE


# ---------------------------------------------------------------------------------------------
# the corruptions: (x float [0, 1], severity 1..5, generator) -> float (float32 or float64: the
# precision the original computed in), not yet clipped/quantised

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def gaussian_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Additive N(0, c^2) noise per pixel and channel."""
    return gaussian_noise_given(x, severity, ops.randn(x.shape, g, x.device))


def gaussian_noise_given(x: torch.Tensor, severity: int, noise: torch.Tensor) -> torch.Tensor:
    """`gaussian_noise` with its standard normal draws (N, C, H, W) supplied."""
    return ops.unit64(x) + PARAMS["gaussian_noise"][severity - 1] * noise.to(x.device, torch.float64)


def shot_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Poisson photon noise: Poisson(c x) / c."""
    return shot_noise_given(x, severity, lambda rate: torch.poisson(rate.to(g.device), generator=g).to(x.device))


def shot_noise_given(x: torch.Tensor, severity: int, poisson: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`shot_noise` with its Poisson sampler supplied (rates (N, C, H, W), float64 -> counts)."""
    c = PARAMS["shot_noise"][severity - 1]
    return poisson(ops.unit64(x) * c).to(x.device, torch.float64) / c


def impulse_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Salt and pepper (skimage 's&p'): each value flips with probability c, to 0 or 1 evenly."""
    return impulse_noise_given(x, severity, ops.rand(x.shape, g, x.device), ops.rand(x.shape, g, x.device))


def impulse_noise_given(x: torch.Tensor, severity: int, u_flip: torch.Tensor, u_salt: torch.Tensor) -> torch.Tensor:
    """`impulse_noise` with its two U[0, 1) draws (N, C, H, W) supplied: a value flips where u_flip < c,
    to 1 where u_salt < 0.5, else to 0 (np.random.choice's rule)."""
    c = PARAMS["impulse_noise"][severity - 1]
    x = ops.unit64(x)
    salt = (u_salt.to(x.device) < 0.5).to(x.dtype)
    return torch.where(u_flip.to(x.device) < c, salt, x)


def defocus_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Correlation with the original's anti-aliased disk (float32 kernel), reflecting at the border
    (OpenCV filter2D), in float64.

    At 32 px the kernel is the original's to the bit; at other sizes radius and alias sigma are
    scaled and the disk weighs pixels by coverage (see `ops.defocus_kernel`), so severities stay ordered.
    """
    radius, alias = PARAMS["defocus_blur"][severity - 1]
    s = _scale(x)
    kernel = ops.defocus_kernel(radius * s, alias * s, coverage=s != 1)
    return ops.filter2d(ops.unit64(x), kernel.double(), mode="reflect")


def _glass_params(severity: int, x: torch.Tensor) -> tuple[float, int, int]:
    sigma, delta, iterations = PARAMS["glass_blur"][severity - 1]
    s = _scale(x)
    return sigma * s, max(1, round(delta * s)), iterations


def glass_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Blur, store as 8 bits, move each pixel's content from a random up/left neighbour, blur again."""
    _, delta, iterations = _glass_params(severity, x)
    n, _, h, w = x.shape
    shifts = torch.randint(-delta, delta, (iterations, 2, n, h, w), generator=g, device=g.device)
    return glass_blur_given(x, severity, shifts)


def glass_blur_given(x: torch.Tensor, severity: int, shifts: torch.Tensor) -> torch.Tensor:
    """`glass_blur` with its shifts supplied: (iterations, 2 (rows, columns), N, H, W) ints in [-d, d).

    In make_cifar_c.py each pixel (h, w) with d < h, w <= size - d takes the value of (h + dy, w + dx);
    its "swap" is a tuple assignment of NumPy views, which copies the neighbour in. For d = 1 the
    loop (bottom-right to top-left) reads only pixels it has not written yet, so one parallel gather
    per iteration is exact. The shift d is scaled with the image (at least 1).
    """
    sigma, delta, iterations = _glass_params(severity, x)
    n, _, h, w = x.shape
    y = ops.gaussian_filter(ops.unit64(x), sigma, mode="replicate")
    y = torch.trunc(y * 255).clamp(0, 255)  # np.uint8(... * 255)
    shifts = shifts.to(x.device).long()
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows > delta) & (rows <= h - delta) & (cols > delta) & (cols <= w - delta)).long()
    for i in range(iterations):
        y = ops.gather_pixels(y, (rows + shifts[i, 0] * inside).clamp(0, h - 1),
                              (cols + shifts[i, 1] * inside).clamp(0, w - 1))
    return ops.gaussian_filter(y / 255, sigma, mode="replicate")


def motion_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """ImageMagick motion blur at a random angle in [-45, 45) degrees per image."""
    return motion_blur_given(x, severity, ops.uniform((x.shape[0],), -45, 45, g, x.device))


def motion_blur_given(x: torch.Tensor, severity: int, angles: torch.Tensor) -> torch.Tensor:
    """`motion_blur` with its angles (N,) in degrees supplied; 8-bit output as ImageMagick writes it."""
    radius, sigma = PARAMS["motion_blur"][severity - 1]
    s = _scale(x)
    return ops.imagemagick8(ops.motion_blur(ops.unit64(x), radius * s, sigma * s, angles))


def zoom_factors(severity: int) -> list[float]:
    """The original's zoom factors, np.arange(1, stop, 0.01) itself (7, 12, 16, 21 and 26 factors).

    NumPy's arange steps by (1 + 0.01) - 1, not by 0.01, so the factors are not 1 + k / 100 to the
    bit, and the last one can change the zoomed crop's interpolation grid.
    """
    return np.arange(1, PARAMS["zoom_blur"][severity - 1], 0.01).tolist()


def zoom_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Mean of the image and its centre zooms by each factor (the first factor, 1.0, is the image).

    In float32 as the original: each zoom is computed in float64 (scipy) and stored as float32, the
    zooms are summed one after another, then averaged with the image.
    """
    factors = zoom_factors(severity)
    h, w = x.shape[-2:]
    x32 = ops.unit64(x).float()  # (np.array(x) / 255.).astype(np.float32)
    x64 = x32.double()
    out = torch.zeros_like(x32)
    for z in factors:
        zh, zw = ops.clipped_zoom_matrix(h, z, x.device), ops.clipped_zoom_matrix(w, z, x.device)
        out += ops.separable(x64, zh, zw).float()
    return (x32 + out) / (len(factors) + 1)


def snow(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Thresholded, zoomed Gaussian flakes, motion-blurred at [-135, -45) degrees, over a whitened image."""
    n, _, h, w = x.shape
    flakes = ops.randn((n, 1, h, w), g, x.device)
    return snow_given(x, severity, flakes, ops.uniform((n,), -135, -45, g, x.device))


def snow_given(x: torch.Tensor, severity: int, flakes: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """`snow` with its draws supplied: standard normal flakes (N, 1, H, W) and angles (N,) in degrees.

    The flake layer is stored as 8 bits (truncated) for ImageMagick, blurred, and read back as
    ImageMagick's 8 bits; the image part is float32 like the original, the sum float64.
    """
    loc, scale, zoom, threshold, mb_radius, mb_sigma, blend = PARAMS["snow"][severity - 1]
    s = _scale(x)
    layer = loc + scale * flakes.to(x.device, torch.float64)
    layer = ops.clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.trunc(layer.clamp(0, 1) * 255)  # (np.clip(layer, 0, 1) * 255).astype(np.uint8)
    layer = ops.imagemagick8(ops.motion_blur(layer / 255, mb_radius * s, mb_sigma * s, angles))
    x32 = ops.unit32(x)
    # NumPy multiplies a float32 array by a Python float in float32: the constants are rounded first
    keep, white = (torch.tensor(v, dtype=torch.float32, device=x.device) for v in (blend, 1 - blend))
    whitened = torch.maximum(x32, ops.opencv_grey(x32) * 1.5 + 0.5)  # 1.5 and 0.5 are exact in float32
    x32 = keep * x32 + white * whitened
    return x32.double() + layer + layer.flip(-2, -1)


def frost(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """a x + b frost, the frost a random window of one of five frost images (see `frost_given`)."""
    n, _, h, w = x.shape
    images = ops.load_frost_images()
    wh, ww = ops.frost_window(h, w, images, REFERENCE_SIZE)
    picks = torch.floor(ops.rand((n,), g, torch.device("cpu")) * len(images)).long()
    heights = torch.tensor([int(im.shape[1]) for im in images])[picks]
    widths = torch.tensor([int(im.shape[2]) for im in images])[picks]
    tops = torch.floor(ops.rand((n,), g, torch.device("cpu")) * (heights - wh).clamp(min=1)).long()
    lefts = torch.floor(ops.rand((n,), g, torch.device("cpu")) * (widths - ww).clamp(min=1)).long()
    return frost_given(x, severity, picks, tops, lefts, images=images)


def frost_given(
    x: torch.Tensor, severity: int, picks: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor,
    images: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """`frost` with its draws supplied: per image the frost image index (0..4), and the window's top
    row and left column in it (uniform over 0 .. size - window - 1, the original's randint range).

    make_cifar_c.py picks one of frost1..frost5 (randint(5)), shrinks it by 0.2 (shipped shrunk,
    see frost_images/README.md), crops a random 32x32 window and returns a x + b frost on the 0..255
    scale, in float64. Other image sizes crop the window at the CIFAR scale (shorter side 32 px, see
    `ops.frost_window`) and resize it to the image (antialiased bilinear); grey images get the
    frost's luma, other channel counts the luma in every channel.
    """
    a, b = PARAMS["frost"][severity - 1]
    n, c, h, w = x.shape
    images = ops.load_frost_images() if images is None else images
    window = ops.frost_window(h, w, images, REFERENCE_SIZE)
    layer = ops.frost_crops(images, picks, tops, lefts, window, (h, w), x.device)
    if c != 3:
        luma = 0.299 * layer[:, 0:1] + 0.587 * layer[:, 1:2] + 0.114 * layer[:, 2:3]
        layer = luma.expand(n, c, h, w)
    return (a * ops.levels(x) + b * layer) / 255


def fog(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Add a plasma-fractal haze of strength c, rescaled by max / (max + c) per image."""
    _, decay = PARAMS["fog"][severity - 1]
    n, _, h, w = x.shape
    return fog_given(x, severity, ops.plasma_fractal(n, max(h, w), decay, ops.sampler(g, x.device), x.device))


def fog_given(x: torch.Tensor, severity: int, haze: torch.Tensor) -> torch.Tensor:
    """`fog` with its fractal (N, S, S), S >= H, W, supplied (see `ops.plasma_fractal`); float64."""
    strength, _ = PARAMS["fog"][severity - 1]
    h, w = x.shape[-2:]
    x = ops.unit64(x)
    peak = x.amax((1, 2, 3), keepdim=True)
    x = x + strength * haze.to(x.device, torch.float64)[:, None, :h, :w]
    return x * peak / (peak + strength)


def brightness(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Add c to the HSV value, through scikit-image's rgb2hsv / hsv2rgb arithmetic (float64).

    Not-RGB images: the value is the pixel itself, so c is added directly.
    """
    c = PARAMS["brightness"][severity - 1]
    x = ops.unit64(x)
    if x.shape[1] != 3:
        return (x + c).clamp(0, 1)
    hsv = ops.rgb_to_hsv(x)
    hsv = torch.cat([hsv[:, :2], (hsv[:, 2:] + c).clamp(0, 1)], 1)
    return ops.hsv_to_rgb(hsv)


def contrast(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Pull each channel towards its spatial mean by factor c (float64)."""
    c = PARAMS["contrast"][severity - 1]
    x = ops.unit64(x)
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * c + mean


def elastic_transform(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """A random affine jitter of three control points, then a smoothed random displacement field."""
    n, _, h, w = x.shape
    jitter = ops.rand((n, 3, 2), g, x.device)
    field = ops.rand((n, 2, h, w), g, x.device)
    return elastic_transform_given(x, severity, jitter, field)


def elastic_transform_given(x: torch.Tensor, severity: int, jitter: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """`elastic_transform` with its U[0, 1) draws supplied: the control-point jitter (N, 3, 2, (x, y))
    and the two displacement fields (N, 2 (columns, rows), H, W).

    Float32 image as in the original. 1. OpenCV's affine warp (fixed-point, BORDER_REFLECT_101, see
    `ops.opencv_warp_affine`) moving control points around the centre by U(-jitter, jitter);
    2. the fields, U(-1, 1) smoothed by scipy's Gaussian (sigma, truncate 3, 'reflect') times alpha,
    stored as float32, displace every pixel, resampled like scipy's map_coordinates (order 1,
    'reflect'). When alpha is 0 (severity 1) step 2 is the identity and is skipped.
    """
    alpha, sigma, spread = (v * min(x.shape[-2:]) for v in PARAMS["elastic_transform"][severity - 1])
    n, c, h, w = x.shape
    dev = x.device
    img = ops.unit32(x)
    cx, cy, sq = float(w // 2), float(h // 2), float(max(min(h, w) // 3, 1))  # at least 1 px: tiny images
    src = torch.tensor([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], dtype=torch.float32)
    move = (-spread + (spread - -spread) * jitter.cpu().double()).float()
    img = ops.opencv_warp_affine(img, ops.affine_from_points(src.expand(n, 3, 2), src + move))
    if alpha > 0 and sigma > 0:
        field = -1 + (1 - -1) * field.to(dev, torch.float64)
        d = (ops.gaussian_filter(field, sigma, truncate=3.0, mode="symmetric") * alpha).float().double()
        ys = torch.arange(h, device=dev, dtype=torch.float64).view(1, h, 1)
        xs = torch.arange(w, device=dev, dtype=torch.float64).view(1, 1, w)
        img = ops.map_coordinates_linear(img, ys + d[:, 1], xs + d[:, 0]).float()
    return img


def pixelate(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """PIL BOX resize to int(size * c), then BOX resize back, on 8 bits exactly as Pillow does."""
    c = PARAMS["pixelate"][severity - 1]
    h, w = x.shape[-2:]
    v = ops.levels(x).round()
    small = ops.pil_box_resize(v, max(int(h * c), 1), max(int(w * c), 1))
    return ops.pil_box_resize(small, h, w) / 255


def jpeg_compression(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Encode and decode as JPEG at quality c with libjpeg (torchvision.io), on the CPU.

    1- and 3-channel images are encoded as they are (grey / RGB with 4:2:0 chroma, like PIL's
    default); other channel counts channel by channel as grey images.
    """
    from torchvision.io import decode_jpeg, encode_jpeg  # lazy: torchvision's image codecs, only for JPEG

    quality = PARAMS["jpeg_compression"][severity - 1]
    n, c, h, w = x.shape
    u8 = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).cpu()
    if c not in (1, 3):
        u8 = u8.reshape(n * c, 1, h, w)
    decoded = decode_jpeg(encode_jpeg(list(u8), quality=quality))
    out = torch.stack(decoded).reshape(n, c, h, w)
    return out.to(x.device, torch.float32) / 255


FUNCTIONS: Mapping[str, Corruption] = MappingProxyType({
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "snow": snow, "frost": frost, "fog": fog, "brightness": brightness, "contrast": contrast,
    "elastic_transform": elastic_transform, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
})


def check_corruption(name: str, severity: int) -> None:
    if name not in FUNCTIONS:
        raise unknown_choice("corruption", name, CORRUPTIONS)
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise DeepPatchError(f"corruption severity must be one of 1, 2, 3, 4, 5, got {severity!r}")


def finish(y: torch.Tensor, quantize: bool) -> torch.Tensor:
    """A corruption's raw result -> float32 in [0, 1]; `quantize` truncates to 8 bits like ``np.uint8``."""
    y = y.clamp(0, 1)
    return (ops.floor8(y) if quantize else y).float()


def corrupt(
    x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None, *, quantize: bool = False,
) -> torch.Tensor:
    """Corrupt a batch (N, C, H, W) in [0, 1] (uint8 accepted) with `name` at `severity` 1..5.

    Random corruptions draw from `generator`; without one they use a fixed seed (0), so the same call
    gives the same images. Returns float32 in [0, 1]; `quantize` stores 8 bits like the released
    arrays (see the module docstring).
    """
    check_corruption(name, severity)
    if x.ndim != 4:
        raise DeepPatchError(f"corruptions need a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if generator is None:
        generator = make_generator(0, "corruptions", name, severity)
    x = to_float(x)
    if x.shape[0] == 0:
        return x.clone()
    return finish(FUNCTIONS[name](x, severity, generator), quantize)


class CommonCorruptions(Perturbation):
    """The 15 x 5 corruptions as a perturbation family; conditions "<corruption>/<severity>".

    Without a generator passed to `apply`, draws come from the family's own generator (seeded by
    `seed`), so successive batches get fresh draws and a fixed call sequence is reproducible.
    """

    name = "corruptions"

    def __init__(
        self, corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
        quantize: bool = True, seed: int = 0,
    ) -> None:
        if not corruptions or not severities:
            raise DeepPatchError("the corruptions family needs at least one corruption and one severity")
        for name in corruptions:
            for sev in severities:
                check_corruption(name, sev)
        self.corruptions = tuple(corruptions)
        self.severities = tuple(int(s) for s in severities)
        self.quantize = bool(quantize)
        self._pairs = [(c, s) for c in self.corruptions for s in self.severities]
        self._generator = make_generator(seed, "corruptions-family")

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(f"{c}/{s}" for c, s in self._pairs)

    def apply(self, x: torch.Tensor, condition: int, generator: torch.Generator | None = None) -> torch.Tensor:
        name, severity = self._pairs[condition]
        return corrupt(x, name, severity, generator or self._generator, quantize=self.quantize)
