"""A switch for any corrector: per input, the model under maintenance or the repaired model.

DeepPatch's claim is a division of labour: the original computation for inputs it handles, the
repair for the others. To measure what the switch is worth apart from the patch, any corrector can
be wrapped with the same kind of switch (`SwitchedCorrector`, spec setting ``switch = "learned"``):
a small learned gate (`LearnedGate`) reads the original model's early activations (the first
BatchNorm after the first conv) and routes each input to one full forward of the original or of
the repaired model (`PathSwitch`).

The gate is trained and thresholded on the validation split only (clean val and every condition of
the maintenance family), never on test data, with one of these targets:

* ``perturbed``: "is this input perturbed?" (clean = 0, perturbed = 1), threshold at the best
  balanced accuracy: the detector DeepPatch's learned gate is;
* ``correct``: "which path will be right?": 1 where the repaired model is right and the original
  wrong, 0 where the original is right and the repaired wrong; where both are right or both wrong
  (a tie), 1 if the repaired model's loss is lower; threshold at the best switched accuracy;
* ``condition``: "which condition is this?" (clean or one of the family's); the logit is the
  expected gain of the repair, the predicted condition probabilities times each condition's
  validation accuracy difference (repaired - original); threshold 0;
* ``auto`` (default): all three are fitted; the first of condition, perturbed, correct whose
  held-out shortfall from the better path per condition is within `AUTO_TOLERANCE` of the least.

40 % of the validation source images (with all their perturbed copies) are held out from gate
training: half of them set thresholds, the other half measure the gates and choose the target.
Gates decide in fp32 whatever the surrounding autocast.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.corrector import Corrector, Repaired, RepairTask, Restorer, checkpoint_restorers
from deeppatch.data import TensorSplit, to_float
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.models.registry import create_model
from deeppatch.models.state import info_from_dict, load_state_strict
from deeppatch.perturbations.base import Perturbation
from deeppatch.repair_tools import perturbed_val
from deeppatch.results import SuiteRow
from deeppatch.seeding import make_generator
from deeppatch.technique.routing import StopForward
from deeppatch.technique.switch import LearnedGate, auroc, best_threshold, fp32

GATE_TARGETS = ("auto", "perturbed", "correct", "condition")
SWITCHES = ("none", "learned")
KIND = "switched"


# --------------------------------------------------------------------------------------------
# the original model's early activations


def gate_tap(model: nn.Module) -> str:
    """The module whose output the gate reads: the first BatchNorm2d after the first Conv2d (else that conv)."""
    names = [(n, m) for n, m in model.named_modules() if n]
    first_conv = next((i for i, (_, m) in enumerate(names) if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise DeepPatchError(f"a switch reads the original model's early activations, but {type(model).__name__} "
                             "has no Conv2d")
    bn = next((n for n, m in names[first_conv + 1:] if isinstance(m, nn.BatchNorm2d)), None)
    return bn or names[first_conv][0]


def early_activations(model: nn.Module, tap: str, x: torch.Tensor) -> torch.Tensor:
    """The output of `model`'s module `tap` on `x`, running only the layers up to it (fp32)."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        captured.append(output)
        raise StopForward

    handle = model.get_submodule(tap).register_forward_hook(hook)
    try:
        with fp32(x):
            model(x.float())
    except StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise DeepPatchError(f"the gate's input layer {tap!r} was never reached in a forward pass")
    return captured[0].float()


# --------------------------------------------------------------------------------------------
# the switched pair


