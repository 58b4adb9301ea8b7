"""Clean test accuracy."""

from __future__ import annotations

import time

from torch import nn

from deeppatch.evaluation import predict
from deeppatch.results import SuiteRow
from deeppatch.suites.base import Suite, SuiteContext


class CleanSuite(Suite):
    name = "clean"
    defaults = {}

    def evaluate(self, model: nn.Module, ctx: SuiteContext) -> list[SuiteRow]:
        t0 = time.perf_counter()
        correct = predict(model, ctx.test, batch_size=ctx.batch_size, device=ctx.device) == ctx.test.y.cpu()
        acc = 100.0 * correct.float().mean().item() if len(correct) else float("nan")
        return [SuiteRow("clean", "clean", acc, len(ctx.test), group="clean", eval_time_s=time.perf_counter() - t0,
                         correct=correct)]
