"""The attack suite: robust accuracy under PGD (Linf, L2) and AutoAttack, one row per attack.

Attacks are expensive, so each runs on a seeded, class-balanced subset of the test split (`n`;
AutoAttack specs default to 100 images) and the clean accuracy on every subset used is reported
beside them. Only images the model classifies correctly are attacked; the others count as
errors, so robust accuracy never exceeds clean accuracy on the same subset.

Spec keys (a list of dicts under "attacks"):

    pgd:        name, norm (Linf | L2), eps, steps (10), step_size (2.5 eps / steps),
                random_start (true), restarts (1), n (the suite's n)
    autoattack: name, version (standard | plus | rand | custom), attacks (custom only),
                norm (Linf | L2 | L1), eps, n (100)

A switched model (`deeppatch.switch_interface.is_switched`) routes each input to one of two paths
by a hard threshold that has no gradient, so the attack on the switched model alone only bounds its
robustness from above. With `adaptive` (the default) every attack on such a model runs as up to five
strategies on the same images and a sample counts as robust only if none of them fools the switched
model (every adversarial example is scored on the real switched model):

    plain          the attack on the switched model, exactly as on any model
    path-original  the attack computed on the original path alone
    path-repaired  the attack computed on the repaired path alone
    relaxed        the attack through `RelaxedSwitch` at each of `relaxed_temperatures` (multiples of
                   the median |gate logit| of the attacked clean images); robust only if no temperature fools it
    square         AutoAttack's Square (gradient-free) on the switched model, same eps and norm,
                   `square_queries` queries (Linf and L2 only; not where the attack is an AutoAttack
                   that includes Square already)

Rows: the worst case keeps the attack's usual condition and group (for headline tables);
each strategy adds "<condition>/switch:<strategy>" in group "<group>/switch:<strategy>"; every
row of a switched model names its `strategy` ("worst-case" or one of the above) in its settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deeppatch.attacks import NORMS as PGD_NORMS
from deeppatch.attacks import pgd
from deeppatch.data import TensorSplit, stratified_subset, to_float
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.results import SuiteRow
from deeppatch.seeding import derive_seed, make_generator
from deeppatch.suites.autoattack_adapter import normalise_norm, run_autoattack, validate_settings
from deeppatch.suites.base import Suite, SuiteContext
from deeppatch.switch_interface import RelaxedSwitch, is_switched

DEFAULT_ATTACKS: tuple[dict[str, Any], ...] = (
    {"name": "pgd", "norm": "Linf", "eps": 8 / 255, "steps": 10, "step_size": 2 / 255, "random_start": True,
     "restarts": 1},
    {"name": "pgd", "norm": "L2", "eps": 0.5, "steps": 10, "step_size": 0.125, "random_start": True, "restarts": 1},
)
DEFAULT_N = 1000
AUTOATTACK_DEFAULT_N = 100
_PGD_KEYS = {"name", "norm", "eps", "steps", "step_size", "random_start", "restarts", "n"}
_AA_KEYS = {"name", "version", "attacks", "norm", "eps", "n"}
ATTACK_NAMES = ("pgd", "autoattack")
# the adaptive evaluation of a switched model (module docstring)
STRATEGIES = ("plain", "path-original", "path-repaired", "relaxed", "square")
WORST_CASE = "worst-case"
SWITCH_TAG = "/switch:"  # in the condition and group of every per-strategy row
DEFAULT_SQUARE_QUERIES = 100  # AutoAttack's own is 5 000; see docs/suites-attacks-spatial.md
DEFAULT_RELAXED_TEMPERATURES = (1.0, 0.1)
SQUARE_NORMS = ("Linf", "L2")  # the norms pyautoattack's Square attacks in


def _number(spec: dict[str, Any], key: str, *, positive: bool = True, integer: bool = False) -> float | int:
    value = spec[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok or (positive and value <= 0) or (not positive and value < 0):
        kind = "integer" if integer else "number"
        raise DeepPatchError(f"attack {spec.get('name')!r}: {key} must be a {'positive' if positive else '>= 0'} "
                             f"{kind}, got {value!r}")
    return int(value) if integer else float(value)


def _subset_size(spec: dict[str, Any]) -> int | None:
    if spec.get("n") is None:
        return None
    return int(_number(spec, "n", integer=True))


def normalise_spec(spec: Any, suite_n: int | None = DEFAULT_N) -> dict[str, Any]:
    """A complete, validated attack spec (defaults filled in)."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise DeepPatchError(f"an attack spec must be a dict with a 'name' ({', '.join(ATTACK_NAMES)}), got {spec!r}")
    name = spec["name"]
    if name == "pgd":
        unknown = set(spec) - _PGD_KEYS
        if unknown:
            raise DeepPatchError(f"unknown key(s) {', '.join(sorted(unknown))} in a pgd spec; "
                                 f"valid: {', '.join(sorted(_PGD_KEYS))}")
        if "eps" not in spec:
            raise DeepPatchError("a pgd spec needs eps")
        out: dict[str, Any] = {"name": "pgd", "norm": spec.get("norm", "Linf"), "steps": spec.get("steps", 10),
                               "random_start": spec.get("random_start", True), "restarts": spec.get("restarts", 1),
                               "eps": spec["eps"], "n": spec.get("n", suite_n)}
        norm = normalise_norm(out["norm"])
        if norm not in PGD_NORMS:
            raise unknown_choice("norm for pgd", out["norm"], PGD_NORMS)
        out["norm"] = norm
        out["eps"] = _number(out, "eps")
        out["steps"] = int(_number(out, "steps", integer=True))
        out["restarts"] = int(_number(out, "restarts", integer=True))
        out["step_size"] = spec.get("step_size", 2.5 * out["eps"] / out["steps"])
        out["step_size"] = _number(out, "step_size")
        if not isinstance(out["random_start"], bool):
            raise DeepPatchError(f"pgd random_start must be true or false, got {out['random_start']!r}")
        if out["restarts"] > 1 and not out["random_start"]:
            raise DeepPatchError("pgd restarts > 1 need random_start: true (otherwise every restart is the same)")
        out["n"] = _subset_size(out)
        return out
    if name == "autoattack":
        unknown = set(spec) - _AA_KEYS
        if unknown:
            raise DeepPatchError(f"unknown key(s) {', '.join(sorted(unknown))} in an autoattack spec; "
                                 f"valid: {', '.join(sorted(_AA_KEYS))}")
        if "eps" not in spec:
            raise DeepPatchError("an autoattack spec needs eps")
        version = spec.get("version", "standard")
        attacks = spec.get("attacks")
        n = spec.get("n", AUTOATTACK_DEFAULT_N if suite_n is None else min(AUTOATTACK_DEFAULT_N, suite_n))
        norm, attack_list = validate_settings(norm=spec.get("norm", "Linf"), eps=spec["eps"], version=version,
                                              attacks=attacks, batch_size=1)
        out = {"name": "autoattack", "version": version, "attacks": attack_list, "norm": norm,
               "eps": float(spec["eps"]), "n": n}
        out["n"] = _subset_size(out)
        return out
    raise unknown_choice("attack", name, ATTACK_NAMES)


