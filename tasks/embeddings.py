"""seqpipe embed: one vector per DNA sequence from a trained or pre-trained model, written to zarr.

    seqpipe embed --ckpt_path RUN/lightning_logs/version_0/checkpoints/best.ckpt --data.predict seqs.fa --out embeddings.zarr \\
        [--chunk_size 65536] [--both_strands] [--device cuda]

Any checkpoint of a DNA model works — a classifier from ``configs/dna_classify.yaml`` or a backbone from
``configs/dna_pretrain.yaml``: its head is not used. Each sequence's embedding is the mean of the backbone's
features over the sequence's positions (d_model numbers); with ``--both_strands`` it is the mean of the
sequence's and its reverse complement's. ``--chunk_size`` streams long records (causal backbones) chunk by
chunk with carried state, so memory is that of one chunk whatever the length.

The output is a zarr group: ``embedding`` (n, d_model) float32 and ``id`` (n,) strings, in input order, and
attributes ``checkpoint`` and ``d_model``. It is written under ``<out>.partial`` and renamed when complete; an
existing output is replaced only when it is a seqpipe embeddings zarr (see :mod:`seqpipe.outputs`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from seqpipe.dna_alphabet import reverse_complement_ids
from seqpipe.errors import ConfigError
from seqpipe.model import SequenceModel, longest_record
from seqpipe.outputs import Output, writing
from seqpipe.tasks.model_scoring import add_bed_genome_options, add_device_option, add_table_options, load_model, predict_data
from seqpipe.tool_io import positive_int, run_tool, tool_parser


def sequence_embeddings(model: SequenceModel, x: torch.Tensor, lengths: torch.Tensor | None = None,
                        chunk_size: int | None = None, both_strands: bool = False,
                        where: str | None = None) -> torch.Tensor:
    """Token ids x (B, L), right-padded to ``lengths`` (B,) -> the mean backbone feature of each sequence (B, D).

    Records longer than ``chunk_size`` go through the backbone chunk by chunk
    (:meth:`~seqpipe.model.SequenceModel.mean_features`; causal backbones); ``both_strands``: the mean of the
    sequence's and its reverse complement's embeddings; ``where``: the longest record, as a too-long error names
    it."""
    views = [x, reverse_complement_ids(x, lengths)] if both_strands else [x]
    way_out = "stream it with --chunk_size (e.g. 65536; causal backbones)"
    with torch.no_grad():
        means = [model.mean_features(view, lengths, chunk_size, way_out, where) for view in views]
    return torch.stack(means).mean(0)


def embed(options: argparse.Namespace) -> None:
    """``seqpipe embed`` with its parsed ``options`` (see :func:`parser`)."""
    suffix = Path(options.out).suffix
    if suffix not in ("", ".zarr"):
        raise ConfigError(f"--out {options.out}: embed writes a zarr group (a folder), not a {suffix} file; give "
                          f"a name ending in .zarr")
    output = Output(options.out, "embeddings zarr", zarr=True)
    model = load_model(options.ckpt_path, options.chunk_size, options.trust_module, options.device)
    data = predict_data(model, options.predict, options, options.batch_size)  # before the output is claimed
    records = data.splits["predict"]
    with writing(output) as (partial,):
        import zarr

        group = zarr.open_group(str(partial), mode="a")
        group.attrs.update({"checkpoint": str(options.ckpt_path), "d_model": model.backbone.d_model})
        vectors = group.create_array("embedding", shape=(len(records.ids), model.backbone.d_model),
                                     chunks=(min(max(len(records.ids), 1), 4096), model.backbone.d_model), dtype="float32")
        start = 0
        for batch in data.predict_dataloader():
            values = sequence_embeddings(model, batch["x"].to(model.device), batch["lengths"].to(model.device),
                                         options.chunk_size, options.both_strands, longest_record(batch))
            vectors[start:start + len(values)] = values.float().cpu().numpy()
            start += len(values)
        ids = group.create_array("id", shape=(len(records.ids),), dtype=str)  # variable-length UTF-8
        ids[:] = np.array(records.ids, dtype=object)
    print(f"{len(records.ids)} embeddings of {model.backbone.d_model} numbers written to {options.out}")


def parser() -> argparse.ArgumentParser:
    p = tool_parser("seqpipe embed", __doc__)
    p.add_argument("--data.predict", dest="predict", required=True,
                   help="the sequences: a FASTA file (plain or gzip), a folder of FASTA files, a TSV/CSV table or a BED file, as for predict (labels ignored)")
    p.add_argument("--out", required=True, help="the zarr group to write (e.g. embeddings.zarr)")
    p.add_argument("--batch_size", type=positive_int, default=32, help="sequences per forward pass (default 32)")
    p.add_argument("--chunk_size", type=int, help="stream records longer than this chunk by chunk (causal backbones)")
    p.add_argument("--both_strands", action="store_true", help="average each sequence's and its reverse complement's embedding")
    add_table_options(p)
    add_bed_genome_options(p)
    add_device_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``seqpipe embed``; returns the exit code."""
    return run_tool(embed, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
