"""The switched model's inference throughput vs the original model, on clean inputs.

The model under maintenance (resnet20, 1x28x28) gets DeepPatch patches on a quarter of every conv's
filters (random side: which filters does not change the cost) and both gates. Each gate's threshold
is set so that 10 % of the clean benchmark images are routed to the patch (a gate that errs on
1 in 10 clean inputs; a perfect one routes none and is cheaper). Both go through
`evaluation.predict` (inference mode, 512-image batches, bf16 autocast on CUDA): the original
model is the reference, the switched model in each gate x routing mode is ours; `speedup` is the
switched model's throughput relative to the original's (target >= 0.8).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from perf_data import smooth_images, zoo_model

from deeppatch.data import TensorSplit, to_float
from deeppatch.evaluation import predict
from deeppatch.seeding import derive_seed
from deeppatch.technique.gating import GateFit, PathSwitch, early_activations, gate_tap
from deeppatch.technique.patching import PatchedNetwork, plan_patches
from deeppatch.technique.switch import LearnedGate, ReferenceGate, SwitchedModel

HERE = str(Path(__file__).resolve())
IMAGES = 2048
BATCH = 512
ROUTED = 0.10  # fraction of clean images the gates send to the patch


def switched_inputs(n_images: int, gate: str, routing: str, device: str = "cpu"
                    ) -> tuple[torch.nn.Module, SwitchedModel, TensorSplit]:
    base = zoo_model()
    plan = plan_patches(base, None, ratio=0.25, side="random", seed=0)
    network = PatchedNetwork(base, plan.specs, seed=0).eval()
    data = TensorSplit(smooth_images(n_images, "switch-clean"), torch.zeros(n_images, dtype=torch.long))
    probe = to_float(data.x[:BATCH])
    conv_name, _ = network.locate_indicator(probe[:2])
    reference = ReferenceGate(network.net.get_submodule(conv_name).indices.tolist())
    with torch.inference_mode():
        a_orig, a_patch = network.indicator_inputs(probe)
        reference.direction.fill_(1.0)  # perturbed if d > tau
        reference.tau.fill_(torch.quantile(reference.disagreement(a_orig, a_patch), 1 - ROUTED).item())
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(0, "perf", "gate"))
            learned = LearnedGate(a_orig.shape[1], GateFit.width, GateFit.stride).eval()  # the deployed size
        learned.threshold.fill_(torch.quantile(learned.logit(a_orig), 1 - ROUTED).item())
    model = SwitchedModel(network, reference, learned, gate=gate, routing=routing).eval()
    dev = torch.device(device)
    return base.to(dev), model.to(dev), data.to(dev)


def switch_run(n_images: int, gate: str, routing: str, which: str, device: str = "cpu") -> Callable[[], object]:
    """Memory-probe factory: predict with the original (`which="original"`) or the switched model."""
    base, model, data = switched_inputs(n_images, gate, routing, device)
    chosen = base if which == "original" else model
    return lambda: predict(chosen, data, batch_size=BATCH, device=device)


@pytest.mark.parametrize("routing", ["per-sample", "batch-majority"])
@pytest.mark.parametrize("gate", ["learned", "reference"])
def test_switch_vs_original_throughput(benchmark, perf, gate, routing):
    n = perf.size(IMAGES, BATCH)
    device = str(perf.device)
    base, model, data = switched_inputs(n, gate, routing, device)
    outputs: dict[str, torch.Tensor] = {}
    predict(model, data.head(BATCH), batch_size=BATCH, device=device)  # warm-up both
    predict(base, data.head(BATCH), batch_size=BATCH, device=device)
    row = perf.compare(benchmark, f"switch {gate} gate, {routing}: throughput vs original",
                       lambda: outputs.__setitem__("ours", predict(model, data, batch_size=BATCH, device=device)),
                       lambda: outputs.__setitem__("ref", predict(base, data, batch_size=BATCH, device=device)),
                       rounds=3, work=n, unit="image", target="speedup (relative throughput) >= 0.8")
    routed = torch.cat([model.decisions(x)[0].cpu() for x, _ in data.batches(BATCH, device=device)])
    row["routed_to_patch"] = routed.float().mean().item()
    # inputs the gate leaves on the original path get the original model's prediction, bit for bit
    same = (outputs["ours"] == outputs["ref"])[~routed].all().item() if routing == "per-sample" else None
    row["original_route_identical"] = same
    extra = {"routed_to_patch": row["routed_to_patch"], "original_route_identical": same}
    if perf.memory:
        probe = {"n_images": BATCH, "gate": gate, "routing": routing, "device": device}
        extra["ours_memory"] = perf.peak_memory(HERE, "switch_run", which="switched", **probe)
        extra["reference_memory"] = perf.peak_memory(HERE, "switch_run", which="original", **probe)
    row.update(extra)
    benchmark.extra_info.update(extra)
    if same is not None:
        assert same


def path_switch_inputs(n_images: int, device: str = "cpu") -> tuple[torch.nn.Module, PathSwitch, TensorSplit]:
    """A switch in front of a second model of the same architecture (a repaired model's cost): the
    gate's threshold routes 10 % of the clean images to the repaired model."""
    base = zoo_model()
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(0, "perf", "repaired"))
        repaired = zoo_model().eval()
        for p in repaired.parameters():
            p.data.add_(0.01 * torch.randn_like(p))
    data = TensorSplit(smooth_images(n_images, "switch-clean"), torch.zeros(n_images, dtype=torch.long))
    tap = gate_tap(base)
    probe = to_float(data.x[:BATCH])
    with torch.inference_mode():
        a = early_activations(base, tap, probe)
        with torch.random.fork_rng():
            torch.manual_seed(derive_seed(0, "perf", "gate"))
            gate = LearnedGate(a.shape[1], GateFit.width, GateFit.stride).eval()  # the deployed size
        gate.threshold.fill_(torch.quantile(gate.logit(a), 1 - ROUTED).item())
    model = PathSwitch(base, repaired, gate, tap).eval()
    dev = torch.device(device)
    return base.to(dev), model.to(dev), data.to(dev)


def test_switch_for_any_corrector_vs_original_throughput(benchmark, perf):
    """`finetune+switch` and friends: gate on the original's early activations, then one full path."""
    n = perf.size(IMAGES, BATCH)
    device = str(perf.device)
    base, model, data = path_switch_inputs(n, device)
    outputs: dict[str, torch.Tensor] = {}
    predict(model, data.head(BATCH), batch_size=BATCH, device=device)
    predict(base, data.head(BATCH), batch_size=BATCH, device=device)
    row = perf.compare(benchmark, "switch for any corrector (learned gate): throughput vs original",
                       lambda: outputs.__setitem__("ours", predict(model, data, batch_size=BATCH, device=device)),
                       lambda: outputs.__setitem__("ref", predict(base, data, batch_size=BATCH, device=device)),
                       rounds=3, work=n, unit="image", target="speedup (relative throughput) >= 0.8")
    routed = torch.cat([model.route(x).cpu() for x, _ in data.batches(BATCH, device=device)])
    row["routed_to_repair"] = routed.float().mean().item()
    row["original_route_identical"] = (outputs["ours"] == outputs["ref"])[~routed].all().item()
    benchmark.extra_info.update({"routed_to_repair": row["routed_to_repair"]})
    assert row["original_route_identical"]
