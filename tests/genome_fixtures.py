"""Seeded tiny genomes for the genome tests: FASTA (plain, gzip, bgzip), GFF with CDS features, BED windows;
the numpy reference of binned prediction scores."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np

CHROMS = {"chrA": 3000, "chrB": 1700, "chrC": 900}


def write_genome(directory: Path, seed: int = 0, compression: str = "none", line_width: int = 60) -> tuple[Path, dict[str, str]]:
    """A random genome -> (its FASTA path, the sequences). ``compression``: "none", "gzip" or "bgzip"."""
    rng = np.random.default_rng(seed)
    sequences = {}
    for chrom, size in CHROMS.items():
        letters = np.array(list("ACGTacgtN"))[rng.choice(9, size, p=[0.225] * 4 + [0.02] * 4 + [0.02])]
        sequences[chrom] = "".join(letters)
    text = "".join(
        f">{chrom} test record\n" + "".join(seq[i:i + line_width] + "\n" for i in range(0, len(seq), line_width))
        for chrom, seq in sequences.items()
    )
    if compression == "none":
        path = directory / "genome.fa"
        path.write_text(text)
    elif compression == "gzip":
        path = directory / "genome.fa.gz"
        path.write_bytes(gzip.compress(text.encode()))
    else:
        from Bio import bgzf

        path = directory / "genome.fa.bgz"
        with bgzf.BgzfWriter(str(path), "wb") as handle:
            handle.write(text.encode())
    return path, sequences


def write_gff(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Random CDS (and gene) features -> the expected 0/1 coding mask of each chromosome."""
    rng = np.random.default_rng(seed)
    masks, lines = {}, ["##gff-version 3"]
    for chrom, size in CHROMS.items():
        mask = np.zeros(size, dtype=np.uint8)
        for _ in range(size // 300):
            start = int(rng.integers(1, size - 200))
            end = start + int(rng.integers(30, 200))
            strand = "+-"[int(rng.integers(2))]
            lines.append(f"{chrom}\tsim\tgene\t{max(1, start - 5)}\t{end}\t.\t{strand}\t.\tID=g{len(lines)}")
            lines.append(f"{chrom}\tsim\tCDS\t{start}\t{end}\t.\t{strand}\t0\tID=c{len(lines)}")
            mask[start - 1:end] = 1
        masks[chrom] = mask
    path.write_text("\n".join(lines) + "\n")
    return masks


def bin_means(per_base: np.ndarray, bin_size: int) -> np.ndarray:
    """(L, k) with NaN where unpredicted -> (ceil(L / bin_size), k) NaN-means, NaN for empty bins."""
    bins = -(-len(per_base) // bin_size)
    padded = np.full((bins * bin_size, per_base.shape[1]), np.nan)
    padded[:len(per_base)] = per_base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins
        return np.nanmean(padded.reshape(bins, bin_size, -1), axis=1)
