"""The spatial suite: accuracy on SENSEI-style neighbour sets with the reference's bugs fixed
(docs/deeppatch.md).

For a seeded, class-balanced subset of `n` test images, K neighbour transforms are drawn (one
transform type per neighbour, proportional to its grid size; one value from its grid), and every
image is evaluated under all K of them: position i of the N * K set is neighbour i % K of image
i // K. The same is done for each of the 5 sub-range bands. Each set is quantised to 8 bits (as
images are stored) and, when the context has a cache folder, written once and reused.

Rows: "neighbours" (all N * K), "range=k/5" (one set per band), "transform=<gene>" (the
neighbours of the full set that vary that gene).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeppatch.code_identity import module_code_hash
from deeppatch.data import TensorSplit, stratified_subset, to_float
from deeppatch.errors import DeepPatchError
from deeppatch.evaluation import predict
from deeppatch.perturbations.spatial import (
    DEFAULT_BANDS,
    DEFAULT_NEIGHBOURS,
    GENES,
    Neighbours,
    draw_neighbours,
    neighbour_images,
    search_space,
)
from deeppatch.results import SuiteRow
from deeppatch.seeding import make_generator
from deeppatch.storage import atomic_torch_save, safe_torch_load, tensors_digest
from deeppatch.suites.base import Suite, SuiteContext

CACHE_FORMAT = "deeppatch.spatial-neighbours/1"
DEFAULT_N = 1000


@dataclass
class NeighbourSet:
    """A materialised neighbour set: uint8 images (N * K, C, H, W), labels, and the K transforms."""

    split: TensorSplit
    neighbours: Neighbours
    band: int | None
    from_cache: bool = False


def fingerprint(split: TensorSplit) -> str:
    """Short hash of the base images and labels, so a cache entry never serves other data."""
    return tensors_digest([("x", split.x), ("y", split.y)], length=12)


def quantize(x: torch.Tensor) -> torch.Tensor:
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def materialise(
    base: TensorSplit, neighbours: Neighbours, *, device: torch.device | str = "cpu", chunk: int = 4096,
) -> TensorSplit:
    """All N * K neighbour images of `base` as uint8 on the CPU, with repeated labels."""
    k = len(neighbours)
    total = len(base) * k
    out = torch.empty((total, *base.x.shape[1:]), dtype=torch.uint8)
    x = to_float(base.x.to(device))
    genes = Neighbours(neighbours.genes.to(device), neighbours.kinds)
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        out[start:stop] = quantize(neighbour_images(x, genes, start, stop)).cpu()
    return TensorSplit(out, base.y.cpu().repeat_interleave(k))


def cache_path(cache_dir: Path, dataset: str, fp: str, seed: int, n: int, k: int, band: int | None,
               bands: int) -> Path:
    label = "full" if band is None else f"range{band}of{bands}"
    code = module_code_hash("deeppatch.perturbations.spatial")  # an edit of the transforms regenerates
    return Path(cache_dir) / "spatial" / f"{dataset}-{fp}-seed{seed}-n{n}-k{k}-{label}-c{code}.pt"


def neighbour_set(
    base: TensorSplit, *, dataset: str, seed: int, k: int, band: int | None, bands: int = DEFAULT_BANDS,
    device: torch.device | str = "cpu", cache_dir: Path | None = None,
) -> NeighbourSet:
    """The fixed neighbour set of (data, seed, n, K, band), read from or written to `cache_dir`."""
    fp = fingerprint(base)
    path = cache_path(cache_dir, dataset, fp, seed, len(base), k, band, bands) if cache_dir is not None else None
    if path is not None and path.is_file():
        rec = safe_torch_load(path)
        if isinstance(rec, dict) and rec.get("format") == CACHE_FORMAT and rec.get("fingerprint") == fp:
            nb = Neighbours(rec["genes"], rec["kinds"])
            return NeighbourSet(TensorSplit(rec["x"], rec["y"]), nb, band, from_cache=True)
    space = search_space(base.x.shape[-2], base.x.shape[-1])
    gen = make_generator(seed, "spatial-neighbours", "full" if band is None else f"band{band}/{bands}")
    nb = draw_neighbours(space, k, gen, band=band, bands=bands)
    split = materialise(base, nb, device=device)
    if path is not None:
        atomic_torch_save({"format": CACHE_FORMAT, "fingerprint": fp, "x": split.x, "y": split.y,
                           "genes": nb.genes, "kinds": nb.kinds, "seed": seed, "band": band, "bands": bands}, path)
    return NeighbourSet(split, nb, band)


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        extra = " or null" if allow_none else ""
        raise DeepPatchError(f"spatial suite {name} must be a positive integer{extra}, got {value!r}")


class SpatialSuite(Suite):
    """Neighbour accuracy, the 5 sub-range accuracies and per-transform accuracy (all in %)."""

    name = "spatial"
    defaults = {"k": DEFAULT_NEIGHBOURS, "n": DEFAULT_N, "bands": DEFAULT_BANDS, "sub_ranges": True,
                "per_transform": True, "batch_size": None}

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        _positive_int("k", self.settings["k"])
        _positive_int("n", self.settings["n"], allow_none=True)
        _positive_int("bands", self.settings["bands"])
        _positive_int("batch_size", self.settings["batch_size"], allow_none=True)
        for key in ("sub_ranges", "per_transform"):
            if not isinstance(self.settings[key], bool):
                raise DeepPatchError(f"spatial suite {key} must be true or false, got {self.settings[key]!r}")

    def evaluate(self, model: nn.Module, ctx: SuiteContext) -> list[SuiteRow]:
        model.eval()
        k, bands = self.settings["k"], self.settings["bands"]
        batch_size = self.settings["batch_size"] or ctx.batch_size
        base = stratified_subset(ctx.test, self.settings["n"], seed=ctx.seed)
        common = {"k": k, "n_images": len(base), "seed": ctx.seed, "bands": bands}
        rows: list[SuiteRow] = []
        band_list: list[int | None] = [None] + (list(range(1, bands + 1)) if self.settings["sub_ranges"] else [])
        for band in band_list:
            t0 = time.perf_counter()
            nset = neighbour_set(base, dataset=ctx.info.name, seed=ctx.seed, k=k, band=band, bands=bands,
                                 device=ctx.device, cache_dir=ctx.cache_dir)
            desc = "spatial neighbours" if band is None else f"spatial range={band}/{bands}"
            pred = predict(model, nset.split, batch_size=batch_size, device=ctx.device, desc=desc)
            correct = pred.eq(nset.split.y.cpu())
            wall = time.perf_counter() - t0
            settings = {**common, "cached": nset.from_cache}
            if band is None:
                rows.append(SuiteRow("spatial", "neighbours", 100.0 * correct.float().mean().item(), len(correct),
                                     group="aggregate", source="generated", settings=settings, eval_time_s=wall,
                                     correct=correct))
                if self.settings["per_transform"]:
                    rows += self._per_transform(correct, nset.neighbours, common)
            else:
                rows.append(SuiteRow("spatial", f"range={band}/{bands}", 100.0 * correct.float().mean().item(),
                                     len(correct), group="range", severity=float(band), source="generated",
                                     settings=settings, eval_time_s=wall, correct=correct))
        return rows

    @staticmethod
    def _per_transform(correct: torch.Tensor, nb: Neighbours, common: dict[str, Any]) -> list[SuiteRow]:
        k = len(nb)
        by_neighbour = correct.view(-1, k)  # (N, K): row i holds image i's K neighbours
        rows = []
        for g, gene in enumerate(GENES):
            cols = (nb.kinds == g).nonzero(as_tuple=True)[0]
            if len(cols) == 0:
                continue  # no neighbour of this type was drawn
            c = by_neighbour[:, cols]
            rows.append(SuiteRow("spatial", f"transform={gene}", 100.0 * c.float().mean().item(), c.numel(),
                                 group="transform", source="generated",
                                 settings={**common, "neighbours_of_type": len(cols)}, eval_time_s=0.0))
        return rows
