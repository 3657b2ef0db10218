"""DNA sequence classification with what small-data promoter models get right: max-pooled motif detectors and k-mer counts.

On 58-250 bp promoter sets a bag of k-mers and a CNN's global max over its motif detectors are hard to beat
(bench/RESULTS.md); :class:`DNASequenceClassification` gives the classifier both beside the backbone's mean.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from seqpipe.chunked import valid_max
from seqpipe.contracts import DataInfo, TokenInput
from seqpipe.dna_alphabet import base_index
from seqpipe.errors import ConfigError
from seqpipe.tasks.classification import SequenceClassification, pool


def kmer_profile(x: torch.Tensor, k: int) -> torch.Tensor:
    """Token ids (B, L) -> L2-normalised counts of the 4**k k-mers of each row (B, 4**k), float.

    k-mers touching padding or N are not counted, so right padding changes nothing. Index of a k-mer:
    its bases read as a base-4 number (A 0, C 1, G 2, T 3), first base most significant.
    """
    batch, length = x.shape
    counts = torch.zeros(batch, 4**k, device=x.device)
    if length >= k:
        windows = base_index(x.long()).unfold(1, k, 1)  # (B, L - k + 1, k)
        valid = ((windows >= 0) & (windows < 4)).all(-1)
        place = 4 ** torch.arange(k - 1, -1, -1, device=x.device)
        index = (windows.clamp(0, 3) * place).sum(-1)
        counts.scatter_add_(1, index, valid.float())
    return F.normalize(counts, dim=1)


class DNASequenceClassification(SequenceClassification):
    """:class:`~seqpipe.tasks.classification.SequenceClassification` for DNA with richer pooling and k-mer features.

    Args:
        pooling: "mean" or "last" as for the parent; "max" over the valid positions (a CNN's global max:
            was a motif detector on anywhere?), or "mean_max" (both, concatenated: 2 * d_model features).
        kmer_size: with k > 0, the L2-normalised counts of the 4**k k-mers of the input (:func:`kmer_profile`,
            a bag-of-k-mers model's features) join the pooled features before the linear layer; 0: none.
        dropout: as for the parent.
        strands: as for the parent (the k-mers of each strand are counted in its own view, so with "average"
            both strands still get one prediction).
        monitor: as for the parent.

    features (B, L, D) -> logits (B, n_classes).
    """

    task = "a DNA sequence classifier"

    def __init__(
        self,
        pooling: Literal["mean", "last", "max", "mean_max"] = "mean_max",
        dropout: float = 0.0,
        strands: Literal["average", "pair", "forward"] = "average",
        kmer_size: int = 0,
        monitor: Literal["acc", "mcc", "f1", "auroc"] = "acc",
    ):
        if pooling not in ("mean", "last", "max", "mean_max"):
            raise ConfigError(f"DNASequenceClassification: pooling must be mean, last, max or mean_max, got {pooling!r}")
        if not 0 <= kmer_size <= 8:
            raise ConfigError(f"DNASequenceClassification: kmer_size must be 0 (none) to 8, got {kmer_size}")
        super().__init__(pooling="mean", dropout=dropout, strands=strands, monitor=monitor)
        self.pooling, self.kmer_size = pooling, kmer_size

    def bind(self, d_model: int, data_info: DataInfo) -> None:
        tokenizer = data_info.input.tokenizer if isinstance(data_info.input, TokenInput) else None
        if self.kmer_size and tokenizer != "dna":
            raise ConfigError(f"DNASequenceClassification: kmer_size needs DNA tokens, the data's tokenizer is {tokenizer!r}")
        super().bind(d_model, data_info)

    def pooled_width(self, d_model: int) -> int:
        """The mean and/or max of ``d_model`` features, and the 4**k k-mer counts."""
        return d_model * (2 if self.pooling == "mean_max" else 1) + (4**self.kmer_size if self.kmer_size else 0)

    @property
    def mean_max_pooled(self) -> bool:
        return self.pooling in ("max", "mean_max")

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None, batch: dict[str, Any]) -> torch.Tensor:
        """features (B, L, D), lengths (B,) -> logits (B, n_classes); k-mers are counted on ``batch["x"]`` (B, L)."""
        if self.mean_max_pooled:
            return self.forward_pooled(pool(features, lengths, "mean"), valid_max(features, lengths), batch)
        return self._classify(pool(features, lengths, self.pooling), batch)

    def forward_pooled(self, mean: torch.Tensor, peak: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The features' mean and maximum over the valid positions (B, D) each -> logits (B, n_classes); a long
        record streamed chunk by chunk (``--model.chunk_size``) comes here with both."""
        return self._classify(torch.cat([mean, peak], dim=-1) if self.pooling == "mean_max" else peak, batch)

    def _classify(self, pooled: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        pooled = self.dropout(pooled)
        if self.kmer_size:
            pooled = torch.cat([pooled, kmer_profile(batch["x"], self.kmer_size).to(pooled.dtype)], dim=-1)
        return self.view_classifier(batch)(pooled)
