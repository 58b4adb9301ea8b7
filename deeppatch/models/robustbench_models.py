"""RobustBench model-zoo entries as models (`-m robustbench:<name>`), through robustbench's own loader.

RobustBench models take [0, 1] pixels and normalise inside (if at all), which is our convention
too, so they plug in unchanged. Checkpoints live in robustbench's layout::

    <model_dir>/<dataset>/<threat model>/<name>.pt          (ensembles: <name>.pt_m0.pt, _m1, ...)

e.g. ``models/cifar10/Linf/Standard.pt``. Offline, a checkpoint already there loads without the
network; a missing one is an error saying where to put it, unless `download=True` lets robustbench
fetch it. Our own checkpoints of such models (kind "robustbench", see models/checkpoint.py) rebuild
the architecture from the zoo's constructor and never download anything.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from deeppatch._robustbench_compat import import_robustbench
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.models.state import load_state_strict

PREFIX = "robustbench:"
# data sets we have that RobustBench has models for (ImageNet is not one of our data sets)
DATASETS = ("cifar10", "cifar100")
THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def default_model_dir() -> Path:
    """Where RobustBench checkpoints are looked for: $DEEPPATCH_ROBUSTBENCH_DIR, else robustbench's ./models."""
    return Path(os.environ.get("DEEPPATCH_ROBUSTBENCH_DIR", "models"))


def _robustbench():
    return import_robustbench()


def normalise_threat_model(threat_model: str) -> str:
    for valid in THREAT_MODELS:
        if str(threat_model).lower() == valid.lower():
            return valid
    raise unknown_choice("RobustBench threat model", threat_model, THREAT_MODELS)


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise DeepPatchError(f"RobustBench models are not available for data set {dataset!r}; "
                             f"valid choices: {', '.join(DATASETS)}")
    return dataset


def parse_model_spec(spec: str, default_threat_model: str = "Linf") -> tuple[str, str]:
    """'robustbench:<name>' or 'robustbench:<threat model>/<name>' -> (name, threat model)."""
    rest = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    threat, sep, name = rest.rpartition("/")
    if not name:
        raise DeepPatchError(f"empty RobustBench model name in {spec!r}; write robustbench:<name> "
                             "or robustbench:<threat model>/<name>")
    return name, normalise_threat_model(threat if sep else default_threat_model)


def _zoo(dataset: str, threat_model: str) -> dict[str, dict[str, Any]]:
    _robustbench()
    from robustbench.model_zoo import model_dicts  # lazy: robustbench (optional use) loads after the autoattack alias
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel  # lazy: as above

    folder_threat = threat_model.replace("_3d", "")  # robustbench keeps 3D-corruption models under corruptions
    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(folder_threat)]


def robustbench_model_names(dataset: str, threat_model: str = "Linf") -> list[str]:
    """The zoo's entries for (data set, threat model)."""
    return list(_zoo(_check_dataset(dataset), normalise_threat_model(threat_model)))


def _entry(name: str, dataset: str, threat_model: str) -> dict[str, Any]:
    zoo = _zoo(dataset, threat_model)
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise DeepPatchError(
            f"unknown RobustBench model {name!r} for {dataset}/{threat_model}{hint} "
            f"({len(zoo)} entries; valid choices: {', '.join(zoo)})"
        )
    return zoo[name]


def _timm_name(name: str, dataset: str, threat_model: str) -> str:
    folder_threat = threat_model.replace("_3d", "")
    return f"{name.lower().replace('-', '_')}_{dataset}_{folder_threat.lower()}"


def _is_timm_model(name: str, dataset: str, threat_model: str) -> bool:
    import timm  # lazy: timm is needed only by RobustBench's transformer entries

    return bool(timm.is_model(_timm_name(name, dataset, threat_model)))


@dataclass(frozen=True)
class CheckpointLocation:
    folder: Path
    files: tuple[Path, ...]

    def missing(self) -> list[Path]:
        return [f for f in self.files if not f.is_file()]


