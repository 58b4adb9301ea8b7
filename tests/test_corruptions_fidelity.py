"""Fidelity of the corruptions to make_cifar_c.py (CIFAR-10-C), at 32 px, 8 bits, all 5 severities.

Each reference below re-derives the original formula on its own, per image, with NumPy / SciPy /
PIL as make_cifar_c.py wrote it (scikit-image, OpenCV and ImageMagick, which are not installed here,
are re-derived from their sources). Randomness is drawn once per image from a NumPy RandomState, in
the original's own calls where it has them; the same numbers are handed to our batched
implementation through its ``*_given`` functions. Everything is then stored as the released arrays
were, ``np.uint8`` of the float result, and compared: every corruption is 8-bit identical.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from deeppatch.perturbations import corruption_ops as ops
from deeppatch.perturbations import corruptions as cc

SEVERITIES = (1, 2, 3, 4, 5)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: on 2 shared cores, one thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def natural_like(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 (n, size, size, 3): smooth random fields with a flat rectangle each, some pixels at 0 and
    255 (flat regions and saturated pixels are where truncation is most fragile)."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 5, 5, generator=g), size=(size, size), mode="bicubic", align_corners=True)
    for i in range(n):
        a, b = torch.randint(0, size // 2, (2,), generator=g).tolist()
        x[i, :, a : a + size // 3, b : b + size // 3] = torch.rand(3, 1, 1, generator=g)
    x[0, :, -4:, -4:] = 1.0
    x[1, :, :3, -3:] = 0.0
    return np.round(x.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


IMAGES = natural_like(3, 32, 0)
N = len(IMAGES)


def tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> what corrupt() hands the corruptions: float32 NCHW in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def stored(y: torch.Tensor) -> np.ndarray:
    """Our raw result, stored like corrupt(..., quantize=True), as uint8 NHWC."""
    out = torch.round(cc.finish(y, quantize=True) * 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1).numpy()


def nchw(per_image: list[np.ndarray]) -> torch.Tensor:
    """Draws made per image in the original's HWC layout -> our batched NCHW layout."""
    return torch.from_numpy(np.stack(per_image)).permute(0, 3, 1, 2)


def states(severity: int, salt: int) -> list[np.random.RandomState]:
    return [np.random.RandomState(1000 * salt + 10 * severity + i) for i in range(N)]


