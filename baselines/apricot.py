"""Apricot: weight adaptation toward reduced models (Zhang & Chan, ASE 2019).

1. rDLMs: `n_rdlms` copies of the model under maintenance, each fine-tuned for `epochs` on its own
   subset of `subset_size` training images (contiguous slices k * floor((N - size) / n) as in the
   DeepPatch reference, or seeded random subsets), on the maintenance stream.
2. Fixing: over a fixed perturbed copy of the training data (drawn once, reference bug 21), in seeded
   batches of `fix_batch_size`: for every image the current model misclassifies and at least one
   rDLM classifies correctly, move every weight (BatchNorm statistics included) TOWARD the mean
   weights of the rDLMs that are correct on it, by `step * p_corr` (p_corr: the fraction of rDLMs
   that are correct), as the Apricot paper states ("adjusts each weight of this iDLM toward the
   average weight of these rDLMs correctly classifying the test case and/or away from that of
   these rDLMs misclassifying"; `strategy` picks toward, away or both). The DeepPatch reference
   added step * p_corr * (w - mean), which pushes away from the correct rDLMs (reference bug 23).
3. A batch's adjustments are kept when the clean + perturbed val accuracy does not drop, else undone.
   The reference trained a full epoch after every batch of 20 (about 2,450 epochs per pass on
   CIFAR) and then saved the pre-training weights (reference bug 23); here no retraining happens inside
   the loop, and `final_epochs` > 0 adds one fine-tune on the maintenance stream at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.data import TensorSplit
from deeppatch.errors import DeepPatchError
from deeppatch.repair_tools import (
    FinetuneParams,
    append_validator,
    diagnostic,
    fine_tune_all,
    maintenance_batches,
    p_clean_field,
    perturbed_pool,
    predict_logits,
    training_details,
)
from deeppatch.seeding import make_generator

STRATEGIES = ("toward-correct", "away-from-incorrect", "both")


def state_keys(model: nn.Module) -> list[str]:
    """The floating-point state entries: weights, biases and BatchNorm running statistics."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point()]


def state_vector(model: nn.Module, keys: list[str]) -> torch.Tensor:
    state = model.state_dict()
    return torch.cat([state[k].detach().flatten().float() for k in keys])


def load_state_vector(model: nn.Module, keys: list[str], vector: torch.Tensor) -> None:
    state = model.state_dict()
    offset = 0
    for k in keys:
        n = state[k].numel()
        state[k].copy_(vector[offset:offset + n].view_as(state[k]))
        offset += n


def adjust(w: torch.Tensor, rdlm_weights: torch.Tensor, correct: torch.Tensor, step: float,
           strategy: str = "toward-correct") -> torch.Tensor:
    """One Apricot adjustment of the flat weights `w` for one failing input.

    `rdlm_weights` (n, P) holds the rDLMs' flat weights, `correct` (n,) which of them classify the
    input correctly. Toward the correct rDLMs' mean by step * p_corr, and/or away from the incorrect
    ones' mean by step * p_incorr.
    """
    correct = correct.to(rdlm_weights.device)
    n_corr, n = int(correct.sum()), len(correct)
    out = w.clone()
    if strategy in ("toward-correct", "both") and n_corr:
        mean_corr = rdlm_weights[correct].mean(0)
        out += step * (n_corr / n) * (mean_corr - w)
    if strategy in ("away-from-incorrect", "both") and n_corr < n:
        mean_incorr = rdlm_weights[~correct].mean(0)
        out -= step * ((n - n_corr) / n) * (mean_incorr - w)
    return out


