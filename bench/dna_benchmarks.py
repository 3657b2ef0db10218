"""DNA classification on the development sets: the recipes beside a k-mer logistic regression and a small CNN.

Usage: python bench/dna_benchmarks.py [--data ../shared/data] [--sets ecoli_sigma mouse_tata bacillus]
           [--models kmer cnn cpu gpu pretrain] [--accelerator cpu|gpu] [--work DIR] [--max-epochs N]

Every set gets one seeded stratified split (20% test, then 10% of the rest for validation), written to
FASTA files with the label in the header, so every model sees the same records. Every choice (k and C of
the k-mer model, the CNN's epoch, each recipe's checkpoint) is made on validation; the table reports test
accuracy and MCC.

Models:
  kmer      bag of k-mers (L2-normalised counts), logistic regression; k in 3..6 and C chosen on validation
  cnn       two convolutions + pooling (one-hot input), reverse-complement augmentation and averaging
  cpu       configs/dna_classify.yaml        (the default, CPU recipe; ``seqpipe fit`` then ``seqpipe test``;
            ``--recipe`` names another)
  gpu       configs/dna_classify_gpu.yaml
  pretrain  configs/dna_pretrain.yaml on the set's own training + validation sequences (labels ignored) and,
            for the bacterial sets, on the E. coli genome alone and on both mixed; then the cpu row's recipe
            with --model.pretrained (the pre-training checkpoint with the lowest validation loss) and
            --finetune-args; a ``cpu`` row beside it is the same recipe from scratch.
            (bench/dna_pretrain_bench.py runs this over several seeds in parallel.)
  CONFIG[,key=value...]   any other recipe with CLI overrides (candidates to choose a default by validation)

``--csv`` appends every row to a CSV as well, so several runs (e.g. in parallel) make one table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from seqpipe.data.base import stratified_holdout
from seqpipe.data.readers import read_records
from seqpipe.data.synthetic import write_fasta
from seqpipe.data.tokenizers import DNATokenizer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data"
GENOME = "ecoli/GCF_000005845.2_ASM584v2_genomic.fna.gz"
#: set name -> (path under --data, relabel, pre-train also on the E. coli genome)
SETS = {
    "ecoli_sigma": ("promoters/ecoli_sigma_promoters.fasta", lambda label: "non_promoter" if label == "Sigma00" else "promoter", True),
    "mouse_tata": ("promoters/mouse_tata", None, False),
    "bacillus": ("promoters/bacillus", None, True),
}


def write_splits(path: Path, relabel, out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """``train.fa``/``val.fa``/``test.fa`` (label in the header): a stratified 20% test, then 10% of the rest for validation."""
    records = list(read_records(path))
    labels = np.array([relabel(r.label) if relabel else r.label for r in records])
    test = set(stratified_holdout(labels, 0.2, seed).tolist())
    rest = np.array([i for i in range(len(records)) if i not in test])
    val = set(rest[stratified_holdout(labels[rest], 0.1, seed + 1)].tolist())
    split_of = ["test" if i in test else "val" if i in val else "train" for i in range(len(records))]
    out_dir.mkdir(parents=True, exist_ok=True)
    return {split: write_fasta(out_dir / f"{split}.fa", [(f"{labels[i]} r{i}", records[i].sequence)
                                                           for i in range(len(records)) if split_of[i] == split])
            for split in ("train", "val", "test")}


def load(path: Path) -> tuple[list[str], np.ndarray]:
    records = list(read_records(path))
    return [r.sequence.upper() for r in records], np.array([r.label for r in records])


def scores(truth, predicted) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, matthews_corrcoef  # the baselines only: a GPU box running recipes needs no sklearn

    return {"test_acc": accuracy_score(truth, predicted), "test_mcc": matthews_corrcoef(truth, predicted)}


def kmer_baseline(paths: dict[str, Path]) -> dict[str, float]:
    """Bag of k-mers (k 3..6) with L2-normalised counts -> logistic regression; k and C by validation accuracy."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (load(paths[s]) for s in ("train", "val", "test"))
    best = None
    for k in (3, 4, 5, 6):
        for c in (0.3, 1.0, 3.0, 10.0):
            model = make_pipeline(CountVectorizer(analyzer="char", ngram_range=(k, k), lowercase=False), Normalizer(),
                                  LogisticRegression(C=c, max_iter=3000))
            model.fit(train_x, train_y)
            val_acc = accuracy_score(val_y, model.predict(val_x))
            if best is None or val_acc > best[0]:
                best = (val_acc, f"k={k} C={c}", model)
    val_acc, choice, model = best
    return {"val_acc": val_acc, **scores(test_y, model.predict(test_x)), "note": choice}


