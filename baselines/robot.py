"""RobOT: robustness-oriented test selection for retraining (Wang et al., ICSE 2021).

RobOT scores a generated test x' of a seed x by its first-order loss (FOL), the first-order
stationarity condition of the inner maximisation of adversarial training in the Linf ball of
radius eps (Wang et al. 2019, "On the convergence and robustness of adversarial training"):

    FOL(x') = eps * ||g||_1 - <g, x' - x>,   g = grad_{x'} loss(f(x'), y),

with the cross-entropy loss and the gradient taken at the generated test x'. The DeepPatch
reference used (g - x) where the definition has (x' - x) (reference bug 24). Bi-end selection keeps the
k lowest and the k highest FOL values (5,000 + 5,000 by default; when they would overlap, all the
data, split between the ends in that ratio), then every parameter is fine-tuned on them for 40
epochs (docs/deeppatch.md, The reference's defaults), best epoch on append-val.

The tests are ONE fixed perturbed copy of the training data (clean with probability 0.5, else
perturbed at a uniform condition of the maintenance family), generated once from a seeded
generator: the seed x of each test is its clean training image, and the images trained on are the
images scored (reference bug 21). For a clean candidate x' = x and FOL = eps * ||g||_1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.errors import DeepPatchError
from deeppatch.repair_tools import Selection, SelectionParams, diagnostic, perturbed_pool, retrain_on_selection


def first_order_loss(model: nn.Module, x_gen: torch.Tensor, x_seed: torch.Tensor, y: torch.Tensor, eps: float,
                     batch_size: int = 512) -> torch.Tensor:
    """FOL(x') = eps * ||g||_1 - <g, x' - x> per test, g the cross-entropy gradient at x' (eval mode)."""
    model.eval()
    out = []
    for i in range(0, len(x_gen), batch_size):
        xg = x_gen[i:i + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            # summed loss: each image's gradient is that of its own loss, whatever the batch size
            loss = F.cross_entropy(model(xg).float(), y[i:i + batch_size], reduction="sum")
            (g,) = torch.autograd.grad(loss, xg)
        g = g.flatten(1)
        diff = (x_gen[i:i + batch_size] - x_seed[i:i + batch_size]).flatten(1)
        out.append(eps * g.abs().sum(1) - (g * diff).sum(1))
    return torch.cat(out) if out else torch.empty(0)


def bi_end_counts(n: int, k_low: int, k_high: int) -> tuple[int, int]:
    """How many to take from each end: (k_low, k_high), or all n split in their ratio when they overlap."""
    if k_low + k_high <= n:
        return k_low, k_high
    n_low = n * k_low // (k_low + k_high)
    return n_low, n - n_low


def bi_end(scores: torch.Tensor, k_low: int, k_high: int) -> torch.Tensor:
    """Positions of the lowest and then the highest scores (highest first), never the same one twice."""
    order = torch.argsort(scores, stable=True)
    n_low, n_high = bi_end_counts(len(order), k_low, k_high)
    return torch.cat([order[:n_low], order[len(order) - n_high:].flip(0)])


@dataclass
class Params(SelectionParams):
    eps: float = field(default=0.01, metadata={"help": "Linf radius of the FOL (the reference's 0.01)", "min": 0.0})
    k_low: int = field(default=5000, metadata={"help": "tests kept from the low-FOL end", "min": 0})
    k_high: int = field(default=5000, metadata={"help": "tests kept from the high-FOL end", "min": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k_low + self.k_high == 0:
            raise DeepPatchError("parameters 'k_low' and 'k_high' select nothing: at least one must be > 0")


class RobOT(Corrector):
    """Fine-tune every parameter on the lowest- and highest-FOL tests of a fixed perturbed training set."""

    name = "robot"
    description = "RobOT (Wang et al. 2021): retrain on bi-end first-order-loss selected perturbed samples"
    paper = "Wang et al., ICSE 2021, doi 10.1109/ICSE43902.2021.00038"
    Params = Params
    test_params = {"k_low": 20, "k_high": 20, "epochs": 1}

    def select(self, task: RepairTask, model: nn.Module | None = None) -> Selection:
        """FOL of every test of the fixed pool under the model under maintenance, then bi-end selection."""
        p = self.params
        pool = perturbed_pool(task, task.train_data(), p.p_clean, "robot")
        model = model if model is not None else task.copy_model()
        fol = first_order_loss(model, pool.x, pool.seeds, pool.y, p.eps, task.eval_batch_size)
        return Selection(pool, fol, bi_end(fol, p.k_low, p.k_high))

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        model = task.copy_model()
        selection = self.select(task, model)
        repaired = retrain_on_selection(task, model, selection, p, "robot")
        pool, index = selection.pool, selection.index
        n_low, _ = bi_end_counts(len(pool), p.k_low, p.k_high)
        capped = p.k_low + p.k_high > len(pool)
        details = {"candidates": len(pool), "selected": len(index), "selected_low": n_low,
                   "selected_high": len(index) - n_low, "capped": capped, "eps": p.eps}
        rows = [
            diagnostic(self.name, "selected", len(index), len(pool), capped=capped),
            diagnostic(self.name, "selected_perturbed", 100.0 * (pool.condition[index] >= 0).float().mean().item(),
                       len(index), metric="percent"),
            diagnostic(self.name, "fol_low_max", float(selection.scores[index[:n_low]].max()), n_low, metric="fol")
            if n_low else None,
            diagnostic(self.name, "fol_high_min", float(selection.scores[index[n_low:]].min()), len(index) - n_low,
                       metric="fol") if len(index) > n_low else None,
        ] if len(index) else []
        repaired.details.update(details)
        repaired.diagnostics.extend(r for r in rows if r is not None)
        return repaired
