"""DeepPatch diagnostics rows on test data: the switch's routing, its AUROC, and the accuracy of each
routing mode, gate and of the always-patched model (the switch turned off)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from deeppatch.data import TensorSplit
from deeppatch.perturbations.base import Perturbation
from deeppatch.results import SuiteRow
from deeppatch.seeding import make_generator
from deeppatch.technique.switch import GATES, ROUTINGS, SwitchedModel, auroc


def _gates(model: SwitchedModel) -> list[str]:
    return [g for g in GATES if g != "learned" or model.learned_gate is not None]


def gate_probe(model: SwitchedModel) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """For `path_pass`: every gate's per-sample decision and score on a batch."""
    gates = _gates(model)

    def probe(x: torch.Tensor) -> dict[str, torch.Tensor]:
        saved = (model.gate, model.routing)
        out: dict[str, torch.Tensor] = {}
        try:
            for gate in gates:
                model.configure(gate=gate, routing="per-sample")
                routed, score = model.decisions(x)
                out[f"{gate}/routed"], out[f"{gate}/score"] = routed, score.float()
        finally:
            model.configure(gate=saved[0], routing=saved[1])
        return out

    return probe


def gate_rows(gates: list[str], split_name: str, clean: dict[str, Any],
              conditions: list[tuple[str, dict[str, Any]]]) -> list[SuiteRow]:
    """Per gate: the share of clean inputs kept on the original, and per condition the share routed to
    the patch and the AUROC clean vs that condition; from `gate_probe` outputs."""
    rows: list[SuiteRow] = []
    for gate in gates:
        n = len(clean[f"{gate}/routed"])
        settings = {"gate": gate, "split": split_name}
        rows.append(SuiteRow("diagnostics", f"{split_name}/{gate}/clean routed original",
                             100.0 * (~clean[f"{gate}/routed"]).float().mean().item(), n, group="routing",
                             metric="routing_accuracy", settings=settings))
        for cond, item in conditions:
            rows.append(SuiteRow("diagnostics", f"{split_name}/{gate}/{cond} routed patched",
                                 100.0 * item[f"{gate}/routed"].float().mean().item(), n, group="routing",
                                 metric="routing_accuracy", settings=settings))
            rows.append(SuiteRow("diagnostics", f"{split_name}/{gate}/{cond} auroc",
                                 auroc(clean[f"{gate}/score"], item[f"{gate}/score"]), 2 * n, group="auroc",
                                 metric="auroc", settings=settings))
    return rows


def _probe_split(model: SwitchedModel, split: TensorSplit, device: torch.device) -> dict[str, torch.Tensor]:
    probe = gate_probe(model)
    parts: dict[str, list[torch.Tensor]] = {}
    for x, _ in split.batches(512, device=device):
        for key, value in probe(x).items():
            parts.setdefault(key, []).append(value.cpu())
    return {key: torch.cat(values) for key, values in parts.items()}


def validation_diagnostics(model: SwitchedModel, clean: TensorSplit, perturbed: TensorSplit, conditions: list[str],
                           device: torch.device, split_name: str = "val") -> list[SuiteRow]:
    """AUROC (clean vs each condition) and routing rates of both gates, as diagnostics rows."""
    n = len(clean)
    probed_clean, probed = _probe_split(model, clean, device), _probe_split(model, perturbed, device)
    per_condition = [(cond, {k: v[i * n:(i + 1) * n] for k, v in probed.items()})
                     for i, cond in enumerate(conditions)]
    return gate_rows(_gates(model), split_name, probed_clean, per_condition)


def _routed(item: dict[str, Any], gate: str, routing: str) -> torch.Tensor:
    """The gate's decisions under a routing mode; batch-majority votes per batch of the pass, as the
    switched model does on homogeneous batches (more than half routed: the whole batch)."""
    per_sample = item[f"{gate}/routed"]
    if routing == "per-sample":
        return per_sample
    votes = [torch.full((len(part),), bool(part.float().mean() > 0.5))
             for part in per_sample.split(item["batch_sizes"])]
    return torch.cat(votes)


def switch_rows(model: SwitchedModel, family: Perturbation, passes: list[dict[str, Any]],
                batch_size: int) -> list[SuiteRow]:
    """Routing and AUROC per gate, and clean / mean / union accuracy per variant (the switch off, each
    gate x routing mode), as "diagnostics" rows, from a `path_pass` made with `gate_probe`: each
    variant's predictions are the path its gate picks, so no variant runs the models again."""
    gates = _gates(model)
    clean = passes[0]
    n = len(clean["y"])
    rows = gate_rows(gates, "test", clean, [(item["condition"], item) for item in passes[1:]])
    variants: list[tuple[str, dict[str, str], Callable[[dict[str, Any]], torch.Tensor]]] = [
        ("switch=off (always patched)", {"mode": "patched"}, lambda item: item["repaired"])]
    for gate in gates:
        for routing in ROUTINGS:
            def predict(item: dict[str, Any], gate: str = gate, routing: str = routing) -> torch.Tensor:
                return torch.where(_routed(item, gate, routing), item["repaired"], item["original"])
            variants.append((f"{routing}/{gate}", {"mode": "switch", "gate": gate, "routing": routing}, predict))
    for label, config, predict in variants:
        correct = [predict(item).eq(item["y"]).float() for item in passes]
        accs = [100.0 * c.mean().item() for c in correct]
        values = {"clean": accs[0], f"{family.name}_mean": sum(accs[1:]) / max(len(accs) - 1, 1),
                  "union": 100.0 * torch.cat(correct).mean().item()}
        for key, value in values.items():
            rows.append(SuiteRow("diagnostics", f"test/{label}/{key}", value, n, group="variant",
                                 settings={**config, "batch_size": batch_size, "homogeneous_batches": True}))
    return rows


def routing_on_family(model: SwitchedModel, test: TensorSplit, family: Perturbation, device: torch.device,
                      seed: int, batch_size: int = 500) -> list[SuiteRow]:
    """How each gate routes a perturbation family it was not calibrated on (e.g. common corruptions
    for a gate trained on blur): the percentage of inputs sent to the patch, per condition."""
    rows: list[SuiteRow] = []
    saved = model.gate
    gates = [g for g in GATES if g != "learned" or model.learned_gate is not None]
    for i, cond in enumerate(family.conditions):
        gen = make_generator(seed, "routing-family", family.name, cond)
        routed = {g: 0 for g in gates}
        for x, _ in test.batches(batch_size, device=device):
            xp = family.apply(x, i, gen)
            for g in gates:
                model.configure(gate=g)
                routed[g] += int(model.decisions(xp)[0].sum())
        for g in gates:
            rows.append(SuiteRow("diagnostics", f"test/{g}/{family.name}:{cond} routed patched",
                                 100.0 * routed[g] / len(test), len(test), group="routing-unseen",
                                 metric="routing_accuracy", settings={"gate": g, "family": family.name}))
    model.configure(gate=saved)
    return rows
