"""The one place that touches other libraries' internals, with the versions it was written for.

Torch-Pruning 1.6 (``torch_pruning.dependency``): its dependency graph is our engine, but the
pieces we need (hybrid indices, index-mapping refresh, a group's graph, op types) are not part
of its documented API. NNI 3.0 (``nni.compression``): a pruner's target spaces and their
scalers, config selection and wrappers. If either library changes these, only this module needs to follow.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch_pruning as tp
from torch_pruning import _helpers as _tp_helpers
from torch_pruning.dependency import index_mapping as _tp_index_mapping
from torch_pruning.dependency import shape_infer as _tp_shape_infer
from torch_pruning.utils import op_counter as _tp_op_counter

TORCH_PRUNING_VERSIONS = "1.6"
NNI_VERSIONS = "3.0"

OPTYPE = tp.ops.OPTYPE
HybridIndex = _tp_helpers._HybridIndex
Group = tp.dependency.Group
SplitIndexMapping = _tp_index_mapping._SplitIndexMapping


_UPDATERS = {
    OPTYPE.CONCAT: _tp_index_mapping.update_concat_index_mapping,
    OPTYPE.SPLIT: _tp_index_mapping.update_split_index_mapping,
    OPTYPE.RESHAPE: _tp_index_mapping.update_reshape_index_mapping,
    OPTYPE.UNBIND: _tp_index_mapping.update_unbind_index_mapping,
    OPTYPE.EXPAND: _tp_index_mapping.update_expand_index_mapping,
    OPTYPE.SLICE: _tp_index_mapping.update_slice_index_mapping,
}
UNMAPPABLE_ATTR = "_lrp_unmappable"  # set on nodes whose index mapping Torch-Pruning failed to compute


def finish_graph(graph: tp.DependencyGraph) -> None:
    """Torch-Pruning's last build steps (shape information, index mappings), node by node, so one
    op it cannot map (e.g. a channel shuffle's view) marks that node instead of failing the graph."""
    try:
        _tp_shape_infer.init_shape_information(graph)
    except Exception:  # noqa: BLE001 - the per-node mapping below marks what is left unknown
        pass
    refresh_index_mapping(graph)


def refresh_index_mapping(graph: tp.DependencyGraph) -> None:
    """Recompute concat/split/reshape offsets from the graph's current channel counts.

    Per node, so a failure marks only that node unmappable. Torch-Pruning assigns a split's
    parts to its consumers in graph-discovery order; the true part of each consumer is the
    autograd ``output_nr`` it reads, so we re-assign them (a chunk whose parts reach different
    convs otherwise maps channels to the wrong part).
    """
    for node in graph.module2node.values():
        if node.type == OPTYPE.SPLIT and not getattr(node.module, _SIZES_TRACED, False):
            _split_sizes_from_autograd(node)
        sizes = getattr(node.module, "split_sizes", None) if node.type == OPTYPE.SPLIT else None
        if sizes and all(isinstance(s, int) for s in sizes):  # its split pruner leaves the offsets stale
            node.module.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        update = _UPDATERS.get(node.type)
        if update is None:
            continue
        try:
            update(graph, node)
        except Exception:  # noqa: BLE001 - Torch-Pruning's heuristics failing on an op they do not know
            setattr(node, UNMAPPABLE_ATTR, True)
    for node in graph.module2node.values():
        if node.type == OPTYPE.SPLIT and getattr(node.module, "offsets", None) is not None:
            _fix_split_mapping(node)


_SIZES_TRACED = "_lrp_sizes_traced"


def _split_sizes_from_autograd(node: Any) -> None:
    """The part sizes autograd saved for a split (Torch-Pruning guesses them from its graph, and
    can get them wrong when a part goes straight into a concat)."""
    setattr(node.module, _SIZES_TRACED, True)
    sizes = saved(node, "split_sizes")
    if sizes is None:
        size, full = saved(node, "split_size"), saved(node, "self_sym_sizes")
        dim = saved(node, "dim", 1)
        if size is None or full is None or not -len(full) <= dim < len(full):
            return
        total = int(full[dim])
        sizes = [min(int(size), total - start) for start in range(0, total, int(size))]
    node.module.split_sizes = [int(s) for s in sizes]


def split_part_of(split_node: Any, consumer: Any) -> set[int]:
    """Which outputs (``output_nr``) of a split ``consumer``'s grad_fn reads."""
    fn = getattr(consumer, "grad_fn", None)
    nexts = getattr(fn, "next_functions", ()) or ()
    return {nr for f, nr in nexts if f is split_node.grad_fn}


def _fix_split_mapping(node: Any) -> None:
    offsets = node.module.offsets
    for out_node in node.outputs:
        parts = split_part_of(node, out_node)
        if len(parts) != 1 or max(parts) + 1 >= len(offsets):
            node.enable_index_mapping = False  # read as several parts at once: not mappable
            continue
        part = parts.pop()
        span = offsets[part:part + 2]
        for dep in node.dependencies:
            if dep.target is out_node:
                dep.index_mapping[0] = SplitIndexMapping(offset=span, reverse=False)
        for dep in out_node.dependencies:
            if dep.target is node:
                dep.index_mapping[0] = SplitIndexMapping(offset=span, reverse=True)


def saved(node: Any, name: str, default: Any = None) -> Any:
    """What autograd saved for the backward of ``node``'s op (``grad_fn._saved_<name>``): its dims, sizes,
    strides; ``default`` where the op saved no such value."""
    return getattr(getattr(node, "grad_fn", None), f"_saved_{name}", default)


def root_dependency(node: Any, pruning_fn: Callable) -> Any:
    """The dependency a group walk starts from: ``node``'s own channels, through ``pruning_fn``."""
    return tp.dependency.Dependency(pruning_fn, pruning_fn, source=node, target=node)


def group_graph(group: Any) -> tp.DependencyGraph:
    """The DependencyGraph a Torch-Pruning group belongs to."""
    return group._DG


def plain_group(graph: tp.DependencyGraph, items: list[tuple[Any, list[int]]]) -> Any:
    """A Torch-Pruning Group of (dependency, plain indices) that ``group.prune()`` executes."""
    group = Group()
    for dep, idxs in items:
        group.add_dep(dep, list(idxs))
    group._DG = graph
    return group


def mac_counting_hooks() -> dict[type, Callable]:
    """Torch-Pruning's per-module-type MAC hooks (``count_ops_and_params``, the ptflops 0.6.9 rules);
    each adds its count to the module's ``__flops__`` attribute."""
    return {**_tp_op_counter.MODULES_MAPPING, **_tp_op_counter.CUSTOM_MODULES_MAPPING}


def nni_metric_shrink(pruner: Any, module_name: str, target_name: str, data: Any,
                      reduce_func: Callable) -> Any:
    """NNI's per-target scaler applied to ``data`` (one metric per filter), as NNI's own norm pruners do."""
    space = pruner._target_spaces[module_name][target_name]
    return space._scaler.shrink(data, reduce_func, keepdim=True)


# -- NNI 3.0 (an optional extra: imported when an NNI helper is first used) ------------------------


def nni_checked_config_list(config_list: list[dict]) -> list[dict]:
    """NNI's legacy-key translation and its pruning schema, exactly as NNI's pruners apply them
    (NNI's ``schema.SchemaError`` stays NNI's error)."""
    from nni.compression.base.config import default_config_schema, trans_legacy_config_list

    converted = trans_legacy_config_list(copy.deepcopy(config_list))
    schema = default_config_schema("pruning")
    for config in converted:
        schema.validate(config)
    return converted


def nni_select_modules(model: Any, config: dict) -> dict[str, Any]:
    """The modules one NNI config entry selects (NNI raises KeyError for an unknown op_name)."""
    from nni.compression.base.config import select_modules_by_config

    return select_modules_by_config(model, config)[0]


def nni_is_wrapped(model: Any) -> bool:
    """True while an NNI compressor's wrappers are still installed in ``model``."""
    from nni.compression.base.wrapper import ModuleWrapper

    return any(hasattr(m, "_nni_wrapper") or isinstance(m, ModuleWrapper) for m in model.modules())


def nni_wrapped_param(pruner: Any, module_name: str, target_name: str) -> Any:
    """The original parameter an NNI pruner's wrapper holds for ``module_name.target_name``."""
    return getattr(pruner._module_wrappers[module_name], target_name, None)


def nni_set_sparse_ratio(pruner: Any, module_name: str, ratio: float) -> None:
    """Set the filter ratio NNI masks in one module (its weight target space's ``sparse_ratio``)."""
    pruner._target_spaces[module_name]["weight"].sparse_ratio = float(ratio)
