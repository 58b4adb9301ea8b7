"""The Corrector interface, its registry, and the pieces every corrector shares.

A corrector turns a model under maintenance into a repaired model::

    corrector = get_corrector("finetune", lr=0.01)
    repaired = corrector.repair(task)          # -> Repaired(model, cost, ...)

Plug-ins: every file in ``baselines/`` (or a folder named by ``DEEPPATCH_BASELINES_PATH`` or a
benchmark spec's ``plugin_dirs``) that defines a `Corrector` subclass with a `name` adds a corrector;
installed packages add theirs through the ``deeppatch.correctors`` entry-point group. DeepPatch
itself is built in. Hyperparameters are a dataclass (`Params`) whose fields carry defaults, types
and ``metadata={"help": ..., "choices": ..., "min": ..., "max": ...}``; values from a spec or the
command line are converted and checked by `parse_params`.

Correctors never touch the test split and never modify `task.model` in place.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import os
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from deeppatch.data import Splits, TensorSplit, stratified_subset, to_float
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.evaluation import accuracy
from deeppatch.perturbations.base import Perturbation
from deeppatch.plugins import discover
from deeppatch.results import SuiteRow
from deeppatch.seeding import make_generator
from deeppatch.training import BatchSource, OptimConfig, StepFn, TrainLoop, TrainResult, cross_entropy_step

ENTRY_POINT_GROUP = "deeppatch.correctors"


# --------------------------------------------------------------------------------------------
# task and result


@dataclass
class Budget:
    """How much a repair may spend. None means the corrector's own default (its paper's)."""

    epochs: int | None = None
    train_subset: int | None = None  # a seeded, stratified subset of the train split
    batch_size: int | None = None


@dataclass
class RepairTask:
    model: nn.Module  # the model under maintenance, [0, 1] pixels in, logits out
    arch: str  # its zoo name (or "robustbench:<name>")
    splits: Splits  # clean train / val / test; correctors use train and val only
    perturbation: Perturbation  # the maintenance perturbation family
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 2021
    budget: Budget = field(default_factory=Budget)
    work_dir: Path | None = None  # training state for resume, scratch files
    resume: bool = False
    show_progress: bool | None = None
    eval_batch_size: int = 512
    cache_dir: Path | None = None  # artefacts shared between repairs (blame rankings), keyed by config
    model_key: str | None = None  # identifies the model under maintenance for those caches

    def copy_model(self) -> nn.Module:
        """A private copy of the model under maintenance, on the task's device."""
        return copy.deepcopy(self.model).to(self.device)

    def train_data(self) -> TensorSplit:
        """The training split (or the budget's seeded subset), on the device."""
        train = stratified_subset(self.splits.train, self.budget.train_subset, self.seed)
        return train.to(self.device)

    def epochs(self, default: int) -> int:
        return default if self.budget.epochs is None else int(self.budget.epochs)

    def batch_size(self, default: int) -> int:
        return default if self.budget.batch_size is None else int(self.budget.batch_size)

    def state_path(self, tag: str) -> Path | None:
        return None if self.work_dir is None else Path(self.work_dir) / f"{tag}.state.pt"

    def cached_json(self, kind: str, config: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """`compute()` once per (model under maintenance, kind, config); stored as JSON under cache_dir.

        Without a cache_dir or a model_key it simply computes.
        """
        if self.cache_dir is None or self.model_key is None:
            return compute()
        from deeppatch.harness.store import cached_json

        key = {"model": self.model_key, "kind": kind, "seed": self.seed, "perturbation": self.perturbation.name,
               "conditions": list(self.perturbation.conditions), "val": len(self.splits.val), **config}
        return cached_json(Path(self.cache_dir) / kind, key, compute)


@dataclass
class RepairCost:
    wall_time_s: float
    trainable_params: int
    added_params: int
    epochs: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Repaired:
    """A repaired model and what it cost; `kind`/`extra` say how to save and rebuild it."""

    model: nn.Module
    cost: RepairCost
    kind: str = "plain"
    extra: dict[str, Any] = field(default_factory=dict)
    diagnostics: list[SuiteRow] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# hyperparameters


@dataclass
class NoParams:
    """A corrector without hyperparameters."""


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except DeepPatchError as exc:
                errors.append(str(exc))
        raise DeepPatchError(errors[0] if errors else f"{where}: cannot take {value!r}")
    if origin in (list, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise DeepPatchError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else str
        return [_convert(v, inner, where) for v in items]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise DeepPatchError(f"{where} must be true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise DeepPatchError(f"{where} must be a number, got {value!r}")
        try:
            converted = hint(value)
        except (TypeError, ValueError):
            kind = "an integer" if hint is int else "a number"
            raise DeepPatchError(f"{where} must be {kind}, got {value!r}") from None
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise DeepPatchError(f"{where} must be an integer, got {value!r}")
        return converted
    if hint is str:
        if not isinstance(value, str | int | float):
            raise DeepPatchError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def parse_params(params_cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """Build `params_cls` from `values` (typed or strings), with one clear error per problem."""
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise DeepPatchError(
            f"unknown parameter(s) {', '.join(sorted(unknown))} for {owner}; "
            f"valid: {', '.join(fields) or '(none)'}"
        )
    hints = typing.get_type_hints(params_cls)
    converted = {}
    for name, raw in values.items():
        f = fields[name]
        where = f"{owner}: parameter {name!r}"
        value = _convert(raw, hints[name], where)
        meta = f.metadata
        check = value if isinstance(value, list) else [value]
        for v in check:
            if "choices" in meta and v not in meta["choices"]:
                raise DeepPatchError(f"{where} is {v!r}; valid choices: {', '.join(map(str, meta['choices']))}")
            if v is not None and "min" in meta and v < meta["min"]:
                raise DeepPatchError(f"{where} must be >= {meta['min']}, got {v!r}")
            if v is not None and "max" in meta and v > meta["max"]:
                raise DeepPatchError(f"{where} must be <= {meta['max']}, got {v!r}")
        converted[name] = value
    try:
        return params_cls(**converted)  # cross-field checks in __post_init__
    except DeepPatchError as exc:
        text = str(exc)
        raise DeepPatchError(text if text.startswith(owner) else f"{owner}: {text}") from None


def param_table(params_cls: type) -> list[dict[str, Any]]:
    """Name, type, default and help of every hyperparameter (for docs and --help)."""
    hints = typing.get_type_hints(params_cls)
    rows = []
    for f in dataclasses.fields(params_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append({"name": f.name, "type": getattr(hints[f.name], "__name__", str(hints[f.name])),
                     "default": default, "help": f.metadata.get("help", ""),
                     "choices": f.metadata.get("choices")})
    return rows


# --------------------------------------------------------------------------------------------
# the interface


class Corrector(ABC):
    """Subclass, set `name`, `description`, `Params`, implement `repair`. See baselines/README.md."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    def __init__(self, **params: Any) -> None:
        self.params = parse_params(self.Params, params, f"corrector {self.name!r}")

    @abstractmethod
    def repair(self, task: RepairTask) -> Repaired:
        """Return a repaired model; must not modify `task.model`."""

    def params_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    @classmethod
    def summary(cls) -> str:
        return cls.description or (cls.__doc__ or "").strip().splitlines()[0]


def _entry_point_correctors() -> dict[str, type[Corrector]]:
    found: dict[str, type[Corrector]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:
            raise DeepPatchError(f"corrector entry point {ep.name!r} ({ep.value}) failed to load: {exc!r}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Corrector)):
            raise DeepPatchError(f"entry point {ep.name!r} ({ep.value}) is not a Corrector subclass")
        found[cls.name] = cls
    return found


def corrector_registry(extra_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, type[Corrector]]:
    """Built-in DeepPatch + baselines/ plug-ins + extra folders + entry points, by name."""
    from deeppatch.technique.corrector import DeepPatchCorrector

    registry: dict[str, type[Corrector]] = {DeepPatchCorrector.name: DeepPatchCorrector}
    for source in (discover("baselines", Corrector, extra_dirs), _entry_point_correctors()):
        for name, cls in source.items():
            if name in registry and registry[name] is not cls:
                raise DeepPatchError(f"two correctors are named {name!r}: {registry[name].__module__} and "
                                     f"{cls.__module__}")
            registry[name] = cls
    return registry


def get_corrector(name: str, params: Mapping[str, Any] | None = None,
                  extra_dirs: Iterable[str | os.PathLike] = ()) -> Corrector:
    registry = corrector_registry(extra_dirs)
    if name not in registry:
        raise unknown_choice("corrector", name, registry)
    return registry[name](**dict(params or {}))


# --------------------------------------------------------------------------------------------
# shared pieces of repair


def count_params(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def maintenance_batches(task: RepairTask, data: TensorSplit, batch_size: int, *, p_clean: float = 0.5,
                        purpose: str = "maintenance") -> BatchSource:
    """Per epoch: shuffled batches, each image clean with probability `p_clean`, else perturbed at a
    uniformly drawn condition of the task's family (the reference's ``random`` mode), all seeded."""
    family = task.perturbation

    def batches(epoch: int):
        order = make_generator(task.seed, purpose, "order", epoch)
        noise = make_generator(task.seed, purpose, "noise", epoch)
        for x, y in data.batches(batch_size, device=task.device, shuffle=True, generator=order):
            if p_clean < 1.0:
                x, _ = family.random_mix(x, noise, p_clean)
            yield x, y

    return batches


@dataclass
class PerturbedVal:
    """Fixed validation sets: clean val and each condition of the family (generated once)."""

    clean: TensorSplit
    perturbed: TensorSplit  # all conditions concatenated ("expand" mode)

    @property
    def append(self) -> TensorSplit:
        """Clean followed by every condition: the reference's ``append`` selection set."""
        return TensorSplit(torch.cat([to_float(self.clean.x), self.perturbed.x]),
                           torch.cat([self.clean.y, self.perturbed.y]))


def perturbed_val(task: RepairTask) -> PerturbedVal:
    val = task.splits.val.to(task.device)
    gen = make_generator(task.seed, "perturbed-val")
    return PerturbedVal(val, task.perturbation.expand(val, device=task.device, generator=gen))


def append_validator(task: RepairTask, pv: PerturbedVal | None = None):
    """Validation accuracy on clean + all perturbed val images (the reference's selection rule)."""
    data = (pv or perturbed_val(task)).append

    def validate(model: nn.Module) -> float:
        return accuracy(model, data, batch_size=task.eval_batch_size, device=task.device)

    return validate


def train_model(
    task: RepairTask, model: nn.Module, params: list[nn.Parameter], *, tag: str, epochs: int,
    batches: BatchSource, num_batches: int, optim: OptimConfig | None = None, step: StepFn = cross_entropy_step,
    validate=None, select: str = "best", set_train_mode=None,
) -> TrainResult:
    """Run the shared training loop with the task's device, seed, checkpoints and resume."""
    loop = TrainLoop(
        model=model, params=params, batches=batches, num_batches=num_batches, epochs=epochs,
        optim=optim or OptimConfig(), device=task.device, step=step, validate=validate, select=select,
        checkpoint_path=task.state_path(tag), resume=task.resume, seed=task.seed, desc=tag,
        show_progress=task.show_progress,
        **({"set_train_mode": set_train_mode} if set_train_mode is not None else {}),
    )
    return loop.run()


class Stopwatch:
    """Wall time of a repair."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