class PathSwitch(nn.Module):
    """Routes each input to one full forward of the original or of the repaired model.

    Implements `deeppatch.switch_interface`: `paths()`, `gate_logit(x)` (> 0: repaired), `route(x)`.
    `mode` "switch" (default), or "original" / "repaired" to force one path (ablations).
    """

    def __init__(self, original: nn.Module, repaired: nn.Module, gate: LearnedGate, tap: str,
                 target: str = "perturbed") -> None:
        super().__init__()
        self.original, self.repaired, self.gate = original, repaired, gate
        self.tap, self.target, self.mode = tap, target, "switch"

    def paths(self) -> tuple[nn.Module, nn.Module]:
        return self.original, self.repaired

    def gate_logit(self, x: torch.Tensor) -> torch.Tensor:
        with fp32(x):
            return self.gate.logit(early_activations(self.original, self.tap, x)) - self.gate.threshold

    @torch.inference_mode()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_logit(x) > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "original":
            return self.original(x)
        if self.mode == "repaired":
            return self.repaired(x)
        with torch.no_grad():
            mask = self.gate_logit(x) > 0
        if bool(mask.all()):
            return self.repaired(x)
        if not bool(mask.any()):
            return self.original(x)
        out_orig = self.original(x[~mask])
        out_rep = self.repaired(x[mask])
        out = torch.empty((len(x), *out_orig.shape[1:]), dtype=torch.promote_types(out_orig.dtype, out_rep.dtype),
                          device=out_orig.device)
        out[~mask] = out_orig.to(out.dtype)
        out[mask] = out_rep.to(out.dtype)
        return out

    def configure(self, *, mode: str | None = None) -> PathSwitch:
        if mode is not None:
            if mode not in ("switch", "original", "repaired"):
                raise unknown_choice("mode", mode, ("switch", "original", "repaired"))
            self.mode = mode
        return self


# --------------------------------------------------------------------------------------------
# fitting the gate on validation data


