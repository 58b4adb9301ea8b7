"""The benchmark harness: specs, the grid, resume after a kill, failures, plug-ins, submitit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deeppatch.cli import main
from deeppatch.errors import DeepPatchError
from deeppatch.harness.bench import run_benchmark
from deeppatch.harness.spec import load_spec
from deeppatch.reporting.build import build_report
from deeppatch.results import load_rows

SPEC = """
name = "t"
seeds = [0]
device = "cpu"
{extra_top}

[maintenance]
perturbation = "blur"
settings = {{ sigmas = [0.5, 1.0] }}

[[datasets]]
name = "digits"
val_fraction = 0.1

[[models]]
name = "tinycnn"
epochs = 2

{correctors}

[suites.clean]
[suites.blur]
sigmas = [0.5, 1.0]

[budget]
train_subset = 200
epochs = 2
"""

CORRECTORS = """
[[correctors]]
name = "none"

[[correctors]]
name = "finetune"

[[correctors]]
name = "deeppatch"
params = { gate_epochs = 2 }
grid = { routing = ["per-sample", "batch-majority"] }
"""

TIMING = {"eval_time_s", "repair_time_s", "created"}


def write_spec(folder: Path, correctors: str = CORRECTORS, extra_top: str = "", name: str = "spec.toml") -> Path:
    path = folder / name
    path.write_text(SPEC.format(correctors=correctors, extra_top=extra_top))
    return path


def comparable(results: Path) -> list[tuple]:
    """Rows without their timings: timestamps, evaluation and repair times, the shared-work timing rows."""
    frame = load_rows(results)
    frame = frame[frame["metric"] != "seconds"].drop(columns=sorted(TIMING))
    return sorted(tuple(str(v) for v in row) for row in frame.itertuples(index=False))


def test_grid_expansion_and_validation(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    assert [c.corrector.label for c in spec.cells()] == [
        "none", "finetune", "deeppatch+switch[learned auto][routing=per-sample]",
        "deeppatch+switch[learned auto][routing=batch-majority]"]
    assert len({c.key() for c in spec.cells()}) == 4

    def bad(text, match):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(DeepPatchError, match=match):
            load_spec(path)

    base = SPEC.format(correctors=CORRECTORS, extra_top="")
    bad(base + "\n[evaluation]\nn_evl = 5\n",
        r"bad.toml: unknown key 'n_evl' in \[evaluation\]; valid keys: batch_size, n_eval")
    bad(base.replace('name = "finetune"', 'name = "finetune"\nparams = { lr = -1 }'),
        r"bad.toml: \[\[correctors\]\] #2: corrector 'finetune'")
    bad(base.replace('name = "finetune"', 'name = "fine-tune"'), "unknown corrector 'fine-tune'; valid choices:")
    bad(base.replace("[suites.clean]", "[suites.cleanish]"), r"\[suites.cleanish\]: unknown suite")
    bad(base.replace('name = "tinycnn"', 'name = "tinycnn"\nweights = "maybe"'), "valid choices: auto, pretrained")
    bad(base.replace("seeds = [0]", "seeds = []"), "seeds must be")


def test_rerun_is_a_no_op_and_same_seed_same_numbers(tmp_path):
    spec_path = write_spec(tmp_path, correctors='[[correctors]]\nname = "finetune"\n')
    first = run_benchmark(load_spec(spec_path), results_dir=tmp_path / "a",
                          show_progress=False)
    assert (first.ran, first.failed) == (1, [])
    again = run_benchmark(load_spec(spec_path), results_dir=tmp_path / "a",
                          show_progress=False)
    assert (again.skipped, again.ran) == (1, 0)
    other = run_benchmark(load_spec(spec_path), results_dir=tmp_path / "b",
                          show_progress=False)
    assert other.ran == 1
    assert comparable(tmp_path / "a") == [r for r in comparable(tmp_path / "b")]
    build_report(tmp_path / "a", tmp_path / "ra")
    assert (tmp_path / "ra" / "README.md").is_file()


def test_a_model_evaluated_once_serves_every_seed_that_yields_it(tmp_path):
    """The model under maintenance is the same for every seed of "none": evaluated once; a repair that
    differs by seed is evaluated per seed; the rows are what evaluating each cell gives."""
    spec_path = write_spec(tmp_path, correctors='[[correctors]]\nname = "none"\n\n[[correctors]]\nname = "finetune"\n',
                           extra_top="")
    text = spec_path.read_text().replace("seeds = [0]", "seeds = [0, 1]")
    spec_path.write_text(text)
    result = run_benchmark(load_spec(spec_path), results_dir=tmp_path / "a", show_progress=False)
    assert (result.ran, result.failed) == (4, [])
    stored = sorted((tmp_path / "a" / "cache" / "evaluations").glob("*.json"))
    assert len(stored) == 3  # none once, finetune per seed
    frame = load_rows(tmp_path / "a")
    none = frame[(frame["corrector"] == "none") & (frame["metric"] == "accuracy")]
    by_seed = [none[none["seed"] == s].set_index(["suite", "condition"])["value"].sort_index() for s in (0, 1)]
    assert by_seed[0].equals(by_seed[1]) and len(by_seed[0]) > 0
    # each seed's samples file holds the same per-image results
    samples = sorted((tmp_path / "a" / "samples").glob("*none*.json"))
    docs = [json.loads(p.read_text())["correct"] for p in samples]
    assert len(docs) == 2 and docs[0] == docs[1]
    # the same grid in a fresh folder, one seed at a time, evaluates each cell on its own: same rows
    single = run_benchmark(load_spec(spec_path), results_dir=tmp_path / "b", show_progress=False,
                           only={"seed": {"1"}})
    assert single.ran == 2
    ours = [r for r in comparable(tmp_path / "a") if "1" in r]
    assert set(comparable(tmp_path / "b")) <= set(ours)


def test_killed_run_resumes_to_the_rows_of_an_uninterrupted_run(tmp_path):
    spec_path = write_spec(tmp_path)
    env = {**os.environ, "DEEPPATCH_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "deeppatch.cli", "bench", str(spec_path), "--no-report"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--results", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list((killed / "rows").glob("*.jsonl"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((killed / "rows").glob("*.jsonl")))
    assert 2 <= done_before < 4, "the kill should land mid-grid"
    assert subprocess.run(cmd + ["--results", str(killed)], env=env, capture_output=True).returncode == 0
    clean = tmp_path / "clean"
    assert subprocess.run(cmd + ["--results", str(clean)], env=env, capture_output=True).returncode == 0
    assert len(list((killed / "rows").glob("*.jsonl"))) == 4
    assert comparable(killed) == comparable(clean)


PLUGIN = '''
from dataclasses import dataclass, field

import torch

from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.results import SuiteRow


@dataclass
class Params:
    scale: float = field(default=0.5, metadata={"help": "multiplies the classifier", "min": 0.0})


class Shrink(Corrector):
    """A throw-away corrector: scales the last layer's weights."""

    name = "shrink"
    Params = Params

    def repair(self, task: RepairTask) -> Repaired:
        model = task.copy_model()
        with torch.no_grad():
            model.fc.weight.mul_(self.params.scale)
        return Repaired(model, diagnostics=[SuiteRow("diagnostics", "scale", self.params.scale, 1, metric="scale")])


