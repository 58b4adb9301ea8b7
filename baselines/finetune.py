"""Fine-tuning all parameters on the maintenance stream (the reference's `finetune`, spec 5.1).

Half the images clean, half perturbed at a uniformly drawn condition of the task's family, redrawn
every epoch; SGD lr 0.01, momentum 0.9, weight decay 5e-4, CosineAnnealingLR(T_max=200) stepped per
epoch, batch 256, 20 epochs; the epoch with the best clean + all-perturbed val accuracy is kept,
compared against the starting model.
"""

from __future__ import annotations

from dataclasses import dataclass

from deeppatch.baseline_tools import (
    FinetuneParams,
    fine_tune_all,
    p_clean_field,
    repair_cost,
    stream_batches,
)
from deeppatch.corrector import Corrector, Repaired, RepairTask, Stopwatch


@dataclass
class Params(FinetuneParams):
    p_clean: float = p_clean_field()


class Finetune(Corrector):
    """All parameters fine-tuned on 50 % clean / 50 % perturbed data, best epoch on append-val."""

    name = "finetune"
    description = "fine-tune every parameter on the clean + perturbed maintenance stream"
    paper = "DeepPatch reference (Wei et al., TOSEM 2023), section 5.1 of the spec"
    Params = Params

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        with Stopwatch() as clock:
            model = task.copy_model()
            data = task.train_data()
            epochs = task.epochs(p.epochs)
            batches, n = stream_batches(task, data, task.batch_size(p.batch_size), p.p_clean, "finetune")
            result, trainable = fine_tune_all(task, model, tag="finetune", epochs=epochs, batches=batches,
                                              num_batches=n, optim=p.optim())
        return Repaired(model, repair_cost(clock.elapsed, trainable, epochs, result, train_size=len(data)))
