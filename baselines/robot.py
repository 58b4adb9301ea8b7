"""RobOT: robustness-oriented testing (Wang et al., ICSE 2021): FOL-guided test generation, FOL-based
selection, retraining on the training data plus the selected tests.

FOL, the first-order loss of a generated test x' of a seed x (the first-order stationarity condition of
the inner maximisation of adversarial training in the Linf ball of radius eps; Wang et al. 2019):

    FOL(x') = eps * ||g||_1 - <g, x' - x>,   g = grad_{x'} CE(f(x'), y),

the gradient taken at x'. The DeepPatch reference used (g - x) for (x' - x) (reference bug 24).

1. Generation, the paper's FOL-guided fuzzing (as the authors' fol_guided_fuzzing.py runs it): from
   `seeds` random training images, each seed keeps a queue that starts with the seed and a running
   maximum FOLmax = 0. A round pops one candidate per seed and mutates it `mutations` times in a chain;
   a mutant enters the queue when its FOL exceeds FOLmax (which it then becomes) and its relative L2
   distance to the seed is below `xi`; a mutant the model classifies differently from the seed is a
   generated test (its label is the seed's). A seed stops when its queue runs dry, or after `rounds`
   rounds (our cap; the authors' loop has none). The mutation (`generation`):
   * "pgd": the paper's gradient mutation, ascent on FOL(x') - p_c(x') (p_c: the probability of the
     seed's predicted class) with a random step factor U[0.5, 1.5), PGD-style: a sign step of eps/6 (the
     authors' PGD step) projected into the Linf eps-ball around the seed. Seeds with a vanishing
     gradient (L2 norm <= 1e-3) are dropped first, as the authors do.
   * "family": the same loop with the maintenance family as the mutation: each mutant is the family's
     perturbation, at a uniformly drawn condition, of its parent (so chains compound: blur of blur).
2. Selection by FOL among the generated tests: "bi-end" (BE-ST) keeps the `k_low` lowest and `k_high`
   highest (the paper: equal halves); "k-multisection" (KM-ST) cuts [min(0, lowest), highest] into
   `sections` equal ranges and draws (k_low + k_high) / sections at random from each, filling a short
   range from the rest (the authors' script: ranges of [0, max), whose maximum falls outside, a dropped
   remainder, and fills that may repeat a test).
3. Retraining: every parameter on the training data plus the selected tests (`retrain_on`
   "train+selected", the paper), 40 epochs, batches of 64, best epoch on validation.

Defaults. The paper's (the authors' scripts): 1,000 seeds, 2 chained mutations per pop, xi 0.5, eps
0.01 (their CIFAR-10 setting), BE-ST, 1,000-10,000 selected tests, retraining 40 epochs at batch 64. Ours: the same,
10,000 selected (5,000 + 5,000; the largest of theirs), at most 10 rounds per seed, generation "family".
The budget's epochs replace the 40, its training subset is the seed pool. Remaining differences: the
"family" mutation replaces the paper's gradient step (a blur has none), FOL guides with the Linf form
(the authors' fuzzing script guides with the L2 form ||g||_2), the loss at the seed's label rather than
its predicted class, and retraining uses the benchmark's shared SGD loop (theirs: Adam at 1e-4 with
augmentation); validation is clean + every perturbed val image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.corrector import Corrector, Repaired, RepairTask
from deeppatch.data import to_float
from deeppatch.errors import DeepPatchError
from deeppatch.repair_tools import (
    RETRAIN_ON,
    FinetuneParams,
    PerturbedPool,
    Selection,
    diagnostic,
    predict_logits,
    retrain_on_selection,
)
from deeppatch.seeding import make_generator

GENERATIONS = ("family", "pgd")
SELECTIONS = ("bi-end", "k-multisection")


def _fol(model: nn.Module, x_gen: torch.Tensor, x_seed: torch.Tensor, y: torch.Tensor, eps: float,
         create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x' with grad, logits, FOL) for one batch; the summed loss gives each image its own gradient."""
    xg = x_gen.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg).float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg, create_graph=create_graph)
        g = g.flatten(1)
        fol = eps * g.abs().sum(1) - (g * (xg - x_seed).flatten(1)).sum(1)
    return xg, logits, fol


