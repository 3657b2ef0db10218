"""E. coli sigma-factor promoters: the DNA recipes beside a k-mer logistic-regression baseline.

Usage: python bench/dna_promoters.py [--fasta ../shared/data/promoters/ecoli_sigma_promoters.fasta]
           [--configs configs/dna_classify.yaml configs/dna_classify_s4.yaml] [--max-epochs N] [--work DIR]
           [--tasks binary sigma7] [--accelerator cpu|gpu]

A config may carry overrides after commas, e.g. the DPLR kernel in the S4 recipe:
``configs/dna_classify_s4.yaml,model.backbone.block.init_args.mode=dplr,model.backbone.block.init_args.disc=bilinear``.

Both tasks — promoter vs non-promoter (Sigma00), and all seven classes — use one seeded stratified
80/20 split written to FASTA files, so the baseline and every recipe see the same records. The recipes
run through the `seqpipe` CLI; the table reports the validation accuracy and MCC of the best checkpoint
(by val/acc) and the wall time of `seqpipe fit`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, matthews_corrcoef
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seqpipe.data.base import stratified_holdout
from seqpipe.data.readers import read_records
from seqpipe.data.synthetic import write_fasta

DEFAULT_FASTA = Path(__file__).resolve().parents[1].parent / "shared/data/promoters/ecoli_sigma_promoters.fasta"


def write_split(records, labels: list[str], out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write ``train.fa``/``val.fa`` (label in the header) from a stratified 20% hold-out."""
    held_out = set(stratified_holdout(np.array(labels), 0.2, seed))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in ("train", "val"):
        chosen = [(f"{label} {r.id}_{i}", r.sequence) for i, (r, label) in enumerate(zip(records, labels))
                  if (i in held_out) == (split == "val")]
        paths[split] = write_fasta(out_dir / f"{split}.fa", chosen)
    return paths


def kmer_baseline(paths: dict[str, Path], k_values=(2, 3, 4, 5)) -> dict[str, float]:
    """Bag of k-mers (k = 2..5, counts) -> standardised -> multinomial logistic regression."""
    def load(split):
        records = list(read_records(paths[split]))
        return [r.sequence.upper() for r in records], [r.label for r in records]

    (train_x, train_y), (val_x, val_y) = load("train"), load("val")
    model = make_pipeline(
        CountVectorizer(analyzer="char", ngram_range=(min(k_values), max(k_values)), lowercase=False),
        StandardScaler(with_mean=False),
        LogisticRegression(C=0.05, max_iter=3000),
    )
    start = time.perf_counter()
    model.fit(train_x, train_y)
    predicted = model.predict(val_x)
    return {"val_acc": accuracy_score(val_y, predicted), "val_mcc": matthews_corrcoef(val_y, predicted),
            "seconds": time.perf_counter() - start}


def run_recipe(recipe: str, paths: dict[str, Path], run_dir: Path, max_epochs: int | None, accelerator: str) -> dict[str, float]:
    """``seqpipe fit`` on the split; metrics of the best epoch by val/acc from the CSV log.

    ``recipe``: a config path, optionally followed by ``,key=value`` overrides.
    """
    config, *overrides = recipe.split(",")
    command = [sys.executable, "-m", "seqpipe.cli", "fit", "--config", config, "--data.train", str(paths["train"]),
               "--data.val", str(paths["val"]), "--trainer.default_root_dir", str(run_dir),
               "--trainer.enable_progress_bar", "false", "--trainer.accelerator", accelerator]
    for override in overrides:
        key, value = override.split("=", 1)
        command += [f"--{key}", value]
    if max_epochs:
        command += ["--trainer.max_epochs", str(max_epochs)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    (metrics_file,) = run_dir.glob("lightning_logs/version_*/metrics.csv")
    epochs = pd.read_csv(metrics_file).dropna(subset=["val/acc"])
    best = epochs.loc[epochs["val/acc"].idxmax()]
    return {"val_acc": best["val/acc"], "val_mcc": best["val/mcc"], "seconds": seconds, "epochs": len(epochs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--configs", nargs="+", default=["configs/dna_classify.yaml", "configs/dna_classify_s4.yaml"])
    parser.add_argument("--tasks", nargs="+", choices=["binary", "sigma7"], default=["binary", "sigma7"])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the recipes' trainer.max_epochs")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_promoters"))
    args = parser.parse_args()

    records = list(read_records(args.fasta))
    tasks = {
        "binary": ("promoter vs non-promoter", ["non_promoter" if r.label == "Sigma00" else "promoter" for r in records]),
        "sigma7": ("seven sigma classes", [r.label for r in records]),
    }
    rows = []
    for slug, model in product(args.tasks, ["k-mer logistic regression", *args.configs]):
        task, labels = tasks[slug]
        paths = write_split(records, labels, args.work / slug)
        if model.startswith("k-mer"):
            result = kmer_baseline(paths)
        else:
            run_name = model.replace("/", "_").replace(",", "_").replace("=", "-")
            result = run_recipe(model, paths, args.work / slug / run_name, args.max_epochs, args.accelerator)
        rows.append({"task": task, "model": model, **result})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1, float_format="%.3f"), flush=True)
    print("\n" + pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
