"""The 15 common corruptions of Hendrycks & Dietterich (ICLR 2019), batched, on tensors.

Each corruption maps a float batch (N, C, H, W) in [0, 1], on any device, to a batch of the same
shape in [0, 1]. The five severities use the constants the authors used to build CIFAR-10-C
(`make_cifar_c.py`); this is our own implementation of those definitions, vectorised over the
batch, not a port of their per-image NumPy/ImageMagick/OpenCV code. Every random draw comes from the
`torch.Generator` passed in, so a corrupted set is a pure function of (images, generator seed).

Sizes other than 32 px: parameters measured in pixels (blur radii and sigmas, glass-blur shuffle
distance, motion length) are scaled by ``min(H, W) / 32``; parameters defined relative to the image
(pixelate factor, zoom factors, elastic amplitudes, which the original writes as multiples of the
image size) keep their meaning. So a 28x28 Fashion-MNIST image gets the CIFAR-10-C corruption
"drawn at 28/32 the size". Channel counts other than 3 are handled per channel (grey images are
grey throughout; brightness and snow use the RGB formulas only when C == 3).

Where the output differs from the released CIFAR-10-C arrays, and why:

* frost: the original blends crops of frost photographs that we do not ship; `frost_texture`
  crops procedural ice sheets instead (bright ridged veins, needles, haze; mean about 0.45).
  Frost numbers are therefore not comparable with CIFAR-10-C frost.
* motion blur / snow: ImageMagick's one-sided motion-blur kernel is reproduced (width
  2 ceil(radius) + 1, Gaussian weights, edge pixels repeated), not called.
* glass blur: the released code "swaps" pixels with a NumPy tuple assignment on views, which copies
  the neighbour into the pixel instead of swapping; for the CIFAR shuffle distance of 1 that is
  exactly a parallel gather from a random neighbour up/left, which is what we do.
* all: random numbers come from torch, not NumPy, so individual images differ; interpolation
  details (OpenCV fixed-point bilinear, PIL's two-pass 8-bit resampling) may move pixels by a level.

`quantize=True` stores results the way the released arrays were stored: ``np.uint8`` of a float
truncates (so does ImageMagick's 8-bit output, measured), except pixelate and JPEG, where PIL rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F

from deeppatch.data import to_float
from deeppatch.errors import DeepPatchError, unknown_choice
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
    "zoom_blur": (7, 12, 16, 21, 26),  # number of zoom factors 1.00, 1.01, ... (np.arange(1, 1.06, .01) etc.)
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
_ROUNDED = frozenset({"pixelate", "jpeg_compression"})  # PIL in the original: rounds


# ---------------------------------------------------------------------------------------------
# random draws: always from the caller's generator, on its device, then moved to the data


def _rand(shape: Sequence[int], g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=g, device=g.device).to(device)


def _randn(shape: Sequence[int], g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=g, device=g.device).to(device)


def _uniform(shape: Sequence[int], low: float, high: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * _rand(shape, g, device)


# ---------------------------------------------------------------------------------------------
# filtering and resampling helpers (any size, any padding width)


def _pad_index(n: int, pad: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source indices for a padded axis: replicate, symmetric (scipy 'reflect'), reflect (OpenCV 101)."""
    idx = torch.arange(-pad, n + pad, device=device)
    if mode == "replicate" or n == 1:
        return idx.clamp(0, n - 1)
    if mode == "symmetric":
        m = idx.remainder(2 * n)
        return torch.where(m >= n, 2 * n - 1 - m, m)
    if mode == "reflect":
        m = idx.remainder(2 * (n - 1))
        return torch.where(m >= n, 2 * (n - 1) - m, m)
    raise ValueError(mode)


