"""A promoter set drawn from an annotated genome, for supervised pre-training: the bases upstream of genes that
start a run of genes on their strand, against coding windows.

Usage: python bench/annotated_promoters.py --out DIR [--data ../shared/data] [--length 150] [--exclude FASTA ...]

No promoter is annotated in a RefSeq GFF, but most transcription units start with a promoter shortly before their
first start codon. So the set labels, on the gene's strand:
  promoter      the ``length`` bases before the start of a gene whose neighbour upstream on the same strand ends
                at least ``gap`` bases before it (an operon's first gene, roughly), when those bases hold no other
                gene;
  non_promoter  twice as many windows of ``length`` bases inside CDS, at random places, on a random strand (as the
                development sets' negatives are coding DNA).
Windows that overlap any sequence of the ``--exclude`` FASTA files (found exactly in the genome, either strand)
are dropped, so a source built from the E. coli genome never holds an E. coli σ record. The split is seeded: 80%
train, 10% validation, 10% test; files as bench/dna_benchmarks.py writes them (the label first in the header).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dna_benchmarks import DEFAULT_DATA, GENOME
from seqpipe.data.readers import read_records
from seqpipe.data.synthetic import write_fasta
from seqpipe.dna_alphabet import reverse_complement

GFF = "ecoli/GCF_000005845.2_ASM584v2_genomic.gff.gz"


class Gene(NamedTuple):
    start: int  # 0-based, half-open
    end: int
    strand: str


def read_genes(gff: Path) -> list[Gene]:
    """The ``gene`` rows of a one-sequence GFF, in genome order."""
    genes = []
    with gzip.open(gff, "rt") as lines:
        for line in lines:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 9 and fields[2] == "gene":
                genes.append(Gene(int(fields[3]) - 1, int(fields[4]), fields[6]))
    return sorted(genes)


def excluded_mask(genome: str, fasta_paths: list[Path]) -> np.ndarray:
    """(len(genome),) bool: the bases covered by an exact match of any record of ``fasta_paths``, either strand."""
    mask = np.zeros(len(genome), bool)
    for path in fasta_paths:
        for record in read_records(path, labelled=False):
            sequence = record.sequence.upper()
            for query in (sequence, reverse_complement(sequence)):
                start = genome.find(query)
                while start >= 0:
                    mask[start:start + len(query)] = True
                    start = genome.find(query, start + 1)
    return mask


def windows(genome: str, genes: list[Gene], length: int, gap: int, rng: np.random.Generator) -> list[tuple[str, int, int, str]]:
    """(label, start, end, strand) of every promoter window and of twice as many coding windows."""
    covered = np.zeros(len(genome), np.int32)
    for gene in genes:
        covered[gene.start:gene.end] += 1
    promoters = []
    for strand in "+-":
        on_strand = [gene for gene in genes if gene.strand == strand]
        if strand == "-":  # walk the "-" strand in its own direction
            on_strand = sorted(on_strand, key=lambda gene: -gene.end)
        for previous, gene in zip([None] + on_strand[:-1], on_strand):
            start, end = (gene.start - length, gene.start) if strand == "+" else (gene.end, gene.end + length)
            upstream_end = None if previous is None else (previous.end if strand == "+" else previous.start)
            far = upstream_end is None or (gene.start - upstream_end if strand == "+" else upstream_end - gene.end) >= gap
            if far and start >= 0 and end <= len(genome) and not covered[start:end].any():
                promoters.append(("promoter", start, end, strand))
    coding = np.flatnonzero(np.diff(np.concatenate([[0], covered > 0, [0]])))  # run boundaries of covered bases
    runs = [(a, b) for a, b in zip(coding[::2], coding[1::2]) if b - a >= length]
    sizes = np.array([b - a - length + 1 for a, b in runs], np.float64)
    picks = rng.choice(len(runs), 2 * len(promoters), p=sizes / sizes.sum())
    negatives = []
    for run in picks:
        a, b = runs[run]
        start = int(rng.integers(a, b - length + 1))
        negatives.append(("non_promoter", start, start + length, "+-"[int(rng.integers(2))]))
    return promoters + negatives


def write_set(data: Path, out: Path, length: int = 150, gap: int = 40, exclude: list[Path] = (), seed: int = 0) -> dict[str, Path]:
    """The set's ``train.fa``/``val.fa``/``test.fa`` under ``out``; prints its counts."""
    with gzip.open(data / GENOME, "rt") as lines:
        genome = "".join(line.strip() for line in lines if not line.startswith(">")).upper()
    rng = np.random.default_rng(seed)
    rows = windows(genome, read_genes(data / GFF), length, gap, rng)
    blocked = excluded_mask(genome, list(exclude))
    kept = [row for row in rows if not blocked[row[1]:row[2]].any()]
    records = []
    for label, start, end, strand in kept:
        sequence = genome[start:end] if strand == "+" else reverse_complement(genome[start:end])
        records.append((f"{label} {start}-{end}{strand}", sequence))
    order = rng.permutation(len(records))
    cut = [int(0.8 * len(order)), int(0.9 * len(order))]
    out.mkdir(parents=True, exist_ok=True)
    parts = dict(zip(("train", "val", "test"), np.split(order, cut)))
    paths = {split: write_fasta(out / f"{split}.fa", [records[i] for i in sorted(part)]) for split, part in parts.items()}
    counts = {label: sum(row[0] == label for row in kept) for label in ("promoter", "non_promoter")}
    print(f"{out}: {counts} ({len(rows) - len(kept)} windows dropped for overlapping --exclude); "
          + ", ".join(f"{split} {len(part)}" for split, part in parts.items()))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--length", type=int, default=150)
    parser.add_argument("--gap", type=int, default=40)
    parser.add_argument("--exclude", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    write_set(args.data, args.out, args.length, args.gap, args.exclude)


if __name__ == "__main__":
    main()
