"""Choose the DNA classification recipes by cross-validation; then test the choice over seeds beside the baselines.

Usage: python bench/dna_recipe_search.py --out DIR [--jobs 15] [--accelerator gpu] [--folds 3] [--seeds [1 2 3]]
           [--candidates NAME ...] [--sets NAME ...] [--data ../shared/data]

Every set gets the standard split of ``bench/dna_benchmarks.py`` (a seeded stratified 20% test, then 10% of the
rest for validation). The test part is never read while choosing. The training + validation part is cut into
``--folds`` seeded stratified folds; each candidate (``CANDIDATES``: ``configs/dna_classify.yaml`` with
some settings replaced, written to ``WORK/configs/NAME.yaml``) is fitted once
per (set, fold) on the other folds and scored on its fold. The score of a fit is its validation accuracy after
the last epoch (no choice made on the fold it is scored on); a candidate's score is the mean over folds and then
over sets. The k-mer LR's k and C are chosen by the same folds, then it is refitted on training + validation;
so are those of its strand-invariant counterpart (both strands in training, probabilities averaged over them).
``--candidates`` defaults to the strand-mode comparison ``DEFAULT_CANDIDATES``.

The choice: the CPU recipe is the best-scoring candidate marked ``cpu`` (within the CPU time budget), the GPU
recipe the best-scoring candidate of all. Each is then fitted on the standard split with every ``--seeds`` seed
(the checkpoint with the best ``val/acc``, as ``seqpipe fit`` does) and tested, beside the k-mer LR and the small
CNN (the CNN over the same seeds); ``--seeds`` without a seed stops after the CV. Fits run as ``seqpipe``
processes, ``--jobs`` at a time, one thread each.
Rows are appended to ``DIR/*.csv`` as they finish, so an interrupted search keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # before torch: every fit, and this process, one thread

from dna_benchmarks import DEFAULT_DATA, FULL_SCHEDULE, SETS, Rows, cnn_baseline, fit_and_test, latest_version, load, \
    markdown, seqpipe, write_splits  # noqa: E402

from seqpipe.data.readers import read_records  # noqa: E402
from seqpipe.data.synthetic import write_fasta  # noqa: E402
from seqpipe.dna_alphabet import reverse_complement  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DNA_HEAD = "seqpipe.tasks.dna_classification.DNASequenceClassification"
EMA = {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.98}}
#: the block node of a Mamba-2 (SSD) backbone: N 64, 4 heads of 64 channels at d_model 128
MAMBA2 = {"class_path": "seqpipe.mamba2.Mamba2Block", "init_args": {"d_state": 64}}
#: the backbone node's changes for a CNNProm-sized first convolution: 200 motif detectors of width 21
WIDE_MOTIFS = {"init_args": {"motif_channels": 200, "motif_width": 21}}


def head(pooling: str, kmer_size: int = 0, dropout: float = 0.1, **options) -> dict:
    """The ``model.head`` node of a :class:`DNASequenceClassification` head; ``options``: its other arguments."""
    return {"class_path": DNA_HEAD, "init_args": {"pooling": pooling, "kmer_size": kmer_size, "dropout": dropout, **options}}


def merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in, nested dicts key by key (a new class_path replaces the whole node)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "class_path" not in value:
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def settings(kmer_size: int, dropout: float, strands: str, motif_width: int, **more) -> dict:
    """Settings replaced in a base recipe: its head (mean/max pooling, ``kmer_size``-mers, head ``dropout``,
    ``strands``), its motif width, reverse-complement augmentation (for the strand-averaged head only), and ``more``."""
    return merge({"model": {"head": head("mean_max", kmer_size, dropout, strands=strands),
                            "backbone": {"init_args": {"motif_width": motif_width}}},
                  "data": {"init_args": {"reverse_complement_augment": strands == "average"}}}, more)


def cpu(strands: str, motif_width: int, head_dropout: float = 0.1, **more) -> dict:
    return settings(4, head_dropout, strands, motif_width, **more)


def mamba(kmer_size: int, head_dropout: float, strands: str, motif_width: int, **more) -> dict:
    """The GPU recipe before session 17 (``configs/dna_classify.yaml`` on a Mamba backbone, d_model 128 x 4 layers,
    N 16, dropout 0.2; 30 epochs at lr 1e-3) with its head and motif width set as in :func:`settings`."""
    backbone = {"class_path": "seqpipe.dna_backbones.MotifBackbone",
                "init_args": {"d_model": 128, "n_layers": 4, "motif_width": motif_width, "dropout": 0.2,
                              "block": {"class_path": "seqpipe.mamba.MambaBlock", "init_args": {"d_state": 16}}}}
    return merge(settings(kmer_size, head_dropout, strands, motif_width,
                          trainer={"max_epochs": 30}, model={"backbone": backbone, "lr": 1.0e-3}), more)


def gpu(strands: str, motif_width: int, **more) -> dict:
    return mamba(5, 0.2, strands, motif_width, **more)


def s4d_wide(layers: int) -> dict:
    """The CPU recipe wider (d_model 128) and with ``layers`` S4D layers, dropout 0.2 in the backbone, 30 epochs."""
    return cpu("pair", 9, trainer={"max_epochs": 30},
               model={"backbone": {"init_args": {"d_model": 128, "n_layers": layers, "dropout": 0.2}}})


#: name -> (base recipe, settings replaced in it, within the CPU budget). Strands (``strands`` of the head):
#: ``meanmax``/``k4``/``k5`` and ``wide`` average the logits of both strands (strand-invariant, trained with
#: reverse-complement augmentation: the recipes before ``pair``); ``oriented``: the given strand only; ``pair``:
#: both strands read in training and scoring, each with its own weights in the linear layer (strand-aware). ``ema``:
#: the weights validated and saved are an exponential moving average (decay 0.98: about the last 50 steps);
#: ``shift``: training sequences moved by up to 3 bases (``data.shift_augment``); ``reg``: dropout 0.2 in the
#: backbone, 0.3 in the head; ``wide``: a CNNProm-sized motif front end (200 detectors of width 21 projected back to
#: d_model, ``MotifBackbone(motif_channels=...)``); motif width 15 unless the name says ``w9`` or ``s4d``. ``cpu_pair_w9`` is
#: ``configs/dna_classify.yaml``; ``gpu_*`` other than ``gpu_s4d_*`` run on Mamba (:func:`mamba`; ``gpu_pair`` was
#: ``configs/dna_classify_gpu.yaml`` until session 17, ``gpu_mamba_w9`` / ``gpu_mamba2_w9``: the CPU recipe's head and
#: motif width on it, the second with Mamba-2 blocks); ``gpu_s4d_*``: :func:`s4d_wide`, with 2 or 4 S4D layers
#: (``gpu_s4d_d128x4`` is ``configs/dna_classify_gpu.yaml`` since session 17).
CANDIDATES = {
    "cpu_meanmax_k4": ("dna_classify", cpu("average", 15), True),
    "cpu_k4_ema": ("dna_classify", cpu("average", 15, trainer={"callbacks": [EMA]}), True),
    "cpu_k4_ema_shift": ("dna_classify", cpu("average", 15, trainer={"callbacks": [EMA]},
                                             data={"init_args": {"shift_augment": 3}}), True),
    "cpu_k4_ema_shift_reg": ("dna_classify", cpu("average", 15, 0.3, trainer={"callbacks": [EMA]},
                                                 data={"init_args": {"shift_augment": 3}},
                                                 model={"backbone": {"init_args": {"dropout": 0.2}}}), True),
    "cpu_oriented": ("dna_classify", cpu("forward", 15), True),
    "cpu_wide": ("dna_classify", cpu("average", 15, model={"backbone": WIDE_MOTIFS}), True),
    "cpu_wide_oriented": ("dna_classify", cpu("forward", 15, model={"backbone": WIDE_MOTIFS}), True),
    "cpu_pair": ("dna_classify", cpu("pair", 15), True),
    "cpu_pair_w9": ("dna_classify", cpu("pair", 9), True),
    "gpu_meanmax_k5": ("dna_classify", gpu("average", 15), False),
    "gpu_oriented": ("dna_classify", gpu("forward", 15), False),
    "gpu_pair": ("dna_classify", gpu("pair", 15), False),
    "gpu_wide": ("dna_classify", gpu("average", 15, model={"backbone": WIDE_MOTIFS}), False),
    "gpu_mamba_w9": ("dna_classify", mamba(4, 0.1, "pair", 9), False),
    "gpu_mamba2_w9": ("dna_classify", mamba(4, 0.1, "pair", 9, model={"backbone": {"init_args": {"block": MAMBA2}}}),
                      False),
    "gpu_s4d_d128x2": ("dna_classify", s4d_wide(2), False),
    "gpu_s4d_d128x4": ("dna_classify", s4d_wide(4), False),
}
#: the comparison of strand modes that chose the CPU recipe (bench/RESULTS.md, "Both strands, each with its own weights")
DEFAULT_CANDIDATES = ["cpu_meanmax_k4", "cpu_oriented", "cpu_pair", "cpu_pair_w9", "gpu_meanmax_k5", "gpu_pair"]


def write_config(name: str, out: Path) -> Path:
    base, changes, _ = CANDIDATES[name]
    config = merge(yaml.safe_load((ROOT / "configs" / f"{base}.yaml").read_text()), changes)
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fold_indices(labels: np.ndarray, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded stratified folds: each class's shuffled indices dealt round-robin; a list of ``folds`` index arrays."""
    rng = np.random.default_rng(seed)
    assigned = np.empty(len(labels), dtype=int)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assigned[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    return [np.flatnonzero(assigned == fold) for fold in range(folds)]


def write_folds(paths: dict[str, Path], folds: int, out_dir: Path) -> list[dict[str, Path]]:
    """The training + validation records of a standard split cut into folds: per fold ``{"train", "val"}`` FASTAs."""
    records = [r for split in ("train", "val") for r in read_records(paths[split])]
    labels = np.array([r.label for r in records])
    out = []
    for fold, held in enumerate(fold_indices(labels, folds)):
        held_set = set(held.tolist())
        out.append({split: write_fasta(out_dir / f"fold{fold}_{split}.fa", [
            (f"{r.label} cv{i}", r.sequence) for i, r in enumerate(records) if (i in held_set) == (split == "val")])
            for split in ("train", "val")})
    return out


def cv_fit(config: Path, fold: dict[str, Path], run: Path, common: list[str]) -> dict[str, float]:
    """``seqpipe fit`` on a fold's training part; its validation accuracy after the last epoch (and the best)."""
    seqpipe("fit", "--config", config, "--data.train", fold["train"], "--data.val", fold["val"],
            "--trainer.default_root_dir", run, *FULL_SCHEDULE, *common, log=run.with_suffix(".log"))
    epochs = pd.read_csv(latest_version(run) / "metrics.csv").dropna(subset=["val/acc"])
    return {"cv_acc": epochs["val/acc"].iloc[-1], "cv_best_epoch_acc": epochs["val/acc"].max(), "epochs": len(epochs)}


def kmer_cv(paths: dict[str, Path], folds: list[dict[str, Path]], both_strands: bool = False) -> list[dict]:
    """k-mer LR (``dna_benchmarks.kmer_baseline``'s grid): k and C by mean fold accuracy, then refitted on
    training + validation and tested. One row per (k, C) with its CV accuracy; the chosen row also has test scores.
    ``both_strands``: strand-invariant, as the recipe's default: every training sequence is an example on both
    strands, and a sequence's class probabilities are averaged over its two strands."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, matthews_corrcoef
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    def model(k: int, c: float):
        return make_pipeline(CountVectorizer(analyzer="char", ngram_range=(k, k), lowercase=False), Normalizer(),
                             LogisticRegression(C=c, max_iter=3000))

    def strands(sequences: list[str]) -> list[list[str]]:
        return [sequences, [reverse_complement(s) for s in sequences]] if both_strands else [sequences]

    def fit_predict(k: int, c: float, train: tuple[list[str], np.ndarray], sequences: list[str]) -> np.ndarray:
        views = strands(train[0])
        fitted = model(k, c).fit(sum(views, []), np.tile(train[1], len(views)))
        return fitted.classes_[sum(fitted.predict_proba(view) for view in strands(sequences)).argmax(1)]

    data = [(load(fold["train"]), load(fold["val"])) for fold in folds]
    rows = [{"strands": "both" if both_strands else "one", "k": k, "C": c,
             "cv_acc": np.mean([accuracy_score(vy, fit_predict(k, c, train, vx)) for train, (vx, vy) in data]),
             "chosen": False, "test_acc": np.nan, "test_mcc": np.nan}  # the same columns in every row of the CSV
            for k in (3, 4, 5, 6) for c in (0.3, 1.0, 3.0, 10.0)]
    best = max(rows, key=lambda row: row["cv_acc"])
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (load(paths[s]) for s in ("train", "val", "test"))
    predicted = fit_predict(best["k"], best["C"], (train_x + val_x, np.concatenate([train_y, val_y])), test_x)
    best.update(chosen=True, test_acc=accuracy_score(test_y, predicted), test_mcc=matthews_corrcoef(test_y, predicted))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("runs/dna_search"))
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3], help="none: CV only (no seed phase, no CNN)")
    parser.add_argument("--candidates", nargs="+", default=DEFAULT_CANDIDATES, choices=list(CANDIDATES))
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--max-epochs", type=int, help="override every recipe's trainer.max_epochs (a quick check)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = Rows(args.out)
    common = ["--trainer.accelerator", args.accelerator, "--trainer.enable_progress_bar", "false",
              *(["--trainer.max_epochs", str(args.max_epochs)] if args.max_epochs else [])]
    configs = {name: write_config(name, args.work) for name in args.candidates}
    splits, folds = {}, {}
    for name in args.sets:
        path, relabel, _ = SETS[name]
        splits[name] = write_splits(args.data / path, relabel, args.work / name)
        folds[name] = write_folds(splits[name], args.folds, args.work / name / "folds")

    def cv_job(candidate: str, dataset: str, fold: int) -> None:
        result = cv_fit(configs[candidate], folds[dataset][fold], args.work / dataset / "cv" / f"{candidate}_fold{fold}", common)
        rows.add("cv", {"candidate": candidate, "set": dataset, "fold": fold, **result})

    def baselines() -> None:
        for dataset in args.sets:
            for both_strands in (False, True):
                for row in kmer_cv(splits[dataset], folds[dataset], both_strands):
                    rows.add("kmer", {"set": dataset, **row})

    def cnn_seeds() -> None:  # one after another: the CNN draws from torch's global generator
        for dataset in args.sets:
            for seed in args.seeds:
                result = cnn_baseline(splits[dataset], seed=seed, device="cuda" if args.accelerator == "gpu" else "cpu")
                rows.add("seeds", {"model": "small CNN", "set": dataset, "seed": seed, **result})

    def seed_job(label: str, candidate: str, dataset: str, seed: int) -> None:
        run = args.work / dataset / "seeds" / f"{candidate}_seed{seed}"
        result = fit_and_test(str(configs[candidate]), splits[dataset], run, common, ["--seed_everything", str(seed)])
        rows.add("seeds", {"model": f"{label}: {candidate}", "set": dataset, "seed": seed, **result})

    # the largest set and model first, so the long fits do not start last
    cv_jobs = sorted(((c, d, f) for c in args.candidates for d in args.sets for f in range(args.folds)),
                     key=lambda job: (job[1] != "mouse_tata", CANDIDATES[job[0]][2]))
    with ThreadPoolExecutor(2) as pool:
        side = [pool.submit(baselines), pool.submit(cnn_seeds)]
        with ThreadPoolExecutor(args.jobs) as fits:
            list(fits.map(lambda job: cv_job(*job), cv_jobs))
        cv = rows.frame("cv")
        per_set = cv.pivot_table(index="candidate", columns="set", values="cv_acc")
        per_set["mean"] = per_set.mean(axis=1)
        per_set = per_set.sort_values("mean", ascending=False)
        cpu_choice = next((name for name in per_set.index if CANDIDATES[name][2]), None)  # none among GPU-only ones
        gpu_choice = per_set.index[0]
        chosen = {**({"CPU recipe": cpu_choice} if cpu_choice else {}),
                  **({"GPU recipe": gpu_choice} if gpu_choice != cpu_choice else {})}
        print(f"\nchosen by {args.folds}-fold CV: {chosen}", flush=True)
        with ThreadPoolExecutor(args.jobs) as fits:
            list(fits.map(lambda job: seed_job(*job), [(label, c, d, s) for label, c in chosen.items()
                                                       for d in args.sets for s in args.seeds]))
        for future in side:
            future.result()

    print(f"\n{args.folds}-fold CV accuracy (after the last epoch), mean over folds:\n" + markdown(per_set.reset_index()))
    kmer = rows.frame("kmer")
    print("\nk-mer LR chosen by CV:\n" + markdown(kmer[kmer["chosen"].eq(True)]))
    if args.seeds:
        seeds = rows.frame("seeds")
        summary = seeds.groupby(["set", "model"])["test_acc"].agg(["mean", "min", "max", "count"]).reset_index()
        print("\ntest accuracy over seeds, standard split:\n" + markdown(summary))


if __name__ == "__main__":
    main()
