"""The CLI around a run: checkpoint names and resolution, resume, signals, divergence, bad or untrusted
checkpoints, option typos, help, the tool subcommands, Lightning's noise, and glibc's memory settings."""

from __future__ import annotations

import copy
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from seqpipe.cli import main
from seqpipe.data.synthetic import make_dna_motif_dataset, write_fasta
from test_dna_cli import CONFIG  # the tiny DNA recipe of the CLI tests

TESTS = Path(__file__).parent


def write_config(path: Path, **trainer) -> Path:
    config = copy.deepcopy(CONFIG)
    config["trainer"].update(trainer)
    path.write_text(yaml.safe_dump(config))
    return path


def seqpipe(*args) -> None:
    main([str(a) for a in args])


def exit_code(*args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        seqpipe(*args)
    return exit_info.value.code


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = make_dna_motif_dataset(tmp_path_factory.mktemp("dna"), seed=1, n_train=60, n_test=15, n_unlabelled=5, length=32)
    write_config(root / "config.yaml")
    return root


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory) -> Path:
    """A run directory with one fitted model."""
    root = tmp_path_factory.mktemp("run")
    seqpipe("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--trainer.default_root_dir", root)
    return root


def predict_args(dataset: Path, checkpoint, out: Path) -> list:
    return ["predict", "--config", dataset / "config.yaml", "--data.predict", dataset / "unlabelled.fasta",
            "--ckpt_path", checkpoint, "--prediction.path", out, "--trainer.default_root_dir", out.parent]


def test_fit_names_its_checkpoints_and_best_last_resolve_to_the_newest_run(dataset, tmp_path, capfd):
    root = tmp_path / "run"
    for monitor in ("acc", "mcc"):  # the second fit is version_1: the name must follow it; it keeps the best MCC
        seqpipe("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train",
                "--model.head.init_args.monitor", monitor, "--trainer.default_root_dir", root)
    out = capfd.readouterr().out
    newest = root / "lightning_logs" / "version_1" / "checkpoints"
    assert "best checkpoint (val/acc " in out and "best checkpoint (val/mcc " in out and f"{newest / 'best.ckpt'}" in out
    assert f"last checkpoint: {newest / 'last.ckpt'}" in out

    seqpipe(*predict_args(dataset, "best", root / "predictions.csv"))
    assert f"--ckpt_path best: {newest / 'best.ckpt'}" in capfd.readouterr().out

    assert exit_code(*predict_args(dataset, "last", tmp_path / "elsewhere" / "p.csv")) == 2
    assert "--ckpt_path last: no last.ckpt under" in capfd.readouterr().err


