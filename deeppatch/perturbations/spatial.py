"""SENSEI's spatial and photometric search space, on batches of [0, 1] images (docs/deeppatch.md,
The reference's defaults).

A transform is a row of 7 genes (rotation deg, translate x px, translate y px, x-shear deg, zoom
factor, additive brightness in 1/255 units, contrast factor). Everything here works on tensors of
genes, (..., 7), so the neighbour sets of the spatial suite, the random-walk augmentor used for
training and the genetic operators of the SENSEI baseline share one vectorised implementation.

Fixes of the reference (numbered in docs/deeppatch.md): transforms run on [0, 1] pixels, never on normalised
tensors (reference bug 16); neighbour `idx % K` of base image `idx // K` (reference bug 17); one neighbour changes one
gene and all others stay at identity, sub-range bands included (reference bug 18); crossover swaps each gene
with a probability and returns new tensors (reference bug 19); the random walk keeps one chromosome per
sample, not per worker (reference bug 21). Every random draw comes from a caller-owned generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deeppatch.errors import DeepPatchError
from deeppatch.perturbations.base import Perturbation
from deeppatch.seeding import make_generator

GENES: tuple[str, ...] = ("rotation", "translate_x", "translate_y", "shear", "zoom", "brightness", "contrast")
ROTATION, TRANSLATE_X, TRANSLATE_Y, SHEAR, ZOOM, BRIGHTNESS, CONTRAST = range(len(GENES))
IDENTITY: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0)
DEFAULT_BANDS = 5
DEFAULT_NEIGHBOURS = 50
SENSEI_POPSIZE = 10
SENSEI_CROSSOVER_PROB = 0.4
# ITU-R 601-2 luma, the grey level torchvision's adjust_contrast takes the mean of
_LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class GeneRange:
    """One gene: the grid centre + step * j for j in -half_steps..half_steps, and its mutation step."""

    name: str
    centre: float
    step: float
    half_steps: int
    mutate_step: float

    @property
    def lo(self) -> float:
        return self.centre - self.step * self.half_steps

    @property
    def hi(self) -> float:
        return self.centre + self.step * self.half_steps

    def grid(self, band: int | None = None, bands: int = DEFAULT_BANDS) -> torch.Tensor:
        """The grid values (float64); with `band` k of `bands`, the reference's sub-range band
        (docs/deeppatch.md).

        Band k keeps centre +- [b (k-1)/bands, b k/bands] on each side (b = the half-width) with
        step/bands, i.e. offsets j * step/bands for half_steps (k-1) <= |j| <= half_steps k.
        """
        m = self.half_steps
        if band is None:
            j = torch.arange(-m, m + 1, dtype=torch.float64)
            return self.centre + self.step * j
        if not 1 <= band <= bands:
            raise DeepPatchError(f"sub-range band {band} is outside 1..{bands}")
        lo, hi = m * (band - 1), m * band
        pos = torch.arange(lo, hi + 1, dtype=torch.float64)
        j = torch.unique(torch.cat([-pos.flip(0), pos]))
        return self.centre + j * self.step / bands


@dataclass(frozen=True)
class SearchSpace:
    """The 7 gene ranges for one image size (translation = floor(10 % of the side) pixels)."""

    ranges: tuple[GeneRange, ...]
    height: int
    width: int

    def grids(self, band: int | None = None, bands: int = DEFAULT_BANDS) -> list[torch.Tensor]:
        return [r.grid(band, bands) for r in self.ranges]

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor([r.lo for r in self.ranges], dtype=torch.float32),
                torch.tensor([r.hi for r in self.ranges], dtype=torch.float32))

    def mutate_steps(self) -> torch.Tensor:
        return torch.tensor([r.mutate_step for r in self.ranges], dtype=torch.float32)


def search_space(height: int, width: int | None = None) -> SearchSpace:
    """SENSEI's grids (docs/deeppatch.md), with the translation range scaled to the image size."""
    width = height if width is None else width
    if height < 1 or width < 1:
        raise DeepPatchError(f"image size must be positive, got {height}x{width}")
    return SearchSpace((
        GeneRange("rotation", 0.0, 1.0, 30, 6.0),
        GeneRange("translate_x", 0.0, 1.0, math.floor(0.1 * width), 1.0),
        GeneRange("translate_y", 0.0, 1.0, math.floor(0.1 * height), 1.0),
        GeneRange("shear", 0.0, 3.0, 6, 3.6),
        GeneRange("zoom", 1.0, 0.05, 2, 0.02),
        GeneRange("brightness", 0.0, 2.0, 16, 4.0),
        GeneRange("contrast", 1.0, 0.05, 4, 0.05),
    ), height, width)