def checkpoint_location(
    name: str, dataset: str, model_dir: str | Path, threat_model: str = "Linf",
) -> CheckpointLocation:
    """Where robustbench's `load_model` reads the checkpoint file(s) of an entry."""
    dataset, threat_model = _check_dataset(dataset), normalise_threat_model(threat_model)
    entry = _entry(name, dataset, threat_model)
    folder = Path(model_dir) / dataset / threat_model.replace("_3d", "")
    base = folder / f"{name}.pt"
    ids = entry.get("gdrive_id")
    if isinstance(ids, list):
        return CheckpointLocation(folder, tuple(Path(f"{base}_m{i}.pt") for i in range(len(ids))))
    return CheckpointLocation(folder, (base,))


def create_robustbench_model(name: str, dataset: str, threat_model: str = "Linf") -> nn.Module:
    """The entry's architecture, freshly initialised, without downloading anything."""
    dataset, threat_model = _check_dataset(dataset), normalise_threat_model(threat_model)
    entry = _entry(name, dataset, threat_model)
    if _is_timm_model(name, dataset, threat_model):
        import timm  # lazy: timm is needed only by RobustBench's transformer entries

        return timm.create_model(_timm_name(name, dataset, threat_model), num_classes=NUM_CLASSES[dataset],
                                 pretrained=False)
    return entry["model"]()


def load_robustbench_model(
    name: str, dataset: str, model_dir: str | Path, threat_model: str = "Linf", *, download: bool = False,
) -> nn.Module:
    """A RobustBench zoo entry with its weights, in eval mode, through `robustbench.utils.load_model`.

    Without `download`, the checkpoint must already be in `model_dir` (robustbench's layout).
    """
    if name.startswith(PREFIX):
        name, threat_model = parse_model_spec(name, threat_model)
    dataset, threat_model = _check_dataset(dataset), normalise_threat_model(threat_model)
    _robustbench()
    from robustbench.utils import load_model  # lazy: robustbench loads only when a zoo model is asked for

    entry = _entry(name, dataset, threat_model)
    timm_model = _is_timm_model(name, dataset, threat_model)
    if not timm_model and entry.get("gdrive_id") is None:
        raise DeepPatchError(f"RobustBench entry {name!r} ({dataset}/{threat_model}) has no released checkpoint")
    if not timm_model and not download:
        loc = checkpoint_location(name, dataset, model_dir, threat_model)
        missing = loc.missing()
        if missing:
            raise DeepPatchError(
                f"RobustBench checkpoint for {name} ({dataset}/{threat_model}) not found: put "
                f"{', '.join(str(p) for p in missing)} there (robustbench's layout "
                "<model_dir>/<dataset>/<threat model>/<name>.pt), or load it with download=True"
            )
    try:
        model = load_model(model_name=name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    except (OSError, ConnectionError) as exc:
        how = "from the Hugging Face hub (timm)" if timm_model else "from Google Drive"
        raise DeepPatchError(f"could not fetch RobustBench model {name} {how}: {str(exc).splitlines()[0][:160]}; "
                             f"download it elsewhere and place it under {model_dir}") from exc
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeepPatchError(f"RobustBench checkpoint for {name} ({dataset}/{threat_model}) does not load: "
                             f"{first[:200]}") from exc
    except Exception as exc:
        if type(exc).__name__ == "UnpicklingError":
            raise DeepPatchError(
                f"RobustBench checkpoint for {name} holds objects a weights-only load refuses; "
                "re-save its state dict with torch.save(state_dict) and try again"
            ) from exc
        raise
    return model.eval()


def robustbench_extra(name: str, dataset: str, threat_model: str = "Linf") -> dict[str, str]:
    """The `extra` field of our checkpoint format (kind "robustbench") for this entry."""
    return {"robustbench_name": name, "threat_model": normalise_threat_model(threat_model),
            "robustbench_dataset": _check_dataset(dataset)}


def restore_from_record(record: dict[str, Any]) -> nn.Module:
    """Rebuild a kind-"robustbench" checkpoint of ours: zoo architecture + strict state dict, offline."""
    extra = record.get("extra") or {}
    if "robustbench_name" not in extra:
        raise DeepPatchError("a robustbench checkpoint must name its zoo entry in extra['robustbench_name']")
    name = str(extra["robustbench_name"])
    threat_model = str(extra.get("threat_model", "Linf"))
    dataset = str(extra.get("robustbench_dataset") or record["dataset"]["name"])
    model = create_robustbench_model(name, dataset, threat_model)
    load_state_strict(model, record["state_dict"], f"RobustBench model {name!r} ({dataset}/{threat_model})")
    return model.eval()