@dataclass
class GateFit:
    """How the gate is trained: its size, epochs, optimiser, held-out share, seed."""

    width: int = 16
    stride: int = 2
    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 256
    holdout: float = 0.4
    seed: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _per_image(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, correct) per image."""
    losses, correct = [], []
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            logits = model(x[s:s + batch_size]).float()
            losses.append(F.cross_entropy(logits, y[s:s + batch_size], reduction="none").cpu())
            correct.append((logits.argmax(1) == y[s:s + batch_size]).cpu())
    return torch.cat(losses), torch.cat(correct)


def validation_paths(clean: TensorSplit, perturbed: TensorSplit, original: Callable[[torch.Tensor], torch.Tensor],
                     repaired: Callable[[torch.Tensor], torch.Tensor], device: torch.device, seed: int,
                     holdout: float) -> dict[str, torch.Tensor]:
    """Clean + perturbed validation images with what the gate learns from (see `GATE_TARGETS`).

    `perturbed` is the family's ``expand``: every condition on every clean image, condition-major.
    A `holdout` share of the source images (with all their perturbed copies) is kept from gate
    training: its first half ("calibrate") sets thresholds, its second half ("select") measures
    the switch and chooses the target, so no choice is scored on the data that made it."""
    n = len(clean)
    copies = len(perturbed) // max(n, 1)
    gen = make_generator(seed, "gate-split")
    hold_src = torch.zeros(n, dtype=torch.bool)
    held = torch.randperm(n, generator=gen)[: max(2, int(holdout * n))]
    hold_src[held] = True
    select_src = torch.zeros(n, dtype=torch.bool)
    select_src[held[len(held) // 2:]] = True  # the second half of the held-out images
    x = torch.cat([to_float(clean.x.to(device)), to_float(perturbed.x.to(device))])
    y = torch.cat([clean.y, perturbed.y]).to(device)
    loss_o, ok_o = _per_image(original, x, y)
    loss_r, ok_r = _per_image(repaired, x, y)
    return {"x": x, "y": y, "perturbed": torch.cat([torch.zeros(n), torch.ones(len(perturbed))]).bool(),
            "condition": torch.arange(len(x)) // max(n, 1),
            "holdout": torch.cat([hold_src, hold_src.repeat(copies)]),
            "select": torch.cat([select_src, select_src.repeat(copies)]), "loss_orig": loss_o, "loss_rep": loss_r,
            "ok_orig": ok_o, "ok_rep": ok_r}


def gate_labels(val: Mapping[str, torch.Tensor], target: str) -> torch.Tensor:
    """What the gate is trained to output. "perturbed": 1 on perturbed inputs; "correct": 1 where only
    the repaired model is right, and on ties (both right or both wrong) where its loss is lower;
    "condition": the input's condition index (0 = clean, then the family's conditions)."""
    if target == "perturbed":
        return val["perturbed"].float()
    if target == "correct":
        only_rep = val["ok_rep"] & ~val["ok_orig"]
        only_orig = val["ok_orig"] & ~val["ok_rep"]
        tie = ~(only_rep | only_orig)
        return (only_rep | (tie & (val["loss_rep"] < val["loss_orig"]))).float()
    if target == "condition":
        return val["condition"].long()
    raise unknown_choice("gate target", target, GATE_TARGETS)


def condition_gain(val: Mapping[str, torch.Tensor], where: torch.Tensor) -> torch.Tensor:
    """Per condition, the repaired path's accuracy minus the original's (fractions) on `where`."""
    k = int(val["condition"].max()) + 1
    gain = torch.zeros(k)
    for c in range(k):
        sel = where & (val["condition"] == c)
        if bool(sel.any()):
            gain[c] = val["ok_rep"][sel].float().mean() - val["ok_orig"][sel].float().mean()
    return gain


def accuracy_threshold(logits: torch.Tensor, ok_orig: torch.Tensor, ok_rep: torch.Tensor) -> tuple[float, float]:
    """The cut on the logit (route to repaired iff logit > cut) with the best switched accuracy."""
    order = torch.argsort(logits.double())
    s = logits.double()[order]
    o, r = ok_orig[order].double(), ok_rep[order].double()
    n = len(s)
    # cut below everything: all repaired; after position i: the first i+1 original, the rest repaired
    acc_all_rep = float(r.sum()) / max(n, 1)
    acc = (torch.cumsum(o, 0) + (r.sum() - torch.cumsum(r, 0))) / max(n, 1)
    valid = torch.ones(n, dtype=torch.bool)
    valid[:-1] = s[1:] > s[:-1]
    acc = torch.where(valid, acc, torch.full_like(acc, -1.0))
    i = int(torch.argmax(acc)) if n else 0
    if n == 0 or acc_all_rep >= float(acc[i]):
        return (float(s[0]) - 1.0 if n else 0.0), acc_all_rep
    cut = float((s[i] + s[i + 1]) / 2) if i + 1 < n else float(s[i]) + 1.0
    return cut, float(acc[i])


class GateFeatures:
    """The original model's early activations of the validation images, computed once and kept in
    memory when they fit in `max_bytes` (the gate trains on them for many epochs and several targets;
    they do not depend on the repair), else recomputed per batch."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 max_bytes: int = 1 << 30, batch_size: int = 512) -> None:
        self.features, self.x = features, x
        with torch.no_grad():
            probe = features(x[:2])
        self.sample = probe
        self.stored: torch.Tensor | None = None
        if probe[0].numel() * probe.element_size() * len(x) <= max_bytes:
            with torch.no_grad():  # not inference_mode: the gate's training saves its input for backward
                self.stored = torch.cat([features(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.stored is not None:
            return self.stored[idx.to(self.stored.device)]
        with torch.no_grad():
            return self.features(self.x[idx])


def _holdout_metrics(logits: torch.Tensor, threshold: float, val: Mapping[str, torch.Tensor],
                     hold: torch.Tensor) -> dict[str, Any]:
    """Switched accuracy of the held-out images, overall and per condition, against each path alone."""
    ok_o, ok_r, cond = val["ok_orig"][hold], val["ok_rep"][hold], val["condition"][hold]
    routed = logits > threshold
    ok_s = torch.where(routed, ok_r, ok_o).float()
    per: dict[str, dict[str, float]] = {}
    worst, shortfall = math.inf, 0.0
    conditions = sorted(set(cond.tolist()))
    for c in conditions:
        sel = cond == c
        row = {"switched": ok_s[sel].mean().item() * 100, "original": ok_o[sel].float().mean().item() * 100,
               "repaired": ok_r[sel].float().mean().item() * 100}
        per[str(c)] = row
        gap = row["switched"] - max(row["original"], row["repaired"])
        worst, shortfall = min(worst, gap), shortfall - min(gap, 0.0) / len(conditions)
    return {"holdout_switched_accuracy": ok_s.mean().item() * 100,
            "holdout_original_accuracy": ok_o.float().mean().item() * 100,
            "holdout_repaired_accuracy": ok_r.float().mean().item() * 100,
            "holdout_share_routed": routed.float().mean().item() * 100,
            "holdout_worst_condition_gap": worst, "holdout_shortfall": shortfall, "holdout_per_condition": per}


def fit_gate(features: Callable[[torch.Tensor], torch.Tensor] | GateFeatures, val: Mapping[str, torch.Tensor],
             target: str, device: torch.device, cfg: GateFit) -> tuple[LearnedGate, dict[str, Any]]:
    """Train a `LearnedGate` on the non-held-out validation images for `target`; set its threshold and
    measure it on the held-out ones."""
    t0 = time.perf_counter()
    feats = features if isinstance(features, GateFeatures) else GateFeatures(features, val["x"])
    label = gate_labels(val, target).to(device)
    hold = val["holdout"].to(device)
    train_idx = (~hold).nonzero(as_tuple=True)[0]
    torch.manual_seed(cfg.seed)
    outputs = int(val["condition"].max()) + 1 if target == "condition" else 1
    gate = LearnedGate(feats.sample.shape[1], cfg.width, cfg.stride, outputs=outputs).to(device)
    if target == "condition":
        def loss_fn(out: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(out, lab)
    else:
        pos = float(label[train_idx].sum())
        neg = float(len(train_idx) - pos)
        pos_weight = torch.tensor(neg / pos if pos > 0 and neg > 0 else 1.0, device=device)

        def loss_fn(out: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(out.squeeze(1), lab, pos_weight=pos_weight)
    opt = torch.optim.Adam(gate.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    for epoch in range(cfg.epochs):
        gate.train()
        order = train_idx[torch.randperm(len(train_idx), generator=make_generator(cfg.seed, "gate", target, epoch))
                          .to(device)]
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = loss_fn(gate.scores(feats(idx)), label[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().item() * len(idx)
        sched.step()
        cfg.history.append({"epoch": epoch + 1, "loss": total / max(len(order), 1)})
    gate.eval()
    hold_cpu = hold.cpu()
    if target == "condition":
        gain = condition_gain(val, ~hold_cpu)
        gate.gain.copy_(gain.to(gate.gain))
    hold_idx = hold.nonzero(as_tuple=True)[0]
    with torch.inference_mode():
        logits = torch.cat([gate.logit(feats(hold_idx[s:s + 512])).float().cpu()
                            for s in range(0, len(hold_idx), 512)])
    select = val["select"][hold_cpu]  # positions within the held-out images
    calib, scored = hold_cpu & ~val["select"], hold_cpu & val["select"]
    y_cal = val["perturbed"][calib]
    if target == "perturbed":
        threshold, _ = best_threshold(logits[~select][~y_cal], logits[~select][y_cal])
    elif target == "condition":
        threshold = 0.0  # the expected gain of the repair: positive means repaired
    else:
        threshold, _ = accuracy_threshold(logits[~select], val["ok_orig"][calib], val["ok_rep"][calib])
    gate.threshold.fill_(threshold)
    y_sel = val["perturbed"][scored]
    sel_logits = logits[select]
    info = {"target": target, "threshold": threshold, **_holdout_metrics(sel_logits, threshold, val, scored),
            "holdout_auroc": auroc(sel_logits[~y_sel], sel_logits[y_sel]) if 0 < int(y_sel.sum()) < len(y_sel)
            else None, "n_holdout": int(scored.sum()), "n_calibration": int(calib.sum()),
            "params": sum(p.numel() for p in gate.parameters()),
            "macs_per_image": gate.macs_per_image(*feats.sample.shape[2:]), "epochs": cfg.epochs, "width": cfg.width,
            "stride": cfg.stride, "outputs": outputs, "seconds": time.perf_counter() - t0}
    if target == "condition":
        info["gain"] = [round(float(g) * 100, 3) for g in gain]
    return gate, info


AUTO_CANDIDATES = ("condition", "perturbed", "correct")  # in order of preference
AUTO_TOLERANCE = 0.5  # points of held-out shortfall within which the earlier candidate is kept


def fit_best_gate(features: Callable[[torch.Tensor], torch.Tensor], val: Mapping[str, torch.Tensor], target: str,
                  device: torch.device, cfg: GateFit) -> tuple[LearnedGate, dict[str, Any]]:
    """`fit_gate` for one target, or for ``auto`` every target (`AUTO_CANDIDATES`), keeping the first
    whose switch falls short of the better path alone by at most `AUTO_TOLERANCE` points more than
    the best candidate's, on the held-out "select" images (shortfall: the mean over conditions of
    max(0, better path - switched)). The select images are few (a fifth of val per condition), so
    small differences are noise: the preferred order breaks them."""
    if target not in GATE_TARGETS:
        raise unknown_choice("gate target", target, GATE_TARGETS)
    feats = GateFeatures(features, val["x"])
    if target != "auto":
        return fit_gate(feats, val, target, device, replace(cfg, history=[]))
    fits = {t: fit_gate(feats, val, t, device, replace(cfg, history=[])) for t in AUTO_CANDIDATES}

    least = min(info["holdout_shortfall"] for _, info in fits.values())
    best = next(t for t in AUTO_CANDIDATES if fits[t][1]["holdout_shortfall"] <= least + AUTO_TOLERANCE)
    gate, info = fits[best]
    info = {**info, "chosen_by": f"held-out shortfall from the better path per condition (first of {AUTO_CANDIDATES} "
                               f"within {AUTO_TOLERANCE} points of the least)",
            "candidates": {t: {"switched": fits[t][1]["holdout_switched_accuracy"],
                               "shortfall": fits[t][1]["holdout_shortfall"]} for t in fits}}
    return gate, info


# --------------------------------------------------------------------------------------------
# the corrector wrapper


def switch_label(label: str, switch: str, target: str) -> str:
    return label if switch == "none" else f"{label}+switch[{target}]"


class SwitchedCorrector(Corrector):
    """Any corrector, followed by a learned switch between the model under maintenance and its repair."""

    name = "switch"
    description = "wraps a corrector: a learned gate routes each input to the original or the repaired model"

    def __init__(self, inner: Corrector, target: str = "auto", gate: GateFit | None = None) -> None:
        if target not in GATE_TARGETS:
            raise unknown_choice("gate target", target, GATE_TARGETS)
        self.inner, self.target, self.gate_fit = inner, target, gate or GateFit()
        self.params = inner.params
        self.name = f"{inner.name}+switch"

    def params_dict(self) -> dict[str, Any]:
        return {**self.inner.params_dict(), "switch": "learned", "gate_target": self.target}

    def code_hash(self) -> str:  # type: ignore[override]
        return type(self.inner).code_hash()

    def repair(self, task: RepairTask) -> Repaired:
        inner = self.inner.repair(task)
        inner = inner if isinstance(inner, Repaired) else Repaired(inner)
        repaired = inner.model.eval()
        original = task.copy_model().eval().requires_grad_(False)
        tap = gate_tap(original)
        pv = perturbed_val(task)
        val = validation_paths(pv.clean, pv.perturbed, original, repaired, task.device, task.seed,
                               self.gate_fit.holdout)
        cfg = replace(self.gate_fit, seed=task.seed, history=[])
        gate, info = fit_best_gate(lambda x: early_activations(original, tap, x), val, self.target, task.device, cfg)
        model = PathSwitch(original, repaired, gate, tap, target=info["target"]).eval()
        extra = {"inner_kind": inner.kind, "inner_extra": inner.extra, "tap": tap, "gate": info,
                 "gate_in_channels": gate.in_channels, "gate_width": gate.width, "gate_stride": gate.stride,
                 "inner_corrector": self.inner.name}
        diagnostics = list(inner.diagnostics) + [
            SuiteRow("diagnostics", f"val/switch/holdout {what}", float(info[key]), int(info["n_holdout"]),
                     group="switch", metric=metric, source="repair",
                     settings={"target": info["target"], "split": "val (held out from gate training)"})
            for what, key, metric in (("switched accuracy", "holdout_switched_accuracy", "accuracy"),
                                      ("share routed to the repair", "holdout_share_routed", "percent"))]
        return Repaired(model, epochs=inner.epochs, details={**inner.details, "gate": info}, kind=KIND, extra=extra,
                        diagnostics=diagnostics)

    def evaluation_rows(self, model: nn.Module, test: TensorSplit, family: Perturbation, device: torch.device,
                        batch_size: int) -> list[SuiteRow]:
        return path_rows(model, test, family, device, batch_size) if isinstance(model, PathSwitch) else []

    @classmethod
    def restorers(cls) -> Mapping[str, Restorer]:
        return {KIND: restore_switched}


def restore_switched(record: Mapping[str, Any]) -> PathSwitch:
    """Rebuild a switched pair: the original from its architecture, the repaired model by its own kind."""
    extra = record["extra"]
    info = info_from_dict(record["dataset"])
    original = create_model(str(record["arch"]), info)
    inner_kind = str(extra["inner_kind"])
    restorers = {**checkpoint_restorers(), KIND: restore_switched}
    inner_record = {**record, "kind": inner_kind, "extra": extra.get("inner_extra", {}),
                    "state_dict": {k.removeprefix("repaired."): v for k, v in record["state_dict"].items()
                                   if k.startswith("repaired.")}}
    if inner_kind == "plain":
        repaired = create_model(str(record["arch"]), info)
        load_state_strict(repaired, inner_record["state_dict"], f"the repaired {record['arch']!r}")
    elif inner_kind in restorers:
        repaired = restorers[inner_kind](inner_record)
    else:
        raise unknown_choice("checkpoint kind of the repaired model", inner_kind, restorers)
    gate = LearnedGate(int(extra["gate_in_channels"]), int(extra["gate_width"]), int(extra["gate_stride"]),
                       outputs=int(extra["gate"].get("outputs", 1)))
    model = PathSwitch(original, copy.deepcopy(repaired), gate, str(extra["tap"]), str(extra["gate"]["target"]))
    load_state_strict(model, record["state_dict"], f"the switched {record['arch']!r}")
    return model.eval()


# --------------------------------------------------------------------------------------------
# test-time rows: what the switch does per condition


Probe = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def path_pass(model: nn.Module, test: TensorSplit, family: Perturbation, device: torch.device, batch_size: int,
              seed: int = 0, probe: Probe | None = None) -> list[dict[str, Any]]:
    """One pass over clean and each condition of `family`: per image, the label, each path's prediction
    and the gate's logit (plus whatever `probe(x)` returns per batch, concatenated). Everything the
    per-condition rows need, so no variant of the switch runs the models again."""
    original, repaired = model.paths()
    out = []
    for i, cond in enumerate(["clean", *family.conditions]):
        gen = make_generator(seed, "path-rows", family.name, cond)
        parts: dict[str, list[torch.Tensor]] = {"y": [], "original": [], "repaired": [], "logit": []}
        with torch.inference_mode():
            for x, y in test.batches(batch_size, device=device):
                xp = x if cond == "clean" else family.apply(x, i - 1, gen)
                parts["logit"].append(model.gate_logit(xp).float().cpu())
                parts["original"].append(original(xp).argmax(1).cpu())
                parts["repaired"].append(repaired(xp).argmax(1).cpu())
                parts["y"].append(y.cpu())
                for key, value in (probe(xp) if probe is not None else {}).items():
                    parts.setdefault(key, []).append(value.cpu())
        out.append({"condition": cond, "batch_sizes": [len(t) for t in parts["y"]],
                    **{k: torch.cat(v) for k, v in parts.items()}})
    return out


def path_rows(model: nn.Module, test: TensorSplit, family: Perturbation, device: torch.device,
              batch_size: int, split: str = "test", suite: str = "diagnostics", seed: int = 0,
              passes: list[dict[str, Any]] | None = None) -> list[SuiteRow]:
    """Per condition of `family` (and clean): accuracy of the switched model and of each path alone,
    the share of inputs routed to the repair, and the gate's AUROC clean vs condition. Works for any
    switched model (`deeppatch.switch_interface`), DeepPatch's included. `passes`: a `path_pass`
    already made."""
    passes = passes if passes is not None else path_pass(model, test, family, device, batch_size, seed)
    rows: list[SuiteRow] = []
    logits_clean = None
    for item in passes:
        cond, g, y = item["condition"], item["logit"], item["y"]
        if cond == "clean":
            logits_clean = g
        n = len(g)
        settings = {"family": family.name, "split": split}
        ok = {"switched": torch.where(g > 0, item["repaired"], item["original"]).eq(y),
              "original": item["original"].eq(y), "repaired": item["repaired"].eq(y)}
        for which, correct in ok.items():
            rows.append(SuiteRow(suite, f"{split}/paths/{cond}/{which}", 100.0 * correct.float().mean().item(), n,
                                 group="paths", settings={**settings, "path": which}, correct=correct))
        rows.append(SuiteRow(suite, f"{split}/paths/{cond}/routed to the repair",
                             100.0 * (g > 0).float().mean().item(), n, group="paths", metric="percent",
                             settings=settings))
        if cond != "clean" and logits_clean is not None:
            value = auroc(logits_clean, g)
            if not math.isnan(value):
                rows.append(SuiteRow(suite, f"{split}/paths/{cond}/auroc", value, 2 * n, group="paths",
                                     metric="auroc", settings=settings))
    return rows
