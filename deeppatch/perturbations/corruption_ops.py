"""Filters, resampling, textures and 8-bit storage behind the common corruptions (`corruptions.py`).

Each helper reproduces the arithmetic of the library call it stands for in the CIFAR-10-C generator
(scipy.ndimage, OpenCV, PIL, ImageMagick, scikit-image), batched on tensors. Why so literal: the
generator stores its float results with ``np.uint8`` (truncation), so a value that lands exactly on an
8-bit level, as flat image regions and untouched pixels do, keeps or loses that level depending on
the last bit of the float result. So every helper computes in the precision the original used
(float32 or float64), and where flat regions make it matter, in the same order of operations.
tests/test_corruptions_fidelity.py checks each against an independent NumPy/SciPy/PIL re-derivation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Sampler = Callable[[tuple[int, ...]], torch.Tensor]  # shape -> U[0, 1) float64 of that shape

FROST_FILES: tuple[str, ...] = ("frost1.png", "frost2.png", "frost3.png", "frost4.png", "frost5.png")


# ---------------------------------------------------------------------------------------------
# random draws: always from the caller's generator, on its device, then moved to the data; float64,
# because NumPy's draws (which the formulas were written for) are float64


def rand(shape: Sequence[int], g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=g, device=g.device, dtype=torch.float64).to(device)


def randn(shape: Sequence[int], g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=g, device=g.device, dtype=torch.float64).to(device)


def uniform(shape: Sequence[int], low: float, high: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """U[low, high) as NumPy forms it: low + (high - low) * u."""
    return low + (high - low) * rand(shape, g, device)


def sampler(g: torch.Generator, device: torch.device) -> Sampler:
    return lambda shape: rand(shape, g, device)


# ---------------------------------------------------------------------------------------------
# 8-bit values


def levels(x: torch.Tensor) -> torch.Tensor:
    """x in [0, 1] as float64 values 0..255, like ``np.array(pil_image)``.

    float32 cannot hold k/255 exactly, so values within 1e-3 of a level are snapped to it; other
    values (inputs that were never 8-bit) are kept as they are.
    """
    v = x.double() * 255
    r = v.round()
    return torch.where((v - r).abs() < 1e-3, r, v)


def unit64(x: torch.Tensor) -> torch.Tensor:
    """``np.array(img) / 255.``: float64."""
    return levels(x) / 255


def unit32(x: torch.Tensor) -> torch.Tensor:
    """``np.array(img, dtype=np.float32) / 255.``: float32 (k/255 rounded once, to float32)."""
    return levels(x).float() / 255


def floor8(y: torch.Tensor) -> torch.Tensor:
    """``np.uint8(np.clip(y, 0, 1) * 255)`` / 255, computed in y's own dtype.

    No margin: each corruption returns the dtype the original computed in (float32 or float64), so
    the product with 255 rounds exactly as NumPy's did and the truncation sees the same value. Exact
    levels survive: fl(fl(k / 255) * 255) == k for every k in float32 and in float64 (checked).
    """
    return torch.floor(y.clamp(0, 1) * 255) / 255


def imagemagick8(y: torch.Tensor) -> torch.Tensor:
    """What ImageMagick 6 (Q16) writes to an 8-bit PNG for a result y in [0, 1], as levels / 255.

    ClampToQuantum rounds to 16 bits, and the 8-bit export then divides by 257 and truncates. Matched
    ImageMagick 6.9.11-60 Q16 `-motion-blur` output on every value of 12 radius/sigma/angle cases
    (plain rounding matched 54 %, plain truncation 95 %).
    """
    q = torch.floor(y.clamp(0, 1) * 65535 + 0.5)
    return torch.floor(q / 257) / 255


# ---------------------------------------------------------------------------------------------
# padding, any width (beyond the image size the pattern repeats)


def pad_index(n: int, pad: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source indices for a padded axis: replicate (scipy 'nearest'), symmetric (scipy 'reflect'),
    reflect (scipy 'mirror', OpenCV BORDER_REFLECT_101)."""
    idx = torch.arange(-pad, n + pad, device=device)
    return fold_index(idx, n, mode)


