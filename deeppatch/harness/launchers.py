"""Who runs the cells: this process (`local`), or Slurm / local subprocesses through submitit.

Cells are independent; a launcher only hands them out. Each submitted job runs `run_cell_job`,
which rebuilds the spec from its file and writes the cell's rows into the shared results folder.
No scheduler of our own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deeppatch.errors import DeepPatchError
from deeppatch.harness.runner import record_failure, run_cell
from deeppatch.harness.spec import Cell, Spec, parse_spec

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "submitit")


def run_cell_job(spec_raw: dict[str, Any], spec_path: str, cell_key: str, results_dir: str) -> str:
    """Entry point of a submitted job: run one cell (by key) of the spec; returns 'ok' or the error."""
    spec = parse_spec(spec_raw, spec_path)
    cell = next((c for c in spec.cells() if c.key() == cell_key), None)
    if cell is None:
        raise DeepPatchError(f"cell {cell_key} is not in the spec any more")
    try:
        run_cell(cell, Path(results_dir), show_progress=False)
        return "ok"
    except Exception as exc:  # recorded per cell, like the local launcher
        record_failure(Path(results_dir), cell, exc)
        return f"{type(exc).__name__}: {exc}"


def submitit_launch(spec: Spec, cells: list[Cell], results_dir: Path, options: dict[str, Any],
                    on_done: Callable[[Cell, str], None]) -> None:
    """Submit the cells as a job array and wait; results land in the shared results folder."""
    try:
        import submitit  # lazy: an optional extra, needed only by this launcher
    except ImportError:
        raise DeepPatchError("the submitit launcher needs submitit: pip install 'deeppatch[scale]'") from None
    folder = Path(options.get("folder") or results_dir / "submitit")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=options.get("cluster"))
    params: dict[str, Any] = {"timeout_min": int(options.get("time_limit_min") or 240), "name": f"bench-{spec.name}"}
    if options.get("cpus_per_task"):
        params["cpus_per_task"] = int(options["cpus_per_task"])
    if options.get("gpus_per_task") is not None:
        params["gpus_per_node"] = int(options["gpus_per_task"])
    if options.get("mem_gb"):
        params["mem_gb"] = int(options["mem_gb"])
    if executor.cluster == "slurm":
        if options.get("partition"):
            params["slurm_partition"] = options["partition"]
        if options.get("array_parallelism"):
            params["slurm_array_parallelism"] = int(options["array_parallelism"])
    executor.update_parameters(**params)
    raw, path = spec.raw, spec.path
    jobs = executor.map_array(run_cell_job, [raw] * len(cells), [path] * len(cells), [c.key() for c in cells],
                              [str(results_dir)] * len(cells))
    log.info("submitted %d cells to %s (%s)", len(jobs), executor.cluster, folder)
    for cell, job in zip(cells, jobs, strict=True):
        try:
            status = job.result()
        except Exception as exc:  # the job itself died (timeout, node failure)
            status = f"job failed: {exc}"
        on_done(cell, status)
