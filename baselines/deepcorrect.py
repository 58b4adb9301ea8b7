"""DeepCorrect (Borkar & Karam, IEEE TIP 2019): correction units on the filters whose correction helps most.

The paper's method, as its text and the authors' released code (github.com/tsborkar/DeepCorrect)
define it; their defaults in brackets:

1. Correction priority. On a validation subset [1,000 images for CIFAR, 5 per class for ImageNet],
   for every distortion level i and every filter j of every conv layer, replace filter j's output
   for the distorted image by its output for the clean image (all other filters keep their
   distorted outputs) and measure the top-1 error e_ij; with e_i the error of the unchanged model
   on level i, the filter's priority is tau_j = sum_i |e_ij - e_i| / e_i (relative change of the
   error when that one filter is corrected, summed over the levels; a level the model makes no
   error on is skipped). Filters are ranked by tau, highest first, per layer.
2. Correction units on the top-ranked [75 % of the filters of conv1 and conv2, 50 % of conv3-conv5:
   every conv layer of AlexNet] filters of every conv layer: a residual block on those channels of
   the conv's output (before its non-linearity / BatchNorm), written back in place:
   y_S <- y_S + 1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 (y_S), every conv of
   width |S| [the "critically wide" unit; with it the paper's AlexNet model has the 2.81 M trainable
   parameters it reports]. These are DeepPatch's ``crtunit`` units (`deeppatch.technique.patching`),
   initialised here with He-normal weights as the authors' Keras code.
3. Only the units train; every pre-trained weight is frozen. Training data: every batch half clean,
   half distorted at a uniformly drawn level, after the standard augmentation [rotation +-20 degrees,
   shifts +-15 %, horizontal flips]; SGD [lr 0.1, Nesterov momentum 0.9, learning-rate decay 1e-5 per
   iteration, lr / 10 every 10 epochs of two passes over the data, L1 penalty 1e-5 on the unit
   weights, batch 250]; the model kept is the epoch with the best accuracy on a validation set of clean
   plus every distortion level (the task's append-val here).

Ours: the above (augmentation aside, see below), with the family's conditions as the distortion
levels (several corruption types are levels alike), the budget's epochs and batch size (defaults 20
epochs, batch 250), `ratios` applied to the convs in network order (the last value repeats: [0.75,
0.75, 0.5] is the paper's AlexNet setting), and the learning-rate decay applied by scaling the loss,
which is what Keras' decay does to the momentum update. Frozen BatchNorms re-estimate a second set
of statistics on the training stream (Keras 1, which the authors used, updated the statistics of
non-trainable BatchNorms too); the original statistics stay untouched.

Remaining differences: no training augmentation by default, because the benchmark trains every model
and corrector on the same unaugmented data (``augment=paper`` restores the paper's, whose horizontal
flips are wrong for digits; its rotations and shifts fill with zeros where Keras repeats the border).
Details the paper's networks do not exercise or that are implementation noise: the unit's last 1x1 conv
has no bias; the authors' AlexNet conv1 unit used 5x5 kernels (after an 11x11 stride-4 layer).
(The authors' earlier CIFAR-100 release, arXiv v1, used width-64 units with an input BatchNorm on 50 %
of the filters of the first layers; the journal's results and parameter counts are the units above.)
`blame` = featswap / perfloss / perfloss-fo swaps in DeepPatch's rankings instead of the correction
priority: an ablation, not the paper. (DeepPatch's featswap, which this baseline used before, is not
the correction priority: it swaps on one noisy val set in which half the images are clean and each
other image has a random condition, and ranks by the pooled accuracy gain, without the per-level
error normalisation; its unit and in-place write-back are the paper's and are kept.) Unlike the
DeepPatch reference, the corrected channels are written back in place, so the frozen layers that
follow see channels in their original order (reference bug 7).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.corrector import Corrector, Repaired, RepairTask, Restorer
from deeppatch.data import TensorSplit, stratified_subset
from deeppatch.errors import DeepPatchError
from deeppatch.perturbations.base import Perturbation
from deeppatch.perturbations.spatial import apply_genes as transform
from deeppatch.perturbations.spatial import identity_genes
from deeppatch.progress import progress
from deeppatch.repair_tools import append_validator, perturbed_val, train_model, training_details
from deeppatch.seeding import make_generator
from deeppatch.technique import patching
from deeppatch.technique.blame import METHODS, _Counter, resolve_engine
from deeppatch.technique.blame_common import conv_layers
from deeppatch.technique.deeppatch_corrector import cached_ranking
from deeppatch.technique.patching import PatchedNetwork, PatchSite
from deeppatch.training import Batch, OptimConfig

PRIORITY = "priority"
RANKINGS = (PRIORITY, *METHODS)
AUGMENTS = ("paper", "no-flip", "none")


@dataclass
class Params:
    blame: str = field(default=PRIORITY, metadata={
        "help": "filter ranking: priority (the paper's correction priority), or an ablation with DeepPatch's "
                "featswap / perfloss / perfloss-fo", "choices": RANKINGS})
    ratios: list[float] = field(default_factory=lambda: [0.75, 0.75, 0.5], metadata={
        "help": "fraction of each conv's filters corrected, convs in network order, the last value repeating "
                "(the paper: 75 % of conv1-2, 50 % of conv3-5)", "min": 0.0, "max": 1.0})
    ratio: float | None = field(default=None, metadata={
        "help": "one fraction for every conv (overrides ratios)", "min": 0.0, "max": 1.0})
    layers: list[str] = field(default_factory=lambda: ["*"], metadata={
        "help": "conv names to correct (fnmatch; the paper: every conv layer)"})
    rank_images: int = field(default=1000, metadata={
        "help": "validation images the correction priority is measured on, per distortion level (the paper: "
                "1,000 for CIFAR); the cost is filters x conditions x images forward passes of the layers after "
                "each conv", "min": 1})
    epochs: int = field(default=20, metadata={"help": "training epochs (the budget's epochs override it)",
                                              "min": 0})
    batch_size: int = field(default=250, metadata={"help": "training batch size, half clean and half distorted "
                                                           "(the paper: 250; the budget's overrides it)", "min": 2})
    lr: float = field(default=0.1, metadata={"help": "SGD learning rate (the paper: 0.1)", "min": 0.0})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (the paper: 0.9)", "min": 0.0,
                                                   "max": 0.999})
    nesterov: bool = field(default=True, metadata={"help": "Nesterov momentum (the paper: yes)"})
    lr_decay: float = field(default=1e-5, metadata={
        "help": "Keras learning-rate decay: lr / (1 + decay * iterations) (the paper: 1e-5)", "min": 0.0})
    lr_step_epochs: int = field(default=20, metadata={
        "help": "divide the learning rate by 10 every this many epochs (passes over the data; the paper: every "
                "10 of its epochs of two passes)", "min": 1})
    l1: float = field(default=1e-5, metadata={"help": "L1 penalty on the units' conv weights (the paper: 1e-5)",
                                              "min": 0.0})
    weight_decay: float = field(default=0.0, metadata={"help": "SGD (L2) weight decay (the paper: none)",
                                                       "min": 0.0})
    augment: str = field(default="none", metadata={
        "help": "training augmentation: none (the benchmark's data pipeline, as every corrector), or the paper's "
                "(rotation +-20 deg, shifts +-15 %, horizontal flips), or no-flip", "choices": AUGMENTS})

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise DeepPatchError(f"parameter 'lr' must be > 0, got {self.lr!r}")
        fractions = [self.ratio] if self.ratio is not None else self.ratios
        if not fractions or any(not r > 0 for r in fractions):
            raise DeepPatchError(f"parameter 'ratios' must be fractions > 0, got {fractions!r}")


# --------------------------------------------------------------------------------------------
# 1. the correction priority


def _capture(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The output of module `name` for the batch x."""
    store: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: store.append(o.detach().clone()))
    try:
        model(x)
    finally:
        handle.remove()
    return store[0]


