# YOLOX-tiny, COCO: mask 50% of every coupled group's channels by L1 (CR 0.5, selection='group':
# the same channels in every producer of a residual/FPN stream, so the stream shrinks too); train with the masks held
# (the stock 300-epoch schedule; start from a trained model: --cfg-options load_from=YOLOX.pth),
# then rebuild losslessly: work_dir/pruned.pth, with work_dir/pruned.py for tools/test.py.
# The per-level prediction convs (multi_level_conv_cls/reg/obj) are found by tracing and kept.
_base_ = 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py'

custom_imports = dict(imports=['lrp_plugin.integrations.mmengine'], allow_failed_imports=False)

# Keep the stock hooks (YOLOXModeSwitchHook, SyncNormHook, EMAHook) and add ours: `custom_hooks
# = [...]` alone would replace the stock list. The masks are held on the EMA copy too, and the
# pruned model is rebuilt from it (what stock checkpoints save and tools/test.py runs).
custom_hooks = _base_.custom_hooks + [
    dict(type='LosslessPruningHook', criterion='l1', ratio=0.5, selection='group', input_size=416),
]
