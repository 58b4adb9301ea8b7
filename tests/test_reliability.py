"""Results you can trust: code identity in every key, rows validated when read, exact resume of the
repair's cost, files that respect the umask, honest summaries of concurrent runs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deeppatch.code_identity import code_hash, source_closure
from deeppatch.corrector import Budget, RepairTask, get_corrector, run_repair
from deeppatch.data import load_splits
from deeppatch.harness.bench import run_benchmark
from deeppatch.harness.spec import load_spec
from deeppatch.models import create_model
from deeppatch.perturbations import get_perturbation
from deeppatch.reporting.build import build_report
from deeppatch.results import load_rows
from deeppatch.storage import Workspace, atomic_write_text
from deeppatch.training import TrainLoop
from tests.test_harness import SPEC

PLUGIN = '''
import torch

from deeppatch.corrector import Corrector, Repaired


class Shrink(Corrector):
    """Scales the last layer (a throw-away corrector for tests)."""

    name = "shrink"

    def repair(self, task):
        model = task.copy_model()
        with torch.no_grad():
            model.fc.weight.mul_(0.5)
        return Repaired(model)
'''


def spec_with_plugin(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "shrink.py").write_text(textwrap.dedent(PLUGIN))
    correctors = '[[correctors]]\nname = "shrink"\n\n[[correctors]]\nname = "none"\n'
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(correctors=correctors, extra_top='plugin_dirs = ["plugins"]'))
    return path


def test_code_identity_follows_imports():
    corrector_file = Path(sys.modules[get_corrector("deeppatch").__module__].__file__)
    files = {p.name for p in source_closure([corrector_file])}
    assert {"deeppatch_corrector.py", "blame.py", "switch.py", "corrector.py", "repair_tools.py"} <= files
    assert "runner.py" not in files and "build.py" not in files  # not the harness, not the report
    assert code_hash([corrector_file]) == code_hash([corrector_file])


def test_editing_a_plugin_reruns_exactly_its_cells_and_rerun_forces(tmp_path):
    spec_path = spec_with_plugin(tmp_path)
    results = tmp_path / "r"
    first = run_benchmark(load_spec(spec_path), results_dir=results, show_progress=False)
    assert (first.ran, first.failed) == (2, [])
    again = run_benchmark(load_spec(spec_path), results_dir=results, show_progress=False)
    assert (again.skipped, again.ran) == (2, 0)
    plugin = tmp_path / "plugins" / "shrink.py"
    plugin.write_text(plugin.read_text() + "\n# an edit that changes nothing but the code\n")
    edited = run_benchmark(load_spec(spec_path), results_dir=results, show_progress=False)
    assert (edited.skipped, edited.ran) == (1, 1)  # only the plug-in's cell
    frame = load_rows(results)
    codes = dict(zip(frame.corrector, frame.code_hash, strict=False))
    assert codes["shrink"] and codes["none"] and codes["shrink"] != codes["none"]
    forced = run_benchmark(load_spec(spec_path), results_dir=results, rerun={"corrector": {"none"}},
                           show_progress=False)
    assert (forced.skipped, forced.ran, forced.rerun) == (1, 1, 1)
    built = build_report(results, tmp_path / "report")
    text = Path(built["markdown"]).read_text()
    assert "**code**" in text and codes["shrink"] in text and "harness " in text


def test_broken_rows_files_are_not_done_cells(tmp_path, caplog):
    logger = logging.getLogger("deeppatch.harness.runner")
    logger.disabled = False  # a library's logging.config call may have disabled existing loggers
    caplog.set_level(logging.WARNING, logger="deeppatch.harness.runner")
    spec_path = spec_with_plugin(tmp_path)
    results = tmp_path / "r"
    run_benchmark(load_spec(spec_path), results_dir=results, show_progress=False)
    rows = sorted((results / "rows").glob("*.jsonl"))
    rows[0].write_text("")  # empty
    rows[1].write_bytes(b"\x00\xff binary")
    again = run_benchmark(load_spec(spec_path), results_dir=results, show_progress=False)
    assert again.ran == 2 and again.failed == []
    assert "empty rows file" in caplog.text and "not a text file" in caplog.text
    assert len(load_rows(results)) > 0


def test_atomic_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text("x", tmp_path / "f.txt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert list(tmp_path.iterdir()) == [path]  # no temp file left


class Killed(Exception):
    pass


def test_resumed_repair_reports_total_epochs_and_time(tmp_path, monkeypatch):
    """A repair killed in epoch 2 of 3 and resumed reports 3 epochs, the time of the epochs it kept, and
    ends with the weights of an uninterrupted repair."""
    splits = load_splits("digits", val_fraction=0.1)
    torch.manual_seed(0)
    model = create_model("tinycnn", splits.info).eval()
    family = get_perturbation("blur", sigmas=[0.5, 1.0])

    def task(work: Path, resume: bool) -> RepairTask:
        return RepairTask(model=model, splits=splits, perturbation=family, seed=1,
                          budget=Budget(epochs=3, train_subset=300),
                          workspace=Workspace(state_dir=work, resume=resume))

    straight, straight_cost = run_repair(get_corrector("finetune"), task(tmp_path / "a", False))
    real = TrainLoop._train_epoch

    def dies_in_epoch_2(self, model, opt, sched, epoch):
        if epoch == 1:
            raise Killed
        return real(self, model, opt, sched, epoch)

    monkeypatch.setattr(TrainLoop, "_train_epoch", dies_in_epoch_2)
    with pytest.raises(Killed):
        run_repair(get_corrector("finetune"), task(tmp_path / "b", False))
    monkeypatch.undo()
    kept = json.loads((tmp_path / "b" / "repair-clock.json").read_text())["seconds"]
    assert kept > 0
    resumed, cost = run_repair(get_corrector("finetune"), task(tmp_path / "b", True))
    assert cost.epochs == straight_cost.epochs == 3
    assert cost.wall_time_s >= kept
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_two_bench_processes_say_what_each_did(tmp_path):
    spec_path = spec_with_plugin(tmp_path)
    env = {**os.environ, "DEEPPATCH_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "deeppatch.cli", "bench", str(spec_path), "--no-report", "--results",
           str(tmp_path / "r")]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    summaries = [next(line for line in out.splitlines() if line.startswith("t: ")) for out, _ in outs]
    run_here = already = others = 0
    for line in summaries:
        assert "2 cells" in line and "0 failed" in line
        counts = {part.split(" ", 1)[1].split(" (")[0]: int(part.split(" ", 1)[0])
                  for part in line.removeprefix("t: ").split(", ")[1:-1]}
        run_here += counts.get("run here", 0)
        already += counts.get("already done", 0)
        others += counts.get("finished by another process", 0)
    assert run_here == 2  # each cell ran exactly once, in one of the two processes
    assert len(load_rows(tmp_path / "r").groupby(["corrector", "seed"])) == 2
