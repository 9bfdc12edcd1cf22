"""Tracing helpers around Torch-Pruning's DependencyGraph.

Everything that needs to run the model once lives here: building the graph,
finding the layers whose outputs are model outputs (never pruned), and finding the
BatchNorm that directly follows each conv (masked together with it). ``trace_model``
does all three on one forward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
import torch_pruning as tp
from torch import nn

from ..compat import finish_graph
from ..errors import TraceError

ForwardFn = Callable[[nn.Module, Any], Any]

# Layers that compute new channels from their inputs: a channel group's "producers".
PRODUCER_TYPES: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear)
# Norms whose statistics span channels: a removed zero channel would change them.
CROSS_CHANNEL_NORMS: tuple[type, ...] = (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def flatten_tensors(obj: Any, _depth: int = 0) -> list[torch.Tensor]:
    """All tensors in a nested output, in order: tuples, lists, namedtuples, mappings (dict,
    OrderedDict, ModelOutput-like objects), dataclasses, and objects whose ``__dict__`` holds tensors."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if _depth > 16 or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return []
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in flatten_tensors(v, _depth + 1)]
    if isinstance(obj, (list, tuple)):  # namedtuples are tuples
        return [t for v in obj for t in flatten_tensors(v, _depth + 1)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in flatten_tensors(getattr(obj, f.name), _depth + 1)]
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict) and not isinstance(obj, (nn.Module, type)):
        return [t for v in attrs.values() for t in flatten_tensors(v, _depth + 1)]
    return []


