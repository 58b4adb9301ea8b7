"""`deeppatch assess | correct | evaluate`: the maintenance stages of the original README, with its flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deeppatch.corrector import checkpoint_restorers, parse_params
from deeppatch.data import get_dataset_source, stratified_subset
from deeppatch.device import resolve_device
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.evaluation import perturbation_report
from deeppatch.models import get_entry
from deeppatch.models.checkpoint import load_model
from deeppatch.perturbations import get_perturbation
from deeppatch.stages import (
    StageContext,
    deeppatch_table,
    gate_cost,
    open_context,
    patch_tag,
    run_assess,
    run_correct_corrector,
    run_correct_patch,
)
from deeppatch.storage import atomic_write_json
from deeppatch.suites import SUITES, SuiteContext, get_suite
from deeppatch.switch_interface import is_switched
from deeppatch.technique.deeppatch_corrector import DeepPatchParams
from deeppatch.technique.diagnostics import routing_on_family, validation_diagnostics
from deeppatch.technique.gating import SwitchedCorrector, path_rows
from deeppatch.technique.switch import SwitchedModel
from deeppatch.versions import environment_versions

FS_METHODS = ("perfloss", "featswap", "ratioestim", "perfloss-fo")


def _context(args: argparse.Namespace, checkpoint: str | None = None):
    if not args.model.startswith("robustbench:"):
        get_entry(args.model)

    get_dataset_source(args.dataset)
    for flag, value in (("-b/--batch_size", args.batch_size), ("--lr", args.lr), ("-e/--max_epoch", args.max_epoch)):
        if value is not None and value <= 0:
            raise DeepPatchError(f"{flag} must be positive, got {value}")
    return open_context(model=args.model, dataset=args.dataset, data_dir=args.data_dir, output_dir=args.output_dir,
                        device=resolve_device(args.device, args.gpu), seed=args.seed, noise_type=args.noise_type,
                        download=args.download, val_fraction=args.val_fraction, checkpoint=checkpoint)


def cmd_assess(args: argparse.Namespace) -> int:
    ctx = _context(args, args.checkpoint)
    if args.blame_batch_size <= 0:
        raise DeepPatchError(f"--blame_batch_size must be positive, got {args.blame_batch_size}")
    out = run_assess(ctx, args.fs_method, engine=args.blame_engine, batch_size=args.blame_batch_size,
                     quantize=not args.float_blame)
    print(f"assessed {out['filters']} filters with {out['method']} ({out['engine']} engine) on {out['n_images']} "
          f"perturbed val images in {out['seconds']:.1f} s; base accuracy {out['base_accuracy']:.2f} %")
    print(f"ranking: {out['path']}")
    return 0


def _deeppatch_params(args: argparse.Namespace):
    values: dict[str, Any] = {"unit": args.crt_type, "ratio": args.susp_ratio, "side": args.susp_side,
                              "grouped": args.grouped, "layers": args.layers, "init": args.patch_init,
                              "gate": args.gate, "routing": args.routing, "gate_epochs": args.gate_epochs}
    epochs = args.crt_epoch if args.crt_epoch is not None else args.max_epoch
    if epochs is not None:
        values["epochs"] = epochs
    if args.lr is not None:
        values["lr"] = args.lr
    if args.batch_size is not None:
        values["batch_size"] = args.batch_size
    values["momentum"], values["weight_decay"] = args.momentum, args.weight_decay
    try:
        return parse_params(DeepPatchParams, values, "deeppatch correct")
    except DeepPatchError as exc:
        raise DeepPatchError(flag_names(str(exc))) from None


# DeepPatch's parameter names -> the flags of the original README that set them
PARAM_FLAGS = {"unit": "--crt_type", "ratio": "--susp_ratio", "side": "--susp_side", "grouped": "--grouped",
               "layers": "--layers", "init": "--patch_init", "gate": "--gate", "routing": "--routing",
               "gate_epochs": "--gate_epochs", "epochs": "--crt_epoch", "lr": "--lr", "batch_size": "-b/--batch_size",
               "momentum": "--momentum", "weight_decay": "--weight_decay"}


def flag_names(message: str) -> str:
    """Name the flag the user typed instead of the parameter it sets ("parameter 'ratio'" -> "--susp_ratio")."""
    for param, flag in PARAM_FLAGS.items():
        message = message.replace(f"parameter {param!r}", flag)
    return message


def cmd_correct(args: argparse.Namespace) -> int:
    args.crt_method = args.crt_method or "patch"
    if args.crt_method == "patch":
        args.layers = [p for p in args.layers.split(",") if p]
        params = _deeppatch_params(args)
        ctx = _context(args, args.checkpoint)
        for out in run_correct_patch(ctx, params, args.fs_method, train_subset=args.train_subset, resume=args.resume):
            t = out["training"]
            print(f"{out['tag']}: {out['patched_layers']} convs patched, kept epoch {t['best_epoch']} "
                  f"({t['kept']}, val {t['best_score'] if t['best_score'] is not None else float('nan'):.2f} % vs "
                  f"{t['start_score'] if t['start_score'] is not None else float('nan'):.2f} % before) in "
                  f"{out['wall_time_s']:.0f} s")
            print(f"  checkpoint: {out['checkpoint']}")
        return 0
    ctx = _context(args, args.checkpoint)
    params: dict[str, Any] = {}
    for key, value in (("epochs", args.crt_epoch if args.crt_epoch is not None else args.max_epoch), ("lr", args.lr)):
        if value is not None:
            params[key] = value
    try:
        out = run_correct_corrector(ctx, args.crt_method, params, epochs=None, train_subset=args.train_subset,
                                    batch_size=args.batch_size, resume=args.resume)
    except DeepPatchError as exc:
        raise DeepPatchError(flag_names(str(exc))) from None
    print(f"{args.crt_method}: repaired in {out['cost']['wall_time_s']:.0f} s; checkpoint: {out['checkpoint']}")
    return 0


def _print_table(table: dict[str, dict[str, float]]) -> None:
    conditions = list(next(iter(table.values())))
    width = max(len(k) for k in table) + 2
    print(" " * width + "".join(f"{c:>11s}" for c in conditions))
    for variant, row in table.items():
        print(f"{variant:<{width}s}" + "".join(f"{row[c]:11.2f}" for c in conditions))


def _suite_names(text: str) -> list[str]:
    """--suite a,b: checked before any evaluation starts (a typo must not cost a minute of work)."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for name in names:
        if name not in SUITES:
            raise unknown_choice("suite", name, SUITES, where="--suite")
    return names


