"""ETTh1 forecasting on the Time-Series-Library protocol: the recipe(s) beside a ridge baseline and the
published numbers.

    python bench/forecast.py /path/to/ETTh1.csv --pred-lens 96 192 336 720 --recipes forecast forecast_mamba

Protocol: rows 8640/2880/2880, validation and test windows start seq_len (96) rows early, StandardScaler
fit on the training rows, all 7 variables in and out, stride 1, MSE/MAE on the scaled data. Each recipe is
trained with ``seqpipe fit`` from ``configs/<recipe>.yaml`` and scored with ``seqpipe test`` on its best
checkpoint; its wall time is the ``fit`` command's. Every row also records the validation MSE/MAE (the
recipe's at its best checkpoint, the ridge's at its chosen penalty): hyper-parameters are chosen on those,
with ``--fit-only`` (no test run) while searching. Results accumulate in ``--results`` (JSON) so runs can
be split over several invocations; the table is printed from it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from seqpipe.data.tabular_series import read_series
from seqpipe.data.timeseries import split_bounds, training_moments

SPLIT = [8640, 2880, 2880]
SEQ_LEN = 96
# Published ETTh1 (MSE, MAE) at seq_len 96. pred_len 96: the data README; 192-720: the full-results table of
# iTransformer (Liu et al., ICLR 2024, arXiv 2310.06625), which re-ran DLinear, PatchTST and TimesNet at
# seq_len 96 (S-Mamba's longer horizons were not found in a source we could check).
PUBLISHED = {
    "S-Mamba": {96: (0.386, 0.405)},
    "iTransformer": {96: (0.386, 0.405), 192: (0.441, 0.436), 336: (0.487, 0.458), 720: (0.503, 0.491)},
    "DLinear": {96: (0.386, 0.400), 192: (0.437, 0.432), 336: (0.481, 0.459), 720: (0.519, 0.516)},
    "PatchTST": {96: (0.414, 0.419), 192: (0.460, 0.445), 336: (0.501, 0.466), 720: (0.500, 0.488)},
    "TimesNet": {96: (0.384, 0.402), 192: (0.436, 0.429), 336: (0.491, 0.469), 720: (0.521, 0.500)},
}
REPO = Path(__file__).resolve().parents[1]


def windows(values: np.ndarray, start: int, stop: int, pred_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, stop) of a scaled (T, C) array -> every window as (N·C, SEQ_LEN) inputs and (N·C, pred_len)
    futures, one row per (window, variable)."""
    span = SEQ_LEN + pred_len
    view = np.lib.stride_tricks.sliding_window_view(values[start:stop], span, axis=0)  # (N, C, span)
    flat = view.reshape(-1, span)
    return flat[:, :SEQ_LEN], flat[:, SEQ_LEN:]


def ridge_baseline(values: np.ndarray, bounds, pred_len: int) -> dict[str, float]:
    """Closed-form ridge from the window minus its last value to the future minus that value, one map
    shared by all variables (NLinear-like); the penalty is chosen on the validation windows."""
    (train_start, train_stop), (val_start, val_stop), (test_start, test_stop) = bounds
    fit_x, fit_y = windows(values, train_start, train_stop, pred_len)
    val_x, val_y = windows(values, val_start - SEQ_LEN, val_stop, pred_len)
    test_x, test_y = windows(values, test_start - SEQ_LEN, test_stop, pred_len)

    def design(x):
        last = x[:, -1:]
        return np.hstack([x - last, np.ones((len(x), 1))]), last

    a, last = design(fit_x)
    gram, moment = a.T @ a, a.T @ (fit_y - last)
    best = None
    for penalty in (1e-1, 1.0, 10.0, 100.0, 1000.0, 10000.0):
        weights = np.linalg.solve(gram + penalty * np.diag([1.0] * SEQ_LEN + [0.0]), moment)
        va, vlast = design(val_x)
        val_error = va @ weights + vlast - val_y
        val_mse = float(np.mean(val_error**2))
        if best is None or val_mse < best[0]:
            best = (val_mse, float(np.mean(np.abs(val_error))), penalty, weights)
    val_mse, val_mae, penalty, weights = best
    ta, tlast = design(test_x)
    forecast = ta @ weights + tlast
    return {"mse": float(np.mean((forecast - test_y) ** 2)), "mae": float(np.mean(np.abs(forecast - test_y))),
            "val_mse": val_mse, "val_mae": val_mae, "penalty": penalty}


