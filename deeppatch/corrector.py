"""The Corrector interface and its registry: what every repair method implements.

A corrector turns a model under maintenance into a repaired model. Its contract is one method::

    class MyCorrector(Corrector):
        name = "mine"
        description = "one line that `deeppatch list correctors` shows"
        def repair(self, task: RepairTask) -> Repaired:
            model = task.copy_model()
            ...                                  # train on task.train_data(), select on task.splits.val
            return Repaired(model)

    get_corrector("finetune", lr=0.01)           # an instance, its parameters checked

`run_repair` calls `repair`, times it and counts the trainable and added parameters, so no corrector
does its own book-keeping. Correctors never read the test split and never modify `task.model`; the
contract test (tests/test_corrector_contract.py) checks every registered corrector with the tiny
parameters it carries in `test_params`.

Plug-ins: every file in ``baselines/`` (or a folder named by ``DEEPPATCH_BASELINES_PATH`` or a
benchmark spec's ``plugin_dirs``) that defines a `Corrector` subclass with a `name` adds a corrector;
installed packages add theirs through the ``deeppatch.correctors`` entry-point group, which is also
how DeepPatch itself registers (see pyproject.toml). Hyperparameters are a dataclass (`Params`)
whose fields carry defaults, types and ``metadata={"help": ..., "choices": ..., "min": ..., "max": ...}``;
values from a spec, the command line or Python are converted and checked by `parse_params`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import inspect
import os
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from deeppatch.code_identity import code_hash
from deeppatch.data import Splits, TensorSplit, stratified_subset
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.perturbations.base import Perturbation
from deeppatch.plugins import discover
from deeppatch.results import SuiteRow
from deeppatch.storage import RepairClock, Workspace

ENTRY_POINT_GROUP = "deeppatch.correctors"
Restorer = Callable[[Mapping[str, Any]], nn.Module]


# --------------------------------------------------------------------------------------------
# task and result


@dataclass
class Budget:
    """How much a repair may spend. None means the corrector's own default (its paper's)."""

    epochs: int | None = None
    train_subset: int | None = None  # a seeded, stratified subset of the train split
    batch_size: int | None = None
    eval_batch_size: int = 512  # inference batches (validation, scoring); memory, not results


@dataclass
class RepairTask:
    """Everything a repair may use: the model, the clean train/val splits, the maintenance family."""

    model: nn.Module  # the model under maintenance, [0, 1] pixels in, logits out
    splits: Splits  # clean train / val / test; correctors use train and val only
    perturbation: Perturbation  # the maintenance perturbation family
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 2021
    budget: Budget = field(default_factory=Budget)
    workspace: Workspace = field(default_factory=Workspace)  # resume state and shared caches
    show_progress: bool | None = None
    clock: RepairClock = field(default_factory=RepairClock)  # set by run_repair

    @property
    def eval_batch_size(self) -> int:
        return self.budget.eval_batch_size

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

    def cached_json(self, kind: str, config: dict[str, Any], compute: Callable[[], Any], *,
                    per_seed: bool = True) -> Any:
        """`compute()` once per (model under maintenance, kind, config, data, and the repair seed unless
        `per_seed` is False: work that does not depend on it is shared by every seed); see `Workspace`.

        Work shared between repairs this way is not counted in this repair's time: its one-off cost
        is reported apart (RepairCost.details["shared_work"]).
        """
        key = {"seed": self.seed if per_seed else None, "perturbation": self.perturbation.name,
               "conditions": list(self.perturbation.conditions), "val": len(self.splits.val), **config}
        item = self.workspace.cached(kind, key, compute)
        self.clock.exclude(kind, item)
        return item.value


@dataclass
class Repaired:
    """What `Corrector.repair` returns. `Repaired(model)` alone is enough.

    epochs: training epochs run (for the rows); details: free-form facts for the cost record
    (selection outcome, pool sizes); kind/extra: how to save and rebuild a model that is not a
    plain zoo architecture (see `Corrector.restorers`); diagnostics: rows measured during the repair
    (validation only).
    """

    model: nn.Module
    epochs: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    kind: str = "plain"
    extra: dict[str, Any] = field(default_factory=dict)
    diagnostics: list[SuiteRow] = field(default_factory=list)


@dataclass
class RepairCost:
    """What a repair cost, measured by `run_repair` (not by the corrector)."""

    wall_time_s: float
    trainable_params: int
    added_params: int
    epochs: int
    details: dict[str, Any] = field(default_factory=dict)


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


# --------------------------------------------------------------------------------------------
# the interface


class Corrector(ABC):
    """Subclass, set `name`, `Params`, implement `repair`. See baselines/README.md."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    test_params: ClassVar[Mapping[str, Any]] = {}  # tiny settings for the contract test (CPU, seconds)
    # Not its paper's method (or not at the paper's parameters beyond our budget)? Say what differs:
    # the name is then shown as "<name> (stand-in)" in listings and report labels.
    stand_in: ClassVar[str] = ""
    # True for a corrector whose repaired model already routes between the original and a repair
    # (DeepPatch): it takes no extra switch, and `label_suffix` says which gate it uses.
    has_switch: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = parse_params(self.Params, params, f"corrector {self.name!r}")

    @abstractmethod
    def repair(self, task: RepairTask) -> Repaired:
        """Return a repaired model; must not modify `task.model` nor read `task.splits.test`."""

    def evaluation_rows(self, model: nn.Module, test: TensorSplit, family: Perturbation, device: torch.device,
                        batch_size: int) -> list[SuiteRow]:
        """Extra rows this corrector measures on a repaired model (e.g. DeepPatch's routing); none by default."""
        return []

    @classmethod
    def restorers(cls) -> Mapping[str, Restorer]:
        """Checkpoint kinds (`Repaired.kind`) this corrector saves, with how to rebuild each from its record."""
        return {}

    def params_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    @classmethod
    def code_hash(cls) -> str:
        """Hash of this corrector's source file and the package modules it imports (cache keys)."""
        return code_hash([inspect.getsourcefile(cls) or ""])

    @classmethod
    def label_suffix(cls, params: Mapping[str, Any]) -> str:
        """What a report label adds to the name for these parameters (e.g. the gate of a built-in switch)."""
        return ""

    @classmethod
    def display_name(cls) -> str:
        """The name as users see it: stand-ins are marked as such."""
        return f"{cls.name} (stand-in)" if cls.stand_in else cls.name

    @classmethod
    def summary(cls) -> str:
        """One line for listings: the description, else the class docstring's first line."""
        if cls.description:
            return cls.description
        lines = (cls.__doc__ or "").strip().splitlines()
        return lines[0] if lines else "(no description)"