def _evaluation_targets(args: argparse.Namespace, ctx: StageContext) -> list[Path | None]:
    """The checkpoint of every model to evaluate; None stands for the model under maintenance."""
    if args.checkpoint:
        return [Path(args.checkpoint)]
    method = args.crt_method or "patch"
    if method == "patch":
        ratios = (0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95) if args.fs_method == "ratioestim" \
            else (args.susp_ratio,)
        paths = [ctx.folder / f"model_{patch_tag(args.fs_method, args.crt_type, args.susp_side, r)}.pt"
                 for r in ratios]
    else:
        paths = [ctx.folder / f"model_{method}.pt"]
    missing = [p for p in paths if not p.is_file()]
    if missing and args.crt_method is None and len(missing) == len(paths):
        print(f"no repaired model at {missing[0]}: evaluating the model under maintenance ({ctx.base.path})")
        return [None]
    if missing:
        raise DeepPatchError(f"no repaired model at {missing[0]}; run the correct stage first with the same flags: "
                             f"deeppatch correct {ctx.flags} -c {method}")
    return list(paths)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.n_eval is not None and args.n_eval <= 0:
        raise DeepPatchError(f"--n-eval must be positive, got {args.n_eval}")
    suites = _suite_names(args.suite)
    if args.routing_family:
        get_perturbation(args.routing_family)
    ctx = _context(args, args.base_checkpoint)
    targets = _evaluation_targets(args, ctx)
    n_test = len(ctx.splits.test)
    if args.n_eval is not None and args.n_eval > n_test:
        print(f"warning: --n-eval {args.n_eval} is larger than the test split; using all {n_test} test images",
              file=sys.stderr)
    test = stratified_subset(ctx.splits.test, args.n_eval, ctx.seed).to(ctx.device)
    batch = args.batch_size or 256
    routings = ["per-sample", "batch-majority"] if args.routing == "all" else [args.routing]
    gates = ["reference", "learned"] if args.gate == "all" else [args.gate]
    report: dict[str, Any] = {"dataset": ctx.dataset, "model": ctx.model_name, "n_test": len(test),
                              "n_eval_asked": args.n_eval, "batch_size": batch, "versions": environment_versions(),
                              "results": {}}
    for path in targets:
        if path is None:
            model, kind, name = ctx.base.model, "model under maintenance", "maintenance"
        else:
            loaded = load_model(path, expect_arch=ctx.model_name, expect_info=ctx.splits.info, device=ctx.device,
                                restorers={**checkpoint_restorers(), **SwitchedCorrector.restorers()})
            model, name = loaded.model, path.stem.removeprefix("model_")
            repaired = loaded.kind != "plain" or str(loaded.record.get("meta", {}).get("stage", "")) == "correct"
            kind = f"repaired ({loaded.kind})" if repaired else "plain model"
        entry: dict[str, Any] = {"checkpoint": str(path or ctx.base.path), "kind": kind}
        if isinstance(model, SwitchedModel):
            if args.fs_method == "ratioestim":
                model.configure(mode="patched")
                table = deeppatch_table(model, ctx.base.model, test, ctx.family, ctx.device, batch, [], [])
            else:
                table = deeppatch_table(model, ctx.base.model, test, ctx.family, ctx.device, batch, routings, gates)
                expanded = ctx.family.expand(test, device=ctx.device)
                entry["routing_test"] = [r.to_dict() for r in validation_diagnostics(
                    model, test, expanded, list(ctx.family.conditions), ctx.device, split_name="test")]
                entry["cost"] = gate_cost(model, test, ctx.device, batch)
        elif path is None:
            table = {"model under maintenance": perturbation_report(model, test, ctx.family, batch_size=batch,
                                                                    device=ctx.device, desc="original")}
        else:
            table = {"original": perturbation_report(ctx.base.model, test, ctx.family, batch_size=batch,
                                                     device=ctx.device, desc="original"),
                     f"{name} [{kind}]": perturbation_report(model, test, ctx.family, batch_size=batch,
                                                             device=ctx.device, desc=name)}
        entry["table"] = table
        print(f"== {name}: {kind} ({len(test)} test images)")
        _print_table(table)
        if "routing_test" in entry:
            print("routing on test (per-sample): " + ", ".join(
                f"{r['condition']} {r['value']:.3f}" for r in entry["routing_test"]))
        if args.routing_family and is_switched(model):
            family = get_perturbation(args.routing_family)
            if isinstance(model, SwitchedModel):
                unseen = routing_on_family(model, test, family, ctx.device, ctx.seed)
                entry["routing_unseen"] = [r.to_dict() for r in unseen]
            paths = path_rows(model, test, family, ctx.device, batch, seed=ctx.seed)
            entry["routing_paths"] = [r.to_dict() for r in paths]
            print(f"{args.routing_family} (per condition: switched / original / repaired accuracy, % routed to the "
                  "repair):")
            by = {r.condition: r.value for r in paths}
            for cond in ["clean", *family.conditions]:
                key = f"test/paths/{cond}"
                print(f"  {cond:28s} {by[key + '/switched']:6.2f} / {by[key + '/original']:6.2f} / "
                      f"{by[key + '/repaired']:6.2f}   {by[key + '/routed to the repair']:5.1f} %")
        if suites:
            entry["suites"] = _run_suites(args, suites, model, ctx, test, compare=path is not None)
        report["results"][path.stem if path is not None else "maintenance"] = entry
    stem = ("maintenance" if targets[0] is None else
            f"{args.crt_method or 'patch'}_{args.fs_method}" if not args.checkpoint else Path(args.checkpoint).stem)
    out = atomic_write_json(report, ctx.folder / f"eval_{stem}.json")
    print(f"report: {out}")
    return 0


