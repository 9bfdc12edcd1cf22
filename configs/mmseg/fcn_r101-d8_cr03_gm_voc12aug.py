# FCN-R101, VOC 2012 aug: mask 30% of every conv's filters by GM (paper CR 0.3; conv_seg of the
# decode and auxiliary heads is never pruned), fine-tune with the masks held (paper schedule, see
# the base), then rebuild losslessly into work_dir/pruned.pth (+ work_dir/pruned.py for tools/test.py).
_base_ = './fcn_r101-d8_voc12aug_finetune.py'

custom_hooks = [dict(type='LosslessPruningHook', criterion='gm', ratio=0.3, input_size=512)]
