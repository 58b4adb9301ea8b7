"""Baseline correctors (baselines/*.py): each must do ITS specific thing, on tiny digits data.

8x8 digits, tinycnn, two blur sigmas, budgets of 1-3 epochs on 100-400 images: CPU seconds.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from deeppatch import repair_tools
from deeppatch.attacks import pgd
from deeppatch.corrector import corrector_registry, get_corrector
from deeppatch.data import to_float
from deeppatch.errors import DeepPatchError
from deeppatch.seeding import make_generator
from tests.baseline_fixtures import plugin
from tests.models_util import run

BASELINES = ("none", "finetune", "adversarial", "augmix", "deepgini", "robot", "apricot", "sensei")


pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# the contract every baseline keeps


def test_every_baseline_is_registered_with_documented_params():
    registry = corrector_registry()
    for name in BASELINES:
        cls = registry[name]
        assert cls.description and cls.summary()
        for f in dataclasses.fields(cls.Params):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help"


@pytest.mark.parametrize("params,match", [
    ({"nonsense": 1}, "unknown parameter"),
    ({"lr": "fast"}, "must be a number"),
    ({"epochs": 2.5}, "must be an integer"),
    ({"momentum": 2.0}, "must be <="),
    ({"lr": 0}, "must be > 0"),
])
@pytest.mark.parametrize("name", ["finetune", "deepgini", "augmix", "sensei"])
def test_bad_common_params_give_one_clear_line(name, params, match):
    with pytest.raises(DeepPatchError, match=match) as info:
        get_corrector(name, **params)
    assert "\n" not in str(info.value) and f"corrector {name!r}" in str(info.value)


@pytest.mark.parametrize("name,params,match", [
    ("adversarial", {"loss": "mart"}, "valid choices: pgd, trades"),
    ("adversarial", {"eps": 0}, "'eps' must be > 0"),
    ("adversarial", {"norm": "L1"}, "valid choices"),
    ("augmix", {"depth": 0}, "'depth' must be -1"),
    ("augmix", {"severity": 11}, "must be <= 10"),
    ("deepgini", {"fraction": 1.5}, "must be <= 1"),
    ("deepgini", {"retrain_on": "everything"}, "valid choices"),
    ("robot", {"k_low": 0, "k_high": 0}, "select nothing"),
    ("apricot", {"step": 0}, "'step' must be > 0"),
    ("apricot", {"strategy": "sideways"}, "valid choices"),
    ("sensei", {"popsize": 1}, "must be >= 2"),
])
def test_bad_specific_params(name, params, match):
    with pytest.raises(DeepPatchError, match=match) as info:
        get_corrector(name, **params)
    assert "\n" not in str(info.value) and f"corrector {name!r}" in str(info.value)


def test_string_params_are_converted():
    c = get_corrector("adversarial", **{"eps": "0.2", "steps": "3", "loss": "trades"})
    assert c.params.eps == 0.2 and c.params.steps == 3


# --------------------------------------------------------------------------------------------
# none and finetune


def test_none_is_the_model_itself(make_task, pretrained, digits):
    out = run("none", make_task())
    x = to_float(digits.val.x)
    with torch.no_grad():
        assert torch.equal(out.model(x), pretrained(x))
    assert out.cost.trainable_params == 0 and out.cost.epochs == 0


def test_finetune_trains_every_layer(make_task, pretrained):
    out = run("finetune", make_task(epochs=2))
    start = dict(pretrained.named_parameters())
    for name, p in out.model.named_parameters():
        assert not torch.equal(p, start[name]), f"{name} did not change"
    assert out.cost.trainable_params == sum(p.numel() for p in pretrained.parameters())
    assert out.cost.epochs == 2 and out.cost.details["start_val"] is not None


# --------------------------------------------------------------------------------------------
# adversarial training


def pgd_accuracy(model, split, eps=0.1):
    model.eval()
    x, y = to_float(split.x), split.y
    x_adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10, generator=make_generator(0, "test-pgd"))
    with torch.no_grad():
        return 100.0 * (model(x_adv).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("loss", ["pgd", "trades"])
def test_adversarial_training_raises_pgd_accuracy(loss, make_task, pretrained, digits):
    task = make_task(epochs=3, train_subset=400, batch_size=64)
    adv = run("adversarial", task, **{"loss": loss})
    fine = run("finetune", task)
    start, fine_acc, adv_acc = (pgd_accuracy(m, digits.test) for m in (pretrained, fine.model, adv.model))
    assert adv_acc > start + 8 and adv_acc > fine_acc + 8, (start, fine_acc, adv_acc)
    assert adv.cost.details["eps"] == pytest.approx(0.1)  # the grey-image default


def test_adversarial_default_radius():
    params = plugin("adversarial").Params
    assert params().radius(1) == 0.1 and params().radius(3) == pytest.approx(8 / 255)
    assert params(norm="L2").radius(3) == 0.5 and params(eps=0.03).radius(1) == 0.03


# --------------------------------------------------------------------------------------------
# AugMix


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 12, 20)])
def test_augmix_ops_keep_shape_and_range(shape):
    am = plugin("augmix")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, *shape)
    for op in am.OPS:
        y = op(x, 3.0, gen)
        assert y.shape == x.shape and y.dtype == x.dtype and 0 <= y.min() and y.max() <= 1, op.__name__
    v = am.augment_and_mix(x, gen)
    assert v.shape == x.shape and 0 <= v.min() and v.max() <= 1 and not torch.equal(v, x)


def test_augmix_translation_scales_with_the_image(digits):
    """Bug 25: translation is a fraction of the side (up to 3 px at 32 px, up to 9 px at 96 px)."""
    am = plugin("augmix")
    gen = torch.Generator().manual_seed(1)
    for side in (32, 96):
        x = torch.rand(64, 1, side, side)
        y = am.translate_x(x, 3.0, gen)
        shifts = []
        for xi, yi in zip(x, y, strict=True):
            found = [s for s in range(-side // 3, side // 3 + 1)
                     if torch.allclose(yi[..., max(0, -s):side - max(0, s)], xi[..., max(0, s):side - max(0, -s)],
                                       atol=1e-4)]
            assert found, "translate_x is not an integer shift"
            shifts.append(abs(found[0]))
        assert max(shifts) <= math.floor(3 * side / 30)
        if side == 96:
            assert max(shifts) > 3


def test_jsd_is_zero_for_identical_views_and_positive_otherwise():
    am = plugin("augmix")
    z = torch.randn(8, 10)
    assert am.jsd(z, z, z).abs() < 1e-6
    assert am.jsd(z, z + torch.randn(8, 10), z) > 1e-3


def test_augmix_trains_on_two_views_per_batch(make_task, monkeypatch):
    am = plugin("augmix")
    calls = []
    real = am.augment_and_mix
    monkeypatch.setattr(am, "augment_and_mix", lambda x, gen, **kw: calls.append(len(x)) or real(x, gen, **kw))
    out = run("augmix", make_task(epochs=2, train_subset=100))
    assert calls == [100, 100] * 2  # one batch per epoch, two AugMix views each
    assert out.cost.epochs == 2


# --------------------------------------------------------------------------------------------
# DeepGini and RobOT: selection, then training on exactly the selected images


def trained_images(monkeypatch):
    """Record the images of the first epoch of the next fine_tune_all call."""
    seen = []
    real = repair_tools.fine_tune_all

    def recording(task, model, **kw):
        seen.extend(x for x, _ in kw["batches"](0))
        return real(task, model, **kw)

    monkeypatch.setattr(repair_tools, "fine_tune_all", recording)
    return seen


def as_rows(x: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(tuple(r) for r in x.flatten(1).tolist())


def test_deepgini_selects_the_most_impure_and_trains_on_them(make_task, pretrained, monkeypatch):
    task = make_task(train_subset=200)
    gini = get_corrector("deepgini")
    selection = gini.select(task)
    pool = selection.pool
    assert torch.equal(pool.x, gini.select(task).pool.x), "the candidate pool is not fixed"
    assert (pool.condition == -1).any() and (pool.condition >= 0).any()
    with torch.no_grad():  # plain reference: one image at a time
        impurity = [1 - (F.softmax(pretrained(pool.x[i:i + 1]), 1) ** 2).sum().item() for i in range(len(pool))]
    k = int(0.1 * len(pool))
    expected = sorted(range(len(pool)), key=lambda i: -impurity[i])[:k]
    assert sorted(selection.index.tolist()) == sorted(expected)
    seen = trained_images(monkeypatch)
    out = run(gini, task)
    assert as_rows(torch.cat(seen)) == as_rows(pool.x[selection.index])
    assert out.cost.details["selected"] == k == 20
    assert {r.condition for r in out.diagnostics} >= {"deepgini/selected"}


def test_robot_fol_matches_a_per_sample_computation(make_task, pretrained):
    rb = plugin("robot")
    task = make_task(train_subset=100)
    selection = get_corrector("robot", **{"k_low": 10, "k_high": 15}).select(task)
    pool, eps = selection.pool, 0.01
    for i in range(0, len(pool), 7):
        x = pool.x[i:i + 1].clone().requires_grad_(True)
        loss = F.cross_entropy(pretrained(x), pool.y[i:i + 1])
        (g,) = torch.autograd.grad(loss, x)
        naive = eps * g.abs().sum() - (g * (pool.x[i:i + 1] - pool.seeds[i:i + 1])).sum()
        assert selection.scores[i].item() == pytest.approx(naive.item(), rel=1e-4, abs=1e-6)
    clean = pool.condition == -1
    assert torch.equal(pool.x[clean], pool.seeds[clean]) and (selection.scores[clean] >= 0).all()
    assert not torch.equal(pool.x[~clean], pool.seeds[~clean])
    # bi-end: the 10 lowest and 15 highest FOL, no overlap
    order = torch.argsort(selection.scores).tolist()
    assert set(selection.index.tolist()) == set(order[:10]) | set(order[-15:])
    assert len(selection.index) == 25
    assert rb.bi_end(torch.arange(10.0), 8, 8).tolist() == [0, 1, 2, 3, 4, 9, 8, 7, 6, 5]


# --------------------------------------------------------------------------------------------
# Apricot


# --------------------------------------------------------------------------------------------
# SENSEI


def test_sensei_trains_clean_images_when_robust(make_task):
    ss = plugin("sensei")
    task = make_task(train_subset=60)
    data = task.train_data()
    source = ss.SenseiBatches(task, task.copy_model(), data, ss.Params(popsize=4, robust_threshold=1e9), 64)
    x = torch.cat([b for b, _ in source(0)])
    order = torch.randperm(len(data), generator=make_generator(task.seed, "sensei", "order", 0))
    assert source.robust.all() and torch.equal(x, to_float(data.x[order]))


def test_epoch_generator_reseeds_per_epoch():
    """Draws inside an epoch's steps do not depend on earlier epochs (resuming reproduces them)."""
    def draws(gen, epochs):
        out = {}
        for e in epochs:
            for _ in gen.wrap(lambda epoch: iter([(None, None)]))(e):
                out[e] = torch.rand(3, generator=gen.generator)
        return out

    straight = draws(repair_tools.EpochGenerator(7, "x", torch.device("cpu")), [0, 1, 2])
    resumed = draws(repair_tools.EpochGenerator(7, "x", torch.device("cpu")), [2])
    assert torch.equal(straight[2], resumed[2]) and not torch.equal(straight[1], straight[2])