def fit_interrupted_and_resumed(dataset: Path, tmp_path: Path, interrupt: dict, *options,
                                stopped_exit: int = 143) -> tuple[dict, dict, dict]:
    """One fit of 3 epochs, and one stopped by the ``interrupt`` callback (exit ``stopped_exit``) then resumed with
    ``--ckpt_path last``: their final checkpoints and the one the stopped run left."""
    full = write_config(tmp_path / "full.yaml", max_epochs=3)
    interrupted = yaml.safe_load(full.read_text())
    interrupted["trainer"]["callbacks"] = [interrupt]
    (tmp_path / "interrupted.yaml").write_text(yaml.safe_dump(interrupted))
    common = ["--data.train", dataset / "train", *options]

    seqpipe("fit", "--config", full, *common, "--trainer.default_root_dir", tmp_path / "a")
    assert exit_code("fit", "--config", tmp_path / "interrupted.yaml", *common, "--trainer.default_root_dir", tmp_path / "b") == stopped_exit
    stopped = torch.load(tmp_path / "b/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    seqpipe("fit", "--config", full, *common, "--trainer.default_root_dir", tmp_path / "b", "--ckpt_path", "last")

    expected = torch.load(tmp_path / "a/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "b/lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert (resumed["epoch"], resumed["global_step"]) == (expected["epoch"], expected["global_step"]) == (2, 9)
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    return expected, stopped, resumed


def assert_validated_and_resumed_exactly(tmp_path: Path, expected: dict, resumed: dict) -> None:
    """The resumed run (``b``, stopped in epoch 1) validated epochs 1 and 2 as the uninterrupted one (``a``) did, and
    ended with its very weights."""
    whole, resumed_rows = (pd.read_csv(tmp_path / run / "metrics.csv").dropna(subset=["val/loss"]).set_index("epoch")
                           for run in ("a/lightning_logs/version_0", "b/lightning_logs/version_1"))
    assert list(whole.index) == [0, 1, 2] and list(resumed_rows.index) == [1, 2]
    np.testing.assert_allclose(resumed_rows["val/loss"], whole.loc[[1, 2], "val/loss"], rtol=1e-6)
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_resumed_run_reaches_the_weights_of_an_uninterrupted_run(dataset, tmp_path):
    """SIGTERM after epoch 0, then ``fit --ckpt_path last``: the same final weights as one run of 3 epochs
    (same seed, CPU), which needs last.ckpt at the epoch's end and the random state saved with it."""
    interrupt = {"class_path": "interrupt_helpers.SigtermAfterEpoch", "init_args": {"epoch": 0}}
    expected, stopped, resumed = fit_interrupted_and_resumed(dataset, tmp_path, interrupt)
    assert stopped["global_step"] == 3  # the 3 batches of epoch 0
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_run_resumed_mid_epoch_reaches_the_very_weights_of_an_uninterrupted_run(dataset, tmp_path, num_workers):
    """SIGTERM after the second of epoch 1's 3 batches, then ``fit --ckpt_path last``: bit-identical final weights,
    with dropout and augmentation drawing random numbers — the training loader resumes at the batch after the
    last one trained, and the random state is that of the moment it stopped."""
    interrupt = {"class_path": "interrupt_helpers.SigtermAfterStep", "init_args": {"step": 5}}
    expected, stopped, resumed = fit_interrupted_and_resumed(
        dataset, tmp_path, interrupt, "--model.backbone.dropout", "0.2", "--data.shift_augment", "3",
        "--data.num_workers", str(num_workers),
    )
    assert (stopped["epoch"], stopped["global_step"]) == (1, 5)
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_a_fit_stopped_by_ctrl_c_in_validation_validates_that_epoch_when_resumed(dataset, tmp_path):
    """Ctrl-C inside epoch 1's validation (exit 130): the resumed run validates epoch 1 before training epoch 2 (saved
    as they were, Lightning's counters would have it skip that validation), and ends where an uninterrupted run does."""
    interrupt = {"class_path": "interrupt_helpers.CtrlCInValidation", "init_args": {"epoch": 1}}
    expected, stopped, resumed = fit_interrupted_and_resumed(dataset, tmp_path, interrupt, stopped_exit=130)
    assert (stopped["epoch"], stopped["global_step"]) == (1, 6)
    assert_validated_and_resumed_exactly(tmp_path, expected, resumed)


@pytest.mark.parametrize("at_end", [False, True], ids=["inside a batch", "after a batch"])
def test_a_fit_stopped_by_ctrl_c_mid_epoch_validates_that_epoch_when_resumed(dataset, tmp_path, at_end):
    """Ctrl-C inside the second of epoch 1's 3 batches (its dropout drawn, its step not taken) or after it (exit 130):
    the resumed run trains what is left of epoch 1 (the batch it stopped inside again, with the random state it
    started with), then validates epoch 1, and ends with the weights and validation losses of an uninterrupted run."""
    interrupt = {"class_path": "interrupt_helpers.CtrlCInTraining", "init_args": {"step": 4 + at_end, "at_end": at_end}}
    expected, stopped, resumed = fit_interrupted_and_resumed(dataset, tmp_path, interrupt, "--model.backbone.dropout",
                                                             "0.2", stopped_exit=130)
    assert (stopped["epoch"], stopped["global_step"]) == (1, 4 + at_end)
    assert_validated_and_resumed_exactly(tmp_path, expected, resumed)


@pytest.mark.parametrize("earlier_best", [2.0, -1.0])
def test_best_after_a_resume_is_the_best_epoch_of_the_whole_run(dataset, tmp_path, capsys, earlier_best):
    """The earlier run's best val/acc is made unbeatable (2.0) or beaten by anything (-1.0) in its last.ckpt: the
    resumed run's best.ckpt is written only in the second case, and the earlier run's best.ckpt is kept in both."""
    fit = ["fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--trainer.default_root_dir", tmp_path]
    seqpipe(*fit, "--trainer.max_epochs", 2)
    first = tmp_path / "lightning_logs/version_0/checkpoints"
    last = torch.load(first / "last.ckpt", weights_only=True)
    [key] = [k for k in last["callbacks"] if k.startswith("ModelCheckpoint{'monitor': 'val/acc'")]
    last["callbacks"][key]["best_model_score"] = torch.tensor(earlier_best)
    torch.save(last, first / "last.ckpt")
    capsys.readouterr()
    seqpipe(*fit, "--trainer.max_epochs", 3, "--ckpt_path", "last")
    resumed = tmp_path / "lightning_logs/version_1/checkpoints"
    assert (first / "best.ckpt").exists() and (resumed / "best.ckpt").exists() == (earlier_best < 0)
    best = resumed / "best.ckpt" if earlier_best < 0 else first / "best.ckpt"
    out = capsys.readouterr().out
    assert f"): {best}\n" in out and ("best checkpoint (val/acc 2): " in out) == (earlier_best > 0)
    seqpipe("test", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--data.test",
            dataset / "test", "--ckpt_path", "best", "--trainer.default_root_dir", tmp_path)
    assert f"--ckpt_path best: {best}" in capsys.readouterr().out


def test_a_fit_stopped_in_its_last_validation_validates_it_when_resumed_and_names_its_checkpoints(dataset, tmp_path,
                                                                                                   capsys):
    config = write_config(tmp_path / "two.yaml", max_epochs=2)
    stopped = yaml.safe_load(config.read_text())
    stopped["trainer"]["callbacks"] = [{"class_path": "interrupt_helpers.CtrlCInValidation", "init_args": {"epoch": 1}}]
    (tmp_path / "stopped.yaml").write_text(yaml.safe_dump(stopped))
    fit = ["--data.train", dataset / "train", "--trainer.default_root_dir", tmp_path]
    assert exit_code("fit", "--config", tmp_path / "stopped.yaml", *fit) == 130
    capsys.readouterr()
    seqpipe("fit", "--config", config, *fit, "--ckpt_path", "last")
    out = capsys.readouterr().out
    assert "had already ended" not in out and f"last checkpoint: {tmp_path / 'lightning_logs/version_1/checkpoints/last.ckpt'}" in out
    assert pd.read_csv(tmp_path / "lightning_logs/version_1/metrics.csv")["val/loss"].notna().sum() == 1


def test_fit_ckpt_path_last_without_a_run_is_one_line(dataset, tmp_path, capsys):
    assert exit_code("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train",
                     "--trainer.default_root_dir", tmp_path, "--ckpt_path", "last") == 2
    err = capsys.readouterr().err
    assert err.startswith("seqpipe: error: --ckpt_path last: no last.ckpt under") and err.count("\n") == 1


def test_fit_ckpt_path_last_of_a_run_that_ended_says_so_and_writes_no_run(dataset, tmp_path, capsys):
    args = ["fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--trainer.default_root_dir",
            tmp_path, "--trainer.max_epochs", 1]
    seqpipe(*args)
    capsys.readouterr()
    seqpipe(*args, "--ckpt_path", "last")
    last = tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"--ckpt_path {last}: that run had already ended (epochs trained: 1 of trainer.max_epochs 1), so nothing was "
        "trained and no run written; a larger --trainer.max_epochs trains on")
    assert [path.name for path in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]


def wait_for(path_glob: tuple[Path, str], process: subprocess.Popen, timeout: float = 300) -> None:
    directory, pattern = path_glob
    deadline = time.monotonic() + timeout
    while not list(directory.glob(pattern)):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no {pattern} after {timeout} s"
        time.sleep(0.05)


def start_seqpipe(*args) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "seqpipe"), *map(str, args)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal delivers it: a shell's background job (make test &) starts with SIGINT ignored, which the
    # child would inherit through exec
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until_it_catches(process: subprocess.Popen, signum: int, timeout: float = 60.0) -> None:
    """Wait until ``process`` has a handler for ``signum`` (Linux: its SigCgt mask), so that a signal sent then is
    not one that Python's start-up, slow on a loaded machine, would die of before seqpipe runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        status = Path(f"/proc/{process.pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught >> (signum - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"the process did not catch signal {signum} within {timeout} s")


def test_lightning_noise_is_silenced_but_not_everything(dataset, tmp_path):
    """What a user's terminal shows for fit and predict (a subprocess: pytest would capture logs and warnings)."""
    printed = ""
    for args in (["fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train"],
                 ["predict", "--config", dataset / "config.yaml", "--data.predict", dataset / "unlabelled.fasta",
                  "--ckpt_path", "best"]):
        process = start_seqpipe(*args, "--trainer.default_root_dir", tmp_path)
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        printed += out + err
    for noise in ("litlogger", "litmodels", "will override existing callbacks", "dirpath has changed",
                  "No positive samples", "smaller than the logging interval"):
        assert noise not in printed
    assert "`Trainer.fit` stopped" in printed and "predictions written to" in printed  # Lightning's own lines stay