def _run_suites(args: argparse.Namespace, suites: list[str], model, ctx, test, compare: bool) -> list[dict[str, Any]]:
    rows = []
    suite_ctx = SuiteContext(ctx.splits.info, test, ctx.device, seed=ctx.seed, batch_size=args.batch_size or 256,
                             cache_dir=Path(args.output_dir) / "cache" / ctx.dataset,
                             data_dir=Path(args.data_dir) if args.data_dir else None)
    models = (("original", ctx.base.model), ("evaluated", model)) if compare else (("model under maintenance", model),)
    for name in suites:
        for which, m in models:
            for row in get_suite(name).evaluate(m, suite_ctx):
                rows.append({"model": which, **row.to_dict()})
                print(f"  [{which}] {row.suite} {row.condition}: {row.value:.4g} ({row.metric}, n={row.n})")
    return rows


def _identity_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--fs_method", "--fs-method", choices=FS_METHODS, default="perfloss",
                   help="blame method (ratioestim: the susp_ratio sweep)")
    p.add_argument("-c", "--crt_method", "--crt-method", default=None,
                   help="patch (DeepPatch, the default) or finetune, or any corrector name (see: deeppatch list "
                        "correctors); evaluate without -c and without a repaired model evaluates the model under "
                        "maintenance")
    p.add_argument("--crt_type", "--crt-type", choices=("crtunit", "replace"), default="replace",
                   help="patch unit: replace (DP) or crtunit (DeepCorrect-style)")
    p.add_argument("--susp_ratio", "--susp-ratio", type=float, default=0.25, help="fraction of filters patched")
    p.add_argument("--susp_side", "--susp-side", choices=("front", "rear", "random"), default="front",
                   help="patch the most blamed (front), least blamed (rear) or random filters")