def _swap_in(clean_rows: torch.Tensor):
    """The edit that gives channel `ch` of a distorted activation its clean value (same images)."""
    def edit(t: torch.Tensor, ch: int, k: int) -> None:
        t[:, ch] = clean_rows[:, ch]

    return edit


@torch.inference_mode()
def correction_priority(
    model: nn.Module, val: TensorSplit, family: Perturbation, *, seed: int, device: torch.device,
    layers: list[str] | None = None, batch_size: int = 500, engine: str = "auto", show_progress: bool | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """tau_j = sum over the family's conditions i of |e_ij - e_i| / e_i for every filter j of every conv
    (or of the convs named in `layers`): e_i the model's top-1 error on val distorted by condition i,
    e_ij the error when filter j's distorted output is replaced by its clean one. Returns
    ({layer: tau per channel}, facts). The model is not modified (a private copy runs)."""
    import copy

    model = copy.deepcopy(model).to(device).eval()
    engine = resolve_engine(model, engine)
    convs = [(n, m) for n, m in conv_layers(model) if layers is None or n in layers]
    clean = val.to(device)
    clean_x = [x for x, _ in clean.batches(batch_size, device=device)]
    levels = []
    for c in range(len(family.conditions)):
        distorted = family.perturb_split(clean, c, device=device,
                                         generator=make_generator(seed, "deepcorrect", "priority", c))
        batches = list(distorted.batches(batch_size, device=device))
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
        levels.append((batches, 1.0 - correct / max(len(clean), 1)))
    counter = _Counter(model, engine, 4096)
    bar = progress(total=sum(m.out_channels for _, m in convs) * len(levels), desc="deepcorrect priority",
                   unit="filter", enable=show_progress)
    scores: dict[str, list[float]] = {}
    n = len(clean)
    for name, conv in convs:
        clean_acts = [_capture(model, name, x) for x in clean_x]
        tau = torch.zeros(conv.out_channels, dtype=torch.float64)
        for batches, error in levels:
            layer_batches = [(x, y, act) for (x, y), act in zip(batches, clean_acts, strict=True)]
            counts = counter.layer(name, conv.out_channels, layer_batches, _swap_in, bar)
            if error > 0:
                swapped_error = 1.0 - counts.double() / n
                tau += (swapped_error - error).abs() / error
        scores[name] = tau.tolist()
    bar.close()
    return scores, {"engine": engine, "images": n, "base_error": [e for _, e in levels]}


def rank(scores: Mapping[str, list[float]]) -> dict[str, dict[str, list]]:
    """layer -> {"indices": channels by priority, highest first (ties by index), "score": their tau}."""
    out = {}
    for layer, tau in scores.items():
        order = torch.sort(-torch.tensor(tau, dtype=torch.float64), stable=True).indices.tolist()
        out[layer] = {"indices": order, "score": [tau[i] for i in order]}
    return out


def cached_priority(task: RepairTask, p: Params) -> tuple[dict[str, Any], dict[str, Any]]:
    """The correction-priority ranking of the model under maintenance, once per (model, data, images)."""

    def compute() -> dict[str, Any]:
        val = stratified_subset(task.splits.val, p.rank_images, task.seed)
        scores, info = correction_priority(task.model, val, task.perturbation, seed=task.seed, device=task.device,
                                           batch_size=task.eval_batch_size, show_progress=task.show_progress)
        return {"ranking": rank(scores), "info": info}

    cached = task.cached_json("deepcorrect-priority", {"images": p.rank_images}, compute)
    return cached["ranking"], cached["info"]


# --------------------------------------------------------------------------------------------
# 2. the correction units


def plan(model: nn.Module, ranking: Mapping[str, Mapping[str, list]], p: Params) -> tuple[list[PatchSite], dict]:
    """The top floor(C * ratio) ranked filters of every selected conv, ratios by position in the network."""
    specs, skipped = [], {}
    position = 0
    for name, conv in conv_layers(model):
        if not any(fnmatch.fnmatchcase(name, pat) for pat in p.layers):
            skipped[name] = "not selected by layers"
            continue
        ratio = p.ratio if p.ratio is not None else p.ratios[min(position, len(p.ratios) - 1)]
        position += 1
        k = int(math.floor(conv.out_channels * ratio + 1e-9))
        if k < 1:
            skipped[name] = f"k = floor({conv.out_channels} x {ratio}) = 0"
            continue
        if name not in ranking:
            raise DeepPatchError(f"deepcorrect: the ranking has no entry for conv {name!r}")
        ranked = [int(i) for i in ranking[name]["indices"]]
        specs.append(PatchSite(name, ranked[:k], "crtunit"))
    if not specs:
        raise DeepPatchError("deepcorrect: no conv layer is left to correct (check layers and ratios)")
    return specs, skipped


def he_normal_init(network: PatchedNetwork, seed: int) -> None:
    """He-normal unit weights (the authors' Keras init), one seeded generator per layer."""
    for name, conv in network.patched_convs():
        gen = make_generator(seed, "deepcorrect-init", name)
        for m in conv.cru.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=gen)