def subset_index(n: int, size: int, k: int, count: int, how: str, seed: int) -> torch.Tensor:
    """Training images of rDLM k: a contiguous slice (the reference) or a seeded random subset."""
    size = min(size, n)
    if how == "contiguous":
        start = k * ((n - size) // count)
        return torch.arange(start, start + size)
    return torch.randperm(n, generator=make_generator(seed, "apricot", "subset", k))[:size].sort().values


@dataclass
class Params(FinetuneParams):
    epochs: int = field(default=40, metadata={"help": "epochs each rDLM is fine-tuned (the budget's epochs "
                                                      "override it)", "min": 0})
    n_rdlms: int = field(default=20, metadata={"help": "number of reduced models (rDLMs)", "min": 1})
    subset_size: int = field(default=10000, metadata={"help": "training images per rDLM (capped to the data)",
                                                      "min": 1})
    subsets: str = field(default="contiguous", metadata={
        "help": "contiguous slices (the reference) or seeded random subsets", "choices": ("contiguous", "random")})
    fix_batch_size: int = field(default=20, metadata={"help": "images per fixing batch (one val check each)",
                                                      "min": 1})
    step: float = field(default=0.001, metadata={"help": "weight-adjustment step (times p_corr)", "min": 0.0})
    strategy: str = field(default="toward-correct", metadata={
        "help": "toward the correct rDLMs' mean, away from the incorrect ones', or both", "choices": STRATEGIES})
    loops: int = field(default=1, metadata={"help": "passes of the fixing loop over the data (the reference: 1)",
                                            "min": 1})
    final_epochs: int = field(default=0, metadata={"help": "fine-tuning epochs on the maintenance stream after "
                                                           "fixing (0: none)", "min": 0})
    p_clean: float = p_clean_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.step > 0:
            raise DeepPatchError(f"parameter 'step' must be > 0, got {self.step!r}")


@dataclass
class FixStats:
    failing: int = 0  # misclassified images met by the loop
    fixable: int = 0  # of those, images at least one rDLM classifies correctly
    adjusted: int = 0  # adjustments in kept batches
    kept_batches: int = 0
    undone_batches: int = 0


class Apricot(Corrector):
    """Adjust weights toward the mean of the rDLMs that classify each failing input correctly."""

    name = "apricot"
    description = "Apricot (Zhang & Chan 2019): move weights toward reduced models that fix each failure"
    paper = "Zhang & Chan, ASE 2019, doi 10.1109/ASE.2019.00043"
    Params = Params
    test_params = {"n_rdlms": 2, "subset_size": 50, "fix_batch_size": 50}

    def train_rdlms(self, task: RepairTask, data: TensorSplit) -> list[nn.Module]:
        p = self.params
        rdlms = []
        for k in range(p.n_rdlms):
            rdlm = task.copy_model()
            part = data.subset(subset_index(len(data), p.subset_size, k, p.n_rdlms, p.subsets, task.seed))
            bs = task.batch_size(p.batch_size)
            batches = maintenance_batches(task, part, bs, p_clean=p.p_clean, purpose=f"apricot-rdlm{k}")
            fine_tune_all(task, rdlm, tag=f"apricot-rdlm{k}", epochs=task.epochs(p.epochs), batches=batches,
                          num_batches=part.num_batches(bs), optim=p.optim(), select="last")
            rdlms.append(rdlm)
        return rdlms

    def fix(self, task: RepairTask, model: nn.Module, keys: list[str], pool_x: torch.Tensor, pool_y: torch.Tensor,
            weights: torch.Tensor, correct: torch.Tensor) -> tuple[FixStats, float, float]:
        """The fixing loop; returns its counts and the val accuracy before and after."""
        p, stats = self.params, FixStats()
        validate = append_validator(task)
        best = start = validate(model)
        w = state_vector(model, keys)
        for loop in range(p.loops):
            order = torch.randperm(len(pool_y), generator=make_generator(task.seed, "apricot", "fix-order", loop))
            for begin in range(0, len(order), p.fix_batch_size):
                idx = order[begin:begin + p.fix_batch_size].to(pool_y.device)
                wrong = predict_logits(model, pool_x[idx], len(idx)).argmax(1) != pool_y[idx]
                candidate, adjusted = w, 0
                for i in idx[wrong].tolist():
                    stats.failing += 1
                    if not correct[:, i].any():
                        continue
                    stats.fixable += 1
                    candidate = adjust(candidate, weights, correct[:, i], p.step, p.strategy)
                    adjusted += 1
                if not adjusted:
                    continue
                load_state_vector(model, keys, candidate)
                score = validate(model)
                if score >= best:
                    best, w = score, candidate
                    stats.kept_batches += 1
                    stats.adjusted += adjusted
                else:
                    load_state_vector(model, keys, w)
                    stats.undone_batches += 1
        return stats, start, best

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        model = task.copy_model()
        keys = state_keys(model)
        data = task.train_data()
        rdlms = self.train_rdlms(task, data)
        pool = perturbed_pool(task, data, p.p_clean, "apricot")
        weights = torch.stack([state_vector(r, keys) for r in rdlms])
        correct = torch.stack([predict_logits(r, pool.x, task.eval_batch_size).argmax(1) == pool.y
                               for r in rdlms])
        del rdlms
        mean_all = weights.mean(0)
        dist_start = float((state_vector(model, keys) - mean_all).norm())
        stats, val_start, val_fixed = self.fix(task, model, keys, pool.x, pool.y, weights, correct)
        dist_end = float((state_vector(model, keys) - mean_all).norm())
        result = None
        if p.final_epochs:
            bs = task.batch_size(p.batch_size)
            batches = maintenance_batches(task, data, bs, p_clean=p.p_clean, purpose="apricot-final")
            result = fine_tune_all(task, model, tag="apricot-final", epochs=p.final_epochs, batches=batches,
                                   num_batches=data.num_batches(bs), optim=p.optim())
        model.eval()
        epochs = p.n_rdlms * task.epochs(p.epochs) + p.final_epochs
        details = {"n_rdlms": p.n_rdlms, "rdlm_epochs": task.epochs(p.epochs), "final_epochs": p.final_epochs,
                   "val_start": val_start, "val_after_fixing": val_fixed, "dist_to_rdlm_mean_start": dist_start,
                   "dist_to_rdlm_mean_end": dist_end, **vars(stats)}
        rows = [diagnostic(self.name, what, getattr(stats, what), len(pool))
                for what in ("failing", "fixable", "adjusted", "kept_batches", "undone_batches")]
        return Repaired(model, epochs=epochs, details=training_details(result, **details), diagnostics=rows)
