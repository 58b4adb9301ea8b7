"""The paper's blur suite: accuracy at each sigma, their mean, and the clean + all-sigmas union."""

from __future__ import annotations

import time

import torch
from torch import nn

from deeppatch.errors import DeepPatchError
from deeppatch.evaluation import predict
from deeppatch.perturbations.blur import BLUR_SIGMAS, GaussianBlur
from deeppatch.results import SuiteRow
from deeppatch.suites.base import Suite, SuiteContext


class BlurSuite(Suite):
    name = "blur"
    defaults = {"sigmas": list(BLUR_SIGMAS), "quantize": False}

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        sigmas = self.settings["sigmas"]
        if not isinstance(sigmas, list | tuple) or not sigmas or any(float(s) <= 0 for s in sigmas):
            raise DeepPatchError(f"blur sigmas must be a non-empty list of positive numbers, got {sigmas!r}")
        self.family = GaussianBlur(sigmas, quantize=bool(self.settings["quantize"]))

    def evaluate(self, model: nn.Module, ctx: SuiteContext) -> list[SuiteRow]:
        y = ctx.test.y.cpu()
        t0 = time.perf_counter()
        correct = [(predict(model, ctx.test, batch_size=ctx.batch_size, device=ctx.device) == y).float()]
        rows = []
        for i, (sigma, cond) in enumerate(zip(self.family.sigmas, self.family.conditions, strict=True)):
            t1 = time.perf_counter()
            pred = predict(model, ctx.test, batch_size=ctx.batch_size, device=ctx.device,
                           transform=lambda x, i=i: self.family.apply(x, i), desc=f"blur {cond}")
            c = (pred == y).float()
            correct.append(c)
            rows.append(SuiteRow("blur", cond, 100.0 * c.mean().item(), len(y), group="sigma", severity=sigma,
                                 settings={"quantize": self.family.quantize}, eval_time_s=time.perf_counter() - t1,
                                 correct=c.bool()))
        total = time.perf_counter() - t0
        rows.append(SuiteRow("blur", "mean", sum(r.value for r in rows) / len(rows), len(y) * len(rows),
                             group="aggregate", settings={"quantize": self.family.quantize}, eval_time_s=total))
        rows.append(SuiteRow("blur", "union", 100.0 * torch.cat(correct).mean().item(), len(y) * len(correct),
                             group="aggregate", settings={"quantize": self.family.quantize, "includes_clean": True},
                             eval_time_s=total))
        return rows
