"""Scoring DNA with a trained model outside Lightning's loops, for the genomics tools (``seqpipe variants``,
``seqpipe explain``, ``seqpipe embed``): the model from its checkpoint, class probabilities averaged over both strands, and one
score per class for a whole window.

A *sequence* model (e.g. :class:`seqpipe.tasks.classification.SequenceClassification`) gives one probability
per class and window; a *per-base* model (:class:`seqpipe.tasks.per_base.PerBaseClassification`) one per class
and position, which :func:`window_scores` averages over a span of positions.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import torch

from seqpipe.checkpoints import load_trained_model
from seqpipe.chunked import check_chunk_size
from seqpipe.contracts import ChannelInput, TokenInput
from seqpipe.data.dna import DNAClassificationData
from seqpipe.dna_alphabet import DNA_VOCAB, reverse_complement_ids
from seqpipe.errors import CheckpointError, ConfigError
from seqpipe.model import SequenceModel
from seqpipe.tasks.per_base import PerBaseClassification


def load_model(
    ckpt_path: str | Path, chunk_size: int | None = None, trusted_modules: Iterable[str] = (), device: str = "cpu"
) -> SequenceModel:
    """The DNA model of a ``seqpipe fit`` checkpoint (:func:`seqpipe.checkpoints.load_trained_model`: eval mode,
    ``data_info`` as trained) on ``device`` ("cpu", "cuda", "cuda:1", ...), refused unless it reads DNA tokens.
    ``chunk_size``: run longer windows chunk by chunk with carried state (causal backbones;
    :func:`seqpipe.chunked.chunked_forward`)."""
    try:
        target = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"--device {device!r}: {error}") from None
    if target.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: seqpipe scores on 'cpu' or 'cuda[:N]'")
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if target.type == "cuda" and (target.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"numbered from 0")
    model = load_trained_model(ckpt_path, trusted_modules).to(target)
    spec = model.data_info.input if model.data_info else None
    if not isinstance(spec, TokenInput) or spec.vocab_size != len(DNA_VOCAB):
        raise CheckpointError(f"--ckpt_path {ckpt_path}: a {type(model.head).__name__} model of {trained_input(spec)}; "
                              "the DNA tools (variants, explain, embed) need a model trained on DNA sequences")
    if chunk_size is not None:
        check_chunk_size(model.backbone, chunk_size, "--chunk_size")
        model.hparams["chunk_size"] = chunk_size
    return model


def trained_input(spec: TokenInput | ChannelInput | None) -> str:
    """What a model reads, in a few words: "2 real-valued channels", "tokens of a vocabulary of 25"."""
    if isinstance(spec, ChannelInput):
        rate = f" at {spec.sample_rate:g} Hz" if spec.sample_rate else ""
        return f"{spec.channels} real-valued channel{'s' if spec.channels != 1 else ''}{rate}"
    if isinstance(spec, TokenInput):
        return f"tokens of a vocabulary of {spec.vocab_size}" + (f" ({spec.tokenizer!r} tokenizer)" if spec.tokenizer else "")
    return "unknown inputs"


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """A DNA tool's ``--device``, which :func:`load_model` checks."""
    parser.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ...")


def add_table_options(parser: argparse.ArgumentParser) -> None:
    """A DNA tool's ``--sequence_column`` and ``--id_column``, for sequences given as a TSV/CSV table."""
    parser.add_argument("--sequence_column", default="sequence", help="TSV/CSV: the column holding the sequences")
    parser.add_argument("--id_column", help="TSV/CSV: the column holding record ids (default: the column id when there is one, else the row number)")


def add_bed_genome_options(parser: argparse.ArgumentParser) -> None:
    """A DNA tool's ``--data.fasta`` and ``--data.cache_dir``, for sequences given as a BED file of regions."""
    parser.add_argument("--data.fasta", dest="fasta", help="a BED --data.predict: the genome FASTA its rows refer to")
    parser.add_argument("--data.cache_dir", dest="cache_dir", help="where a plain-gzip genome is decompressed once "
                                                                   "(default: $SEQPIPE_CACHE or ~/.cache/seqpipe/genomes)")