def unit_conv_weights(network: PatchedNetwork) -> list[nn.Parameter]:
    return [m.weight for _, c in network.patched_convs() for m in c.cru.modules() if isinstance(m, nn.Conv2d)]


# --------------------------------------------------------------------------------------------
# 3. training


class PaperStream:
    """The paper's batches: augmented, first half of each batch clean, second half distorted at a
    uniformly drawn condition; seeded per epoch. Records the epoch and iteration for the schedule."""

    def __init__(self, task: RepairTask, data: TensorSplit, batch_size: int, augment: str) -> None:
        self.task, self.data, self.batch_size, self.augment = task, data, batch_size, augment
        self.epoch, self.iteration = 0, 0

    @property
    def num_batches(self) -> int:
        return self.data.num_batches(self.batch_size)

    def augmentation(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Keras ImageDataGenerator(rotation_range=20, width/height_shift_range=0.15, horizontal_flip)."""
        n, _, h, w = x.shape
        dev = gen.device
        genes = identity_genes(n)
        genes[:, 0] = (torch.rand(n, generator=gen, device=dev).cpu() * 2 - 1) * 20.0
        genes[:, 1] = (torch.rand(n, generator=gen, device=dev).cpu() * 2 - 1) * 0.15 * w
        genes[:, 2] = (torch.rand(n, generator=gen, device=dev).cpu() * 2 - 1) * 0.15 * h
        flip = (torch.rand(n, generator=gen, device=dev) < 0.5).to(x.device)
        out = transform(x, genes)
        if self.augment == "paper":
            out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
        return out

    def __call__(self, epoch: int) -> Iterator[Batch]:
        self.epoch, self.iteration = epoch, epoch * self.num_batches
        task, family = self.task, self.task.perturbation
        order = make_generator(task.seed, "deepcorrect", "order", epoch)
        gen = make_generator(task.seed, "deepcorrect", "stream", epoch, device=task.device)
        for x, y in self.data.batches(self.batch_size, device=task.device, shuffle=True, generator=order):
            if self.augment != "none":
                x = self.augmentation(x, gen)
            half = len(x) // 2
            cond = torch.randint(len(family.conditions), (half,), generator=gen, device=gen.device).to(x.device)
            tail = x[len(x) - half:]
            for c in torch.unique(cond).tolist():
                idx = (cond == c).nonzero(as_tuple=True)[0]
                tail[idx] = family.apply(tail[idx], int(c), gen)
            yield x, y


class PaperStep:
    """Cross-entropy + L1 on the unit weights, scaled by the paper's learning-rate factor
    0.1 ** (epoch // lr_step_epochs) / (1 + lr_decay * iteration) (Keras scales the gradient that
    enters the momentum buffer, which is what scaling the loss does with PyTorch's SGD)."""

    def __init__(self, p: Params, stream: PaperStream, weights: list[nn.Parameter]) -> None:
        self.p, self.stream, self.weights = p, stream, weights

    def factor(self) -> float:
        s = self.stream
        return 0.1 ** (s.epoch // self.p.lr_step_epochs) / (1.0 + self.p.lr_decay * s.iteration)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        if self.p.l1 > 0:
            loss = loss + self.p.l1 * sum(w.abs().sum() for w in self.weights)
        scaled = loss * self.factor()
        self.stream.iteration += 1
        return scaled


class DeepCorrect(Corrector):
    """DeepCorrect's correction units on the filters of highest correction priority, always on."""

    name = "deepcorrect"
    description = ("DeepCorrect (Borkar & Karam, TIP 2019): residual correction units on the filters of highest "
                   "correction priority")
    paper = "Borkar & Karam, IEEE TIP 28(12), 2019, doi 10.1109/TIP.2019.2924172"
    Params = Params
    test_params = {"epochs": 1, "rank_images": 40}
    stand_in = ""

    def repair(self, task: RepairTask) -> Repaired:
        p: Params = self.params
        if p.blame == PRIORITY:
            ranking, rank_info = cached_priority(task, p)
        else:
            ranking, rank_info = cached_ranking(task, p.blame)
        base = task.copy_model().eval()
        specs, skipped = plan(base, ranking, p)
        network = PatchedNetwork(base, specs, seed=task.seed).to(task.device)
        he_normal_init(network, task.seed)
        trainable = network.freeze_all_but_patch()
        network.set_mode("patched")
        data = task.train_data()
        stream = PaperStream(task, data, task.batch_size(p.batch_size), p.augment)
        result = train_model(
            task, network, trainable, tag="deepcorrect", epochs=task.epochs(p.epochs), batches=stream,
            num_batches=stream.num_batches, step=PaperStep(p, stream, unit_conv_weights(network)),
            optim=OptimConfig(lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, nesterov=p.nesterov,
                              schedule="constant"),
            validate=append_validator(task, perturbed_val(task)), select="best",
        )
        network.eval()
        extra = {
            "specs": [s.to_dict() for s in specs], "skipped": skipped, "mode": "patched",
            "plan": {"ratios": [p.ratio] if p.ratio is not None else list(p.ratios), "layers": list(p.layers),
                     "ranking": p.blame},
            "training": {k: v for k, v in result.to_dict().items() if k != "history"},
            "history": result.history, "params": asdict(p), "ranking_info": rank_info,
        }
        corrected = {s.layer: len(s.indices) for s in specs}
        return Repaired(network, epochs=result.epochs_run + result.resumed_from, kind="deepcorrect", extra=extra,
                        details=training_details(result, train_size=len(data), ranking=p.blame, corrected=corrected))

    @classmethod
    def restorers(cls) -> Mapping[str, Restorer]:
        return {"deepcorrect": patching.restore_from_record}