def register(sub: argparse._SubParsersAction, add_common) -> None:
    p = sub.add_parser("assess", help="blame filters (perfloss, featswap)",
                       description="Rank every conv filter by blame on perturbed validation data.")
    add_common(p)
    p.add_argument("-f", "--fs_method", "--fs-method", choices=FS_METHODS, required=True, help="blame method")
    p.add_argument("--checkpoint", default=None, help="model under maintenance (default: pretrain's checkpoint)")
    p.add_argument("--blame_engine", "--blame-engine", choices=("auto", "suffix", "batched", "naive"), default="auto")
    p.add_argument("--blame_batch_size", "--blame-batch-size", type=int, default=500)
    p.add_argument("--float_blame", "--float-blame", action="store_true",
                   help="blame on float perturbed images (default: rounded to 8 bits, as the reference's are)")
    p.set_defaults(func=cmd_assess)

    p = sub.add_parser("correct", help="patch the blamed filters and train the patch (or finetune)",
                       description="Add patch units on the blamed filters, train them on clean + perturbed data, "
                                   "calibrate the runtime switch; or run another corrector with -c.")
    add_common(p)
    _identity_flags(p)
    p.add_argument("--crt_epoch", "--crt-epoch", type=int, default=None, help="training epochs (default 20)")
    p.add_argument("--gate", choices=("reference", "learned"), default="learned",
                   help="default indicator stored in the checkpoint (both are calibrated)")
    p.add_argument("--routing", choices=("per-sample", "batch-majority"), default="per-sample")
    p.add_argument("--gate_epochs", "--gate-epochs", type=int, default=10, help="learned gate epochs")
    p.add_argument("--grouped", choices=("skip", "depthwise"), default="skip", help="grouped convs")
    p.add_argument("--layers", default="*", help="comma-separated fnmatch patterns of conv names to patch")
    p.add_argument("--patch_init", "--patch-init", choices=("fresh", "copy"), default="fresh")
    p.add_argument("--train_subset", "--train-subset", type=int, default=None,
                   help="train on a seeded subset of this many images (quick runs)")
    p.add_argument("--checkpoint", default=None, help="model under maintenance (default: pretrain's checkpoint)")
    p.set_defaults(func=cmd_correct)

    p = sub.add_parser("evaluate", help="evaluate a repaired model (routing modes, gates, suites)",
                       description="The paper's table (clean, each blur sigma, mean, union) for the original "
                                   "model, the patched model with the switch in each routing mode and gate, and "
                                   "without it; routing accuracy and AUROC of the indicator; optional suites.")
    add_common(p)
    _identity_flags(p)
    p.add_argument("--routing", choices=("all", "per-sample", "batch-majority"), default="all")
    p.add_argument("--gate", choices=("all", "reference", "learned"), default="all")
    p.add_argument("--suite", default="", help="extra suites, comma-separated: blur,corruptions,attacks,spatial")
    p.add_argument("--routing_family", "--routing-family", default=None,
                   help="also report, per condition of this family (e.g. corruptions, spatial), the switched model's "
                        "accuracy next to each path alone and the share routed to the repair")
    p.add_argument("--n-eval", "--n_eval", dest="n_eval", type=int, default=None,
                   help="evaluate on a stratified seeded subset of this many test images")
    p.add_argument("--checkpoint", default=None, help="repaired model to evaluate (default: from the flags)")
    p.add_argument("--base_checkpoint", "--base-checkpoint", default=None,
                   help="model under maintenance (default: pretrain's checkpoint)")
    p.set_defaults(func=cmd_evaluate)
