"""Apricot (Zhang & Chan, ASE 2019) and RobOT (Wang et al., ICSE 2021) do what their papers define.

8x8 digits, a briefly trained tinycnn, two blur sigmas, budgets of 1-3 epochs on 100-300 images: CPU
seconds. Apricot: the three adjustment strategies, a failing batch's composed update, the rollback of
rejected adjustments and the retraining of kept ones, and a repair that measurably changes the model
without losing validation accuracy. RobOT: the FOL formula, fuzzing that creates new inputs (not the
seeds, not the fixed pool) and raises FOL round after round, BE-ST / KM-ST selection by FOL, retraining
on the training data plus the selected tests.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deeppatch import repair_tools
from deeppatch.corrector import get_corrector
from deeppatch.data import to_float
from deeppatch.errors import DeepPatchError
from deeppatch.repair_tools import append_validator, perturbed_pool
from deeppatch.seeding import make_generator
from tests.baseline_fixtures import plugin
from tests.models_util import run

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/conftest.py


def as_rows(x: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(tuple(r) for r in x.flatten(1).tolist())


# --------------------------------------------------------------------------------------------
# Apricot


def test_apricot_strategies_are_the_papers_three():
    ap = plugin("apricot")
    gen = torch.Generator().manual_seed(0)
    w, rdlms = torch.randn(50, generator=gen), torch.randn(4, 50, generator=gen)
    correct = torch.tensor([True, False, True, False])
    corr_w, incorr_w = rdlms[correct].mean(0), rdlms[~correct].mean(0)
    lr = 0.1
    both = ap.adjust(w, rdlms, correct, lr, "both")
    toward = ap.adjust(w, rdlms, correct, lr, "toward-correct")
    away = ap.adjust(w, rdlms, correct, lr, "away-from-incorrect")
    assert torch.allclose(both, w - lr * (w - corr_w) + lr * (w - incorr_w), atol=1e-6)
    assert torch.allclose(toward, w - lr * (w - corr_w), atol=1e-6)
    assert torch.allclose(away, w + lr * (w - incorr_w), atol=1e-6)
    assert (toward - corr_w).norm() < (w - corr_w).norm()  # toward the correct rDLMs' mean
    assert (away - incorr_w).norm() > (w - incorr_w).norm()  # away from the wrong ones'
    # a set that is empty leaves its term out (its mean is w itself)
    nobody = torch.zeros(4, dtype=torch.bool)
    assert torch.equal(ap.adjust(w, rdlms, nobody, lr, "toward-correct"), w)
    assert torch.allclose(ap.adjust(w, rdlms, nobody, lr, "both"), w + lr * (w - rdlms.mean(0)), atol=1e-6)
    assert torch.allclose(ap.adjust(w, rdlms, ~nobody, lr, "both"), w - lr * (w - rdlms.mean(0)), atol=1e-6)


@pytest.mark.parametrize("strategy", ["both", "toward-correct", "away-from-incorrect"])
def test_apricot_failing_batch_moves_toward_correct_and_away_from_wrong(strategy):
    """A batch's adjustments are applied one after another; the composed update equals that sequence."""
    ap = plugin("apricot")
    gen = torch.Generator().manual_seed(1)
    w, rdlms = torch.randn(80, generator=gen), torch.randn(3, 80, generator=gen)
    # rDLM 0 gets every failing input right, rDLM 2 none of them, rDLM 1 some
    correct = torch.tensor([[True, True, True, True], [False, True, False, True], [False, False, False, False]])
    sequential = w
    for j in range(correct.shape[1]):
        sequential = ap.adjust(sequential, rdlms, correct[:, j], 0.05, strategy)
    batch = ap.adjust_batch(w, rdlms, correct, 0.05, strategy)
    assert torch.allclose(batch, sequential, atol=1e-5)
    if strategy != "away-from-incorrect":
        assert (batch - rdlms[0]).norm() < (w - rdlms[0]).norm()
    if strategy != "toward-correct":
        assert (batch - rdlms[2]).norm() > (w - rdlms[2]).norm()


