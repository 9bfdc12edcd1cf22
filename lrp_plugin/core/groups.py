"""Coupled channels, from Torch-Pruning's dependency graph, walked with a fence around it.

A *group* is every tensor dimension that must lose the same channels as a producer (conv or
linear): other producers summed with it, BatchNorms, depthwise convs, concat/split parts at
their offsets, and the consumers that read it. We walk Torch-Pruning's dependencies ourselves,
only from the producers we are asked about, and stop at once where channels cannot be followed
losslessly (an op that mixes channels, a cross-channel norm), so analysis stays bounded: the
group is then *blocked* and its channels are kept, with the reason reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch_pruning as tp
from torch import nn

from ..compat import OPTYPE, UNMAPPABLE_ATTR, HybridIndex, refresh_index_mapping, root_dependency, saved
from .budget import BudgetExceeded, bounded
from .graph import CROSS_CHANNEL_NORMS, PRODUCER_TYPES
from .modules import module_names

MAX_INDICES = 2_000_000  # a mapping that grows past this is not a channel mapping we can use
MAX_STEPS = 20_000  # dependencies followed per group: real groups need far fewer (resnet50's largest: ~400)

# Autograd ops (grad_fn names without "Backward<n>") that act on each channel on its own.
PER_CHANNEL_OPS = frozenset({
    "relu", "hardtanh", "leakyrelu", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
    "hardsigmoid", "hardswish", "softplus", "threshold", "clamp", "clampmin", "clampmax", "logsigmoid",
    "add", "sub", "rsub", "mul", "div", "neg", "abs", "pow", "sqrt", "rsqrt", "exp", "log", "reciprocal", "erf",
    "maximum", "minimum", "where", "clone", "nativedropout", "tocopy", "alias", "detach",
    "maxpool1dwithindices", "maxpool2dwithindices", "maxpool3dwithindices", "maxpool2d",
    "avgpool2d", "avgpool3d", "adaptiveavgpool2d", "adaptiveavgpool3d", "adaptivemaxpool2d",
    "upsamplenearest2d", "upsamplenearestexact2d", "upsamplebilinear2d", "upsamplebicubic2d",
    "constantpadnd", "reflectionpad2d", "replicationpad2d",
    # functional batch norm (timm's BatchNormAct2d runs it inside the module, whose output is the act's)
    "nativebatchnorm", "cudnnbatchnorm", "batchnorm",
})
# Functional norms whose statistics span channels (the module forms are caught by type).
FUNCTIONAL_NORMS = {"nativelayernorm": "LayerNorm", "layernorm": "LayerNorm", "nativegroupnorm": "GroupNorm",
                    "groupnorm": "GroupNorm"}
# Reductions and dimension ops that are per-channel unless they touch dim 0/1.
DIM_OPS = frozenset({"mean", "sum", "amax", "amin", "squeeze", "unsqueeze", "softmax"})


@dataclass
class Member:
    """One place in a group: a module (or op) and the group's channels at its indices."""

    name: str | None
    module: Any
    dep: Any
    idxs: list[int]
    root_idxs: list[int]

    @property
    def kind(self) -> Any:
        return self.dep.target.type


@dataclass
class ChannelGroup:
    """The coupled channels of one producer, as Torch-Pruning maps them, and what bounds them."""

    root: str
    channels: int
    items: list[Member] = field(default_factory=list)
    producers: list[Member] = field(default_factory=list)  # conv/linear output channels (depthwise too)
    consumers: list[Member] = field(default_factory=list)  # conv/linear input channels
    norms: list[Member] = field(default_factory=list)  # BatchNorms on these channels
    splits: list[Member] = field(default_factory=list)  # chunk ops on these channels (equal parts)
    output_bound: bool = False  # the channels are (part of) a model output
    blocked: str = ""  # why no channel of this group can be removed ("" if none)

    @property
    def members(self) -> list[str]:
        seen: list[str] = []
        for item in self.items:
            if item.name is not None and item.name not in seen:
                seen.append(item.name)
        return seen


def op_name(node: Any) -> str:
    fn = getattr(node, "grad_fn", None)
    name = fn.name() if fn is not None and hasattr(fn, "name") else ""
    name = name.lower().split("backward")[0]
    return name


def _dim_op_is_per_channel(node: Any) -> bool:
    dims, sizes = saved(node, "dim"), saved(node, "self_sym_sizes")
    if dims is None or sizes is None:
        return False
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    ndim = len(sizes)
    # autograd saves negative dims as unsigned 64-bit integers (-1 -> 2**64 - 1)
    dims = [d - 2 ** 64 if d >= 2 ** 63 else d for d in (int(d) for d in dims)]
    return all(2 <= (d + ndim if d < 0 else d) < ndim for d in dims)


