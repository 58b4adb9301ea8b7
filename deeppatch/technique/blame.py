"""Assess: blame conv filters (docs/deeppatch.md, Assess).

* ``perfloss``: on the fixed, pre-generated perturbed val set (every condition of the family, no
  clean images), zero one output channel of one conv (the pre-BN conv output, as the reference
  does) and measure the accuracy drop ``base - acc`` in percentage points. Rank ascending: the most
  blamed filters are those whose removal raises accuracy on perturbed data (or costs the least).
* ``featswap``: on a fixed noisy val set (each image perturbed with probability 0.5 at a uniform
  condition, aligned with clean val), replace one channel's noisy activation by the clean one of the
  same image and measure the recovered accuracy ``acc - base``. Rank descending.

Ties are broken by channel index. Engines, all exact:

* ``suffix`` (default where torch.fx can trace the model): run everything up to the conv once per
  batch, then only the downstream layers for several filters stacked along the batch dimension.
* ``batched``: full forward passes, several filters per pass (models fx cannot trace).
* ``naive``: one full forward pass per filter: the reference loop, kept to test the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from deeppatch.data import TensorSplit
from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.perturbations.base import Perturbation
from deeppatch.progress import progress
from deeppatch.technique.blame_approx import perfloss_fo
from deeppatch.technique.blame_common import (
    METHODS,
    BlameResult,
    conv_layers,
    featswap_data,
    perfloss_data,
    select_convs,
)
from deeppatch.technique.tracing import SuffixPlan, is_traceable, stack_variants, trace

__all__ = ["ENGINES", "METHODS", "BlameResult", "blame", "conv_layers", "select_convs"]

ENGINES = ("auto", "suffix", "batched", "naive")


# --------------------------------------------------------------------------------------------
# engines: count correct predictions per filter variant


Edit = Callable[[torch.Tensor, int, int], None]  # (activation copy, channel, batch index) -> None


def _correct(logits: torch.Tensor, y: torch.Tensor, copies: int) -> torch.Tensor:
    return (logits.argmax(1).view(copies, -1) == y.view(1, -1)).sum(1)


# On the CPU a pass whose stacked activations stay near cache size is faster per image than a
# huge one (measured on resnet20, 28x28: 64-image passes ~1.4 ms/image, 2,048-image passes
# ~3.7 ms/image): each layer's output is written and read back by BN and ReLU, and beyond the L2/L3
# caches that traffic goes to memory. So CPU passes are capped in bytes of activation per pass;
# CUDA keeps `max_images` (the GPU wants large batches).
CPU_PASS_BYTES = 4 << 20


def images_per_pass(bytes_per_image: int, max_images: int, device: torch.device) -> int:
    """How many images (filter copies x batch rows) one pass may hold on `device`."""
    if device.type != "cpu":
        return max(1, max_images)
    return max(1, min(max_images, CPU_PASS_BYTES // max(1, bytes_per_image)))


def _slices(n: int, size: int) -> list[slice]:
    """Row slices of at most `size`, of equal length (no short remainder pass: 128 by 80 -> 64 + 64)."""
    size = -(-n // -(-n // size)) if n > 0 else size
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _rows(value: Any, rows: slice) -> Any:
    return value[rows] if isinstance(value, torch.Tensor) else value


class _Counter:
    """Counts correct predictions of the model with one channel of one conv edited."""

    def __init__(self, model: nn.Module, engine: str, max_images: int) -> None:
        self.model = model
        self.engine = engine
        self.max_images = max_images
        self.gm = trace(model).eval() if engine == "suffix" else None
        self._peak_bytes: int | None = None  # largest activation of one image in a full pass (batched engines)

    def layer(self, name: str, channels: int, batches: list[tuple[torch.Tensor, torch.Tensor, Any]],
              make_edit: Callable[[Any], Edit], bar) -> torch.Tensor:
        if self.engine == "suffix":
            return self._suffix(name, channels, batches, make_edit, bar)
        return self._full(name, channels, batches, make_edit, bar)

    def _suffix(self, name: str, channels: int, batches: list[tuple[torch.Tensor, torch.Tensor, Any]],
                make_edit: Callable[[Any], Edit], bar) -> torch.Tensor:
        """Prefix once per batch; the suffix on row slices of it, many filters stacked per pass."""
        counts = torch.zeros(channels, dtype=torch.long)
        plan = SuffixPlan.build(self.gm, name)
        for x, y, aux in batches:
            act, frontier = plan.capture(x)
            if plan.stackable:
                limit = images_per_pass(act[:1].numel() * act.element_size(), self.max_images, act.device)
            else:  # a shape crosses the frontier: the suffix must see whole batches, one filter at a time
                limit = len(y)
            for rows in _slices(len(y), limit):
                sub_act, sub_y = act[rows], y[rows]
                sub_frontier = {n: _rows(v, rows) if n in plan.batched else v for n, v in frontier.items()}
                per = max(1, limit // len(sub_y)) if plan.stackable else 1
                edit = make_edit(_rows(aux, rows))
                for chans in _chunks(channels, per):
                    logits = plan.run_suffix(stack_variants(sub_act, chans, edit), sub_frontier, len(chans))
                    counts[chans[0] : chans[-1] + 1] += _correct(logits, sub_y, len(chans)).cpu()
                    bar.update(len(chans) * len(sub_y) / len(y) / len(batches))
        return counts

    def _full(self, name: str, channels: int, batches: list[tuple[torch.Tensor, torch.Tensor, Any]],
              make_edit: Callable[[Any], Edit], bar) -> torch.Tensor:
        """Full forward passes with a hook editing the conv's output (batched: several filters per pass)."""
        counts = torch.zeros(channels, dtype=torch.long)
        module = self.model.get_submodule(name)
        for x, y, aux in batches:
            if self.engine == "naive":
                limit, per_pass = len(y), 1
            else:
                limit, per_pass = images_per_pass(self._peak_image_bytes(x), self.max_images, x.device), None
            for rows in _slices(len(y), limit):
                sub_x, sub_y = x[rows], y[rows]
                per = per_pass or max(1, limit // len(sub_y))
                edit = make_edit(_rows(aux, rows))
                for chans in _chunks(channels, per):
                    def hook(_m, _inp, out, chans=chans, edit=edit):
                        b = out.shape[0] // len(chans)
                        for k, ch in enumerate(chans):
                            edit(out[k * b : (k + 1) * b], ch, k)
                        return out

                    handle = module.register_forward_hook(hook)
                    try:
                        xx = sub_x.repeat(len(chans), *([1] * (sub_x.ndim - 1))) if len(chans) > 1 else sub_x
                        logits = self.model(xx)
                    finally:
                        handle.remove()
                    counts[chans[0] : chans[-1] + 1] += _correct(logits, sub_y, len(chans)).cpu()
                    bar.update(len(chans) * len(sub_y) / len(y) / len(batches))
        return counts

    def _peak_image_bytes(self, x: torch.Tensor) -> int:
        """Largest output of any module for one image (probed once with a single-image pass)."""
        if self._peak_bytes is None:
            sizes: list[int] = []
            hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(
                o.numel() * o.element_size() if isinstance(o, torch.Tensor) else 0))
                for m in self.model.modules() if not list(m.children())]
            try:
                self.model(x[:1])
            finally:
                for h in hooks:
                    h.remove()
            self._peak_bytes = max(sizes, default=x[:1].numel() * 4)
        return self._peak_bytes


