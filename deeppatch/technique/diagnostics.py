"""DeepPatch diagnostics rows on test data: the switch's routing, its AUROC, and the accuracy of each
routing mode, gate and of the always-patched model (the switch turned off)."""

from __future__ import annotations

import torch
from torch import nn

from deeppatch.data import TensorSplit
from deeppatch.evaluation import perturbation_report
from deeppatch.perturbations.base import Perturbation
from deeppatch.results import SuiteRow
from deeppatch.technique.corrector import validation_diagnostics
from deeppatch.technique.switch import GATES, ROUTINGS, SwitchedModel


def switch_rows(model: SwitchedModel, test: TensorSplit, family: Perturbation, device: torch.device,
                batch_size: int) -> list[SuiteRow]:
    """Routing and AUROC per gate, and clean / mean accuracy per variant, as "diagnostics" rows."""
    expanded = family.expand(test, device=device)
    rows = validation_diagnostics(model, test, expanded, list(family.conditions), device, split_name="test")
    saved = (model.gate, model.routing, model.mode)
    variants: list[tuple[str, dict]] = [("switch=off (always patched)", {"mode": "patched"})]
    for gate in GATES:
        if gate == "learned" and model.learned_gate is None:
            continue
        for routing in ROUTINGS:
            variants.append((f"{routing}/{gate}", {"mode": "switch", "gate": gate, "routing": routing}))
    for label, config in variants:
        model.configure(**config)
        report = perturbation_report(model, test, family, batch_size=batch_size, device=device, desc=label)
        for key in ("clean", f"{family.name}_mean", "union"):
            rows.append(SuiteRow("diagnostics", f"test/{label}/{key}", report[key], len(test), group="variant",
                                 settings={**config, "batch_size": batch_size, "homogeneous_batches": True}))
    model.configure(gate=saved[0], routing=saved[1], mode=saved[2])
    return rows


def diagnostic_rows(model: nn.Module, test: TensorSplit, family: Perturbation, device: torch.device,
                    batch_size: int) -> list[SuiteRow]:
    """Rows for models that have something to diagnose (the DeepPatch switch); none otherwise."""
    if isinstance(model, SwitchedModel):
        return switch_rows(model, test, family, device, batch_size)
    return []


def routing_on_family(model: SwitchedModel, test: TensorSplit, family: Perturbation, device: torch.device,
                      seed: int, batch_size: int = 500) -> list[SuiteRow]:
    """How each gate routes a perturbation family it was not calibrated on (e.g. common corruptions
    for a gate trained on blur): the percentage of inputs sent to the patch, per condition."""
    from deeppatch.seeding import make_generator

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