def test_apricot_rdlm_subsets_are_the_authors_slices():
    ap = plugin("apricot")
    slices = [ap.subset_index(1000, 100, k, 20, "contiguous", 0) for k in range(20)]
    assert [int(s[0]) for s in slices] == [45 * k for k in range(20)] and all(len(s) == 100 for s in slices)
    assert len(ap.subset_index(50, 100, 3, 20, "contiguous", 0)) == 50  # capped to the data


def test_apricot_undoes_rejected_adjustments_and_retrains_kept_ones(make_task, monkeypatch):
    """Scripted validation scores: an adjustment that does not beat the best is rolled back (the next
    one starts again from the kept weights); one that does is kept and retrained, and the next
    adjustment starts from the retrained weights."""
    ap = plugin("apricot")
    task = make_task(train_subset=100)
    corrector = get_corrector("apricot", fix_batch_size=20, step=0.1, strategy="both")
    model = task.copy_model()
    keys = ap.state_keys(model)
    w0 = ap.state_vector(model, keys)
    gen = torch.Generator().manual_seed(2)
    weights = w0 + 0.1 * torch.randn(2, len(w0), generator=gen)
    pool = perturbed_pool(task, task.train_data(), 0.5, "apricot")
    y = torch.ones_like(pool.y)
    monkeypatch.setattr(ap, "predict_logits", lambda m, x, bs: torch.zeros(len(x), 10))  # predicts 0: all fail
    correct = torch.zeros(2, len(y), dtype=torch.bool)
    correct[0] = True  # rDLM 0 right on every input, rDLM 1 wrong

    # the start, then one score per batch of 20: equal (undo), better (keep), worse (undo), better, worse
    scores = iter([50.0, 50.0, 60.0, 55.0, 70.0, 65.0])
    seen, retrained = [], []

    def validate(m):
        seen.append(ap.state_vector(m, keys))
        return next(scores)

    def retrain(m, score):
        retrained.append((ap.state_vector(m, keys), score))
        ap.load_state_vector(m, keys, ap.state_vector(m, keys) + 0.01)  # "training" moves every weight
        return score + 1.0, 2

    stats = corrector.fix(task, model, keys, pool.x, y, weights, correct, validate, retrain)

    step = lambda v: ap.adjust_batch(v, weights, correct[:, :20], 0.1, "both")  # noqa: E731
    w1 = step(w0) + 0.01  # kept at the second batch, then retrained
    w2 = step(w1) + 0.01  # kept at the fourth
    assert torch.equal(seen[0], w0) and len(seen) == 6
    assert torch.allclose(seen[1], step(w0)) and torch.allclose(seen[2], step(w0)), "rejected change not undone"
    assert torch.allclose(seen[3], step(w1)) and torch.allclose(seen[4], step(w1)), "retrained weights not kept"
    assert torch.allclose(seen[5], step(w2))
    assert [s for _, s in retrained] == [60.0, 70.0] and torch.allclose(retrained[0][0], step(w0))
    assert torch.allclose(ap.state_vector(model, keys), w2), "the last rejected change was not undone"
    assert (stats.kept_batches, stats.undone_batches, stats.retrain_epochs) == (2, 3, 4)
    assert stats.val_start == 50.0 and stats.val_best == 71.0 and stats.failing == 100 and stats.adjusted == 40


def test_apricot_repair_changes_the_model_without_losing_validation(make_task, pretrained):
    task = make_task(epochs=2, train_subset=300)
    params = {"n_rdlms": 3, "subset_size": 150, "lr": 0.05, "step": 0.05, "batch_size": 32}
    out = run("apricot", task, **params)
    d = out.cost.details
    assert d["kept_batches"] > 0 and d["adjusted"] > 0 and d["undone_batches"] >= 0
    assert d["retrain_epochs"] == 2 * d["kept_batches"]  # 3 retraining epochs, capped by the budget's 2
    assert out.cost.epochs == 3 * 2 + d["retrain_epochs"]
    start = dict(pretrained.state_dict())
    assert any(not torch.equal(v, start[k]) for k, v in out.model.state_dict().items()), "model unchanged"
    assert d["weight_change_norm"] > 0.1
    validate = append_validator(task)
    assert validate(out.model) == pytest.approx(d["val_best"])
    assert d["val_best"] > d["val_start"] == pytest.approx(validate(pretrained))
    assert {r.condition for r in out.diagnostics} >= {"apricot/kept_batches", "apricot/undone_batches"}


