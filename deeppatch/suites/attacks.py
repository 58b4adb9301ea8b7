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
"""

from __future__ import annotations

import math
import time
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


class AttackSuite(Suite):
    """Robust accuracy (%) under each attack spec, plus clean accuracy on each subset used."""

    name = "attacks"
    defaults = {"attacks": [dict(a) for a in DEFAULT_ATTACKS], "n": DEFAULT_N, "batch_size": None}

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
            if spec["name"] == "pgd":
                gen = make_generator(ctx.seed, "attack", cond)
                clean, robust = pgd_correct(model, split, spec, generator=gen, batch_size=batch_size,
                                            device=ctx.device)
                extra: dict[str, Any] = {}
            else:
                seed = derive_seed(ctx.seed, "attack", cond) % 2**31
                res = run_autoattack(model, to_float(split.x.to(ctx.device)), split.y, eps=spec["eps"],
                                     norm=spec["norm"], version=spec["version"], attacks=spec["attacks"], seed=seed,
                                     batch_size=batch_size, device=ctx.device)
                clean, robust = res.clean_correct, res.correct
                extra = {"autoattack_seed": seed, "attacks_run": res.attacks}
            wall = time.perf_counter() - t0
            settings = {**spec, "n": len(split), "subset_seed": ctx.seed, "seed": ctx.seed, "batch_size": batch_size,
                        **extra}
            rows.append(SuiteRow("attacks", cond, 100.0 * robust.float().mean().item(), len(split),
                                 group=attack_group(spec), severity=spec["eps"], settings=settings,
                                 eval_time_s=wall))
            if len(split) not in clean_rows:
                label = "clean" if len(split) == len(ctx.test) else f"clean/n={len(split)}"
                clean_rows[len(split)] = SuiteRow("attacks", label, 100.0 * clean.float().mean().item(), len(split),
                                         group="clean", severity=0.0,
                                         settings={"n": len(split), "subset_seed": ctx.seed}, eval_time_s=0.0)
        return list(clean_rows.values()) + rows