def first_order_loss(model: nn.Module, x_gen: torch.Tensor, x_seed: torch.Tensor, y: torch.Tensor, eps: float,
                     batch_size: int = 512) -> torch.Tensor:
    """FOL(x') = eps * ||g||_1 - <g, x' - x> per test, g the cross-entropy gradient at x' (eval mode)."""
    return fol_and_predictions(model, x_gen, x_seed, y, eps, batch_size)[0]


def fol_and_predictions(model: nn.Module, x_gen: torch.Tensor, x_seed: torch.Tensor, y: torch.Tensor, eps: float,
                        batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """FOL and predicted class per test, from one forward and backward pass."""
    model.eval()
    fols, preds = [], []
    for i in range(0, len(x_gen), batch_size):
        _, logits, fol = _fol(model, x_gen[i:i + batch_size], x_seed[i:i + batch_size], y[i:i + batch_size], eps)
        fols.append(fol.detach())
        preds.append(logits.detach().argmax(1))
    if not fols:
        return torch.empty(0, device=x_gen.device), torch.empty(0, dtype=torch.long, device=x_gen.device)
    return torch.cat(fols), torch.cat(preds)


def fol_ascent_direction(model: nn.Module, x_gen: torch.Tensor, x_seed: torch.Tensor, y: torch.Tensor,
                         y_pred: torch.Tensor, eps: float, batch_size: int = 512) -> torch.Tensor:
    """The gradient of the fuzzing objective FOL(x') - p_c(x') with respect to x' (second order)."""
    model.eval()
    out = []
    for i in range(0, len(x_gen), batch_size):
        sl = slice(i, i + batch_size)
        xg, logits, fol = _fol(model, x_gen[sl], x_seed[sl], y[sl], eps, create_graph=True)
        with torch.enable_grad():
            p_c = F.softmax(logits, 1).gather(1, y_pred[sl].view(-1, 1)).sum()
            (d,) = torch.autograd.grad(fol.sum() - p_c, xg)
        out.append(d.detach())
    return torch.cat(out) if out else torch.empty_like(x_gen)


def bi_end_counts(n: int, k_low: int, k_high: int) -> tuple[int, int]:
    """How many to take from each end: (k_low, k_high), or all n split in their ratio when they overlap."""
    if k_low + k_high <= n:
        return k_low, k_high
    n_low = n * k_low // (k_low + k_high)
    return n_low, n - n_low


def bi_end(scores: torch.Tensor, k_low: int, k_high: int) -> torch.Tensor:
    """BE-ST: positions of the lowest and then the highest scores (highest first), never the same one twice."""
    order = torch.argsort(scores, stable=True)
    n_low, n_high = bi_end_counts(len(order), k_low, k_high)
    return torch.cat([order[:n_low], order[len(order) - n_high:].flip(0)])


def section_of(scores: torch.Tensor, sections: int) -> torch.Tensor:
    """KM-ST's range of each score: [min(0, lowest), highest] cut into `sections` equal ranges (last one closed)."""
    lo = min(0.0, float(scores.min()))
    width = (float(scores.max()) - lo) / sections
    if width <= 0:
        return torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    return ((scores - lo) / width).floor().long().clamp_(0, sections - 1)


def k_multisection(scores: torch.Tensor, n: int, sections: int, generator: torch.Generator) -> torch.Tensor:
    """KM-ST: n / sections positions drawn at random from each range (the first n % sections ranges one more);
    a short range is taken whole and the shortfall drawn from the candidates not yet chosen. All candidates
    when n covers them."""
    total = len(scores)
    if n >= total:
        return torch.arange(total, device=scores.device)
    which = section_of(scores, sections).cpu()
    chosen, short = [], 0
    for s in range(sections):
        per = n // sections + (1 if s < n % sections else 0)
        members = (which == s).nonzero(as_tuple=True)[0]
        if len(members) <= per:
            chosen.append(members)
            short += per - len(members)
        else:
            chosen.append(members[torch.randperm(len(members), generator=generator)[:per]])
    index = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)
    if short:
        rest = torch.ones(total, dtype=torch.bool)
        rest[index] = False
        rest = rest.nonzero(as_tuple=True)[0]
        index = torch.cat([index, rest[torch.randperm(len(rest), generator=generator)[:short]]])
    return index.to(scores.device)