def fold_index(idx: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map any integer positions into 0..n-1 by the border rule `mode` (see `pad_index`)."""
    if mode == "replicate" or n == 1:
        return idx.clamp(0, n - 1)
    if mode == "symmetric":
        m = idx.remainder(2 * n)
        return torch.where(m >= n, 2 * n - 1 - m, m)
    if mode == "reflect":
        m = idx.remainder(2 * (n - 1))
        return torch.where(m >= n, 2 * (n - 1) - m, m)
    raise ValueError(mode)


def pad1d(x: torch.Tensor, pad: int, mode: str, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if pad == 0:
        return x
    if mode == "symmetric" and pad <= n:  # fast path: mirrored edge slices
        return torch.cat([x.narrow(dim, 0, pad).flip(dim), x, x.narrow(dim, n - pad, pad).flip(dim)], dim)
    return x.index_select(dim, pad_index(n, pad, mode, x.device))


def pad2d(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two axes by (ph, pw) with border rule `mode`."""
    h, w = x.shape[-2:]
    if x.ndim == 4 and (mode == "replicate" or (mode == "reflect" and ph < h and pw < w)):
        return F.pad(x, (pw, pw, ph, ph), mode=mode)  # torch's own kernels are much faster than a gather
    return pad1d(pad1d(x, ph, mode, x.ndim - 2), pw, mode, x.ndim - 1)


# ---------------------------------------------------------------------------------------------
# scipy.ndimage.gaussian_filter


def gaussian_weights(sigma: float, truncate: float = 4.0) -> list[float]:
    """scipy's 1-D Gaussian kernel, bit for bit (NumPy's exp, then division by the NumPy sum)."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * t**2)
    return (phi / phi.sum()).tolist()


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate") -> torch.Tensor:
    """scipy.ndimage.gaussian_filter on the last two axes (rows, then columns), in x's dtype.

    Same kernel and same order of operations as scipy's correlate1d for a symmetric kernel: the
    centre tap, then the sums of mirrored pairs from the outermost in. So a flat region comes out as
    the very float scipy computes (the glass-blur truncation depends on that).
    """
    if sigma <= 1e-15:  # scipy skips such axes
        return x
    w = gaussian_weights(sigma, truncate)
    r = len(w) // 2
    for dim in (x.ndim - 2, x.ndim - 1):
        n = x.shape[dim]
        p = pad1d(x, r, mode, dim)
        out = p.narrow(dim, r, n) * w[r]
        for j in range(r, 0, -1):
            out = out + (p.narrow(dim, r - j, n) + p.narrow(dim, r + j, n)) * w[r - j]
        x = out
    return x


# ---------------------------------------------------------------------------------------------
# OpenCV: the defocus disk, filter2D, RGB2GRAY, warpAffine


def defocus_kernel(radius: float, alias_sigma: float, coverage: bool = False) -> torch.Tensor:
    """make_cifar_c.py's `disk` as float32: a normalised disk, then cv2.GaussianBlur (3x3, or 5x5
    beyond radius 8) with `alias_sigma`, cropped to its non-zero support.

    The disk keeps the pixels whose centre lies within `radius`; with `coverage` each pixel is
    weighted by the fraction of it inside (16x16 subsamples), for radii scaled to other image sizes,
    where the centre rule would jump at whole radii. The blur follows OpenCV's float path (float
    taps normalised in double; rows, then columns, each the centre tap plus the mirrored pair): the
    result equals cv2 4.10's kernel bit for bit at all five CIFAR severities. The kernel's float sum
    is what makes flat regions keep or lose a level after truncation, so the bits matter.
    """
    ksize = 3 if radius <= 8 else 5
    half = 8 if radius <= 8 else math.ceil(radius)
    t = np.arange(-half, half + 1, dtype=np.float64)
    if coverage:
        sub = (np.arange(16) + 0.5) / 16 - 0.5
        tt = (t[:, None] + sub[None, :]).reshape(-1)
        inside = (tt[:, None] ** 2 + tt[None, :] ** 2) <= radius**2
        disk = inside.reshape(len(t), 16, len(t), 16).mean((1, 3)).astype(np.float32)
    else:
        disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).astype(np.float32)
    if not disk.any():  # a radius far below a pixel (tiny images): a point
        disk[half, half] = 1
    disk /= np.sum(disk)
    sigma = alias_sigma if alias_sigma > 0 else 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    taps = [np.float32(math.exp(-0.5 / (sigma * sigma) * (i - (ksize - 1) * 0.5) * (i - (ksize - 1) * 0.5)))
            for i in range(ksize)]
    total = 1.0 / sum(float(v) for v in taps)
    k = [np.float32(float(v) * total) for v in taps]
    r = ksize // 2
    out = disk
    for axis in (1, 0):  # OpenCV's separable filter: the row filter first
        p = np.pad(out, [(r, r) if a == axis else (0, 0) for a in range(2)], mode="reflect")
        n = out.shape[axis]

        def part(start: int, p: np.ndarray = p, n: int = n, axis: int = axis) -> np.ndarray:
            return np.take(p, range(start, start + n), axis=axis)

        acc = part(r) * k[r]
        for j in range(1, r + 1):
            acc = acc + (part(r - j) + part(r + j)) * k[r - j]
        out = acc.astype(np.float32)
    nz = np.nonzero(out.any(0))[0]
    lo, hi = min(nz[0], len(t) - 1 - nz[-1]), max(nz[-1], len(t) - 1 - nz[0])
    return torch.from_numpy(np.ascontiguousarray(out[lo : hi + 1, lo : hi + 1]))


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """cv2.filter2D: correlate every channel with one odd-sized 2-D kernel, in x's dtype."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    y = pad2d(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, mode)
    return F.conv2d(y, kernel.view(1, 1, kh, kw).to(x)).reshape(n, c, h, w)