def test_apricot_param_checks():
    with pytest.raises(DeepPatchError, match="valid choices: both, toward-correct, away-from-incorrect"):
        get_corrector("apricot", strategy="sideways")
    with pytest.raises(DeepPatchError, match="'step' must be > 0"):
        get_corrector("apricot", step=0)
    p = get_corrector("apricot").params
    assert (p.n_rdlms, p.subset_size, p.epochs, p.fix_batch_size, p.step, p.strategy, p.retrain_epochs) == \
        (20, 10000, 40, 20, 0.005, "toward-correct", 3)


# --------------------------------------------------------------------------------------------
# RobOT


def naive_fol(model, x_gen, x_seed, y, eps):
    x = x_gen.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (eps * g.abs().sum() - (g * (x_gen - x_seed)).sum()).item()


def test_robot_family_fuzzing_makes_new_failing_inputs(make_task, pretrained, blur):
    rb = plugin("robot")
    task = make_task(train_subset=100)
    robot = get_corrector("robot")
    gen = robot.generate(task, task.copy_model())
    pool = gen.pool
    assert gen.seeds == 100 and len(pool) > 40 and gen.mutants >= 2 * 100
    # new inputs: never a seed itself, and deeper mutants are compounded perturbations that no
    # single condition of the family (hence no image of the fixed pool) produces
    assert all(not torch.equal(pool.x[i], pool.seeds[i]) for i in range(len(pool)))
    assert (gen.depth >= 2).sum() > 10
    fixed = perturbed_pool(task, task.train_data(), 0.5, "robot").x
    fixed_rows = set(as_rows(fixed))
    new = [i for i, r in enumerate(pool.x.flatten(1).tolist()) if tuple(r) not in fixed_rows]
    assert len(new) >= (gen.depth >= 2).sum()
    for i in (gen.depth >= 2).nonzero(as_tuple=True)[0][:10].tolist():
        singles = [blur.apply(pool.seeds[i:i + 1], c) for c in range(2)]
        assert all((pool.x[i:i + 1] - s).abs().max() > 1e-4 for s in singles)
    for i in (gen.depth == 1).nonzero(as_tuple=True)[0][:5].tolist():
        assert torch.allclose(pool.x[i:i + 1], blur.apply(pool.seeds[i:i + 1], int(pool.condition[i])), atol=1e-6)
    # the paper keeps a mutant as a test when the model changes its mind about it
    with torch.no_grad():
        assert torch.equal(pretrained(pool.x).argmax(1) != pretrained(pool.seeds).argmax(1),
                           torch.ones(len(pool), dtype=torch.bool))
    # each test's FOL is the paper's formula at the test, against its clean seed
    for i in range(0, len(pool), 9):
        expected = naive_fol(pretrained, pool.x[i:i + 1], pool.seeds[i:i + 1], pool.y[i:i + 1], 0.01)
        assert gen.fol[i].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # at the seed itself (x' = x) only eps * ||g||_1 remains
    at_seed = rb.first_order_loss(pretrained, pool.seeds[:5], pool.seeds[:5], pool.y[:5], 0.01)
    for i in range(5):
        s = pool.seeds[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(pretrained(s), pool.y[i:i + 1]), s)
        assert at_seed[i].item() == pytest.approx(0.01 * g.abs().sum().item(), rel=1e-4)


def test_robot_fol_rises_over_fuzzing_rounds(make_task, pretrained):
    rb = plugin("robot")
    task = make_task(train_subset=100)
    robot = get_corrector("robot", generation="pgd", eps=0.1, seeds=40)
    model = task.copy_model()
    seeds, y = robot.seed_set(task, model)
    y_pred = model(seeds).argmax(1)
    # one FOL-guided step raises FOL for (almost) every seed, and stays in the eps-ball
    x1, _ = robot.mutate(task, model, seeds, seeds, y, y_pred, make_generator(0, "t"))
    before, after = (rb.first_order_loss(model, x, seeds, y, 0.1) for x in (seeds, x1))
    assert (after > before).float().mean() >= 0.9
    assert (x1 - seeds).abs().max() <= 0.1 + 1e-6 and x1.min() >= 0 and x1.max() <= 1
    gen = robot.generate(task, model)
    trace = gen.fol_max  # FOLmax of every seed before round 1 and after each round
    assert (trace[1:] >= trace[:-1]).all(), "FOLmax went down"
    assert trace[-1].mean() > 1.5 * trace[1].mean() > 0
    assert (trace[-1] > trace[1]).float().mean() > 0.5
    assert gen.accepted > gen.seeds and gen.depth.max() > 3
    assert (gen.pool.x - gen.pool.seeds).abs().max() <= 0.1 + 1e-6