@dataclass
class Generated:
    """The tests FOL-guided fuzzing generated, with where they came from."""

    pool: PerturbedPool  # x: the tests, seeds: their seeds, y: the seeds' labels, condition: last family condition
    fol: torch.Tensor  # FOL of each test under the model it was generated against
    seed_index: torch.Tensor  # position of each test's seed in the seed set
    depth: torch.Tensor  # mutations from the seed
    round: torch.Tensor  # the round (0-based) that generated it
    fol_max: torch.Tensor  # (rounds run + 1, seeds): each seed's FOLmax before round 1 and after every round
    accepted: int  # mutants that entered a queue
    mutants: int  # mutants made
    seeds: int  # seeds fuzzed


@dataclass
class Params(FinetuneParams):
    epochs: int = field(default=40, metadata={"help": "retraining epochs (the paper: 40; the budget's epochs "
                                                      "replace it)", "min": 0})
    batch_size: int = field(default=64, metadata={"help": "retraining batch size (the paper: 64; the budget's "
                                                          "overrides it)", "min": 1})
    generation: str = field(default="family", metadata={
        "help": "mutation of the FOL-guided fuzzing: family (the maintenance family's perturbations) or pgd (the "
                "paper's FOL-gradient step, PGD-style in the Linf eps-ball)", "choices": GENERATIONS})
    seeds: int = field(default=1000, metadata={
        "help": "training images fuzzed, drawn at random (the paper: 1,000; 0: all)", "min": 0})
    mutations: int = field(default=2, metadata={"help": "chained mutations per popped candidate (the paper: 2)",
                                                "min": 1})
    rounds: int = field(default=10, metadata={"help": "at most this many pops per seed (ours; the paper runs until "
                                                      "the queue is empty)", "min": 1})
    xi: float = field(default=0.5, metadata={
        "help": "a mutant enters the queue only within this relative L2 distance of its seed (the paper: 0.5)",
        "min": 0.0})
    eps: float = field(default=0.01, metadata={"help": "Linf radius of the FOL and of the pgd ball (the paper: 0.01 on "
                                                       "CIFAR-10)", "min": 0.0})
    selection: str = field(default="bi-end", metadata={
        "help": "bi-end (BE-ST: lowest and highest FOL) or k-multisection (KM-ST: uniform over FOL ranges)",
        "choices": SELECTIONS})
    k_low: int = field(default=5000, metadata={"help": "bi-end: tests kept from the low-FOL end (k-multisection: "
                                                       "k_low + k_high in all)", "min": 0})
    k_high: int = field(default=5000, metadata={"help": "bi-end: tests kept from the high-FOL end", "min": 0})
    sections: int = field(default=4, metadata={"help": "k-multisection: number of FOL ranges (the paper: 4)",
                                               "min": 1})
    retrain_on: str = field(default="train+selected", metadata={
        "help": "train+selected: the training data plus the selected tests (the paper); selected: the selected "
                "tests only (the DeepPatch reference)", "choices": RETRAIN_ON})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k_low + self.k_high == 0:
            raise DeepPatchError("parameters 'k_low' and 'k_high' select nothing: at least one must be > 0")
        if self.generation == "pgd" and not self.eps > 0:
            raise DeepPatchError(f"parameter 'eps' must be > 0 for generation 'pgd', got {self.eps!r}")


