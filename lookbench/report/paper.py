"""The paper's own numbers, shown beside a study that reproduces the paper's setting, with
where each comes from. Only settings that match the paper's protocol get them: the same task,
model and number of epochs (a 30-epoch ResNet-20 run is not the paper's experiment)."""

from __future__ import annotations

from dataclasses import dataclass

from lookbench.report.data import StudyData


@dataclass(frozen=True)
class PaperResult:
    optimizer: str  # as the paper names it
    value: str  # as the paper prints it, in the page's units (an accuracy in %)
    source: str


# Zhang, Lucas, Hinton, Ba (2019). CIFAR: ResNet-18, 200 epochs, batch 128, ×0.2 at 60/120/160.
_CIFAR10 = [
    PaperResult("SGD", "95.23%", "Figure 5 (right), final test accuracy, mean of 3 seeds"),
    PaperResult("Adam (AdamW)", "94.84%", "Figure 5 (right)"),
    PaperResult("Lookahead (SGD, k = 5, α = 0.8, reset)", "95.27%", "Figure 5 (right)"),
    PaperResult("Lookahead, maintain momentum", "95.15% ± 0.08 pp",
                "Table 6 (inner-state ablation)"),
    PaperResult("Lookahead, interpolate momentum", "95.16% ± 0.13 pp", "Table 6"),
    PaperResult("Lookahead, reset momentum", "94.91% ± 0.05 pp", "Table 6"),
]
# ImageNet, ResNet-50, top-1 / top-5 single-crop validation accuracy (Table 2).
_IMAGENET = [
    PaperResult("SGD, epoch 50", "74.43% / 92.15%", "Table 2"),
    PaperResult("Lookahead, epoch 50", "75.13% / 92.22%", "Table 2"),
    PaperResult("SGD, epoch 60", "75.15% / 92.56%", "Table 2"),
    PaperResult("Lookahead, epoch 60", "75.49% / 92.53%", "Table 2"),
]


def paper_results(data: StudyData) -> list[PaperResult]:
    """The paper's numbers for this study's setting; empty when it is not the paper's."""
    epochs = int(data.trials["epochs"].iloc[0])
    model = data.task_options.get("model", "resnet18")
    if data.task == "cifar10" and epochs == 200 and model == "resnet18":
        return _CIFAR10
    if data.task == "imagenet" and model in ("resnet50", None):
        return _IMAGENET
    return []
