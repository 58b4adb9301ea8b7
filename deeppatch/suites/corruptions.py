"""Common corruptions: accuracy on 15 corruptions x 5 severities, their means, two sources.

* canonical: the released CIFAR-10-C / CIFAR-100-C arrays, read with robustbench's own loader from
  ``<data_dir>/CIFAR-10-C/<corruption>.npy`` (+ ``labels.npy``), the first n images per severity
  (n = size of the test split, as robustbench's ``n_examples``);
* generated: our tensor implementation (deeppatch.perturbations.corruptions) applied to the test
  split under a generator seeded from (seed, corruption, severity); with 8-bit quantisation each set
  is materialised once as a uint8 file under ``<cache_dir>/corruptions/`` and reused.

Every row carries its source in `source`, in `settings` and as the first part of the condition
("cifar10-c/fog/3" vs "generated/fog/3"), so the two can never be mixed up in a table.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from deeppatch._robustbench_compat import import_robustbench
from deeppatch.code_identity import module_code_hash
from deeppatch.data import TensorSplit, to_float
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.evaluation import predict
from deeppatch.perturbations.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from deeppatch.results import SuiteRow
from deeppatch.seeding import make_generator
from deeppatch.storage import atomic_torch_save, safe_torch_load, tensors_digest
from deeppatch.suites.base import Suite, SuiteContext

SOURCES = ("auto", "canonical", "generated")
# data set -> (robustbench folder under data_dir, robustbench loader name, source label)
CANONICAL = {
    "cifar10": ("CIFAR-10-C", "load_cifar10c", "cifar10-c"),
    "cifar100": ("CIFAR-100-C", "load_cifar100c", "cifar100-c"),
}
CANONICAL_PER_SEVERITY = 10_000  # images per severity in the released arrays
GENERATION_CHUNK = 500  # images corrupted per call; fixed, so a generated set does not depend on batch size


def generate_corrupted_set(
    images: torch.Tensor, corruption: str, severity: int, seed: int, *, quantize: bool,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The test images under one corruption: uint8 (quantize) or float32 in [0, 1], on the CPU.

    Chunks of GENERATION_CHUNK images are corrupted in order with one CPU generator seeded from
    (seed, corruption, severity): the set is a pure function of (images, seed, corruption, severity).
    """
    g = make_generator(seed, "corruptions", corruption, severity)
    out = []
    for start in range(0, len(images), GENERATION_CHUNK):
        xb = to_float(images[start : start + GENERATION_CHUNK].to(device))
        yb = corrupt(xb, corruption, severity, g, quantize=quantize)
        out.append(torch.round(yb * 255).to(torch.uint8).cpu() if quantize else yb.cpu())
    if not out:
        return images.new_empty(images.shape, dtype=torch.uint8 if quantize else torch.float32).cpu()
    return torch.cat(out)


def data_digest(split: TensorSplit) -> str:
    """A short fingerprint of the test images and labels, part of the cache key."""
    return tensors_digest([("x", split.x), ("y", split.y)])


def _as_list(value, what: str) -> list:
    if isinstance(value, str | int):
        return [value]
    if not isinstance(value, list | tuple) or not value:
        raise DeepPatchError(f"corruptions suite: {what} must be a non-empty list, got {value!r}")
    return list(value)


