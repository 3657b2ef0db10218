"""Seeded generators of small synthetic data sets, for tests and the demo. Nothing is downloaded.

    python -m seqpipe.data.synthetic dna-motifs --out DIR --seed 0

Each data set is one subcommand and one plain function that tests call with tiny sizes.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np

NUCLEOTIDES = np.array(list("ACGT"))
_COMPLEMENT = str.maketrans("ACGT", "TGCA")

# Two motifs (the bacterial -10 box with its extension, and the NF-kB site). Every sequence carries one
# copy of each motif or of a shuffle of it, so all classes share the same base composition and only the
# order of the letters separates them.
PROMOTER_MOTIF = "TGTATAATG"
ENHANCER_MOTIF = "GGGAATTTCC"
DNA_MOTIF_CLASSES = {  # class -> which of (PROMOTER_MOTIF, ENHANCER_MOTIF) appear intact
    "background": (False, False),
    "enhancer_like": (False, True),
    "promoter_like": (True, False),
}


def write_fasta(path: str | Path, records: Iterable[tuple[str, str]], width: int = 60) -> Path:
    """Write ``(header, sequence)`` pairs as FASTA, sequences wrapped at ``width`` letters."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for header, sequence in records:
            handle.write(f">{header}\n")
            handle.writelines(sequence[i : i + width] + "\n" for i in range(0, len(sequence), width))
    return path


def random_dna(rng: np.random.Generator, length: int) -> str:
    """Uniform random A/C/G/T of ``length`` letters."""
    return "".join(rng.choice(NUCLEOTIDES, length))


def shuffled(rng: np.random.Generator, motif: str) -> str:
    """A permutation of ``motif``'s letters that differs from it (same composition, no motif)."""
    while True:
        candidate = "".join(rng.permutation(list(motif)))
        if candidate != motif:
            return candidate


def reverse_complement(sequence: str) -> str:
    return sequence[::-1].translate(_COMPLEMENT)


def motif_sequence(rng: np.random.Generator, label: str, length: int) -> str:
    """Random background with the class's two segments (intact or shuffled motifs) at random,
    non-overlapping positions. Drawn again if the background happens to hold a motif the class must
    not have, on either strand (so no label is wrong)."""
    wanted = DNA_MOTIF_CLASSES[label]
    motifs = (PROMOTER_MOTIF, ENHANCER_MOTIF)
    if length < sum(map(len, motifs)):
        raise ValueError(f"length {length} is too short for the motifs ({sum(map(len, motifs))} bases)")
    while True:
        segments = [motif if intact else shuffled(rng, motif) for motif, intact in zip(motifs, wanted)]
        rng.shuffle(segments)
        free = length - sum(map(len, segments))
        gaps = np.diff(np.sort(rng.integers(0, free + 1, len(segments))), prepend=0)  # background before each
        parts = []
        for gap, segment in zip(gaps, segments):
            parts += [random_dna(rng, int(gap)), segment]
        parts.append(random_dna(rng, length - sum(map(len, parts))))
        sequence = "".join(parts)
        present = tuple(motif in sequence or reverse_complement(motif) in sequence for motif in motifs)
        if present == wanted:
            return sequence


def make_dna_motif_dataset(
    out_dir: str | Path, seed: int = 0, n_train: int = 1500, n_test: int = 300, n_unlabelled: int = 30, length: int = 200
) -> Path:
    """Write a planted-motif DNA classification set with three balanced classes:

    ``out_dir/train/<class>.fasta`` and ``out_dir/test/<class>.fasta`` (``n_train`` and ``n_test``
    sequences in all), and ``out_dir/unlabelled.fasta`` whose headers hold the true class after the id
    (``>query_0003 true_class=promoter_like``) so predictions can be checked by eye.

    ``promoter_like`` carries an intact promoter motif, ``enhancer_like`` an intact enhancer motif, and
    ``background`` only shuffles of both. Deterministic for a given ``seed``.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    classes = sorted(DNA_MOTIF_CLASSES)
    for split, total in (("train", n_train), ("test", n_test)):
        for k, label in enumerate(classes):
            count = total // len(classes) + (k < total % len(classes))
            records = ((f"{label}_{split}_{i:04d}", motif_sequence(rng, label, length)) for i in range(count))
            write_fasta(out_dir / split / f"{label}.fasta", records)
    queries = ((i, classes[rng.integers(len(classes))]) for i in range(n_unlabelled))
    write_fasta(
        out_dir / "unlabelled.fasta",
        ((f"query_{i:04d} true_class={label}", motif_sequence(rng, label, length)) for i, label in queries),
    )
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seqpipe.data.synthetic", description=__doc__.split("\n")[0])
    datasets = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    dna = datasets.add_parser("dna-motifs", help="DNA classification with planted motifs, one FASTA per class")
    dna.add_argument("--out", required=True, type=Path, help="output directory")
    dna.add_argument("--seed", type=int, default=0)
    dna.add_argument("--n-train", type=int, default=1500)
    dna.add_argument("--n-test", type=int, default=300)
    dna.add_argument("--length", type=int, default=200)
    dna.set_defaults(make=lambda a: make_dna_motif_dataset(a.out, a.seed, a.n_train, a.n_test, length=a.length))

    args = parser.parse_args(argv)
    print(f"wrote {args.make(args)}")


if __name__ == "__main__":
    main()
