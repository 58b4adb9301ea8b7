"""Shared pieces of the speed suite (`tox -e perf`): options, side-by-side timing, peak memory.

Each benchmark times our path and the reference path in the same test, alternating them round by
round (the reference runs in pytest-benchmark's untimed `setup`, ours is the timed target), so a
load spike from another process hits both. Ratios go to `benchmark.extra_info` and to a summary
printed at the end. Nothing here asserts on time.

Peak memory: torch's CPU allocations are invisible to tracemalloc, so on the CPU each path runs
in a fresh Python process that builds its inputs and runs the path once (warm-up: lazy imports,
allocator and thread pools; malloc_trim then returns the freed pages), resets the kernel's peak-RSS
mark (/proc/self/clear_refs, Linux; else it falls back to ru_maxrss deltas, which the inputs' own
construction can mask), runs the path again and reads the peak (VmHWM): peak minus the RSS before
that run is the path's own memory. A fresh process keeps one path's allocator caches from
inflating the other's. On CUDA torch.cuda.max_memory_allocated around the call is exact and needs
no subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

SUMMARY_KEY = pytest.StashKey[list]()
# test modules import the suite's shared inputs (perf_data.py) by name; --import-mode=importlib
# does not put this folder on sys.path by itself
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

_CHILD = r"""
import ctypes, gc, importlib.util, json, os, resource, sys
import torch


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))  # the suite's shared perf_data module
spec = importlib.util.spec_from_file_location("perf_child", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
run = getattr(mod, sys.argv[2])(**json.loads(sys.argv[3]))
run()  # warm-up: lazy imports, allocator and thread-pool set-up are not the path's working memory
gc.collect()
try:  # hand the warm-up's freed heap pages back, so they neither count as "before" nor hide the peak
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except (OSError, AttributeError):
    pass
try:  # Linux >= 4.0: reset the peak RSS, so the inputs' own construction does not mask the run's peak
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, method = status("VmRSS"), "VmHWM after a clear_refs reset"
except OSError:
    before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
run()
after = status("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_RSS " + json.dumps({"before_kib": before, "after_kib": after, "method": method}))
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("deeppatch perf")
    group.addoption("--perf-scale", type=float, default=1.0,
                    help="multiply every benchmark's work size (0.25 for a smoke run)")
    group.addoption("--perf-device", default="cpu", choices=("cpu", "cuda", "auto"),
                    help="device of the model benchmarks (the perturbation reference path is always CPU/PIL)")
    group.addoption("--perf-rounds", type=int, default=None, help="rounds per benchmark (default: each one's own)")
    group.addoption("--perf-no-memory", action="store_true", help="skip the peak-memory measurements")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SUMMARY_KEY] = []


@dataclass
class Perf:
    """What the benchmarks share: sizes, device, rounds, and where results are collected."""

    scale: float
    device: torch.device
    rounds: int | None
    memory: bool
    summary: list[dict[str, Any]] = field(default_factory=list)

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def size(self, n: int, minimum: int = 1) -> int:
        return max(minimum, int(round(n * self.scale)))

    def n_rounds(self, default: int) -> int:
        return max(1, self.rounds if self.rounds is not None else default)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def compare(self, benchmark, name: str, ours: Callable[[], Any], reference: Callable[[], Any], *,
                rounds: int = 1, work: float | None = None, unit: str = "image", **info: Any) -> dict[str, Any]:
        """Time `ours` (pytest-benchmark's target) and `reference` (in its untimed setup), alternating.

        Returns and records min seconds of each, the speedup (reference / ours) and, with `work`
        units per call, the throughput of each.
        """
        ours_s: list[float] = []
        ref_s: list[float] = []

        def run_reference() -> None:
            self.sync()
            t0 = time.perf_counter()
            reference()
            self.sync()
            ref_s.append(time.perf_counter() - t0)

        def run_ours() -> None:
            t0 = time.perf_counter()
            ours()
            self.sync()
            ours_s.append(time.perf_counter() - t0)

        benchmark.pedantic(run_ours, setup=run_reference, rounds=self.n_rounds(rounds), iterations=1)
        best_ours, best_ref = min(ours_s), min(ref_s)
        row: dict[str, Any] = {"name": name, "ours_s": best_ours, "reference_s": best_ref,
                               "speedup": best_ref / best_ours, "rounds": len(ours_s), "threads": self.threads,
                               "device": str(self.device), **info}
        if work is not None:
            row.update({f"ours_{unit}s_per_s": work / best_ours, f"reference_{unit}s_per_s": work / best_ref})
        self.record(benchmark, row)
        return row

    def record(self, benchmark, row: dict[str, Any]) -> None:
        benchmark.extra_info.update({k: _plain(v) for k, v in row.items()})
        self.summary.append(row)

    def peak_memory(self, test_file: str, factory: str, **kwargs: Any) -> dict[str, float] | None:
        """Extra peak memory (MiB) of the zero-argument callable `factory(**kwargs)` builds.

        CPU: a fresh process, ru_maxrss after minus before the call. CUDA: max_memory_allocated.
        None when memory measurement is switched off.
        """
        if not self.memory:
            return None
        if self.device.type == "cuda":
            module = _load(test_file)
            run = getattr(module, factory)(**kwargs)
            run()  # warm-up, as on the CPU
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            run()
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return {"delta_mib": (peak - base) / 2**20, "peak_mib": peak / 2**20, "kind": "cuda allocated"}
        env = {**os.environ, "DEEPPATCH_PROGRESS": "0"}
        proc = subprocess.run([sys.executable, "-c", _CHILD, test_file, factory, json.dumps(kwargs)],
                              capture_output=True, text=True, env=env, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"memory probe {factory} failed:\n{proc.stderr[-2000:]}")
        kib = json.loads(lines[-1].split(" ", 1)[1])
        return {"delta_mib": (kib["after_kib"] - kib["before_kib"]) / 1024, "peak_mib": kib["after_kib"] / 1024,
                "kind": f"cpu rss ({kib['method']})"}


def _load(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"perf_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="session")
def perf(pytestconfig: pytest.Config) -> Perf:
    name = pytestconfig.getoption("--perf-device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        pytest.exit("--perf-device cuda asked for, but no CUDA GPU is available", returncode=2)
    os.environ.setdefault("DEEPPATCH_PROGRESS", "0")
    return Perf(scale=pytestconfig.getoption("--perf-scale"), device=torch.device(name),
                rounds=pytestconfig.getoption("--perf-rounds"), memory=not pytestconfig.getoption("--perf-no-memory"),
                summary=pytestconfig.stash[SUMMARY_KEY])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(SUMMARY_KEY, [])
    if not rows:
        return
    tr = terminalreporter
    tr.section("DeepPatch perf summary (ours vs reference, min over rounds)")
    tr.write_line(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    for row in rows:
        parts = [f"{row['name']}: ours {row['ours_s']:.3f} s, reference {row['reference_s']:.3f} s, "
                 f"speedup {row['speedup']:.2f}x"]
        for key in ("floor_s", "ours_over_floor", "target"):
            if key in row:
                value = row[key]
                parts.append(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}")
        for key in ("ours_memory", "reference_memory"):
            if row.get(key):
                parts.append(f"{key} +{row[key]['delta_mib']:.0f} MiB")
        tr.write_line("; ".join(parts))
        if row.get("note"):
            tr.write_line(f"    {row['note']}")
