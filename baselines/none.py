"""The model under maintenance itself: the reference row of every table (zero cost)."""

from __future__ import annotations

from deeppatch.baseline_tools import repair_cost
from deeppatch.corrector import Corrector, Repaired, RepairTask, Stopwatch


class NoRepair(Corrector):
    """No repair: a private copy of the model under maintenance."""

    name = "none"
    description = "no repair: the model under maintenance as it is (the reference row)"

    def repair(self, task: RepairTask) -> Repaired:
        with Stopwatch() as clock:
            model = task.copy_model().eval()
        return Repaired(model, repair_cost(clock.elapsed, trainable_params=0, epochs=0))
