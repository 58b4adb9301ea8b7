"""DeepGini prioritisation for retraining (Feng et al., ISSTA 2020), as the DeepPatch reference uses it.

Every candidate is scored by the Gini impurity of the model under maintenance,
xi(x) = 1 - sum_i p_i(x)^2 with p = softmax(logits); the 10 % most impure candidates are kept and
every parameter is fine-tuned on them for 40 epochs (docs/deeppatch.md, The reference's defaults), best
epoch on append-val.

The candidates are ONE fixed perturbed copy of the training data (each image clean with probability
0.5, else perturbed at a uniform condition of the maintenance family), generated once from a seeded
generator, so the images trained on are exactly the images that were scored. The reference
re-augmented a selected sample each time it was loaded (reference bug 21).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.errors import DeepPatchError
from deeppatch.repair_tools import (
    Selection,
    SelectionParams,
    diagnostic,
    perturbed_pool,
    predict_logits,
    retrain_on_selection,
)


def gini_impurity(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """1 - sum of squared softmax probabilities, per image (higher: less certain)."""
    probs = F.softmax(predict_logits(model, x, batch_size), dim=1)
    return 1.0 - (probs**2).sum(dim=1)


def most_impure(impurity: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k largest impurities (ties: lower position first)."""
    return torch.argsort(impurity, descending=True, stable=True)[:k]


@dataclass
class Params(SelectionParams):
    fraction: float = field(default=0.1, metadata={"help": "fraction of the candidates kept, most impure first",
                                                   "min": 0.0, "max": 1.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.fraction > 0:
            raise DeepPatchError(f"parameter 'fraction' must be > 0, got {self.fraction!r}")


class DeepGini(Corrector):
    """Fine-tune every parameter on the most Gini-impure 10 % of a fixed perturbed training set."""

    name = "deepgini"
    description = "DeepGini (Feng et al. 2020): retrain on the 10 % most impure (uncertain) perturbed samples"
    paper = "Feng et al., ISSTA 2020, doi 10.1145/3395363.3397357"
    Params = Params
    test_params = {"epochs": 1}

    def select(self, task: RepairTask, model: nn.Module | None = None) -> Selection:
        """Score the fixed candidate pool with the model under maintenance (or its copy `model`)."""
        pool = perturbed_pool(task, task.train_data(), self.params.p_clean, "deepgini")
        model = model if model is not None else task.copy_model()
        impurity = gini_impurity(model, pool.x, task.eval_batch_size)
        k = max(1, int(self.params.fraction * len(pool))) if len(pool) else 0
        return Selection(pool, impurity, most_impure(impurity, k))

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        model = task.copy_model()
        selection = self.select(task, model)
        repaired = retrain_on_selection(task, model, selection, p, "deepgini")
        pool, index = selection.pool, selection.index
        picked = selection.scores[index]
        details = {"candidates": len(pool), "selected": len(index),
                   "impurity_selected_min": float(picked.min()) if len(index) else None,
                   "impurity_mean": float(selection.scores.mean()) if len(pool) else None}
        rows = [
            diagnostic(self.name, "selected", len(index), len(pool)),
            diagnostic(self.name, "selected_perturbed", 100.0 * (pool.condition[index] >= 0).float().mean().item(),
                       len(index), metric="percent"),
            diagnostic(self.name, "impurity_selected_mean", float(picked.mean()), len(index), metric="gini"),
            diagnostic(self.name, "impurity_mean", float(selection.scores.mean()), len(pool), metric="gini"),
        ] if len(index) else []
        repaired.details.update(details)
        repaired.diagnostics.extend(rows)
        return repaired
