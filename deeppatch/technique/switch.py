"""Evaluate: the runtime switch that routes each input to the original or the patched path.

The indicator sits at the first patched conv ℓ₁ and the BatchNorm b₁ it feeds. Two gates:

* ``reference``: the paper's disagreement score d_i, the fraction of units of the patched channels
  of ℓ₁ whose on/off state after b₁ (sign) differs between the original and the patched path.
  τ is the midpoint of its mean on clean and on perturbed validation data; the direction (which
  side means "perturbed") is derived from those means and a margin is asserted (reference bug 4).
* ``learned``: a small CNN on b₁'s original-path activations, trained on the validation split to
  tell clean from perturbed inputs; threshold chosen on a held-out part of the validation split.

Two routing modes: ``per-sample`` (each input decides for itself; the paper's claim) and
``batch-majority`` (one vote routes the whole batch; the reference implementation, reference bug 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.data import TensorSplit
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.models.registry import create_model
from deeppatch.models.state import info_from_dict, load_state_strict
from deeppatch.technique.patching import PatchedNetwork, PatchSite

GATES = ("reference", "learned")
ROUTINGS = ("per-sample", "batch-majority")
MIN_MARGIN = 1e-3  # |mean_clean - mean_perturbed| of the reference score below this: refuse


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise unknown_choice(what, value, choices)
    return value


# --------------------------------------------------------------------------------------------
# gates: (a_orig, a_patch) at b1 -> perturbedness score (higher = more likely perturbed)


class ReferenceGate(nn.Module):
    """The reference's XOR-sign disagreement over the patched channels of ℓ₁, with a calibrated τ."""

    needs_patched = True  # compares the original and the patched path at b₁

    def __init__(self, indices: list[int]) -> None:
        super().__init__()
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long))
        self.register_buffer("tau", torch.tensor(0.0))
        self.register_buffer("direction", torch.tensor(-1.0))  # -1: perturbed if d < tau (the reference's)

    def disagreement(self, a_orig: torch.Tensor, a_patch: torch.Tensor) -> torch.Tensor:
        o = a_orig.index_select(1, self.indices) > 0
        p = a_patch.index_select(1, self.indices) > 0
        return (o ^ p).flatten(1).float().mean(1)

    def score(self, a_orig: torch.Tensor, a_patch: torch.Tensor) -> torch.Tensor:
        """Perturbedness: the disagreement signed so that higher means perturbed."""
        return self.direction * self.disagreement(a_orig, a_patch)

    def perturbed(self, a_orig: torch.Tensor, a_patch: torch.Tensor) -> torch.Tensor:
        return self.score(a_orig, a_patch) > self.direction * self.tau

    def calibrate(self, d_clean: torch.Tensor, d_perturbed: torch.Tensor, decision_factor: float = 1.0
                  ) -> dict[str, float]:
        mc, mp = float(d_clean.mean()), float(d_perturbed.mean())
        if abs(mc - mp) < MIN_MARGIN:
            raise DeepPatchError(
                f"the reference indicator cannot tell clean from perturbed validation data (mean disagreement "
                f"{mc:.4f} vs {mp:.4f}); use --gate learned")
        self.direction.fill_(-1.0 if mp < mc else 1.0)
        self.tau.fill_(decision_factor * (mc + mp) / 2)
        return {"mean_clean": mc, "mean_perturbed": mp, "tau": float(self.tau),
                "direction": "perturbed if d < tau" if mp < mc else "perturbed if d > tau"}


