"""Sequence classification: one label per sequence (DNA records, audio clips, ...)."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score, MulticlassMatthewsCorrCoef

from seqpipe.chunked import valid_mean
from seqpipe.contracts import DataInfo, TokenInput
from seqpipe.dna_alphabet import reverse_complement_ids
from seqpipe.errors import ConfigError
from seqpipe.heads import TaskHead, batch_ids

#: the values of ``SequenceClassification(strands=...)``
STRANDS = ("average", "pair", "forward")


class MatthewsCorrCoef(MulticlassMatthewsCorrCoef):
    """Matthews correlation coefficient of K classes from the confusion matrix, 0 where it is undefined (every
    prediction one class, or every target one class), as scikit-learn gives it. torchmetrics 1.9 returns a limit
    value there instead: 0.92 for a model that predicts the majority class of 19 to 1."""

    def compute(self) -> torch.Tensor:
        confmat = self.confmat.double()
        truth, predicted, total = confmat.sum(1), confmat.sum(0), confmat.sum()
        covariance = confmat.trace() * total - (truth * predicted).sum()
        spread = ((total**2 - (predicted**2).sum()) * (total**2 - (truth**2).sum())).sqrt()
        return (covariance / spread if spread > 0 else torch.zeros((), dtype=confmat.dtype, device=confmat.device)).float()


class PresentClassesAUROC(MulticlassAUROC):
    """Macro one-vs-rest AUROC over the classes the epoch's targets hold (with positives and negatives), NaN when
    none does. torchmetrics 1.9 counts a class absent from the split as 0 (with a warning): a validation split that
    lacks a one-record class read 0.45 for a model whose present classes scored 0.88."""

    def __init__(self, num_classes: int, thresholds: int | None = None):
        super().__init__(num_classes, average="none", thresholds=thresholds)

    def compute(self) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "No (positive|negative) samples in targets")  # the classes left out
            per_class = super().compute()
        if self.thresholds is None:
            counts = torch.bincount(dim_zero_cat(self.target).long(), minlength=self.num_classes)
        else:  # binned: the confusion matrices (thresholds, C, 2, 2) count each class's positives, row 1
            counts = self.confmat[0, :, 1, :].sum(-1)
        defined = (counts > 0) & (counts < counts.sum())
        if not defined.any():  # a monitor of NaN would keep the first epoch's checkpoint as the best
            rank_zero_warn("AUROC is undefined (NaN): the split holds one class only")
            return torch.tensor(float("nan"), device=per_class.device)
        return per_class[defined].mean()


def pool(features: torch.Tensor, lengths: torch.Tensor | None, how: Literal["mean", "last"]) -> torch.Tensor:
    """features (B, L, D), lengths (B,) or None (all positions valid) -> (B, D), ignoring right padding."""
    if how == "mean":
        return valid_mean(features, lengths)
    if lengths is None:
        return features[:, -1]
    return features[torch.arange(len(features), device=features.device), lengths - 1]


class SequenceClassification(TaskHead):
    """Pool the features over valid positions, then a linear layer to one logit per class.

    Args:
        pooling: "mean" over valid positions (any backbone), or "last" valid position (causal backbones).
        dropout: dropout on the pooled features.
        strands: how DNA data (tokenizer "dna") is read; other data has one view. "average": outside training, score
            each sequence and its reverse complement and average the logits, so both strands of a sequence get the
            same prediction (strand-invariant). "pair": in training too, read both strands, each with its own
            linear layer, and add the logits: the model can use what is strand-specific and what is on the other
            strand; for sequences given in a known orientation, fitted without reverse-complement augmentation.
            "forward": the sequence as given only.
        monitor: the validation metric that chooses the best checkpoint (highest): "acc", or for imbalanced
            classes "mcc", "f1" or "auroc" (accuracy would choose a model that always says the majority class).

    Logs accuracy, macro-F1, MCC and macro one-vs-rest AUROC over the whole epoch. Class names come from the data
    (sorted) and travel in the checkpoint.
    """

    task = "a sequence classifier"
    monitor_mode = "max"

    def __init__(self, pooling: Literal["mean", "last"] = "mean", dropout: float = 0.0,
                 strands: Literal["average", "pair", "forward"] = "average",
                 monitor: Literal["acc", "mcc", "f1", "auroc"] = "acc"):
        super().__init__()
        if monitor not in ("acc", "mcc", "f1", "auroc"):
            raise ConfigError(f"{type(self).__name__}: monitor must be acc, mcc, f1 or auroc, got {monitor!r}")
        self.monitor = f"val/{monitor}"
        if strands not in STRANDS:
            raise ConfigError(f"{type(self).__name__}: strands must be one of {', '.join(STRANDS)}, got {strands!r}")
        if pooling not in ("mean", "last"):
            raise ConfigError(f"{type(self).__name__}: pooling must be 'mean' or 'last', got {pooling!r}")
        self.pooling, self.strands = pooling, strands
        self.strand_views = "forward"  # ``strands`` once bound to DNA data
        self.dropout = nn.Dropout(dropout)
        self.label_names: list[str] = []
        self.classifier: nn.Linear | None = None
        self.reverse_classifier: nn.Linear | None = None  # "pair": the reverse strand's

    def bind(self, d_model: int, data_info: DataInfo) -> None:
        self.label_names = data_info.classes(type(self).__name__)
        dna = isinstance(data_info.input, TokenInput) and data_info.input.tokenizer == "dna"
        self.strand_views = self.strands if dna else "forward"
        self.make_classifiers(self.pooled_width(d_model))

    def pooled_width(self, d_model: int) -> int:
        """Features the linear layer reads for backbone features of ``d_model`` channels."""
        return d_model

    def make_classifiers(self, width: int) -> None:
        """The linear layer(s) from ``width`` pooled features to one logit per class ("pair": one per strand, the
        reverse strand's without a bias, which the forward strand's already gives)."""
        self.classifier = nn.Linear(width, len(self.label_names))
        if self.strand_views == "pair":
            self.reverse_classifier = nn.Linear(width, len(self.label_names), bias=False)

    @property
    def strand_invariant(self) -> bool:
        """Whether a sequence and its reverse complement get the same prediction by construction."""
        return self.strand_views == "average"

    @property
    def mean_pooled(self) -> bool:
        return self.pooling == "mean"

    def evaluation_views(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The batch, and (DNA, ``strands`` "average" or "pair") the batch of reverse complements (``x`` (B, L),
        right-padded), marked ``"reverse": True``."""
        if self.strand_views == "forward":
            return [batch]
        return [batch, {**batch, "x": reverse_complement_ids(batch["x"], batch.get("lengths")), "reverse": True}]

    def training_views(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Both strands with ``strands`` "pair" (each has its own weights), else the batch alone."""
        return self.evaluation_views(batch) if self.strand_views == "pair" else [batch]

    def merge_views(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Logits (B, n_classes) of each view -> their mean ("average") or sum ("pair": one linear layer over the
        pooled features of both strands)."""
        if len(outputs) == 1:
            return outputs[0]
        return torch.stack(outputs).sum(0) if self.strand_views == "pair" else torch.stack(outputs).mean(0)

    def view_classifier(self, batch: dict[str, Any]) -> nn.Linear:
        """The linear layer of the view ``batch``: the reverse strand's own with ``strands`` "pair"."""
        if not (batch.get("reverse") and self.strand_views == "pair"):
            return self.classifier
        if self.reverse_classifier is None:
            raise ConfigError(f"{type(self).__name__}: strands 'pair' needs a linear layer for the reverse strand; "
                              f"a head that overrides bind makes its layers with make_classifiers")
        return self.reverse_classifier

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None, batch: dict[str, Any]) -> torch.Tensor:
        """features (B, L, D) -> logits (B, n_classes)."""
        return self.view_classifier(batch)(self.dropout(pool(features, lengths, self.pooling)))

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(outputs, batch["y"])

    def metrics(self) -> MetricCollection:
        n = len(self.label_names)
        return MetricCollection({
            "acc": MulticlassAccuracy(n, average="micro"),
            "f1": MulticlassF1Score(n, average="macro"),
            "mcc": MatthewsCorrCoef(n),
            "auroc": PresentClassesAUROC(n),
        })

    def update_metrics(self, metrics: MetricCollection, outputs: torch.Tensor, batch: dict[str, Any]) -> None:
        metrics.update(outputs.float().softmax(-1), batch["y"])

    def predictions(self, outputs: torch.Tensor, batch: dict[str, Any], data_info: DataInfo) -> pd.DataFrame:
        """Logits (B, K) -> one row per sequence: id, predicted label, ``prob_<class>`` for each class."""
        probs = outputs.detach().float().softmax(-1).cpu().numpy()
        names = list(data_info.label_names)
        frame = pd.DataFrame({"id": batch_ids(batch, len(probs)), "label": [names[i] for i in probs.argmax(1)]})
        for k, name in enumerate(names):
            frame[f"prob_{name}"] = probs[:, k]
        return frame
