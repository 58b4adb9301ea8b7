"""Common corruptions: contract of the tensor implementation, and the corruptions suite (generated and canonical).

Fidelity to the original generator is in test_corruptions_fidelity.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deeppatch.data import DatasetInfo, TensorSplit, dataset_info, stratified_subset
from deeppatch.errors import DeepPatchError
from deeppatch.models import create_model
from deeppatch.perturbations import corruption_ops, get_perturbation
from deeppatch.perturbations.corruptions import CORRUPTIONS, PARAMS, RANDOM_CORRUPTIONS, corrupt
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
    for shape in ((3, 1, 8, 8), (2, 2, 12, 9), (1, 3, 2, 2), (0, 3, 32, 32)):
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


def test_frost_uses_the_photographs_with_the_original_crop_ranges():
    """On a black image, frost severity 5 is floor(0.45 frost): every output must be 0.45 x a window of
    one of the five shipped frost images, at a top/left the original's randint range allows (the last
    position excluded)."""
    folder = Path(corruption_ops.__file__).parent / "frost_images"
    photos = [torch.from_numpy(np.array(Image.open(folder / f"frost{i}.png"))).permute(2, 0, 1).double()
              for i in range(1, 6)]
    scaled = [torch.floor(0.45 * p) for p in photos]
    y = torch.round(corrupt(torch.zeros(6, 3, 32, 32), "frost", 5, gen(4), quantize=True) * 255)
    for out in y:
        found = []
        for k, p in enumerate(scaled):
            h, w = p.shape[1:]
            rows = p[0].unfold(1, 32, 1)  # (h, w - 31, 32): every 32-px run of channel 0
            for top, left in torch.nonzero((rows[: h - 31] == out[0, 0]).all(-1)).tolist():
                if torch.equal(p[:, top : top + 32, left : left + 32], out):
                    found.append((k, top, left, h, w))
        assert found, "each frost layer is a window of a shipped frost image"
        assert any(top < h - 32 and left < w - 32 for _, top, left, h, w in found)


def test_frost_on_other_sizes_is_the_photograph_resized():
    """28 px grey and 64 px RGB: a window at the CIFAR scale resized to the image, luma for grey."""
    for shape in ((4, 1, 28, 28), (3, 3, 64, 64), (2, 3, 32, 80)):
        y = corrupt(torch.zeros(shape), "frost", 5, gen(5), quantize=True)
        assert 0.05 < y.mean() < 0.45 and y.std() > 0.01, shape


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


def test_canonical_arrays_are_read_at_the_evaluation_subsets_positions(tmp_path):
    """Every suite measures the same images: a stratified subset of the test split reads the released
    arrays at its own positions in the official order, not their first n images."""
    n = 20
    labels = (np.arange(n) * 3) % 10
    write_cifar10c(tmp_path / "data", ["fog"], n, labels)
    ctx = tiny_context(tmp_path, info=dataset_info("cifar10"), n=6, data_dir=tmp_path / "data")
    full = TensorSplit(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.as_tensor(labels).long())
    ctx.test = stratified_subset(full, 10, seed=3)
    positions = ctx.test.positions()
    assert positions.tolist() != list(range(10))  # not simply the first ten
    rows = get_suite("corruptions", corruptions=["fog"], severities=[2]).evaluate(PixelCode(), ctx)
    k = 2 * 2  # in block (fog, severity 2) the first k images carry their true label
    assert rows[0].condition == "cifar10-c/fog/2"
    assert rows[0].value == pytest.approx(100.0 * int((positions < k).sum()) / 10)
    assert torch.equal(rows[0].correct, positions < k)


def test_canonical_source_needs_cifar(tmp_path):
    with pytest.raises(DeepPatchError, match="needs data set cifar10 or cifar100"):
        get_suite("corruptions", source="canonical").evaluate(tiny_model(), tiny_context(tmp_path))
