"""Benchmark specs: TOML files naming data sets, models, correctors, suites, seeds and budgets.

Every table has a fixed set of keys; anything else is rejected with the file, the key and the valid
keys. Names (data sets, models, correctors, suites, perturbations) and corrector parameters are
checked against their registries when the spec is loaded, so a typo fails before any work starts.

Grid: data sets x models x correctors x seeds, where each corrector entry expands its ``grid``
table (every list value is an axis) into one corrector configuration per combination. ``params``
are fixed values (lists there stay lists, e.g. ``layers``).
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeppatch.code_identity import module_code_hash
from deeppatch.corrector import get_corrector
from deeppatch.data import get_dataset_source
from deeppatch.device import DEVICE_CHOICES
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.models import get_entry
from deeppatch.perturbations import get_perturbation
from deeppatch.storage import stable_hash
from deeppatch.suites import get_suite
from deeppatch.technique.gating import GATE_TARGETS, SWITCHES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = {"name", "description", "seeds", "device", "plugin_dirs", "maintenance", "datasets", "models",
            "correctors", "suites", "budget", "evaluation", "launcher", "pretrain_seed", "results_dir",
            "report_dir", "leaderboard"}
LEADERBOARD_KEYS = {"metric", "clean_drop_tolerance"}
MAINTENANCE_KEYS = {"perturbation", "settings"}
DATASET_KEYS = {"name", "data_dir", "val_fraction", "split_seed", "download"}
MODEL_KEYS = {"name", "weights", "epochs", "lr", "batch_size", "train_if_missing", "train_subset", "checkpoint"}
CORRECTOR_KEYS = {"name", "params", "grid", "label", "budget", "switch", "gate_target", "gate_epochs"}
BUDGET_KEYS = {"epochs", "train_subset", "batch_size"}
EVALUATION_KEYS = {"n_eval", "batch_size", "seed"}
LAUNCHER_KEYS = {"name", "cluster", "partition", "gpus_per_task", "cpus_per_task", "time_limit_min",
                 "array_parallelism", "mem_gb", "folder"}
WEIGHTS = ("auto", "pretrained", "scratch")
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # a folder name that stays inside its root


def _check_keys(table: Any, allowed: set[str], where: str, file: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise DeepPatchError(f"{file}: {where} must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise DeepPatchError(f"{file}: unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(sorted(allowed))}")
    return table


def _positive_int(value: Any, key: str, where: str, file: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DeepPatchError(f"{file}: {where}.{key} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    data_dir: str | None = None
    val_fraction: float = 0.02
    split_seed: int = 2021
    download: bool = False

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "val_fraction": self.val_fraction, "split_seed": self.split_seed}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    weights: str = "auto"
    epochs: int | None = None
    lr: float = 0.05
    batch_size: int = 128
    train_if_missing: bool = False
    train_subset: int | None = None
    checkpoint: str | None = None

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "epochs": self.epochs, "lr": self.lr,
                "batch_size": self.batch_size, "train_subset": self.train_subset, "checkpoint": self.checkpoint}


@dataclass(frozen=True)
class CorrectorConfig:
    """One corrector configuration of the grid (a `grid` combination already applied)."""

    name: str
    params: dict[str, Any]
    label: str
    budget: dict[str, Any]
    code: str = ""  # hash of the corrector's source and the package modules it imports
    switch: str = "none"  # "learned": a learned gate routes each input to the original or the repaired model
    gate_target: str = "auto"
    gate_epochs: int | None = None  # the learned switch's gate training epochs (None: GateFit's default)

    def params_hash(self) -> str:
        return stable_hash({"name": self.name, "params": self.params, "budget": self.budget})


@dataclass
class Spec:
    name: str
    path: str
    description: str
    seeds: list[int]
    device: str
    plugin_dirs: list[str]
    perturbation: str
    perturbation_settings: dict[str, Any]
    datasets: list[DatasetEntry]
    models: list[ModelEntry]
    correctors: list[CorrectorConfig]
    suites: dict[str, dict[str, Any]]  # suite -> settings
    suite_n_eval: dict[str, int | None]
    budget: dict[str, Any]
    n_eval: int | None
    eval_batch_size: int
    launcher: dict[str, Any]
    pretrain_seed: int
    results_dir: str
    report_dir: str
    raw: dict[str, Any] = field(default_factory=dict)
    harness_code: str = ""  # hash of the runner's source and what it imports (suites, models, data, ...)
    eval_seed: int = 0  # which test images and perturbation draws: the same for every corrector and seed

    def cells(self) -> list[Cell]:
        return [Cell(self, d, m, c, s) for d, m, c, s in
                itertools.product(self.datasets, self.models, self.correctors, self.seeds)]


@dataclass(frozen=True)
class Cell:
    """One grid cell: (data set, model, corrector configuration, seed)."""

    spec: Spec
    dataset: DatasetEntry
    model: ModelEntry
    corrector: CorrectorConfig
    seed: int

    def config(self) -> dict[str, Any]:
        """Everything that determines this cell's rows: its key is a hash of this."""
        s = self.spec
        return {"dataset": self.dataset.config(), "model": self.model.config(), "pretrain_seed": s.pretrain_seed,
                "corrector": {"name": self.corrector.name, "params": self.corrector.params,
                              "budget": self.effective_budget()},
                "maintenance": {"perturbation": s.perturbation, "settings": s.perturbation_settings},
                "suites": s.suites, "suite_n_eval": s.suite_n_eval, "n_eval": s.n_eval, "seed": self.seed,
                "eval_seed": s.eval_seed,
                "code": {"corrector": self.corrector.code, "harness": s.harness_code},
                **({"switch": {"gate": self.corrector.switch, "target": self.corrector.gate_target,
                               **({"epochs": self.corrector.gate_epochs}
                                  if self.corrector.gate_epochs is not None else {})}}
                   if self.corrector.switch != "none" else {})}

    def effective_budget(self) -> dict[str, Any]:
        return {**self.spec.budget, **self.corrector.budget}

    def slug(self) -> str:
        """The readable part of the key: the same for every version of this cell (config or code)."""
        readable = f"{self.dataset.name}__{self.model.name}__{self.corrector.label}__s{self.seed}"
        return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in readable)

    def key(self) -> str:
        return f"{self.slug()}__{stable_hash(self.config())}"

    def describe(self) -> str:
        return f"{self.dataset.name} / {self.model.name} / {self.corrector.label} / seed {self.seed}"



