# The paper's Fig. 6 order: prune (L1, CR 0.5) -> reconstruct -> fine-tune the smaller model.
# Single-process only (the model is rebuilt before DDP could wrap it): tools/train.py, no launcher.
_base_ = './yolov3_d53_voc0712_finetune.py'

custom_hooks = [dict(type='LosslessPruningHook', criterion='l1', ratio=0.5, input_size=416,
                     order='reconstruct_then_finetune')]