def opencv_grey(x: torch.Tensor) -> torch.Tensor:
    """cv2.cvtColor(RGB2GRAY) of float32 RGB: (R 0.299f + G 0.587f) + B 0.114f in float32; grey
    images are themselves, other channel counts their mean. Keeps the channel axis."""
    if x.shape[1] == 3:
        cr, cg, cb = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in (0.299, 0.587, 0.114))
        return (x[:, 0:1] * cr + x[:, 1:2] * cg) + x[:, 2:3] * cb
    return x.mean(1, keepdim=True) if x.shape[1] > 1 else x


def affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """cv2.getAffineTransform for a batch: (N, 2, 3) float64 maps with dst = M [src; 1]."""
    src, dst = src.double(), dst.double()
    a = torch.cat([src, torch.ones(*src.shape[:-1], 1, dtype=torch.float64, device=src.device)], -1)
    return torch.linalg.solve(a, dst).transpose(1, 2)


def opencv_warp_affine(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """cv2.warpAffine(x, m, (W, H), INTER_LINEAR, BORDER_REFLECT_101) of float32 images, as OpenCV
    up to 4.10 computes it.

    The inverse map (cv2.invertAffineTransform's formula) gives each output pixel a source position
    in 1/1024 px, rounded to the nearest 1/32 px; the four neighbours (folded into the image by
    REFLECT_101) are weighted by products of multiples of 1/32 and summed left to right in float32.
    Exact coordinates would move sharp edges by up to 4 levels; this matched cv2 4.10 bit for bit.
    (OpenCV 4.11+ interpolates at float positions, so do not check this against a new cv2.)
    """
    n, c, h, w = x.shape
    m = m.double().cpu()
    d = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    d = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    a11, a22 = m[:, 1, 1] * d, m[:, 0, 0] * d
    a12, a21 = -m[:, 0, 1] * d, -m[:, 1, 0] * d
    b1 = -a11 * m[:, 0, 2] - a12 * m[:, 1, 2]
    b2 = -a21 * m[:, 0, 2] - a22 * m[:, 1, 2]
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w)

    def fixed(row_a: torch.Tensor, const: torch.Tensor, col_a: torch.Tensor) -> torch.Tensor:
        per_row = torch.round((row_a.view(n, 1, 1) * ys + const.view(n, 1, 1)) * 1024).long() + 16
        per_col = torch.round(col_a.view(n, 1, 1) * xs * 1024).long()
        return torch.div(per_row + per_col, 32, rounding_mode="floor")  # source position in 1/32 px

    fx_all, fy_all = fixed(a12, b1, a11), fixed(a22, b2, a21)
    sx, sy = torch.div(fx_all, 32, rounding_mode="floor"), torch.div(fy_all, 32, rounding_mode="floor")
    fx = (fx_all - 32 * sx).float() / 32
    fy = (fy_all - 32 * sy).float() / 32
    dev = x.device
    sx, sy, fx, fy = sx.to(dev), sy.to(dev), fx.to(dev), fy.to(dev)
    x0, x1 = fold_index(sx, w, "reflect"), fold_index(sx + 1, w, "reflect")
    y0, y1 = fold_index(sy, h, "reflect"), fold_index(sy + 1, h, "reflect")
    one = torch.ones((), dtype=torch.float32, device=dev)
    wts = ((one - fy) * (one - fx), (one - fy) * fx, fy * (one - fx), fy * fx)
    out = None
    for (rows, cols), wt in zip(((y0, x0), (y0, x1), (y1, x0), (y1, x1)), wts, strict=True):
        term = gather_pixels(x, rows, cols) * wt.unsqueeze(1)
        out = term if out is None else out + term
    return out