def count_params(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def stored_numbers(model: nn.Module) -> int:
    """Parameters plus floating-point buffers (BatchNorm statistics): what a checkpoint must store."""
    return count_params(model.parameters()) + sum(b.numel() for b in model.buffers() if b.is_floating_point())


def run_repair(corrector: Corrector, task: RepairTask) -> tuple[Repaired, RepairCost]:
    """Run `corrector.repair(task)`, timed; count trainable (requires_grad) and added parameters.

    Correctors freeze (requires_grad=False) what they did not train. Added parameters are the numbers
    the repaired model stores beyond the model under maintenance (parameters and BN statistics of a
    patch, a gate, a second model), so a second set of BN statistics counts as added.
    """
    task = dataclasses.replace(task, clock=task.workspace.clock())
    out = corrector.repair(task)
    wall = task.clock.elapsed()
    if isinstance(out, nn.Module):
        out = Repaired(out)
    if not isinstance(out, Repaired) or not isinstance(out.model, nn.Module):
        raise DeepPatchError(f"corrector {corrector.name!r} returned {type(out).__name__}, not Repaired(model)")
    model = out.model
    cost = RepairCost(
        wall_time_s=wall,
        trainable_params=count_params(p for p in model.parameters() if p.requires_grad),
        added_params=max(0, stored_numbers(model) - stored_numbers(task.model)),
        epochs=int(out.epochs), details={**out.details, **({"shared_work": task.clock.shared} if task.clock.shared
                                                           else {})},
    )
    return out, cost


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
    """Installed correctors (entry points, DeepPatch among them) + baselines/ + extra folders, by name."""
    registry: dict[str, type[Corrector]] = {}
    for source in (_entry_point_correctors(), discover("baselines", Corrector, extra_dirs)):
        for name, cls in source.items():
            if name in registry and registry[name] is not cls:
                raise DeepPatchError(f"two correctors are named {name!r}: {registry[name].__module__} and "
                                     f"{cls.__module__}")
            registry[name] = cls
    return registry


def get_corrector(name: str, /, *, plugin_dirs: Iterable[str | os.PathLike] = (), **params: Any) -> Corrector:
    """An instance of corrector `name` with `params` checked, e.g. ``get_corrector("finetune", lr=0.01)``."""
    registry = corrector_registry(plugin_dirs)
    if name not in registry:
        raise unknown_choice("corrector", name, registry)
    return registry[name](**params)


def checkpoint_restorers(extra_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, Restorer]:
    """Every checkpoint kind the registered correctors save, with its restorer."""
    out: dict[str, Restorer] = {}
    for cls in corrector_registry(extra_dirs).values():
        out.update(cls.restorers())
    return out
