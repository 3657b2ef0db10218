"""k-mer baseline for per-base genome tracks, and the model's scores on the same bases.

    python bench/kmer_baseline.py FASTA TRACK.zarr --train '*:0%-75%' --test '*:80%-100%' \
        [--predictions RUN/genome_predictions.zarr]

For ``--positions`` bases drawn from each split, features are the counts of every k-mer (k = 1..``--k``)
in the ``--window`` bases centred on the base; a standardised logistic regression learns the track's
second class (e.g. CDS) from them. Prints accuracy and AUROC on the test bases, and, with
``--predictions`` (zarr written by ``seqpipe predict`` with the GenomePredictionWriter), the model's on
the very same bases and on every base of the test regions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seqpipe.data.genome_io import Genome, Track
from seqpipe.data.samplers import parse_region


def sample_positions(regions: list, count: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """``count`` bases drawn uniformly from the regions (by length), grouped by chromosome, sorted."""
    lengths = np.array([i.end - i.start for i in regions], dtype=float)
    picks = rng.choice(len(regions), count, p=lengths / lengths.sum())
    grouped = {}
    for index, interval in enumerate(regions):
        n = int((picks == index).sum())
        grouped.setdefault(interval.chrom, []).append(rng.integers(interval.start, interval.end, n))
    return [(chrom, np.sort(np.concatenate(parts))) for chrom, parts in grouped.items()]


def kmer_counts(ids: np.ndarray, positions: np.ndarray, window: int, k_max: int) -> sparse.csr_matrix:
    """Counts of each k-mer (k = 1..k_max, over A/C/G/T; k-mers with N skipped) in the window centred on each position."""
    half = window // 2
    padded = np.concatenate([np.full(half + k_max, 5, np.uint8), ids, np.full(half + k_max, 5, np.uint8)])
    offsets = positions[:, None] + np.arange(-half, window - half)[None, :] + half + k_max
    blocks = []
    for k in range(1, k_max + 1):
        code = np.zeros(offsets.shape, dtype=np.int64)
        valid = np.ones(offsets.shape, dtype=bool)
        for j in range(k):
            base = padded[offsets + j].astype(np.int64)
            valid &= (base >= 1) & (base <= 4)
            code = code * 4 + (base - 1).clip(0, 3)
        rows = np.broadcast_to(np.arange(len(positions))[:, None], offsets.shape)
        blocks.append(sparse.csr_matrix((valid[valid].astype(np.float32), (rows[valid], code[valid])), shape=(len(positions), 4**k)))
    return sparse.hstack(blocks).tocsr()


def features_and_labels(genome: Genome, track: Track, samples, window: int, k_max: int):
    features, labels, where = [], [], []
    for chrom, positions in samples:
        ids = genome.read(chrom, 0, genome.chrom_sizes[chrom])
        features.append(kmer_counts(ids, positions, window, k_max))
        labels.append(track.read(chrom, 0, genome.chrom_sizes[chrom])[positions])
        where.append((chrom, positions))
    return sparse.vstack(features).toarray(), np.concatenate(labels), where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fasta")
    parser.add_argument("track")
    parser.add_argument("--train", action="append", required=True, help="training region(s), as in GenomeData")
    parser.add_argument("--test", action="append", required=True, help="test region(s)")
    parser.add_argument("--positions", type=int, default=60_000, help="bases drawn from each split")
    parser.add_argument("--window", type=int, default=201)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictions", help="zarr of the model's per-base probabilities on the test bases")
    options = parser.parse_args()
    genome = Genome(options.fasta)
    track = Track(options.track, genome.chrom_sizes)
    rng = np.random.default_rng(options.seed)
    regions = {split: [i for text in getattr(options, split) for i in parse_region(text, genome.chrom_sizes)] for split in ("train", "test")}
    started = time.perf_counter()
    x_train, y_train, _ = features_and_labels(genome, track, sample_positions(regions["train"], options.positions, rng), options.window, options.k)
    x_test, y_test, where = features_and_labels(genome, track, sample_positions(regions["test"], options.positions, rng), options.window, options.k)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    classifier.fit(x_train, y_train == 1)
    scores = classifier.predict_proba(x_test)[:, 1]
    print(f"test bases {len(y_test)}, feature share {np.mean(y_test == 1):.3f} (majority-class accuracy "
          f"{max(np.mean(y_test == 1), np.mean(y_test != 1)):.4f})")
    print("| method | test bases | accuracy | AUROC |")
    print("|---|---|---|---|")
    print(f"| k-mer (k=1..{options.k}, window {options.window}) logistic regression | {len(y_test)} | "
          f"{accuracy_score(y_test == 1, scores > 0.5):.4f} | {roc_auc_score(y_test == 1, scores):.4f} |")
    if options.predictions:
        import zarr

        group = zarr.open_group(options.predictions, mode="r")
        model = np.concatenate([group[chrom].get_orthogonal_selection((positions, 1)) for chrom, positions in where])
        if np.isnan(model).any():
            raise SystemExit(f"{options.predictions} has no prediction for some test bases: predict over the test regions")
        print(f"| seqpipe model (same bases) | {len(y_test)} | {accuracy_score(y_test == 1, model > 0.5):.4f} | "
              f"{roc_auc_score(y_test == 1, model):.4f} |")
        every_score = np.concatenate([group[i.chrom][i.start:i.end, 1] for i in regions["test"]])
        every_label = np.concatenate([track.read(i.chrom, i.start, i.end) for i in regions["test"]]) == 1
        print(f"| seqpipe model (every test base) | {len(every_label)} | {accuracy_score(every_label, every_score > 0.5):.4f} | "
              f"{roc_auc_score(every_label, every_score):.4f} |")
    print(f"wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
