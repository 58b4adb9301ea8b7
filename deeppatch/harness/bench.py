"""`deeppatch bench`: expand a spec into cells, run what is not done, then build the report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeppatch.device import resolve_device
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.harness.launchers import LAUNCHERS, submitit_launch
from deeppatch.harness.runner import (
    failure_path,
    finished_rows,
    forget_cell,
    maintenance_path,
    record_failure,
    repaired_path,
    retire_stale_rows,
    rows_path,
    run_cell,
    write_manifest,
)
from deeppatch.harness.spec import Cell, Spec
from deeppatch.progress import progress
from deeppatch.storage import ensure_writable_dir

log = logging.getLogger(__name__)

ONLY_KEYS = ("dataset", "model", "corrector", "seed")


@dataclass
class BenchResult:
    """What one bench process did: cells found done, run here, finished by another worker, failed."""

    cells: int
    skipped: int
    ran: int
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    by_others: int = 0  # cells another process on the same results folder finished while this one waited
    rerun: int = 0
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed over the cells run here

    def stage_lines(self, report_s: float | None = None) -> list[str]:
        """The stage breakdown: model under maintenance, each repair, each suite, the report."""
        stages = dict(self.stages)
        if report_s is not None:
            stages["report"] = report_s
        if not stages:
            return []
        width = max(len(k) for k in stages) + 2
        lines = ["stage breakdown (wall seconds in this process):"]
        lines += [f"  {k:<{width}s}{v:8.1f}" for k, v in stages.items()]
        lines.append(f"  {'total (bench)':<{width}s}{self.seconds + (report_s or 0.0):8.1f}")
        return lines

    def summary(self, name: str) -> str:
        parts = [f"{self.cells} cells", f"{self.skipped} already done", f"{self.ran - self.by_others} run here"]
        if self.by_others:
            parts.append(f"{self.by_others} finished by another process (waited for)")
        if self.rerun:
            parts.append(f"{self.rerun} forced to rerun")
        parts.append(f"{len(self.failed)} failed")
        return f"{name}: {', '.join(parts)}, {self.seconds:.0f} s"


def parse_only(text: str | None, flag: str = "--only") -> dict[str, set[str]]:
    """--only / --rerun corrector=deeppatch,model=smallcnn (repeat a key for several values)."""
    out: dict[str, set[str]] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ONLY_KEYS:
            raise DeepPatchError(f"{flag} takes key=value pairs with keys {', '.join(ONLY_KEYS)}; got {part!r}")
        out.setdefault(key, set()).add(value.strip())
    return out


def select_cells(spec: Spec, only: dict[str, set[str]], what: str = "--only") -> list[Cell]:
    cells = spec.cells()
    values = {"dataset": lambda c: {c.dataset.name}, "model": lambda c: {c.model.name},
              "corrector": lambda c: {c.corrector.label, c.corrector.name}, "seed": lambda c: {str(c.seed)}}
    for key, wanted in only.items():
        cells = [c for c in cells if values[key](c) & wanted]
    if not cells:
        asked = ",".join(f"{k}={v}" for k, values in sorted(only.items()) for v in sorted(values))
        raise DeepPatchError(f"{what} {asked} selects no cell of the spec")
    return cells


def override_seeds(spec: Spec, n: int | None) -> None:
    """--seeds N: the spec's first seed and the N - 1 integers after it."""
    if n is None:
        return
    if n <= 0:
        raise DeepPatchError(f"--seeds must be positive, got {n}")
    spec.seeds = [spec.seeds[0] + i for i in range(n)]


def describe_grid(spec: Spec, cells: list[Cell], results_dir: Path) -> list[str]:
    lines = [f"benchmark {spec.name}: {len(cells)} cells -> {results_dir}"]
    for cell in cells:
        state = []
        if rows_path(results_dir, cell).is_file():
            state.append("done")
        else:
            if maintenance_path(results_dir, cell).is_file():
                state.append("model cached")
            if repaired_path(results_dir, cell).is_file():
                state.append("repair cached")
            if failure_path(results_dir, cell).is_file():
                state.append("failed before")
        lines.append(f"  {cell.describe():60s} {', '.join(state) or 'to run'}  [{cell.key()}]")
    return lines


def run_benchmark(spec: Spec, *, only: dict[str, set[str]] | None = None, device: str | None = None,
                  launcher: str = "local", launcher_options: dict[str, Any] | None = None,
                  results_dir: str | Path | None = None, rerun: dict[str, set[str]] | None = None,
                  dry_run: bool = False, show_progress: bool | None = None) -> BenchResult:
    """Run every cell of `spec` (or of `only`) that has no valid rows yet (and those `rerun` selects);
    the caller builds the report."""
    if launcher not in LAUNCHERS:
        raise unknown_choice("launcher", launcher, LAUNCHERS)
    t0 = time.perf_counter()
    results = Path(results_dir or spec.results_dir)
    if device is not None:
        spec.device = device
    torch_device = resolve_device(spec.device)
    cells = select_cells(spec, only or {})
    forced = select_cells(spec, rerun, what="--rerun") if rerun else []
    if dry_run:
        print("\n".join(describe_grid(spec, cells, results)))
        return BenchResult(len(cells), 0, 0)
    ensure_writable_dir(results)  # the one failure that stops the run: the results folder itself
    write_manifest(spec, results, torch_device)
    stale = retire_stale_rows(results, cells)
    if stale:
        log.warning("%d rows file(s) of earlier versions of these cells (other config or code) moved to %s",
                    stale, results / "stale")
    forced_keys = {c.key() for c in forced} & {c.key() for c in cells}
    for cell in cells:
        if cell.key() in forced_keys:
            forget_cell(results, cell)
    todo = [c for c in cells if finished_rows(results, c) is None]
    result = BenchResult(len(cells), len(cells) - len(todo), 0, rerun=len(forced_keys))
    bar = progress(total=len(cells), initial=result.skipped, desc=f"bench {spec.name}", unit="cell",
                   enable=show_progress, leave=True)

    def done(cell: Cell, status: str) -> None:
        result.ran += 1
        if status != "ok":
            result.failed.append(f"{cell.describe()}: {status}")
            log.error("cell %s failed: %s", cell.describe(), status)
        bar.update(1)

    if launcher == "local":
        for cell in todo:
            bar.set_postfix_str(cell.describe(), refresh=True)
            try:
                _, how = run_cell(cell, results, device=torch_device, show_progress=show_progress,
                                  timings=result.stages)
                result.by_others += how != "ran"
                done(cell, "ok")
            except KeyboardInterrupt:
                bar.close()
                raise
            except Exception as exc:  # recorded per cell; the grid goes on
                try:
                    record_failure(results, cell, exc)
                except OSError as io:
                    bar.close()
                    raise DeepPatchError(f"cannot write to the results folder {str(results)!r}: "
                                         f"{io.strerror or io}") from None
                done(cell, f"{type(exc).__name__}: {exc}")
    else:
        options = {**spec.launcher, **(launcher_options or {})}
        submitit_launch(spec, todo, results, options, done)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result