def _pad1d(x: torch.Tensor, pad: int, mode: str, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if pad == 0:
        return x
    if mode == "symmetric" and pad <= n:  # fast path: mirrored edge slices
        return torch.cat([x.narrow(dim, 0, pad).flip(dim), x, x.narrow(dim, n - pad, pad).flip(dim)], dim)
    return x.index_select(dim, _pad_index(n, pad, mode, x.device))


def _pad2d(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two axes; any width (beyond the image size the pattern repeats)."""
    h, w = x.shape[-2:]
    if mode == "replicate" or (mode == "reflect" and ph < h and pw < w):
        return F.pad(x, (pw, pw, ph, ph), mode=mode)  # torch's own kernels are much faster than a gather
    return _pad1d(_pad1d(x, ph, mode, x.ndim - 2), pw, mode, x.ndim - 1)


def _gaussian_kernel(sigma: float, radius: int, device: torch.device) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2) if sigma > 0 else (t == 0).double()
    return (k / k.sum()).float().to(device)


def _filter_matrix(n: int, kernel: torch.Tensor, mode: str, device: torch.device) -> torch.Tensor:
    """(n, n) matrix of a 1-D correlation with `kernel` (odd length), the border folded in by `mode`."""
    r = len(kernel) // 2
    src = _pad_index(n, r, mode, torch.device("cpu"))
    out = torch.arange(n)
    m = torch.zeros(n, n, dtype=torch.float64)
    for t, weight in enumerate(kernel.cpu().double().tolist()):
        m.index_put_((out, src[out + t]), torch.full((n,), weight, dtype=torch.float64), accumulate=True)
    return m.float().to(device)


def _gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate") -> torch.Tensor:
    """scipy/skimage `gaussian` on the last two axes: radius int(truncate * sigma + 0.5).

    Done as two small matrix products (the border handling folded into the matrices): much faster
    on the CPU than a padded convolution of many single-channel maps.
    """
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return x
    h, w = x.shape[-2:]
    k = _gaussian_kernel(sigma, radius, torch.device("cpu"))
    return _separable(x, _filter_matrix(h, k, mode, x.device), _filter_matrix(w, k, mode, x.device))


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """Correlate every channel with one odd-sized 2-D kernel (OpenCV filter2D, BORDER_REFLECT_101)."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    y = _pad2d(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, mode)
    return F.conv2d(y, kernel.view(1, 1, kh, kw).to(x)).reshape(n, c, h, w)


def _gather_pixels(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """out[n, c, h, w] = x[n, c, rows[n, h, w], cols[n, h, w]] (indices already in range)."""
    n, c, h, w = x.shape
    idx = (rows * w + cols).reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, idx).reshape(n, c, h, w)


def _separable(x: torch.Tensor, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """Apply a linear map per axis: mh @ x @ mw^T on the last two axes."""
    return torch.matmul(torch.matmul(mh.to(x), x), mw.to(x).transpose(0, 1))


def _clipped_zoom_matrix(n: int, zoom: float, device: torch.device) -> torch.Tensor:
    """(n, n) matrix of the original's `clipped_zoom` on one axis.

    Crop the central ceil(n / zoom) pixels, enlarge them by `zoom` with linear interpolation as
    scipy.ndimage.zoom does (output round(crop * zoom), corners aligned), keep the central n.
    """
    crop = int(math.ceil(n / zoom))
    top = (n - crop) // 2
    out = int(round(crop * zoom))
    trim = (out - n) // 2
    j = torch.arange(n, dtype=torch.float64) + trim
    u = j * ((crop - 1) / (out - 1)) if out > 1 else torch.zeros(n, dtype=torch.float64)
    lo = u.floor().long().clamp(0, crop - 1)
    hi = (lo + 1).clamp(max=crop - 1)
    frac = u - lo
    m = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    m.index_put_((rows, top + lo), 1 - frac, accumulate=True)
    m.index_put_((rows, top + hi), frac, accumulate=True)
    return m.float().to(device)


def _clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    return _separable(x, _clipped_zoom_matrix(h, zoom, x.device), _clipped_zoom_matrix(w, zoom, x.device))


def _box_resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of PIL's BOX resampling on one axis (pixel centres inside the box)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        for p in range(lo, hi):
            t = (p - center + 0.5) / filterscale
            if -0.5 < t <= 0.5:
                m[o, p] = 1.0
        m[o] /= m[o].sum()
    return m


def _pixelate_matrix(n: int, factor: float, device: torch.device) -> torch.Tensor:
    small = max(int(n * factor), 1)
    return (_box_resize_matrix(small, n) @ _box_resize_matrix(n, small)).float().to(device)


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's MotionBlurImage, batched: a one-sided Gaussian kernel along `angles` (degrees).

    Width 2 ceil(radius) + 1, weight exp(-i^2 / 2 sigma^2) at offset round-half-down(i (cos, sin)),
    pixels beyond the border repeat the edge (ImageMagick's default virtual pixels).
    """
    n, c, h, w = x.shape
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = (k / k.sum()).tolist()
    a = torch.deg2rad(angles.cpu().double())
    ox = torch.ceil(i[None] * torch.cos(a)[:, None] - 0.5).long()  # (N, width), |offset| < width
    oy = torch.ceil(i[None] * torch.sin(a)[:, None] - 0.5).long()
    # replicate-pad once by the longest offset; then each tap is a flat gather at base + offset
    pad = width - 1
    wp = w + 2 * pad
    flat = _pad2d(x, pad, pad, "replicate").reshape(n, c, -1)
    rows = torch.arange(pad, pad + h, device=x.device)
    cols = torch.arange(pad, pad + w, device=x.device)
    base = (rows[:, None] * wp + cols[None, :]).view(1, 1, h * w)
    shifts = (oy * wp + ox).to(x.device)
    out = torch.zeros(n, c, h * w, device=x.device, dtype=x.dtype)
    for t in range(width):
        if k[t] < 1e-7:  # far tail of a short kernel: below any 8-bit effect
            continue
        idx = (base + shifts[:, t].view(n, 1, 1)).expand(n, c, h * w)
        out.add_(flat.gather(2, idx), alpha=k[t])
    return out.view(n, c, h, w)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (OpenCV RGB2GRAY weights) for RGB, the channel mean otherwise; keeps the channel axis."""
    if x.shape[1] == 3:
        wts = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * wts).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def _scale(x: torch.Tensor) -> float:
    return min(x.shape[-2:]) / REFERENCE_SIZE


def _floor8(x: torch.Tensor) -> torch.Tensor:
    """np.uint8 of a float in [0, 255] (truncation), back in [0, 1]; the 0.005-level margin absorbs float error."""
    return torch.floor(x.clamp(0, 1) * 255 + 5e-3) / 255


def _round8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


# ---------------------------------------------------------------------------------------------
# procedural textures


def plasma_fractal(n: int, size: int, decay: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """n diamond-square height maps (n, size, size) in [0, 1]; `size` is rounded up to a power of two.

    The fog texture of make_cifar_c.py: midpoints get the mean of their neighbours plus uniform
    noise of amplitude wibble^2, with wibble starting at 100 and divided by `decay` per level.
    """
    size = 1 << max(int(size) - 1, 1).bit_length()
    m = torch.zeros(n, size, size, device=device)
    step, wibble = size, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        return a / 4 + wibble * _uniform(a.shape, -wibble, wibble, g, device)

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        sq = corners + corners.roll(-1, 1)
        m[:, half::step, half::step] = wibbled(sq + sq.roll(-1, 2))
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + dr.roll(1, 1) + ul + ul.roll(-1, 2))
        m[:, half::step, 0::step] = wibbled(dr + dr.roll(1, 2) + ul + ul.roll(-1, 1))
        step, wibble = half, wibble / decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True).clamp_min(1e-12)


def _octave_noise(n: int, h: int, w: int, g: torch.Generator, device: torch.device, cells: int) -> torch.Tensor:
    """Smooth random field: uniform noise on a cells x cells grid, bicubically enlarged to h x w."""
    grid = _rand((n, 1, cells + 1, cells + 1), g, device)
    return F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)


def frost_sheets(count: int, side: int, scale: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """`count` procedural frost "photographs" (count, 1, side, side) in [0, 1], features sized by `scale`.

    Three layers: ridged multi-octave noise (thin bright vein networks, like crystal boundaries),
    needles (sparse points smeared along random directions with the motion-blur kernel) and a faint
    haze, mixed to a mean near 0.45. Chosen by eye to resemble frost on glass, not fitted to the
    photographs that CIFAR-10-C used.
    """
    per = side / (REFERENCE_SIZE * scale)  # how many 32-px-equivalent images fit along a side
    ridges = torch.zeros(count, 1, side, side, device=device)
    for octave, cells in enumerate((2, 4, 8, 16)):
        v = _octave_noise(count, side, side, g, device, max(1, round(cells * per)))
        ridges += 0.6**octave * (1 - (2 * v - 1).abs()) ** 8
    ridges /= ridges.amax((2, 3), keepdim=True).clamp_min(1e-6)
    dots = (_rand((count, 1, side, side), g, device) < 0.015).float()
    needles = sum(
        _motion_blur(dots, 6 * scale, 4 * scale, _uniform((count,), -180, 180, g, device)) for _ in range(3)
    )
    needles = (needles / needles.amax((2, 3), keepdim=True).clamp_min(1e-6)) ** 0.5
    haze = _octave_noise(count, side, side, g, device, max(1, round(2 * per)))
    tex = 0.9 * ridges + 0.6 * needles + 0.3 * haze
    return (tex * (0.45 / tex.mean((2, 3), keepdim=True).clamp_min(1e-6))).clamp(0, 1)


def frost_texture(n: int, channels: int, h: int, w: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """Frost layers (n, channels, h, w) in [0, 1]: random crops of procedural frost sheets.

    Like the original, which crops each image's frost at random from one of five photographs
    (scaled to 0.2, a few hundred pixels), every call makes five sheets 6x the image side and
    gives each image a crop of a random sheet. RGB is tinted slightly blue like the photographs.
    """
    sheets = 5
    side = 6 * max(h, w)
    bank = frost_sheets(sheets, side, min(h, w) / REFERENCE_SIZE, g, device).reshape(-1)
    pick = torch.randint(0, sheets, (n,), generator=g, device=g.device).to(device)
    top = torch.randint(0, side - h + 1, (n,), generator=g, device=g.device).to(device)
    left = torch.randint(0, side - w + 1, (n,), generator=g, device=g.device).to(device)
    rows = top[:, None, None] + torch.arange(h, device=device)[None, :, None]
    cols = left[:, None, None] + torch.arange(w, device=device)[None, None, :]
    tex = bank[pick[:, None, None] * side * side + rows * side + cols].unsqueeze(1)  # (n, 1, h, w)
    if channels == 3:
        tint = torch.tensor([0.88, 0.95, 1.0], device=device).view(1, 3, 1, 1)
        return (tex * tint).clamp(0, 1)
    return tex.expand(n, channels, h, w).contiguous()


# ---------------------------------------------------------------------------------------------
# the corruptions: (x float [0, 1], severity 1..5, generator) -> float, not yet clipped/quantised

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def gaussian_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Additive N(0, c^2) noise per pixel and channel."""
    return x + PARAMS["gaussian_noise"][severity - 1] * _randn(x.shape, g, x.device)


def shot_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Poisson photon noise: Poisson(c x) / c."""
    c = PARAMS["shot_noise"][severity - 1]
    rate = (x.clamp(0, 1) * c).to(g.device)
    return torch.poisson(rate, generator=g).to(x.device) / c


def impulse_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Salt and pepper (skimage 's&p'): each value flips with probability c, to 0 or 1 evenly."""
    c = PARAMS["impulse_noise"][severity - 1]
    flipped = _rand(x.shape, g, x.device) <= c
    salt = (_rand(x.shape, g, x.device) <= 0.5).to(x.dtype)
    return torch.where(flipped, salt, x)


def defocus_kernel(radius: float, alias_sigma: float, device: torch.device, coverage: bool = False) -> torch.Tensor:
    """A normalised disk of `radius`, smoothed by a 3x3 Gaussian (5x5 beyond radius 8).

    The original disk keeps the pixels whose centre lies within `radius`. At the CIFAR radii (0.3
    to 1.5) that footprint jumps at whole radii (a point below 1, a plus at 1, a 3x3 square at 1.5),
    so a radius scaled to another image size could shrink a severity's kernel to a point;
    `coverage=True` weights each pixel by the fraction of it inside the disk (16x16 subsamples).
    """
    ksize = 3 if radius <= 8 else 5
    r = math.ceil(radius) + ksize // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    if coverage:
        sub = (torch.arange(16, dtype=torch.float64) + 0.5) / 16 - 0.5
        tt = (t[:, None] + sub[None, :]).reshape(-1)
        inside = ((tt[:, None] ** 2 + tt[None, :] ** 2) <= radius**2).double()
        disk = inside.reshape(len(t), 16, len(t), 16).mean((1, 3))
    else:
        disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    k1 = _gaussian_kernel(alias_sigma, ksize // 2, torch.device("cpu")).double()
    smooth = F.conv2d(disk.view(1, 1, *disk.shape), (k1[:, None] * k1[None, :]).view(1, 1, ksize, ksize),
                      padding=ksize // 2)[0, 0]
    return smooth.float().to(device)


def defocus_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Convolution with an anti-aliased disk, reflecting at the border (OpenCV filter2D).

    At 32 px the disk is the original one; at other sizes radius and alias sigma are scaled and
    the disk weighs pixels by coverage (see `defocus_kernel`), so severities stay ordered.
    """
    radius, alias = PARAMS["defocus_blur"][severity - 1]
    s = _scale(x)
    kernel = defocus_kernel(radius * s, alias * s, x.device, coverage=s != 1)
    return _filter2d(x, kernel, mode="reflect")


def glass_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Blur, store as 8 bits, move each pixel's content from a random up/left neighbour, blur again.

    In make_cifar_c.py each pixel (h, w) with d < h, w <= size - d takes the value of (h + dy, w + dx),
    dy, dx uniform in [-d, d); for d = 1 the sequential loop reads only pixels it has not written yet,
    so one parallel gather per iteration is exact. The shift d is scaled with the image (at least 1).
    """
    sigma, delta, iterations = PARAMS["glass_blur"][severity - 1]
    s = _scale(x)
    sigma, delta = sigma * s, max(1, round(delta * s))
    n, _, h, w = x.shape
    x = _floor8(_gaussian_filter(x, sigma, mode="replicate"))
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows > delta) & (rows <= h - delta) & (cols > delta) & (cols <= w - delta)).long()
    for _ in range(iterations):
        shift = torch.randint(-delta, delta, (2, n, h, w), generator=g, device=g.device).to(x.device) * inside
        x = _gather_pixels(x, (rows + shift[0]).clamp(0, h - 1), (cols + shift[1]).clamp(0, w - 1))
    return _gaussian_filter(x, sigma, mode="replicate")


def motion_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """ImageMagick motion blur at a random angle in [-45, 45) degrees per image."""
    radius, sigma = PARAMS["motion_blur"][severity - 1]
    s = _scale(x)
    return _motion_blur(x, radius * s, sigma * s, _uniform((x.shape[0],), -45, 45, g, x.device))


def zoom_factors(severity: int) -> list[float]:
    """1.00, 1.01, ... as np.arange(1, stop, 0.01) gives them (7, 12, 16, 21 and 26 factors)."""
    return [1 + k * 0.01 for k in range(PARAMS["zoom_blur"][severity - 1])]


def zoom_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Mean of the image and its centre zooms by each factor (the first factor, 1.0, is the image)."""
    factors = zoom_factors(severity)
    n, c, h, w = x.shape
    mh = [_clipped_zoom_matrix(h, z, x.device) for z in factors]
    mw = [_clipped_zoom_matrix(w, z, x.device) for z in factors]
    if h * w <= 4096 and n * c >= 32:  # many small images: one (HW x HW) operator, one matrix product
        op = torch.einsum("zik,zjl->ijkl", torch.stack(mh), torch.stack(mw)).reshape(h * w, h * w)
        out = x.reshape(n * c, h * w) @ (op + torch.eye(h * w, device=x.device)).transpose(0, 1)
        return out.reshape(n, c, h, w) / (len(factors) + 1)
    out = x.clone()
    for a, b in zip(mh, mw, strict=True):
        out += _separable(x, a, b)
    return out / (len(factors) + 1)


def snow(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Thresholded, zoomed Gaussian flakes, motion-blurred at [-135, -45) degrees, over a whitened image."""
    loc, scale, zoom, threshold, mb_radius, mb_sigma, blend = PARAMS["snow"][severity - 1]
    n, _, h, w = x.shape
    s = _scale(x)
    flakes = loc + scale * _randn((n, 1, h, w), g, x.device)
    flakes = _clipped_zoom(flakes, zoom)
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes)
    flakes = _floor8(flakes)  # the original saves the layer as an 8-bit PNG for ImageMagick
    flakes = _round8(_motion_blur(flakes, mb_radius * s, mb_sigma * s, _uniform((n,), -135, -45, g, x.device)))
    x = blend * x + (1 - blend) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return x + flakes + flakes.flip(-2, -1)


def frost(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """a x + b frost, with a procedural frost texture (see `frost_texture`) instead of photographs."""
    a, b = PARAMS["frost"][severity - 1]
    n, c, h, w = x.shape
    return a * x + b * frost_texture(n, c, h, w, g, x.device)


def fog(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Add a plasma-fractal haze of strength c, rescaled by max / (max + c) per image."""
    strength, decay = PARAMS["fog"][severity - 1]
    n, _, h, w = x.shape
    haze = plasma_fractal(n, max(h, w), decay, g, x.device)[:, None, :h, :w]
    peak = x.amax((1, 2, 3), keepdim=True)
    return (x + strength * haze) * peak / (peak + strength)


def brightness(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Add c to the HSV value. For RGB, hue and saturation are kept, so RGB scales by V'/V."""
    c = PARAMS["brightness"][severity - 1]
    if x.shape[1] != 3:
        return (x + c).clamp(max=1)
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(max=1)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new.expand_as(x))


def contrast(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Pull each channel towards its spatial mean by factor c."""
    c = PARAMS["contrast"][severity - 1]
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * c + mean


def elastic_transform(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """A random affine jitter of three control points, then a smoothed random displacement field.

    The affine warp reflects at the border like OpenCV's BORDER_REFLECT_101; the displacement field
    is uniform noise smoothed by a Gaussian (sigma, truncate 3, symmetric border) times alpha, and
    resampled with a half-sample-symmetric border like scipy's map_coordinates(mode='reflect').
    """
    alpha, sigma, jitter = (v * min(x.shape[-2:]) for v in PARAMS["elastic_transform"][severity - 1])
    n, c, h, w = x.shape
    dev = x.device
    # 1. affine: control points around the centre, each moved by U(-jitter, jitter) (x, y order)
    cx, cy, sq = float(w // 2), float(h // 2), float(min(h, w) // 3)
    src = torch.tensor([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], dtype=torch.float64)
    dst = src[None] + _uniform((n, 3, 2), -jitter, jitter, g, torch.device("cpu")).double()
    ones = torch.ones(3, 1, dtype=torch.float64)
    fwd = torch.linalg.solve(torch.cat([src, ones], 1)[None].expand(n, 3, 3), dst)  # (n, 3, 2): [x y 1] @ fwd
    full = torch.zeros(n, 3, 3, dtype=torch.float64)
    full[:, :2, :] = fwd.transpose(1, 2)
    full[:, 2, 2] = 1
    inv = torch.linalg.inv(full)[:, :2, :].float().to(dev)  # output pixel -> source pixel
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # (h, w, 3)
    srcxy = torch.einsum("hwk,nik->nhwi", pix, inv)
    grid = torch.stack([2 * srcxy[..., 0] / max(w - 1, 1) - 1, 2 * srcxy[..., 1] / max(h - 1, 1) - 1], -1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    # 2. elastic displacement (drawn even when alpha is 0, so severities draw the same amount)
    field = _uniform((n, 2, h, w), -1, 1, g, dev)
    if alpha > 0 and sigma > 0:
        field = _gaussian_filter(field, sigma, truncate=3.0, mode="symmetric") * alpha
        gx = (2 * (xs + field[:, 0]) + 1) / w - 1
        gy = (2 * (ys + field[:, 1]) + 1) / h - 1
        x = F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="reflection",
                          align_corners=False)
    return x


def pixelate(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """PIL BOX resize to int(size * c), then BOX resize back (a nearest-style enlargement)."""
    c = PARAMS["pixelate"][severity - 1]
    h, w = x.shape[-2:]
    return _separable(x, _pixelate_matrix(h, c, x.device), _pixelate_matrix(w, c, x.device))


def jpeg_compression(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Encode and decode as JPEG at quality c with libjpeg (torchvision.io), on the CPU.

    1- and 3-channel images are encoded as they are (grey / RGB with 4:2:0 chroma, like PIL's
    default); other channel counts channel by channel as grey images.
    """
    from torchvision.io import decode_jpeg, encode_jpeg

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


def corrupt(
    x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None, *, quantize: bool = False,
) -> torch.Tensor:
    """Corrupt a batch (N, C, H, W) in [0, 1] (uint8 accepted) with `name` at `severity` 1..5.

    Random corruptions draw from `generator`; without one they use a fixed seed (0), so the same call
    gives the same images. Returns float32 in [0, 1]; `quantize` rounds to 8 bits like the released
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
    y = FUNCTIONS[name](x, severity, generator).clamp(0, 1)
    if quantize:
        y = _round8(y) if name in _ROUNDED else _floor8(y)
    return y


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