def identity_genes(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.tensor(IDENTITY, device=device).repeat(n, 1)


# --------------------------------------------------------------------------------------------
# applying genes to images


def affine_theta(genes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 2, 3) matrices for `F.affine_grid(align_corners=False)`: output pixel -> input pixel.

    The forward map, in pixel coordinates centred on the image (x right, y down), is
    p' = zoom * R(rotation) * [[1, -tan(shear)], [0, 1]] p + (tx, ty): the convention of
    torchvision's `affine(angle, translate, scale, shear=[shear, 0])` that the reference used: a
    positive rotation turns the picture clockwise, positive translations move it right and down.
    """
    g = genes.double()
    rot, shear = torch.deg2rad(g[:, ROTATION]), torch.deg2rad(g[:, SHEAR])
    scale = g[:, ZOOM]
    cos, sin, tan = torch.cos(rot), torch.sin(rot), torch.tan(shear)
    # forward 2x2 matrix A (det = zoom^2) and its inverse
    a, b = cos * scale, (-cos * tan - sin) * scale
    c, d = sin * scale, (-sin * tan + cos) * scale
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    tx, ty = g[:, TRANSLATE_X], g[:, TRANSLATE_Y]
    # src = A^-1 (dst - t), then pixels -> normalised coordinates (divide by half the side)
    hw, hh = width / 2.0, height / 2.0
    theta = torch.stack([
        torch.stack([ia, ib * hh / hw, -(ia * tx + ib * ty) / hw], dim=1),
        torch.stack([ic * hw / hh, id_, -(ic * tx + id_ * ty) / hh], dim=1),
    ], dim=1)
    return theta


def _affine(x: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
    theta = affine_theta(genes, x.shape[-2], x.shape[-1]).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-sample contrast around the image's mean grey level, clamped to [0, 1] (torchvision's rule)."""
    if x.shape[1] == 3:
        luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        mean = (x * luma).sum(1, keepdim=True).mean(dim=(1, 2, 3), keepdim=True)
    else:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
    f = factor.to(x.dtype).view(-1, 1, 1, 1)
    return (f * x + (1 - f) * mean).clamp(0.0, 1.0)


def apply_genes(x: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
    """Transform each image of a float batch (N, C, H, W) in [0, 1] by its row of genes (N, 7).

    Order of the reference: affine (nearest, fill 0), then + brightness/255 clamped, then contrast.
    Rows whose geometric genes are identity skip the resampling, so identity is exact.
    """
    if x.ndim != 4 or genes.shape != (x.shape[0], len(GENES)):
        raise DeepPatchError(f"need images (N, C, H, W) and genes (N, 7); got {tuple(x.shape)} and "
                             f"{tuple(genes.shape)}")
    genes = genes.to(device=x.device, dtype=torch.float32)
    out = x
    geometric = (genes[:, :ZOOM].ne(0).any(1)) | genes[:, ZOOM].ne(1)
    if bool(geometric.any()):
        idx = geometric.nonzero(as_tuple=True)[0]
        out = x.clone()
        out[idx] = _affine(x[idx], genes[idx])
    bright = genes[:, BRIGHTNESS].ne(0)
    if bool(bright.any()):
        out = (out + (genes[:, BRIGHTNESS] / 255.0).to(x.dtype).view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    contrast = genes[:, CONTRAST].ne(1)
    if bool(contrast.any()):
        out = adjust_contrast(out, genes[:, CONTRAST])
    return out


# --------------------------------------------------------------------------------------------
# neighbours: the fixed test sets


@dataclass(frozen=True)
class Neighbours:
    """K neighbour transforms: genes (K, 7) and which gene each one varies (K,)."""

    genes: torch.Tensor
    kinds: torch.Tensor

    def __len__(self) -> int:
        return len(self.kinds)


def draw_neighbours(
    space: SearchSpace, count: int, generator: torch.Generator, *, band: int | None = None,
    bands: int = DEFAULT_BANDS,
) -> Neighbours:
    """`count` neighbours: a transform type drawn with probability proportional to its grid size
    (within `band` when given), one value drawn uniformly from that grid, other genes at identity."""
    if count < 1:
        raise DeepPatchError(f"number of neighbours must be >= 1, got {count}")
    grids = space.grids(band, bands)
    sizes = torch.tensor([len(g) for g in grids], dtype=torch.float64)
    offsets = torch.cumsum(sizes, 0).long() - sizes.long()
    flat = torch.cat(grids).float()
    gen_device = generator.device
    kinds = torch.multinomial(sizes.to(gen_device), count, replacement=True, generator=generator).cpu()
    u = torch.rand(count, generator=generator, device=gen_device, dtype=torch.float64).cpu()
    pick = torch.minimum((u * sizes[kinds]).long(), sizes[kinds].long() - 1)
    genes = identity_genes(count)
    genes[torch.arange(count), kinds] = flat[offsets[kinds] + pick]
    return Neighbours(genes, kinds)


def neighbour_index(flat_index: torch.Tensor | int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(base image, neighbour) of position `flat_index` in a set of N * K neighbours (reference bug 17 fixed)."""
    idx = torch.as_tensor(flat_index, dtype=torch.long)
    return idx // k, idx % k


def neighbour_images(
    x: torch.Tensor, neighbours: Neighbours, start: int = 0, stop: int | None = None,
) -> torch.Tensor:
    """Positions start..stop of the neighbour set of base images `x` (float, [0, 1]).

    Position i holds neighbour i % K of base image i // K, so the N * K set lists the K
    neighbours of image 0, then those of image 1, and so on.
    """
    k = len(neighbours)
    stop = len(x) * k if stop is None else stop
    base, nb = neighbour_index(torch.arange(start, stop), k)
    return apply_genes(x[base.to(x.device)], neighbours.genes[nb])


# --------------------------------------------------------------------------------------------
# random chromosomes, mutation and crossover (training augmentation, SENSEI)


def random_genes(shape: int | Sequence[int], space: SearchSpace, generator: torch.Generator) -> torch.Tensor:
    """Chromosomes of shape (*shape, 7), each gene drawn uniformly from its full grid."""
    lead = (shape,) if isinstance(shape, int) else tuple(shape)
    n = math.prod(lead)
    cols = []
    for grid in space.grids():
        idx = torch.randint(len(grid), (n,), generator=generator, device=generator.device).cpu()
        cols.append(grid.float()[idx])
    return torch.stack(cols, dim=1).reshape(*lead, len(GENES))


def mutate(
    genes: torch.Tensor, space: SearchSpace, generator: torch.Generator, num_genes: int | None = None,
) -> torch.Tensor:
    """A mutated copy: per chromosome, `num_genes` distinct genes (default ceil(7/2) = 4) each get
    +step or -step (clipped to the grid's ends) or a mirror flip lo + hi - v, chosen uniformly."""
    num_genes = math.ceil(len(GENES) / 2) if num_genes is None else num_genes
    if not 0 <= num_genes <= len(GENES):
        raise DeepPatchError(f"number of genes to mutate must be in 0..{len(GENES)}, got {num_genes}")
    flat = genes.reshape(-1, len(GENES)).float().cpu()
    n, dev = flat.shape[0], generator.device
    order = torch.rand(n, len(GENES), generator=generator, device=dev).cpu().argsort(dim=1)
    chosen = torch.zeros(n, len(GENES), dtype=torch.bool)
    chosen.scatter_(1, order[:, :num_genes], True)
    op = torch.randint(3, (n, len(GENES)), generator=generator, device=dev).cpu()
    lo, hi = space.bounds()
    step = space.mutate_steps()
    moved = torch.where(op == 0, flat + step, torch.where(op == 1, flat - step, lo + hi - flat))
    moved = torch.maximum(torch.minimum(moved, hi), lo)
    out = torch.where(chosen, moved, flat)
    return out.reshape(genes.shape).to(genes.device)


def crossover(
    a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, swap_prob: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform crossover: each gene is swapped between the two parents with probability `swap_prob`.

    Returns two new tensors (never views of the parents), unlike the reference (reference bug 19).
    """
    if a.shape != b.shape:
        raise DeepPatchError(f"crossover parents differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not 0.0 <= swap_prob <= 1.0:
        raise DeepPatchError(f"swap probability must be in [0, 1], got {swap_prob}")
    mask = (torch.rand(a.shape, generator=generator, device=generator.device) < swap_prob).to(a.device)
    return torch.where(mask, b, a).clone(), torch.where(mask, a, b).clone()


def init_population(
    num_samples: int, space: SearchSpace, generator: torch.Generator, popsize: int = SENSEI_POPSIZE,
) -> torch.Tensor:
    """SENSEI's start: `popsize` random chromosomes per sample, (N, P, 7)."""
    if popsize < 2:
        raise DeepPatchError(f"population size must be >= 2, got {popsize}")
    return random_genes((num_samples, popsize), space, generator)


def evolve(
    population: torch.Tensor, space: SearchSpace, generator: torch.Generator,
    crossover_prob: float = SENSEI_CROSSOVER_PROB, swap_prob: float = 0.5,
) -> torch.Tensor:
    """Parents plus P offspring per sample, (N, 2P, 7): with probability `crossover_prob` (per sample)
    the offspring are children of random distinct parent pairs, otherwise mutated copies of the parents."""
    n, p, _ = population.shape
    dev = generator.device
    pairs = (p + 1) // 2
    first = torch.randint(p, (n, pairs), generator=generator, device=dev).cpu()
    second = (first + torch.randint(1, p, (n, pairs), generator=generator, device=dev).cpu()) % p
    pop = population.cpu()
    rows = torch.arange(n).unsqueeze(1)
    c1, c2 = crossover(pop[rows, first], pop[rows, second], generator, swap_prob)
    children = torch.cat([c1, c2], dim=1)[:, :p]
    mutants = mutate(pop, space, generator)
    use_cross = (torch.rand(n, generator=generator, device=dev).cpu() < crossover_prob).view(n, 1, 1)
    offspring = torch.where(use_cross, children, mutants)
    return torch.cat([pop, offspring], dim=1).to(population.device)


def select_fittest(population: torch.Tensor, scores: torch.Tensor, popsize: int, largest: bool = True) -> torch.Tensor:
    """Keep the `popsize` chromosomes per sample with the highest (or lowest) score, best first."""
    if scores.shape != population.shape[:2]:
        raise DeepPatchError(f"scores {tuple(scores.shape)} do not match population {tuple(population.shape[:2])}")
    order = scores.argsort(dim=1, descending=largest, stable=True)[:, :popsize].to(population.device)
    return population.gather(1, order.unsqueeze(-1).expand(-1, -1, population.shape[-1]))


def apply_population(x: torch.Tensor, population: torch.Tensor) -> torch.Tensor:
    """Every chromosome of every sample applied: (N * P, C, H, W), sample-major."""
    n, p, _ = population.shape
    return apply_genes(x.repeat_interleave(p, dim=0), population.reshape(n * p, -1))


class RandomWalkAugmentor:
    """The reference's RandomAugmentor with one chromosome per training sample (fixes reference bug 21).

    Each call mutates the chromosomes of the samples in the batch and applies all 7 transforms.
    The state is a plain tensor, so a training checkpoint can store and restore it.
    """

    def __init__(self, num_samples: int, space: SearchSpace, generator: torch.Generator) -> None:
        self.space = space
        self.generator = generator
        self.state = random_genes(num_samples, space, generator)

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).cpu()
        self.state[idx] = mutate(self.state[idx], self.space, self.generator)
        return apply_genes(x, self.state[idx])


# --------------------------------------------------------------------------------------------
# the perturbation family


class SpatialTransforms(Perturbation):
    """The spatial family: conditions are the sub-range bands "range=k/5".

    `apply` gives each image its own random neighbour within the band (type proportional to the
    band's grid size, value uniform on it), drawn from `generator`.
    """

    name = "spatial"

    def __init__(self, bands: int = DEFAULT_BANDS) -> None:
        if int(bands) < 1:
            raise DeepPatchError(f"number of sub-range bands must be >= 1, got {bands}")
        self.bands = int(bands)

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(f"range={k}/{self.bands}" for k in range(1, self.bands + 1))

    def apply(self, x: torch.Tensor, condition: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if not 0 <= condition < self.bands:
            raise DeepPatchError(f"spatial condition {condition} is outside 0..{self.bands - 1}")
        if x.shape[0] == 0:
            return x
        # without a generator the draw is still deterministic (a fixed seed), never global state
        gen = generator if generator is not None else make_generator(0, "spatial", condition)
        space = search_space(x.shape[-2], x.shape[-1])
        nb = draw_neighbours(space, x.shape[0], gen, band=condition + 1, bands=self.bands)
        return apply_genes(x, nb.genes)
