"""Result rows: the one flat record that suites produce, the harness stores and reports read.

A suite returns `SuiteRow`s (what it measured). The harness completes each into a full row (which
cell, which corrector, what it cost, versions) with `complete_row` and stores one JSON-lines file
per grid cell. `rows_to_frame` turns rows into a pandas DataFrame with the columns of `COLUMNS`.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppatch.errors import DeepPatchError
from deeppatch.storage import atomic_write_text

# Every full row has exactly these keys (values JSON-serialisable).
COLUMNS = (
    # which cell
    "benchmark", "dataset", "model", "corrector", "params", "params_hash", "seed",
    # what was measured
    "suite", "condition", "group", "severity", "metric", "value", "n", "source", "settings",
    # what it cost
    "eval_time_s", "repair_time_s", "trainable_params", "added_params", "epochs",
    # provenance
    "device", "versions", "created",
    # what produced it: the corrector's code hash; whether the repair beat its starting point on val
    "code_hash", "kept",
)
OPTIONAL_COLUMNS = frozenset({"code_hash", "kept"})  # absent from rows written before they existed
_TEXT = ("benchmark", "dataset", "model", "corrector", "params", "params_hash", "suite", "condition", "metric")
_NUMBERS = ("value", "eval_time_s", "repair_time_s")
_COUNTS = ("n", "trainable_params", "added_params", "epochs")


@dataclass
class SuiteRow:
    """One measurement of a suite.

    condition: unique label within the suite, e.g. "clean", "sigma=1.5", "fog/3",
        "pgd-linf/eps=0.0314/steps=10", "autoattack-standard-linf/eps=0.0314", "mean", "union".
    group: what the condition varies over, for per-condition tables and curves: "sigma", the
        corruption name, the attack name, the spatial transform; "aggregate" for means/unions.
    severity: the numeric strength (sigma, 1..5, eps), or None.
    metric: "accuracy" (percent) unless stated: e.g. "routing_accuracy", "auroc", "patched_fraction".
    source: where the data came from, e.g. "cifar10-c" (canonical arrays) or "generated" (ours).
    settings: suite settings that produced it (attack steps, eps, seed, batch size, ...).
    """

    suite: str
    condition: str
    value: float
    n: int
    group: str = ""
    severity: float | None = None
    metric: str = "accuracy"
    source: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    eval_time_s: float = 0.0
    # per test image: classified correctly? (stored beside the rows, in samples/, for paired statistics)
    correct: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("correct")
        return out


def complete_row(row: SuiteRow, cell: dict[str, Any]) -> dict[str, Any]:
    """Merge a suite row with the cell's identity, cost and provenance into a full row."""
    full = {c: None for c in COLUMNS}
    full.update({k: v for k, v in cell.items() if k in full})
    full.update({k: v for k, v in row.to_dict().items() if k in full})
    for key in ("params", "settings", "versions"):
        if not isinstance(full[key], str):
            full[key] = json.dumps(full[key] or {}, sort_keys=True, default=str)
    unknown = set(cell) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown row fields {sorted(unknown)}")
    return full


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def check_row(row: Any) -> str | None:
    """Why `row` is not a valid full row (None when it is): columns, types, finite numbers."""
    if not isinstance(row, dict):
        return f"a row must be a JSON object, got {type(row).__name__}"
    missing = [c for c in COLUMNS if c not in row and c not in OPTIONAL_COLUMNS]
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    for c in _TEXT:
        if not isinstance(row[c], str):
            return f"column {c!r} must be text, got {row[c]!r}"
    if not isinstance(row["seed"], int) or isinstance(row["seed"], bool):
        return f"column 'seed' must be an integer, got {row['seed']!r}"
    for c in _NUMBERS:
        v = row[c]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            return f"column {c!r} must be a finite number, got {v!r}"
    if row["value"] is None:
        return "column 'value' is empty"
    for c in _COUNTS:
        v = row[c]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            return f"column {c!r} must be a count (integer >= 0), got {v!r}"
    return None


def read_cell_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One cell's rows file, validated line by line; an empty, truncated, binary or malformed file is a
    `DeepPatchError` naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeepPatchError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise DeepPatchError(f"{path}: cannot read: {exc.strerror}") from None
    if not text.strip():
        raise DeepPatchError(f"{path}: empty rows file")
    if not text.endswith("\n"):
        raise DeepPatchError(f"{path}:{text.count(chr(10)) + 1}: truncated (no end of line)")
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DeepPatchError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
        problem = check_row(row)
        if problem:
            raise DeepPatchError(f"{path}:{i}: {problem}")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# the result store on disk
#
#   <results_dir>/manifest.json            what was run: benchmark name, spec, versions, device
#   <results_dir>/rows/<cell_key>.jsonl    all full rows of one grid cell, one JSON object per line
#   <results_dir>/failures/<cell_key>.json a failed cell: its identity, error and traceback


