# YOLOv3-D53 on PASCAL VOC 07+12 (20 classes, 416x416) with the paper's fine-tuning schedule
# for pruned detectors (Lee, Lee & Hwang 2023, hyper-parameter table): 100 epochs, batch 16 on
# 1 GPU, SGD momentum 0.9, weight decay 5e-4, lr 1e-4 cosine-annealed to 1e-5.
# Not a pruning config by itself: the yolov3_d53_cr*_voc.py files add LosslessPruningHook.
# Start from your trained (unpruned) VOC model: --cfg-options load_from=ORIGINAL.pth
_base_ = 'mmdet::yolo/yolov3_d53_8xb8-ms-416-273e_coco.py'

custom_imports = dict(imports=['lrp_plugin.integrations.mmengine'], allow_failed_imports=False)

model = dict(bbox_head=dict(num_classes=20))

dataset_type = 'VOCDataset'
data_root = 'data/VOCdevkit/'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=[0, 0, 0], to_rgb=True, ratio_range=(1, 2)),
    dict(type='MinIoURandomCrop', min_ious=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9), min_crop_size=0.3),
    dict(type='RandomResize', scale=[(320, 320), (416, 416)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(416, 416), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        ignore_keys=['dataset_type'],
        datasets=[
            dict(type=dataset_type, data_root=data_root, ann_file=f'VOC{year}/ImageSets/Main/trainval.txt',
                 data_prefix=dict(sub_data_root=f'VOC{year}/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=32),
                 pipeline=train_pipeline, backend_args=None)
            for year in ('2007', '2012')
        ]))
val_dataloader = dict(
    batch_size=1,
    dataset=dict(_delete_=True, type=dataset_type, data_root=data_root, ann_file='VOC2007/ImageSets/Main/test.txt',
                 data_prefix=dict(sub_data_root='VOC2007/'), test_mode=True, pipeline=test_pipeline,
                 backend_args=None))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=100, val_interval=10)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=1e-4, momentum=0.9, weight_decay=5e-4))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=100, eta_min=1e-5, by_epoch=True, begin=0, end=100)]
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10))
