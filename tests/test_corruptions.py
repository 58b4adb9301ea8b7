"""Common corruptions (tensor implementation) and the corruptions suite (generated and canonical)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deeppatch.data import DatasetInfo, TensorSplit, dataset_info
from deeppatch.errors import DeepPatchError
from deeppatch.models import create_model
from deeppatch.perturbations import get_perturbation
from deeppatch.perturbations.corruptions import (
    CORRUPTIONS,
    PARAMS,
    RANDOM_CORRUPTIONS,
    corrupt,
    zoom_factors,
)
from deeppatch.suites import SuiteContext, get_suite
from deeppatch.suites import corruptions as suite_module

GREY = DatasetInfo("tiny_grey", 10, (1, 28, 28), (0.5,), (0.25,))


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: on 2 shared cores, one thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def natural_like(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random fields with a flat rectangle each, on the 8-bit grid (like real images)."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, channels, 5, 5, generator=g), size=(size, size), mode="bicubic",
                      align_corners=True)
    for i in range(n):
        a, b = torch.randint(0, size // 2, (2,), generator=g).tolist()
        x[i, :, a : a + size // 3, b : b + size // 3] = torch.rand(channels, 1, 1, generator=g)
    return torch.round(x.clamp(0, 1) * 255) / 255


BATCHES = {"grey28": natural_like(6, 1, 28, 0), "rgb32": natural_like(6, 3, 32, 1)}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", sorted(BATCHES))
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_contract(name, kind):
    x = BATCHES[kind]
    y1 = corrupt(x, name, 1, gen(0), quantize=True)
    y5 = corrupt(x, name, 5, gen(0), quantize=True)
    for y in (y1, y5):
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
        assert torch.allclose(y * 255, torch.round(y * 255), atol=1e-4), "quantised: on the 8-bit grid"
    assert torch.equal(y5, corrupt(x, name, 5, gen(0), quantize=True)), "same seed, same images"
    if name in RANDOM_CORRUPTIONS:
        assert not torch.equal(y5, corrupt(x, name, 5, gen(1), quantize=True)), "another seed draws other noise"
    d1, d5 = (y1 - x).abs().mean(), (y5 - x).abs().mean()
    assert d5 > 0
    if name != "elastic_transform":
        assert d5 > d1, f"{name}: severity 5 should move further from the clean image than severity 1"


def test_elastic_severity_one_is_the_largest_affine_jitter():
    """CIFAR-10-C's own constants: severity 1 is a pure 8 % affine jitter, larger moves than severity 5's
    small jitter plus a fine displacement field, so pixel distance does not grow with severity here."""
    assert PARAMS["elastic_transform"][0] == (0, 0, 0.08)
    x = BATCHES["rgb32"]
    y1 = corrupt(x, "elastic_transform", 1, gen(0))
    y5 = corrupt(x, "elastic_transform", 5, gen(0))
    assert not torch.allclose(y1, y5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_tiny_images_and_odd_shapes_do_not_crash(name):
    for shape in ((3, 1, 8, 8), (2, 2, 12, 9), (0, 3, 32, 32)):
        x = torch.rand(shape, generator=gen(2))
        for severity in (1, 5):
            y = corrupt(x, name, severity, gen(3), quantize=True)
            assert y.shape == x.shape and (y.numel() == 0 or (y.min() >= 0 and y.max() <= 1))


def test_uint8_input_and_bad_arguments():
    x = (BATCHES["grey28"] * 255).round().to(torch.uint8)
    assert torch.equal(corrupt(x, "contrast", 2), corrupt(x.float() / 255, "contrast", 2))
    with pytest.raises(DeepPatchError, match="valid choices"):
        corrupt(x, "spatter", 1)
    with pytest.raises(DeepPatchError, match="severity"):
        corrupt(x, "fog", 6)
    with pytest.raises(DeepPatchError, match=r"\(N, C, H, W\)"):
        corrupt(x[0], "fog", 1)


@pytest.mark.parametrize("kind", sorted(BATCHES))
def test_jpeg_changes_pixels_and_matches_pil(kind):
    x = BATCHES[kind]
    for severity, quality in enumerate(PARAMS["jpeg_compression"], start=1):
        y = corrupt(x, "jpeg_compression", severity, quantize=True)
        assert (y != x).any()
        u8 = (x * 255).round().to(torch.uint8)
        for i in range(2):  # libjpeg through PIL, as make_cifar_c.py did it
            arr = u8[i].permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, "JPEG", quality=quality)
            ref = torch.from_numpy(np.array(Image.open(buf))).reshape(arr.shape).permute(2, 0, 1)
            assert torch.equal((y[i] * 255).round().to(torch.uint8), ref)


def test_pixelate_is_pil_box_resize_within_one_level():
    x = BATCHES["rgb32"]
    u8 = (x * 255).round().to(torch.uint8)
    for severity, factor in enumerate(PARAMS["pixelate"], start=1):
        y = corrupt(x, "pixelate", severity, quantize=True) * 255
        small = int(32 * factor)
        for i in range(2):
            img = Image.fromarray(u8[i].permute(1, 2, 0).numpy())
            ref = np.array(img.resize((small, small), Image.BOX).resize((32, 32), Image.BOX)).astype(np.float32)
            assert np.abs(y[i].permute(1, 2, 0).numpy() - ref).max() <= 1.0 + 1e-4


def test_zoom_blur_matches_scipy_clipped_zoom():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = BATCHES["grey28"][:2]
    for severity in (1, 5):
        ref = x.numpy().astype(np.float64).copy()
        for z in zoom_factors(severity):
            for i in range(2):
                img = x[i, 0].numpy().astype(np.float64)
                crop = int(np.ceil(28 / z))
                top = (28 - crop) // 2
                big = ndimage.zoom(img[top : top + crop, top : top + crop], z, order=1)
                trim = (big.shape[0] - 28) // 2
                ref[i, 0] += big[trim : trim + 28, trim : trim + 28]
        ref /= len(zoom_factors(severity)) + 1
        assert np.abs(corrupt(x, "zoom_blur", severity).numpy() - ref).max() < 1e-5
    assert [len(zoom_factors(s)) for s in range(1, 6)] == [7, 12, 16, 21, 26]  # np.arange(1, 1.06, .01) etc.


def test_glass_blur_equals_the_sequential_original_loop():
    """make_cifar_c.py walks pixels bottom-right to top-left and "swaps" RGB pixels with a tuple
    assignment of NumPy views, which copies the neighbour in; replayed here on the same draws."""
    ndimage = pytest.importorskip("scipy.ndimage")
    x = BATCHES["rgb32"][:2]
    sigma, d, rounds = PARAMS["glass_blur"][3]
    ours = corrupt(x, "glass_blur", 4, gen(3))
    g = gen(3)
    shifts = [torch.randint(-d, d, (2, 2, 32, 32), generator=g).numpy() for _ in range(rounds)]
    for i in range(2):
        img = x[i].permute(1, 2, 0).numpy().astype(np.float64)
        img = np.floor(ndimage.gaussian_filter(img, (sigma, sigma, 0), mode="nearest") * 255 + 5e-3)
        for r in range(rounds):
            for h in range(32 - d, d, -1):
                for w in range(32 - d, d, -1):
                    dy, dx = shifts[r][0, i, h, w], shifts[r][1, i, h, w]
                    img[h, w], img[h + dy, w + dx] = img[h + dy, w + dx], img[h, w]  # view copy, as there
        ref = ndimage.gaussian_filter(img / 255, (sigma, sigma, 0), mode="nearest")
        assert np.abs(ref - ours[i].permute(1, 2, 0).numpy()).max() < 1e-5


def test_brightness_is_an_hsv_value_shift():
    import colorsys

    x = BATCHES["rgb32"][:1, :, :6, :6].clone()
    x[0, :, 0, 0] = 0
    for severity, c in enumerate(PARAMS["brightness"], start=1):
        ours = corrupt(x, "brightness", severity)
        for a in range(6):
            for b in range(6):
                h, s, v = colorsys.rgb_to_hsv(*x[0, :, a, b].tolist())
                ref = colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))
                assert torch.allclose(ours[0, :, a, b], torch.tensor(ref, dtype=torch.float32), atol=1e-5)


def test_perturbation_family_has_75_conditions_in_corruption_major_order():
    family = get_perturbation("corruptions")
    assert len(family.conditions) == 75
    assert family.conditions[:6] == ("gaussian_noise/1", "gaussian_noise/2", "gaussian_noise/3", "gaussian_noise/4",
                                     "gaussian_noise/5", "shot_noise/1")
    assert family.conditions[-1] == "jpeg_compression/5"
    x = BATCHES["grey28"]
    i = family.conditions.index("fog/4")
    assert torch.equal(family.apply(x, i, gen(5)), corrupt(x, "fog", 4, gen(5), quantize=True))
    out, cond = family.random_mix(x.repeat(4, 1, 1, 1), gen(6))
    assert out.shape == (24, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[cond == -1], x.repeat(4, 1, 1, 1)[cond == -1])
    with pytest.raises(DeepPatchError, match="valid choices"):
        get_perturbation("corruptions", corruptions=["rain"])


# ------------------------------------------------------------------------------------------
# the suite


def tiny_context(tmp_path, info=GREY, n=6, cache=True, **kw) -> SuiteContext:
    x = (BATCHES["grey28"] if info.in_channels == 1 else BATCHES["rgb32"])[:n]
    test = TensorSplit((x * 255).round().to(torch.uint8), torch.arange(n) % info.num_classes)
    return SuiteContext(info=info, test=test, device=torch.device("cpu"), seed=0, batch_size=4,
                        cache_dir=tmp_path / "cache" if cache else None, **kw)


def tiny_model(info=GREY) -> nn.Module:
    torch.manual_seed(0)
    return create_model("tinycnn", info).eval()


def test_suite_all_conditions_means_and_cache_reuse(tmp_path, monkeypatch):
    ctx = tiny_context(tmp_path)
    model = tiny_model()
    rows = get_suite("corruptions").evaluate(model, ctx)
    per = [r for r in rows if r.group != "aggregate"]
    agg = {r.condition: r for r in rows if r.group == "aggregate"}
    assert len(per) == 75 and len(rows) == 75 + 1 + 5 + 15
    assert [r.condition for r in per[:2]] == ["generated/gaussian_noise/1", "generated/gaussian_noise/2"]
    assert all(r.source == "generated" and r.settings["source"] == "generated" for r in rows)
    assert all(isinstance(r.severity, int) and r.n == 6 for r in per)
    assert agg["generated/mean"].value == pytest.approx(sum(r.value for r in per) / 75)
    assert agg["generated/mean"].n == 75 * 6
    for s in range(1, 6):
        part = [r.value for r in per if r.severity == s]
        assert agg[f"generated/severity={s}/mean"].value == pytest.approx(sum(part) / 15)
    fog = [r.value for r in per if r.group == "fog"]
    assert agg["generated/fog/mean"].value == pytest.approx(sum(fog) / 5)

    files = sorted((tmp_path / "cache").rglob("*.pt"))
    assert len(files) == 75
    stored = torch.load(files[0], weights_only=True)["images"]
    assert stored.dtype == torch.uint8 and stored.shape == (6, 1, 28, 28)

    def must_not_generate(*args, **kwargs):
        raise AssertionError("the materialised set should have been loaded")

    monkeypatch.setattr(suite_module, "generate_corrupted_set", must_not_generate)
    again = get_suite("corruptions").evaluate(model, ctx)
    assert [(r.condition, r.value) for r in again] == [(r.condition, r.value) for r in rows]


def test_in_memory_equals_cached_and_unquantised_is_not_stored(tmp_path):
    settings = {"corruptions": ["snow", "glass_blur"], "severities": [2, 5]}
    model = tiny_model()
    cached = get_suite("corruptions", **settings).evaluate(model, tiny_context(tmp_path))
    memory = get_suite("corruptions", **settings).evaluate(model, tiny_context(tmp_path, cache=False))
    assert [r.value for r in cached] == [r.value for r in memory]
    assert len(cached) == 4 + 1 + 2 + 2
    get_suite("corruptions", quantize=False, **settings).evaluate(model, tiny_context(tmp_path / "u"))
    assert not list((tmp_path / "u").rglob("*.pt"))


def test_suite_settings_are_validated():
    for bad, match in (
        ({"corruptions": ["rain"]}, "unknown corruption 'rain'; valid choices: all, gaussian_noise"),
        ({"severities": [0]}, "unknown severity 0; valid choices: 1, 2, 3, 4, 5"),
        ({"source": "zenodo"}, "unknown source 'zenodo'; valid choices: auto, canonical, generated"),
        ({"quantize": "yes"}, "quantize must be true or false"),
        ({"corruptions": []}, "non-empty list"),
        ({"colour": 1}, "unknown setting"),
    ):
        with pytest.raises(DeepPatchError, match=match):
            get_suite("corruptions", **bad)
    assert get_suite("corruptions", corruptions="all").corruptions == list(CORRUPTIONS)


# ------------------------------------------------------------------------------------------
# the canonical arrays, in robustbench's CIFAR-10-C layout

N_PER_SEVERITY = 10_000  # robustbench's load_corruptions_cifar slices severity k as [(k-1)*10000 : k*10000]


class PixelCode(nn.Module):
    """Predicts the class written into the first pixel (value 0..9 on the 8-bit scale)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(torch.round(x[:, 0, 0, 0] * 255).long() % 10, 10).float()