class LearnedGate(nn.Module):
    """A small CNN on b₁'s original-path activations -> a logit: > threshold routes to the repair.

    Early activations, not raw pixels: the same gate can be trained for any perturbation family.
    It reads only the original path, so clean inputs never compute the patch. With `outputs` > 1
    the head classifies the input's condition (clean or one of the family's) and the logit is the
    expected gain of the repaired path, ``softmax(scores) @ gain`` (`gain`: per condition, the
    repaired path's accuracy minus the original's on validation data).
    """

    needs_patched = False

    def __init__(self, in_channels: int, width: int = 16, stride: int = 1, outputs: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Sequential(nn.Linear(3 * width, 32), nn.ReLU(), nn.Linear(32, outputs))
        self.register_buffer("threshold", torch.tensor(0.0))  # on the logit
        if outputs > 1:
            self.register_buffer("gain", torch.zeros(outputs))
        self.width, self.stride, self.in_channels, self.outputs = width, stride, in_channels, outputs

    def scores(self, a_orig: torch.Tensor) -> torch.Tensor:
        """The head's raw outputs, (N, outputs)."""
        h = F.relu(self.bn(self.conv(a_orig.float())))
        flat = h.flatten(2)
        mean = flat.mean(2)
        # the unbiased std, as a norm of the deviations: ~3.5x faster than Tensor.std on the CPU
        std = torch.linalg.vector_norm(flat - mean.unsqueeze(2), dim=2) / math.sqrt(max(flat.shape[2] - 1, 1))
        feats = torch.cat([mean, std, flat.amax(2)], 1)
        return self.head(feats)

    def logit(self, a_orig: torch.Tensor) -> torch.Tensor:
        out = self.scores(a_orig)
        if self.outputs == 1:
            return out.squeeze(1)
        return torch.softmax(out, 1) @ self.gain

    def score(self, a_orig: torch.Tensor, a_patch: torch.Tensor) -> torch.Tensor:
        return self.logit(a_orig)

    def perturbed(self, a_orig: torch.Tensor, a_patch: torch.Tensor) -> torch.Tensor:
        return self.logit(a_orig) > self.threshold

    def macs_per_image(self, h: int, w: int) -> int:
        ho, wo = -(-h // self.stride), -(-w // self.stride)
        head = 3 * self.width * 32 + 32 * self.outputs + (self.outputs if self.outputs > 1 else 0)
        return self.in_channels * self.width * 9 * ho * wo + head


# --------------------------------------------------------------------------------------------
# the switched model


class SwitchedModel(nn.Module):
    """A patched network whose route is decided per input (or per batch) by a gate.

    `mode`: "switch" (default), or "original" / "patched" to force one path (ablations).
    """

    def __init__(self, patched: PatchedNetwork, reference: ReferenceGate, learned: LearnedGate | None = None,
                 *, gate: str = "reference", routing: str = "per-sample") -> None:
        super().__init__()
        self.patched = patched
        self.reference_gate = reference
        self.learned_gate = learned
        self.gate = gate
        self.routing = routing
        self.mode = "switch"
        self.configure(gate=gate, routing=routing)

    def configure(self, *, gate: str | None = None, routing: str | None = None, mode: str | None = None
                  ) -> SwitchedModel:
        if gate is not None:
            check_choice(gate, GATES, "gate")
            if gate == "learned" and self.learned_gate is None:
                raise DeepPatchError("this checkpoint has no learned gate; use --gate reference")
            self.gate = gate
        if routing is not None:
            self.routing = check_choice(routing, ROUTINGS, "routing mode")
        if mode is not None:
            self.mode = check_choice(mode, ("switch", "original", "patched"), "mode")
        return self

    def active_gate(self) -> nn.Module:
        return self.learned_gate if self.gate == "learned" else self.reference_gate

    def _decide(self, a_orig: torch.Tensor, a_patch: torch.Tensor) -> torch.Tensor:
        perturbed = self.active_gate().perturbed(a_orig, a_patch)
        if self.routing == "batch-majority":
            vote = perturbed.float().mean() > 0.5  # the reference: > half of the batch
            perturbed = torch.full_like(perturbed, bool(vote))
        return perturbed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 whatever the surrounding autocast: the gate's threshold was calibrated in fp32, and the
        # original path must stay bit for bit the model under maintenance
        with fp32(x):
            x = x.float()
            if self.mode != "switch":
                return self.patched.run(x, self.mode)
            return self.patched.run(x, "switch", gate=self._decide,
                                    gate_needs_patched=self.active_gate().needs_patched)

    @torch.inference_mode()
    def decisions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(routed to the patch?, perturbedness score) per input, computing only up to b₁."""
        with fp32(x):
            a_orig, a_patch = self.patched.indicator_inputs(x.float(), with_patched=self.active_gate().needs_patched)
            return self._decide(a_orig, a_patch), self.active_gate().score(a_orig, a_patch)

    # the switch interface (deeppatch.switch_interface): paths, gate logit, route

    def paths(self) -> tuple[nn.Module, nn.Module]:
        """(the model under maintenance, the always-patched network), each a module of its own."""
        return PathView(self.patched, "original"), PathView(self.patched, "patched")

    def gate_logit(self, x: torch.Tensor) -> torch.Tensor:
        """The active gate's score minus its threshold (> 0: patched path), fp32, differentiable."""
        gate = self.active_gate()
        with fp32(x):
            a_orig, a_patch = self.patched.indicator_inputs(x.float(), with_patched=gate.needs_patched)
            if isinstance(gate, LearnedGate):
                return gate.logit(a_orig) - gate.threshold
            return gate.score(a_orig, a_patch) - gate.direction * gate.tau

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """True where the switch sends the input to the patch (batch-majority routing included)."""
        return self.decisions(x)[0]


class PathView(nn.Module):
    """One path of a patched network as a module: "original" (the model under maintenance, bit for bit)
    or "patched" (the patch always on)."""

    def __init__(self, patched: PatchedNetwork, mode: str) -> None:
        super().__init__()
        self.patched, self.mode = patched, check_choice(mode, ("original", "patched"), "path")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patched.run(x, self.mode)


def fp32(x: torch.Tensor):
    """A context that turns autocast off on `x`'s device (gates and switches decide in fp32)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


# --------------------------------------------------------------------------------------------
# calibration on validation data


def auroc(neg: torch.Tensor, pos: torch.Tensor) -> float:
    """P(score_pos > score_neg) + P(tie) / 2 (Mann-Whitney), exact; higher score = positive."""
    scores = torch.cat([neg, pos]).double()
    ranks = torch.empty_like(scores)
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    r_pos = ranks[len(neg):].sum()
    n_pos, n_neg = len(pos), len(neg)
    return float((r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_threshold(neg: torch.Tensor, pos: torch.Tensor) -> tuple[float, float]:
    """The cut maximising balanced accuracy (mean of the two per-class rates); midpoint between
    neighbouring scores, so the rule is `score > threshold` means positive."""
    scores = torch.cat([neg, pos]).double()
    labels = torch.cat([torch.zeros(len(neg)), torch.ones(len(pos))]).double()
    order = torch.argsort(scores)
    s, l = scores[order], labels[order]
    # candidate cut after position i: positives predicted for indices > i
    neg_below = torch.cumsum(1 - l, 0)
    pos_above = len(pos) - torch.cumsum(l, 0)
    bal = 0.5 * (neg_below / max(len(neg), 1) + pos_above / max(len(pos), 1))
    valid = torch.ones_like(bal, dtype=torch.bool)
    valid[:-1] = s[1:] > s[:-1]  # only cut between distinct scores
    bal = torch.where(valid, bal, torch.full_like(bal, -1.0))
    i = int(torch.argmax(bal))
    below_all = 0.5 * (len(pos) / max(len(pos), 1))  # everything positive
    if below_all >= float(bal[i]):
        return float(s[0] - 1.0), below_all
    cut = float((s[i] + s[i + 1]) / 2) if i + 1 < len(s) else float(s[i] + 1.0)
    return cut, float(bal[i])


def calibrate_reference(patched: PatchedNetwork, gate: ReferenceGate, clean: TensorSplit, perturbed: TensorSplit,
                        device: torch.device, batch_size: int = 512, decision_factor: float = 1.0
                        ) -> dict[str, Any]:
    with torch.inference_mode():
        d = {name: torch.cat([gate.disagreement(*patched.indicator_inputs(x)).cpu()
                              for x, _ in split.batches(batch_size, device=device)])
             for name, split in (("clean", clean), ("perturbed", perturbed))}
    return gate.calibrate(d["clean"], d["perturbed"], decision_factor)


# --------------------------------------------------------------------------------------------
# checkpoint record -> model


def build_switched(base: nn.Module, specs: list[PatchSite | Mapping[str, Any]], indicator: Mapping[str, Any],
                   gate_cfg: Mapping[str, Any] | None, *, gate: str, routing: str, seed: int = 0) -> SwitchedModel:
    patched = PatchedNetwork(base, [PatchSite(**s) if isinstance(s, Mapping) else s for s in specs], seed=seed)
    conv = patched.net.get_submodule(indicator["conv"])
    bn = patched.net.get_submodule(indicator["bn"])
    conv.is_indicator = bn.is_indicator = True
    reference = ReferenceGate(conv.indices.tolist())
    learned = None
    if gate_cfg:
        learned = LearnedGate(int(gate_cfg["in_channels"]), int(gate_cfg["width"]), int(gate_cfg["stride"]),
                              outputs=int(gate_cfg.get("outputs", 1)))
    return SwitchedModel(patched, reference, learned, gate=gate, routing=routing)


def restore_from_record(record: Mapping[str, Any]) -> SwitchedModel:
    """Rebuild a DeepPatch model from its self-describing checkpoint (models/checkpoint.py)."""
    extra = record["extra"]
    base = create_model(str(record["arch"]), info_from_dict(record["dataset"]))
    model = build_switched(base, extra["specs"], extra["indicator"], extra.get("learned_gate"),
                           gate=extra.get("gate", "reference"), routing=extra.get("routing", "per-sample"))
    load_state_strict(model, record["state_dict"], f"the DeepPatch model of {record['arch']!r}")
    return model.eval()