class SmallCNN(nn.Module):
    """One-hot (B, 4, L) -> two convolutions with max-pooling -> global max -> logits (B, n_classes)."""

    def __init__(self, n_classes: int, channels: int = 64, width: int = 9):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(4, channels, width, padding=width // 2), nn.ReLU(), nn.MaxPool1d(4, ceil_mode=True),
            nn.Conv1d(channels, channels, width, padding=width // 2), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
            nn.Dropout(0.3), nn.Linear(channels, n_classes),
        )

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        return self.net(one_hot)


def one_hot(sequences: list[str], tokenizer: DNATokenizer) -> torch.Tensor:
    """Equal-length (padded with N) sequences -> (n, 4, L) float; N is all zeros."""
    length = max(map(len, sequences))
    ids = torch.stack([torch.nn.functional.pad(tokenizer.encode(s), (0, length - len(s)), value=5) for s in sequences])
    return torch.nn.functional.one_hot(ids, 6)[..., 1:5].float().transpose(1, 2)


def cnn_baseline(paths: dict[str, Path], epochs: int = 30, seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """:class:`SmallCNN` with Adam, reverse-complement augmentation, logits averaged over both strands;
    the epoch with the best validation accuracy is scored on test."""
    torch.manual_seed(seed)
    tokenizer = DNATokenizer()
    data = {s: load(paths[s]) for s in ("train", "val", "test")}
    names = sorted(set(data["train"][1]))
    x = {s: one_hot(seqs, tokenizer).to(device) for s, (seqs, _) in data.items()}
    y = {s: torch.tensor([names.index(label) for label in labels], device=device) for s, (_, labels) in data.items()}
    model = SmallCNN(len(names)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

    def predict(split: str) -> torch.Tensor:  # reverse complement of one-hot A C G T: flip both axes
        model.eval()
        with torch.no_grad():
            return ((model(x[split]) + model(x[split].flip(1, 2))) / 2).argmax(1)

    best = (-1.0, None)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(y["train"]), device=device).split(64):
            inputs = x["train"][batch]
            flip = torch.rand(len(batch), device=device) < 0.5
            inputs = torch.where(flip[:, None, None], inputs.flip(1, 2), inputs)
            loss = nn.functional.cross_entropy(model(inputs), y["train"][batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_acc = (predict("val") == y["val"]).float().mean().item()
        if val_acc > best[0]:
            best = (val_acc, predict("test").cpu())
    return {"val_acc": best[0], **scores(y["test"].cpu(), best[1]), "note": f"{epochs} epochs, best on validation"}


def seqpipe(*args, log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        subprocess.run([sys.executable, "-m", "seqpipe.cli", *map(str, args)], check=True, stdout=out, stderr=subprocess.STDOUT)


#: ``seqpipe fit`` options of every benchmark fit: all of the recipe's epochs, whatever the machine's load (the CPU
#: recipe's trainer.max_time would fit fewer on a slow or shared machine); a run's own options may set it again
FULL_SCHEDULE = ("--trainer.max_time", "null")


def latest_version(run: Path) -> Path:
    """The newest ``lightning_logs/version_K`` folder of ``run`` (a re-run adds one beside the earlier)."""
    return max(run.glob("lightning_logs/version_*"), key=lambda version: int(version.name.split("_")[1]))


def fit_and_test(config: str, paths: dict[str, Path], run: Path, common: list[str], extra: list[str] = ()) -> dict[str, float]:
    """``seqpipe fit`` on train/val, then ``seqpipe test`` of the best checkpoint (by val/acc)."""
    seqpipe("fit", "--config", config, "--data.train", paths["train"], "--data.val", paths["val"],
            "--trainer.default_root_dir", run, *FULL_SCHEDULE, *common, *extra, log=run.with_suffix(".log"))
    version = latest_version(run)
    epochs = pd.read_csv(version / "metrics.csv").dropna(subset=["val/acc"])
    seqpipe("test", "--config", config, "--data.test", paths["test"], "--ckpt_path", version / "checkpoints/best.ckpt",
            "--trainer.default_root_dir", run / "test", *common, *extra, log=run.with_suffix(".log"))
    test = pd.read_csv(latest_version(run / "test") / "metrics.csv").iloc[-1]
    return {"val_acc": epochs["val/acc"].max(), "test_acc": test["test/acc"], "test_mcc": test["test/mcc"],
            "note": f"{len(epochs)} epochs"}


#: pre-training sources of the ``pretrain`` rows: (row label, own sequences?, E. coli genome?)
PRETRAIN_SOURCES = {"own": ("own sequences", True, False), "genome": ("E. coli genome", False, True),
                    "own+genome": ("own + E. coli genome", True, True)}


def pretrain_sources(with_genome: bool) -> list[str]:
    """The ``PRETRAIN_SOURCES`` of a set: the genome ones for the bacterial sets only."""
    return [name for name, (_, _, genome) in PRETRAIN_SOURCES.items() if with_genome or not genome]


def pretrain(paths: dict[str, Path] | None, genome: Path | None, run: Path, common: list[str], extra: list[str]) -> Path:
    """``configs/dna_pretrain.yaml`` on the training and validation sequences of ``paths`` (labels ignored; None:
    none) and/or ``genome``; returns the checkpoint with the lowest validation loss (``best.ckpt``)."""
    sources = ["--data.sequences", f"[{paths['train']},{paths['val']}]"] if paths else []
    if genome is not None:
        sources += ["--data.fasta", f"[{genome}]"]
    seqpipe("fit", "--config", "configs/dna_pretrain.yaml", *sources, "--trainer.default_root_dir", run, *common, *extra,
            log=run.with_suffix(".log"))
    return latest_version(run) / "checkpoints/best.ckpt"


def pretrain_summary(checkpoint: Path) -> dict[str, float]:
    """A pre-training run's best validation epoch (loss, perplexity, next-base/masked accuracy) and its mean
    training throughput, from the run's ``metrics.csv`` beside ``checkpoint``."""
    metrics = pd.read_csv(checkpoint.parents[1] / "metrics.csv")
    val = metrics.dropna(subset=["val/loss"])
    best = val.loc[val["val/loss"].idxmin()]
    return {"lm_epochs": len(val), "lm_best_epoch": int(best["epoch"]), "lm_val_loss": best["val/loss"],
            "lm_val_perplexity": best["val/perplexity"], "lm_val_acc": best["val/acc"],
            "lm_tokens_per_s": metrics["train/tokens_per_s"].dropna().mean()}


def run_set(name: str, args) -> list[dict]:
    path, relabel, with_genome = SETS[name]
    work = args.work / name
    paths = write_splits(args.data / path, relabel, work)
    common = ["--trainer.accelerator", args.accelerator, "--trainer.enable_progress_bar", "false"]
    epochs = ["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else []
    rows = []

    def row(model: str, compute) -> None:
        start = time.perf_counter()
        result = compute()
        rows.append({"set": name, "model": model, **result, "seconds": time.perf_counter() - start})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.3f"), flush=True)
        if args.csv:
            pd.DataFrame(rows[-1:]).to_csv(args.csv, mode="a", header=not args.csv.exists(), index=False)

    device = "cuda" if args.accelerator == "gpu" else "cpu"
    for model in args.models:
        if model == "kmer":
            row("k-mer LR", lambda: kmer_baseline(paths))
        elif model == "cnn":
            row("small CNN", lambda: cnn_baseline(paths, device=device))
        elif model == "cpu":
            row("CPU recipe", lambda: fit_and_test(args.recipe, paths, work / "cpu", common, epochs))
        elif model == "gpu":
            row("GPU recipe", lambda: fit_and_test("configs/dna_classify_gpu.yaml", paths, work / "gpu", common, epochs))
        elif model == "pretrain":
            for source in pretrain_sources(with_genome):
                label, own, genome = PRETRAIN_SOURCES[source]
                run = work / f"pretrain_{source}"
                row(f"CPU recipe, pre-trained ({label})", lambda: fit_and_test(
                    args.recipe, paths, run / "finetune", common, [*epochs, *args.finetune_args.split(), "--model.pretrained",
                    pretrain(paths if own else None, args.data / GENOME if genome else None, run / "lm", common,
                             args.pretrain_args.split())]))
        else:
            config, *overrides = model.split(",")
            options = [f"--{part}" if i == 0 else part for override in overrides for i, part in enumerate(override.split("=", 1))]
            slug = model.replace("/", "_").replace(",", "_").replace("=", "-")
            row(model, lambda: fit_and_test(config, paths, work / slug, common, [*epochs, *options]))
    return rows


class Rows:
    """Rows appended to ``DIR/NAME.csv`` as they come, from any thread (a cut run keeps what it measured)."""

    def __init__(self, out: Path):
        self.out, self.lock, self.rows = out, threading.Lock(), {}

    def add(self, name: str, row: dict) -> None:
        with self.lock:
            self.rows.setdefault(name, []).append(row)
            path = self.out / f"{name}.csv"
            pd.DataFrame([row]).to_csv(path, mode="a", header=not path.exists(), index=False)
            print(name, row, flush=True)

    def frame(self, name: str) -> pd.DataFrame:
        return pd.DataFrame(self.rows.get(name, []))


def markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown (floats to 3 decimals), without pandas' optional tabulate dependency."""
    cells = table.map(lambda v: f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v)))
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--models", nargs="+", default=["kmer", "cnn", "cpu"], help="kmer cnn cpu gpu pretrain CONFIG[,k=v...]")
    parser.add_argument("--recipe", default="configs/dna_classify.yaml", help="the recipe of the cpu and pretrain rows")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the recipes' trainer.max_epochs")
    parser.add_argument("--pretrain-args", default="", help="extra CLI options of the pre-training runs, e.g. '--trainer.max_epochs 2'")
    parser.add_argument("--finetune-args", default="", help="extra CLI options of the pre-trained rows' fine-tuning (not of the scratch cpu row), e.g. '--model.backbone_lr_scale 0.3'")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_dna"))
    parser.add_argument("--csv", type=Path, help="also append the rows to this CSV")
    args = parser.parse_args()
    rows = [row for name in args.sets for row in run_set(name, args)]
    print("\n" + markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