def _channels_last_pool_restride(node: Any) -> bool:
    """The as_strided that ``adaptive_avg_pool2d(x, 1)`` adds on a channels_last input: the mean's
    dense (N, C, 1, 1) result re-strided to the same layout, so each channel stays where it is."""
    fn = node.grad_fn
    size, stride = saved(node, "size"), saved(node, "stride")
    if size is None or stride is None or len(size) != 4 or tuple(int(s) for s in size[2:]) != (1, 1):
        return False
    if saved(node, "storage_offset") not in (None, 0) or int(stride[1]) != 1:
        return False
    if int(size[0]) > 1 and int(stride[0]) != int(size[1]):
        return False
    sources = [f for f, _ in fn.next_functions if f is not None]
    return len(sources) == 1 and sources[0].name().lower().startswith("meanbackward")


def _expand_over_positions(node: Any) -> bool:
    """An expand that only broadcasts over positions, e.g. ECA/SE's ``x * y.expand_as(x)`` with ``y`` of
    shape (N, C, 1, 1): each channel's value is repeated in place, so channel c stays channel c."""
    sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    return sizes is not None and len(sizes) in (3, 4) and int(sizes[1]) > 1 and all(int(s) == 1 for s in sizes[2:])


def _conv_across_channels(node: Any, names: dict, hops: int = 2) -> str:
    """The single-channel conv within ``hops`` of a reshape that lays channels out as positions
    (ECA's ``conv1d(mean(x).view(N, 1, C))``): it reads each channel's neighbours ("" if none)."""
    frontier, seen = [node], {node}
    for _ in range(hops):
        frontier = [n for f in frontier for n in (*f.inputs, *f.outputs) if n not in seen]
        seen.update(frontier)
        for n in frontier:
            module = n.module
            if isinstance(module, nn.modules.conv._ConvNd) and module.in_channels == module.out_channels == 1:
                return names.get(module, type(module).__name__)
    return ""


def _layout_change(node: Any) -> bool:
    """A permute/transpose between channels-first and channels-last (NCHW <-> NHWC, (B,C,L) <-> (B,L,C)):
    each channel stays one channel, only its position in the layout moves."""
    dims = saved(node, "dims")
    if dims is not None:
        dims, last = tuple(dims), len(dims) - 1
        return last >= 2 and dims[0] == 0 and (dims[-1] == 1 or dims[1] == last)
    pair = {saved(node, "dim0"), saved(node, "dim1")}
    return pair in ({1, -1}, {1, 2}, {1, 3})


def _reshape_is_mapped(node: Any) -> bool:
    """A reshape Torch-Pruning maps (flatten to a linear) or one that only drops 1x1 spatial dims."""
    if any(m is not None for dep in node.dependencies for m in dep.index_mapping):
        return True
    sizes = saved(node, "self_sym_sizes")
    return sizes is not None and len(sizes) == 4 and int(sizes[2]) * int(sizes[3]) == 1


def split_on_channels(node: Any) -> bool:
    """A split along dim 1 whose offsets Torch-Pruning knows."""
    return getattr(node.module, "offsets", None) is not None and saved(node, "dim", 1) in (1, -3)