def test_sigterm_mid_fit_stops_with_a_resumable_last_checkpoint_and_exit_143(dataset, tmp_path):
    config = write_config(tmp_path / "long.yaml", max_epochs=10_000, limit_train_batches=2)
    process = start_seqpipe("fit", "--config", config, "--data.train", dataset / "train", "--trainer.default_root_dir", tmp_path)
    wait_for((tmp_path, "lightning_logs/version_0/checkpoints/last.ckpt"), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err[-3000:]
    last = tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt"
    assert f"seqpipe: fit stopped by SIGTERM; {last} resumes it (--ckpt_path last)" in err
    checkpoint = torch.load(last, weights_only=True)
    assert {"optimizer_states", "lr_schedulers", "loops", "callbacks"} <= checkpoint.keys()
    assert checkpoint["epoch"] < 10_000 and "Traceback" not in err and "Received SIGTERM" not in err


@pytest.mark.parametrize(("stop", "status", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_mid_predict_stops_leaving_no_partial_file(dataset, run, tmp_path, stop, status, name):
    records = [(f"q{i}", "ACGT" * 8) for i in range(20_000)]
    many = write_fasta(tmp_path / "many.fasta", records)
    out = tmp_path / "out" / "predictions.csv"
    process = start_seqpipe("predict", "--config", dataset / "config.yaml", "--data.predict", many, "--data.batch_size", 1,
                            "--ckpt_path", "best", "--trainer.default_root_dir", run, "--prediction.path", out)
    wait_for((out.parent, "*.partial"), process)
    process.send_signal(stop)
    _, err = process.communicate(timeout=300)
    assert process.returncode == status, err[-3000:]
    assert f"seqpipe: predict stopped by {name}; nothing was written" in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []


def test_non_finite_loss_stops_the_run_before_a_checkpoint_is_written(dataset, tmp_path, capsys):
    assert exit_code("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train",
                     "--model.lr", "1e30", "--trainer.max_epochs", 3, "--trainer.default_root_dir", tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqpipe: error: train/loss is nan at epoch 0") and "Traceback" not in err
    for checkpoint in tmp_path.rglob("*.ckpt"):
        weights = torch.load(checkpoint, weights_only=True)["state_dict"].values()
        assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point()), checkpoint


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", bytes(range(256))])
def test_unreadable_checkpoint_is_one_line_naming_the_file(dataset, tmp_path, content, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    assert exit_code(*predict_args(dataset, bad, tmp_path / "p.csv")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"seqpipe: error: {bad}: not a readable checkpoint") and err.count("\n") == 1
    assert "weights_only" not in err


class RunsCode:
    """Pickles as a call of os.system: what a doctored checkpoint would hold."""

    def __reduce__(self):
        return os.system, ("true",)


def test_checkpoint_holding_code_is_refused_without_advice_to_load_it_unsafely(dataset, tmp_path, capsys):
    bad = tmp_path / "code.ckpt"
    torch.save({"state_dict": {}, "extra": RunsCode()}, bad)
    assert exit_code(*predict_args(dataset, bad, tmp_path / "p.csv")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"seqpipe: error: {bad}: not a readable checkpoint (it holds something other than tensors and "
                          f"plain data: Trying to load unsupported GLOBAL ") and "system" in err
    assert "weights_only" not in err and err.count("\n") == 1


@pytest.mark.parametrize("kept", [2, 100, -1000, -1])  # bytes kept from the start, or cut from the end
def test_truncated_checkpoint_is_called_truncated(dataset, run, tmp_path, kept, capsys):
    whole = (run / "lightning_logs/version_0/checkpoints/best.ckpt").read_bytes()
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(whole[:kept])
    assert exit_code(*predict_args(dataset, bad, tmp_path / "p.csv")) == 2
    assert capsys.readouterr().err == f"seqpipe: error: {bad}: not a readable checkpoint (the file is truncated or corrupt)\n"
    bad.write_text("not a checkpoint\n")
    assert exit_code(*predict_args(dataset, bad, tmp_path / "p.csv")) == 2
    assert capsys.readouterr().err.endswith(": not a readable checkpoint (not a zip archive, which is what torch.save writes)\n")


def doctored(run: Path, tmp_path: Path, **hparams) -> Path:
    checkpoint = torch.load(run / "lightning_logs/version_0/checkpoints/best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"].update(hparams)
    torch.save(checkpoint, tmp_path / "doctored.ckpt")
    return tmp_path / "doctored.ckpt"


def test_checkpoint_naming_an_untrusted_class_is_refused_before_importing_it(dataset, run, tmp_path, capfd):
    checkpoint = doctored(run, tmp_path, head={"class_path": "this.Head", "init_args": {}})
    sys.modules.pop("this", None)
    assert exit_code(*predict_args(dataset, checkpoint, tmp_path / "p.csv")) == 2
    out, err = capfd.readouterr()
    assert "this" not in sys.modules and "Beautiful is better than ugly" not in out
    assert err.startswith(f"seqpipe: error: {checkpoint}: its model names 'this.Head' (head)")


def test_checkpoint_of_another_task_names_what_it_was_trained_for(dataset, run, tmp_path, capsys):
    checkpoint = doctored(run, tmp_path, head={"class_path": "seqpipe.tasks.forecasting.Forecasting", "init_args": {}},
                          data_info={"input_dim": 3, "horizon": 8, "scaler": {}})
    assert exit_code(*predict_args(dataset, checkpoint, tmp_path / "p.csv")) == 2
    err = capsys.readouterr().err
    assert err == (f"seqpipe: error: {checkpoint}: a checkpoint of a forecasting model (seqpipe.tasks.forecasting.Forecasting), "
                   f"but this config is for a sequence classifier (seqpipe.tasks.classification.SequenceClassification): "
                   f"give a checkpoint of this task, or the config it was trained with\n")


def test_checkpoint_with_arguments_this_version_does_not_take_is_one_line(dataset, run, tmp_path, capsys):
    head = {"class_path": "seqpipe.tasks.classification.SequenceClassification", "init_args": {"colour": "blue"}}
    checkpoint = doctored(run, tmp_path, head=head)
    assert exit_code(*predict_args(dataset, checkpoint, tmp_path / "p.csv")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"seqpipe: error: {checkpoint}: its model arguments do not fit this version of seqpipe (")
    assert "'colour' is not accepted" in err and err.count("\n") == 1


@pytest.mark.parametrize("strand_average,strands", [(True, "average"), (False, "forward")])
def test_checkpoint_saved_with_strand_average_is_read_as_strands(dataset, run, tmp_path, capsys, strand_average,
                                                                  strands):
    """A head saved before ``strands`` replaced ``strand_average`` predicts as the head with ``strands`` of the same
    meaning (one printed line says so), by ``seqpipe predict`` and by the tools' loader."""
    from seqpipe.checkpoints import load_trained_model

    head = {"class_path": "seqpipe.tasks.classification.SequenceClassification",
            "init_args": {"pooling": "mean", "dropout": 0.0, "strand_average": strand_average}}
    old = doctored(run, tmp_path, head=head)
    (tmp_path / "today").mkdir()
    today = doctored(run, tmp_path / "today", head={**head, "init_args": {"pooling": "mean", "strands": strands}})
    seqpipe(*predict_args(dataset, old, tmp_path / "old.csv"))
    assert f"{old}: head argument strand_average={strand_average} of an earlier seqpipe read as strands={strands!r}" \
        in capsys.readouterr().out
    seqpipe(*predict_args(dataset, today, tmp_path / "today" / "today.csv"))
    assert (tmp_path / "old.csv").read_text() == (tmp_path / "today" / "today.csv").read_text()
    assert load_trained_model(old).head.strands == strands


def test_a_retired_backbone_argument_is_dropped_only_where_it_holds_the_built_in_value():
    """An earlier seqpipe's ``complement`` argument of the DNA backbones held the fixed DNA complement (or None):
    dropped then; another table is left for the "arguments do not fit" error."""
    from seqpipe.checkpoints import model_hparams
    from seqpipe.dna_alphabet import DNA_COMPLEMENT

    def saved(complement):
        backbone = {"class_path": "seqpipe.dna_backbones.RCEquivariantBackbone", "init_args": {"d_model": 8, "complement": complement}}
        return model_hparams("old.ckpt", {"hyper_parameters": {"backbone": backbone, "lr": 0.01}})

    for built_in in (None, list(DNA_COMPLEMENT)):
        assert saved(built_in) == {"backbone": {"class_path": "seqpipe.dna_backbones.RCEquivariantBackbone",
                                                "init_args": {"d_model": 8}}, "lr": 0.01}
    assert saved([0, 1, 2, 3, 4, 5])["backbone"]["init_args"]["complement"] == [0, 1, 2, 3, 4, 5]


def test_prediction_path_that_is_a_directory_fails_before_anything_runs(dataset, run, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    args = predict_args(dataset, "best", tmp_path / "p.csv")
    args[args.index("--prediction.path") + 1] = tmp_path / "taken"
    args[args.index("--trainer.default_root_dir") + 1] = run
    assert exit_code(*args) == 2
    captured = capsys.readouterr()
    assert f"--prediction.path {tmp_path / 'taken'}: is a directory" in captured.err
    assert "Restoring states" not in captured.out + captured.err


def test_misspelt_option_is_one_line_with_the_closest_names(dataset, capsys):
    assert exit_code("fit", "--config", dataset / "config.yaml", "--data.max_len", "5") == 2
    err = capsys.readouterr().err
    assert err.startswith("seqpipe: error: --data.max_len is not an option of seqpipe.data.dna.DNAClassificationData; "
                          "did you mean --data.max_length") and err.count("\n") == 1
    assert exit_code("fit", "--config", dataset / "config.yaml", "--model.lrr", "5") == 2
    assert "--model.lrr is not an option; did you mean --model.lr" in capsys.readouterr().err


@pytest.mark.parametrize("option, says", [
    ("--trainer.max_epoch", "--trainer.max_epoch is not an option; did you mean --trainer.max_epochs"),  # no abbreviations
    ("--ckpt", "--ckpt is not an option; did you mean --ckpt_path?"),
])
def test_an_abbreviated_option_is_refused_like_a_misspelt_one(dataset, tmp_path, capsys, option, says):
    assert exit_code("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train",
                     "--trainer.default_root_dir", tmp_path, option, "2") == 2
    assert capsys.readouterr().err.startswith(f"seqpipe: error: {says}")
    assert not (tmp_path / "lightning_logs").exists()


def test_a_value_of_the_wrong_type_is_one_line_naming_the_option_or_file(dataset, tmp_path, capsys):
    fit = ["fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--trainer.default_root_dir", tmp_path]
    for option, value, says in [("--trainer.max_epochs", "two", "--trainer.max_epochs: expected int or null, got 'two'"),
                                ("--data.batch_size", "x", "--data.batch_size: expected int, got 'x'"),
                                ("--model.backbone.init_args.d_model", "1.5", "--model.backbone.d_model: expected int, got '1.5'")]:
        assert exit_code(*fit, option, value) == 2
        assert capsys.readouterr().err == f"seqpipe: error: {says}\n"
    override = tmp_path / "more.yaml"
    override.write_text("trainer:\n  max_epochs: many\n")
    assert exit_code(*fit, "--config", override) == 2
    assert capsys.readouterr().err == f"seqpipe: error: {override}: trainer.max_epochs: expected int or null, got 'many'\n"


def test_a_config_files_misspelt_key_or_broken_yaml_is_one_line_naming_the_file(dataset, tmp_path, capsys):
    config = copy.deepcopy(CONFIG)
    config["trainer"]["max_epocs"] = 1
    config["model"]["head"]["init_args"] = {"poolng": "mean"}
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**config, "model": CONFIG["model"]}))
    assert exit_code("fit", "--config", typo, "--data.train", dataset / "train") == 2
    assert capsys.readouterr().err == (f"seqpipe: error: {typo}: trainer.max_epocs is not an option; did you mean "
                                       "trainer.max_epochs or trainer.max_steps or trainer.min_epochs?\n")
    typo.write_text(yaml.safe_dump({**config, "trainer": CONFIG["trainer"]}))
    assert exit_code("fit", "--config", typo, "--data.train", dataset / "train") == 2
    head = CONFIG["model"]["head"]["class_path"]
    assert capsys.readouterr().err == (f"seqpipe: error: {typo}: poolng (under model.head) is not an option of "
                                       f"{head}; did you mean pooling?\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  callbacks: [a, b\nmodel:\n  lr: 1\n")
    assert exit_code("fit", "--config", dataset / "config.yaml", "--config", broken) == 2
    assert capsys.readouterr().err == (f"seqpipe: error: {broken}, line 3: not valid YAML: expected ',' or ']', but "
                                       "got ':', column 6\n")
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("option, value, says", [
    ("--trainer.max_epochs", "-5", "`max_epochs` must be a non-negative integer or -1. You passed in -5."),
    ("--trainer.devices", "0", "`Trainer(devices='0')` value is not a valid input using cpu accelerator."),
])
def test_trainer_settings_lightning_refuses_are_one_line(dataset, tmp_path, capsys, option, value, says):
    assert exit_code("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train",
                     "--trainer.default_root_dir", tmp_path, "--trainer.accelerator", "cpu", option, value) == 2
    assert capsys.readouterr().err == f"seqpipe: error: Lightning: {says}\n"
    assert list(tmp_path.iterdir()) == []


def test_seqpipe_warnings_print_as_one_line_and_others_as_before(monkeypatch):
    import warnings

    import seqpipe.data.dna
    from seqpipe.cli_messages import seqpipe_warnings_on_one_line

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    before = warnings.formatwarning("other", UserWarning, __file__, 3)
    seqpipe_warnings_on_one_line()
    seqpipe_warnings_on_one_line()  # main() runs once a call; tests call it many times: one wrapper
    assert warnings.formatwarning("x.fa: 2 ids repeat", UserWarning, seqpipe.data.dna.__file__, 329) == (
        "seqpipe: warning: x.fa: 2 ids repeat\n")
    assert warnings.formatwarning("other", UserWarning, __file__, 3) == before


def test_help_with_a_config_lists_the_chosen_classes_options(dataset, capsys):
    assert exit_code("fit", "--config", dataset / "config.yaml", "--help") == 0
    out = capsys.readouterr().out
    for option in ("--trainer.max_epochs", "--data.train", "--data.max_length", "--model.backbone.n_layers", "--model.head.pooling", "d_state"):
        assert option in out, option


def test_tools_are_subcommands_with_help(tmp_path, capsys):
    assert exit_code("--help") == 0
    out = capsys.readouterr().out
    assert "track" in out.split("tools:")[1] and "synthetic" in out.split("tools:")[1]
    assert exit_code("track", "--help") == 0 and capsys.readouterr().out.startswith("usage: seqpipe track")
    assert exit_code("synthetic", "dna-motifs", "--out", tmp_path, "--n_train", 9, "--n_test", 3, "--length", 20) == 0
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["background.fasta", "enhancer_like.fasta", "promoter_like.fasta"]


def test_synthetic_writes_a_whole_set_or_nothing_and_never_into_a_users_folder(tmp_path, capsys, monkeypatch):
    from seqpipe.data import synthetic

    small = ["--n_train", 6, "--n_test", 3, "--length", 20]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "reads.fa").write_text(">r\nACGT\n")
    assert exit_code("synthetic", "dna-motifs", "--out", mine, *small) == 2
    assert f"{mine} exists and is not a seqpipe synthetic dna-motifs set" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["reads.fa"]
    assert exit_code("synthetic", "dna-motifs", "--out", tmp_path / "set", "--length", 5) == 2
    assert capsys.readouterr().err.splitlines() == ["seqpipe: error: --length 5 is too short for the motifs (19 bases)"]
    assert not (tmp_path / "set").exists() and not (tmp_path / "set.partial").exists()

    def interrupted(*args, **kwargs):
        (tmp_path / "set.partial" / "train").mkdir()
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "make_dna_motif_dataset", interrupted)
        assert exit_code("synthetic", "dna-motifs", "--out", tmp_path / "set", *small) == 130
    assert not (tmp_path / "set").exists() and not (tmp_path / "set.partial").exists()
    for _ in range(2):  # written, then replaced by the same command
        assert exit_code("synthetic", "dna-motifs", "--out", tmp_path / "set", *small) == 0
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == [".seqpipe-output", "test", "train", "unlabelled.fasta"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_command_keeps_freed_memory_with_glibc_unless_the_user_set_malloc():
    """``seqpipe`` sets glibc's mmap and trim thresholds (keep_freed_memory): mallopt accepts every setting, in a
    process of its own, where nothing else set them; a user's MALLOC_MMAP_THRESHOLD_ stays in force."""
    from seqpipe.cli import MALLOC_SETTING_VARIABLES

    code = "from seqpipe.cli import keep_freed_memory; print(keep_freed_memory())"
    environment = {name: value for name, value in os.environ.items() if name not in MALLOC_SETTING_VARIABLES}
    for user_setting, applied in (({}, "True"), ({"MALLOC_MMAP_THRESHOLD_": "1048576"}, "False")):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**environment, **user_setting})
        assert run.stdout == applied + "\n"


