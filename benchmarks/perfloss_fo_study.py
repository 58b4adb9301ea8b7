"""How well does perfloss-fo (first-order) rank filters compared with exact perfloss?

On Fashion-MNIST with the quick benchmark's default model (smallcnn), trained from scratch here or
read from --checkpoint, it computes both rankings on the same fixed perturbed val set (the paper's
six blur sigmas) and reports, per conv layer, the Spearman rank correlation of the scores and the
overlap of the filters DeepPatch would patch (the first floor(0.25 C) of each ranking), plus the
wall time of each method. With --repair it also runs DeepPatch (small budgets) with each ranking
and reports test accuracy; that part trains two patches and is slow.

    python benchmarks/perfloss_fo_study.py --epochs 4 --out fo_study.json
    python benchmarks/perfloss_fo_study.py --checkpoint output/fashion_mnist/smallcnn/model_pretrain.pt --repair
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

from deeppatch.data import load_splits
from deeppatch.device import resolve_device
from deeppatch.errors import DeepPatchError
from deeppatch.models import create_model
from deeppatch.models.checkpoint import load_model, save_model
from deeppatch.perturbations import get_perturbation
from deeppatch.pretrain import PretrainConfig, train_from_scratch
from deeppatch.seeding import seed_everything
from deeppatch.technique.blame import blame
from deeppatch.technique.blame_approx import perfloss_fo

DATASET = "fashion_mnist"
ARCH = "smallcnn"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a model checkpoint of smallcnn on fashion_mnist (default: train one)")
    p.add_argument("--save-checkpoint", help="where to save the model trained here, for reuse")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--epochs", type=int, default=4, help="from-scratch training epochs")
    p.add_argument("--train-subset", type=int, default=None, help="train on a seeded subset (faster)")
    p.add_argument("--ratio", type=float, default=0.25, help="patched fraction for the overlap measure")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--repair", action="store_true", help="also run DeepPatch with each ranking (slow)")
    p.add_argument("--crt-epoch", type=int, default=2, help="--repair: patch training epochs")
    p.add_argument("--repair-train-subset", type=int, default=10000, help="--repair: training images")
    p.add_argument("--n-eval", type=int, default=2000, help="--repair: test images evaluated")
    return p.parse_args(argv)


def obtain_model(args: argparse.Namespace, splits, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    if args.checkpoint:
        loaded = load_model(args.checkpoint, expect_arch=ARCH, expect_dataset=DATASET, device=device)
        return loaded.model.eval(), {"source": str(args.checkpoint)}
    seed_everything(args.seed)
    model = create_model(ARCH, splits.info)
    cfg = PretrainConfig(model=ARCH, dataset=DATASET, epochs=args.epochs, train_subset=args.train_subset,
                         seed=args.seed)
    summary = train_from_scratch(model, splits, cfg, device, None, args.epochs)
    if args.save_checkpoint:
        save_model(args.save_checkpoint, model, arch=ARCH, info=splits.info, meta={"stage": "perfloss_fo_study"})
    return model.eval(), {"source": "scratch", "epochs": args.epochs, "best_val": summary.get("best_score")}


def compare_rankings(exact, fo, ratio: float) -> dict[str, dict[str, float]]:
    """Per layer: Spearman rho of the scores and the overlap of the first floor(ratio C) filters."""
    exact_rank, fo_rank = exact.ranking(), fo.ranking()
    out = {}
    for layer, scores in exact.scores.items():
        rho = spearmanr(scores, fo.scores[layer]).statistic
        k = max(1, int(math.floor(len(scores) * ratio + 1e-9)))
        top = set(exact_rank[layer]["indices"][:k]) & set(fo_rank[layer]["indices"][:k])
        chance = k / len(scores)
        out[layer] = {"channels": len(scores), "spearman": float(rho), "k": k, "top_k_overlap": len(top) / k,
                      "top_k_overlap_by_chance": chance}
    return out


def repair_with(model, splits, family, ranking, args, device) -> dict[str, Any]:
    """DeepPatch with a given ranking at small budgets; test accuracy of the patched and switched model."""
    from deeppatch.corrector import Budget, RepairTask
    from deeppatch.data import stratified_subset
    from deeppatch.evaluation import perturbation_report
    from deeppatch.technique.deeppatch_corrector import DeepPatchParams, patch_model

    task = RepairTask(model=model, splits=splits, perturbation=family, device=device, seed=args.seed,
                      budget=Budget(args.crt_epoch, args.repair_train_subset, None), show_progress=False)
    switched, _ = patch_model(task, DeepPatchParams(epochs=args.crt_epoch, ratio=args.ratio), ranking)
    test = stratified_subset(splits.test, args.n_eval, args.seed)
    out = {}
    for mode in ("patched", "switch"):
        switched.configure(mode=mode)
        out[mode] = perturbation_report(switched, test, family, device=device, desc=mode)
    switched.configure(mode="switch")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        splits = load_splits(DATASET, args.data_dir)
        family = get_perturbation("blur")
        t0 = time.perf_counter()
        model, source = obtain_model(args, splits, device)
        source["seconds"] = time.perf_counter() - t0
        exact = blame(model, "perfloss", splits.val, family, seed=args.seed, device=device)
        fo = perfloss_fo(model, splits.val, family, seed=args.seed, device=device)
    except DeepPatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    layers = compare_rankings(exact, fo, args.ratio)
    result: dict[str, Any] = {
        "dataset": DATASET, "arch": ARCH, "model": source, "seed": args.seed, "threads": torch.get_num_threads(),
        "blame_images": exact.n_images, "base_accuracy": exact.base_accuracy,
        "seconds": {"perfloss": exact.seconds, "perfloss-fo": fo.seconds, "engine": exact.engine},
        "layers": layers,
    }
    if args.repair:
        result["repair"] = {name: repair_with(model, splits, family, res.ranking(), args, device)
                            for name, res in (("perfloss", exact), ("perfloss-fo", fo))}
    print(f"{ARCH} on {DATASET}: base accuracy on blurred val {exact.base_accuracy:.2f} % ({exact.n_images} images)")
    print(f"perfloss {exact.seconds:.1f} s ({exact.engine}), perfloss-fo {fo.seconds:.1f} s")
    print(f"{'layer':<14}{'C':>4}{'spearman':>10}{'top-k overlap':>15}{'chance':>8}")
    for layer, r in layers.items():
        print(f"{layer:<14}{r['channels']:>4}{r['spearman']:>10.3f}{r['top_k_overlap']:>15.2f}"
              f"{r['top_k_overlap_by_chance']:>8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
