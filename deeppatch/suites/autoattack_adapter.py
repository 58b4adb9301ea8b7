"""The one place that calls AutoAttack (PyPI `pyautoattack`).

pyautoattack's constructor is keyword-only, takes `attacks=` (not `attacks_to_run=`), and its
`run_standard_evaluation(x, y, batch_size=...)` returns `(x_adv, y_adv)`. Without a seed each
sub-attack reseeds torch from the clock, so we always pass one; the attacks seed torch's global
generator, so the run happens inside `torch.random.fork_rng` and leaves the caller's state alone.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from deeppatch.errors import DeepPatchError, unknown_choice

VERSIONS = ("standard", "plus", "rand", "custom")
NORMS = ("Linf", "L2", "L1")
# what pyautoattack 0.2 accepts; read from the library when it says (AttackName), else this list
_KNOWN_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
# AutoAttack's standard number of target classes for the targeted attacks
_TARGET_CLASSES = 9


def _import_autoattack():
    try:
        import pyautoattack  # lazy: AutoAttack loads only when an AutoAttack condition runs
    except ModuleNotFoundError as exc:
        raise DeepPatchError("AutoAttack needs the package 'pyautoattack'; run: pip install pyautoattack") from exc
    return pyautoattack


def attack_names() -> tuple[str, ...]:
    """The sub-attack names pyautoattack accepts in a custom list."""
    module = _import_autoattack()
    alias = getattr(getattr(module, "autoattack", None), "AttackName", None)
    names = typing.get_args(alias) if alias is not None else ()
    return tuple(names) or _KNOWN_ATTACKS


def normalise_norm(norm: str) -> str:
    """'linf' / 'Linf' / 'LINF' -> 'Linf' (AutoAttack's spelling)."""
    for valid in NORMS:
        if str(norm).lower() == valid.lower():
            return valid
    raise unknown_choice("norm", norm, NORMS)


def validate_settings(
    *, norm: str, eps: float, version: str, attacks: Sequence[str] | None, batch_size: int,
) -> tuple[str, list[str] | None]:
    """Check an AutoAttack configuration; returns (norm, attack list or None for a preset version)."""
    norm = normalise_norm(norm)
    if version not in VERSIONS:
        raise unknown_choice("AutoAttack version", version, VERSIONS)
    try:
        eps_ok = float(eps) > 0
    except (TypeError, ValueError):
        eps_ok = False
    if not eps_ok:
        raise DeepPatchError(f"AutoAttack eps must be a positive number, got {eps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DeepPatchError(f"AutoAttack batch size must be a positive integer, got {batch_size!r}")
    if version == "custom":
        if not attacks or isinstance(attacks, str):
            raise DeepPatchError(
                f"AutoAttack version 'custom' needs a non-empty list of attacks; valid: {', '.join(attack_names())}"
            )
        valid = attack_names()
        for a in attacks:
            if a not in valid:
                raise unknown_choice("AutoAttack attack", a, valid)
        if len(set(attacks)) != len(attacks):
            raise DeepPatchError(f"AutoAttack attack list repeats an attack: {list(attacks)}")
        return norm, list(attacks)
    if attacks:
        raise DeepPatchError(
            f"an attack list is only used with version 'custom' (version {version!r} fixes its own attacks)"
        )
    return norm, None


@dataclass
class AutoAttackResult:
    """Accuracy in percent and per-sample correctness (bool, on the CPU) before and after the attack."""

    robust_accuracy: float
    clean_accuracy: float
    correct: torch.Tensor
    clean_correct: torch.Tensor
    x_adv: torch.Tensor
    attacks: list[str]
    wall_time_s: float


def _check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise DeepPatchError(f"AutoAttack needs float images (N, C, H, W), got {tuple(x.shape)} {x.dtype}")
    if len(x) != len(y) or len(x) == 0:
        raise DeepPatchError(f"AutoAttack needs as many labels as images (>0), got {len(x)} and {len(y)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DeepPatchError(f"AutoAttack inputs must be pixels in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")


def _check_classes(num_classes: int, attacks: Sequence[str]) -> None:
    if "apgd-dlr" in attacks and num_classes < 3:
        raise DeepPatchError(f"the DLR loss (apgd-dlr) needs >= 3 classes, the model has {num_classes}")
    targeted = [a for a in attacks if a in ("apgd-t", "fab-t")]
    if targeted and num_classes < 4:
        raise DeepPatchError(f"targeted attacks ({', '.join(targeted)}) need >= 4 classes, the model has {num_classes}")


def run_autoattack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
    version: str = "standard", attacks: Sequence[str] | None = None, seed: int = 0, batch_size: int = 250,
    device: torch.device | str | None = None, square_queries: int | None = None,
) -> AutoAttackResult:
    """Run AutoAttack on images `x` in [0, 1] with labels `y`; the model is put in eval mode.

    With fewer than 10 classes the targeted attacks use num_classes - 1 targets instead of 9.
    `square_queries` replaces Square's query budget (AutoAttack's 5 000) when given.
    """
    norm, attack_list = validate_settings(norm=norm, eps=eps, version=version, attacks=attacks,
                                          batch_size=batch_size)
    if square_queries is not None and (not isinstance(square_queries, int) or isinstance(square_queries, bool)
                                       or square_queries < 1):
        raise DeepPatchError(f"Square's query budget must be a positive integer, got {square_queries!r}")
    _check_inputs(x, y)
    module = _import_autoattack()
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.eval()
    x = x.detach().to(device)
    y = y.detach().to(device=device, dtype=torch.long)

    t0 = time.perf_counter()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[-1])
        adversary = module.AutoAttack(model, attacks=attack_list, device=device, eps=float(eps), norm=norm,
                                      seed=int(seed), version=version)
        run = list(adversary.attacks_to_run)
        _check_classes(num_classes, run)
        targets = min(_TARGET_CLASSES, num_classes - 1)
        if hasattr(adversary, "apgd_targeted"):
            adversary.apgd_targeted.n_target_classes = min(adversary.apgd_targeted.n_target_classes, targets)
        if hasattr(adversary, "fab"):
            adversary.fab.n_target_classes = min(adversary.fab.n_target_classes, targets)
        if square_queries is not None:
            adversary.square.n_queries = square_queries
        with torch.no_grad():
            clean_pred = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    wall = time.perf_counter() - t0
    correct = y_adv.to(y.device).eq(y).cpu()
    clean_correct = clean_pred.eq(y).cpu()
    return AutoAttackResult(
        robust_accuracy=100.0 * correct.float().mean().item(),
        clean_accuracy=100.0 * clean_correct.float().mean().item(),
        correct=correct, clean_correct=clean_correct, x_adv=x_adv.detach().cpu(), attacks=run, wall_time_s=wall,
    )
