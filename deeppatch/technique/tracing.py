"""Run a network from the output of one layer onward (torch.fx), for exact and fast blame.

Blaming a filter means changing one output channel of one conv and measuring the network's
accuracy. Everything computed before that conv, and every value beside it that the rest of the
network reads (skip connections), is the same for all of the conv's filters: `SuffixPlan` runs
that prefix once per batch, caches it, and re-runs only the layers downstream of the conv, with
several filter variants stacked along the batch dimension.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn

from deeppatch.models.layers import InputNormalize

_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                      operator.itruediv: operator.truediv}


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, InputNormalize) or super().is_leaf_module(m, qualname)


def without_inplace(model: nn.Module) -> nn.Module:
    """A copy whose modules never write in place, so cached activations stay intact."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    return model


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """Symbolic trace with in-place ops replaced by their out-of-place twins."""
    model = without_inplace(model)
    graph = _Tracer().trace(model)
    for node in graph.nodes:
        if node.op == "call_function" and node.target in _INPLACE_FUNCTIONS:
            node.target = _INPLACE_FUNCTIONS[node.target]
        elif node.op == "call_method" and isinstance(node.target, str) and node.target.endswith("_") \
                and not node.target.startswith("_") and hasattr(torch.Tensor, node.target[:-1]):
            node.target = node.target[:-1]
    return torch.fx.GraphModule(model, graph)


def is_traceable(model: nn.Module) -> bool:
    try:
        trace(model)
    except Exception:  # fx raises many kinds of errors for dynamic control flow
        return False
    return True


def _descendants(start: torch.fx.Node) -> set[torch.fx.Node]:
    seen: set[torch.fx.Node] = set()
    stack = list(start.users)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.users)
    return seen


def _ancestors(nodes: set[torch.fx.Node]) -> set[torch.fx.Node]:
    seen: set[torch.fx.Node] = set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


@dataclass
class SuffixPlan:
    """How to re-run `gm` from the output of module `target` onward."""

    gm: torch.fx.GraphModule
    target: str
    target_node: torch.fx.Node
    prefix: list[torch.fx.Node]  # nodes to run once per batch (target included)
    suffix: list[torch.fx.Node]  # nodes downstream of the target, in execution order
    frontier: list[torch.fx.Node]  # values computed in the prefix and read by the suffix
    batched: set[torch.fx.Node]  # frontier values with a batch dimension (to be repeated)
    stackable: bool  # False when a non-tensor value (a shape) crosses the frontier
    # value -> dropped after this node ran (its last reader), so a pass holds only live activations
    prefix_release: dict[torch.fx.Node, list[torch.fx.Node]] = field(default_factory=dict)
    suffix_release: dict[torch.fx.Node, list[torch.fx.Node]] = field(default_factory=dict)

    @classmethod
    def build(cls, gm: torch.fx.GraphModule, target: str) -> SuffixPlan:
        nodes = list(gm.graph.nodes)
        matches = [n for n in nodes if n.op == "call_module" and n.target == target]
        if len(matches) != 1:
            raise ValueError(f"module {target!r} is called {len(matches)} times in the traced graph, expected once")
        target_node = matches[0]
        downstream = _descendants(target_node)
        suffix = [n for n in nodes if n in downstream]
        crossing = {a for n in suffix for a in n.all_input_nodes if a not in downstream and a is not target_node}
        frontier = sorted(crossing, key=nodes.index)
        prefix_set = _ancestors(set(frontier) | {target_node})
        prefix = [n for n in nodes if n in prefix_set]
        placeholder = next(n for n in nodes if n.op == "placeholder")
        input_dependent = _descendants(placeholder) | {placeholder}
        batched = {n for n in frontier if n in input_dependent}
        keep = set(frontier) | {target_node}
        return cls(gm, target, target_node, prefix, suffix, frontier, batched, stackable=True,
                   prefix_release=_last_reads(prefix, [n for n in prefix if n not in keep]),
                   suffix_release=_last_reads(suffix, [*frontier, target_node, *suffix]))

    # -- execution -----------------------------------------------------------------------------

    def _run(self, node: torch.fx.Node, env: dict[torch.fx.Node, Any], x: torch.Tensor | None = None) -> Any:
        args = torch.fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "placeholder":
            return x
        if node.op == "get_attr":
            obj: Any = self.gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            return obj
        if node.op == "call_module":
            return self.gm.get_submodule(str(node.target))(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            self_obj, *rest = args
            return getattr(self_obj, str(node.target))(*rest, **kwargs)
        if node.op == "output":
            return args[0]
        raise RuntimeError(f"unsupported fx node {node.op}")

    def capture(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[torch.fx.Node, Any]]:
        """Run the prefix once: the target's output and the frontier values."""
        env: dict[torch.fx.Node, Any] = {}
        for node in self.prefix:
            env[node] = self._run(node, env, x)
            for dead in self.prefix_release.get(node, ()):
                del env[dead]
        frontier = {n: env[n] for n in self.frontier}
        if any(not isinstance(v, torch.Tensor) for n, v in frontier.items() if n in self.batched):
            self.stackable = False
        return env[self.target_node], frontier

    def run_suffix(self, y: torch.Tensor, frontier: dict[torch.fx.Node, Any], copies: int) -> torch.Tensor:
        """Logits of the network with the target's output replaced by `y` (copies x the batch)."""
        env: dict[torch.fx.Node, Any] = {}
        for node, value in frontier.items():
            if node in self.batched and isinstance(value, torch.Tensor) and copies > 1:
                value = value.repeat(copies, *([1] * (value.ndim - 1)))
            env[node] = value
        env[self.target_node] = y
        out = None
        for node in self.suffix:
            out = env[node] = self._run(node, env)
            for dead in self.suffix_release.get(node, ()):
                del env[dead]
        return out


def _last_reads(order: list[torch.fx.Node], values: list[torch.fx.Node]) -> dict[torch.fx.Node, list[torch.fx.Node]]:
    """node -> the `values` whose last reader in `order` it is (values nobody in `order` reads stay)."""
    position = {n: i for i, n in enumerate(order)}
    release: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for value in values:
        readers = [position[u] for u in value.users if u in position]
        if readers:
            release.setdefault(order[max(readers)], []).append(value)
    return release


VariantFn = Callable[[torch.Tensor, list[int]], torch.Tensor]


def stack_variants(
    y: torch.Tensor, channels: list[int], edit: Callable[[torch.Tensor, int, int], None]
) -> torch.Tensor:
    """(B, C, ...) -> (len(channels) * B, C, ...), copy k edited in place by edit(copy_k, channel, k)."""
    out = y.repeat(len(channels), *([1] * (y.ndim - 1)))
    b = y.shape[0]
    for k, c in enumerate(channels):
        edit(out[k * b : (k + 1) * b], c, k)
    return out
