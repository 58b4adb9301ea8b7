"""SENSEI: genetic-search data augmentation (Gao et al., ICSE 2020), as the DeepPatch reference runs it.

Every training image owns a population of `popsize` (10) spatial/photometric transformations from
SENSEI's search space (rotation, translation, shear, zoom, brightness, contrast;
`deeppatch.perturbations.spatial`). At the start of every epoch, per image:

1. the population is evolved: offspring by crossover (probability 0.4 per image) or mutation;
2. parents and offspring are scored by the cross-entropy of the current model (eval mode), and
   the `popsize` highest-loss transformations survive (the fitness is the loss: SENSEI looks for
   the variant the model is worst at);
3. the image is *robust* if even the worst surviving variant has a loss below `robust_threshold`
   (1e-3); robust images are trained on clean, the others on their worst variant.

Then every parameter is trained for 20 epochs on those images (SGD lr 0.01, momentum 0.9, weight
decay 5e-4, cosine T_max 200 per epoch, batch 256), best epoch on the task's append-val. The
reference never called its mutation/crossover, and its crossover swapped every gene (reference bug
19): its search degenerated to the worst of 10 fixed random transforms. Here the search runs.
The populations are saved in the work folder each epoch, so an interrupted repair resumes with them.
SENSEI searches its own spatial space whatever the task's perturbation family is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.data import TensorSplit, to_float
from deeppatch.perturbations.spatial import (
    SENSEI_CROSSOVER_PROB,
    SENSEI_POPSIZE,
    apply_genes,
    apply_population,
    evolve,
    init_population,
    search_space,
    select_fittest,
)
from deeppatch.repair_tools import FinetuneParams, diagnostic, fine_tune
from deeppatch.seeding import make_generator
from deeppatch.storage import atomic_torch_save, safe_torch_load
from deeppatch.training import Batch

log = logging.getLogger(__name__)


@dataclass
class Params(FinetuneParams):
    popsize: int = field(default=SENSEI_POPSIZE, metadata={"help": "transformations kept per image", "min": 2})
    crossover_prob: float = field(default=SENSEI_CROSSOVER_PROB, metadata={
        "help": "probability that an image's offspring come from crossover rather than mutation",
        "min": 0.0, "max": 1.0})
    robust_threshold: float = field(default=1e-3, metadata={
        "help": "an image is robust (trained clean) when every surviving variant's loss is below this", "min": 0.0})


@torch.no_grad()
def variant_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, population: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
    """Cross-entropy of every transformation of every image, (N, P), in eval mode (x: uint8 or float)."""
    model.eval()
    n, p, _ = population.shape
    per_chunk = max(1, batch_size // p)
    out = []
    for i in range(0, n, per_chunk):
        xs = apply_population(to_float(x[i:i + per_chunk]), population[i:i + per_chunk])
        logits = model(xs).float()
        out.append(F.cross_entropy(logits, y[i:i + per_chunk].repeat_interleave(p), reduction="none").view(-1, p))
    return torch.cat(out).cpu() if out else torch.empty(0, p)


class SenseiBatches:
    """The batch source: evolves and selects the populations when an epoch starts, then yields the
    clean image (robust) or its worst variant (not robust), in a seeded shuffled order."""

    def __init__(self, task: RepairTask, model: nn.Module, data: TensorSplit, p: Params, batch_size: int) -> None:
        self.task, self.model, self.data, self.p, self.batch_size = task, model, data, p, batch_size
        self.space = search_space(data.x.shape[-2], data.x.shape[-1])
        self.population: torch.Tensor | None = None  # (N, P, 7) on the CPU, worst first
        self.robust: torch.Tensor | None = None  # (N,) bool
        self.history: list[dict[str, float]] = []
        self.state_path = task.workspace.state_path("sensei-population")

    def parents(self, epoch: int) -> torch.Tensor:
        if self.population is not None:
            return self.population
        if self.task.workspace.resume and self.state_path is not None and self.state_path.is_file():
            saved = safe_torch_load(self.state_path)
            if int(saved["epoch"]) == epoch:
                return saved["parents"]
        if epoch:
            log.warning("sensei: no saved populations for epoch %d; starting from random ones", epoch + 1)
        gen = make_generator(self.task.seed, "sensei", "init", device=self.task.device)
        return init_population(len(self.data), self.space, gen, self.p.popsize)

    def search(self, epoch: int) -> None:
        """One generation for every image: evolve, score, keep the fittest, mark robust images."""
        parents = self.parents(epoch)
        if self.state_path is not None:
            atomic_torch_save({"epoch": epoch, "parents": parents}, self.state_path)
        gen = make_generator(self.task.seed, "sensei", "evolve", epoch, device=self.task.device)
        candidates = evolve(parents, self.space, gen, self.p.crossover_prob)
        was_training = self.model.training
        data = self.data.to(self.task.device)
        losses = variant_losses(self.model, data.x, data.y, candidates, self.task.eval_batch_size)
        self.model.train(was_training)
        self.population = select_fittest(candidates, losses, self.p.popsize)
        worst = losses.max(dim=1).values
        self.robust = worst < self.p.robust_threshold
        self.history.append({"epoch": epoch + 1, "robust_fraction": self.robust.float().mean().item(),
                             "worst_loss_mean": worst.mean().item()})

    def __call__(self, epoch: int) -> Iterator[Batch]:
        self.search(epoch)
        assert self.population is not None and self.robust is not None
        order = torch.randperm(len(self.data), generator=make_generator(self.task.seed, "sensei", "order", epoch))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            dev_idx = idx.to(self.data.x.device)
            x, y = to_float(self.data.x[dev_idx]).to(self.task.device), self.data.y[dev_idx].to(self.task.device)
            hard = (~self.robust[idx]).nonzero(as_tuple=True)[0]
            if len(hard):
                x = x.clone()
                x[hard.to(x.device)] = apply_genes(x[hard.to(x.device)], self.population[idx[hard], 0])
            yield x, y


class Sensei(Corrector):
    """Fine-tune every parameter on each image's worst variant found by SENSEI's genetic search."""

    name = "sensei"
    description = "SENSEI (Gao et al. 2020): train on the worst spatial variant found by a genetic search"
    paper = "Gao et al., ICSE 2020, doi 10.1145/3377811.3380415"
    Params = Params
    test_params = {"popsize": 4, "epochs": 1}

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        model = task.copy_model()
        data = task.train_data()
        source = SenseiBatches(task, model, data, p, task.batch_size(p.batch_size))
        repaired = fine_tune(task, p, tag="sensei", model=model, data=data, batches=source)
        repaired.details["search"] = source.history
        if source.history:
            repaired.diagnostics.append(diagnostic(self.name, "robust_fraction_last_epoch",
                                                   100.0 * source.history[-1]["robust_fraction"], len(data),
                                                   metric="percent"))
        return repaired
