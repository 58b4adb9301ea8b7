"""Routing on perturbations the switch may never have seen: per condition of a family, the switched
model's accuracy next to each path alone (the model under maintenance, the always-repaired model)
and the share of inputs routed to the repair, so a reader sees where the switch helps, where it is
neutral and where it hurts. Models without a switch get their accuracy per condition only.

Settings: ``family`` (blur | corruptions | spatial) and ``settings`` (the family's, e.g.
``{ corruptions = ["fog", "snow"], severities = [3] }``).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from deeppatch.errors import DeepPatchError
from deeppatch.perturbations import get_perturbation
from deeppatch.results import SuiteRow
from deeppatch.seeding import make_generator
from deeppatch.suites.base import Suite, SuiteContext
from deeppatch.switch_interface import is_switched
from deeppatch.technique.gating import path_rows


class RoutingSuite(Suite):
    """Per condition: switched accuracy, each path's accuracy, share routed to the repair."""

    name = "routing"
    defaults: dict[str, Any] = {"family": "corruptions", "settings": {}}

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if not isinstance(self.settings["settings"], dict):
            raise DeepPatchError(f"routing suite: settings must be a table, got {self.settings['settings']!r}")
        self.family = get_perturbation(str(self.settings["family"]), **self.settings["settings"])

    def evaluate(self, model: nn.Module, ctx: SuiteContext) -> list[SuiteRow]:
        t0 = time.perf_counter()
        model = model.to(ctx.device).eval()
        if is_switched(model):
            rows = path_rows(model, ctx.test, self.family, ctx.device, ctx.batch_size, suite=self.name, seed=ctx.seed)
        else:
            rows = []
            for i, cond in enumerate(self.family.conditions):
                gen = make_generator(ctx.seed, "path-rows", self.family.name, cond)
                correct = 0
                with torch.inference_mode():
                    for x, y in ctx.test.batches(ctx.batch_size, device=ctx.device):
                        correct += int((model(self.family.apply(x, i, gen)).argmax(1) == y).sum())
                rows.append(SuiteRow(self.name, f"test/paths/{cond}/model", 100.0 * correct / len(ctx.test),
                                     len(ctx.test), group="paths",
                                     settings={"family": self.family.name, "split": "test", "path": "no switch"}))
        spent = time.perf_counter() - t0
        for row in rows:
            row.settings = {**row.settings, **{k: v for k, v in self.settings.items() if k != "settings"},
                            "family_settings": self.settings["settings"]}
            row.eval_time_s = spent / max(len(rows), 1)
        return rows

