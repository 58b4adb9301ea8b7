"""Fine-tuning all parameters on the maintenance stream (the reference's `finetune`, spec 5.1).

Half the images clean, half perturbed at a uniformly drawn condition of the task's family, redrawn
every epoch; SGD lr 0.01, momentum 0.9, weight decay 5e-4, CosineAnnealingLR(T_max=200) stepped per
epoch, batch 256, 20 epochs; the epoch with the best clean + all-perturbed val accuracy is kept,
compared against the starting model.
"""

from __future__ import annotations

from dataclasses import dataclass

from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.repair_tools import FinetuneParams, fine_tune, p_clean_field


@dataclass
class Params(FinetuneParams):
    p_clean: float = p_clean_field()


class Finetune(Corrector):
    """All parameters fine-tuned on 50 % clean / 50 % perturbed data, best epoch on append-val."""

    name = "finetune"
    description = "fine-tune every parameter on the clean + perturbed maintenance stream"
    paper = "DeepPatch reference (Wei et al., TOSEM 2023), the reference's finetune (docs/deeppatch.md)"
    Params = Params
    test_params = {"epochs": 1}

    def repair(self, task: RepairTask) -> Repaired:
        return fine_tune(task, self.params, tag="finetune")
