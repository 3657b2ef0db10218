"""Checkpoints of small DNA models for the tool tests (``seqpipe variants``, ``seqpipe explain``), written the
way ``seqpipe fit`` writes them (class-path configs in the hyper-parameters), without training; and a head
with a motif planted in its weights; the files a test left open."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import lightning
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import instantiate_module
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from seqpipe.contracts import DataInfo
from seqpipe.data import synthetic
from seqpipe.heads import TaskHead
from seqpipe.model import SequenceModel

COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
DNA_INFO = {"vocab_size": 6, "tokenizer": "dna"}  # as the DNA data modules describe their tokens

RC_PER_BASE = {
    "backbone": {"class_path": "seqpipe.dna_backbones.RCEquivariantBackbone", "init_args": {
        "d_model": 8, "n_layers": 1, "output": "invariant",
        "block": {"class_path": "seqpipe.s4.S4Block", "init_args": {"d_state": 8}}}},
    "head": {"class_path": "seqpipe.tasks.per_base.PerBaseClassification"},
}
CAUSAL_CLASSIFIER = {
    "backbone": {"class_path": "seqpipe.backbone.Backbone", "init_args": {
        "d_model": 8, "n_layers": 1, "block": {"class_path": "seqpipe.s4.S4Block", "init_args": {"d_state": 8}}}},
    "head": {"class_path": "seqpipe.tasks.classification.SequenceClassification"},
}
MOTIF_MODEL = {
    "backbone": {"class_path": "seqpipe.backbone.Backbone", "init_args": {"d_model": 4, "n_layers": 0}},
    "head": {"class_path": "dna_tool_fixtures.PlantedMotifHead", "init_args": {"motif": "TATAAT"}},
}

FORECASTER = {**CAUSAL_CLASSIFIER, "head": {"class_path": "seqpipe.tasks.forecasting.Forecasting"}}
#: a forecasting model's data_info: two channels (not DNA)
SERIES_INFO = {"input_dim": 2, "columns": ["OT", "HUFL"], "targets": ["OT"], "target_index": [0], "mean": [1.0, 2.0],
               "std": [1.0, 1.0], "seq_len": 24, "pred_len": 8, "freq": "h", "calendar": ["hour", "weekday"]}


def reverse_complement(sequence: str) -> str:
    return sequence.translate(COMPLEMENT)[::-1]


def write_fasta(path: Path, records: dict[str, str] | Iterable[tuple[str, str]]) -> str:
    """Records (id -> sequence, or (id, sequence) pairs) as a FASTA file whose headers carry a description after
    the id, as real ones do; its path as a string."""
    pairs = records.items() if isinstance(records, dict) else records
    return str(synthetic.write_fasta(path, ((f"{name} description", sequence) for name, sequence in pairs)))


def open_files_under(directory) -> list[str]:
    """The files under ``directory`` this process holds open (Linux: /proc/self/fd)."""
    links = [os.path.join("/proc/self/fd", fd) for fd in os.listdir("/proc/self/fd")]
    targets = []
    for link in links:
        try:
            targets.append(os.readlink(link))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return [t for t in targets if t.startswith(str(directory))]


#: for tests that list this process's open files
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists open files through /proc/self/fd")


def write_checkpoint(path: Path, config: dict[str, Any], label_names: list[str] | None, seed: int = 0,
                     data_info: dict[str, Any] | None = None) -> SequenceModel:
    """A ``seqpipe fit``-style checkpoint of ``config`` (backbone and head class paths) with random weights, of a
    DNA model with classes ``label_names`` unless ``data_info`` says otherwise; returns the model (eval mode)."""
    torch.manual_seed(seed)
    hparams = {**config, "data_info": data_info or {**DNA_INFO, "label_names": label_names}}
    model = instantiate_module(SequenceModel, hparams)
    if isinstance(model.head, PlantedMotifHead):
        model.head.plant(model.backbone)
    torch.save({
        "state_dict": model.state_dict(), "pytorch-lightning_version": lightning.__version__,
        "hyper_parameters": {**hparams, "_instantiator": "lightning.pytorch.cli.instantiate_module"},
    }, path)
    return model.eval()


class PlantedMotifHead(TaskHead):
    """Two classes, "absent" and "present": the logit of "present" is the best match of ``motif`` anywhere in
    the window (a position weight matrix scanned over the features), so the model depends on the bases of the
    motif's occurrence and on nothing else."""

    def __init__(self, motif: str = "TATAAT"):
        super().__init__()
        self.motif = motif
        self.scanner = nn.Conv1d(4, 1, len(motif))

    def bind(self, d_model: int, data_info: DataInfo) -> None:
        self.label_names = list(data_info.label_names)

    def plant(self, backbone) -> None:
        """Embed A, C, G, T one-hot (ids 1-4; the final RMSNorm makes the features 2 x one-hot) and score each
        motif base +0.5, any other -0.5, so the full motif gives logit +2 and each mismatch costs 1 (the
        probabilities stay far from 0 and 1, where the log-odds would saturate)."""
        with torch.no_grad():
            backbone.encoder.weight.zero_()
            backbone.encoder.weight[1:5] = torch.eye(4)
            weights = -0.25 * torch.ones(4, len(self.motif))
            for j, base in enumerate(self.motif):
                weights["ACGT".index(base), j] = 0.25
            self.scanner.weight.copy_(weights[None])
            self.scanner.bias.fill_(2.0 - 0.5 * len(self.motif))

    def forward(self, features: torch.Tensor, lengths, batch) -> torch.Tensor:
        """features (B, L, 4) -> logits (B, 2): [0, best motif match]."""
        match = self.scanner(features.transpose(1, 2)).amax(-1)
        return torch.cat([torch.zeros_like(match), match], dim=-1)

    def loss(self, outputs, batch):
        return F.cross_entropy(outputs, batch["y"])

    def metrics(self) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(2)})

    def update_metrics(self, metrics: MetricCollection, outputs, batch) -> None:
        metrics.update(outputs, batch["y"])