def write_cell_rows(results_dir: str | os.PathLike, cell_key: str, rows: list[dict[str, Any]]) -> None:
    """Write one cell's rows atomically (a reader sees all of them or none), after checking each."""
    for i, row in enumerate(rows, start=1):
        problem = check_row(row)
        if problem:
            raise ValueError(f"row {i} of cell {cell_key}: {problem}")
    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
    atomic_write_text(text, Path(results_dir) / "rows" / f"{cell_key}.jsonl")


def read_rows(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every cell's rows under `results_dir`, validated (see `read_cell_rows`)."""
    folder = Path(results_dir) / "rows"
    if not folder.is_dir():
        raise DeepPatchError(f"no result rows under {str(results_dir)!r} (expected a rows/ folder)")
    return [row for path in sorted(folder.glob("*.jsonl")) for row in read_cell_rows(path)]


def load_rows(results_dir):
    """All rows under `results_dir` as one pandas DataFrame with the columns of `COLUMNS`."""
    return rows_to_frame(read_rows(results_dir))


SAMPLES_FORMAT = "deeppatch.samples/1"


def sample_key(suite: str, condition: str) -> str:
    return f"{suite}|{condition}"


def write_cell_samples(results_dir: str | os.PathLike, cell_key: str, rows: list[SuiteRow],
                       eval_seed: int) -> Path | None:
    """Per-sample correctness of every row that has it, one bit per image, in samples/<cell_key>.json."""
    correct = {sample_key(r.suite, r.condition): encode_correctness(r.correct) for r in rows if r.correct is not None}
    if not correct:
        return None
    return atomic_write_text(json.dumps({"format": SAMPLES_FORMAT, "cell": cell_key, "eval_seed": eval_seed,
                                         "correct": correct}, sort_keys=True, separators=(",", ":")) + "\n",
                             Path(results_dir) / "samples" / f"{cell_key}.json")


def read_samples(results_dir: str | os.PathLike) -> dict[str, dict[tuple[str, str], np.ndarray]]:
    """{cell key: {(suite, condition): bool array per test image}} for every samples file (may be empty)."""
    out: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    folder = Path(results_dir) / "samples"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != SAMPLES_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            out[path.stem] = {tuple(key.split("|", 1)): decode_correctness(value)
                              for key, value in doc["correct"].items()}
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, DeepPatchError) as exc:
            raise DeepPatchError(f"{path}: not a per-sample correctness file ({exc})") from None
    return out


def read_rows_by_cell(results_dir: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """{cell key (the rows file's name): its validated rows}."""
    folder = Path(results_dir) / "rows"
    if not folder.is_dir():
        raise DeepPatchError(f"no result rows under {str(results_dir)!r} (expected a rows/ folder)")
    return {path.stem: read_cell_rows(path) for path in sorted(folder.glob("*.jsonl"))}


def pack_correctness(correct: Any) -> tuple[bytes, int]:
    """One seed's correctness as (bytes, length): 1 bit per image, most significant bit first; the length
    is needed because the last byte is padded with zero bits."""
    arr = np.asarray(correct.cpu() if hasattr(correct, "cpu") else correct)
    if arr.ndim != 1 or arr.size == 0:
        raise DeepPatchError(f"pack one seed at a time: need a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise DeepPatchError("correctness must be boolean (or 0/1)")
    return np.packbits(arr.astype(bool), bitorder="big").tobytes(), int(arr.size)


def unpack_correctness(data: bytes, length: int) -> np.ndarray:
    """The boolean array `pack_correctness` packed; checks the byte count and the zero padding."""
    if isinstance(length, bool) or int(length) != length or length <= 0:
        raise DeepPatchError(f"length must be a positive integer; got {length!r}")
    length = int(length)
    if len(data) != (length + 7) // 8:
        raise DeepPatchError(f"{len(data)} bytes cannot hold {length} bits (need {(length + 7) // 8})")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="big")
    if bits[length:].any():
        raise DeepPatchError("packed correctness has nonzero padding bits: wrong length or corrupt data")
    return bits[:length].astype(bool)


def encode_correctness(correct: Any) -> dict[str, Any]:
    """JSON-ready {"n": length, "bits": base64 of the packed bits}, for the samples/ side files."""
    data, length = pack_correctness(correct)
    return {"n": length, "bits": base64.b64encode(data).decode("ascii")}


def decode_correctness(obj: dict[str, Any]) -> np.ndarray:
    """Inverse of `encode_correctness`."""
    try:
        data = base64.b64decode(obj["bits"], validate=True)
        length = obj["n"]
    except (KeyError, TypeError, ValueError) as error:
        raise DeepPatchError(f"not an encoded correctness object ({error}): {str(obj)[:60]}") from None
    return unpack_correctness(data, length)


def read_manifest(results_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(results_dir) / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
