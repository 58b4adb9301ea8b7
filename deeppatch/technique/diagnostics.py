"""DeepPatch diagnostics rows on test data: the switch's routing, its AUROC, and the accuracy of each
routing mode, gate and of the always-patched model (the switch turned off)."""

from __future__ import annotations

import torch

from deeppatch.data import TensorSplit
from deeppatch.evaluation import perturbation_report
from deeppatch.perturbations.base import Perturbation
from deeppatch.results import SuiteRow
from deeppatch.seeding import make_generator
from deeppatch.technique.switch import GATES, ROUTINGS, SwitchedModel, auroc


def validation_diagnostics(model: SwitchedModel, clean: TensorSplit, perturbed: TensorSplit, conditions: list[str],
                           device: torch.device, split_name: str = "val") -> list[SuiteRow]:
    """AUROC (clean vs each condition) and routing rates of both gates, as diagnostics rows."""
    rows: list[SuiteRow] = []
    n = len(clean)
    saved = (model.gate, model.routing)
    gates = ["reference"] + (["learned"] if model.learned_gate is not None else [])
    for gate in gates:
        model.configure(gate=gate, routing="per-sample")
        routed, scores = [], []
        for split in (clean, perturbed):
            r, s = [], []
            for x, _ in split.batches(512, device=device):
                m, sc = model.decisions(x)
                r.append(m.cpu())
                s.append(sc.float().cpu())
            routed.append(torch.cat(r))
            scores.append(torch.cat(s))
        settings = {"gate": gate, "split": split_name}
        rows.append(SuiteRow("diagnostics", f"{split_name}/{gate}/clean routed original",
                             100.0 * (~routed[0]).float().mean().item(), n, group="routing",
                             metric="routing_accuracy", settings=settings))
        for i, cond in enumerate(conditions):
            sl = slice(i * n, (i + 1) * n)
            rows.append(SuiteRow("diagnostics", f"{split_name}/{gate}/{cond} routed patched",
                                 100.0 * routed[1][sl].float().mean().item(), n, group="routing",
                                 metric="routing_accuracy", settings=settings))
            rows.append(SuiteRow("diagnostics", f"{split_name}/{gate}/{cond} auroc", auroc(scores[0], scores[1][sl]),
                                 2 * n, group="auroc", metric="auroc", settings=settings))
    model.configure(gate=saved[0], routing=saved[1])
    return rows


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
