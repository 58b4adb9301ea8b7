"""Apricot: weight adaptation toward reduced models (Zhang & Chan, ASE 2019).

The paper's loop, as its abstract and the first author's public implementation (the "conference
version" of ``ApricotFamily/Apricot`` in DemoAuguste/ApricotTOSEM) run it:

1. rDLMs: `n_rdlms` reduced models of the same architecture, each trained for `epochs` on its own
   subset of `subset_size` training images: contiguous slices starting at k * floor((N - size) / n)
   (as the authors cut them), or seeded random subsets.
2. Fixing: over the training data in batches of `fix_batch_size`, for every input the current model
   (the iDLM) misclassifies, adjust every weight with the rDLMs' mean weights: corr_w, the mean of the
   rDLMs that classify the input correctly, and incorr_w, the mean of those that do not (a missing
   set leaves its term out). The paper's three strategies, step size lr = `step`:

       1 "both":                w <- w - lr (w - corr_w) + lr (w - incorr_w)
       2 "toward-correct":      w <- w - lr (w - corr_w)
       3 "away-from-incorrect": w <- w + lr (w - incorr_w)

   The adjustments of a batch's failing inputs are applied one after another.
3. Selection and retraining: after a batch, the adjusted model is kept only if its validation
   accuracy beats the best so far; it is then trained `retrain_epochs` epochs on the training data,
   keeping the best epoch on validation (the adjusted weights when no epoch beats them). Otherwise
   the weights are rolled back to the best ones.

Defaults, as the first author's code sets them (settings.py and the conference-version main.py): 20
rDLMs, 10,000-image contiguous slices, 40 rDLM epochs, batches of 20, one pass, strategy 2 (chosen there
as "the best in conference version"), lr 0.005 (the value the conference-version code ran with; its
history also tried 0.001-0.01), 3 training epochs after each kept adjustment. Ours are the same; the
budget's epochs replace the rDLM epochs and cap the retraining epochs, and the budget's training
subset is the training data.

The benchmark's setting (not a change of method): the training data is the maintenance data, i.e. the
fixing pass runs over one fixed perturbed copy of the training data (each image clean with
probability `p_clean`, else perturbed at a uniform condition of the family, drawn once) and the rDLMs
and the retraining train on the maintenance stream; validation is clean + every perturbed val image.
Every floating-point tensor of the state moves (BatchNorm statistics too: Keras' ``get_weights`` holds
them). Remaining differences: the rDLMs start from the model under maintenance (the authors start them
from an early snapshot of the iDLM's own training, which a maintenance task does not have); training
uses the benchmark's shared SGD loop. The DeepPatch reference moved away from the correct rDLMs, weighed
the step by the share of correct rDLMs and trained after every batch (reference bug 23).
"""

from __future__ import annotations

from collections.abc import Callable
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
)
from deeppatch.seeding import make_generator

STRATEGIES = ("both", "toward-correct", "away-from-incorrect")  # the paper's strategies 1, 2 and 3


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


def step_terms(correct: torch.Tensor, step: float, strategy: str) -> tuple[float, torch.Tensor]:
    """One adjustment as an affine map w <- a * w + c @ rdlm_weights: returns (a, c).

    `correct` (n,) says which rDLMs classify the input correctly. corr_w = mean of the correct ones,
    incorr_w = mean of the others; a term whose set is empty is left out (its mean is w itself).
    """
    correct = correct.bool()
    n_corr, n = int(correct.sum()), len(correct)
    a, c = 1.0, torch.zeros(n, dtype=torch.float32, device=correct.device)
    if strategy in ("both", "toward-correct") and n_corr:  # - lr (w - corr_w)
        a -= step
        c += step * correct.float() / n_corr
    if strategy in ("both", "away-from-incorrect") and n_corr < n:  # + lr (w - incorr_w)
        a += step
        c -= step * (~correct).float() / (n - n_corr)
    return a, c


def adjust(w: torch.Tensor, rdlm_weights: torch.Tensor, correct: torch.Tensor, step: float,
           strategy: str = "toward-correct") -> torch.Tensor:
    """One Apricot adjustment of the flat weights `w` for one failing input (strategies 1-3)."""
    a, c = step_terms(correct.to(rdlm_weights.device), step, strategy)
    return a * w + c @ rdlm_weights


