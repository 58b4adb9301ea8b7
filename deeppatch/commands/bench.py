"""`deeppatch bench SPEC`: run a benchmark grid and build its report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deeppatch.errors import DeepPatchError
from deeppatch.harness.bench import override_seeds, parse_only, run_benchmark
from deeppatch.harness.spec import load_spec
from deeppatch.reporting.build import build_report_if_changed


def check_separate_roots(results: Path, report: Path) -> None:
    """The results folder and the report folder must differ and not hold one another."""
    a, b = results.resolve(), report.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise DeepPatchError(f"the results folder {str(results)!r} and the report folder {str(report)!r} must be "
                             "separate folders (neither inside the other)")


def cmd_bench(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    override_seeds(spec, args.seeds)
    options = {k: v for k, v in {"cluster": args.cluster, "partition": args.partition,
                                 "gpus_per_task": args.gpus_per_task, "time_limit_min": args.time_limit,
                                 "array_parallelism": args.array_parallelism, "cpus_per_task": args.cpus_per_task
                                 }.items() if v is not None}
    results, report_dir = Path(args.results or spec.results_dir), Path(args.report_dir or spec.report_dir)
    if not args.no_report:
        check_separate_roots(results, report_dir)
    result = run_benchmark(spec, only=parse_only(args.only), device=args.device, launcher=args.launcher,
                           launcher_options=options, results_dir=results, dry_run=args.dry_run,
                           rerun=parse_only(args.rerun, "--rerun") if args.rerun else None)
    if args.dry_run:
        return 0
    report, report_s, rebuilt = None, None, True
    if not args.no_report:
        t0 = time.perf_counter()
        report, rebuilt = build_report_if_changed(results, report_dir)
        report_s = time.perf_counter() - t0
    print(result.summary(spec.name))
    for line in result.stage_lines(report_s):
        print(line)
    for line in result.failed:
        print(f"  FAILED {line}")
    if report:
        state = "" if rebuilt else " (up to date: same rows and reporting code, not rebuilt)"
        print(f"report: {report.get('markdown')} and {report.get('html')}{state}")
    return min(len(result.failed), 100)  # the exit code counts the failed cells


def register(sub: argparse._SubParsersAction, add_common) -> None:
    p = sub.add_parser("bench", help="run a benchmark spec (benchmarks/*.toml) and build its report",
                       description="Expand the spec's grid (data sets x models x correctors x seeds), run every "
                                   "cell that is not done yet, and write the report. The exit status is the "
                                   "number of failed cells.")
    p.add_argument("spec", help="benchmark spec (TOML), e.g. benchmarks/quick.toml")
    p.add_argument("--only", default=None, help="run a subset: corrector=NAME,model=NAME,dataset=NAME,seed=N")
    p.add_argument("--rerun", default=None,
                   help="run these cells again although they are done (same syntax as --only), e.g. corrector=NAME")
    p.add_argument("--seeds", type=int, default=None, help="run N seeds (the spec's first seed and the next N-1)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: the spec's)")
    p.add_argument("--launcher", choices=("local", "submitit"), default="local")
    p.add_argument("--cluster", default=None, help="submitit cluster: slurm, local, debug (default: auto)")
    p.add_argument("--partition", default=None, help="Slurm partition")
    p.add_argument("--gpus-per-task", "--gpus_per_task", dest="gpus_per_task", type=int, default=None)
    p.add_argument("--cpus-per-task", "--cpus_per_task", dest="cpus_per_task", type=int, default=None)
    p.add_argument("--time-limit", "--time_limit", dest="time_limit", type=int, default=None,
                   help="minutes per cell job")
    p.add_argument("--array-parallelism", "--array_parallelism", dest="array_parallelism", type=int, default=None)
    p.add_argument("--results", default=None, help="results folder (default: the spec's, results/<name>)")
    p.add_argument("--report-dir", "--report_dir", dest="report_dir", default=None,
                   help="report folder (default: reports/<name>)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print the grid and what is cached, run nothing")
    p.add_argument("--no-report", dest="no_report", action="store_true", help="skip building the report")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_bench)
