"""Accuracy of a model on clean and perturbed splits, batched, under inference mode.

On CUDA, batches go in as channels_last under bf16 autocast, like training (NHWC is what the
tensor-core convolutions want); on the CPU they stay fp32 and contiguous.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deeppatch.data import TensorSplit
from deeppatch.perturbations.base import Perturbation
from deeppatch.progress import progress
from deeppatch.training import autocast_context

Transform = Callable[[torch.Tensor], torch.Tensor]


@torch.inference_mode()
def predict(
    model: nn.Module, split: TensorSplit, *, batch_size: int = 512, device: torch.device | str = "cpu",
    transform: Transform | None = None, desc: str | None = None, amp: bool = True,
) -> torch.Tensor:
    """Predicted labels (on the CPU) for every image of `split`, optionally transformed first."""
    device = torch.device(device)
    model.eval()
    preds = []
    bar = progress(total=split.num_batches(batch_size), desc=desc or "eval", unit="batch",
                   enable=None if desc else False)
    for x, _ in split.batches(batch_size, device=device):
        if transform is not None:
            x = transform(x)
        if device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp):
            preds.append(model(x).argmax(1).cpu())
        bar.update(1)
    bar.close()
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, split: TensorSplit, **kwargs) -> float:
    """Top-1 accuracy in percent."""
    if len(split) == 0:
        return float("nan")
    pred = predict(model, split, **kwargs)
    return 100.0 * (pred == split.y.cpu()).float().mean().item()


def perturbation_report(
    model: nn.Module, split: TensorSplit, family: Perturbation, *, batch_size: int = 512,
    device: torch.device | str = "cpu", desc: str = "eval",
) -> dict[str, float]:
    """Clean accuracy, accuracy per condition, their mean, and the clean + all-conditions union.

    The union is what the reference prints as "the robustness accuracy" (clean images included).
    """
    y = split.y.cpu()
    clean_pred = predict(model, split, batch_size=batch_size, device=device, desc=f"{desc} clean")
    correct = [(clean_pred == y).float()]
    out = {"clean": 100.0 * correct[0].mean().item()}
    for i, cond in enumerate(family.conditions):
        pred = predict(model, split, batch_size=batch_size, device=device,
                       transform=lambda x, i=i: family.apply(x, i), desc=f"{desc} {cond}")
        c = (pred == y).float()
        correct.append(c)
        out[cond] = 100.0 * c.mean().item()
    perturbed = [out[c] for c in family.conditions]
    out[f"{family.name}_mean"] = sum(perturbed) / len(perturbed)
    out["union"] = 100.0 * torch.cat(correct).mean().item()
    return out