@pytest.mark.parametrize("given,added", [([], True), (["lightning.pytorch.callbacks.EarlyStopping"], True),
                                         (["lightning.pytorch.callbacks.TQDMProgressBar"], False)],
                         ids=["no callbacks", "a recipe's callback", "the user's progress bar"])
def test_the_rich_progress_bar_joins_a_recipes_callbacks_unless_one_is_given(given, added):
    from types import SimpleNamespace

    from jsonargparse import Namespace

    from seqpipe.cli import SeqpipeCLI

    trainer = Namespace(logger=False, enable_progress_bar=None, callbacks=[Namespace(class_path=c) for c in given] or None)
    SeqpipeCLI.before_instantiate_classes(SimpleNamespace(subcommand="fit", config=Namespace(fit=Namespace(trainer=trainer))))
    names = [callback.class_path for callback in trainer.callbacks]
    assert names == [*given, "lightning.pytorch.callbacks.RichProgressBar"] if added else names == given


def test_model_options_unlike_the_checkpoints_are_said_to_be_unused(dataset, run, tmp_path, recwarn):
    seqpipe(*predict_args(dataset, "best", tmp_path / "same.csv"), "--trainer.default_root_dir", run)
    assert not [w for w in recwarn if "are not used" in str(w.message)]
    seqpipe(*predict_args(dataset, "best", tmp_path / "same.tsv"), "--trainer.default_root_dir", run)  # by its name
    assert pd.read_csv(tmp_path / "same.tsv", sep="\t").equals(pd.read_csv(tmp_path / "same.csv"))
    d_model = CONFIG["model"]["backbone"]["d_model"]
    with pytest.warns(UserWarning, match=rf"the model is the checkpoint's, so these options of the command line "
                                         rf"are not used: --model.backbone.init_args.d_model {2 * d_model} \(checkpoint: {d_model}\)"):
        seqpipe(*predict_args(dataset, "best", tmp_path / "other.csv"), "--trainer.default_root_dir", run,
                "--model.backbone.init_args.d_model", 2 * d_model)
    assert pd.read_csv(tmp_path / "other.csv").equals(pd.read_csv(tmp_path / "same.csv"))
    with pytest.warns(UserWarning, match=r"are not used: --model.lr 0.5 \(checkpoint: .*\)$"):  # any model option
        seqpipe(*predict_args(dataset, "best", tmp_path / "lr.csv"), "--trainer.default_root_dir", run, "--model.lr", 0.5)
    recwarn.clear()  # a recipe's own value, unlike a run's override, is replaced without a word
    wider = yaml.safe_load((dataset / "config.yaml").read_text())
    wider["model"]["backbone"]["d_model"] = 2 * d_model
    (tmp_path / "wider.yaml").write_text(yaml.safe_dump(wider))
    args = predict_args(dataset, "best", tmp_path / "recipe.csv")
    args[args.index(dataset / "config.yaml")] = tmp_path / "wider.yaml"
    seqpipe(*args, "--trainer.default_root_dir", run)
    assert not [w for w in recwarn if "are not used" in str(w.message)]