def run_forward(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None = None) -> Any:
    """Call the model the way Torch-Pruning does: forward_fn, dict -> kwargs, tuple -> args."""
    if forward_fn is not None:
        return forward_fn(model, example_inputs)
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, eval_mode: bool = True, grad: bool = True) -> Iterator[None]:
    """Run in eval mode with gradients traced, then restore every module's mode and flags."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if eval_mode:
            model.eval()
        if grad:
            for p in model.parameters():  # frozen stages still need a grad_fn to be traced
                p.requires_grad_(True)
        with torch.enable_grad() if grad else torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


NO_OUTPUT_MESSAGE = (
    "{model}'s forward returned no floating-point tensor lrp_plugin can find (outputs are searched "
    "through tuples, lists, dicts, dataclasses and namedtuples), so nothing could be traced or compared: "
    "pass forward_fn=lambda model, x: <tensor or tuple of tensors>")


def _trace_error(exc: Exception) -> TraceError:
    return TraceError(
        f"could not run the model on the example inputs ({type(exc).__name__}: {exc}); "
        "pass example_inputs the model accepts (e.g. torch.randn(1, 3, 224, 224)) and, for "
        "models whose forward needs more than tensors, a forward_fn (or use the model's adapter)"
    )


@contextlib.contextmanager
def _eval_is_a_no_op(model: nn.Module) -> Iterator[None]:
    """Torch-Pruning calls ``model.eval()`` while tracing; models whose ``train()`` re-freezes
    stages (mmdet Darknet, mmseg ResNet ``frozen_stages``) would then lose their grad_fns and
    vanish from the graph. We are already in eval mode, so the call may do nothing."""
    model.eval = lambda: model
    try:
        yield
    finally:
        del model.__dict__["eval"]


def build_graph(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None,
                outputs: list[Any]) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model``; raises TraceError if the model cannot run.
    The traced forward's output is appended to ``outputs``.

    A failure after the trace (Torch-Pruning's shape/offset heuristics on an op they do not
    know) does not lose the graph: the offending nodes are marked and their channels kept.
    """
    def traced_forward(m: nn.Module, x: Any) -> Any:
        out = run_forward(m, x, forward_fn)
        outputs.append(out)
        return out

    graph = tp.DependencyGraph()
    with preserved_state(model), _eval_is_a_no_op(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return graph.build_dependency(
                model,
                example_inputs=example_inputs,
                forward_fn=traced_forward,
                output_transform=flatten_tensors,
                verbose=False,
            )
        except TraceError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure inside user code is a trace failure
            if getattr(graph, "module2node", None):  # traced; only the index bookkeeping failed
                finish_graph(graph)
                return graph
            if outputs and not _has_float(outputs[0]):
                raise TraceError(NO_OUTPUT_MESSAGE.format(model=type(model).__name__)) from exc
            raise _trace_error(exc) from exc


def _has_float(output: Any) -> bool:
    return any(t.is_floating_point() for t in flatten_tensors(output))


@dataclass
class ModelProbe:
    """What one traced forward pass tells about a model."""

    output_layers: set[str] = field(default_factory=set)  # producers whose channels reach an output
    norm_after: dict[str, str] = field(default_factory=dict)  # conv name -> BatchNorm fed by it
    # producers that ran but whose output never reaches a model output (a backbone stage past the
    # last out_index); Torch-Pruning's graph, built back from the outputs, does not see them
    dead_layers: set[str] = field(default_factory=set)
    # live producers whose channels also feed a dead one -> that dead layer: pruning them would leave
    # the dead layer (which still runs) with the old input width, so they are kept whole
    feeds_dead: dict[str, str] = field(default_factory=dict)


class _ProbeHooks:
    """Forward hooks that find conv -> BatchNorm pairs; ``finish`` then walks back from the outputs."""

    def __init__(self, model: nn.Module):
        self.probe = ModelProbe()
        self.producer_of_fn: dict[Any, str] = {}
        self.produced: dict[int, tuple[weakref.ref, str]] = {}
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, PRODUCER_TYPES):
                self.handles.append(module.register_forward_hook(self._on_producer(name)))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                self.handles.append(module.register_forward_hook(self._on_batchnorm(name)))

    def _on_producer(self, name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                self.producer_of_fn[output.grad_fn] = name
                self.produced[id(output)] = (weakref.ref(output), name)
        return hook

    def _on_batchnorm(self, name: str):
        def hook(_module, inputs, _output):
            if inputs and isinstance(inputs[0], torch.Tensor):
                ref_name = self.produced.get(id(inputs[0]))
                if ref_name is not None and ref_name[0]() is inputs[0]:
                    self.probe.norm_after.setdefault(ref_name[1], name)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def finish(self, model: nn.Module, output: Any) -> ModelProbe:
        """Walk back from every output through channel-preserving ops to the producers; what no
        output depends on is dead, and the live producers feeding it are recorded."""
        outputs = flatten_tensors(output)
        if not any(t.is_floating_point() for t in outputs):
            raise TraceError(NO_OUTPUT_MESSAGE.format(model=type(model).__name__))
        probe, producer_of_fn = self.probe, self.producer_of_fn
        roots = [o.grad_fn for o in outputs if o.grad_fn is not None]
        probe.output_layers = {producer_of_fn[fn] for fn in _walk_back(roots, producer_of_fn)}
        live = _walk_back(roots, {})  # everything any output depends on
        dead = {fn: name for fn, name in producer_of_fn.items() if fn not in live}
        probe.dead_layers = set(dead.values())
        for fn, name in dead.items():  # the producers whose channels a dead layer reads
            inputs = [nxt for nxt, _ in fn.next_functions if nxt is not None]
            for feeder in _walk_back(inputs, producer_of_fn):
                if feeder in live:
                    probe.feeds_dead.setdefault(producer_of_fn[feeder], name)
        return probe


def probe_model(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None = None) -> ModelProbe:
    """Find output-bound producers and conv -> BatchNorm pairs with one forward pass."""
    hooks = _ProbeHooks(model)
    try:
        with preserved_state(model):
            try:
                output = run_forward(model, example_inputs, forward_fn)
            except Exception as exc:  # noqa: BLE001
                raise _trace_error(exc) from exc
    finally:
        hooks.remove()
    return hooks.finish(model, output)

def _walk_back(roots: list[Any], stop_at: Mapping[Any, str]) -> set[Any]:
    """The autograd nodes reachable back from ``roots``: every one, or (with ``stop_at``) only the
    first nodes of ``stop_at`` on each path."""
    stack, seen, found = list(roots), set(), set()
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        if fn in stop_at:
            found.add(fn)
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return found if stop_at else seen

@dataclass
class Trace:
    """Torch-Pruning's graph and our probe, from one traced forward."""

    graph: tp.DependencyGraph
    probe: ModelProbe


def trace_model(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None = None) -> Trace:
    """``build_graph`` and ``probe_model`` on the same, single forward pass."""
    hooks = _ProbeHooks(model)
    outputs: list[Any] = []
    try:
        graph = build_graph(model, example_inputs, forward_fn, outputs)
    finally:
        hooks.remove()
    return Trace(graph=graph, probe=hooks.finish(model, outputs[0]))