def custom_layer(module: Any) -> bool:
    """A conv/linear subclass with its own forward (weight standardization, scaled gains ...):
    removing its channels may change what that forward computes from the rest."""
    if not isinstance(module, PRODUCER_TYPES):
        return False
    base = nn.Linear if isinstance(module, nn.Linear) else next(
        c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
    return type(module).forward is not base.forward


def why_blocked(node: Any, names: dict, cautious: bool = False) -> str:
    """Why channels cannot pass ``node`` losslessly ("" if they can). ``cautious`` (the cautious
    second attempt, after a first rebuild failed): also treat every channel split and every custom
    conv/linear subclass as fixed."""
    kind = node.type
    module = node.module
    label = names.get(module) if isinstance(module, nn.Module) else None
    where = f" ({label})" if label else ""
    if isinstance(module, CROSS_CHANNEL_NORMS) or kind in (OPTYPE.LN, OPTYPE.GN, OPTYPE.IN):
        return (f"coupled through {type(module).__name__}{where}, whose statistics span all channels "
                "(removing even an all-zero channel changes its output)")
    if kind == OPTYPE.EXPAND and _expand_over_positions(node):
        return ""
    if kind in (OPTYPE.MHA, OPTYPE.LSTM, OPTYPE.EMBED, OPTYPE.UNBIND, OPTYPE.EXPAND):
        return f"channels reach a {kind.name.lower()} op{where} that lrp_plugin does not map channel by channel"
    if getattr(node, UNMAPPABLE_ATTR, False):
        return f"Torch-Pruning cannot map channels through this {kind.name.lower()} op (e.g. a channel shuffle's view)"
    if kind == OPTYPE.SPLIT and not getattr(node, "enable_index_mapping", True):
        return "a split whose parts are read together (e.g. a channel shuffle) cannot be mapped channel by channel"
    if kind == OPTYPE.SPLIT and split_on_channels(node):
        if op_name(node) == "splitwithsizes":
            return ("channels are split with sizes written in the model's code (torch.split([...])), "
                    "which a rebuild cannot change")
        offsets = node.module.offsets
        if len({b - a for a, b in zip(offsets, offsets[1:])}) > 1:
            return "channels are split into parts of unequal size, which a rebuild cannot keep in proportion"
        if cautious:
            return ("a split's parts: the first rebuild with channels removed inside them did not run or match "
                    "(a split size written in the model's code, e.g. split(n) rather than chunk)")
    gate = _conv_across_channels(node, names) if kind == OPTYPE.RESHAPE else ""
    if gate:  # checked before any index is mapped through the reshape (an ECA gate's would be huge)
        return (f"channels are laid out as positions for {gate}, a conv across channels (an ECA gate): each "
                "channel's gate reads its neighbours, so removing one would change theirs")
    if kind == OPTYPE.RESHAPE and not _reshape_is_mapped(node):
        return (f"channels pass a reshape/view ({op_name(node) or 'view'}) that regroups them (e.g. a channel "
                "shuffle or an attention reshape)")
    if cautious and custom_layer(module):
        return f"{label or type(module).__name__} is a {type(module).__name__} with its own forward"
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        depthwise = module.groups == module.in_channels == module.out_channels
        if not depthwise and (module.transposed or module.groups == module.out_channels):
            return f"grouped conv{where} with groups={module.groups} in a layout lrp_plugin does not prune"
    if kind == OPTYPE.ELEMENTWISE:
        name = op_name(node)
        norm = FUNCTIONAL_NORMS.get(name)
        if norm:
            return (f"coupled through a functional {norm}, whose statistics span all channels "
                    "(removing even an all-zero channel changes its output)")
        if name in PER_CHANNEL_OPS or (name in DIM_OPS and _dim_op_is_per_channel(node)):
            return ""
        if name in ("permute", "transpose") and _layout_change(node):
            return ""
        if name == "asstrided" and _channels_last_pool_restride(node):
            return ""
        return f"channels reach the op {name or 'unknown'!r}, which mixes or reorders channels"
    return ""


class GroupWalker:
    """Builds groups on one traced graph; each walk is bounded in time and memory."""

    def __init__(self, graph: tp.DependencyGraph, model: nn.Module, *, seconds: float | None = None,
                 memory_bytes: int | None = None, cautious: bool = False):
        self.graph = graph
        self.cautious = cautious
        self.stale = False  # True when pruned part sizes make the index mappings out of date
        self.resized: set[Any] = set()  # concat/split/reshape nodes of the groups pruned so far
        self._activations: dict[Any, bool] = {}
        self.names = module_names(model)
        self.seconds, self.memory_bytes = seconds, memory_bytes
        refresh_index_mapping(graph)

    def carries_activations(self, node: Any) -> bool:
        """False for op nodes computed from parameters (or the raw input) alone, e.g. a linear's
        transposed weight or a conv's weight standardization: no layer upstream."""
        memo = self._activations
        stack = [(node, False)]
        while stack:  # iterative post-order: graphs are deep
            current, expanded = stack.pop()
            if current in memo:
                continue
            if current.module in self.names:  # a layer of the model (Torch-Pruning's op nodes are not)
                memo[current] = True
            elif current.type == OPTYPE.PARAMETER or not current.inputs:
                memo[current] = False
            elif expanded:
                memo[current] = any(memo.get(n, False) for n in current.inputs)
            else:
                stack.append((current, True))
                stack.extend((n, False) for n in current.inputs if n not in memo)
        return memo[node]

    def groups_of(self, names: Iterable[str]) -> tuple[list[ChannelGroup], dict[str, str]]:
        """The group of each named producer, each coupled set walked once; blocked ones with their reason."""
        modules = {name: module for module, name in self.names.items()}
        groups, blocked, seen = [], {}, set()
        for name in names:
            if name in seen:
                continue
            group = self.group_of(modules[name])
            if group.blocked:
                blocked[name] = group.blocked
                seen.add(name)
                continue
            seen.update(p.name for p in group.producers)
            groups.append(group)
        return groups, blocked

    def refresh(self) -> None:
        """After a group was pruned, offsets of concats/splits change: recompute them."""
        refresh_index_mapping(self.graph)

    def out_fn(self, module: nn.Module):
        return self.graph.get_pruner_of_module(module).prune_out_channels

    def group_of(self, module: nn.Module, idxs: Iterable[int] | None = None) -> ChannelGroup:
        """The group of ``module``'s output channels ``idxs`` (all by default); never raises for the graph."""
        name = self.names.get(module, type(module).__name__)
        channels = self.graph.get_out_channels(module)
        idxs = list(range(channels)) if idxs is None else list(idxs)
        group = ChannelGroup(root=name, channels=channels)
        if self.cautious and custom_layer(module):
            group.blocked = f"{name} is a {type(module).__name__} with its own forward"
            return group
        try:
            with bounded(self.seconds, self.memory_bytes):
                self._walk(module, idxs, group)
        except BudgetExceeded:
            group.blocked = ("following its channels through the graph exceeded the analysis bound "
                             "(time/memory): an op Torch-Pruning maps into very many indices")
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning's mapping code failing on an op we cannot map
            group.blocked = f"Torch-Pruning could not map its channels ({type(exc).__name__}: {exc})"
        if group.blocked:
            group.items, group.producers, group.consumers, group.norms = [], [], [], []
        return group

    def _walk(self, module: nn.Module, idxs: list[int], group: ChannelGroup) -> None:
        graph = self.graph
        node = graph.module2node[module]
        fn = self.out_fn(module)
        root = root_dependency(node, fn)
        start = [HybridIndex(idx=i, root_idx=i) for i in idxs]
        ordered: list[tuple[Any, list]] = [(root, start)]
        # HybridIndex is an (idx, root_idx) tuple: a set of them is the walk's signature at a target
        seen: dict[tuple[Any, Any], list[frozenset]] = {(node, fn): [frozenset(start)]}
        stack = [(root, start)]
        steps = 0
        while stack:
            dep, current = stack.pop()
            steps += 1
            if steps > MAX_STEPS:
                raise BudgetExceeded
            for nxt in dep.target.dependencies:
                if not nxt.is_triggered_by(dep.handler):
                    continue
                mapped = current
                for mapping in nxt.index_mapping:
                    if mapping is not None:
                        mapped = mapping(mapped)
                if not mapped:
                    continue
                if len(mapped) > MAX_INDICES:
                    raise BudgetExceeded
                target = nxt.target
                if target.type == OPTYPE.OUTPUT:
                    group.output_bound = True
                    continue
                if not self.carries_activations(target):
                    continue  # ops on weights (a linear's transposed weight, weight standardization)
                reason = why_blocked(target, self.names, self.cautious)
                if reason:
                    group.blocked = reason
                    return
                key, signature = (target, nxt.handler), frozenset(mapped)
                if signature in seen.setdefault(key, []):
                    continue
                seen[key].append(signature)
                ordered.append((nxt, mapped))
                stack.append((nxt, mapped))
        self._collect(ordered, group)

    def _collect(self, ordered: list[tuple[Any, list]], group: ChannelGroup) -> None:
        """Merge the walk per (target, handler), as Torch-Pruning does, and sort members by role."""
        merged: dict[tuple[Any, Any], tuple[Any, dict[int, int]]] = {}
        for dep, idxs in ordered:
            entry = merged.setdefault((dep.target, dep.handler), (dep, {}))
            for i in idxs:
                entry[1].setdefault(i.idx, i.root_idx)
        graph = self.graph
        for dep, pairs in merged.values():
            module = dep.target.module
            name = self.names.get(module) if isinstance(module, nn.Module) else None
            member = Member(name=name, module=module, dep=dep, idxs=list(pairs), root_idxs=list(pairs.values()))
            limit = _channel_count(graph, module, dep.handler)
            if limit is not None and pairs and (max(pairs) >= limit or max(pairs.values()) >= group.channels):
                group.blocked = (f"Torch-Pruning mapped channel indices outside the channels of "
                                 f"{name or type(module).__name__} (an op it misreads, e.g. an add into a slice)")
                return
            group.items.append(member)
            if isinstance(module, PRODUCER_TYPES):
                if graph.is_out_channel_pruning_fn(dep.handler):
                    group.producers.append(member)
                elif graph.is_in_channel_pruning_fn(dep.handler):
                    group.consumers.append(member)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                group.norms.append(member)
            elif member.kind == OPTYPE.SPLIT and split_on_channels(dep.target):
                group.splits.append(member)


def _channel_count(graph: tp.DependencyGraph, module: Any, handler: Any) -> int | None:
    """How many channels the handler's side of ``module`` has (None where Torch-Pruning does not say)."""
    if not isinstance(module, nn.Module):
        return None
    try:
        if graph.is_out_channel_pruning_fn(handler):
            return graph.get_out_channels(module)
        return graph.get_in_channels(module)
    except Exception:  # noqa: BLE001 - a module type Torch-Pruning has no channel count for
        return None


def grouped_conv(module: Any) -> bool:
    """A conv with 1 < groups that Torch-Pruning does not treat as depthwise (ResNeXt, RegNet)."""
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and not (module.groups == module.in_channels == module.out_channels))
