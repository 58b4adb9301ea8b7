"""The attack suite against switched models: every strategy, and the worst case over them.

Toy data: 4x4 grey images (background 0.5); pixel 0 carries the class (0.05 or 0.95), the other
15 pixels carry a pattern the gate may look for. `m` is the pattern's checkerboard score (mean of
+-(pixel - 0.5)), which a Linf attack of eps 0.1 can drive to +-0.1 but random starts and Square's
stripes and squares leave near 0. Every switched toy classifies every clean image correctly, and
each hides its weakness from all strategies but one:

    only path-original  the gate routes to the original path only when m > 0.06; the original path
                        fails there, the (routed) repaired path's gradient pulls m down
    only path-repaired  the mirror image
    only relaxed        the repaired path is always wrong but only routed to when m > 0.06; its own
                        gradient ignores m, the original path's pulls m down; only the gate's
                        gradient (seen through the relaxed switch) leads to it
    only square         a weakness whose gradient is cut (computed on detached inputs), so that only
                        a gradient-free search finds it

The attack on the switched model alone (strategy "plain") reports 100 % in all four; the worst case 0 %.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deeppatch.data import DatasetInfo, TensorSplit
from deeppatch.errors import DeepPatchError
from deeppatch.seeding import make_generator
from deeppatch.suites import SuiteContext, get_suite
from deeppatch.suites.attacks import (
    STRATEGIES,
    attack_condition,
    normalise_spec,
    pgd_correct,
    strategy_condition,
)
from deeppatch.switch_interface import is_switched

EPS = 0.1
THRESHOLD = 0.06
PGD = {"name": "pgd", "norm": "Linf", "eps": EPS}
COND = "pgd-linf/eps=0.1/steps=10"
CHECKER = torch.tensor([(-1.0) ** (i // 4 + i % 4) for i in range(16)])[1:]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _u(x: torch.Tensor) -> torch.Tensor:
    """The class feature: > 0 for class 1 (0.45 on clean images)."""
    return x.flatten(1)[:, 0] - 0.5


def _m(x: torch.Tensor) -> torch.Tensor:
    """The checkerboard pattern score of the 15 pattern pixels (0 on clean images)."""
    return ((x.flatten(1)[:, 1:] - 0.5) * CHECKER.to(x.device)).mean(1)


def _logits(d: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose difference (class 1 - class 0) is `d`."""
    return torch.stack([-d / 2, d / 2], 1)


class Path(nn.Module):
    """One path: `robust` (the pattern only raises its confidence: its gradient pulls m down), `weak`
    (fooled once m > about 0.09; cubic in m, so its pull on m is faint near m = 0), `wrong` (always
    wrong), `masked` (fooled when the plain mean of the pattern pixels nears +eps, which it sees only
    on detached inputs)."""

    def __init__(self, kind: str, k: float) -> None:
        super().__init__()
        self.kind, self.k = kind, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, m = _u(x), _m(x)
        side = torch.sign(u).detach()
        if self.kind == "robust":
            d = u + side * 3.0 * m
        elif self.kind == "weak":
            d = u - side * 500.0 * m**3
        elif self.kind == "wrong":
            d = -u
        else:  # masked
            mean = (x.detach().flatten(1)[:, 1:] - 0.5).mean(1)
            d = u - side * 6.0 * torch.relu(mean)
        return _logits(self.k * d)


class ToySwitch(nn.Module):
    """A switched model (the interface of deeppatch.switch_interface) built from two paths and a gate
    `sign * 10 * (m - 0.06)` (sign 0: a constant -1, always the original path)."""

    def __init__(self, original: nn.Module, repaired: nn.Module, sign: float) -> None:
        super().__init__()
        self.original, self.repaired, self.sign = original, repaired, sign

    def paths(self) -> tuple[nn.Module, nn.Module]:
        return self.original, self.repaired

    def gate_logit(self, x: torch.Tensor) -> torch.Tensor:
        if self.sign == 0:
            return torch.full((len(x),), -1.0, device=x.device)
        return (self.sign * 10.0 * (_m(x) - THRESHOLD)).float()

    def route(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_logit(x) > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.route(x).unsqueeze(1), self.repaired(x), self.original(x))


CASES = {  # the one strategy that breaks each toy
    "path-original": lambda: ToySwitch(Path("weak", 4), Path("robust", 2), sign=-1),
    "path-repaired": lambda: ToySwitch(Path("robust", 2), Path("weak", 4), sign=1),
    "relaxed": lambda: ToySwitch(Path("robust", 2), Path("wrong", 4), sign=1),
    "square": lambda: ToySwitch(Path("masked", 2), Path("masked", 2), sign=0),
}


def _ctx(n: int = 40, seed: int = 0) -> SuiteContext:
    y = torch.arange(n) % 2
    x = torch.full((n, 1, 4, 4), 0.5)
    x[:, 0, 0, 0] = 0.05 + 0.9 * y
    info = DatasetInfo("toy", 2, (1, 4, 4), (0.5,), (0.5,))
    return SuiteContext(info=info, test=TensorSplit(x, y), device=torch.device("cpu"), seed=seed, batch_size=16)


def _rows(model: nn.Module, ctx: SuiteContext | None = None, **settings) -> dict[str, object]:
    suite = get_suite("attacks", attacks=[PGD], n=None, **settings)
    return {r.condition: r for r in suite.evaluate(model, ctx or _ctx())}


