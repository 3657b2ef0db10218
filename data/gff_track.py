"""Build a per-base class track (zarr) from GFF features, aligned to a FASTA.

    seqpipe track GENOME.gff[.gz] GENOME.fa[.gz] OUT.zarr --feature CDS [--feature tRNA ...]

The track holds one uint8 array per FASTA record (chunked, same length as the record): 0 where no listed
feature lies, ``k`` where the k-th ``--feature`` type lies (a later ``--feature`` wins where features of
different types overlap). Both strands count: a coding mask, not a strand annotation. The group attribute
``label_names`` is ``["other", FEATURE1, ...]``, which :class:`seqpipe.data.genome.GenomeData` reads as the
class names. GFF coordinates (1-based, inclusive) become 0-based half-open spans; a feature on a record
missing from the FASTA, or running past its end, is an error naming the GFF line. A ``##FASTA`` section
ends the annotations.
"""

from __future__ import annotations

import zlib
from contextlib import closing
from pathlib import Path

import numpy as np

from seqpipe.data.genome_io import Genome
from seqpipe.data.readers import open_text
from seqpipe.errors import DataError
from seqpipe.outputs import Output, writing
from seqpipe.tool_io import run_tool, tool_parser

CHUNK = 1 << 20


def feature_spans(gff: str | Path, features: list[str], chrom_sizes: dict[str, int]) -> dict[str, list[tuple[int, int, int]]]:
    """GFF -> per chromosome, ``(start, end, class)`` spans of the listed feature types (class = index + 1)."""
    gff = Path(gff)
    if not gff.is_file():
        raise DataError(gff, "no such GFF file")
    classes = {name: k + 1 for k, name in enumerate(features)}
    spans: dict[str, list[tuple[int, int, int]]] = {chrom: [] for chrom in chrom_sizes}
    try:
        with open_text(gff) as lines:
            for number, line in enumerate(lines, start=1):
                if line.startswith("##FASTA"):
                    break
                if line.startswith("#") or not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 9:
                    raise DataError(gff, f"{len(fields)} tab-separated fields, a GFF line has 9", line=number)
                if fields[2] not in classes:
                    continue
                chrom, start, end = fields[0], fields[3], fields[4]
                if chrom not in chrom_sizes:
                    raise DataError(gff, f"feature on {chrom!r}, which is not a record of the FASTA", line=number)
                if not (start.isdigit() and end.isdigit() and 1 <= int(start) <= int(end) <= chrom_sizes[chrom]):
                    raise DataError(gff, f"span {start}-{end} is not within 1-{chrom_sizes[chrom]}", line=number)
                spans[chrom].append((int(start) - 1, int(end), classes[fields[2]]))
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as error:
        raise DataError(gff, f"cannot be read as a (gzipped) text GFF file: {error}") from None
    if not any(spans.values()):
        raise DataError(gff, f"no features of type {features}")
    return spans


def build_track(gff: str | Path, fasta: str | Path, out: str | Path, features: list[str]) -> dict[str, int]:
    """Write the track; returns the bases of each class (index = class) summed over the genome.

    ``out`` is written as ``<out>.partial`` and renamed when complete; an existing ``out`` is replaced only
    when it is a track this command wrote (see :mod:`seqpipe.outputs`), anything else there is an error.
    """
    import zarr

    with writing(Output(out, "per-base track", folder=True)) as (partial,):
        with closing(Genome(fasta)) as genome:
            chrom_sizes = genome.chrom_sizes
        spans = feature_spans(gff, features, chrom_sizes)
        group = zarr.open_group(str(partial), mode="a")
        group.attrs["label_names"] = ["other", *features]
        group.attrs["source"] = {"gff": str(gff), "fasta": str(fasta), "features": features}
        counts = np.zeros(len(features) + 1, dtype=np.int64)
        for chrom, size in chrom_sizes.items():
            values = np.zeros(size, dtype=np.uint8)
            for start, end, label in sorted(spans[chrom], key=lambda span: span[2]):
                values[start:end] = label
            group.create_array(chrom, shape=(size,), chunks=(min(size, CHUNK),), dtype="uint8")[:] = values
            counts += np.bincount(values, minlength=len(counts))
    return {name: int(n) for name, n in zip(["other", *features], counts)}


def write_track(options) -> None:
    counts = build_track(options.gff, options.fasta, options.out, options.feature)
    total = sum(counts.values())
    print(f"wrote {options.out}: " + ", ".join(f"{name} {n} bases ({n / total:.1%})" for name, n in counts.items()))


def main(argv: list[str] | None = None) -> int:
    """``seqpipe track``; returns the exit code."""
    parser = tool_parser("seqpipe track", __doc__, checkpoint=False)
    parser.add_argument("gff", help="GFF3 annotations (plain or gzip)")
    parser.add_argument("fasta", help="the reference the annotations refer to (plain, bgzip or gzip)")
    parser.add_argument("out", help="the zarr store to write (replaces a track this command wrote; anything else there is an error)")
    parser.add_argument("--feature", action="append", required=True, help="a GFF feature type (column 3); repeatable")
    return run_tool(write_track, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
