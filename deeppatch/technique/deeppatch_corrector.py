"""DeepPatch as a Corrector: assess -> patch -> train -> calibrate the switch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from deeppatch.code_identity import module_code_hash
from deeppatch.corrector import Corrector, Repaired, RepairTask, Restorer
from deeppatch.data import TensorSplit, to_float
from deeppatch.errors import DeepPatchError
from deeppatch.perturbations.base import Perturbation
from deeppatch.repair_tools import append_validator, maintenance_batches, perturbed_val, train_model
from deeppatch.results import SuiteRow
from deeppatch.technique import switch
from deeppatch.technique.blame import ENGINES, METHODS, blame
from deeppatch.technique.diagnostics import gate_probe, switch_rows, validation_diagnostics
from deeppatch.technique.gating import (
    GATE_TARGETS,
    GateFit,
    fit_best_gate,
    path_pass,
    path_rows,
    validation_paths,
)
from deeppatch.technique.patching import GROUPED, INITS, SIDES, UNITS, PatchedNetwork, plan_patches
from deeppatch.technique.switch import (
    GATES,
    ROUTINGS,
    PathView,
    ReferenceGate,
    SwitchedModel,
    calibrate_reference,
)
from deeppatch.training import OptimConfig


@dataclass
class DeepPatchParams:
    blame: str = field(default="perfloss", metadata={"help": "blame method (assess)", "choices": METHODS})
    unit: str = field(default="replace", metadata={"help": "patch unit: DP replacement conv or DeepCorrect unit",
                                                   "choices": UNITS})
    ratio: float = field(default=0.25, metadata={"help": "fraction of each conv's filters patched", "min": 0.0,
                                                 "max": 1.0})
    side: str = field(default="front", metadata={"help": "which end of the ranking is patched", "choices": SIDES})
    grouped: str = field(default="skip", metadata={"help": "grouped (depthwise) convs: skip as the reference, or "
                                                           "patch with depthwise units", "choices": GROUPED})
    layers: list[str] = field(default_factory=lambda: ["*"], metadata={"help": "conv names to patch (fnmatch)"})
    init: str = field(default="fresh", metadata={"help": "replacement init: fresh (reference) or copy",
                                                 "choices": INITS})
    epochs: int = field(default=20, metadata={"help": "patch training epochs (crt_epoch)", "min": 0})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate", "min": 0.0})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum", "min": 0.0, "max": 1.0})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay", "min": 0.0})
    t_max: int = field(default=200, metadata={"help": "cosine schedule T_max in epochs (reference: 200)", "min": 1})
    batch_size: int = field(default=256, metadata={"help": "training batch size", "min": 1})
    p_clean: float = field(default=0.5, metadata={"help": "probability a training image stays clean", "min": 0.0,
                                                  "max": 1.0})
    gate: str = field(default="learned", metadata={"help": "indicator: reference disagreement score or learned gate",
                                                   "choices": GATES})
    routing: str = field(default="per-sample", metadata={"help": "routing mode", "choices": ROUTINGS})
    gate_epochs: int = field(default=10, metadata={"help": "learned gate training epochs", "min": 0})
    gate_width: int = field(default=16, metadata={"help": "learned gate conv width", "min": 1})
    gate_stride: int = field(default=2, metadata={"help": "learned gate conv stride", "min": 1})
    gate_target: str = field(default="auto", metadata={
        "help": "what the learned gate predicts: perturbed (is the input perturbed?), correct (which path will be "
                "right?), condition (which condition; routes by each condition's better path on validation), "
                "auto (all fitted; the one closest to the better path per condition on held-out validation)",
        "choices": GATE_TARGETS})
    decision_factor: float = field(default=1.0, metadata={"help": "multiplies the reference threshold", "min": 0.0})
    blame_engine: str = field(default="auto", metadata={"help": "blame engine", "choices": ENGINES})
    blame_batch_size: int = field(default=500, metadata={"help": "images per blame batch", "min": 1})
    blame_quantize: bool = field(default=True, metadata={
        "help": "round the perturbed blame data to 8 bits, as the reference's PIL-blurred uint8 images are "
                "(default: on, so rankings match the reference's; off: float perturbations)"})


def train_patch(task: RepairTask, params: DeepPatchParams, ranking: dict[str, Any] | None
                ) -> tuple[PatchedNetwork, dict[str, Any]]:
    """Plan the patch from a ranking (None for side=random), build it and train it (always patched)."""
    base = task.copy_model().eval()
    plan = plan_patches(base, ranking, ratio=params.ratio, side=params.side, unit=params.unit,
                        grouped=params.grouped, layers=tuple(params.layers), seed=task.seed)
    network = PatchedNetwork(base, plan.specs, seed=task.seed, init=params.init).to(task.device)
    trainable = network.freeze_all_but_patch()
    pv = perturbed_val(task)
    train = task.train_data()
    batch_size = task.batch_size(params.batch_size)
    network.set_mode("patched")
    result = train_model(
        task, network, trainable, tag=f"deeppatch-{params.unit}", epochs=task.epochs(params.epochs),
        batches=maintenance_batches(task, train, batch_size, p_clean=params.p_clean, purpose="deeppatch"),
        num_batches=train.num_batches(batch_size),
        optim=OptimConfig(lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay,
                          t_max=params.t_max),
        validate=append_validator(task, pv), select="best",
    )
    network.eval()
    extra = {
        "specs": [s.to_dict() for s in plan.specs], "skipped": plan.skipped, "plan": plan.settings,
        "training": {k: v for k, v in result.to_dict().items() if k != "history"},
        "history": result.history, "params": asdict(params),
    }
    return network, extra


def patch_model(task: RepairTask, params: DeepPatchParams, ranking: dict[str, Any] | None
                ) -> tuple[SwitchedModel, dict[str, Any]]:
    """Train the patch, then place and calibrate the switch: the whole DeepPatch repair."""
    network, extra = train_patch(task, params, ranking)
    conv_name, bn_name = network.locate_indicator(to_float(task.splits.val.x[:2]).to(task.device))
    pv = perturbed_val(task)
    reference = ReferenceGate(network.net.get_submodule(conv_name).indices.tolist()).to(task.device)
    calibration = calibrate_reference(network, reference, pv.clean, pv.perturbed, task.device,
                                      decision_factor=params.decision_factor)
    learned, gate_info = None, None
    if params.gate_epochs > 0:
        original, patched = PathView(network, "original"), PathView(network, "patched")
        val = validation_paths(pv.clean, pv.perturbed, original, patched, task.device, task.seed, GateFit.holdout)
        learned, gate_info = fit_best_gate(
            lambda x: network.indicator_inputs(x, with_patched=False)[0], val, params.gate_target, task.device,
            GateFit(width=params.gate_width, stride=params.gate_stride, epochs=params.gate_epochs, seed=task.seed))
    elif params.gate == "learned":
        raise DeepPatchError("gate=learned needs gate_epochs > 0")
    model = SwitchedModel(network, reference, learned, gate=params.gate, routing=params.routing).eval()
    extra.update({
        "indicator": {"conv": conv_name, "bn": bn_name}, "gate": params.gate, "routing": params.routing,
        "reference_calibration": calibration, "learned_gate": None if learned is None else {
            "in_channels": learned.in_channels, "width": learned.width, "stride": learned.stride, **gate_info},
    })
    return model, extra


def cached_ranking(task: RepairTask, method: str, *, engine: str = "auto", batch_size: int = 500,
                   quantize: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The blame ranking of the model under maintenance, computed once per (model, method, data) and shared
    by every repair seed: it is a property of the model under maintenance (its perturbed validation data
    are drawn with a fixed seed, BLAME_SEED)."""

    def compute() -> dict[str, Any]:
        result = blame(task.model, method, task.splits.val, task.perturbation, seed=BLAME_SEED, device=task.device,
                       batch_size=batch_size, engine=engine, show_progress=task.show_progress, quantize=quantize)
        return {"ranking": result.ranking(), "info": {"method": result.method, "engine": result.engine,
                                                      "seconds": result.seconds,
                                                      "base_accuracy": result.base_accuracy}}

    cached = task.cached_json("blame", {"method": method, "code": module_code_hash("deeppatch.technique.blame"),
                                        "blame_seed": BLAME_SEED, "quantize": quantize}, compute, per_seed=False)
    return cached["ranking"], cached["info"]


