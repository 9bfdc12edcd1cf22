# YOLOv3-D53, VOC 07+12: mask 90% of every conv's filters by L1 (paper CR 0.9), fine-tune
# with the masks held (paper schedule, see the base), then rebuild losslessly: the pruned
# checkpoint is written to work_dir/pruned.pth, with work_dir/pruned.py for tools/test.py.
_base_ = './yolov3_d53_voc0712_finetune.py'

custom_hooks = [dict(type='LosslessPruningHook', criterion='l1', ratio=0.9, input_size=416)]
