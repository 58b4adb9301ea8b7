"""DeepPatch as a Corrector (work in progress: the technique modules land next)."""

from __future__ import annotations

from deeppatch.corrector import Corrector, Repaired, RepairTask


class DeepPatchCorrector(Corrector):
    name = "deeppatch"
    description = "DeepPatch (Wei et al., TOSEM 2023): blamed-filter patches with a runtime switch"

    def repair(self, task: RepairTask) -> Repaired:
        raise NotImplementedError("DeepPatch's corrector is being implemented")
