"""Patch training vs plain training of the same model (images/s), and where backward stops.

Both run the project's one training loop (`TrainLoop`: SGD, channels_last, bf16 autocast on CUDA)
for one epoch over the same clean batches of 128 (perturbing the batches costs the same for both
and is measured by test_perf_perturb). Reference: plain training, every parameter of resnet20
learning. Ours: DeepPatch patch training (a quarter of each selected conv's filters replaced,
only the patch units learn, the network in patched mode). `--layers` decides where backward can
stop: every parameter before the first patched conv is frozen and the images need no gradient, so
autograd records nothing before it. The evidence is counted from the graph of one step: the
convolution backward nodes reachable from the loss, and whether the stem conv's output needs a
gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from perf_data import smooth_images, zoo_model
from torch import nn

from deeppatch.data import TensorSplit, to_float
from deeppatch.seeding import make_generator
from deeppatch.technique.patching import PatchedNetwork, plan_patches
from deeppatch.training import OptimConfig, TrainLoop, autocast_context

HERE = str(Path(__file__).resolve())
IMAGES = 1024
BATCH = 128
LAYERS = {"all convs": ["*"], "stem excluded": ["layer*"], "layer3 only": ["layer3*"]}


def base_model() -> nn.Module:
    return zoo_model()


def training_model(which: str, layers: list[str]) -> tuple[nn.Module, list[nn.Parameter]]:
    """("plain", _): a copy of the base model, all parameters; ("patch", layers): patched, patch units only."""
    base = base_model()
    if which == "plain":
        model = copy.deepcopy(base)
        return model, list(model.parameters())
    plan = plan_patches(base, None, ratio=0.25, side="random", layers=tuple(layers), seed=0)
    network = PatchedNetwork(base, plan.specs, seed=0)
    params = network.freeze_all_but_patch()
    network.set_mode("patched")
    return network, params


def train_run(which: str, layers: list[str], n_images: int, device: str = "cpu") -> Callable[[], object]:
    """A zero-argument callable training one epoch (the memory probe's factory too)."""
    model, params = training_model(which, layers)
    g = make_generator(0, "perf", "train-labels")
    data = TensorSplit(smooth_images(n_images, "train"), torch.randint(0, 10, (n_images,), generator=g)).to(device)

    def batches(epoch: int):
        return data.batches(BATCH, device=device, shuffle=True, generator=make_generator(0, "perf", "order", epoch))

    def run():
        loop = TrainLoop(model=model, params=params, batches=batches, num_batches=data.num_batches(BATCH), epochs=1,
                         optim=OptimConfig(), device=torch.device(device), select="last", seed=0, show_progress=False)
        return loop.run()

    return run


def backward_reach(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, object]:
    """Convolution-backward nodes in one step's autograd graph, and whether the stem's output needs grad."""
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen: dict[str, bool] = {}
    def hook(_m, _i, out: torch.Tensor) -> None:
        seen.setdefault("stem", out.requires_grad)

    handle = stem.register_forward_hook(hook)
    try:
        model.train()
        with autocast_context(device):
            loss = F.cross_entropy(model(x), y)
    finally:
        handle.remove()
    nodes, stack, convs = set(), [loss.grad_fn], 0
    while stack:
        fn = stack.pop()
        if fn is None or fn in nodes:
            continue
        nodes.add(fn)
        convs += "Convolution" in type(fn).__name__
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    model.eval()
    return {"graph_nodes": len(nodes), "conv_backward_nodes": convs, "stem_output_requires_grad": seen.get("stem")}


@pytest.mark.parametrize("config", list(LAYERS))
def test_patch_training_vs_plain(benchmark, perf, config):
    layers = LAYERS[config]
    n = perf.size(IMAGES, 2 * BATCH)
    device = str(perf.device)
    ours, reference = train_run("patch", layers, n, device), train_run("plain", layers, n, device)
    row = perf.compare(benchmark, f"patch training ({config}) vs plain training", ours, reference, rounds=2,
                       work=n, unit="image", target="images/s; backward stops at the first patched conv")
    x = to_float(smooth_images(BATCH, "reach")).to(perf.device)
    y = torch.zeros(BATCH, dtype=torch.long, device=perf.device)
    patched, _ = training_model("patch", layers)
    plain, _ = training_model("plain", layers)
    extra = {"layers": layers, "patch_graph": backward_reach(patched.to(perf.device), x, y, perf.device),
             "plain_graph": backward_reach(plain.to(perf.device), x, y, perf.device),
             "patched_convs": len(patched.patched_convs())}
    if perf.memory:
        probe = {"layers": layers, "n_images": 2 * BATCH, "device": device}
        extra["ours_memory"] = perf.peak_memory(HERE, "train_run", which="patch", **probe)
        extra["reference_memory"] = perf.peak_memory(HERE, "train_run", which="plain", **probe)
    row.update(extra)
    row["note"] = (f"conv backward nodes: patch {extra['patch_graph']['conv_backward_nodes']}, plain "
                   f"{extra['plain_graph']['conv_backward_nodes']}; stem output needs grad: patch "
                   f"{extra['patch_graph']['stem_output_requires_grad']}")
    benchmark.extra_info.update(extra)
    if config != "all convs":  # the stem is frozen and not patched: autograd records nothing there
        assert extra["patch_graph"]["stem_output_requires_grad"] is False
