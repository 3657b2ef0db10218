"""Pre-train-then-fine-tune against the same recipe from scratch, over seeds, on the DNA development sets.

Usage: python bench/dna_pretrain_bench.py --out DIR [--data ../shared/data] [--recipe configs/dna_classify.yaml]
           [--seeds 1 2 3] [--lr-scales 1.0 0.25] [--sources own genome own+genome] [--jobs 16] [--accelerator gpu]
           [--pretrain-args '...'] [--finetune-args '...'] [--no-scratch]

The pieces are bench/dna_benchmarks.py's (same seeded splits, ``pretrain``, ``fit_and_test``). Pre-training runs
once per source (``configs/dna_pretrain.yaml``, its seed): the set's own training + validation sequences
(labels ignored) for every set, the E. coli genome alone (one run shared by the bacterial sets) and both mixed
for the bacterial sets (``--sources`` keeps some of them). Every fine-tuning run is the recipe with ``--seed_everything SEED`` and
``--model.pretrained`` (the pre-training checkpoint with the lowest validation loss) at each backbone learning
rate scale of ``--lr-scales``; the scratch arm is the recipe with the same seeds. ``--jobs`` processes at a time
(one thread each), a fine-tuning run starting as soon as its pre-training is done.

Rows go to ``DIR/finetune.csv`` and ``DIR/pretrain.csv`` as they finish. The summary picks the lr scale with the
highest mean validation accuracy over every pre-trained run (sets, sources, seeds) and prints, per set and arm,
the mean and standard deviation over seeds of test accuracy and MCC beside validation accuracy.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from dna_benchmarks import DEFAULT_DATA, GENOME, PRETRAIN_SOURCES, SETS, Rows, fit_and_test, markdown, pretrain, pretrain_sources, \
    pretrain_summary, write_splits
from seqpipe.data.genome_io import Genome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--recipe", default="configs/dna_classify.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--lr-scales", nargs="+", type=float, default=[1.0, 0.25], help="--model.backbone_lr_scale values")
    parser.add_argument("--sources", nargs="+", choices=list(PRETRAIN_SOURCES), default=list(PRETRAIN_SOURCES),
                        help="pre-training sources (the genome ones apply to the bacterial sets only)")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--pretrain-args", default="", help="extra CLI options of the pre-training runs")
    parser.add_argument("--finetune-args", default="", help="extra CLI options of every fine-tuning run (scratch too)")
    parser.add_argument("--no-scratch", action="store_true",
                        help="leave the scratch arm out (another run of the same recipe and seeds has it; the gain "
                             "column is then empty: compare with that run's scratch rows)")
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if args.out.exists() and any(args.out.iterdir()):  # its CSVs are appended to and its runs are found by glob
        parser.error(f"--out {args.out} is not empty: give a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["--trainer.accelerator", args.accelerator, "--trainer.enable_progress_bar", "false"]
    slots, rows = threading.Semaphore(args.jobs), Rows(args.out)
    Genome(args.data / GENOME).close()  # decompress and index the genome once, before parallel runs read it

    def timed(compute) -> tuple[dict, float]:
        with slots:
            start = time.perf_counter()
            return compute(), time.perf_counter() - start

    def pretrained(source: str, name: str, paths) -> Path:
        _, own, genome = PRETRAIN_SOURCES[source]
        run = args.out / "runs" / (f"{name}_{source}" if own else source) / "lm"
        checkpoint, seconds = timed(lambda: pretrain(paths if own else None, args.data / GENOME if genome else None, run,
                                                     common, args.pretrain_args.split()))
        rows.add("pretrain", {"source": source, "set": name if own else "", **pretrain_summary(checkpoint), "seconds": seconds})
        return checkpoint

    def finetune(name: str, paths, arm: str, seed: int, scale: float | None, checkpoint: Future | None) -> None:
        extra = ["--seed_everything", str(seed)]
        if checkpoint is not None:
            extra += ["--model.pretrained", str(checkpoint.result()), "--model.backbone_lr_scale", str(scale)]
        run = args.out / "runs" / name / (f"{arm}_s{seed}" + (f"_lr{scale:g}" if scale is not None else ""))
        result, seconds = timed(lambda: fit_and_test(args.recipe, paths, run, common, [*extra, *args.finetune_args.split()]))
        rows.add("finetune", {"set": name, "arm": arm, "seed": seed, "lr_scale": scale, **result, "seconds": seconds})

    with ThreadPoolExecutor(64) as pool:  # threads wait on their pre-training; ``slots`` bounds the processes
        splits = {name: write_splits(args.data / SETS[name][0], SETS[name][1], args.out / "splits" / name) for name in args.sets}
        sources = {name: [source for source in pretrain_sources(SETS[name][2]) if source in args.sources] for name in args.sets}
        checkpoints: dict[tuple[str, str], Future] = {}
        if any("genome" in sources[name] for name in args.sets):
            genome_run = pool.submit(pretrained, "genome", "", None)
        for name in args.sets:
            for source in sources[name]:
                checkpoints[name, source] = genome_run if source == "genome" else pool.submit(pretrained, source, name, splits[name])
        jobs = []
        for seed in args.seeds:  # seed by seed: a run cut short still has whole seeds
            for name in args.sets:
                if not args.no_scratch:
                    jobs.append(pool.submit(finetune, name, splits[name], "scratch", seed, None, None))
                jobs += [pool.submit(finetune, name, splits[name], source, seed, scale, checkpoints[name, source])
                         for source in sources[name] for scale in args.lr_scales]
        for job in jobs:
            job.result()
    summarise(rows.frame("finetune"), rows.frame("pretrain"))


def summarise(rows: pd.DataFrame, lm: pd.DataFrame) -> None:
    """Print the lr-scale choice (mean validation accuracy of the pre-trained runs) and the table at that scale."""
    tuned = rows[rows["arm"] != "scratch"]
    by_scale = tuned.groupby("lr_scale")["val_acc"].mean()
    chosen = by_scale.idxmax()
    print("\nmean validation accuracy of the pre-trained runs by --model.backbone_lr_scale (the choice: highest):")
    by_arm = tuned.pivot_table(index=["set", "arm"], columns="lr_scale", values="val_acc")
    print(markdown(by_arm.rename(columns=lambda scale: f"lr scale {scale:g}").reset_index()))
    print(f"\nchosen backbone_lr_scale {chosen:g} ({', '.join(f'{s:g}: {v:.4f}' for s, v in by_scale.items())})")
    print("\npre-training runs:\n" + markdown(lm.fillna({"set": "(both bacterial sets)"})))
    keep = rows[(rows["arm"] == "scratch") | (rows["lr_scale"] == chosen)]
    print(f"\nper set and arm at lr scale {chosen:g} (scratch: the recipe alone), mean ± std over seeds:")
    print(markdown(table(keep)))
    print("\nevery lr scale:\n" + markdown(table(rows.fillna({"lr_scale": 0}), by=["set", "arm", "lr_scale"])))


def table(rows: pd.DataFrame, by: tuple[str, ...] = ("set", "arm")) -> pd.DataFrame:
    """Mean ± standard deviation over seeds of val/test accuracy and test MCC, and each arm's test gain over scratch."""
    grouped = rows.groupby(list(by))
    out = grouped.agg(seeds=("seed", "nunique")).reset_index()
    for column in ("val_acc", "test_acc", "test_mcc"):
        mean, std = grouped[column].mean().to_numpy(), grouped[column].std().to_numpy()
        out[column] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std)]
    scratch = rows[rows["arm"] == "scratch"].groupby("set")["test_acc"].mean()
    out["test_acc_gain_points"] = [f"{100 * (m - scratch[s]):+.1f}" if s in scratch else ""
                                   for s, m in zip(out["set"], grouped["test_acc"].mean())]
    return out


if __name__ == "__main__":
    main()