def map_coordinates_linear(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """scipy.ndimage.map_coordinates(order=1, mode='reflect') per channel at (rows, cols) (N, H, W).

    Linear interpolation with a half-sample-symmetric border, in float64 like scipy; cast the result
    to float32 where the original's input was float32.
    """
    n, c, h, w = x.shape
    gx = (2 * cols.double() + 1) / w - 1
    gy = (2 * rows.double() + 1) / h - 1
    return F.grid_sample(x.double(), torch.stack([gx, gy], -1), mode="bilinear", padding_mode="reflection",
                         align_corners=False)


# ---------------------------------------------------------------------------------------------
# gathers, separable linear maps, zoom, PIL's BOX resize


def gather_pixels(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """out[n, c, h, w] = x[n, c, rows[n, h, w], cols[n, h, w]] (indices already in range)."""
    n, c, h, w = x.shape
    idx = (rows * w + cols).reshape(n, 1, -1).expand(n, c, -1)
    return x.reshape(n, c, h * w).gather(2, idx).reshape(n, c, *rows.shape[1:])


def separable(x: torch.Tensor, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """Apply a linear map per axis: mh @ x @ mw^T on the last two axes, in x's dtype."""
    return torch.matmul(torch.matmul(mh.to(x), x), mw.to(x).transpose(0, 1))


def clipped_zoom_matrix(n: int, zoom: float, device: torch.device) -> torch.Tensor:
    """(n, n) float64 matrix of the original's `clipped_zoom` on one axis.

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
    return m.to(device)


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    return separable(x, clipped_zoom_matrix(h, zoom, x.device), clipped_zoom_matrix(w, zoom, x.device))


PIL_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point coefficients for 8-bit images


def pil_box_coefficients(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) integer weights of Pillow's BOX resampling of an 8-bit axis.

    Pillow's precompute_coeffs (double arithmetic, box filter on (-0.5, 0.5]) and
    normalize_coeffs_8bpc (weights times 2^22, rounded half up), as float64 holding integers.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        ss = 1.0 / filterscale
        ws = [1.0 if -0.5 < (p - center + 0.5) * ss <= 0.5 else 0.0 for p in range(lo, hi)]
        total = sum(ws)
        for p, wt in zip(range(lo, hi), ws, strict=True):
            m[o, p] = float(int(0.5 + (wt / total if total else 0.0) * (1 << PIL_PRECISION_BITS)))
    return m


def pil_box_resize(v: torch.Tensor, h_out: int, w_out: int) -> torch.Tensor:
    """Image.resize((w_out, h_out), Image.BOX) of 8-bit values v (float64, 0..255), bit-exact.

    Pillow resamples columns first, then rows, each pass in fixed point and rounded to 8 bits
    ((sum + 2^21) >> 22, clipped); float64 holds these integer sums exactly. An axis whose size
    does not change is not resampled.
    """
    half = float(1 << (PIL_PRECISION_BITS - 1))
    one = float(1 << PIL_PRECISION_BITS)
    h, w = v.shape[-2:]
    if w_out != w:
        k = pil_box_coefficients(w, w_out).to(v.device)
        v = torch.floor((torch.matmul(v, k.transpose(0, 1)) + half) / one).clamp(0, 255)
    if h_out != h:
        k = pil_box_coefficients(h, h_out).to(v.device)
        v = torch.floor((torch.matmul(k, v) + half) / one).clamp(0, 255)
    return v


# ---------------------------------------------------------------------------------------------
# ImageMagick's motion blur


MAGICK_SQ2PI = 2.50662827463100024161235523934010416269302368164062


def magick_motion_kernel(radius: float, sigma: float) -> list[float]:
    """MotionBlurImage's one-sided kernel: width 2 ceil(radius) + 1, Gaussian weights, normalised."""
    width = int(2.0 * math.ceil(radius) + 1.0)
    s = sigma if abs(sigma) >= 1e-12 else 1e-12
    k = [math.exp(-(i * i) / (2.0 * s * s)) / (MAGICK_SQ2PI * s) for i in range(width)]
    total = 0.0
    for v in k:
        total += v
    return [v / total for v in k]


def magick_motion_offsets(width: int, angle: float) -> tuple[list[int], list[int]]:
    """MotionBlurImage's tap offsets (columns, rows) for `angle` in degrees, as ImageMagick rounds them."""
    a = math.pi * angle / 180.0
    px, py = width * math.sin(a), width * math.cos(a)
    hyp = math.hypot(px, py)
    cols = [math.ceil(i * py / hyp - 0.5) for i in range(width)]
    rows = [math.ceil(i * px / hyp - 0.5) for i in range(width)]
    return cols, rows


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's MotionBlurImage, batched, in x's dtype (before its 8-bit output, `imagemagick8`).

    A one-sided Gaussian kernel along each image's angle (degrees); pixels beyond the border repeat
    the edge (ImageMagick's default virtual pixels). Taps below 1e-12 are skipped.
    """
    n, c, h, w = x.shape
    k = magick_motion_kernel(radius, sigma)
    width = len(k)
    offsets = [magick_motion_offsets(width, a) for a in angles.double().cpu().tolist()]
    ox = torch.tensor([o[0] for o in offsets], dtype=torch.long).view(n, width)
    oy = torch.tensor([o[1] for o in offsets], dtype=torch.long).view(n, width)
    # replicate-pad once by the longest offset; then each tap is a flat gather at base + offset
    pad = width
    wp = w + 2 * pad
    flat = pad2d(x, pad, pad, "replicate").reshape(n, c, -1)
    rows = torch.arange(pad, pad + h, device=x.device)
    cols = torch.arange(pad, pad + w, device=x.device)
    base = (rows[:, None] * wp + cols[None, :]).view(1, 1, h * w)
    shifts = (oy * wp + ox).to(x.device)
    out = torch.zeros(n, c, h * w, device=x.device, dtype=x.dtype)
    for t in range(width):
        if k[t] < 1e-12:
            continue
        idx = (base + shifts[:, t].view(n, 1, 1)).expand(n, c, h * w)
        out.add_(flat.gather(2, idx), alpha=k[t])
    return out.view(n, c, h, w)


# ---------------------------------------------------------------------------------------------
# scikit-image's HSV conversions (float64, same operations, so values on a level stay there)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv on (N, 3, H, W): ties between maximal channels go to the later one."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.amax(1)
    delta = v - x.amin(1)
    zero = delta == 0
    safe = torch.where(zero, torch.ones_like(delta), delta)
    h = torch.zeros_like(v)
    h = torch.where(r == v, (g - b) / safe, h)
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(zero, torch.zeros_like(h), h)
    s = torch.where(zero, torch.zeros_like(delta), delta / torch.where(v == 0, torch.ones_like(v), v))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb on (N, 3, H, W)."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = hi.long().remainder(6)
    table = (
        (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q),
    )
    out = torch.zeros_like(hsv)
    for i, (cr, cg, cb) in enumerate(table):
        here = (sector == i).unsqueeze(1)
        out = torch.where(here, torch.stack([cr, cg, cb], 1), out)
    return out


# ---------------------------------------------------------------------------------------------
# textures: the fog fractal, the frost images


def plasma_fractal(n: int, size: int, decay: float, draw: Sampler, device: torch.device) -> torch.Tensor:
    """n diamond-square height maps (n, size, size), float64 in [0, 1]; `size` is rounded up to a power of two.

    The fog texture of make_cifar_c.py, operation for operation: midpoints get the mean of their
    neighbours plus uniform noise of amplitude wibble^2, with wibble starting at 100 and divided by
    `decay` per level. `draw(shape)` supplies the U[0, 1) numbers, (n, ...) per call, in the
    original's order (squares, then the two diamond sets, per level).
    """
    size = 1 << max(int(size) - 1, 1).bit_length()
    m = torch.zeros(n, size, size, device=device, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        return a / 4 + wibble * (-wibble + (wibble - -wibble) * draw(tuple(a.shape)).to(device))

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        sq = corners + corners.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half::step, half::step] = wibbled(sq)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled((dr + dr.roll(1, 1)) + (ul + ul.roll(-1, 2)))
        m[:, half::step, 0::step] = wibbled((dr + dr.roll(1, 2)) + (ul + ul.roll(-1, 1)))
        step, wibble = half, wibble / decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def load_frost_images() -> list[torch.Tensor]:
    """The five frost images (uint8, (3, h, w)) shipped in frost_images/ (see its README)."""
    folder = resources.files("deeppatch.perturbations") / "frost_images"
    out = []
    for name in FROST_FILES:
        with (folder / name).open("rb") as fh, Image.open(fh) as img:
            out.append(torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous())
    return out


def frost_window(h: int, w: int, images: Sequence[torch.Tensor], reference: int) -> tuple[int, int]:
    """The crop (rows, columns) taken from a frost image for an h x w image: the image's size at the
    CIFAR scale (the shorter side `reference` px), at most the smallest frost image."""
    s = min(h, w) / reference
    max_h = min(int(im.shape[1]) for im in images)
    max_w = min(int(im.shape[2]) for im in images)
    return min(max(1, round(h / s)), max_h), min(max(1, round(w / s)), max_w)


def frost_crops(
    images: Sequence[torch.Tensor], picks: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor,
    window: tuple[int, int], size: tuple[int, int], device: torch.device,
) -> torch.Tensor:
    """Per image the window at (top, left) of frost image `pick`, resized to `size` when they differ
    (antialiased bilinear); float64 (N, 3, H, W) values 0..255."""
    hm = max(int(im.shape[1]) for im in images)
    wm = max(int(im.shape[2]) for im in images)
    bank = torch.zeros(len(images), 3, hm, wm, dtype=torch.float64)
    for i, im in enumerate(images):
        bank[i, :, : im.shape[1], : im.shape[2]] = im.double()
    bank = bank.to(device)
    wh, ww = window
    picks, tops, lefts = picks.long().to(device), tops.long().to(device), lefts.long().to(device)
    rows = tops[:, None, None] + torch.arange(wh, device=device)[None, :, None]
    cols = lefts[:, None, None] + torch.arange(ww, device=device)[None, None, :]
    flat = bank.permute(1, 0, 2, 3).reshape(3, -1)  # (3, images * hm * wm)
    idx = (picks[:, None, None] * hm * wm + rows * wm + cols).reshape(-1)
    crops = flat[:, idx].reshape(3, -1, wh, ww).permute(1, 0, 2, 3)
    if (wh, ww) != tuple(size):
        crops = F.interpolate(crops, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return crops
