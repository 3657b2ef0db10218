"""Choose the DNA classification recipes by validation: candidate recipes x development sets, run in parallel.

Usage: python bench/dna_recipe_search.py --out DIR [--jobs 15] [--accelerator gpu] [--candidates NAME ...] [--baselines]

Each candidate is ``configs/dna_classify.yaml`` (``cpu_*``) or ``configs/dna_classify_gpu.yaml`` (``gpu_*``) with
some settings replaced (``CANDIDATES``); it is written to ``DIR/configs/NAME.yaml`` and trained on every set by
``bench/dna_benchmarks.py`` (same seeded splits), one process per (set, candidate), ``--jobs`` at a time, one
thread each. Rows go to ``DIR/rows/*.csv``; the summary printed at the end ranks the candidates by their mean
validation accuracy over the sets — the choice — and shows test accuracy beside it only to report.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SETS = ("ecoli_sigma", "mouse_tata", "bacillus")
DNA_HEAD = "seqpipe.tasks.dna_classification.DNASequenceClassification"


def head(pooling: str, kmer_size: int = 0, dropout: float = 0.1) -> dict:
    """The ``model.head`` node of a :class:`DNASequenceClassification` head."""
    return {"class_path": DNA_HEAD, "init_args": {"pooling": pooling, "kmer_size": kmer_size, "dropout": dropout}}


#: name -> (base recipe, settings replaced in it)
CANDIDATES = {
    "cpu_mean": ("dna_classify", {"model": {"head": head("mean")}}),
    "cpu_max": ("dna_classify", {"model": {"head": head("max")}}),
    "cpu_meanmax": ("dna_classify", {"model": {"head": head("mean_max")}}),
    "cpu_mean_k5": ("dna_classify", {"model": {"head": head("mean", 5)}}),
    "cpu_meanmax_k5": ("dna_classify", {"model": {"head": head("mean_max", 5)}}),
    "cpu_meanmax_k4": ("dna_classify", {"model": {"head": head("mean_max", 4)}}),
    "cpu_max_k5": ("dna_classify", {"model": {"head": head("max", 5)}}),
    "cpu_meanmax_w21": ("dna_classify", {"model": {"head": head("mean_max"), "backbone": {"init_args": {"motif_width": 21}}}}),
    "cpu_meanmax_k5_reg": ("dna_classify", {"trainer": {"max_epochs": 30}, "model": {
        "head": head("mean_max", 5, 0.3), "backbone": {"init_args": {"dropout": 0.2}}}}),
    "gpu_mean": ("dna_classify_gpu", {"model": {"head": head("mean", 0, 0.2)}}),
    "gpu_meanmax_k5": ("dna_classify_gpu", {"model": {"head": head("mean_max", 5, 0.2)}}),
}


def merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in, nested dicts key by key (a new class_path replaces the whole node)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "class_path" not in value:
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_config(name: str, out: Path) -> Path:
    base, changes = CANDIDATES[name]
    config = merge(yaml.safe_load((ROOT / "configs" / f"{base}.yaml").read_text()), changes)
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(job: tuple[str, list[str], str], args) -> None:
    dataset, models, tag = job
    if models[0] == "pretrain":  # ["pretrain", CONFIG]: pre-train, then fine-tune with that recipe
        models = ["pretrain", "--recipe", models[1], *(["--pretrain-args", args.pretrain_args] if args.pretrain_args else [])]
    log = args.out / "logs" / f"{dataset}_{tag}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "bench/dna_benchmarks.py"), "--sets", dataset, "--models", *models,
               "--accelerator", args.accelerator, *(["--data", str(args.data)] if args.data else []), "--work", str(args.work / tag), "--csv", str(args.out / "rows" / f"{tag}__{dataset}.csv")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    print(f"{dataset} {tag}: exit {code}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/dna_search"))
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--baselines", action="store_true", help="also the k-mer LR and the CNN")
    parser.add_argument("--pretrain", nargs="*", default=[], choices=list(CANDIDATES),
                        help="candidates also fine-tuned after pre-training (own sequences; + the E. coli genome for bacteria)")
    parser.add_argument("--pretrain-args", default="", help="dna_benchmarks.py's --pretrain-args, e.g. '--trainer.max_epochs 5'")
    parser.add_argument("--data", type=Path, help="dna_benchmarks.py's --data (the shared data folder)")
    args = parser.parse_args()
    (args.out / "rows").mkdir(parents=True, exist_ok=True)
    jobs = [(s, [str(write_config(name, args.out))], name) for name in args.candidates for s in SETS]
    jobs += [(s, ["pretrain", str(write_config(name, args.out))], f"pretrain_{name}") for name in args.pretrain for s in SETS]
    if args.baselines:
        jobs += [(s, ["kmer", "cnn"], "baselines") for s in SETS]
    # the long jobs (pre-training, then the biggest set) first, so they do not start last
    jobs.sort(key=lambda job: (job[1][0] != "pretrain", job[0] != "mouse_tata"))
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda job: run(job, args), jobs))
    frames = [pd.read_csv(path).assign(job=path.stem.split("__")[0]) for path in sorted((args.out / "rows").glob("*.csv"))]
    rows = pd.concat(frames, ignore_index=True)
    rows["model"] = [Path(str(m)).stem if str(m).endswith(".yaml") else f"{job}: {m}" for m, job in zip(rows["model"], rows["job"])]
    rows.to_csv(args.out / "all_rows.csv", index=False)
    table = rows.pivot_table(index="model", columns="set", values=["val_acc", "test_acc"])
    table["mean_val"] = rows.groupby("model")["val_acc"].mean()
    print(table.sort_values("mean_val", ascending=False).to_string(float_format="%.3f"))


if __name__ == "__main__":
    main()