def predict_data(model: SequenceModel, path: str, options: argparse.Namespace, batch_size: int = 32) -> DNAClassificationData:
    """Any input ``seqpipe predict`` takes (a FASTA file, a folder of FASTA files, a TSV/CSV with the columns of
    :func:`add_table_options`, a BED file with the genome of :func:`add_bed_genome_options`), read with the
    vocabulary ``model`` was trained on and set up for predict: every record is read and checked here
    (``.splits["predict"]``, ``.predict_dataloader()``); ``path`` is the tool's ``--data.predict``."""
    data = DNAClassificationData(predict=path, sequence_column=options.sequence_column, id_column=options.id_column,
                                 batch_size=batch_size, fasta=options.fasta, cache_dir=options.cache_dir)
    data.option_names = {"predict": "--data.predict", "fasta": "--data.fasta", "sequence_column": "--sequence_column",
                         "id_column": "--id_column"}
    data.crop_as_trained = False  # the tools score whole records
    data.restore_data_info(model.data_info)
    data.setup("predict")
    return data


def label_names(model: SequenceModel) -> list[str]:
    """The class names ``model`` was trained on; one error line for a model without classes."""
    return model.data_info.classes("the DNA tools")


def strand_symmetric(model: SequenceModel) -> bool:
    """Whether the model's outputs already cover both strands, so that averaging over the strands again would
    change nothing but the cost: its head averages them itself (``SequenceClassification(strands="average")``), or
    a per-base head reads strand-invariant features (a backbone's ``strand_invariant``: ``RCEquivariantBackbone(
    output="invariant")``, ``BidirectionalBackbone(strand_average=True)``) position by position. A sequence head on
    such features is not: its k-mer counts or last position read the given strand."""
    invariant_features = getattr(model.backbone, "strand_invariant", False)
    per_base = isinstance(model.head, PerBaseClassification)
    return getattr(model.head, "strand_invariant", False) or (invariant_features and per_base)


def reads_both_strands(model: SequenceModel) -> bool:
    """Whether each pass of the model reads the sequence and then its reverse complement: its head scores both
    strands itself (``SequenceClassification(strands="average" or "pair")`` on DNA)."""
    return getattr(model.head, "strand_views", "forward") != "forward"


def class_probabilities(model: SequenceModel, x: torch.Tensor, both_strands: bool = True) -> torch.Tensor:
    """Token ids x (B, L), no padding, on any device -> probabilities (B, K) of a sequence model or (B, L, K) of
    a per-base model, on the CPU (computed on the model's device). ``both_strands``: the mean of the sequence's
    and its reverse complement's (per base: at the same genomic position); one pass for a
    :func:`strand_symmetric` model."""
    x = x.to(model.device)
    probs = model({"x": x}).float().softmax(-1)
    if both_strands and not strand_symmetric(model):
        other = model({"x": reverse_complement_ids(x, None)}).float().softmax(-1)
        probs = (probs + (other.flip(1) if other.dim() == 3 else other)) / 2
    return probs.cpu()


def window_scores(probs: torch.Tensor, span: tuple[int, int] | None = None, option: str = "--span") -> torch.Tensor:
    """Probabilities (B, K) or (B, L, K) -> one score per class (B, K): per-base probabilities averaged over
    the positions ``span = (start, end)`` of the window (default all). A span of a sequence model's probabilities
    is refused: it has no positions to average (``option``: the tool's option that gave the span)."""
    if probs.dim() == 2:
        if span is not None:
            raise ConfigError(f"{option} averages a per-base model's positions, but this model gives one score per "
                              f"sequence: leave {option} out")
        return probs
    start, end = span or (0, probs.shape[1])
    return probs[:, start:end].mean(1)


def log_odds(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """log(p / (1 - p)), with p clipped to [eps, 1 - eps]."""
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def batches(n: int, batch_size: int):
    """Slices covering range(n) in steps of ``batch_size`` (>= 1)."""
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))
