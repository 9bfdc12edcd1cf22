"""Framework glue. Each submodule imports its framework (nni, torch_pruning, mmengine) itself;
importing this package imports none of them."""
