"""Per-base heads: a class for every position (coding mask, chromatin state, ...) and next-base language modelling.

Batches carry ``y`` (B, L) class indices and ``mask`` (B, L) bool, the positions that count (see
:class:`seqpipe.data.genome.GenomeData`); loss and metrics use the masked positions only, and the metrics
cover every valid base of the epoch.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, MulticlassAccuracy

from seqpipe.contracts import DataInfo
from seqpipe.dna_alphabet import BASES
from seqpipe.errors import ConfigError
from seqpipe.heads import TaskHead
from seqpipe.tasks.classification import PresentClassesAUROC


class PerBaseClassification(TaskHead):
    """A linear layer from each position's features to one logit per class.

    Args:
        dropout: dropout on the features.
        auroc_bins: thresholds of the epoch AUROC; memory stays constant over a genome-sized epoch (the
            binned AUROC is within about 1e-3 of the exact one). None: exact, storing every base's score.

    Two classes: ``val/acc`` and ``val/auroc`` of the second class (the feature, e.g. CDS) against the first;
    more: micro accuracy and macro one-vs-rest AUROC. The best checkpoint has the highest ``val/auroc``.
    Predictions: one row per scored base — ``chrom``, ``position`` (0-based), ``prob_<class>`` — which
    :class:`seqpipe.tasks.genome_writer.GenomePredictionWriter` stores in zarr and a bedGraph, per base or
    per bin (a CSV of them is written only when ``--prediction.path`` asks for one).
    """

    task = "a per-base classifier"
    monitor = "val/auroc"
    monitor_mode = "max"

    def __init__(self, dropout: float = 0.0, auroc_bins: int | None = 1000):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.auroc_bins = auroc_bins
        self.label_names: list[str] = []
        self.classifier: nn.Linear | None = None

    def bind(self, d_model: int, data_info: DataInfo) -> None:
        self.label_names = data_info.classes(type(self).__name__)
        self.classifier = nn.Linear(d_model, len(self.label_names))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None, batch: dict[str, Any]) -> torch.Tensor:
        """features (B, L, D) -> logits (B, L, n_classes)."""
        return self.classifier(self.dropout(features))

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Logits (B, L, K) -> cross-entropy against ``batch["y"]`` (B, L), averaged over the positions where
        ``batch["mask"]`` (B, L) is set."""
        if batch["y"].dim() != 2:  # GenomeData(target="window_class"): one class per window
            raise ConfigError(f"{type(self).__name__} scores every base, but the data gives one class per window "
                              "(data.target window_class): use a sequence head, --model.head "
                              "seqpipe.tasks.classification.SequenceClassification")
        mask = batch["mask"]
        return F.cross_entropy(outputs[mask].float(), batch["y"][mask].long())

    def metrics(self) -> MetricCollection:
        n = len(self.label_names)
        if n == 2:
            return MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC(thresholds=self.auroc_bins)})
        return MetricCollection({
            "acc": MulticlassAccuracy(n, average="micro"), "auroc": PresentClassesAUROC(n, thresholds=self.auroc_bins),
        })

    def update_metrics(self, metrics: MetricCollection, outputs: torch.Tensor, batch: dict[str, Any]) -> None:
        mask = batch["mask"]
        probs = outputs[mask].float().softmax(-1)
        metrics.update(probs[:, 1] if probs.shape[-1] == 2 else probs, batch["y"][mask].long())

    def predictions(self, outputs: torch.Tensor, batch: dict[str, Any], data_info: DataInfo) -> pd.DataFrame:
        """Rows of the masked positions, window by window, in genome order."""
        probs = outputs.float().softmax(-1).cpu()
        frames = []
        for row, chrom in enumerate(batch["chrom"]):
            keep, row_probs = batch["mask"][row].cpu(), probs[row]
            if batch.get("strand") is not None and batch["strand"][row] == "-":  # read reversed: back to genome order
                keep, row_probs = keep.flip(0), row_probs.flip(0)
            positions = int(batch["start"][row]) + torch.nonzero(keep).squeeze(1)
            frame = pd.DataFrame({"chrom": chrom, "position": positions.numpy()})
            for k, name in enumerate(data_info.label_names):
                frame[f"prob_{name}"] = row_probs[keep, k].numpy()
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


class NextBaseLM(PerBaseClassification):
    """Next-base language model for pre-training: at each position, the distribution of the next base.

    Use with ``GenomeData(target="next_base")`` (``y`` = the next base as A, C, G, T = 0..3; positions
    whose next base is N or off the chromosome are masked) and a causal backbone — a bidirectional one
    would see the answer. Logs ``val/acc`` and ``val/perplexity`` (exp of the mean loss per base).
    """

    task = "a next-base language model"
    monitor = "val/loss"
    monitor_mode = "min"

    def bind(self, d_model: int, data_info: DataInfo) -> None:
        self.check_targets(data_info)
        super().bind(d_model, data_info)

    def check_targets(self, data_info: DataInfo) -> None:
        """Refuse data whose targets are not this head's: the next base of each position."""
        if not data_info.next_token_targets:
            raise ConfigError("NextBaseLM predicts the next base, but the data's targets are not the next base: with "
                              "data.objective masked use seqpipe.tasks.per_base.MaskedBaseLM (configs/dna_pretrain_rc.yaml)"
                              ", or give data.objective next_base (GenomeData: data.target next_base)")

    def metrics(self) -> MetricCollection:
        from torchmetrics.text import Perplexity

        return MetricCollection({"acc": MulticlassAccuracy(len(self.label_names), average="micro"), "perplexity": Perplexity()})

    def update_metrics(self, metrics: MetricCollection, outputs: torch.Tensor, batch: dict[str, Any]) -> None:
        mask = batch["mask"]
        logits, targets = outputs[mask].float(), batch["y"][mask].long()
        metrics["acc"].update(logits, targets)
        metrics["perplexity"].update(logits[None], targets[None])


class MaskedBaseLM(NextBaseLM):
    """Masked-base language model for pre-training (BERT, Caduceus): the original base at each masked position.

    Use with ``DNAPretrainData(objective="masked")`` (``y`` = the original base as 0..3, ``mask`` = the
    chosen positions) and a bidirectional or RC-equivariant backbone. Logs ``val/acc`` (masked accuracy) and
    ``val/perplexity`` over the masked positions; loss and metrics are those of :class:`NextBaseLM`.
    """

    task = "a masked-base language model"

    def check_targets(self, data_info: DataInfo) -> None:
        """Refuse data whose targets are not this head's: the original base of masked positions."""
        if data_info.next_token_targets or list(data_info.label_names or []) != list(BASES):
            raise ConfigError("MaskedBaseLM predicts the masked bases of DNAPretrainData(objective='masked'), but the "
                              "data's targets are " + ("the next base: give data.objective masked, or use "
                              "seqpipe.tasks.per_base.NextBaseLM" if data_info.next_token_targets else
                              f"the classes {list(data_info.label_names or [])}"))
