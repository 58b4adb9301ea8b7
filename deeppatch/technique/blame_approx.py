"""`perfloss-fo`: a first-order (Taylor) estimate of perfloss, every filter from one backward pass.

Exact perfloss re-runs the network once per filter. Here one forward and one backward pass per
batch give, for every conv output channel at once, the first-order change of the loss when that
channel is zeroed.

Definition. For a conv ℓ with pre-BN output a (the tensor perfloss zeroes), image i, channel c,
and the per-image cross-entropy ℓ_i of the model in eval mode, zeroing channel c changes a by
Δa = -a_{i,c}. To first order,

    ΔL_i(c) ≈ <∂ℓ_i/∂a_{i,c}, Δa> = -Σ_{h,w} a_{i,c,h,w} · ∂ℓ_i/∂a_{i,c,h,w}

and the score of filter (ℓ, c) is its mean over the blame data (the same fixed perturbed val set
as perfloss: every condition of the family, no clean images):

    score(ℓ, c) = (1/N) Σ_i ΔL_i(c)        [nats per image]

Positive: zeroing the filter is predicted to raise the loss on perturbed data (the filter helps);
negative: zeroing it is predicted to lower the loss (the filter hurts, it is to blame). Perfloss is
``base - masked accuracy``: positive when zeroing hurts. So both rank **ascending**, most blamed
first, ties by channel index; the units differ (loss in nats vs accuracy points), so only the
rankings are comparable, not the numbers. Gradients are of the loss summed over the batch, so
∂ℓ_i/∂a_i is each image's own gradient (no BatchNorm batch statistics in eval mode).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.data import TensorSplit
from deeppatch.errors import DeepPatchError
from deeppatch.perturbations.base import Perturbation
from deeppatch.technique.blame_common import BlameResult, perfloss_data, select_convs

METHOD = "perfloss-fo"
ENGINE = "first-order"


class FirstOrderBlameResult(BlameResult):
    """A BlameResult ranked ascending like perfloss (BlameResult ranks other methods descending)."""

    def ranking(self) -> dict[str, dict[str, list]]:
        out = {}
        for layer, scores in self.scores.items():
            order = torch.sort(torch.tensor(scores, dtype=torch.float64), stable=True).indices.tolist()
            out[layer] = {"score": [scores[i] for i in order], "indices": order}
        return out

    def to_json(self, **meta: Any) -> dict[str, Any]:
        return {**super().to_json(**meta), "direction": "ascending", "units": "nats per image (first-order)"}


def perfloss_fo(
    model: nn.Module, val: TensorSplit, family: Perturbation, *, seed: int, device: torch.device,
    batch_size: int = 500, layers: list[str] | None = None, quantize: bool = False,
) -> FirstOrderBlameResult:
    """Score every filter of every conv (or of `layers`) with the first-order perfloss estimate.

    Safe to call under ``torch.inference_mode()`` (as `blame` runs): autograd is re-enabled here.
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise DeepPatchError(f"blame batch size must be >= 1, got {batch_size}")
    with torch.inference_mode(False), torch.enable_grad():
        model = model.to(device).eval()
        convs = select_convs(model, layers)
        with torch.no_grad():
            data = perfloss_data(val, family, seed, device, quantize)
        sums = {name: torch.zeros(conv.out_channels, dtype=torch.float64, device=device) for name, conv in convs}
        correct = 0
        for x, y in data.batches(batch_size, device=device):
            logits, acts = _forward_capturing(model, convs, x)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            grads = torch.autograd.grad(loss, [acts[name] for name, _ in convs])
            for (name, _), grad in zip(convs, grads, strict=True):
                sums[name] -= (acts[name].detach().double() * grad.double()).sum((0, 2, 3))
            correct += int((logits.argmax(1) == y).sum())
    n = len(data)
    scores = {name: (s / max(n, 1)).tolist() for name, s in sums.items()}
    filters = sum(m.out_channels for _, m in convs)
    return FirstOrderBlameResult(METHOD, 100.0 * correct / max(n, 1), n, scores, ENGINE, time.perf_counter() - t0,
                                 details={"layers_assessed": len(convs), "filters": filters})


def _forward_capturing(model: nn.Module, convs: list[tuple[str, nn.Conv2d]], x: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits, and each conv's output as a tensor in the autograd graph (for ∂loss/∂output).

    When every parameter is frozen the input is given requires_grad, so the conv outputs are still
    in the graph; parameter gradients are never computed (autograd.grad asks only for the outputs).
    """
    acts: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: acts.__setitem__(name, out))
             for name, m in convs]
    try:
        frozen = not any(p.requires_grad for p in model.parameters())
        logits = model(x.detach().requires_grad_(True) if frozen else x)
    finally:
        for h in hooks:
            h.remove()
    missing = [name for name, _ in convs if name not in acts]
    if missing:
        raise DeepPatchError(f"conv layers never ran in a forward pass: {', '.join(missing)}")
    return logits, acts