def test_a_head_module_that_needs_a_missing_package_is_not_sent_to_another_folder():
    from seqpipe.checkpoints import arguments_do_not_fit

    reason = "Parser key \"module.head\": Problem with given class_path '{}': No module named '{}'"
    own = arguments_do_not_fit("m.ckpt", ValueError(reason.format("myheads.Head", "myheads")))
    assert "its module 'myheads' cannot be imported here: run from the folder that holds myheads" in str(own)
    dependency = arguments_do_not_fit("m.ckpt", ValueError(reason.format("myheads.Head", "fancy_attention")))
    assert str(dependency) == ("m.ckpt: its model uses myheads.Head, whose module needs 'fancy_attention', which is "
                               "not installed here")


def test_a_users_model_checkpoint_runs_beside_seqpipes_and_checkpointing_can_be_turned_off(dataset, tmp_path):
    mine = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(tmp_path / "mine"), "monitor": "val/loss", "filename": "lowest-loss"}}
    config = write_config(tmp_path / "mine.yaml", callbacks=[mine])
    seqpipe("fit", "--config", config, "--data.train", dataset / "train", "--trainer.default_root_dir", tmp_path / "a")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["lowest-loss.ckpt"]
    assert sorted(p.name for p in (tmp_path / "a").glob("lightning_logs/version_0/checkpoints/*")) == ["best.ckpt", "last.ckpt"]
    seqpipe("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--trainer.default_root_dir",
            tmp_path / "b", "--trainer.enable_checkpointing", "false")
    assert not list((tmp_path / "b").rglob("*.ckpt"))