def _label(name: str, combo: dict[str, Any], base_label: str | None) -> str:
    if not combo:
        return base_label or name
    parts = ",".join(f"{k}={v}" for k, v in combo.items())
    return f"{base_label or name}[{parts}]"


def _expand_corrector(entry: dict[str, Any], file: str, index: int, plugin_dirs: list[str]) -> list[CorrectorConfig]:
    where = f"[[correctors]] #{index + 1}"
    _check_keys(entry, CORRECTOR_KEYS, where, file)
    if "name" not in entry:
        raise DeepPatchError(f"{file}: {where} needs a name")
    name = str(entry["name"])
    params = dict(entry.get("params", {}))
    grid = dict(entry.get("grid", {}))
    budget = _check_keys(dict(entry.get("budget", {})), BUDGET_KEYS, f"{where}.budget", file)
    for key in BUDGET_KEYS:
        _positive_int(budget.get(key), key, f"{where}.budget", file)
    switch = str(entry.get("switch", "none"))
    if switch not in SWITCHES:
        raise unknown_choice("switch", switch, SWITCHES, where=f"{file}: {where}")
    gate_target = str(entry.get("gate_target", "auto"))
    if gate_target not in GATE_TARGETS:
        raise unknown_choice("gate target", gate_target, GATE_TARGETS, where=f"{file}: {where}")
    for key in ("gate_target", "gate_epochs"):
        if key in entry and switch == "none":
            raise DeepPatchError(f"{file}: {where} sets {key} without switch = \"learned\"")
    gate_epochs = entry.get("gate_epochs")
    _positive_int(gate_epochs, "gate_epochs", where, file)
    overlap = set(params) & set(grid)
    if overlap:
        raise DeepPatchError(f"{file}: {where} sets {sorted(overlap)[0]!r} in both params and grid")
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    for k, v in axes.items():
        if not v:
            raise DeepPatchError(f"{file}: {where}.grid.{k} is an empty list")
    out = []
    for values in itertools.product(*axes.values()) if axes else [()]:
        combo = dict(zip(axes, values, strict=True))
        merged = {**params, **combo}
        try:
            corrector = get_corrector(name, plugin_dirs=plugin_dirs, **merged)  # validates name and every value
        except DeepPatchError as exc:
            raise DeepPatchError(f"{file}: {where}: {exc}") from None
        cls = type(corrector)
        if switch != "none" and cls.has_switch:
            raise DeepPatchError(f"{file}: {where}: corrector {name!r} has its own switch; set its gate in params "
                                 "instead of switch = \"learned\"")
        suffix = cls.label_suffix(corrector.params_dict()) + ("" if switch == "none" else f"+switch[{gate_target}]")
        label = _label(cls.display_name() + suffix if not entry.get("label") else str(entry["label"]), combo, None)
        out.append(CorrectorConfig(name, corrector.params_dict(), label, budget, cls.code_hash(), switch,
                                   gate_target if switch != "none" else "",
                                   int(gate_epochs) if gate_epochs is not None else None))
    return out


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    p = Path(path)
    file = str(p)
    if p.is_dir():
        raise DeepPatchError(f"benchmark spec {file!r} is a folder; pass a .toml file (e.g. benchmarks/quick.toml)")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeepPatchError(f"benchmark spec not found: {file}") from None
    except UnicodeDecodeError:
        raise DeepPatchError(f"{file}: not a text file (a benchmark spec is TOML)") from None
    except OSError as exc:
        raise DeepPatchError(f"cannot read benchmark spec {file!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeepPatchError(f"{file}: not valid TOML: {exc}") from None
    return parse_spec(raw, file)


def parse_spec(raw: dict[str, Any], file: str = "<spec>") -> Spec:
    _check_keys(raw, TOP_KEYS, "the top level", file)
    name = raw.get("name") or Path(file).stem
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise DeepPatchError(f"{file}: name {name!r} must be letters, digits, '.', '_' or '-' (not starting with "
                             "'.'): it names the results and report folders")
    given = raw.get("seeds", [0])
    seeds = list(range(given)) if isinstance(given, int) and not isinstance(given, bool) and given > 0 else given
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise DeepPatchError(f"{file}: seeds must be a positive count or a non-empty list of integers, got {given!r}")
    if len(set(seeds)) != len(seeds):
        raise DeepPatchError(f"{file}: seeds {given!r} repeat a seed")
    device = str(raw.get("device", "auto"))
    if device not in DEVICE_CHOICES and not device.startswith("cuda:"):
        raise unknown_choice("device", device, DEVICE_CHOICES, where=file)
    plugin_dirs = [str((Path(file).parent / d).resolve()) for d in raw.get("plugin_dirs", [])]

    maint = _check_keys(raw.get("maintenance", {}), MAINTENANCE_KEYS, "[maintenance]", file)
    perturbation = str(maint.get("perturbation", "blur"))
    pert_settings = dict(maint.get("settings", {}))
    try:
        get_perturbation(perturbation, **pert_settings)
    except TypeError as exc:
        raise DeepPatchError(f"{file}: [maintenance.settings]: {exc}") from None
    except DeepPatchError as exc:
        raise DeepPatchError(f"{file}: [maintenance]: {exc}") from None

    datasets = []
    for i, d in enumerate(raw.get("datasets", [])):
        _check_keys(d, DATASET_KEYS, f"[[datasets]] #{i + 1}", file)
        try:
            get_dataset_source(str(d.get("name")))
        except DeepPatchError as exc:
            raise DeepPatchError(f"{file}: [[datasets]] #{i + 1}: {exc}") from None
        datasets.append(DatasetEntry(**d))
    _no_duplicates([d.name for d in datasets], "[[datasets]]", file)
    models = []
    for i, m in enumerate(raw.get("models", [])):
        where = f"[[models]] #{i + 1}"
        _check_keys(m, MODEL_KEYS, where, file)
        mname = str(m.get("name"))
        if not mname.startswith("robustbench:"):
            try:
                get_entry(mname)
            except DeepPatchError as exc:
                raise DeepPatchError(f"{file}: {where}: {exc}") from None
        if m.get("weights", "auto") not in WEIGHTS:
            raise unknown_choice("weights", m["weights"], WEIGHTS, where=f"{file}: {where}")
        for key in ("epochs", "batch_size", "train_subset"):
            _positive_int(m.get(key), key, where, file)
        models.append(ModelEntry(**m))
    if not datasets or not models:
        raise DeepPatchError(f"{file}: a spec needs at least one [[datasets]] and one [[models]] entry")
    _no_duplicates([m.name for m in models], "[[models]]", file)
    correctors = [c for i, e in enumerate(raw.get("correctors", []))
                  for c in _expand_corrector(e, file, i, plugin_dirs)]
    if not correctors:
        raise DeepPatchError(f"{file}: a spec needs at least one [[correctors]] entry")
    labels = [c.label for c in correctors]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise DeepPatchError(f"{file}: corrector configuration {dupes[0]!r} appears twice; give one a label")

    suites: dict[str, dict[str, Any]] = {}
    suite_n: dict[str, int | None] = {}
    raw_suites = raw.get("suites", {"clean": {}, "blur": {}})
    if not isinstance(raw_suites, dict) or not raw_suites:
        raise DeepPatchError(f"{file}: [suites] must name at least one suite")
    for sname, settings in raw_suites.items():
        settings = dict(settings or {})
        n_eval = _positive_int(settings.pop("n_eval", None), "n_eval", f"[suites.{sname}]", file)
        try:
            get_suite(sname, **settings)
        except DeepPatchError as exc:
            raise DeepPatchError(f"{file}: [suites.{sname}]: {exc}") from None
        suites[sname], suite_n[sname] = settings, n_eval

    budget = _check_keys(raw.get("budget", {}), BUDGET_KEYS, "[budget]", file)
    for key in BUDGET_KEYS:
        _positive_int(budget.get(key), key, "[budget]", file)
    for c in correctors:
        for d in datasets:
            _check_train_subset({**budget, **c.budget}.get("train_subset"), d, f"the budget of {c.label!r}", file)
    for m in models:
        for d in datasets:
            _check_train_subset(m.train_subset, d, f"[[models]] {m.name!r}", file)
    _check_leaderboard(raw.get("leaderboard", {}), file)
    evaluation = _check_keys(raw.get("evaluation", {}), EVALUATION_KEYS, "[evaluation]", file)
    launcher = _check_keys(raw.get("launcher", {}), LAUNCHER_KEYS, "[launcher]", file)
    return Spec(
        name=str(name), path=file, description=str(raw.get("description", "")), seeds=list(seeds), device=device,
        plugin_dirs=plugin_dirs, perturbation=perturbation, perturbation_settings=pert_settings,
        datasets=datasets, models=models, correctors=correctors, suites=suites, suite_n_eval=suite_n,
        budget=dict(budget), n_eval=_positive_int(evaluation.get("n_eval"), "n_eval", "[evaluation]", file),
        eval_batch_size=_positive_int(evaluation.get("batch_size", 512), "batch_size", "[evaluation]", file) or 512,
        launcher=dict(launcher), pretrain_seed=int(raw.get("pretrain_seed", 2021)),
        results_dir=str(raw.get("results_dir", f"results/{name}")), report_dir=str(raw.get("report_dir",
                                                                                          f"reports/{name}")),
        raw=raw, harness_code=module_code_hash("deeppatch.harness.runner"),
        eval_seed=_eval_seed(evaluation.get("seed", 0), file),
    )


def _check_leaderboard(table: Any, file: str) -> None:
    """[leaderboard]: which headline column ranks the correctors, and the clean drop they may have."""
    _check_keys(table, LEADERBOARD_KEYS, "[leaderboard]", file)
    if "metric" in table and (not isinstance(table["metric"], str) or not table["metric"].strip()):
        raise DeepPatchError(f"{file}: [leaderboard].metric must be a column name, got {table['metric']!r}")
    tol = table.get("clean_drop_tolerance", 1.0)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol >= 0:
        raise DeepPatchError(f"{file}: [leaderboard].clean_drop_tolerance must be a number >= 0, got {tol!r}")


def _eval_seed(value: Any, file: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DeepPatchError(f"{file}: [evaluation].seed must be an integer >= 0, got {value!r}")
    return value


def _no_duplicates(names: list[str], table: str, file: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DeepPatchError(f"{file}: {table} names {repeated[0]!r} twice")


def _check_train_subset(n: int | None, dataset: DatasetEntry, where: str, file: str) -> None:
    """A train_subset must fit the training split (less its validation slice) and hold every class twice."""
    if n is None:
        return
    source = get_dataset_source(dataset.name)
    if n < 2 * source.num_classes:
        raise DeepPatchError(f"{file}: {where}: train_subset = {n} is too small to stratify {dataset.name}'s "
                             f"{source.num_classes} classes (at least {2 * source.num_classes})")
    if source.train_size is not None:
        available = source.train_size - int(round(source.train_size * dataset.val_fraction))
        if n > available:
            raise DeepPatchError(f"{file}: {where}: train_subset = {n} is larger than {dataset.name}'s training "
                                 f"split ({available} images after the {dataset.val_fraction:g} validation slice)")
