"""A DNA recipe fine-tuned from a classifier of other promoter sets, against the recipe from scratch.

Usage: python bench/dna_transfer_bench.py --out DIR [--data ../shared/data] [--recipe configs/dna_classify.yaml]
           [--sets ecoli_sigma bacillus] [--sources ecoli_sigma bacillus] [--balance] [--seeds 1 2 3 4 5 6] [--jobs 2]
           [--accelerator cpu]

Supervised pre-training: for each of ``--sets``, the recipe is first fitted (its own seed) on the training and
validation splits of the other ``--sources``, pooled, and tested on their test splits (bench/dna_benchmarks.py's
seeded splits; every set labels promoter / non_promoter). Then the set is fitted from scratch and with
``--model.pretrained`` set to that source's best checkpoint (its backbone; the head is new), over the seeds. The
default is each bacterial set from the other; ``--sources ecoli_sigma bacillus mouse_tata`` pools two sets for each,
and ``--balance`` draws as many training and validation records from each pooled set. The source ``ecoli_annotation``
is a promoter set drawn from the annotated E. coli genome (bench/annotated_promoters.py; no window holds an E. coli σ
record).
Rows go to ``DIR/rows.csv``; the summary prints per set and arm the test accuracy of every seed, the means of test
and validation accuracy and of MCC, and the paired gain over scratch with its standard error.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from annotated_promoters import write_set as write_annotated_set
from dna_benchmarks import DEFAULT_DATA, SETS, Rows, fit_and_test, latest_version, markdown, write_splits
from seqpipe.data.readers import read_records
from seqpipe.data.synthetic import write_fasta

BACTERIAL = ["ecoli_sigma", "bacillus"]
ANNOTATED = "ecoli_annotation"


def pool_splits(splits: dict[str, dict[str, Path]], names: list[str], out_dir: Path, balance: bool = False) -> dict[str, Path]:
    """Each split of the sets ``names``, pooled in one FASTA (header: label, then set and record). ``balance``: each
    set's training and validation records drawn (seed 0, without replacement) down to the smallest set's number."""
    pooled = {}
    for split in ("train", "val", "test"):
        records = {name: list(enumerate(read_records(splits[name][split]))) for name in names}
        if balance and split != "test":
            keep = min(len(rows) for rows in records.values())
            rng = np.random.default_rng(0)
            records = {name: [rows[i] for i in sorted(rng.choice(len(rows), keep, replace=False))]
                       for name, rows in records.items()}
        pooled[split] = write_fasta(out_dir / f"{split}.fa", [(f"{record.label} {name}:{number}", record.sequence)
                                                              for name in names for number, record in records[name]])
    return pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--recipe", default="configs/dna_classify.yaml")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=BACTERIAL, help="the sets fine-tuned")
    parser.add_argument("--sources", nargs="+", choices=[*SETS, ANNOTATED], default=BACTERIAL,
                        help="the sets a source classifier pools (each set's own left out)")
    parser.add_argument("--balance", action="store_true",
                        help="a pooled source draws as many training and validation records from each set")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty: give a new folder")
    common = ["--trainer.accelerator", args.accelerator, "--trainer.enable_progress_bar", "false"]
    splits = {name: write_splits(args.data / SETS[name][0], SETS[name][1], args.out / "splits" / name)
              for name in dict.fromkeys(args.sets + args.sources) if name != ANNOTATED}
    if ANNOTATED in args.sources:
        splits[ANNOTATED] = write_annotated_set(args.data, args.out / "splits" / ANNOTATED,
                                                exclude=[args.data / SETS["ecoli_sigma"][0]])
    pools = {name: [source for source in args.sources if source != name] for name in args.sets}
    if not all(pools.values()):
        parser.error(f"--sources {' '.join(args.sources)} leaves a set of --sets without another set to learn from")
    source_arm = {name: f"from_{'+'.join(pooled)}" for name, pooled in pools.items()}
    for name, pooled in pools.items():  # a source is fitted on its sets' training splits, tested on their test splits
        if source_arm[name] not in splits:
            splits[source_arm[name]] = pool_splits(splits, pooled, args.out / "splits" / "+".join(pooled), args.balance)
    rows = Rows(args.out)

    def fit(name: str, arm: str, seed: int | None, checkpoint: Path | None = None) -> Path:
        run = args.out / "runs" / name / (arm if seed is None else f"{arm}_s{seed}")
        extra = ([] if seed is None else ["--seed_everything", str(seed)]) + (
            [] if checkpoint is None else ["--model.pretrained", str(checkpoint)])
        rows.add("rows", {"set": name, "arm": arm, "seed": seed, **fit_and_test(args.recipe, splits[name], run, common,
                                                                                   extra)})
        return latest_version(run) / "checkpoints/best.ckpt"

    source_names = list(dict.fromkeys(source_arm.values()))
    with ThreadPoolExecutor(args.jobs) as pool:
        sources = dict(zip(source_names, pool.map(lambda source: fit(source, "source", None), source_names)))
        jobs = [pool.submit(fit, name, arm, seed, sources[arm] if arm != "scratch" else None)
                for seed in args.seeds for name in args.sets for arm in ("scratch", source_arm[name])]
        for job in jobs:
            job.result()
    print(markdown(summary(rows.frame("rows"))))


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per set and arm: test accuracy by seed, mean test / validation accuracy and MCC, paired gain over scratch."""
    out = []
    groups = rows[rows["arm"] != "source"].groupby(["set", "arm"])
    for (name, arm), group in sorted(groups, key=lambda item: (item[0][0], item[0][1] != "scratch")):
        group = group.set_index("seed").sort_index()
        scratch = rows[(rows["set"] == name) & (rows["arm"] == "scratch")].set_index("seed")["test_acc"]
        gain = 100 * (group["test_acc"] - scratch.reindex(group.index))
        out.append({"set": name, "arm": arm, "test_acc by seed": " ".join(f"{100 * v:.1f}" for v in group["test_acc"]),
                    "test_acc": f"{group['test_acc'].mean():.3f}", "val_acc": f"{group['val_acc'].mean():.3f}",
                    "test_mcc": f"{group['test_mcc'].mean():.3f}",
                    "gain ± SE (points)": "" if arm == "scratch" else
                    f"{gain.mean():+.1f} ± {gain.std() / len(gain) ** 0.5:.1f} ({int((gain > 0).sum())} of {len(gain)} better)"})
    return pd.DataFrame(out)


if __name__ == "__main__":
    main()
