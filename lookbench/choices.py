"""The fixed choice sets that several layers name, defined once (torch-free, so the trial
config and the command line can use them without importing torch)."""

from __future__ import annotations

from typing import Literal, get_args

# Lookahead's inner-state policies (paper, Appendix D.1).
InnerStatePolicy = Literal["maintain", "reset", "interpolate"]
INNER_STATE_POLICIES: tuple[str, ...] = get_args(InnerStatePolicy)

# Learning-rate schedules of a trial (see lookbench.execution.trial).
# step: ×0.2 at 30/60/80% of the epochs (the paper's CIFAR); thirds: ×0.1 at 1/3 and 2/3 (the
# paper's ImageNet, epochs 30 and 60 of 90); cosine: to zero over the epochs; plateau: halved
# whenever the task's metric has not improved for its ``plateau_patience`` epochs (the paper's
# language model).
# rsqrt: per step, linear warmup to the base rate over the workload's warmup_steps, then
# ∝ 1/√step (Vaswani et al.'s Transformer schedule, peaking at the base rate).
# aggressive: ×0.1 at 30/48/58 of 60 epochs (the paper's faster ImageNet schedule).
Schedule = Literal["constant", "step", "thirds", "aggressive", "cosine", "plateau", "rsqrt"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)

# The CIFAR tasks' data sets and models (here, not beside the code that loads and builds them,
# so that the tasks' options are checked before torch is imported).
CifarName = Literal["cifar10", "cifar100"]
ModelName = Literal["resnet18", "resnet20"]
# The image-folder tasks' recipes and pipelines (see lookbench.tasks.imagefolder).
Augment = Literal["resized_crop", "padded_crop"]
Pipeline = Literal["auto", "memory", "stream"]
# torchvision classification models the image-folder tasks' option `model` takes without
# importing torchvision to look (any other name is looked up in torchvision itself; a test
# keeps every name here one that torchvision builds).
TORCHVISION_CLASSIFIERS = frozenset({
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
    "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "convnext_tiny", "vit_b_16", "vgg16", "alexnet", "densenet121",
    "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet", "inception_v3", "regnet_y_400mf",
})
