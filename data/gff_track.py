"""Build a per-base class track (zarr) from GFF features, aligned to a FASTA.

    seqpipe track --gff GENOME.gff[.gz] --data.fasta GENOME.fa[.gz] --out OUT.zarr --feature CDS [--feature tRNA ...]
    seqpipe track --gff GENOME.gff[.gz] --data.fasta GENOME.fa[.gz] --out OUT.zarr --feature CDS --feature CDS:start --feature CDS:end

The track holds one uint8 array per FASTA record (chunked, same length as the record): 0 where no listed
feature lies, ``k`` where the k-th ``--feature`` lies (a later ``--feature`` wins where features overlap).
A feature is a GFF type (column 3), or ``TYPE:start`` / ``TYPE:end``: the first / last 3 bases of each feature
of that type *on its strand* (for a GFF3 CDS, its start codon / its stop codon; a GTF CDS ends before its stop
codon, a ``stop_codon`` feature of its own), so that a model learns the
boundaries themselves and not only the composition inside. Parts of one feature (GFF3 lines sharing an ``ID``,
e.g. a CDS split by a programmed frameshift, or GTF lines sharing a ``transcript_id``, the CDS exons of a
transcript) are one feature there; its strand must be "+" or "-". Both
strands count: a coding mask, not a strand annotation. The group attribute
``label_names`` is ``["other", FEATURE1, ...]``, which :class:`seqpipe.data.genome.GenomeData` reads as the
class names. GFF coordinates (1-based, inclusive) become 0-based half-open spans; a feature on a record
missing from the FASTA, or running past its end, is an error naming the GFF line; so is a ``--feature`` type
the GFF does not hold (its class would have no base), which lists the types it holds. A ``##FASTA`` section
ends the annotations. The FASTA is checked as ``fit`` checks it: a character that is no nucleotide code is an
error naming its record and position, and no track is written.
"""

from __future__ import annotations

import zlib
from collections import Counter
from contextlib import closing
from pathlib import Path

import numpy as np

from seqpipe.data.genome_io import Genome
from seqpipe.data.readers import open_text
from seqpipe.errors import ConfigError, DataError, first_few
from seqpipe.outputs import Output, writing
from seqpipe.tool_io import run_tool, tool_parser

CHUNK = 1 << 20
#: bases of a ``TYPE:start`` / ``TYPE:end`` feature: one codon
END_LENGTH = 3
ENDS = ("start", "end")
#: the GFF's types an error lists when none of the asked-for types occurs
SHOWN_TYPES = 10


def parse_features(features: list[str]) -> list[tuple[str, str | None]]:
    """``["CDS", "CDS:start"]`` -> ``[("CDS", None), ("CDS", "start")]``: each feature's GFF type and which end."""
    parsed = []
    for feature in features:
        kind, _, end = feature.rpartition(":")
        if end not in ENDS:
            kind, end = feature, None
        if not kind:
            raise ConfigError(f"--feature {feature!r}: expected a GFF type, or TYPE:start / TYPE:end")
        parsed.append((kind, end))
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"--feature lists a feature twice: {features}")
    return parsed


def end_span(start: int, end: int, strand: str, which: str) -> tuple[int, int]:
    """The first (``which`` "start") or last ("end") END_LENGTH bases of ``[start, end)`` on ``strand``."""
    at_low_end = (which == "start") == (strand == "+")
    return (start, min(end, start + END_LENGTH)) if at_low_end else (max(start, end - END_LENGTH), end)


def feature_id(attributes: str) -> str | None:
    """What joins the parts of one feature: the ``ID`` of a GFF3 attribute column (``ID=cds1;Parent=t1``), else its
    ``Parent`` (GFF converted from GTF gives CDS parts a Parent only), else a GTF line's ``transcript_id``
    (``gene_id "g1"; transcript_id "t1";``: the exons of a transcript), else None."""
    pairs = {}
    for pair in attributes.split(";"):
        key, equals, value = pair.strip().partition("=")
        if not equals:  # GTF: key "value"
            key, _, value = pair.strip().partition(" ")
        pairs[key] = value.strip().strip('"')
    return pairs.get("ID") or pairs.get("Parent") or pairs.get("transcript_id") or None


def coordinate(gff: Path, text: str, name: str, line: int) -> int:
    """A GFF ``start`` or ``end`` column as an integer; anything but digits is an error naming the line."""
    if not (text.isascii() and text.isdigit()):
        raise DataError(gff, f"{name} {text!r} is not an integer", line=line)
    return int(text)


