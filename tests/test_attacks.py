"""PGD and AutoAttack through the attack suite and the AutoAttack adapter, on a briefly trained tiny CNN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deeppatch.attacks import pgd
from deeppatch.data import load_splits, stratified_subset
from deeppatch.errors import DeepPatchError
from deeppatch.evaluation import accuracy
from deeppatch.models import create_model
from deeppatch.seeding import make_generator
from deeppatch.suites import SuiteContext, get_suite
from deeppatch.suites.attacks import DEFAULT_ATTACKS, attack_condition, normalise_spec
from deeppatch.suites.autoattack_adapter import attack_names, run_autoattack


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster than two fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", val_fraction=0.1)


@pytest.fixture(scope="module")
def trained(digits, one_thread):
    """tinycnn after 4 quick Adam epochs on digits (about 94 % test accuracy, a few seconds)."""
    torch.manual_seed(0)
    model = create_model("tinycnn", digits.info)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for epoch in range(4):
        for x, y in digits.train.batches(128, shuffle=True, generator=make_generator(0, "order", epoch)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    assert accuracy(model, digits.test) > 85
    return model


def _ctx(digits, seed=0):
    return SuiteContext(info=digits.info, test=digits.test, device=torch.device("cpu"), seed=seed, batch_size=128)


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.1), ("L2", 0.5)])
def test_pgd_stays_in_the_ball_and_in_pixel_range(trained, digits, norm, eps):
    x, y = digits.test.x[:64].float() / 255, digits.test.y[:64]
    adv = pgd(trained, x, y, eps=eps, alpha=2.5 * eps / 10, steps=10, norm=norm, generator=make_generator(0, "p"))
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all() and size.max() > 0.5 * eps
    assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_suite_lowers_accuracy_and_rows_carry_settings(trained, digits):
    specs = [{"name": "pgd", "norm": "Linf", "eps": 0.1}, {"name": "pgd", "norm": "L2", "eps": 0.5, "steps": 5},
             {"name": "pgd", "norm": "Linf", "eps": 0.0, "steps": 1, "random_start": False}]
    with pytest.raises(DeepPatchError, match="positive number"):
        get_suite("attacks", attacks=specs)  # eps 0 is no attack
    specs[2] = {"name": "pgd", "norm": "Linf", "eps": 0.1, "restarts": 2, "n": 100}
    suite = get_suite("attacks", attacks=specs, n=200)
    rows = suite.evaluate(trained, _ctx(digits))
    by = {r.condition: r for r in rows}
    assert set(by) == {"clean/n=200", "clean/n=100", "pgd-linf/eps=0.1/steps=10", "pgd-l2/eps=0.5/steps=5",
                       "pgd-linf/eps=0.1/steps=10/restarts=2"}
    clean = by["clean/n=200"].value
    linf = by["pgd-linf/eps=0.1/steps=10"]
    assert linf.value < clean - 30 and by["pgd-l2/eps=0.5/steps=5"].value < clean - 30
    assert linf.group == "pgd-linf" and linf.severity == 0.1 and linf.n == 200 and linf.eval_time_s > 0
    assert linf.settings["step_size"] == pytest.approx(0.025) and linf.settings["random_start"] is True
    assert linf.settings["seed"] == 0 and linf.settings["batch_size"] == 128
    assert by["pgd-linf/eps=0.1/steps=10/restarts=2"].n == 100
    again = {r.condition: r.value for r in suite.evaluate(trained, _ctx(digits))}
    assert again == {c: r.value for c, r in by.items()}  # seeded random starts


def test_default_attacks_and_conditions():
    suite = get_suite("attacks")
    assert [attack_condition(s) for s in suite.specs] == ["pgd-linf/eps=0.0314/steps=10", "pgd-l2/eps=0.5/steps=10"]
    assert [s["step_size"] for s in suite.specs] == [a["step_size"] for a in DEFAULT_ATTACKS]
    aa = normalise_spec({"name": "autoattack", "eps": 8 / 255})
    assert aa["n"] == 100 and attack_condition(aa) == "autoattack-standard-linf/eps=0.0314"
    custom = normalise_spec({"name": "autoattack", "version": "custom", "attacks": ["apgd-ce", "square"],
                             "norm": "l2", "eps": 0.5})
    assert attack_condition(custom) == "autoattack-custom[apgd-ce+square]-l2/eps=0.5"


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "fgsm", "eps": 0.1}, "unknown attack 'fgsm'"),
    ({"name": "pgd", "eps": 0.1, "norm": "L1"}, "valid choices: Linf, L2"),
    ({"name": "pgd", "eps": 0.1, "steps": 2.5}, "steps must be"),
    ({"name": "pgd", "eps": 0.1, "stepsize": 0.1}, "unknown key"),
    ({"name": "pgd"}, "needs eps"),
    ({"name": "pgd", "eps": 0.1, "restarts": 3, "random_start": False}, "random_start"),
    ({"name": "autoattack", "eps": 0.1, "version": "custom"}, "non-empty list"),
    ({"name": "autoattack", "eps": 0.1, "version": "custom", "attacks": ["apgd-ce", "pgd"]}, "unknown AutoAttack"),
    ({"name": "autoattack", "eps": 0.1, "attacks": ["apgd-ce"]}, "only used with version 'custom'"),
    ({"name": "autoattack", "eps": 0.1, "version": "fast"}, "unknown AutoAttack version"),
    ({"name": "autoattack", "eps": -1}, "eps must be"),
])
def test_bad_attack_specs(spec, message):
    with pytest.raises(DeepPatchError, match=message):
        get_suite("attacks", attacks=[spec])


def test_bad_suite_settings():
    with pytest.raises(DeepPatchError, match="same attack"):
        get_suite("attacks", attacks=[{"name": "pgd", "eps": 0.1}, {"name": "pgd", "eps": 0.1, "n": 5}])
    with pytest.raises(DeepPatchError, match="n must be"):
        get_suite("attacks", n=0)
    with pytest.raises(DeepPatchError, match="non-empty list"):
        get_suite("attacks", attacks=[])


def test_autoattack_adapter_is_seeded_and_leaves_global_rng_alone(trained, digits):
    split = stratified_subset(digits.test, 24, seed=0)
    x, y = split.x.float() / 255, split.y
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    kwargs = {"eps": 0.1, "version": "custom", "attacks": ["apgd-ce", "apgd-dlr"], "batch_size": 64}
    a = run_autoattack(trained, x, y, seed=7, **kwargs)
    assert torch.equal(torch.rand(3), expected_next)
    b = run_autoattack(trained, x, y, seed=7, **kwargs)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.correct, b.correct)
    assert a.attacks == ["apgd-ce", "apgd-dlr"]
    assert a.robust_accuracy < a.clean_accuracy - 30
    assert not (a.correct & ~a.clean_correct).any()  # robust implies clean-correct
    assert (a.x_adv - x).abs().max() <= 0.1 + 1e-6 and a.x_adv.min() >= 0 and a.x_adv.max() <= 1
    assert set(attack_names()) >= {"apgd-ce", "apgd-t", "fab-t", "square"}


def test_autoattack_adapter_rejects_bad_inputs(trained):
    with pytest.raises(DeepPatchError, match=r"\[0, 1\]"):
        run_autoattack(trained, torch.rand(4, 1, 8, 8) * 2 - 0.5, torch.zeros(4, dtype=torch.long), eps=0.1)
    with pytest.raises(DeepPatchError, match="unknown norm"):
        run_autoattack(trained, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), eps=0.1, norm="L3")


def test_autoattack_standard_through_the_suite(trained, digits):
    """A large eps breaks every image in the first sub-attack, which keeps this fast."""
    suite = get_suite("attacks", attacks=[{"name": "autoattack", "eps": 0.3, "n": 20}])
    rows = suite.evaluate(trained, _ctx(digits, seed=1))
    clean, aa = rows
    assert clean.condition == "clean/n=20" and clean.value > 80
    assert aa.condition == "autoattack-standard-linf/eps=0.3" and aa.group == "autoattack-standard-linf"
    assert aa.value <= 10 and aa.n == 20 and aa.severity == 0.3
    assert aa.settings["attacks_run"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa.settings["version"] == "standard" and "autoattack_seed" in aa.settings
