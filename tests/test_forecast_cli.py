"""The forecasting user contract end to end: fit -> test prints test/mse -> predict writes CSV + PNG."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from seqpipe.cli import main
from seqpipe.data.synthetic import make_sine_series

CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 1
  limit_train_batches: 8
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: seqpipe.tasks.forecast_plot.ForecastPlot
model:
  backbone:
    d_model: 16
    n_layers: 1
    frontend: patch
    stride: 8
    block:
      class_path: seqpipe.mamba.MambaBlock
      init_args:
        d_state: 4
  head:
    class_path: seqpipe.tasks.forecasting.Forecasting
    init_args:
      readout: last
      loss:
        class_path: seqpipe.tasks.forecast_losses.{loss}
data:
  class_path: seqpipe.data.timeseries.ForecastData
  init_args:
    batch_size: 32
"""


@pytest.mark.parametrize("loss, data_file", [("PointForecast", "series.csv"), ("QuantileForecast", "series.zarr")])
def test_fit_test_predict(tmp_path, capsys, loss, data_file):
    data = make_sine_series(tmp_path / "data", seed=5, rows=500, n_columns=2) / data_file
    config = tmp_path / "forecast.yaml"
    config.write_text(CONFIG.format(loss=loss))
    run = tmp_path / "run"
    common = ["--config", str(config), "--data.path", str(data), "--data.split", "[0.7, 0.1, 0.2]"]
    main(["fit", *common, "--data.seq_len", "32", "--data.pred_len", "12", "--trainer.default_root_dir", str(run)])
    (checkpoint,) = run.glob("**/checkpoints/best.ckpt")

    main(["test", *common, "--data.seq_len", "32", "--data.pred_len", "12", "--ckpt_path", str(checkpoint),
          "--trainer.default_root_dir", str(tmp_path / "test")])
    printed = capsys.readouterr().out
    for metric in ("test/mse", "test/mae", "test/mse_orig", "test/mae_orig") + (("test/crps", "test/coverage") if loss != "PointForecast" else ()):
        assert metric in printed
    if loss == "PointForecast":  # other window lengths on the command line are said not to be used
        with pytest.warns(UserWarning, match=r"these options of the command line are not used: --data.seq_len 48 "
                                             r"\(checkpoint: 32\); --data.pred_len 6 \(checkpoint: 12\)$"):
            main(["test", *common, "--data.seq_len", "48", "--data.pred_len", "6", "--ckpt_path", str(checkpoint),
                  "--trainer.default_root_dir", str(tmp_path / "test")])

    # predict: only the file and the checkpoint; lengths, scaler and frequency come from the checkpoint
    out = tmp_path / "forecast.csv"
    main(["predict", "--config", str(config), "--data.path", str(data), "--ckpt_path", str(checkpoint),
          "--prediction.path", str(out), "--trainer.default_root_dir", str(tmp_path / "predict")])
    frame = pd.read_csv(out, parse_dates=["timestamp"])
    assert len(frame) == 12 * 2 and set(frame["variable"]) == {"v0", "v1"}
    last = pd.Timestamp("2021-01-01") + pd.Timedelta(hours=499)
    assert sorted(frame["timestamp"].unique()) == list(pd.date_range(last, periods=13, freq="h")[1:])
    assert frame["forecast"].notna().all()
    if loss == "QuantileForecast":
        assert (frame["q0.1"] <= frame["q0.9"]).all()
    png = out.with_suffix(".png")
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if loss != "PointForecast":
        return
    # predicting again replaces seqpipe's own CSV and PNG; a user's file at the output path stops the run
    # before any prediction, and survives
    again = ["predict", "--config", str(config), "--data.path", str(data), "--ckpt_path", str(checkpoint),
             "--prediction.path", str(out), "--trainer.default_root_dir", str(tmp_path / "predict")]
    out.write_text("stale")
    with pytest.raises(SystemExit) as exit_info:
        main(again)
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == (
        f"seqpipe: error: {out} was written by seqpipe as a predictions CSV but changed since: refusing to replace it "
        "(move it away or choose another output path)")
    assert out.read_text() == "stale"
    out.unlink()
    main(again)
    main(again)
    assert len(pd.read_csv(out)) == 12 * 2 and not list(tmp_path.glob("forecast.*.partial"))
    # a .png path would be the CSV's and the plot's: refused before any prediction
    with pytest.raises(SystemExit):
        main([*again[:-4], "--prediction.path", str(tmp_path / "plot.png"), *again[-2:]])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"seqpipe: error: --prediction.path {tmp_path / 'plot.png'}: a forecast's plot is written beside the "
        f"predictions as .png; give the predictions another name (e.g. {tmp_path / 'plot.csv'})")
    assert not (tmp_path / "plot.png").exists()


