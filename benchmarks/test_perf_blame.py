"""Blame (perfloss) on resnet20: the suffix engine vs the naive loop, and vs the floor.

* reference: the naive engine, one full forward pass per filter (the reference implementation's
  loop);
* ours: the suffix engine (prefix once per batch, only the downstream layers per filter, many
  filters stacked per pass);
* floor: the least work any exact per-filter method must do: for every filter, the layers after its
  conv on every blame image. Measured, not estimated: the traced graph is run node by node on
  clean batches of 32, 64 and 128 images, each node's best time per image is kept, and
  floor = sum over convs l of C_l x N x (sum of the per-image times of the nodes downstream of l).
  The prefix (run once per batch by our engine) and the stacking copies are not in the floor.
* also timed: perfloss-fo (one backward pass per batch, all filters at once), for scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.fx
from perf_data import smooth_images, zoo_model

from deeppatch.data import TensorSplit, to_float
from deeppatch.perturbations import get_perturbation
from deeppatch.seeding import make_generator
from deeppatch.technique.blame import blame, conv_layers, perfloss_data
from deeppatch.technique.blame_approx import perfloss_fo
from deeppatch.technique.tracing import SuffixPlan, trace

HERE = str(Path(__file__).resolve())
VAL_IMAGES = 64  # x 2 blur sigmas = 128 blame images at scale 1
SIGMAS = (1.0, 2.0)
MEMORY_LAYERS = ["conv1", "layer3.2.conv2"]  # the largest stacked activation and a late, narrow suffix


def blame_inputs(scale: float) -> tuple[torch.nn.Module, TensorSplit]:
    n = max(8, int(round(VAL_IMAGES * scale)))
    x = smooth_images(n, "blame-val")
    y = torch.randint(0, 10, (n,), generator=make_generator(0, "perf", "blame-labels"))
    return zoo_model(), TensorSplit(x, y)


def blame_run(engine: str, scale: float, layers: list[str] | None = None, device: str = "cpu"
              ) -> Callable[[], object]:
    """A zero-argument callable running one blame (the memory probe's factory too)."""
    model, val = blame_inputs(scale)
    family = get_perturbation("blur", sigmas=list(SIGMAS))
    dev = torch.device(device)
    if engine == "perfloss-fo":
        return lambda: perfloss_fo(model, val, family, seed=0, device=dev, layers=layers)
    return lambda: blame(model, "perfloss", val, family, seed=0, device=dev, engine=engine, layers=layers)


class _NodeTimer(torch.fx.Interpreter):
    """Runs a traced graph node by node and keeps each node's best time."""

    def __init__(self, gm: torch.fx.GraphModule, best: dict[str, float], per: int, sync: Callable[[], None]) -> None:
        super().__init__(gm)
        self.best, self.per, self.sync = best, per, sync

    def run_node(self, n: torch.fx.Node):
        self.sync()
        t0 = time.perf_counter()
        out = super().run_node(n)
        self.sync()
        dt = (time.perf_counter() - t0) / self.per
        self.best[n.name] = min(self.best.get(n.name, math.inf), dt)
        return out


def suffix_floor_seconds(model: torch.nn.Module, images: torch.Tensor, n_images: int, layers: list[str],
                         sync: Callable[[], None], repeats: int = 3) -> tuple[float, dict[str, float]]:
    """sum_l C_l x n_images x (best per-image time of the nodes downstream of conv l)."""
    gm = trace(model).eval()
    best: dict[str, float] = {}
    with torch.inference_mode():
        for per in (32, 64, 128):
            x = images[:per]
            if len(x) < per:
                x = x.repeat(-(-per // len(x)), 1, 1, 1)[:per]
            for _ in range(repeats):
                _NodeTimer(gm, best, per, sync).run(x)
    channels = dict((n, m.out_channels) for n, m in conv_layers(model))
    per_layer = {}
    for name in layers:
        plan = SuffixPlan.build(gm, name)
        per_layer[name] = channels[name] * n_images * sum(best.get(n.name, 0.0) for n in plan.suffix)
    return sum(per_layer.values()), per_layer


def suffix_pass_floor_seconds(model: torch.nn.Module, images: torch.Tensor, layers: list[str],
                              sync: Callable[[], None], repeats: int = 3) -> float:
    """sum_l C_l x (best time of one unedited pass of conv l's downstream layers over all blame images).

    The same floor taken whole: the layers after the masked conv run together, as they do for one
    filter (no per-node isolation); no prefix, no stacking of filter variants, no edit.
    """
    gm = trace(model).eval()
    channels = dict((n, m.out_channels) for n, m in conv_layers(model))
    total = 0.0
    with torch.inference_mode():
        for name in layers:
            plan = SuffixPlan.build(gm, name)
            act, frontier = plan.capture(images)
            best = math.inf
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                plan.run_suffix(act, frontier, 1)
                sync()
                best = min(best, time.perf_counter() - t0)
            total += channels[name] * best
    return total


def test_blame_suffix_vs_naive(benchmark, perf):
    model, val = blame_inputs(perf.scale)
    family = get_perturbation("blur", sigmas=list(SIGMAS))
    layers = [n for n, _ in conv_layers(model)]
    results: dict[str, object] = {}

    def ours():
        results["ours"] = blame(model, "perfloss", val, family, seed=0, device=perf.device, engine="suffix")

    def reference():
        results["reference"] = blame(model, "perfloss", val, family, seed=0, device=perf.device, engine="naive")

    n_images = len(val) * len(SIGMAS)
    filters = sum(m.out_channels for _, m in conv_layers(model))
    row = perf.compare(benchmark, "blame perfloss resnet20: suffix vs naive", ours, reference, rounds=1,
                       work=filters, unit="filter", images=n_images, filters=filters, target=">= 2x, <= 1.3x floor")
    assert results["ours"].scores == results["reference"].scores  # exact: same numbers, not a timing check

    x = (val.x.float() / 255).to(perf.device)
    floor, per_layer = suffix_floor_seconds(model.to(perf.device), x, n_images, layers, perf.sync)
    blame_x = perfloss_data(val, family, 0, perf.device).x  # the blame images themselves, one pass each
    pass_floor = suffix_pass_floor_seconds(model, to_float(blame_x), layers, perf.sync)
    t0 = time.perf_counter()
    fo = perfloss_fo(model, val, family, seed=0, device=perf.device)
    perf.sync()
    fo_s = time.perf_counter() - t0
    extra = {"floor_s": floor, "ours_over_floor": row["ours_s"] / floor, "pass_floor_s": pass_floor,
             "ours_over_pass_floor": row["ours_s"] / pass_floor, "reference_over_floor":
             row["reference_s"] / floor, "perfloss_fo_s": fo_s, "fo_filters": fo.details["filters"],
             "floor_method": "per-node best per-image time (batches 32/64/128) x C_l x N over downstream nodes"}
    if perf.memory:
        kwargs = {"scale": perf.scale, "layers": MEMORY_LAYERS, "device": str(perf.device)}
        extra["ours_memory"] = perf.peak_memory(HERE, "blame_run", engine="suffix", **kwargs)
        extra["reference_memory"] = perf.peak_memory(HERE, "blame_run", engine="naive", **kwargs)
        extra["fo_memory"] = perf.peak_memory(HERE, "blame_run", engine="perfloss-fo", **kwargs)
        extra["memory_layers"] = MEMORY_LAYERS
    row.update(extra)
    benchmark.extra_info.update({k: v for k, v in extra.items()})
    row["note"] = (f"floor {floor:.2f} s; ours/floor {row['ours_over_floor']:.2f}; pass floor {pass_floor:.2f} s; "
                   f"ours/pass floor {row['ours_over_pass_floor']:.2f}; perfloss-fo {fo_s:.2f} s "
                   f"for all {fo.details['filters']} filters")