def write_cifar10c(root, corruptions, n, labels):
    """Full-size arrays (50,000 x 32 x 32 x 3 uint8, as released) written as sparse files.

    robustbench's loader hard-codes 10,000 images per severity in a local variable (nothing to
    monkeypatch), so the files have the real size; only the first n images of each severity block
    are written, the rest is a hole in the file and costs no disk. In block (corruption i,
    severity s) the first 2 s + i images carry their true label in pixel (0, 0), the others a wrong
    one, so each condition has its own known accuracy.
    """
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    all_labels = np.zeros(5 * N_PER_SEVERITY, dtype=np.uint8)
    for s in range(5):
        all_labels[s * N_PER_SEVERITY : s * N_PER_SEVERITY + n] = labels
    np.save(folder / "labels.npy", all_labels)
    expected = {}
    for i, name in enumerate(corruptions):
        arr = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.uint8,
                                        shape=(5 * N_PER_SEVERITY, 32, 32, 3))
        for s in range(1, 6):
            k = 2 * s + i
            block = np.full((n, 32, 32, 3), 128, dtype=np.uint8)
            block[:, 0, 0, 0] = np.where(np.arange(n) < k, labels, (labels + 1) % 10)
            arr[(s - 1) * N_PER_SEVERITY : (s - 1) * N_PER_SEVERITY + n] = block
            expected[f"cifar10-c/{name}/{s}"] = 100.0 * k / n
        arr.flush()
        del arr
    return expected