BLAME_SEED = 0  # the blame data's draws: one ranking per model under maintenance, whatever the repair seed


class DeepPatchCorrector(Corrector):
    """DeepPatch (Wei et al., TOSEM 2023): blamed-filter patches with a runtime switch."""

    name = "deeppatch"
    description = "DeepPatch (Wei et al., TOSEM 2023): patches on blamed filters, original/patched switch per input"
    paper = "doi:10.1145/3604609"
    Params = DeepPatchParams

    test_params = {"epochs": 1, "gate_epochs": 2, "blame_batch_size": 100}
    has_switch = True

    @classmethod
    def label_suffix(cls, params: Mapping[str, Any]) -> str:
        if params.get("gate") == "reference":
            return "+switch[paper indicator]"
        return f"+switch[learned {params.get('gate_target', 'auto')}]"

    def repair(self, task: RepairTask) -> Repaired:
        p: DeepPatchParams = self.params
        ranking = None
        blame_info: dict[str, Any] = {}
        if p.side != "random":
            ranking, blame_info = cached_ranking(task, p.blame, engine=p.blame_engine, batch_size=p.blame_batch_size,
                                                 quantize=p.blame_quantize)
        model, extra = patch_model(task, p, ranking)
        extra["blame"] = blame_info
        pv = perturbed_val(task)
        diagnostics = validation_diagnostics(model, pv.clean, pv.perturbed, list(task.perturbation.conditions),
                                             task.device)
        training = extra["training"]
        return Repaired(model, epochs=training["epochs_run"] + training["resumed_from"],
                        details={"blame": blame_info, "kept": training["kept"]}, kind="deeppatch", extra=extra,
                        diagnostics=diagnostics)

    def evaluation_rows(self, model: nn.Module, test: TensorSplit, family: Perturbation, device: torch.device,
                        batch_size: int) -> list[SuiteRow]:
        """The switch's routing and AUROC per gate, and each routing mode's accuracy, on test data."""
        if isinstance(model, SwitchedModel):
            # the paper's variants (routing modes, gates, the switch off), and the switch next to each path
            passes = path_pass(model, test, family, device, batch_size, probe=gate_probe(model))
            return switch_rows(model, family, passes, batch_size) + path_rows(model, test, family, device, batch_size,
                                                                              passes=passes)
        return []

    @classmethod
    def restorers(cls) -> Mapping[str, Restorer]:
        return {"deeppatch": switch.restore_from_record}