def attack_group(spec: dict[str, Any]) -> str:
    """The attack without its strength: 'pgd-linf', 'autoattack-standard-l2', ... (eps curves group by it)."""
    if spec["name"] == "pgd":
        return f"pgd-{spec['norm'].lower()}"
    version = spec["version"] if spec["version"] != "custom" else f"custom[{'+'.join(spec['attacks'])}]"
    return f"autoattack-{version}-{spec['norm'].lower()}"


def attack_condition(spec: dict[str, Any]) -> str:
    """Row label, e.g. 'pgd-linf/eps=0.0314/steps=10', 'autoattack-standard-linf/eps=0.0314'."""
    label = f"{attack_group(spec)}/eps={spec['eps']:.3g}"
    if spec["name"] == "pgd":
        label += f"/steps={spec['steps']}"
        if not math.isclose(spec["step_size"], 2.5 * spec["eps"] / spec["steps"], rel_tol=1e-6):
            label += f"/step_size={spec['step_size']:.3g}"
        if spec["restarts"] != 1:
            label += f"/restarts={spec['restarts']}"
        if not spec["random_start"]:
            label += "/no-random-start"
    return label


def pgd_correct(
    model: nn.Module, split: TensorSplit, spec: dict[str, Any], *, generator: torch.Generator,
    batch_size: int, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean correct, robust correct) per sample (bool, CPU); a sample is robust if no restart fools it."""
    clean, robust = [], []
    for x, y in split.batches(batch_size, device=device):
        with torch.no_grad():
            ok = model(x).argmax(1).eq(y)
        clean.append(ok.cpu())
        alive = ok.clone()
        for _ in range(spec["restarts"]):
            idx = alive.nonzero(as_tuple=True)[0]
            if len(idx) == 0:
                break
            x_adv = pgd(model, x[idx], y[idx], eps=spec["eps"], alpha=spec["step_size"], steps=spec["steps"],
                        norm=spec["norm"], rand_init=spec["random_start"], generator=generator)
            with torch.no_grad():
                alive[idx] = model(x_adv).argmax(1).eq(y[idx])
        robust.append(alive.cpu())
    return torch.cat(clean), torch.cat(robust)


def strategy_condition(condition: str, strategy: str) -> str:
    """The row label of one strategy against a switched model: 'pgd-linf/eps=0.0314/steps=10/switch:relaxed'."""
    return f"{condition}{SWITCH_TAG}{strategy}"


def _numbered_batches(split: TensorSplit, batch_size: int, device: torch.device):
    """(index of the first sample, (images, labels)) per batch, in order."""
    return zip(range(0, len(split), batch_size), split.batches(batch_size, device=device), strict=True)


def _still_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per sample: does `model` classify `x` correctly (bool, CPU)."""
    with torch.no_grad():
        preds = [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(preds).eq(y.to(x.device)).cpu() if preds else torch.zeros(0, dtype=torch.bool)


def pgd_transfer_correct(
    attackers: Sequence[nn.Module], scorer: nn.Module, split: TensorSplit, alive: torch.Tensor,
    spec: dict[str, Any], *, generator: torch.Generator, batch_size: int, device: torch.device,
) -> torch.Tensor:
    """Robust correct per sample (bool, CPU) of `scorer` against PGD computed on each of `attackers` in
    turn (every restart of each), attacking only the `alive` samples and the ones nothing has fooled yet."""
    robust = []
    for start, (x, y) in _numbered_batches(split, batch_size, device):
        still = alive[start : start + len(y)].to(x.device).clone()
        for attacker in attackers:
            for _ in range(spec["restarts"]):
                idx = still.nonzero(as_tuple=True)[0]
                if len(idx) == 0:
                    break
                x_adv = pgd(attacker, x[idx], y[idx], eps=spec["eps"], alpha=spec["step_size"],
                            steps=spec["steps"], norm=spec["norm"], rand_init=spec["random_start"],
                            generator=generator)
                with torch.no_grad():
                    still[idx] = scorer(x_adv).argmax(1).eq(y[idx])
        robust.append(still.cpu())
    return torch.cat(robust)


def gate_scale(model: nn.Module, split: TensorSplit, alive: torch.Tensor, *, batch_size: int,
               device: torch.device) -> float:
    """The median |gate logit| over the `alive` clean images: the unit of the relaxed temperatures
    (1.0 when there is none or it is 0)."""
    logits = []
    with torch.no_grad():
        for start, (x, _) in _numbered_batches(split, batch_size, device):
            keep = alive[start : start + len(x)].to(x.device)
            if keep.any():
                logits.append(model.gate_logit(x[keep]).float().abs().cpu())
    if not logits:
        return 1.0
    scale = torch.cat(logits).median().item()
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def _positive_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DeepPatchError(f"attack suite {what} must be a positive integer, got {value!r}")
    return value


class AttackSuite(Suite):
    """Robust accuracy (%) under each attack spec, plus clean accuracy on each subset used."""

    name = "attacks"
    defaults = {"attacks": [dict(a) for a in DEFAULT_ATTACKS], "n": DEFAULT_N, "batch_size": None,
                "adaptive": True, "square_queries": DEFAULT_SQUARE_QUERIES,
                "relaxed_temperatures": list(DEFAULT_RELAXED_TEMPERATURES)}

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        n = self.settings["n"]
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise DeepPatchError(f"attack suite n must be a positive integer or null (whole split), got {n!r}")
        bs = self.settings["batch_size"]
        if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
            raise DeepPatchError(f"attack suite batch_size must be a positive integer or null, got {bs!r}")
        attacks = self.settings["attacks"]
        if not isinstance(attacks, list | tuple) or not attacks:
            raise DeepPatchError(f"attack suite 'attacks' must be a non-empty list of attack specs, got {attacks!r}")
        if not isinstance(self.settings["adaptive"], bool):
            raise DeepPatchError(f"attack suite adaptive must be true or false, got {self.settings['adaptive']!r}")
        _positive_int(self.settings["square_queries"], "square_queries")
        temps = self.settings["relaxed_temperatures"]
        if (not isinstance(temps, list | tuple) or not temps
                or any(isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0
                       for t in temps)):
            raise DeepPatchError("attack suite relaxed_temperatures must be a non-empty list of positive numbers "
                                 f"(multiples of the gate's scale), got {temps!r}")
        self.temperatures = [float(t) for t in temps]
        self.specs = [normalise_spec(a, n) for a in attacks]
        seen: dict[str, int] = {}
        for i, spec in enumerate(self.specs):
            cond = attack_condition(spec)
            if cond in seen:
                raise DeepPatchError(f"attack specs {seen[cond]} and {i} are the same attack ({cond})")
            seen[cond] = i

    def evaluate(self, model: nn.Module, ctx: SuiteContext) -> list[SuiteRow]:
        model.eval()
        batch_size = self.settings["batch_size"] or ctx.batch_size
        adaptive = self.settings["adaptive"] and is_switched(model)
        subsets: dict[int | None, TensorSplit] = {}
        clean_rows: dict[int, SuiteRow] = {}
        rows: list[SuiteRow] = []
        for spec in self.specs:
            n = spec["n"]
            if n not in subsets:
                subsets[n] = stratified_subset(ctx.test, n, seed=ctx.seed)
            split = subsets[n]
            cond = attack_condition(spec)
            t0 = time.perf_counter()
            clean, robust, extra = self._attack(model, split, spec, ctx, batch_size)
            wall = time.perf_counter() - t0
            settings = {**spec, "n": len(split), "subset_seed": ctx.seed, "seed": ctx.seed, "batch_size": batch_size,
                        **extra}
            if adaptive:
                rows.extend(self._adaptive_rows(model, split, spec, ctx, batch_size, clean, robust, settings, extra,
                                                wall))
            else:
                rows.append(SuiteRow("attacks", cond, 100.0 * robust.float().mean().item(), len(split),
                                     group=attack_group(spec), severity=spec["eps"], settings=settings,
                                     eval_time_s=wall, correct=robust.cpu()))
            if len(split) not in clean_rows:
                label = "clean" if len(split) == len(ctx.test) else f"clean/n={len(split)}"
                clean_rows[len(split)] = SuiteRow("attacks", label, 100.0 * clean.float().mean().item(), len(split),
                                         group="clean", severity=0.0,
                                         settings={"n": len(split), "subset_seed": ctx.seed}, eval_time_s=0.0,
                                         correct=clean.cpu())
        return list(clean_rows.values()) + rows

    @staticmethod
    def _attack(model: nn.Module, split: TensorSplit, spec: dict[str, Any], ctx: SuiteContext, batch_size: int
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The attack on `model` itself: (clean correct, robust correct, extra settings)."""
        cond = attack_condition(spec)
        if spec["name"] == "pgd":
            gen = make_generator(ctx.seed, "attack", cond)
            clean, robust = pgd_correct(model, split, spec, generator=gen, batch_size=batch_size, device=ctx.device)
            return clean, robust, {}
        seed = derive_seed(ctx.seed, "attack", cond) % 2**31
        res = run_autoattack(model, to_float(split.x.to(ctx.device)), split.y, eps=spec["eps"], norm=spec["norm"],
                             version=spec["version"], attacks=spec["attacks"], seed=seed, batch_size=batch_size,
                             device=ctx.device)
        return res.clean_correct, res.correct, {"autoattack_seed": seed, "attacks_run": res.attacks}

    def _adaptive_rows(
        self, model: nn.Module, split: TensorSplit, spec: dict[str, Any], ctx: SuiteContext, batch_size: int,
        clean: torch.Tensor, plain: torch.Tensor, settings: dict[str, Any], plain_extra: dict[str, Any],
        plain_wall: float,
    ) -> list[SuiteRow]:
        """The worst case over every strategy against a switched model, then one row per strategy.

        `settings` are the plain row's (the spec's, the seeds, the batch size, and `plain_extra`)."""
        cond, group = attack_condition(spec), attack_group(spec)
        base = {k: v for k, v in settings.items() if k not in plain_extra}  # without the plain run's AutoAttack seed
        robust: dict[str, torch.Tensor] = {"plain": plain}
        walls: dict[str, float] = {"plain": plain_wall}
        extras: dict[str, dict[str, Any]] = {"plain": {}}
        alive = clean.clone()
        original, repaired = model.paths()
        original.eval()
        repaired.eval()

        t0 = time.perf_counter()
        scale = gate_scale(model, split, alive, batch_size=batch_size, device=ctx.device)
        temperatures = [t * scale for t in self.temperatures]
        walls["relaxed"] = time.perf_counter() - t0
        relaxed = [RelaxedSwitch(model, t) for t in temperatures]
        extras["relaxed"] = {"relaxed_temperatures": list(self.temperatures), "gate_scale": scale,
                             "temperatures": temperatures}

        def run(strategy: str, attackers: Sequence[nn.Module], square: bool = False) -> None:
            t = time.perf_counter()
            if spec["name"] == "pgd" and not square:
                gen = make_generator(ctx.seed, "attack", cond, "switch", strategy)
                robust[strategy] = pgd_transfer_correct(attackers, model, split, alive, spec, generator=gen,
                                                        batch_size=batch_size, device=ctx.device)
            else:
                robust[strategy], extra = self._autoattack_transfer(attackers, model, split, alive, spec, ctx,
                                                                    batch_size, strategy, square)
                extras.setdefault(strategy, {}).update(extra)
            walls[strategy] = walls.get(strategy, 0.0) + time.perf_counter() - t

        run("path-original", [original])
        run("path-repaired", [repaired])
        run("relaxed", relaxed)
        # an AutoAttack whose own list has Square already ran it on the switched model (plain, 5 000 queries)
        if spec["norm"] in SQUARE_NORMS and "square" not in plain_extra.get("attacks_run", ()):
            run("square", [model], square=True)

        strategies = [s for s in STRATEGIES if s in robust]
        worst = torch.stack([robust[s] for s in strategies]).all(0)
        broken_only_by = {}
        for s in strategies:
            others = torch.stack([robust[o] for o in strategies if o != s]).all(0)
            broken_only_by[s] = int((others & ~robust[s]).sum().item())
        n = len(split)
        rows = [SuiteRow("attacks", cond, 100.0 * worst.float().mean().item(), n, group=group, severity=spec["eps"],
                         settings={**settings, "strategy": WORST_CASE, "strategies": strategies,
                                   "broken_only_by": broken_only_by, "relaxed_temperatures": list(self.temperatures),
                                   "gate_scale": scale, "square_queries": self.settings["square_queries"]},
                         eval_time_s=sum(walls.values()), correct=worst.cpu())]
        for s in strategies:
            rows.append(SuiteRow("attacks", strategy_condition(cond, s), 100.0 * robust[s].float().mean().item(), n,
                                 group=strategy_condition(group, s), severity=spec["eps"],
                                 settings={**(settings if s == "plain" else base), **extras.get(s, {}), "strategy": s},
                                 eval_time_s=walls[s], correct=robust[s].cpu()))
        return rows

    def _autoattack_transfer(
        self, attackers: Sequence[nn.Module], scorer: nn.Module, split: TensorSplit, alive: torch.Tensor,
        spec: dict[str, Any], ctx: SuiteContext, batch_size: int, strategy: str, square: bool,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """AutoAttack (the spec's, or Square alone) computed on each attacker in turn, scored on `scorer`:
        robust correct per sample (bool, CPU) and the settings it used."""
        cond = attack_condition(spec)
        version, attacks = ("custom", ["square"]) if square else (spec["version"], spec["attacks"])
        queries = self.settings["square_queries"] if square else None
        x_all = to_float(split.x.to(ctx.device))
        still = alive.clone()
        seeds, run = [], []
        for i, attacker in enumerate(attackers):
            idx = still.nonzero(as_tuple=True)[0]
            if len(idx) == 0:
                break
            seed = derive_seed(ctx.seed, "attack", cond, "switch", strategy, i) % 2**31
            seeds.append(seed)
            x, y = x_all[idx.to(x_all.device)], split.y[idx.to(split.y.device)]
            res = run_autoattack(attacker, x, y, eps=spec["eps"], norm=spec["norm"], version=version, attacks=attacks,
                                 seed=seed, batch_size=batch_size, device=ctx.device, square_queries=queries)
            run = res.attacks
            still[idx] = _still_correct(scorer, res.x_adv.to(ctx.device), y, batch_size)
        extra: dict[str, Any] = {"autoattack_seeds": seeds, "attacks_run": run}
        if square:
            extra["square_queries"] = queries
        return still, extra