def feature_spans(gff: str | Path, features: list[str], chrom_sizes: dict[str, int]) -> dict[str, list[tuple[int, int, int]]]:
    """GFF -> per chromosome, ``(start, end, class)`` spans of the listed features (class = index + 1); see the
    module docstring for ``TYPE:start`` / ``TYPE:end``."""
    gff = Path(gff)
    if not gff.is_file():
        raise DataError(gff, "no such GFF file")
    parsed = parse_features(features)
    whole = {kind: k + 1 for k, (kind, end) in enumerate(parsed) if end is None}
    ends: dict[str, list[tuple[str, int]]] = {}
    for k, (kind, end) in enumerate(parsed):
        if end is not None:
            ends.setdefault(kind, []).append((end, k + 1))
    spans: dict[str, list[tuple[int, int, int]]] = {chrom: [] for chrom in chrom_sizes}
    parts: dict[tuple[str, str], list] = {}  # (type, ID or line) -> [chrom, start, end, strand, first line]
    types: Counter[str] = Counter()
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
                types[fields[2]] += 1
                if fields[2] not in whole and fields[2] not in ends:
                    continue
                chrom = fields[0]
                if chrom not in chrom_sizes:
                    raise DataError(gff, f"feature on {chrom!r}, which is not a record of the FASTA", line=number)
                start, end = (coordinate(gff, fields[k], name, number) for k, name in ((3, "start"), (4, "end")))
                if start > end:
                    raise DataError(gff, f"start {start} is after end {end}", line=number)
                if not 1 <= start <= end <= chrom_sizes[chrom]:
                    raise DataError(gff, f"span {start}-{end} is not within 1-{chrom_sizes[chrom]}", line=number)
                start, strand = start - 1, fields[6]
                if fields[2] in whole:
                    spans[chrom].append((start, end, whole[fields[2]]))
                if fields[2] in ends:
                    if strand not in ("+", "-"):
                        raise DataError(gff, f"{fields[2]} on strand {strand!r}: its start and end need strand + or -", line=number)
                    key = (fields[2], feature_id(fields[8]) or f"line {number}")
                    if key not in parts:
                        parts[key] = [chrom, start, end, strand, number]
                    elif parts[key][0] != chrom or parts[key][3] != strand:
                        raise DataError(gff, f"{key[0]} {key[1]}: this part is on {chrom} {strand}, the part on line "
                                        f"{parts[key][4]} on {parts[key][0]} {parts[key][3]} (parts of one feature share both)", line=number)
                    elif min(start, parts[key][1]) == 0 and max(end, parts[key][2]) == chrom_sizes[chrom]:
                        raise DataError(gff, f"{key[0]} {key[1]}: its parts reach both ends of {chrom} (a feature across "
                                        "the origin of a circular contig), whose start and end cannot be placed", line=number)
                    else:
                        parts[key][1:3] = min(parts[key][1], start), max(parts[key][2], end)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as error:
        raise DataError(gff, f"cannot be read as a (gzipped) text GFF file: {error}") from None
    for (kind, _), (chrom, start, end, strand, _) in parts.items():
        for which, label in ends[kind]:
            spans[chrom].append((*end_span(start, end, strand, which), label))
    missing = sorted({kind for kind, _ in parsed} - types.keys())  # a class that would have no base: a typo
    if missing:
        ends_hint = next((f" ({name!r}: the part after ':' names an end, 'start' or 'end')" for name in missing
                          if name.rpartition(":")[0] in types), "")
        raise DataError(gff, f"no features of type {missing}{ends_hint}; {describe_types(types)}")
    return spans


def describe_types(types: Counter[str]) -> str:
    """"its types are CDS (4), gene (4)": the first SHOWN_TYPES feature types of a GFF, sorted, with counts."""
    if not types:
        return "it has no feature lines"
    return "its types are " + first_few([f"{name} ({types[name]})" for name in sorted(types)], SHOWN_TYPES)


def build_track(gff: str | Path, fasta: str | Path, out: str | Path, features: list[str]) -> dict[str, int]:
    """Write the track; returns the bases of each class (index = class) summed over the genome.

    ``out`` is written as ``<out>.partial`` and renamed when complete; an existing ``out`` is replaced only
    when it is a track this command wrote (see :mod:`seqpipe.outputs`), anything else there is an error.
    """
    import zarr

    parse_features(features)  # a bad --feature stops before the FASTA is read
    with writing(Output(out, "per-base track", zarr=True)) as (partial,):
        with closing(Genome(fasta)) as genome:
            genome.check_letters()  # as fit does: a track of a FASTA that training refuses is of no use
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
    """``seqpipe track`` with the options :func:`main` parsed: the store, and a line of counts."""
    counts = build_track(options.gff, options.fasta, options.out, options.feature)
    total = sum(counts.values())
    print(f"wrote {options.out}: " + ", ".join(f"{name} {n} bases ({n / total:.1%})" for name, n in counts.items()))


def main(argv: list[str] | None = None) -> int:
    """``seqpipe track``; returns the exit code."""
    parser = tool_parser("seqpipe track", __doc__, checkpoint=False)
    parser.add_argument("--gff", required=True, help="GFF3 or GTF annotations (plain or gzip)")
    parser.add_argument("--data.fasta", dest="fasta", required=True, help="the reference the annotations refer to (plain, bgzip or gzip)")
    parser.add_argument("--out", required=True, help="the zarr store to write (replaces a track this command wrote; anything else there is an error)")
    parser.add_argument("--feature", action="append", required=True, help="a GFF feature type (column 3), or TYPE:start / TYPE:end (its first / last 3 bases on its strand); repeatable")
    return run_tool(write_track, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