def test_bad_data_exits_with_a_message(tmp_path, capsys):
    frame = make_sine_series(tmp_path, seed=1, rows=120, n_columns=2) / "series.csv"
    table = pd.read_csv(frame)
    table.loc[30, "v1"] = None
    table.to_csv(frame, index=False)
    config = tmp_path / "forecast.yaml"
    config.write_text(CONFIG.format(loss="PointForecast"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--data.path", str(frame), "--data.seq_len", "16", "--data.pred_len", "8",
              "--trainer.default_root_dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "1 missing value in column(s) ['v1'] at row 30 (line 32)" in capsys.readouterr().err
    truncated = tmp_path / "series.csv.gz"  # a compressed CSV cut short: one line, no run folder left
    truncated.write_bytes(gzip.compress(frame.read_bytes())[:300])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--data.path", str(truncated), "--trainer.default_root_dir", str(tmp_path / "gz")])
    assert exit_info.value.code == 2
    assert f"{truncated}: cannot be read as CSV (a truncated or damaged compressed file?)" in capsys.readouterr().err
    assert not list((tmp_path / "gz").rglob("*.yaml"))


def test_predict_writes_timestamps_with_their_utc_offset(tmp_path):
    """Daylight saving changes the offset within the file: fit and predict read it in UTC and say so."""
    local = pd.date_range("2021-03-25", periods=200, freq="h", tz="Europe/Berlin")
    data = tmp_path / "berlin.csv"
    pd.DataFrame({"date": local.strftime("%Y-%m-%dT%H:%M:%S%z"), "v0": range(200)}).to_csv(data, index=False)
    config = tmp_path / "forecast.yaml"
    config.write_text(CONFIG.format(loss="PointForecast"))
    run, out = tmp_path / "run", tmp_path / "forecast.csv"
    main(["fit", "--config", str(config), "--data.path", str(data), "--data.seq_len", "32", "--data.pred_len", "12",
          "--trainer.default_root_dir", str(run)])
    main(["predict", "--config", str(config), "--data.path", str(data), "--ckpt_path", "best", "--prediction.path", str(out),
          "--trainer.default_root_dir", str(run)])
    assert pd.read_csv(out)["timestamp"].iloc[0] == str(local[-1].tz_convert("UTC") + pd.Timedelta("1h"))
    assert out.with_suffix(".png").exists()


def test_a_forecast_stopped_by_ctrl_c_mid_epoch_resumes_with_early_stopping(tmp_path):
    """The forecasting recipe's EarlyStopping needs every epoch's val/loss: after Ctrl-C inside an epoch's batch,
    the resumed run validates that epoch and ends with the weights of an uninterrupted run."""
    import torch
    import yaml

    data = make_sine_series(tmp_path / "data", seed=5, rows=500, n_columns=2) / "series.csv"
    config = yaml.safe_load(CONFIG.format(loss="PointForecast"))
    config["trainer"].update(max_epochs=3, limit_train_batches=3, callbacks=[
        {"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {"monitor": "val/loss", "patience": 5}}])
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(config))
    config["trainer"]["callbacks"].append({"class_path": "interrupt_helpers.CtrlCInTraining", "init_args": {"step": 4}})
    (tmp_path / "stopped.yaml").write_text(yaml.safe_dump(config))
    common = ["--data.path", str(data), "--data.split", "[0.7, 0.1, 0.2]", "--data.seq_len", "32", "--data.pred_len", "12"]
    main(["fit", "--config", str(tmp_path / "full.yaml"), *common, "--trainer.default_root_dir", str(tmp_path / "a")])
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(tmp_path / "stopped.yaml"), *common, "--trainer.default_root_dir", str(tmp_path / "b")])
    assert stopped.value.code == 130
    main(["fit", "--config", str(tmp_path / "full.yaml"), *common, "--trainer.default_root_dir", str(tmp_path / "b"),
          "--ckpt_path", "last"])
    expected, resumed = (torch.load(tmp_path / run / "checkpoints/last.ckpt", weights_only=True)
                         for run in ("a/lightning_logs/version_0", "b/lightning_logs/version_1"))
    assert resumed["global_step"] == expected["global_step"] == 9
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
