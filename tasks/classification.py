"""Sequence classification: one label per sequence (DNA records, audio clips, ...)."""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score, MulticlassMatthewsCorrCoef

from seqpipe.chunked import valid_mean
from seqpipe.contracts import DataInfo, TokenInput
from seqpipe.dna_alphabet import reverse_complement_ids
from seqpipe.heads import TaskHead


def pool(features: torch.Tensor, lengths: torch.Tensor | None, how: Literal["mean", "last"]) -> torch.Tensor:
    """features (B, L, D), lengths (B,) or None (all positions valid) -> (B, D), ignoring right padding."""
    if how == "mean":
        return valid_mean(features, lengths)
    batch, length, _ = features.shape
    if lengths is None:
        return features[:, -1]
    return features[torch.arange(batch, device=features.device), lengths - 1]


class SequenceClassification(TaskHead):
    """Pool the features over valid positions, then a linear layer to one logit per class.

    Args:
        pooling: "mean" over valid positions (any backbone), or "last" valid position (causal backbones).
        dropout: dropout on the pooled features.
        strand_average: DNA data (tokenizer "dna") only: outside training, score each sequence and its reverse
            complement and average the logits, so both strands of a sequence get the same prediction.

    Logs accuracy, macro-F1, MCC and macro one-vs-rest AUROC over the whole epoch; the best checkpoint is
    the one with the highest ``val/acc``. Class names come from the data (sorted) and travel in the checkpoint.
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(self, pooling: Literal["mean", "last"] = "mean", dropout: float = 0.0, strand_average: bool = True):
        super().__init__()
        self.pooling, self.strand_average = pooling, strand_average
        self.both_strands = False
        self.dropout = nn.Dropout(dropout)
        self.label_names: list[str] = []
        self.classifier: nn.Linear | None = None

    def bind(self, d_model: int, data_info: DataInfo) -> None:
        self.label_names = data_info.classes(type(self).__name__)
        self.classifier = nn.Linear(d_model, len(self.label_names))
        self.both_strands = self.strand_average and isinstance(data_info.input, TokenInput) and data_info.input.tokenizer == "dna"

    @property
    def mean_pooled(self) -> bool:
        return self.pooling == "mean"

    def evaluation_views(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The batch, and (DNA, ``strand_average``) the batch of reverse complements (``x`` (B, L), right-padded)."""
        if not self.both_strands:
            return [batch]
        return [batch, {**batch, "x": reverse_complement_ids(batch["x"], batch.get("lengths"))}]

    def merge_views(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Logits (B, n_classes) of each view -> their mean."""
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(0)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None, batch: dict[str, Any]) -> torch.Tensor:
        """features (B, L, D) -> logits (B, n_classes)."""
        return self.classifier(self.dropout(pool(features, lengths, self.pooling)))

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(outputs, batch["y"])

    def metrics(self) -> MetricCollection:
        n = len(self.label_names)
        return MetricCollection({
            "acc": MulticlassAccuracy(n, average="micro"),
            "f1": MulticlassF1Score(n, average="macro"),
            "mcc": MulticlassMatthewsCorrCoef(n),
            "auroc": MulticlassAUROC(n),
        })

    def update_metrics(self, metrics: MetricCollection, outputs: torch.Tensor, batch: dict[str, Any]) -> None:
        metrics.update(outputs.float().softmax(-1), batch["y"])

    def predictions(self, outputs: torch.Tensor, batch: dict[str, Any], data_info: DataInfo) -> pd.DataFrame:
        """Columns: id, predicted label, ``prob_<class>`` for each class."""
        probs = outputs.detach().float().softmax(-1).cpu().numpy()
        names = list(data_info.label_names)
        frame = pd.DataFrame({"id": list(batch["ids"]), "label": [names[i] for i in probs.argmax(1)]})
        for k, name in enumerate(names):
            frame[f"prob_{name}"] = probs[:, k]
        return frame