def test_the_toys_are_switched_and_correct_on_clean_images():
    ctx = _ctx()
    for make in CASES.values():
        model = make()
        assert is_switched(model)
        assert model(ctx.test.x).argmax(1).eq(ctx.test.y).all()
        for path in model.paths():
            right = path(ctx.test.x).argmax(1).eq(ctx.test.y)
            assert right.all() if path.kind != "wrong" else not right.any()
    assert not is_switched(Path("robust", 2))


@pytest.mark.parametrize("winner", list(CASES))
def test_only_one_strategy_breaks_each_toy_and_the_worst_case_takes_it(winner):
    rows = _rows(CASES[winner]())
    assert set(rows) == {"clean", COND, *(strategy_condition(COND, s) for s in STRATEGIES)}
    values = {s: rows[strategy_condition(COND, s)].value for s in STRATEGIES}
    print(winner, values, {c: round(r.eval_time_s, 2) for c, r in rows.items()})
    assert rows["clean"].value == 100.0
    assert values["plain"] == 100.0  # the attack on the switched model alone: an upper bound
    assert values[winner] <= 5.0
    assert all(v == 100.0 for s, v in values.items() if s != winner)
    worst = rows[COND]
    assert worst.value <= 5.0  # so dropping `winner` from the worst case changes the result here
    assert worst.group == "pgd-linf" and worst.settings["strategy"] == "worst-case"
    assert worst.settings["strategies"] == list(STRATEGIES)
    assert worst.settings["broken_only_by"][winner] >= 38
    for s in STRATEGIES:
        row = rows[strategy_condition(COND, s)]
        assert row.settings["strategy"] == s and row.group == f"pgd-linf/switch:{s}" and row.severity == EPS
        assert row.n == 40


def test_plain_strategy_is_todays_attack_and_runs_are_reproducible():
    model, ctx = CASES["path-repaired"](), _ctx(seed=3)
    spec = normalise_spec(PGD, None)
    gen = make_generator(ctx.seed, "attack", attack_condition(spec))
    _, robust = pgd_correct(model, ctx.test, spec, generator=gen, batch_size=ctx.batch_size, device=ctx.device)
    first = _rows(model, ctx, square_queries=50)
    assert first[strategy_condition(COND, "plain")].value == 100.0 * robust.float().mean().item()
    again = _rows(model, ctx, square_queries=50)
    assert {c: r.value for c, r in first.items()} == {c: r.value for c, r in again.items()}
    assert {c: r.settings for c, r in first.items()} == {c: r.settings for c, r in again.items()}


def test_models_without_a_switch_and_adaptive_off_keep_todays_rows():
    ctx = _ctx()
    plain_model = Path("weak", 4)
    rows = get_suite("attacks", attacks=[PGD], n=None).evaluate(plain_model, ctx)
    spec = normalise_spec(PGD, None)
    gen = make_generator(ctx.seed, "attack", COND)
    clean, robust = pgd_correct(plain_model, ctx.test, spec, generator=gen, batch_size=16, device=ctx.device)
    assert [r.condition for r in rows] == ["clean", COND]
    assert rows[1].value == 100.0 * robust.float().mean().item() and rows[0].value == 100.0
    assert rows[1].settings == {**spec, "n": 40, "subset_seed": 0, "seed": 0, "batch_size": 16}
    assert rows[1].group == "pgd-linf"
    off = get_suite("attacks", attacks=[PGD], n=None, adaptive=False).evaluate(CASES["relaxed"](), ctx)
    assert [r.condition for r in off] == ["clean", COND] and off[1].value == 100.0
    assert "strategy" not in off[1].settings


def test_autoattack_specs_get_every_strategy_too():
    spec = {"name": "autoattack", "version": "custom", "attacks": ["apgd-ce"], "eps": EPS}
    rows = {r.condition: r for r in get_suite("attacks", attacks=[spec], n=None, square_queries=100)
            .evaluate(CASES["path-repaired"](), _ctx(n=20))}
    cond = "autoattack-custom[apgd-ce]-linf/eps=0.1"
    values = {s: rows[strategy_condition(cond, s)].value for s in STRATEGIES}
    assert values["plain"] == 100.0 and values["path-repaired"] <= 10.0 and rows[cond].value <= 10.0
    assert rows[strategy_condition(cond, "square")].settings["attacks_run"] == ["square"]
    assert rows[strategy_condition(cond, "plain")].settings["attacks_run"] == ["apgd-ce"]


def test_no_extra_square_where_the_attack_has_square_already():
    spec = {"name": "autoattack", "version": "custom", "attacks": ["square"], "eps": EPS}
    rows = {r.condition: r for r in get_suite("attacks", attacks=[spec], n=None)
            .evaluate(CASES["square"](), _ctx(n=10))}
    cond = "autoattack-custom[square]-linf/eps=0.1"
    assert set(rows) == {"clean", cond, *(strategy_condition(cond, s) for s in STRATEGIES if s != "square")}
    assert rows[cond].settings["strategies"] == [s for s in STRATEGIES if s != "square"]
    assert rows[strategy_condition(cond, "plain")].value == 0.0 and rows[cond].value == 0.0


@pytest.mark.parametrize(("settings", "message"), [
    ({"adaptive": "yes"}, "adaptive must be true or false"),
    ({"square_queries": 0}, "square_queries must be a positive integer"),
    ({"relaxed_temperatures": []}, "relaxed_temperatures"),
    ({"relaxed_temperatures": [1.0, -0.5]}, "relaxed_temperatures"),
])
def test_bad_adaptive_settings(settings, message):
    with pytest.raises(DeepPatchError, match=message):
        get_suite("attacks", **settings)
