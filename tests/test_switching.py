"""A switch for any corrector (technique/gating.py) and the switch interface of DeepPatch's model."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import deeppatch as dp
from deeppatch.corrector import Budget, RepairTask, checkpoint_restorers, get_corrector, run_repair
from deeppatch.data import Splits, load_splits, to_float
from deeppatch.errors import DeepPatchError
from deeppatch.harness.spec import parse_spec
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.perturbations import get_perturbation
from deeppatch.pretrain import PretrainConfig, train_from_scratch
from deeppatch.suites import SuiteContext, get_suite
from deeppatch.switch_interface import RelaxedSwitch, is_switched
from deeppatch.technique.gating import (
    AUTO_CANDIDATES,
    AUTO_TOLERANCE,
    KIND,
    GateFeatures,
    GateFit,
    PathSwitch,
    SwitchedCorrector,
    accuracy_threshold,
    condition_gain,
    early_activations,
    fit_gate,
    gate_labels,
    gate_tap,
)
from deeppatch.technique.switch import LearnedGate
from tests.models_util import seeded_model
from tests.test_corrector_contract import Untouchable

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", val_fraction=0.1)


@pytest.fixture(scope="module")
def base(digits):
    model = seeded_model("tinycnn", digits.info, seed=0)
    train_from_scratch(model, digits, PretrainConfig(model="tinycnn", dataset="digits", train_subset=600), CPU,
                       None, 3)
    return model.eval()


def task_for(base, digits, **budget) -> RepairTask:
    splits = Splits(digits.info, digits.train, digits.val, Untouchable())  # the gate never sees test data
    return RepairTask(model=base, splits=splits, perturbation=get_perturbation("blur", sigmas=[0.5, 1.0, 2.0]),
                      seed=3, budget=Budget(epochs=2, train_subset=400, **budget))


def toy_pair(base, digits, threshold: float):
    other = seeded_model("tinycnn", digits.info, seed=7)
    tap = gate_tap(base)
    a = early_activations(base, tap, to_float(digits.val.x[:2]))
    torch.manual_seed(1)
    gate = LearnedGate(a.shape[1]).eval()
    gate.threshold.fill_(threshold)
    return PathSwitch(base, other, gate, tap).eval(), other


def test_tap_is_the_first_batchnorm_after_the_first_conv(base):
    tap = gate_tap(base)
    assert isinstance(base.get_submodule(tap), nn.BatchNorm2d)
    with pytest.raises(DeepPatchError, match="has no Conv2d"):
        gate_tap(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))


def test_each_input_takes_one_whole_path_bit_for_bit(base, digits):
    x = to_float(digits.val.x[:64])
    with torch.no_grad():
        logits = None
        pair, other = toy_pair(base, digits, 0.0)
        logits = pair.gate.logit(early_activations(base, pair.tap, x))
        pair.gate.threshold.fill_(float(logits.median()))  # about half the inputs each way
        routed = pair.route(x)
        assert 0 < int(routed.sum()) < len(x)
        out = pair(x)
        assert torch.equal(out[~routed], base(x[~routed]))  # the original path: the model under maintenance
        assert torch.equal(out[routed], other(x[routed]))
        assert is_switched(pair) and pair.paths() == (base, other)


def test_routing_is_unchanged_under_bf16_autocast(base, digits):
    """Gates decide in fp32: calibrated in fp32, they must route the same inside an autocast region."""
    x = to_float(digits.val.x[:128])
    pair, _ = toy_pair(base, digits, 0.0)
    with torch.no_grad():
        pair.gate.threshold.fill_(float(pair.gate.logit(early_activations(base, pair.tap, x)).median()))
        fp32_route, fp32_out = pair.route(x), pair(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(pair.route(x), fp32_route)
            assert torch.equal(pair.gate_logit(x) > 0, fp32_route)
            out = pair(x)
    assert torch.equal(out.float().argmax(1), fp32_out.argmax(1))


def test_deeppatch_switch_interface_and_bf16(base, digits):
    repaired, _ = run_repair(get_corrector("deeppatch", gate_epochs=3, gate_target="perturbed", ratio=0.5),
                             task_for(base, digits))
    model = repaired.model
    assert is_switched(model)
    original, patched = model.paths()
    x = to_float(digits.val.x[:96])
    with torch.no_grad():
        assert torch.equal(original(x), base(x))
        for gate in ("learned", "reference"):
            model.configure(gate=gate)
            route = model.route(x)
            assert torch.equal(model.gate_logit(x) > 0, route)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert torch.equal(model.route(x), route)
                bf = model(x)
            assert bf.dtype == torch.float32 and torch.equal(bf, model(x))
    relaxed = RelaxedSwitch(model, temperature=0.01)
    xg = x.clone().requires_grad_(True)
    relaxed(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_gate_labels_and_ties():
    val = {"perturbed": torch.tensor([False, True, True, False, True]),
           "ok_orig": torch.tensor([True, False, True, True, False]),
           "ok_rep": torch.tensor([False, True, True, True, False]),
           "loss_orig": torch.tensor([0.1, 2.0, 0.3, 0.2, 3.0]),
           "loss_rep": torch.tensor([0.5, 0.1, 0.2, 0.4, 1.0]),
           "condition": torch.tensor([0, 1, 2, 0, 2])}
    assert gate_labels(val, "perturbed").tolist() == [0, 1, 1, 0, 1]
    assert gate_labels(val, "condition").tolist() == [0, 1, 2, 0, 2]
    # only original right -> 0; only repaired right -> 1; ties -> the lower loss
    assert gate_labels(val, "correct").tolist() == [0, 1, 1, 0, 1]
    with pytest.raises(DeepPatchError, match="unknown gate target 'maybe'"):
        gate_labels(val, "maybe")


def test_accuracy_threshold_is_the_best_cut():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = 25
        logits = torch.randn(n, generator=gen)
        ok_o = torch.rand(n, generator=gen) > 0.4
        ok_r = torch.rand(n, generator=gen) > 0.4
        cut, acc = accuracy_threshold(logits, ok_o, ok_r)
        measured = torch.where(logits > cut, ok_r, ok_o).float().mean().item()
        assert measured == pytest.approx(acc)
        best = max(torch.where(logits > c, ok_r, ok_o).float().mean().item()
                   for c in itertools.chain([float(logits.min()) - 1], logits.tolist()))
        assert acc == pytest.approx(best)


def test_any_corrector_gets_a_switch_that_restores(base, digits, tmp_path):
    task = task_for(base, digits)
    switched = SwitchedCorrector(get_corrector("finetune"), target="auto")
    repaired, cost = run_repair(switched, task)
    model = repaired.model
    assert isinstance(model, PathSwitch) and repaired.kind == KIND
    info = repaired.details["gate"]
    assert set(info["candidates"]) == set(AUTO_CANDIDATES) and info["target"] in AUTO_CANDIDATES
    least = min(c["shortfall"] for c in info["candidates"].values())
    # the first candidate in the order of preference within the tolerance of the least shortfall
    assert info["target"] == next(t for t in AUTO_CANDIDATES
                                  if info["candidates"][t]["shortfall"] <= least + AUTO_TOLERANCE)
    assert info["holdout_shortfall"] == info["candidates"][info["target"]]["shortfall"]
    assert cost.added_params > sum(p.numel() for p in base.parameters())  # a second model and the gate
    assert cost.trainable_params < cost.added_params + sum(p.numel() for p in base.parameters())
    x = to_float(digits.test.x[:50])
    path = save_model(tmp_path / "sw.pt", model, arch="tinycnn", info=digits.info, kind=repaired.kind,
                      extra=repaired.extra)
    loaded = load_model(path, restorers={**checkpoint_restorers(), **SwitchedCorrector.restorers()}).model
    via_api = dp.load_model(path, digits, device="cpu")  # the Python API knows the switched kind too
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x)) and torch.equal(via_api(x), model(x))
    rows = switched.evaluation_rows(model, digits.test.head(40), task.perturbation, CPU, 64)
    conditions = {r.condition for r in rows}
    assert {"test/paths/clean/switched", "test/paths/clean/original", "test/paths/clean/repaired",
            "test/paths/sigma=2/routed to the repair", "test/paths/sigma=2/auroc"} <= conditions


def spec(corrector: str) -> dict:
    return {"name": "s", "datasets": [{"name": "digits"}], "models": [{"name": "tinycnn"}],
            "correctors": [dict(item.split("=", 1) for item in corrector.split(";"))]}


def test_spec_spelling_and_labels():
    raw = spec("name=finetune;switch=learned")
    assert parse_spec(raw).correctors[0].label == "finetune+switch[auto]"
    raw["correctors"][0]["gate_target"] = "correct"
    cell = parse_spec(raw).cells()[0]
    assert cell.corrector.label == "finetune+switch[correct]" and cell.config()["switch"]["target"] == "correct"
    raw = spec("name=deeppatch")
    raw["correctors"][0]["params"] = {"gate": "reference"}
    assert parse_spec(raw).correctors[0].label == "deeppatch+switch[paper indicator]"
    raw["correctors"][0]["params"] = {"gate_target": "correct"}
    assert parse_spec(raw).correctors[0].label == "deeppatch+switch[learned correct]"
    with pytest.raises(DeepPatchError, match="has its own switch"):
        parse_spec(spec("name=deeppatch;switch=learned"))
    with pytest.raises(DeepPatchError, match="unknown switch 'always'"):
        parse_spec(spec("name=finetune;switch=always"))
    with pytest.raises(DeepPatchError, match="gate_target without switch"):
        parse_spec(spec("name=finetune;gate_target=correct"))
    raw = spec("name=finetune;switch=learned")
    assert "epochs" not in parse_spec(raw).cells()[0].config()["switch"]
    raw["correctors"][0]["gate_epochs"] = 4
    assert parse_spec(raw).cells()[0].config()["switch"] == {"gate": "learned", "target": "auto", "epochs": 4}
    raw["correctors"][0]["gate_epochs"] = 0
    with pytest.raises(DeepPatchError, match="gate_epochs must be a positive integer, got 0"):
        parse_spec(raw)
    raw = spec("name=finetune")
    raw["correctors"][0]["gate_epochs"] = 4
    with pytest.raises(DeepPatchError, match="gate_epochs without switch"):
        parse_spec(raw)


def test_routing_suite_shows_the_switch_next_to_its_paths(base, digits):
    pair, _ = toy_pair(base, digits, 0.0)
    test = digits.test.head(60)
    ctx = SuiteContext(digits.info, test, CPU, seed=0, batch_size=32)
    suite = get_suite("routing", family="corruptions", settings={"corruptions": ["fog", "contrast"],
                                                                 "severities": [3]})
    rows = {r.condition: r for r in suite.evaluate(pair, ctx)}
    for cond in ("clean", "fog/3", "contrast/3"):
        for which in ("switched", "original", "repaired", "routed to the repair"):
            assert f"test/paths/{cond}/{which}" in rows
        lo, hi = sorted([rows[f"test/paths/{cond}/original"].value, rows[f"test/paths/{cond}/repaired"].value])
        assert rows[f"test/paths/{cond}/switched"].value <= hi + 1e-9 or rows[f"test/paths/{cond}/switched"].value >= lo
    plain = suite.evaluate(base, ctx)
    assert [r.condition for r in plain] == ["test/paths/fog/3/model", "test/paths/contrast/3/model"]
    with pytest.raises(DeepPatchError, match="rain"):
        get_suite("routing", family="rain")


def test_heldout_corruptions_are_averaged_apart(base, digits):
    ctx = SuiteContext(digits.info, digits.test.head(40), CPU, seed=0, batch_size=40)
    suite = get_suite("corruptions", corruptions=["fog", "contrast", "snow"], severities=[2], source="generated",
                      heldout=["snow"])
    rows = {r.condition: r.value for r in suite.evaluate(base, ctx)}
    assert rows["generated/held-out/mean"] == pytest.approx(rows["generated/snow/2"])
    assert rows["generated/seen/mean"] == pytest.approx((rows["generated/fog/2"] + rows["generated/contrast/2"]) / 2)
    with pytest.raises(DeepPatchError, match="unknown held-out corruption 'frost'"):
        get_suite("corruptions", corruptions=["fog"], heldout=["frost"])


def test_attacks_on_a_real_switch_report_every_strategy_and_the_worst_case(base, digits):
    pair, _ = toy_pair(base, digits, 0.0)
    ctx = SuiteContext(digits.info, digits.test.head(40), CPU, seed=0, batch_size=40)
    suite = get_suite("attacks", attacks=[{"name": "pgd", "norm": "Linf", "eps": 0.1, "steps": 3}], square_queries=10)
    rows = suite.evaluate(pair, ctx)
    worst = next(r for r in rows if r.settings.get("strategy") == "worst-case")
    strategies = {r.settings["strategy"]: r.value for r in rows if "/switch:" in r.condition}
    assert set(strategies) == {"plain", "path-original", "path-repaired", "relaxed", "square"}
    assert worst.value <= min(strategies.values()) + 1e-9
    assert worst.correct is not None and len(worst.correct) == worst.n


def synthetic_val(n: int = 120, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three conditions whose images differ in brightness (easy to tell apart); the repaired path
    is better only on condition 2, the original on 0 and 1."""
    gen = torch.Generator().manual_seed(seed)
    cond = torch.arange(3 * n) // n
    x = torch.rand(3 * n, 1, 8, 8, generator=gen) * 0.2 + cond.view(-1, 1, 1, 1) * 0.4
    u = torch.rand(3 * n, generator=gen)
    ok_orig = torch.where(cond == 2, u < 0.3, u < 0.9)
    ok_rep = torch.where(cond == 2, u < 0.8, u < 0.6)
    src = torch.zeros(n, dtype=torch.bool)
    src[: 2 * n // 5] = True
    sel = torch.zeros(n, dtype=torch.bool)
    sel[n // 5: 2 * n // 5] = True
    return {"x": x, "y": torch.zeros(3 * n, dtype=torch.long), "perturbed": cond > 0, "condition": cond,
            "holdout": src.repeat(3), "select": sel.repeat(3), "ok_orig": ok_orig, "ok_rep": ok_rep,
            "loss_orig": (~ok_orig).float(), "loss_rep": (~ok_rep).float()}


def test_condition_gain_is_the_per_condition_accuracy_difference():
    val = synthetic_val()
    where = ~val["holdout"]
    gain = condition_gain(val, where)
    for c in range(3):
        sel = where & (val["condition"] == c)
        pairs = zip(val["ok_rep"][sel], val["ok_orig"][sel], strict=True)
        naive = sum(int(r) - int(o) for r, o in pairs) / int(sel.sum())
        assert float(gain[c]) == pytest.approx(naive)


def test_condition_gate_routes_each_condition_to_its_better_path():
    val = synthetic_val()
    features = nn.Conv2d(1, 4, 3, padding=1).requires_grad_(False)
    gate, info = fit_gate(features, val, "condition", CPU, GateFit(width=8, epochs=40, lr=1e-2, batch_size=32))
    assert gate.outputs == 3 and info["threshold"] == 0.0
    assert [g > 0 for g in info["gain"]] == [False, False, True]
    with torch.no_grad():
        logit = gate.logit(features(val["x"]))
        probs = torch.softmax(gate.scores(features(val["x"])), 1)
    assert torch.allclose(logit, probs @ gate.gain, atol=1e-6)  # the expected gain of the repair
    routed = logit > 0
    for c in range(3):
        share = routed[val["condition"] == c].float().mean().item()
        assert share == (1.0 if c == 2 else 0.0)
    per = info["holdout_per_condition"]
    assert info["holdout_shortfall"] == 0.0 and all(
        r["switched"] == max(r["original"], r["repaired"]) for r in per.values())


def test_gate_features_cached_or_recomputed_train_the_same_gate():
    val = synthetic_val(60)
    features = nn.Conv2d(1, 4, 3, padding=1).requires_grad_(False)
    cfg = {"width": 4, "epochs": 3, "batch_size": 16}
    stored = GateFeatures(features, val["x"])
    recomputed = GateFeatures(features, val["x"], max_bytes=0)
    assert stored.stored is not None and recomputed.stored is None
    for target in ("perturbed", "correct", "condition"):
        g1, i1 = fit_gate(stored, val, target, CPU, GateFit(**cfg))
        g2, i2 = fit_gate(recomputed, val, target, CPU, GateFit(**cfg))
        for (k, a), (_, b) in zip(g1.state_dict().items(), g2.state_dict().items(), strict=True):
            assert torch.equal(a, b), (target, k)
        assert i1["threshold"] == i2["threshold"]
