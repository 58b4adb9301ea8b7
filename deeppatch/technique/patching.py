"""Correct: patch units on the blamed filters, and the two sets of BatchNorm statistics.

A patched network is a copy of the model under maintenance in which

* every patched conv ℓ becomes a `PatchedConv`: the original conv plus a trainable unit ("cru")
  that rewrites the selected output channels S_ℓ in place (never re-ordered, reference bug 7):
  - ``replace`` (DeepPatch's DP unit): a fresh conv with the original's geometry (kernel, stride,
    padding, dilation, padding mode; no bias) from the conv's input to |S_ℓ| channels;
    ``y[:, S] = W'(x)``;
  - ``crtunit`` (DeepCorrect-style correction unit): 1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3
    -> BN -> ReLU -> 1x1 plus identity, on the pre-BN channels: ``y[:, S] = CU(y[:, S])``;
* every BatchNorm2d becomes a `DualBN` holding the original statistics (never updated) and a
  second, "patched" set re-estimated during patch training (the reference did this implicitly by
  training in train mode; reference bug 11).

Which path a sample takes is decided per forward pass by a `Router` owned by the network (no
global state, reference bug 2): "original" reproduces the model under maintenance bit for bit,
"patched" always uses the patch, "switch" lets the indicator at the first patched conv decide.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deeppatch.errors import DeepPatchError, unknown_choice
from deeppatch.models.registry import create_model
from deeppatch.models.state import info_from_dict, load_state_strict
from deeppatch.seeding import make_generator
from deeppatch.technique.routing import Route, Router, StopForward, mix

UNITS = ("replace", "crtunit")
SIDES = ("front", "rear", "random")
GROUPED = ("skip", "depthwise")
INITS = ("fresh", "copy")
MODES = ("original", "patched", "switch")


# --------------------------------------------------------------------------------------------
# units


class CorrectionUnit(nn.Module):
    """DeepCorrect's residual correction unit (hidden width = k, as DeepPatch's re-implementation)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(k, k, 1, bias=False), nn.BatchNorm2d(k), nn.ReLU(inplace=False),
            nn.Conv2d(k, k, 3, padding=1, bias=False), nn.BatchNorm2d(k), nn.ReLU(inplace=False),
            nn.Conv2d(k, k, 3, padding=1, bias=False), nn.BatchNorm2d(k), nn.ReLU(inplace=False),
            nn.Conv2d(k, k, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def replacement_conv(conv: nn.Conv2d, k: int, depthwise: bool) -> nn.Conv2d:
    """A conv with the original's geometry producing k channels (depthwise: one input channel each)."""
    return nn.Conv2d(
        k if depthwise else conv.in_channels, k, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=k if depthwise else 1, bias=False, padding_mode=conv.padding_mode,
    )


class PatchedConv(nn.Module):
    """Original conv + a unit rewriting channels `indices`; routed by the network's Router."""

    def __init__(self, conv: nn.Conv2d, indices: list[int], unit: str, depthwise: bool, router: Router) -> None:
        super().__init__()
        self.conv = conv
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long))
        self.unit = unit
        self.depthwise = depthwise
        k = len(indices)
        self.cru = replacement_conv(conv, k, depthwise) if unit == "replace" else CorrectionUnit(k)
        self.router = router
        self.is_indicator = False
        # a full-width replace unit has the original's weight layout: patched mode can run one conv
        self.foldable = unit == "replace" and not depthwise and conv.groups == 1

    def unit_output(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The unit's output (channels S) for `rows` of the batch (all rows when None).

        Only what the unit reads is gathered: x's rows (replace), or just channels S of those rows
        (depthwise replace: x's; crtunit: y's).
        """
        def channels_s(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(1, self.indices) if rows is None else t[rows[:, None], self.indices]

        if self.unit == "replace":
            return self.cru(channels_s(x) if self.depthwise else (x if rows is None else x[rows]))
        return self.cru(channels_s(y))

    def patch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y with channels S rewritten by the unit (out of place)."""
        return y.index_copy(1, self.indices, self.unit_output(x, y).to(y.dtype))

    def folded(self, x: torch.Tensor) -> torch.Tensor:
        """The patched output as one conv: the unit's filters written into the original weight.

        For full-width `replace` units (`foldable`) this equals `patch(x, conv(x))` (the same per-channel
        convolutions; tested) without running the original filters of S or copying activations,
        which is most of the cost of a patch training step.
        """
        conv = self.conv
        weight = conv.weight.index_copy(0, self.indices, self.cru.weight.to(conv.weight.dtype))
        bias = None if conv.bias is None else conv.bias.index_fill(0, self.indices, 0.0)
        return conv._conv_forward(x, weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self.router.current()
        every_input_patched = route.mode == "patched" or (route.share == "all" and not self.is_indicator)
        if every_input_patched and self.foldable:
            return self.folded(x)
        y = self.conv(x)
        if route.mode == "original":
            return y
        if route.mode == "patched":
            return self.patch(x, y)
        if self.is_indicator:
            route.pending = (self, x, y)
            return y
        if route.mask is None:
            raise RuntimeError("patched conv ran before the indicator decided the route")
        if route.share == "none":
            return y
        if route.share == "all":
            return self.patch(x, y)
        # some inputs patched: write the unit's channels of their rows into y (fresh, so in place)
        rows = route.rows
        return y.index_put_((rows[:, None], self.indices), self.unit_output(x, y, rows).to(y.dtype))

    def extra_repr(self) -> str:
        return f"unit={self.unit}, k={len(self.indices)}, depthwise={self.depthwise}, indicator={self.is_indicator}"


class DualBN(nn.Module):
    """A BatchNorm2d with the original running statistics and a second, patched set.

    The affine parameters are shared (and frozen during patch training). The original buffers are
    only ever read; training in "patched" mode updates the patched ones.
    """

    def __init__(self, bn: nn.BatchNorm2d, router: Router) -> None:
        super().__init__()
        if not (bn.track_running_stats and bn.running_mean is not None):
            raise DeepPatchError("DeepPatch needs BatchNorm layers with running statistics")
        self.bn = bn
        self.register_buffer("patched_mean", bn.running_mean.detach().clone())
        self.register_buffer("patched_var", bn.running_var.detach().clone())
        self.router = router
        self.is_indicator = False

    def original(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    def patched(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        momentum = 0.0 if bn.momentum is None else bn.momentum
        return F.batch_norm(x, self.patched_mean, self.patched_var, bn.weight, bn.bias, self.training, momentum,
                            bn.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self.router.current()
        if route.mode == "original":
            return self.original(x)
        if route.mode == "patched":
            return self.patched(x)
        if self.is_indicator:
            if route.pending is None or route.gate is None or route.pending[2] is not x:
                raise RuntimeError("indicator BN ran without its conv's output or a gate")
            conv, conv_in, _ = route.pending
            route.pending = None
            a_orig = self.original(x)
            a_patch = self.patched(conv.patch(conv_in, x)) if route.gate_needs_patched else None
            route.decide(route.gate(a_orig, a_patch))
            if route.stop_after_decision:
                raise StopForward
            if route.share == "none":
                return a_orig
            if a_patch is not None:
                return a_patch if route.share == "all" else torch.where(route.mask.view(-1, 1, 1, 1), a_patch, a_orig)
            return mix(a_orig, route, lambda xs: self.patched(conv.patch(xs[0], xs[1])), (conv_in, x))
        if route.mask is None:
            raise RuntimeError("BatchNorm ran before the indicator decided the route")
        return mix(self.original(x), route, self.patched, x)


# --------------------------------------------------------------------------------------------
# planning which filters to patch


@dataclass
class PatchSite:
    layer: str
    indices: list[int]
    unit: str
    depthwise: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PatchPlan:
    specs: list[PatchSite]
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why
    settings: dict[str, Any] = field(default_factory=dict)


def _select(ranked: list[int], channels: int, k: int, side: str, seed: int, layer: str) -> list[int]:
    if side == "front":
        return list(ranked[:k])
    if side == "rear":
        return list(ranked[channels - k:])
    perm = torch.randperm(channels, generator=make_generator(seed, "susp-side", layer))
    return sorted(perm[:k].tolist())


def plan_patches(
    model: nn.Module, ranking: dict[str, dict[str, list]] | None, *, ratio: float = 0.25, side: str = "front",
    unit: str = "replace", grouped: str = "skip", layers: tuple[str, ...] = ("*",), seed: int = 0,
) -> PatchPlan:
    """Which channels of which convs to patch: k = floor(C * ratio) per conv, k >= 1 (reference bug 9)."""
    for value, choices, what in ((unit, UNITS, "unit (--crt_type)"), (side, SIDES, "side (--susp_side)"),
                                 (grouped, GROUPED, "grouped-conv handling")):
        if value not in choices:
            raise unknown_choice(what, value, choices)
    if not 0.0 < ratio <= 1.0:
        raise DeepPatchError(f"suspicious ratio (--susp_ratio) must be in (0, 1], got {ratio}")
    specs, skipped = [], {}
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        if not any(fnmatch.fnmatchcase(name, pat) for pat in layers):
            skipped[name] = "not selected by --layers"
            continue
        depthwise = False
        if conv.groups != 1:
            if grouped == "skip":
                skipped[name] = f"grouped conv (groups={conv.groups}) skipped, as the reference"
                continue
            if not (conv.groups == conv.in_channels == conv.out_channels):
                skipped[name] = f"grouped conv (groups={conv.groups}) is not depthwise"
                continue
            depthwise = True
        channels = conv.out_channels
        k = int(math.floor(channels * ratio + 1e-9))
        if k < 1:
            skipped[name] = f"k = floor({channels} x {ratio}) = 0"
            continue
        if side == "random":
            ranked = list(range(channels))
        else:
            if ranking is None or name not in ranking:
                raise DeepPatchError(f"the blame ranking has no entry for conv {name!r}; run assess for this model")
            ranked = [int(i) for i in ranking[name]["indices"]]
            if sorted(ranked) != list(range(channels)):
                raise DeepPatchError(f"the ranking of {name!r} is not a permutation of its {channels} channels")
        specs.append(PatchSite(name, _select(ranked, channels, k, side, seed, name), unit, depthwise))
    if not specs:
        raise DeepPatchError("no conv layer is left to patch (check --layers, --susp_ratio and grouped handling)")
    return PatchPlan(specs, skipped, {"ratio": ratio, "side": side, "unit": unit, "grouped": grouped,
                                      "layers": list(layers)})


# --------------------------------------------------------------------------------------------
# building the patched network


class PatchedNetwork(nn.Module):
    """The model under maintenance with patch units and dual BNs; `mode` sets the default route."""

    def __init__(self, model: nn.Module, specs: list[PatchSite], *, seed: int = 0, init: str = "fresh") -> None:
        super().__init__()
        if init not in INITS:
            raise unknown_choice("patch init", init, INITS)
        self.router = Router()
        self.net = copy.deepcopy(model)
        self.specs = [PatchSite(**s) if isinstance(s, dict) else s for s in specs]
        for spec in self.specs:
            conv = self.net.get_submodule(spec.layer)
            if not isinstance(conv, nn.Conv2d):
                raise DeepPatchError(f"{spec.layer!r} is not a conv layer of this model")
            patched = PatchedConv(conv, spec.indices, spec.unit, spec.depthwise, self.router)
            _init_unit(patched, conv, spec, seed, init)
            _set_submodule(self.net, spec.layer, patched)
        for name, bn in list(self.net.named_modules()):
            if isinstance(bn, nn.BatchNorm2d) and not _inside_unit(self.net, name):
                _set_submodule(self.net, name, DualBN(bn, self.router))

    # routing
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def run(self, x: torch.Tensor, mode: str, gate=None, gate_needs_patched: bool = True) -> torch.Tensor:
        if mode not in MODES:
            raise unknown_choice("route mode", mode, MODES)
        with self.router.use(Route(mode, gate=gate, gate_needs_patched=gate_needs_patched)):
            return self.net(x)

    def indicator_inputs(self, x: torch.Tensor, with_patched: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(a_orig, a_patch) at the indicator BN, running only the layers up to it (a_patch None
        when not asked for)."""
        captured: list[tuple[torch.Tensor, torch.Tensor]] = []

        def capture(a_orig: torch.Tensor, a_patch: torch.Tensor) -> torch.Tensor:
            captured.append((a_orig, a_patch))
            return torch.zeros(a_orig.shape[0], dtype=torch.bool, device=a_orig.device)

        with self.router.use(Route("switch", gate=capture, stop_after_decision=True,
                                   gate_needs_patched=with_patched)):
            try:
                self.net(x)
            except StopForward:
                pass
        if not captured:
            raise DeepPatchError("the indicator was never reached: no patched conv feeds a BatchNorm")
        return captured[0]

    def locate_indicator(self, example: torch.Tensor) -> tuple[str, str]:
        """Find the first patched conv in execution order and the BN it feeds directly, by tracing
        one forward pass (reference bug 3: no reliance on registration order); mark both."""
        order: list[tuple[str, torch.Tensor]] = []  # tensors kept alive so identity checks are sound
        consumers: list[tuple[str, torch.Tensor]] = []
        hooks = []
        for name, m in self.patched_convs():
            m.is_indicator = False
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: order.append((name, o))))
        for name, m in self.dual_bns():
            m.is_indicator = False
            hooks.append(m.register_forward_pre_hook(lambda mod, inp, name=name: consumers.append((name, inp[0]))))
        try:
            with torch.no_grad(), self.router.use(Route("original")):
                self.net(example)
        finally:
            for h in hooks:
                h.remove()
        if not order:
            raise DeepPatchError("no patched conv ran in a forward pass")
        conv_name, out = order[0]
        bn_name = next((name for name, inp in consumers if inp is out), None)
        if bn_name is None:
            raise DeepPatchError(
                f"the first patched conv {conv_name!r} does not feed a BatchNorm directly, so the indicator "
                "cannot be placed there; exclude it with --layers or choose another model")
        self.net.get_submodule(conv_name).is_indicator = True
        self.net.get_submodule(bn_name).is_indicator = True
        return conv_name, bn_name

    def set_mode(self, mode: str) -> None:
        if mode not in ("original", "patched"):
            raise DeepPatchError(f"default mode must be original or patched, got {mode!r}")
        self.router.default_mode = mode

    # parameters
    def patch_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.net.named_parameters() if ".cru." in f".{n}"]

    def freeze_all_but_patch(self) -> list[nn.Parameter]:
        trainable = set(map(id, self.patch_parameters()))
        for p in self.net.parameters():
            p.requires_grad_(id(p) in trainable)
        return self.patch_parameters()

    def patched_convs(self) -> list[tuple[str, PatchedConv]]:
        return [(n, m) for n, m in self.net.named_modules() if isinstance(m, PatchedConv)]

    def dual_bns(self) -> list[tuple[str, DualBN]]:
        return [(n, m) for n, m in self.net.named_modules() if isinstance(m, DualBN)]


def _inside_unit(root: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(root.get_submodule(".".join(parts[:i])), PatchedConv):
            return True
    return False


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _init_unit(patched: PatchedConv, conv: nn.Conv2d, spec: PatchSite, seed: int, init: str) -> None:
    """Fresh kaiming-uniform(a=sqrt(5)) init (PyTorch's default, as the reference) from an owned
    generator; or, for ``replace`` with init="copy", the original filters (an ablation)."""
    gen = make_generator(seed, "patch-init", spec.layer)
    for m in patched.cru.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
    if init == "copy" and spec.unit == "replace":
        with torch.no_grad():
            patched.cru.weight.copy_(conv.weight[spec.indices])


def added_parameters(network: PatchedNetwork) -> int:
    """Patch unit parameters plus the second set of BN statistics."""
    units = sum(p.numel() for p in network.patch_parameters())
    stats = sum(m.patched_mean.numel() + m.patched_var.numel() for _, m in network.dual_bns())
    return units + stats


def restore_from_record(record: dict[str, Any]) -> PatchedNetwork:
    """Rebuild an always-patched network (DeepCorrect) from its self-describing checkpoint."""
    base = create_model(str(record["arch"]), info_from_dict(record["dataset"]))
    network = PatchedNetwork(base, [PatchSite(**s) for s in record["extra"]["specs"]])
    network.set_mode(record["extra"].get("mode", "patched"))
    load_state_strict(network, record["state_dict"], f"the patched model of {record['arch']!r}")
    return network.eval()