def adjust_batch(w: torch.Tensor, rdlm_weights: torch.Tensor, correct: torch.Tensor, step: float,
                 strategy: str = "toward-correct") -> torch.Tensor:
    """The adjustments for the failing inputs `correct[:, j]` (n, m), applied one after another.

    Each adjustment is affine, so the m of them compose into one: w_m = A w + K @ rdlm_weights with
    A = prod a_j and K = sum_j c_j prod_{i > j} a_i (one pass over the weights instead of m).
    """
    correct = correct.to(rdlm_weights.device)
    big_a, k = 1.0, torch.zeros(len(correct), dtype=torch.float32, device=rdlm_weights.device)
    for j in range(correct.shape[1]):
        a, c = step_terms(correct[:, j], step, strategy)
        big_a, k = a * big_a, a * k + c
    return big_a * w + k @ rdlm_weights


def subset_index(n: int, size: int, k: int, count: int, how: str, seed: int) -> torch.Tensor:
    """Training images of rDLM k: a contiguous slice (the authors') or a seeded random subset."""
    size = min(size, n)
    if how == "contiguous":
        start = k * ((n - size) // count)
        return torch.arange(start, start + size)
    return torch.randperm(n, generator=make_generator(seed, "apricot", "subset", k))[:size].sort().values


@dataclass
class Params(FinetuneParams):
    epochs: int = field(default=40, metadata={"help": "epochs each rDLM is trained (the paper: 40; the budget's "
                                                      "epochs replace it)", "min": 0})
    n_rdlms: int = field(default=20, metadata={"help": "number of reduced models (rDLMs; the paper: 20)", "min": 1})
    subset_size: int = field(default=10000, metadata={
        "help": "training images per rDLM (the paper: 10,000; capped to the data)", "min": 1})
    subsets: str = field(default="contiguous", metadata={
        "help": "contiguous slices (the authors') or seeded random subsets", "choices": ("contiguous", "random")})
    fix_batch_size: int = field(default=20, metadata={
        "help": "training inputs per adjustment batch, one validation check each (the paper: 20)", "min": 1})
    step: float = field(default=0.005, metadata={"help": "adjustment learning rate lr (the authors' code: 0.005)",
                                                 "min": 0.0})
    strategy: str = field(default="toward-correct", metadata={
        "help": "both (strategy 1), toward-correct (2, the paper's best) or away-from-incorrect (3)",
        "choices": STRATEGIES})
    loops: int = field(default=1, metadata={"help": "passes of the fixing loop over the training data (the paper: 1)",
                                            "min": 1})
    retrain_epochs: int = field(default=3, metadata={
        "help": "training epochs after each kept adjustment, best epoch on validation (the paper: 3; the budget's "
                "epochs cap it)", "min": 0})
    p_clean: float = p_clean_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.step > 0:
            raise DeepPatchError(f"parameter 'step' must be > 0, got {self.step!r}")


@dataclass
class FixStats:
    failing: int = 0  # misclassified inputs met by the loop
    fixable: int = 0  # of those, inputs at least one rDLM classifies correctly
    adjusted: int = 0  # adjustments in kept batches
    kept_batches: int = 0  # adjusted batches whose validation accuracy beat the best: kept, then retrained
    undone_batches: int = 0  # adjusted batches rolled back
    retrain_epochs: int = 0  # training epochs run after kept batches
    val_start: float = 0.0
    val_best: float = 0.0


Validate = Callable[[nn.Module], float]
Retrain = Callable[[nn.Module, float], tuple[float, int]]  # (model, its score) -> (score after, epochs run)


class Apricot(Corrector):
    """Adjust weights toward the rDLMs that classify each failing input correctly; keep what validates."""

    name = "apricot"
    description = ("Apricot (Zhang & Chan 2019): adjust weights toward the reduced models that fix each failure, "
                   "keep what improves validation, retrain")
    paper = "Zhang & Chan, ASE 2019, doi 10.1109/ASE.2019.00043"
    Params = Params
    test_params = {"n_rdlms": 2, "subset_size": 50, "fix_batch_size": 50, "retrain_epochs": 1}
    stand_in = ""

    def train_rdlms(self, task: RepairTask, data: TensorSplit) -> list[nn.Module]:
        p = self.params
        rdlms = []
        bs = task.batch_size(p.batch_size)
        for k in range(p.n_rdlms):
            rdlm = task.copy_model()
            part = data.subset(subset_index(len(data), p.subset_size, k, p.n_rdlms, p.subsets, task.seed))
            batches = maintenance_batches(task, part, bs, p_clean=p.p_clean, purpose=f"apricot-rdlm{k}")
            fine_tune_all(task, rdlm, tag=f"apricot-rdlm{k}", epochs=task.epochs(p.epochs), batches=batches,
                          num_batches=part.num_batches(bs), optim=p.optim(), select="last")
            rdlms.append(rdlm.eval())
        return rdlms

    def retrainer(self, task: RepairTask, data: TensorSplit, validate: Validate) -> Retrain:
        """Train after a kept adjustment; the best epoch on validation, or the adjusted weights if none beats them."""
        p = self.params
        epochs = min(p.retrain_epochs, task.epochs(p.retrain_epochs))
        bs = task.batch_size(p.batch_size)
        count = [0]

        def retrain(model: nn.Module, score: float) -> tuple[float, int]:
            if epochs == 0:
                return score, 0
            tag = f"apricot-retrain{count[0]}"
            count[0] += 1
            before = {k: v.detach().clone() for k, v in model.state_dict().items()}
            batches = maintenance_batches(task, data, bs, p_clean=p.p_clean, purpose=tag)
            result = fine_tune_all(task, model, tag=tag, epochs=epochs, batches=batches,
                                   num_batches=data.num_batches(bs), optim=p.optim(), validate=validate,
                                   select="best")
            if result.best_epoch is None:  # no epoch beat the adjusted model: keep it (save_best_only)
                model.load_state_dict(before)
                return score, result.epochs_run
            return float(result.best_score), result.epochs_run

        return retrain

    def fix(self, task: RepairTask, model: nn.Module, keys: list[str], pool_x: torch.Tensor, pool_y: torch.Tensor,
            weights: torch.Tensor, correct: torch.Tensor, validate: Validate, retrain: Retrain) -> FixStats:
        """The fixing loop: adjust per batch of failing inputs, keep and retrain if validation improves, else undo.

        `weights` (n, P) are the rDLMs' flat states, `correct` (n, N) which rDLM classifies which pool
        input correctly. The model is left at the best state found.
        """
        p, stats = self.params, FixStats()
        best = stats.val_start = float(validate(model))
        w = state_vector(model, keys)
        for loop in range(p.loops):
            order = torch.randperm(len(pool_y), generator=make_generator(task.seed, "apricot", "fix-order", loop))
            for begin in range(0, len(order), p.fix_batch_size):
                idx = order[begin:begin + p.fix_batch_size].to(pool_y.device)
                wrong = idx[predict_logits(model, pool_x[idx], len(idx)).argmax(1) != pool_y[idx]]
                stats.failing += len(wrong)
                cols = correct[:, wrong.to(correct.device)]
                stats.fixable += int(cols.any(0).sum())
                if not len(wrong):
                    continue
                candidate = adjust_batch(w, weights, cols, p.step, p.strategy)
                if torch.equal(candidate, w):  # nothing to move toward or away from
                    continue
                load_state_vector(model, keys, candidate)
                score = float(validate(model))
                if score > best:  # the paper keeps an adjustment only if validation accuracy improves
                    stats.kept_batches += 1
                    stats.adjusted += len(wrong)
                    best, epochs = retrain(model, score)
                    stats.retrain_epochs += epochs
                    w = state_vector(model, keys)
                else:
                    load_state_vector(model, keys, w)
                    stats.undone_batches += 1
        stats.val_best = best
        return stats

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        model = task.copy_model()
        keys = state_keys(model)
        data = task.train_data()
        rdlms = self.train_rdlms(task, data)
        pool = perturbed_pool(task, data, p.p_clean, "apricot")
        weights = torch.stack([state_vector(r, keys) for r in rdlms])
        correct = torch.stack([predict_logits(r, pool.x, task.eval_batch_size).argmax(1) == pool.y for r in rdlms])
        del rdlms
        validate = append_validator(task)
        start = state_vector(model, keys)
        stats = self.fix(task, model, keys, pool.x, pool.y, weights, correct, validate,
                         self.retrainer(task, data, validate))
        moved = float((state_vector(model, keys) - start).norm())
        model.eval()
        rdlm_epochs = task.epochs(p.epochs)
        details = {"n_rdlms": p.n_rdlms, "rdlm_epochs": rdlm_epochs, "strategy": p.strategy, "step": p.step,
                   "weight_change_norm": moved, **vars(stats)}
        rows = [diagnostic(self.name, what, getattr(stats, what), len(pool))
                for what in ("failing", "fixable", "adjusted", "kept_batches", "undone_batches")]
        return Repaired(model, epochs=p.n_rdlms * rdlm_epochs + stats.retrain_epochs, details=details,
                        diagnostics=rows)