def _chunks(channels: int, per: int) -> list[list[int]]:
    return [list(range(s, min(s + per, channels))) for s in range(0, channels, per)]


def _zero(aux: Any) -> Edit:
    def edit(t: torch.Tensor, ch: int, k: int) -> None:
        t[:, ch] = 0

    return edit


def resolve_engine(model: nn.Module, engine: str) -> str:
    if engine not in ENGINES:
        raise unknown_choice("blame engine", engine, ENGINES)
    if engine == "auto":
        return "suffix" if is_traceable(model) else "batched"
    if engine == "suffix" and not is_traceable(model):
        raise DeepPatchError("this model cannot be traced by torch.fx; use --blame_engine batched")
    return engine


@torch.inference_mode()
def blame(
    model: nn.Module, method: str, val: TensorSplit, family: Perturbation, *, seed: int,
    device: torch.device, batch_size: int = 500, engine: str = "auto", max_images: int = 4096,
    layers: list[str] | None = None, show_progress: bool | None = None, quantize: bool = False,
) -> BlameResult:
    """Score every filter of every conv (or of `layers`) with `method`; `quantize`: the perturbed
    blame data rounded to 8 bits, like the reference's."""
    if method not in METHODS:
        raise unknown_choice("blame method", method, METHODS)
    if method == "perfloss-fo":  # one backward pass per batch; no per-filter engine involved
        return perfloss_fo(model, val, family, seed=seed, device=device, batch_size=batch_size, layers=layers,
                           quantize=quantize)
    t0 = time.perf_counter()
    model = model.to(device).eval()
    engine = resolve_engine(model, engine)
    convs = select_convs(model, layers)

    if method == "perfloss":
        data = perfloss_data(val, family, seed, device, quantize)
        batches = [(x, y, None) for x, y in data.batches(batch_size, device=device)]
        make_edit: Callable[[Any], Edit] = _zero
    else:
        clean, data = featswap_data(val, family, seed, device, quantize)
        capture = _ActivationCapture(model)
        batches = [(x, y, xc) for (x, y), (xc, _) in zip(data.batches(batch_size, device=device),
                                                          clean.batches(batch_size, device=device), strict=True)]
    n = len(data)
    base_correct = sum(int((model(x).argmax(1) == y).sum()) for x, y, _ in batches)
    base = 100.0 * base_correct / n
    counter = _Counter(model, engine, max_images)
    total = sum(m.out_channels for _, m in convs)
    bar = progress(total=total, desc=f"assess {method}", unit="filter", enable=show_progress)
    scores: dict[str, list[float]] = {}
    for name, conv in convs:
        if method == "featswap":
            clean_acts = [capture(name, xc) for _, _, xc in batches]
            layer_batches = [(x, y, act) for (x, y, _), act in zip(batches, clean_acts, strict=True)]

            def make_edit(clean_act: torch.Tensor) -> Edit:
                def edit(t: torch.Tensor, ch: int, k: int) -> None:
                    t[:, ch] = clean_act[:, ch]

                return edit
        else:
            layer_batches = batches
        counts = counter.layer(name, conv.out_channels, layer_batches, make_edit, bar)
        if method == "perfloss":
            scores[name] = [100.0 * (base_correct - int(c)) / n for c in counts]
        else:
            scores[name] = [100.0 * (int(c) - base_correct) / n for c in counts]
    bar.close()
    return BlameResult(method, base, n, scores, engine, time.perf_counter() - t0,
                       details={"layers_assessed": len(convs), "filters": total})


class _ActivationCapture:
    """Output of one named module for a batch (the clean activations featswap swaps in)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        store: list[torch.Tensor] = []
        handle = self.model.get_submodule(name).register_forward_hook(lambda m, i, o: store.append(o.detach().clone()))
        try:
            self.model(x)
        finally:
            handle.remove()
        return store[0]