def run_recipe(recipe: str, data: Path, pred_len: int, run_dir: Path, extra: list[str], fit_only: bool = False) -> dict[str, float]:
    """``seqpipe fit`` then ``seqpipe test`` on the best checkpoint: validation and test metrics (test left out
    with ``fit_only``) and the fit's wall time."""
    common = ["--config", str(REPO / "configs" / f"{recipe}.yaml"), "--data.path", str(data),
              "--data.split", json.dumps(SPLIT), "--data.seq_len", str(SEQ_LEN), "--data.pred_len", str(pred_len),
              "--trainer.enable_progress_bar", "false", *extra]
    command = [sys.executable, "-m", "seqpipe.cli"]
    started = time.perf_counter()
    subprocess.run([*command, "fit", *common, "--trainer.default_root_dir", str(run_dir)], check=True)
    wall = time.perf_counter() - started
    checkpoint = sorted(run_dir.glob("**/checkpoints/best.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
    history = pd.read_csv(checkpoint.parents[1] / "metrics.csv").dropna(subset=["val/loss"])
    best = history.loc[history["val/loss"].idxmin()]  # the epoch ModelCheckpoint kept
    result = {"val_mse": float(best["val/mse"]), "val_mae": float(best["val/mae"]), "fit_seconds": wall,
              "epochs": int(history["epoch"].max()) + 1, "best_epoch": int(best["epoch"]) + 1, "extra": extra}
    if fit_only:
        return result
    test_dir = run_dir / "test"
    subprocess.run([*command, "test", *common, "--ckpt_path", str(checkpoint), "--trainer.default_root_dir", str(test_dir)], check=True)
    metrics = pd.read_csv(sorted(test_dir.glob("**/metrics.csv"), key=lambda p: p.stat().st_mtime)[-1])
    row = metrics.dropna(subset=["test/mse"]).iloc[-1]
    return {"mse": float(row["test/mse"]), "mae": float(row["test/mae"]), **result}


def table(results: dict) -> str:
    lines = ["| pred_len | model | test MSE | test MAE | val MSE | val MAE | training wall time |", "|---|---|---|---|---|---|---|"]
    for pred_len in sorted({int(k.split("/")[0]) for k in results}):
        for key, value in sorted(results.items()):
            horizon, name = key.split("/", 1)
            if int(horizon) != pred_len:
                continue
            wall = f"{value['fit_seconds'] / 60:.1f} min ({value['epochs']} epochs)" if "fit_seconds" in value else "closed form"
            cells = " | ".join(f"{value[k]:.3f}" if k in value else "" for k in ("mse", "mae", "val_mse", "val_mae"))
            lines.append(f"| {pred_len} | {name} | {cells} | {wall} |")
        lines += [f"| {pred_len} | {name} (published) | {by_horizon[pred_len][0]:.3f} | {by_horizon[pred_len][1]:.3f} | | | |"
                  for name, by_horizon in PUBLISHED.items() if pred_len in by_horizon]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="ETTh1.csv")
    parser.add_argument("--pred-lens", type=int, nargs="+", default=[96, 192, 336, 720])
    parser.add_argument("--recipes", nargs="*", default=["forecast"], help="configs/<name>.yaml to train")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_forecast"))
    parser.add_argument("--results", type=Path, default=Path("runs/bench_forecast/results.json"))
    parser.add_argument("--fit-only", action="store_true", help="train and record validation metrics, no test run")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further CLI arguments for every recipe")
    args = parser.parse_args()

    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    series = read_series(args.data)
    bounds = split_bounds(len(series), SPLIT)
    mean, std = training_moments(series, bounds[0][1])
    values = (series.read(0, len(series)).astype(np.float64) - mean) / std
    for pred_len in args.pred_lens:
        ridge = ridge_baseline(values, bounds, pred_len)
        if args.fit_only:  # searching: show no test numbers at all
            ridge = {k: v for k, v in ridge.items() if k not in ("mse", "mae")}
        results[f"{pred_len}/ridge (NLinear-like, closed form)"] = ridge
        for recipe in args.recipes:
            results[f"{pred_len}/{recipe}"] = run_recipe(recipe, args.data, pred_len, args.runs / f"{recipe}_{pred_len}", args.extra, args.fit_only)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=1))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