def test_runs_without_a_logger_or_with_a_named_one_keep_their_checkpoints_and_best_finds_them(dataset, tmp_path, capsys):
    fit = ["fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--trainer.default_root_dir", tmp_path]
    for _ in range(2):  # the second run does not write over the first
        seqpipe(*fit, "--trainer.logger", "false")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.ckpt")) == [
        "checkpoints/version_0/best.ckpt", "checkpoints/version_0/last.ckpt",
        "checkpoints/version_1/best.ckpt", "checkpoints/version_1/last.ckpt"]
    capsys.readouterr()
    seqpipe(*predict_args(dataset, "best", tmp_path / "p.csv"), "--trainer.default_root_dir", tmp_path, "--trainer.logger", "false")
    assert f"--ckpt_path best: {tmp_path / 'checkpoints/version_1/best.ckpt'}" in capsys.readouterr().out
    named = tmp_path / "named"
    seqpipe(*fit[:-1], named, "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", named, "--trainer.logger.name", "exp1")
    seqpipe(*predict_args(dataset, "best", tmp_path / "q.csv"), "--trainer.default_root_dir", named)
    assert f"--ckpt_path best: {named / 'exp1/version_0/checkpoints/best.ckpt'}" in capsys.readouterr().out


def test_predict_on_several_processes_is_refused_before_anything_runs(dataset, run, tmp_path, capsys):
    args = [*predict_args(dataset, "best", tmp_path / "p.csv"), "--trainer.default_root_dir", run,
            "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    assert exit_code(*args) == 2
    assert "predict writes one output in input order, from one process; this trainer has 2" in capsys.readouterr().err
    assert not list(tmp_path.glob("p*.csv"))


def test_settings_lightning_refuses_are_one_line(dataset, tmp_path, capsys):
    fit = ["fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--trainer.default_root_dir", tmp_path]
    assert exit_code(*fit, "--trainer.strategy", "bogus") == 2
    assert capsys.readouterr().err.splitlines() == [
        "seqpipe: error: Lightning: You selected an invalid strategy name: "
        "`strategy='bogus'`. It must be either a string or an instance of `lightning.pytorch.strategies.Strategy`. "
        "Example choices: auto, ddp, ddp_spawn, deepspeed, ... Find a complete list of options in our documentation at "
        "https://lightning.ai"]
    stopping = {"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {"monitor": "val/nosuch"}}
    assert exit_code("fit", "--config", write_config(tmp_path / "es.yaml", callbacks=[stopping]), *fit[3:]) == 2
    err = capsys.readouterr().err
    assert "seqpipe: error: EarlyStopping: Early stopping conditioned on metric `val/nosuch` which is not available" in err
    assert "Traceback" not in err


def test_a_checkpoint_saved_from_python_that_the_config_does_not_fit_is_one_line(dataset, run, tmp_path, capsys):
    checkpoint = torch.load(next(run.glob("lightning_logs/version_*/checkpoints/best.ckpt")), weights_only=False)
    for key in ("backbone", "head"):  # as a model built in Python saves it
        checkpoint["hyper_parameters"].pop(key)
    torch.save(checkpoint, tmp_path / "python.ckpt")
    wider = write_config(tmp_path / "wider.yaml")
    config = yaml.safe_load(wider.read_text())
    config["model"]["backbone"]["d_model"] *= 2
    wider.write_text(yaml.safe_dump(config))
    args = ["predict", "--config", wider, "--data.predict", dataset / "unlabelled.fasta", "--ckpt_path", tmp_path / "python.ckpt",
            "--prediction.path", tmp_path / "p.csv", "--trainer.default_root_dir", tmp_path]
    assert exit_code(*args) == 2
    err = capsys.readouterr().err
    assert "the checkpoint's weights do not fit the model the config builds" in err and "Traceback" not in err


def test_ctrl_c_while_the_command_imports_its_libraries_is_one_line(monkeypatch, capsys):
    """The ``seqpipe`` entry point imports the command line inside: a KeyboardInterrupt there (Ctrl-C while torch and
    Lightning load) ends in one line and exit status 130."""
    from seqpipe import command

    class InterruptedImport:
        def find_spec(self, name, path=None, target=None):
            if name == "seqpipe.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "seqpipe.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as stop:
        command.main(["fit", "--help"])
    assert stop.value.code == 130
    assert capsys.readouterr().err == "seqpipe: stopped by Ctrl-C while starting; nothing was run\n"


def test_a_fit_without_an_end_is_one_line_and_leaves_no_run(dataset, tmp_path, capsys):
    """trainer.max_epochs -1 (Lightning's "no limit") gives the learning-rate schedule no end: one error line, before
    any training, and the run folder the logger made is removed."""
    assert exit_code("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train",
                     "--trainer.max_epochs", "-1", "--trainer.default_root_dir", tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqpipe: error: trainer.max_epochs -1 with no trainer.max_steps sets no end to training")
    assert err.count("\n") == 1 and not list(tmp_path.rglob("*.yaml"))


def test_a_fit_without_validation_says_it_has_no_best_checkpoint(dataset, tmp_path, capsys):
    seqpipe("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train", "--trainer.max_epochs", 1,
            "--trainer.limit_val_batches", 0, "--trainer.default_root_dir", tmp_path)
    out = capsys.readouterr().out
    assert "no best checkpoint: val/acc was never logged (no validation ran); --ckpt_path best has nothing to use" in out
    assert f"last checkpoint: {tmp_path / 'lightning_logs/version_0/checkpoints/last.ckpt'}" in out


def test_a_plug_in_module_with_a_syntax_error_is_one_line_naming_its_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "badheads.py").write_text("import torch\ndef broken(:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "badheads", raising=False)
    demo = Path(__file__).parents[1] / "configs" / "demo.yaml"
    assert exit_code("fit", "--config", demo, "--data.train", tmp_path, "--model.head", "badheads.Head") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"seqpipe: error: {tmp_path / 'badheads.py'}, line 2: invalid "
                                                         "syntax: a module your config or command line names cannot be imported")


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_leaves_the_last_good_one(dataset, tmp_path, capsys,
                                                                                        monkeypatch):
    """A full disk at the second epoch's checkpoint: one line naming the file and the cause, exit 2, and the first
    epoch's last.ckpt whole (it was written into last.ckpt.partial and renamed; a failed write leaves no partial)."""
    import lightning.fabric.plugins.io.torch_io as torch_io

    real_save, saves = torch_io._atomic_save, []

    def disk_full_at_the_third_save(checkpoint, path):  # best and last of epoch 0, then the disk is full
        saves.append(path)
        if len(saves) > 2:
            Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise OSError(28, "No space left on device")
        real_save(checkpoint, path)

    monkeypatch.setattr(torch_io, "_atomic_save", disk_full_at_the_third_save)
    assert exit_code("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train",
                     "--trainer.max_epochs", 3, "--trainer.default_root_dir", tmp_path) == 2
    last = tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt"
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("seqpipe: error: ") and "the checkpoint could not be written (No space left on device)" in err
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert not list(last.parent.glob("*.partial"))


def test_ctrl_c_while_the_command_line_is_read_is_one_line(monkeypatch, capsys):
    """Ctrl-C after the imports but before the trainer runs (the config parsed, the model built) ends in one line and
    exit status 130, as during the imports."""
    from seqpipe import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_make_cli", interrupted)
    assert exit_code("fit", "--config", "x.yaml") == 130
    assert capsys.readouterr().err == "seqpipe: stopped by Ctrl-C while starting; nothing was run\n"


def test_sigterm_while_the_command_starts_is_one_line_and_exit_143(dataset, tmp_path):
    """SIGTERM while torch and Lightning load (before Lightning takes the signal): one line and 143, no silent death."""
    process = start_seqpipe("fit", "--config", dataset / "config.yaml", "--data.train", dataset / "train",
                            "--trainer.default_root_dir", tmp_path)
    wait_until_it_catches(process, signal.SIGTERM)  # its handler is in place: the imports, which take seconds, follow
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "seqpipe: stopped by SIGTERM while starting; nothing was run"
    assert not list(tmp_path.iterdir())


def test_running_out_of_memory_is_one_line_saying_what_to_lower():
    from seqpipe.cli import _user_error

    error = _user_error(RuntimeError("[enforce fail at alloc_cpu.cpp:119] data. DefaultCPUAllocator: can't allocate "
                                     "memory: you tried to allocate 1036800000 bytes. Error code 12"))
    assert str(error).startswith("out of memory ([enforce fail") and "--data.batch_size" in str(error)
    assert "--model.chunk_size" in str(_user_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")))