class Broken(Corrector):
    """Always fails."""

    name = "broken"

    def repair(self, task: RepairTask) -> Repaired:
        raise RuntimeError("this corrector is broken on purpose")
'''


def test_plugin_corrector_runs_through_the_harness_and_failures_are_counted(tmp_path, capsys):
    plugins = tmp_path / "my_baselines"
    plugins.mkdir()
    (plugins / "shrink.py").write_text(textwrap.dedent(PLUGIN))
    correctors = '[[correctors]]\nname = "shrink"\ngrid = { scale = [0.5, 2.0] }\n\n[[correctors]]\nname = "broken"\n'
    spec_path = write_spec(tmp_path, correctors, extra_top='plugin_dirs = ["my_baselines"]')
    code = main(["bench", str(spec_path), "--results", str(tmp_path / "r"), "--report-dir", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 1 and "1 failed" in out and "broken on purpose" in out
    frame = load_rows(tmp_path / "r")
    assert set(frame.corrector) == {"shrink[scale=0.5]", "shrink[scale=2.0]"}
    assert set(frame[frame.metric == "scale"].value) == {0.5, 2.0}
    failure = json.loads(next((tmp_path / "r" / "failures").glob("*.json")).read_text())
    assert "RuntimeError: this corrector is broken on purpose" in failure["error"]
    assert (tmp_path / "rep" / "index.html").is_file()


def test_only_and_dry_run(tmp_path, capsys):
    spec_path = write_spec(tmp_path)
    assert main(["bench", str(spec_path), "--results", str(tmp_path / "r"), "--dry-run",
                 "--only", "corrector=deeppatch"]) == 0
    out = capsys.readouterr().out
    assert "2 cells" in out and out.count("to run") == 2
    assert main(["bench", str(spec_path), "--only", "colour=red"]) == 2


def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    spec_path = write_spec(tmp_path, correctors='[[correctors]]\nname = "none"\n\n[[correctors]]\nname = "finetune"\n')
    result = run_benchmark(load_spec(spec_path), launcher="submitit", launcher_options={"cluster": "local"},
                           results_dir=tmp_path / "r", show_progress=False)
    assert result.ran == 2 and result.failed == []
    frame = load_rows(tmp_path / "r")
    assert set(frame.corrector) == {"none", "finetune"}
    assert list((tmp_path / "r" / "submitit").glob("*_result.pkl"))
