"""DeepCorrect (Borkar & Karam, IEEE TIP 2019): correction units on the most susceptible filters,
without DeepPatch's switch (every input takes the corrected path).

As in DeepPatch's re-implementation (docs/deeppatch.md, The reference's defaults): filters ranked by correction priority (``featswap``:
the accuracy recovered when a filter's distorted activation is replaced by its clean one), a
residual correction unit (1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1, plus
identity) on the top ``ratio`` of every groups=1 conv, trained alone on clean + distorted data.
Unlike the reference, the corrected channels are written back in place, so the frozen layers that
follow see channels in their original order (reference bug 7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from deeppatch.corrector import Corrector, Repaired, RepairTask, Restorer
from deeppatch.technique import patching
from deeppatch.technique.blame import METHODS
from deeppatch.technique.deeppatch_corrector import DeepPatchParams, cached_ranking, train_patch


@dataclass
class Params:
    blame: str = field(default="featswap", metadata={"help": "ranking: featswap (DeepCorrect's correction "
                                                             "priority) or perfloss", "choices": METHODS})
    ratio: float = field(default=0.25, metadata={"help": "fraction of each conv's filters corrected",
                                                 "min": 0.0, "max": 1.0})
    epochs: int = field(default=20, metadata={"help": "training epochs", "min": 0})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate", "min": 0.0})
    batch_size: int = field(default=256, metadata={"help": "training batch size", "min": 1})
    layers: list[str] = field(default_factory=lambda: ["*"], metadata={"help": "conv names to correct (fnmatch)"})


class DeepCorrect(Corrector):
    """DeepCorrect's correction units on featswap-ranked filters, always on (no switch)."""

    name = "deepcorrect"
    description = "DeepCorrect (Borkar & Karam, TIP 2019): residual correction units, no switch"
    paper = "doi:10.1109/TIP.2019.2916541"
    Params = Params
    test_params = {"epochs": 1}

    def repair(self, task: RepairTask) -> Repaired:
        p: Params = self.params
        dp = DeepPatchParams(blame=p.blame, unit="crtunit", ratio=p.ratio, epochs=p.epochs, lr=p.lr,
                             batch_size=p.batch_size, layers=list(p.layers), gate_epochs=0, gate="reference")
        ranking, _ = cached_ranking(task, p.blame)
        network, extra = train_patch(task, dp, ranking)
        extra["mode"] = "patched"
        training = extra["training"]
        return Repaired(network, epochs=training["epochs_run"] + training["resumed_from"],
                        details={"kept": training["kept"]}, kind="deepcorrect", extra=extra)

    @classmethod
    def restorers(cls) -> Mapping[str, Restorer]:
        return {"deepcorrect": patching.restore_from_record}