def assert_identical(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() == 0, f"{what}: max {diff.max()} levels, {np.mean(diff > 0):.4%} of values differ"


# ------------------------------------------------------------------------------------------
# re-derived library pieces


def clipped_zoom_ref(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """make_cifar_c.py's clipped_zoom (HWC)."""
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top : top + ch, top : top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top : trim_top + h, trim_top : trim_top + h]


def skimage_gaussian(img: np.ndarray, sigma: float, multichannel: bool, mode: str = "nearest",
                     truncate: float = 4.0) -> np.ndarray:
    """skimage.filters.gaussian (0.14 era): scipy's gaussian_filter, no blur across channels."""
    sigmas = (sigma, sigma, 0) if multichannel else sigma
    return ndimage.gaussian_filter(img.astype(np.float64), sigmas, mode=mode, truncate=truncate)


def magick_motion_blur(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick 6 MotionBlurImage (effect.c) on an 8-bit image (H, W) or (H, W, C), Q16, written
    to an 8-bit PNG: uint8.

    Kernel exp(-i^2 / 2 sigma^2) / (sqrt(2 pi) sigma), i < 2 ceil(radius) + 1, normalised; tap i at
    offset ceil(i (cos, sin) - 0.5) (ImageMagick's point / hypot form); edge pixels repeat; the sum is
    rounded to 16 bits (ClampToQuantum), the 8-bit export divides by 257 and truncates. This model
    matched ImageMagick 6.9.11-60 Q16 (`convert -motion-blur`) on all values of 12 radius/sigma/angle
    combinations.
    """
    width = int(2 * math.ceil(radius) + 1)
    kernel = np.array([math.exp(-(i * i) / (2.0 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
                       for i in range(width)])
    kernel /= kernel.sum()
    a = math.pi * angle / 180.0  # ImageMagick's DegreesToRadians
    px, py = width * math.sin(a), width * math.cos(a)
    hyp = math.hypot(px, py)
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    q = img.astype(np.float64) * 257
    acc = np.zeros_like(q)
    for i in range(width):
        dx, dy = math.ceil(i * py / hyp - 0.5), math.ceil(i * px / hyp - 0.5)
        acc += kernel[i] * q[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
    q16 = np.clip(np.floor(acc + 0.5), 0, 65535)
    return (q16 // 257).astype(np.uint8)


def opencv_gaussian_blur_f32(img: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """cv2.GaussianBlur of a float32 image (OpenCV 3/4 float path): float taps exp(-x^2 / 2 sigma^2)
    normalised in double; rows, then columns, each centre tap plus mirrored pairs, BORDER_REFLECT_101.
    (Bit-identical to cv2 4.10 on the five CIFAR disks, checked when this was written.)"""
    c = (ksize - 1) * 0.5
    taps = [np.float32(np.exp(-0.5 / (sigma * sigma) * (i - c) * (i - c))) for i in range(ksize)]
    total = 1.0 / sum(float(t) for t in taps)
    k = [np.float32(float(t) * total) for t in taps]
    r = ksize // 2
    out = img.astype(np.float32)
    for axis in (1, 0):
        p = np.pad(out, [(r, r) if a == axis else (0, 0) for a in range(2)], mode="reflect")
        n = out.shape[axis]

        def part(start, p=p, n=n, axis=axis):
            return np.take(p, np.arange(start, start + n), axis=axis)

        acc = part(r) * k[r]
        for j in range(1, r + 1):
            acc = acc + (part(r - j) + part(r + j)) * k[r - j]
        out = acc
    return out


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c.py's disk()."""
    L = np.arange(-8, 8 + 1)
    X, Y = np.meshgrid(L, L)
    aliased_disk = np.array((X**2 + Y**2) <= radius**2, dtype=np.float32)
    aliased_disk /= np.sum(aliased_disk)
    return opencv_gaussian_blur_f32(aliased_disk, 3, alias_blur)


def opencv_affine_transform(pts1: np.ndarray, pts2: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform: the 6x6 system of OpenCV's imgwarp.cpp, solved in double."""
    a = np.zeros((6, 6))
    b = np.zeros(6)
    for i in range(3):
        a[2 * i, 0:3] = a[2 * i + 1, 3:6] = (pts1[i, 0], pts1[i, 1], 1)
        b[2 * i], b[2 * i + 1] = pts2[i]
    return np.linalg.solve(a, b).reshape(2, 3)


def opencv_warp_affine_f32(img: np.ndarray, M: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(img float32 HWC, M, INTER_LINEAR, BORDER_REFLECT_101), OpenCV <= 4.10 imgwarp.cpp:
    inverse map, source positions in 1/1024 px rounded to 1/32 px (AB_BITS 10, INTER_BITS 5), float
    table weights, four taps summed in float32 (bit-identical to cv2 4.10 when written)."""
    D = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
    D = 1.0 / D if D != 0 else 0.0
    A11, A22, A12, A21 = M[1, 1] * D, M[0, 0] * D, -M[0, 1] * D, -M[1, 0] * D
    b1 = -A11 * M[0, 2] - A12 * M[1, 2]
    b2 = -A21 * M[0, 2] - A22 * M[1, 2]
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    X = (np.rint((A12 * ys + b1) * 1024).astype(np.int64) + 16 + np.rint(A11 * xs * 1024).astype(np.int64)) >> 5
    Y = (np.rint((A22 * ys + b2) * 1024).astype(np.int64) + 16 + np.rint(A21 * xs * 1024).astype(np.int64)) >> 5
    sx, sy = X >> 5, Y >> 5
    fx = (X & 31).astype(np.float32) / np.float32(32)
    fy = (Y & 31).astype(np.float32) / np.float32(32)

    def border(i, n):  # BORDER_REFLECT_101, repeated until inside
        while True:
            i = np.where(i < 0, -i, i)
            i = np.where(i >= n, 2 * n - 2 - i, i)
            if ((i >= 0) & (i < n)).all():
                return i

    one = np.float32(1)
    wts = [(one - fy) * (one - fx), (one - fy) * fx, fy * (one - fx), fy * fx]
    taps = [(sy, sx), (sy, sx + 1), (sy + 1, sx), (sy + 1, sx + 1)]
    out = None
    for (r, c), wt in zip(taps, wts, strict=True):
        term = img[border(r, h), border(c, w)] * wt[..., None]
        out = term if out is None else out + term
    return out


def skimage_rgb2hsv(arr: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2hsv (same code in 0.14 and 0.26)."""
    out = np.empty_like(arr)
    out_v = arr.max(-1)
    delta = np.ptp(arr, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_s = delta / out_v
        out_s[delta == 0.0] = 0.0
        idx = arr[..., 0] == out_v
        out[idx, 0] = (arr[idx, 1] - arr[idx, 2]) / delta[idx]
        idx = arr[..., 1] == out_v
        out[idx, 0] = 2.0 + (arr[idx, 2] - arr[idx, 0]) / delta[idx]
        idx = arr[..., 2] == out_v
        out[idx, 0] = 4.0 + (arr[idx, 0] - arr[idx, 1]) / delta[idx]
        out_h = (out[..., 0] / 6.0) % 1.0
    out_h[delta == 0.0] = 0.0
    out[..., 0], out[..., 1], out[..., 2] = out_h, out_s, out_v
    out[np.isnan(out)] = 0
    return out


def skimage_hsv2rgb(arr: np.ndarray) -> np.ndarray:
    """skimage.color.hsv2rgb."""
    hi = np.floor(arr[..., 0] * 6)
    f = arr[..., 0] * 6 - hi
    p = arr[..., 2] * (1 - arr[..., 1])
    q = arr[..., 2] * (1 - f * arr[..., 1])
    t = arr[..., 2] * (1 - (1 - f) * arr[..., 1])
    v = arr[..., 2]
    hi = np.stack([hi, hi, hi], axis=-1).astype(np.uint8) % 6
    return np.choose(hi, np.stack([np.stack((v, t, p), axis=-1), np.stack((q, v, p), axis=-1),
                                   np.stack((p, v, t), axis=-1), np.stack((p, q, v), axis=-1),
                                   np.stack((t, p, v), axis=-1), np.stack((v, p, q), axis=-1)]))


def plasma_fractal_ref(rs: np.random.RandomState, mapsize: int = 32, wibbledecay: float = 3) -> np.ndarray:
    """make_cifar_c.py's plasma_fractal, drawing from `rs`."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * rs.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = (drgrid + np.roll(drgrid, 1, axis=0)) + (ulgrid + np.roll(ulgrid, -1, axis=1))
        maparray[0:mapsize:stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(ltsum)
        ttsum = (drgrid + np.roll(drgrid, 1, axis=1)) + (ulgrid + np.roll(ulgrid, -1, axis=0))
        maparray[stepsize // 2 : mapsize : stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


# ------------------------------------------------------------------------------------------
# one test per corruption: ours (given the draws) vs the re-derived original, all severities


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise(severity):
    c = cc.PARAMS["gaussian_noise"][severity - 1]
    ref = [np.uint8(np.clip(x / 255.0 + rs.normal(size=x.shape, scale=c), 0, 1) * 255)
           for x, rs in zip(IMAGES, states(severity, 1), strict=True)]
    z = nchw([rs.standard_normal(x.shape) for x, rs in zip(IMAGES, states(severity, 1), strict=True)])
    assert_identical(stored(cc.gaussian_noise_given(tensor(IMAGES), severity, z)), np.stack(ref), "gaussian_noise")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise(severity):
    c = cc.PARAMS["shot_noise"][severity - 1]
    ref = [np.uint8(np.clip(rs.poisson(x / 255.0 * c) / c, 0, 1) * 255)
           for x, rs in zip(IMAGES, states(severity, 2), strict=True)]
    rng = states(severity, 2)

    def poisson(rate: torch.Tensor) -> torch.Tensor:  # the same draws, image by image, in HWC order
        return nchw([rs.poisson(r.permute(1, 2, 0).numpy()) for r, rs in zip(rate, rng, strict=True)])

    assert_identical(stored(cc.shot_noise_given(tensor(IMAGES), severity, poisson)), np.stack(ref), "shot_noise")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise(severity):
    """skimage.util.random_noise(mode='s&p') of its time: np.random.choice flips, then salt vs pepper."""
    c = cc.PARAMS["impulse_noise"][severity - 1]
    ref = []
    for x, rs in zip(IMAGES, states(severity, 3), strict=True):
        out = x / 255.0
        flipped = rs.choice([True, False], size=out.shape, p=[c, 1 - c])
        salted = rs.choice([True, False], size=out.shape, p=[0.5, 0.5])
        out[flipped & salted] = 1
        out[flipped & ~salted] = 0
        ref.append(np.uint8(np.clip(out, 0, 1) * 255))
    u = [(rs.random_sample(x.shape), rs.random_sample(x.shape)) for x, rs in zip(IMAGES, states(severity, 3),
                                                                                  strict=True)]
    ours = cc.impulse_noise_given(tensor(IMAGES), severity, nchw([a for a, _ in u]), nchw([b for _, b in u]))
    assert_identical(stored(ours), np.stack(ref), "impulse_noise")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_defocus_blur(severity):
    """cv2.filter2D (float64 image, float32 kernel, BORDER_REFLECT_101) = scipy correlate, mode 'mirror'.

    The float32 kernel sums to slightly more than 1 at every severity (1.4e-9 .. 4.5e-8 above), so
    flat regions stay on their level; OpenCV's DFT-based filter2D adds noise near 1e-16, far below.
    """
    radius, alias = cc.PARAMS["defocus_blur"][severity - 1]
    kernel = disk(radius, alias).astype(np.float64)
    ref = []
    for x in IMAGES:
        x = x / 255.0
        channels = [ndimage.correlate(x[:, :, d], kernel, mode="mirror") for d in range(3)]
        ref.append(np.uint8(np.clip(np.array(channels).transpose((1, 2, 0)), 0, 1) * 255))
    assert np.array_equal(ops.defocus_kernel(radius, alias).numpy(), disk(radius, alias)[np.ix_(*[np.flatnonzero(
        disk(radius, alias).any(0))] * 2)]), "the same float32 kernel"
    assert_identical(stored(cc.defocus_blur(tensor(IMAGES), severity, torch.Generator())), np.stack(ref),
                     "defocus_blur")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_glass_blur(severity):
    """The original loop, sequential, with its view-copy "swap", on the same shifts."""
    sigma, d, iterations = cc.PARAMS["glass_blur"][severity - 1]
    rng = states(severity, 5)
    shifts = np.stack([np.stack([rs.randint(-d, d, size=(2, 32, 32)) for rs in rng], 1)
                       for _ in range(iterations)])  # (iterations, 2 (dy, dx), N, 32, 32)
    ref = []
    for i, x in enumerate(IMAGES):
        x = np.uint8(skimage_gaussian(x / 255.0, sigma, multichannel=True) * 255)
        for it in range(iterations):
            for h in range(32 - d, d, -1):
                for w in range(32 - d, d, -1):
                    dy, dx = shifts[it, 0, i, h, w], shifts[it, 1, i, h, w]
                    h_prime, w_prime = h + dy, w + dx
                    x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
        ref.append(np.uint8(np.clip(skimage_gaussian(x / 255.0, sigma, multichannel=True), 0, 1) * 255))
    ours = cc.glass_blur_given(tensor(IMAGES), severity, torch.from_numpy(shifts))
    assert_identical(stored(ours), np.stack(ref), "glass_blur")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_motion_blur(severity):
    radius, sigma = cc.PARAMS["motion_blur"][severity - 1]
    angles = [rs.uniform(-45, 45) for rs in states(severity, 6)]
    ref = [magick_motion_blur(x, radius, sigma, a) for x, a in zip(IMAGES, angles, strict=True)]
    ours = cc.motion_blur_given(tensor(IMAGES), severity, torch.tensor(angles, dtype=torch.float64))
    assert_identical(stored(ours), np.stack(ref), "motion_blur")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_zoom_blur(severity):
    c = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
         np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]
    ref = []
    for x in IMAGES:
        x = (x / 255.0).astype(np.float32)
        out = np.zeros_like(x)
        for zoom_factor in c:
            out += clipped_zoom_ref(x, zoom_factor)
        ref.append(np.uint8(np.clip((x + out) / (len(c) + 1), 0, 1) * 255))
    assert cc.zoom_factors(severity) == c.tolist()
    assert_identical(stored(cc.zoom_blur(tensor(IMAGES), severity, torch.Generator())), np.stack(ref), "zoom_blur")


def opencv_rgb2gray_f32(x: np.ndarray) -> np.ndarray:
    """cv2.cvtColor(float32 RGB, COLOR_RGB2GRAY): (R 0.299f + G 0.587f) + B 0.114f in float32."""
    c = [np.float32(v) for v in (0.299, 0.587, 0.114)]
    return (x[..., 0] * c[0] + x[..., 1] * c[1]) + x[..., 2] * c[2]


@pytest.mark.parametrize("severity", SEVERITIES)
def test_snow(severity):
    c = cc.PARAMS["snow"][severity - 1]
    ref = []
    for x, rs in zip(IMAGES, states(severity, 8), strict=True):
        x = np.array(x, dtype=np.float32) / 255.0
        snow_layer = rs.normal(size=x.shape[:2], loc=c[0], scale=c[1])
        snow_layer = clipped_zoom_ref(snow_layer[..., np.newaxis], c[2])
        snow_layer[snow_layer < c[3]] = 0
        snow_layer = (np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8)
        snow_layer = magick_motion_blur(snow_layer, c[4], c[5], rs.uniform(-135, -45)) / 255.0
        snow_layer = snow_layer[..., np.newaxis]
        x = c[6] * x + (1 - c[6]) * np.maximum(x, opencv_rgb2gray_f32(x).reshape(32, 32, 1) * 1.5 + 0.5)
        ref.append(np.uint8(np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255))
    draws = [(rs.standard_normal((32, 32)), rs.uniform(-135, -45)) for rs in states(severity, 8)]
    flakes = torch.from_numpy(np.stack([f for f, _ in draws]))[:, None]
    ours = cc.snow_given(tensor(IMAGES), severity, flakes, torch.tensor([a for _, a in draws]))
    assert_identical(stored(ours), np.stack(ref), "snow")


FROST_DIR = Path(cc.__file__).parent / "frost_images"


def original_frost_dir() -> Path | None:
    """The original photographs (not shipped): shared/data/frost in this workspace or beside a checkout."""
    root = Path(__file__).resolve().parents[1]
    for p in (os.environ.get("DEEPPATCH_FROST_ORIGINALS"), root / "shared/data/frost",
              root.parent / "shared/data/frost", "/work/shared/data/frost"):
        if p and (Path(p) / "frost1.png").is_file():
            return Path(p)
    return None


def test_shipped_frost_images_are_the_originals_shrunk_like_opencv():
    """cv2.resize(frost, (0, 0), fx=0.2, fy=0.2) (bilinear): output side cvRound(0.2 side); the
    sample point of output pixel i is (i + 0.5) / 0.2 - 0.5 = 5 i + 2, a whole pixel, weight 1."""
    folder = original_frost_dir()
    if folder is None:
        pytest.skip("the original frost photographs are not available here")
    for i, name in enumerate(["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"], start=1):
        photo = np.array(Image.open(folder / name).convert("RGB"))  # cv2.imread drops alpha the same way
        h, w = photo.shape[:2]
        oh, ow = int(np.rint(h * 0.2)), int(np.rint(w * 0.2))
        pos_y = np.minimum(np.floor((np.arange(oh) + 0.5) / 0.2 - 0.5 + 1e-9).astype(int), h - 1)
        pos_x = np.minimum(np.floor((np.arange(ow) + 0.5) / 0.2 - 0.5 + 1e-9).astype(int), w - 1)
        shrunk = photo[pos_y][:, pos_x]
        assert np.array_equal(np.array(Image.open(FROST_DIR / f"frost{i}.png")), shrunk), name


@pytest.mark.parametrize("severity", SEVERITIES)
def test_frost(severity):
    c = cc.PARAMS["frost"][severity - 1]
    photos = [np.array(Image.open(FROST_DIR / f"frost{i}.png").convert("RGB")) for i in range(1, 6)]
    ref, draws = [], []
    for x, rs in zip(IMAGES, states(severity, 9), strict=True):
        idx = rs.randint(5)
        frost = photos[idx]
        x_start, y_start = rs.randint(0, frost.shape[0] - 32), rs.randint(0, frost.shape[1] - 32)
        frost = frost[x_start : x_start + 32, y_start : y_start + 32]
        ref.append(np.uint8(np.clip(c[0] * np.array(x) + c[1] * frost, 0, 255)))
        draws.append((idx, x_start, y_start))
    picks, tops, lefts = (torch.tensor(v) for v in zip(*draws, strict=True))
    assert_identical(stored(cc.frost_given(tensor(IMAGES), severity, picks, tops, lefts)), np.stack(ref), "frost")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_fog(severity):
    c = cc.PARAMS["fog"][severity - 1]
    ref = []
    for x, rs in zip(IMAGES, states(severity, 10), strict=True):
        x = np.array(x) / 255.0
        max_val = x.max()
        x += c[0] * plasma_fractal_ref(rs, wibbledecay=c[1])[:32, :32][..., np.newaxis]
        ref.append(np.uint8(np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255))
    rng = states(severity, 10)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:  # the same U[0, 1) numbers, image by image
        return torch.from_numpy(np.stack([rs.random_sample(shape[1:]) for rs in rng]))

    haze = ops.plasma_fractal(N, 32, c[1], draw, torch.device("cpu"))
    assert_identical(stored(cc.fog_given(tensor(IMAGES), severity, haze)), np.stack(ref), "fog")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness(severity):
    c = cc.PARAMS["brightness"][severity - 1]
    ref = []
    for x in IMAGES:
        x = skimage_rgb2hsv(np.array(x) / 255.0)
        x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
        ref.append(np.uint8(np.clip(skimage_hsv2rgb(x), 0, 1) * 255))
    assert_identical(stored(cc.brightness(tensor(IMAGES), severity, torch.Generator())), np.stack(ref), "brightness")


def test_the_hsv_re_derivation_is_scikit_image():
    skimage_color = pytest.importorskip("skimage.color")
    x = IMAGES[0] / 255.0
    assert np.array_equal(skimage_rgb2hsv(x), skimage_color.rgb2hsv(x))
    assert np.array_equal(skimage_hsv2rgb(skimage_rgb2hsv(x)), skimage_color.hsv2rgb(skimage_color.rgb2hsv(x)))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast(severity):
    c = cc.PARAMS["contrast"][severity - 1]
    ref = []
    for x in IMAGES:
        x = np.array(x) / 255.0
        means = np.mean(x, axis=(0, 1), keepdims=True)
        ref.append(np.uint8(np.clip((x - means) * c + means, 0, 1) * 255))
    assert_identical(stored(cc.contrast(tensor(IMAGES), severity, torch.Generator())), np.stack(ref), "contrast")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_elastic_transform(severity):
    c = [v * 32 for v in cc.PARAMS["elastic_transform"][severity - 1]]
    ref = []
    for x, rs in zip(IMAGES, states(severity, 13), strict=True):
        image = np.array(x, dtype=np.float32) / 255.0
        shape = image.shape
        center_square = np.float32(shape[:2]) // 2
        square_size = min(shape[:2]) // 3
        pts1 = np.float32([center_square + square_size,
                           [center_square[0] + square_size, center_square[1] - square_size],
                           center_square - square_size])
        pts2 = pts1 + rs.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
        image = opencv_warp_affine_f32(image, opencv_affine_transform(pts1, pts2))
        dx = (skimage_gaussian(rs.uniform(-1, 1, size=shape[:2]), c[1], False, "reflect", 3) * c[0]).astype(np.float32)
        dy = (skimage_gaussian(rs.uniform(-1, 1, size=shape[:2]), c[1], False, "reflect", 3) * c[0]).astype(np.float32)
        dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
        xx, yy, zz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
        indices = np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)), np.reshape(zz, (-1, 1))
        warped = ndimage.map_coordinates(image, indices, order=1, mode="reflect").reshape(shape)
        ref.append(np.uint8(np.clip(warped, 0, 1) * 255))
    rng = states(severity, 13)
    jitter = torch.from_numpy(np.stack([rs.random_sample((3, 2)) for rs in rng]))
    field = torch.from_numpy(np.stack([np.stack([rs.random_sample((32, 32)) for _ in range(2)]) for rs in rng]))
    ours = cc.elastic_transform_given(tensor(IMAGES), severity, jitter, field)
    assert_identical(stored(ours), np.stack(ref), "elastic_transform")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_pixelate(severity):
    c = cc.PARAMS["pixelate"][severity - 1]
    ref = []
    for x in IMAGES:
        img = Image.fromarray(x)
        img = img.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
        ref.append(np.uint8(np.array(img)))
    assert_identical(stored(cc.pixelate(tensor(IMAGES), severity, torch.Generator())), np.stack(ref), "pixelate")


def test_pixelate_is_pillow_on_other_sizes_and_grey():
    x = natural_like(2, 28, 3)[..., :1]
    for severity, c in enumerate(cc.PARAMS["pixelate"], start=1):
        ref = [np.array(Image.fromarray(im[..., 0]).resize((int(28 * c), int(28 * c)), Image.BOX)
                        .resize((28, 28), Image.BOX))[..., None] for im in x]
        assert_identical(stored(cc.pixelate(tensor(x), severity, torch.Generator())), np.stack(ref), "pixelate 28")


@pytest.mark.parametrize("severity", SEVERITIES)
def test_jpeg_compression(severity):
    c = cc.PARAMS["jpeg_compression"][severity - 1]
    ref = []
    for x in IMAGES:
        output = io.BytesIO()
        Image.fromarray(x).save(output, "JPEG", quality=c)
        ref.append(np.uint8(np.array(Image.open(output))))
    ours = cc.jpeg_compression(tensor(IMAGES), severity, torch.Generator())
    assert_identical(stored(ours), np.stack(ref), "jpeg_compression")


def test_jpeg_compression_is_pillow_on_grey():
    x = natural_like(2, 28, 4)[..., :1]
    for severity, c in enumerate(cc.PARAMS["jpeg_compression"], start=1):
        ref = []
        for im in x:
            output = io.BytesIO()
            Image.fromarray(im[..., 0]).save(output, "JPEG", quality=c)
            ref.append(np.array(Image.open(output))[..., None])
        ours = cc.jpeg_compression(tensor(x), severity, torch.Generator())
        assert_identical(stored(ours), np.stack(ref), "jpeg_compression grey")