class RobOT(Corrector):
    """Fuzz tests guided by the first-order loss, keep both FOL ends, retrain on training data plus them."""

    name = "robot"
    description = ("RobOT (Wang et al. 2021): FOL-guided fuzzing from training seeds, bi-end FOL selection, "
                   "retraining on the training data plus the selected tests")
    paper = "Wang et al., ICSE 2021, doi 10.1109/ICSE43902.2021.00038"
    Params = Params
    test_params = {"seeds": 60, "rounds": 3, "k_low": 20, "k_high": 20, "epochs": 1}
    stand_in = ""

    def seed_set(self, task: RepairTask, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """`seeds` random training images (all when 0 or more than there are); pgd drops static ones."""
        p = self.params
        data = task.train_data()
        index = torch.arange(len(data))
        if 0 < p.seeds < len(data):
            index = torch.randperm(len(data), generator=make_generator(task.seed, "robot", "seeds"))[:p.seeds]
        x, y = to_float(data.x[index.to(data.x.device)]), data.y[index.to(data.y.device)]
        if p.generation == "pgd" and len(y):
            g = torch.cat([self._input_grad(model, x[i:i + task.eval_batch_size], y[i:i + task.eval_batch_size])
                           for i in range(0, len(y), task.eval_batch_size)])
            keep = g.flatten(1).norm(dim=1) > 1e-3
            x, y = x[keep], y[keep]
        return x, y

    @staticmethod
    def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(F.cross_entropy(model(xg).float(), y, reduction="sum"), xg)
        return g

    def mutate(self, task: RepairTask, model: nn.Module, x: torch.Tensor, seeds: torch.Tensor, y: torch.Tensor,
               y_pred: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One mutation of every candidate in `x`: (mutants, family condition or -1)."""
        p = self.params
        if p.generation == "family":
            return task.perturbation.random_mix(x, gen, p_clean=0.0)
        d = fol_ascent_direction(model, x, seeds, y, y_pred, p.eps, task.eval_batch_size)
        factor = (torch.rand(len(x), generator=gen) + 0.5).to(x.device).view(-1, *[1] * (x.dim() - 1))
        out = x + (p.eps / 6) * factor * d.sign()
        out = torch.min(torch.max(out, seeds - p.eps), seeds + p.eps).clamp_(0.0, 1.0)
        return out.detach(), torch.full((len(x),), -1, dtype=torch.long, device=x.device)

    def generate(self, task: RepairTask, model: nn.Module) -> Generated:
        """FOL-guided fuzzing of the seed set against `model` (the model under maintenance)."""
        p = self.params
        model.eval()
        seeds, y = self.seed_set(task, model)
        n = len(y)
        y_pred = predict_logits(model, seeds, task.eval_batch_size).argmax(1) if n else y.clone()
        seed_norm = seeds.flatten(1).norm(dim=1).clamp_min(1e-12)
        queues: list[list[torch.Tensor]] = [[seeds[i]] for i in range(n)]
        depths: list[list[int]] = [[0] for _ in range(n)]
        fol_max = torch.zeros(n, device=seeds.device)
        trace = [fol_max.clone()]
        found: dict[str, list[torch.Tensor]] = {k: [] for k in ("x", "s", "fol", "cond", "depth", "round")}
        accepted = mutants = 0
        for r in range(p.rounds):
            active = torch.tensor([i for i in range(n) if queues[i]], dtype=torch.long)
            if not len(active):
                break
            gen = make_generator(task.seed, "robot", "fuzz", r)  # CPU, as the families draw
            x = torch.stack([queues[i].pop(0) for i in active.tolist()])
            depth = torch.tensor([depths[i].pop(0) for i in active.tolist()], dtype=torch.long)
            act = active.to(seeds.device)
            s, ys, yp = seeds[act], y[act], y_pred[act]
            for _ in range(p.mutations):
                x, cond = self.mutate(task, model, x, s, ys, yp, gen)
                depth = depth + 1
                mutants += len(x)
                fol, pred = fol_and_predictions(model, x, s, ys, p.eps, task.eval_batch_size)
                dist = (x - s).flatten(1).norm(dim=1) / seed_norm[act]
                take = (fol > fol_max[act]) & (dist < p.xi)
                for j in take.nonzero(as_tuple=True)[0].tolist():
                    i = int(active[j])
                    fol_max[i] = fol[j]
                    queues[i].append(x[j].clone())  # not a view that keeps the whole batch alive
                    depths[i].append(int(depth[j]))
                accepted += int(take.sum())
                failing = pred != yp
                if failing.any():
                    found["x"].append(x[failing])
                    found["s"].append(act[failing])
                    found["fol"].append(fol[failing])
                    found["cond"].append(cond[failing])
                    found["depth"].append(depth.to(x.device)[failing])
                    found["round"].append(torch.full((int(failing.sum()),), r, dtype=torch.long, device=x.device))
            trace.append(fol_max.clone())
        if found["x"]:
            seed_index = torch.cat(found["s"])
            pool = PerturbedPool(torch.cat(found["x"]), seeds[seed_index], y[seed_index], torch.cat(found["cond"]))
            fol, depth, rnd = torch.cat(found["fol"]), torch.cat(found["depth"]), torch.cat(found["round"])
        else:
            empty = seeds[:0]
            seed_index = torch.empty(0, dtype=torch.long, device=seeds.device)
            pool = PerturbedPool(empty, empty, y[:0], seed_index.clone())
            fol, depth, rnd = torch.empty(0, device=seeds.device), seed_index.clone(), seed_index.clone()
        return Generated(pool, fol, seed_index, depth, rnd, torch.stack(trace), accepted, mutants, n)

    def choose(self, task: RepairTask, scores: torch.Tensor) -> torch.Tensor:
        """Positions of the selected tests by the selection strategy."""
        p = self.params
        if not len(scores):
            return torch.empty(0, dtype=torch.long, device=scores.device)
        if p.selection == "bi-end":
            return bi_end(scores, p.k_low, p.k_high)
        return k_multisection(scores, p.k_low + p.k_high, p.sections, make_generator(task.seed, "robot", "kmst"))

    def select(self, task: RepairTask, model: nn.Module | None = None,
               generated: Generated | None = None) -> Selection:
        """Generate tests against the model under maintenance (unless given), then select among them by FOL."""
        if generated is None:
            generated = self.generate(task, model if model is not None else task.copy_model())
        return Selection(generated.pool, generated.fol, self.choose(task, generated.fol))

    def repair(self, task: RepairTask) -> Repaired:
        p = self.params
        model = task.copy_model()
        generated = self.generate(task, model)
        selection = self.select(task, generated=generated)
        index = selection.index
        n_low = bi_end_counts(len(index), p.k_low, p.k_high)[0] if p.selection == "bi-end" else 0
        details = {"generation": p.generation, "seeds": generated.seeds, "mutants": generated.mutants,
                   "accepted": generated.accepted, "generated": len(selection.pool), "selected": len(index),
                   "selection": p.selection, "retrain_on": p.retrain_on, "eps": p.eps,
                   "rounds_run": len(generated.fol_max) - 1}
        if p.selection == "bi-end":
            details.update(selected_low=n_low, selected_high=len(index) - n_low)
        if not len(index) and p.retrain_on == "selected":
            return Repaired(model.eval(), epochs=0, details={**details, "kept": "start (nothing generated)"})
        repaired = retrain_on_selection(task, model, selection, p, "robot")
        repaired.details.update(details)
        fol = selection.scores[index]
        repaired.diagnostics.extend([
            diagnostic(self.name, "generated", len(selection.pool), generated.mutants),
            diagnostic(self.name, "selected", len(index), len(selection.pool)),
            *([diagnostic(self.name, "fol_selected_min", float(fol.min()), len(index), metric="fol"),
               diagnostic(self.name, "fol_selected_max", float(fol.max()), len(index), metric="fol")]
              if len(index) else []),
        ])
        return repaired