def test_canonical_cifar10c_arrays_are_used_through_robustbench(tmp_path):
    n = 20
    labels = (np.arange(n) * 3) % 10
    expected = write_cifar10c(tmp_path / "data", ["snow", "fog"], n, labels)
    info = dataset_info("cifar10")
    ctx = tiny_context(tmp_path, info=info, n=6, data_dir=tmp_path / "data")
    ctx.test = TensorSplit(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.as_tensor(labels).long())
    rows = get_suite("corruptions", corruptions=["snow", "fog"]).evaluate(PixelCode(), ctx)
    per = {r.condition: r for r in rows if r.group != "aggregate"}
    assert {c: r.value for c, r in per.items()} == pytest.approx(expected)
    # corruption-major in the suite's canonical order (snow before fog), severities 1..5
    assert list(per)[:2] == ["cifar10-c/snow/1", "cifar10-c/snow/2"]
    assert all(r.source == "cifar10-c" and r.settings == {"source": "cifar10-c"} for r in per.values())
    mean = next(r for r in rows if r.condition == "cifar10-c/mean")
    assert mean.value == pytest.approx(sum(expected.values()) / 10) and mean.source == "cifar10-c"
    assert not (tmp_path / "cache").exists(), "canonical arrays are read, nothing generated"

    # asking for a corruption whose file is absent: 'canonical' fails loudly, 'auto' generates
    with pytest.raises(DeepPatchError, match="motion_blur.npy"):
        get_suite("corruptions", corruptions=["motion_blur"], source="canonical").evaluate(PixelCode(), ctx)
    with pytest.warns(UserWarning, match="generated"):
        rows = get_suite("corruptions", corruptions=["motion_blur"], severities=[1]).evaluate(PixelCode(), ctx)
    assert rows[0].source == "generated" and rows[0].condition == "generated/motion_blur/1"
    # and 'generated' ignores the arrays
    rows = get_suite("corruptions", corruptions=["fog"], severities=[1], source="generated").evaluate(
        PixelCode(), ctx)
    assert rows[0].source == "generated"


def test_canonical_source_needs_cifar(tmp_path):
    with pytest.raises(DeepPatchError, match="needs data set cifar10 or cifar100"):
        get_suite("corruptions", source="canonical").evaluate(tiny_model(), tiny_context(tmp_path))
