"""Projected gradient descent (Madry et al. 2018) in pixel space, Linf and L2.

One implementation serves both the attack suite and adversarial training. Inputs and outputs are
images in [0, 1]; the model normalises internally. Random starts draw from an owned generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.errors import DeepPatchError, unknown_choice

NORMS = ("Linf", "L2")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    factor = (eps / _flat_norm(delta)).clamp(max=1.0)
    return delta * factor


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "Linf":
        noise = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device)
        return (noise.to(x.device) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=generator, device=generator.device if generator else x.device)
    direction = direction.to(x.device)
    direction = direction / _flat_norm(direction)
    radius = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=generator,
                        device=generator.device if generator else x.device).to(x.device)
    return direction * radius * eps


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
    norm: str = "Linf", rand_init: bool = True, generator: torch.Generator | None = None,
    loss_fn=None,
) -> torch.Tensor:
    """Maximise `loss_fn(model(x_adv), y)` (cross-entropy by default) within the eps-ball of x."""
    if norm not in NORMS:
        raise unknown_choice("norm", norm, NORMS)
    if eps < 0 or alpha <= 0 or steps < 0:
        raise DeepPatchError(f"PGD needs eps >= 0, step size > 0, steps >= 0 (got {eps}, {alpha}, {steps})")
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target))
    x = x.detach()
    delta = random_start(x, eps, norm, generator) if rand_init and eps > 0 else torch.zeros_like(x)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            step = grad.sign() if norm == "Linf" else grad / _flat_norm(grad)
            delta = project(delta + alpha * step, eps, norm)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()
