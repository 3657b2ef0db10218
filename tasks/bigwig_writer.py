"""Genome predictions as bigWig, for IGV and the UCSC browser: one class's score from the zarr store that
:class:`seqpipe.tasks.genome_writer.GenomePredictionWriter` writes (per base or per bin).

    seqpipe bigwig --predictions PREDICTIONS.zarr --out OUT.bw [--target CLASS]

The writer does this itself when given ``bigwig_path``. Bins never predicted (NaN, e.g. outside
``predict_regions``) are left out of the bigWig, so a browser shows no data there rather than 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from seqpipe.contracts import chosen_class
from seqpipe.errors import DataError
from seqpipe.outputs import ZARR_ATTRIBUTE, Output, writing
from seqpipe.tool_io import run_tool, tool_parser

ROWS_PER_READ = 1 << 20


def write_bigwig(zarr_path: str | Path, bigwig_path: str | Path, target: str | None = None) -> None:
    """Write the probability of class ``target`` (default the last; ``--target``) of the zarr predictions to
    ``bigwig_path``.

    Each chromosome's array (bins, classes) becomes fixed-step entries of ``bin_size`` bases (the last bin
    clipped to the chromosome), one run of entries per stretch of predicted (non-NaN) bins.
    """
    import pyBigWig
    import zarr

    try:
        group = zarr.open_group(str(zarr_path), mode="r")
    except Exception as error:  # zarr raises several unrelated types for a store it cannot read
        raise DataError(zarr_path, f"cannot be opened as a zarr group ({error})") from None
    kind = group.attrs.get(ZARR_ATTRIBUTE)
    lacking = [key for key in ("label_names", "bin_size", "chrom_sizes") if key not in group.attrs]
    if lacking:
        what = f"a seqpipe {kind}" if kind else "a zarr group"
        raise DataError(zarr_path, f"{what} without {', '.join(lacking)}: seqpipe bigwig reads the genome predictions "
                                   "of a per-base model (genome_predictions.zarr of seqpipe predict)")
    names, bin_size, sizes = list(group.attrs["label_names"]), int(group.attrs["bin_size"]), dict(group.attrs["chrom_sizes"])
    missing = [chrom for chrom in sizes if chrom not in group]
    if missing:
        raise DataError(zarr_path, f"no array for chromosome {missing[0]!r} of its chrom_sizes: not a complete prediction store")
    column = names.index(chosen_class(names, target, "--target", "the predictions"))
    handle = pyBigWig.open(str(bigwig_path), "w")
    try:
        handle.addHeader(list(sizes.items()), maxZooms=10)
        for chrom, size in sizes.items():
            array = group[chrom]
            for first in range(0, array.shape[0], ROWS_PER_READ):
                values = np.asarray(array[first:first + ROWS_PER_READ, column], dtype=np.float64)
                _add_runs(handle, chrom, size, first, values, bin_size)
    finally:
        handle.close()


def _add_runs(handle, chrom: str, size: int, first_bin: int, values: np.ndarray, bin_size: int) -> None:
    """Fixed-step entries for each run of non-NaN ``values`` (bins ``first_bin``...); a last bin shorter than
    ``bin_size`` is written as its own entry, clipped to the chromosome end."""
    valid = ~np.isnan(values)
    edges = np.flatnonzero(np.diff(np.r_[0, valid.astype(np.int8), 0]))
    for start, end in zip(edges[::2], edges[1::2]):
        run, bins = values[start:end], np.arange(first_bin + start, first_bin + end)
        full = bins * bin_size + bin_size <= size
        if full.any():
            handle.addEntries(chrom, int(bins[full][0] * bin_size), values=run[full].tolist(), span=bin_size, step=bin_size)
        if not full.all():
            last = int(bins[~full][0])
            handle.addEntries([chrom], [last * bin_size], ends=[size], values=[float(run[~full][0])])


def convert(options: argparse.Namespace) -> None:
    """``seqpipe bigwig`` with the options :func:`main` parsed."""
    with writing(Output(options.out, "genome predictions bigWig")) as (partial,):
        write_bigwig(options.predictions, partial, options.target)
    print(f"wrote {options.out}")


def main(argv: list[str] | None = None) -> int:
    """``seqpipe bigwig``; returns the exit code."""
    parser = tool_parser("seqpipe bigwig", __doc__, checkpoint=False)
    parser.add_argument("--predictions", required=True, help="genome predictions written by GenomePredictionWriter (zarr)")
    parser.add_argument("--out", required=True, help="the bigWig to write (its own earlier output is replaced, anything else there refused)")
    parser.add_argument("--target", help="the class whose probability is written (default: the last)")
    return run_tool(convert, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
