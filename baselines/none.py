"""The model under maintenance itself: the reference row of every table (zero cost)."""

from __future__ import annotations

from deeppatch.corrector import Corrector, Repaired, RepairTask


class NoRepair(Corrector):
    """No repair: a private copy of the model under maintenance."""

    name = "none"
    description = "no repair: the model under maintenance as it is (the reference row)"

    def repair(self, task: RepairTask) -> Repaired:
        return Repaired(task.copy_model().eval().requires_grad_(False))
