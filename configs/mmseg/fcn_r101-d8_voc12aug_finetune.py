# FCN-ResNetV1c-101 (d8) on PASCAL VOC 2012 aug (21 classes, 512x512 crops) with the paper's
# fine-tuning schedule for pruned segmentation models (Lee, Lee & Hwang 2023, hyper-parameter
# table): 50 epochs, batch 16 on 1 GPU, SGD momentum 0.9, weight decay 1e-4, lr 1e-3 divided by
# 5 at epochs 25 and 40. BN instead of the stock SyncBN: the paper trains on one GPU.
# Start from your trained (unpruned) model: --cfg-options load_from=ORIGINAL.pth
_base_ = 'mmseg::fcn/fcn_r101-d8_4xb4-40k_voc12aug-512x512.py'

custom_imports = dict(imports=['lrp_plugin.integrations.mmengine'], allow_failed_imports=False)

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(backbone=dict(norm_cfg=norm_cfg), decode_head=dict(norm_cfg=norm_cfg),
             auxiliary_head=dict(norm_cfg=norm_cfg))

train_dataloader = dict(batch_size=16, num_workers=4, sampler=dict(type='DefaultSampler', shuffle=True))
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=50, val_interval=5)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=1e-3, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', milestones=[25, 40], gamma=0.2, by_epoch=True, begin=0, end=50)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=5))
log_processor = dict(by_epoch=True)