def test_robot_bi_end_and_k_multisection_select_by_fol(make_task):
    rb = plugin("robot")
    task = make_task(train_subset=100)
    robot = get_corrector("robot", k_low=10, k_high=15)
    selection = robot.select(task)
    order = torch.argsort(selection.scores).tolist()
    assert set(selection.index.tolist()) == set(order[:10]) | set(order[-15:]) and len(selection.index) == 25
    assert rb.bi_end(torch.arange(10.0), 8, 8).tolist() == [0, 1, 2, 3, 4, 9, 8, 7, 6, 5]
    # KM-ST: [0, max] in k equal ranges, n / k drawn from each
    scores = torch.cat([torch.linspace(0.0, 0.24, 40), torch.linspace(0.25, 0.49, 30),
                        torch.linspace(0.5, 0.74, 3), torch.linspace(0.75, 1.0, 27)])
    gen = torch.Generator().manual_seed(0)
    index = rb.k_multisection(scores, 40, 4, gen)
    assert len(index) == 40 and len(set(index.tolist())) == 40
    section = rb.section_of(scores, 4)
    counts = torch.bincount(section[index], minlength=4).tolist()
    assert counts[2] == 3  # the short range is taken whole ...
    assert counts[0] >= 10 and counts[1] >= 10 and counts[3] >= 10 and sum(counts) == 40  # ... and filled
    assert rb.section_of(torch.tensor([0.0, 0.3, 0.99, 1.0]), 4).tolist() == [0, 1, 3, 3]
    kmst = get_corrector("robot", selection="k-multisection", k_low=10, k_high=10)
    first, second = kmst.select(task), kmst.select(task)
    assert torch.equal(first.index, second.index), "KM-ST is not seeded"
    per = torch.bincount(rb.section_of(first.scores, 4)[first.index], minlength=4)
    available = torch.bincount(rb.section_of(first.scores, 4), minlength=4)
    assert (per >= torch.minimum(available, torch.full_like(available, 5))).all() and per.sum() == 20


def test_robot_retrains_on_the_training_data_plus_the_selected_tests(make_task, monkeypatch):
    task = make_task(train_subset=100)
    robot = get_corrector("robot", k_low=10, k_high=10)
    selection = robot.select(task)
    seen = []
    real = repair_tools.fine_tune_all

    def recording(task, model, **kw):
        seen.extend(x for x, _ in kw["batches"](0))
        return real(task, model, **kw)

    monkeypatch.setattr(repair_tools, "fine_tune_all", recording)
    out = run(robot, task)
    expected = torch.cat([to_float(task.train_data().x), selection.pool.x[selection.index]])
    assert as_rows(torch.cat(seen)) == as_rows(expected)
    d = out.cost.details
    assert d["selected"] == 20 and d["selected_low"] == d["selected_high"] == 10
    assert d["train_size"] == 120 and d["generated"] == len(selection.pool) and out.cost.epochs == 1


def test_robot_param_checks():
    with pytest.raises(DeepPatchError, match="valid choices: family, pgd") as info:
        get_corrector("robot", generation="fgsm")
    assert "\n" not in str(info.value)
    with pytest.raises(DeepPatchError, match="valid choices: bi-end, k-multisection"):
        get_corrector("robot", selection="top")
    with pytest.raises(DeepPatchError, match="'eps' must be > 0 for generation 'pgd'"):
        get_corrector("robot", generation="pgd", eps=0)
    with pytest.raises(DeepPatchError, match="select nothing"):
        get_corrector("robot", k_low=0, k_high=0)
    p = get_corrector("robot").params
    assert (p.seeds, p.mutations, p.xi, p.eps, p.k_low + p.k_high, p.epochs, p.batch_size, p.retrain_on) == \
        (1000, 2, 0.5, 0.01, 10000, 40, 64, "train+selected")