class CorruptionSuite(Suite):
    """Accuracy per (corruption, severity), the overall mean, and means per severity and per corruption."""

    name = "corruptions"
    defaults = {"corruptions": list(CORRUPTIONS), "severities": list(SEVERITIES), "source": "auto", "quantize": True,
                "heldout": []}

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        corruptions = _as_list(self.settings["corruptions"], "corruptions")
        if corruptions == ["all"]:
            corruptions = list(CORRUPTIONS)
        for c in corruptions:
            if c not in CORRUPTIONS:
                raise unknown_choice("corruption", c, ("all", *CORRUPTIONS), where="corruptions suite")
        if len(set(corruptions)) != len(corruptions):
            raise DeepPatchError(f"corruptions suite: corruptions listed twice in {corruptions!r}")
        severities = _as_list(self.settings["severities"], "severities")
        for s in severities:
            if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES:
                raise unknown_choice("severity", s, SEVERITIES, where="corruptions suite")
        if len(set(severities)) != len(severities):
            raise DeepPatchError(f"corruptions suite: severities listed twice in {severities!r}")
        source = self.settings["source"]
        if source not in SOURCES:
            raise unknown_choice("source", source, SOURCES, where="corruptions suite")
        if not isinstance(self.settings["quantize"], bool):
            raise DeepPatchError(
                f"corruptions suite: quantize must be true or false, got {self.settings['quantize']!r}"
            )
        heldout = _as_list(self.settings["heldout"], "heldout") if self.settings["heldout"] else []
        for c in heldout:
            if c not in corruptions:
                raise unknown_choice("held-out corruption", c, corruptions, where="corruptions suite")
        self.heldout = [c for c in CORRUPTIONS if c in heldout]
        # keep the requested order of CORRUPTIONS / SEVERITIES (corruption-major rows)
        self.corruptions = [c for c in CORRUPTIONS if c in corruptions]
        self.severities = sorted(severities)
        self.settings.update(corruptions=self.corruptions, severities=self.severities, heldout=self.heldout)

    # ----------------------------------------------------------------------------------------
    # where the images come from

    def canonical_root(self, ctx: SuiteContext) -> tuple[Path, str, str] | None:
        """(folder, loader name, source label) when the released arrays can be used, else None."""
        requested = self.settings["source"]
        if requested == "generated":
            return None
        entry = CANONICAL.get(ctx.info.name)
        if entry is None:
            if requested == "canonical":
                raise DeepPatchError(
                    f"corruptions suite: source 'canonical' needs data set cifar10 or cifar100, got "
                    f"{ctx.info.name!r}; use source 'generated' or 'auto'"
                )
            return None
        folder, loader, label = entry
        root = Path(ctx.data_dir) / folder if ctx.data_dir is not None else None
        needed = ["labels.npy", *(f"{c}.npy" for c in self.corruptions)]
        missing = needed if root is None else [f for f in needed if not (root / f).is_file()]
        if not missing:
            return root, loader, label
        where = str(root) if root is not None else "(no data dir)"
        if requested == "canonical":
            raise DeepPatchError(
                f"corruptions suite: released {folder} arrays missing under {where}: {', '.join(missing)} "
                f"(robustbench layout: <data_dir>/{folder}/<corruption>.npy and labels.npy)"
            )
        if root is not None and root.is_dir():
            warnings.warn(f"{root} lacks {', '.join(missing)}; using generated corruptions instead", stacklevel=2)
        return None

    def _canonical_split(
        self, ctx: SuiteContext, root: Path, loader: str, corruption: str, severity: int
    ) -> TensorSplit:
        import_robustbench()
        import robustbench.data as rbdata  # lazy: robustbench loads only for the canonical CIFAR-10-C arrays

        # the released arrays follow the official test split's order: read the same images as every other
        # suite (the evaluation subset's positions), not the first n
        positions = ctx.test.positions()
        n = int(positions.max()) + 1 if len(positions) else 0
        if n > CANONICAL_PER_SEVERITY:
            raise DeepPatchError(
                f"corruptions suite: the released arrays hold {CANONICAL_PER_SEVERITY} images per severity, "
                f"the test split reaches position {n}"
            )
        x, y = getattr(rbdata, loader)(n, severity, str(root.parent), False, [corruption])
        if len(x) != n:
            raise DeepPatchError(
                f"corruptions suite: {root / (corruption + '.npy')} gave {len(x)} images at severity {severity}, "
                f"expected {n}; the file looks truncated"
            )
        x, y = x[positions], y[positions]
        if not torch.equal(y.long().cpu(), ctx.test.y.long().cpu()):
            raise DeepPatchError(f"corruptions suite: the labels in {root / 'labels.npy'} do not match the test "
                                 "split's: the released arrays are not aligned with it")
        if tuple(x.shape[1:]) != tuple(ctx.info.image_shape):
            raise DeepPatchError(
                f"corruptions suite: {root / (corruption + '.npy')} holds images {tuple(x.shape[1:])}, "
                f"expected {tuple(ctx.info.image_shape)}"
            )
        return TensorSplit(x, y.long())

    def cache_path(self, ctx: SuiteContext, corruption: str, severity: int, digest: str) -> Path | None:
        """Where a generated set lives; None when it is not materialised (no cache dir, or unquantised)."""
        if ctx.cache_dir is None or not self.settings["quantize"]:
            return None
        # keyed by the generator's code: an edit of the corruptions never reuses old images
        key = f"seed{ctx.seed}-n{len(ctx.test)}-q1-c{module_code_hash('deeppatch.perturbations.corruptions')}"
        return Path(ctx.cache_dir) / "corruptions" / f"{ctx.info.name}-{digest}" / key / f"{corruption}-{severity}.pt"

    def _generated_split(self, ctx: SuiteContext, corruption: str, severity: int, digest: str) -> TensorSplit:
        path = self.cache_path(ctx, corruption, severity, digest)
        expected = (len(ctx.test), *ctx.test.x.shape[1:])
        if path is not None and path.is_file():
            try:
                stored = safe_torch_load(path)
                images = stored["images"] if isinstance(stored, dict) else None
                if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and tuple(images.shape) == expected:
                    return TensorSplit(images, ctx.test.y.cpu())
            except DeepPatchError:
                pass  # corrupt or foreign file: generate again and overwrite it
        images = generate_corrupted_set(ctx.test.x, corruption, severity, ctx.seed,
                                        quantize=bool(self.settings["quantize"]), device=ctx.device)
        if path is not None:
            atomic_torch_save({"images": images, "corruption": corruption, "severity": severity}, path)
        return TensorSplit(images, ctx.test.y.cpu())

    # ----------------------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, ctx: SuiteContext) -> list[SuiteRow]:
        canonical = self.canonical_root(ctx)
        label = canonical[2] if canonical else "generated"
        settings = {"source": label}
        if canonical is None:
            settings.update(quantize=self.settings["quantize"], seed=ctx.seed)
            digest = data_digest(ctx.test)
        rows: list[SuiteRow] = []
        t_all = time.perf_counter()
        for corruption in self.corruptions:
            for severity in self.severities:
                t0 = time.perf_counter()
                if canonical is not None:
                    split = self._canonical_split(ctx, canonical[0], canonical[1], corruption, severity)
                else:
                    split = self._generated_split(ctx, corruption, severity, digest)
                pred = predict(model, split, batch_size=ctx.batch_size, device=ctx.device,
                               desc=f"{label} {corruption}/{severity}")
                correct = pred == split.y.cpu()
                acc = 100.0 * correct.float().mean().item()
                rows.append(SuiteRow(self.name, f"{label}/{corruption}/{severity}", acc, len(split), group=corruption,
                                     severity=severity, source=label, settings=dict(settings),
                                     eval_time_s=time.perf_counter() - t0, correct=correct))
        return rows + self._aggregates(rows, label, settings, time.perf_counter() - t_all)

    def _aggregates(self, rows: list[SuiteRow], label: str, settings: dict, total_s: float) -> list[SuiteRow]:
        def mean_row(condition: str, part: list[SuiteRow], severity: int | None = None) -> SuiteRow:
            return SuiteRow(self.name, condition, sum(r.value for r in part) / len(part), sum(r.n for r in part),
                            group="aggregate", severity=severity, source=label,
                            settings={**settings, "conditions": len(part)},
                            eval_time_s=sum(r.eval_time_s for r in part))

        out = [mean_row(f"{label}/mean", rows)]
        out[0].eval_time_s = total_s
        for s in self.severities:
            out.append(mean_row(f"{label}/severity={s}/mean", [r for r in rows if r.severity == s], s))
        for c in self.corruptions:
            out.append(mean_row(f"{label}/{c}/mean", [r for r in rows if r.group == c]))
        if self.heldout:  # corruption types the maintenance never saw, apart from those it did
            seen = [r for r in rows if r.group not in self.heldout]
            out.append(mean_row(f"{label}/held-out/mean", [r for r in rows if r.group in self.heldout]))
            if seen:
                out.append(mean_row(f"{label}/seen/mean", seen))
        return out
