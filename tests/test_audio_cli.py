"""The audio user contract end to end (fit -> test -> predict CSV) and silence-padding invariance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from seqpipe.backbone import Backbone
from seqpipe.cli import main
from seqpipe.model import SequenceModel
from seqpipe.s4 import S4Block
from seqpipe.tasks.classification import SequenceClassification

RECIPE = str(Path(__file__).parents[1] / "configs" / "audio_classify.yaml")
SMALL = ["--model.backbone.d_model", "16", "--model.backbone.n_layers", "1", "--model.backbone.block.init_args.d_state", "8",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def clip(label: str, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A tone, an upward chirp or a noise burst, with a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    if label == "tone":
        wave = np.sin(2 * np.pi * rng.uniform(300, 600) * t)
    elif label == "chirp":
        wave = np.sin(2 * np.pi * np.cumsum(200 + 3000 * t / t[-1]) / rate)
    else:
        wave = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 4 * t) > 0)
    return (0.4 * wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_clips(root: Path, rng: np.random.Generator, per_class: int) -> Path:
    """Class folders of clips at mixed rates, channel counts and formats."""
    for label in ("chirp", "noise", "tone"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            rate, fmt = [(8000, "wav"), (16000, "flac"), (22050, "ogg")][i % 3]
            wave = clip(label, rng.uniform(0.2, 0.6), rate, rng)
            sf.write(root / label / f"{label}{i}.{fmt}", np.stack([wave, 0.8 * wave], 1) if i % 2 else wave, rate)
    return root


def test_fit_test_predict_on_generated_clips(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train, test = write_clips(tmp_path / "train", rng, 8), write_clips(tmp_path / "test", rng, 2)
    predict = tmp_path / "predict"
    predict.mkdir()
    original = clip("chirp", 0.4, 8000, rng)
    sf.write(predict / "chirp.wav", original, 8000, subtype="FLOAT")
    sf.write(predict / "chirp_padded.wav", np.concatenate([original, np.zeros_like(original)]), 8000, subtype="FLOAT")
    sf.write(predict / "tone.ogg", clip("tone", 1.0, 44100, rng), 44100)
    run = tmp_path / "run"
    common = ["--config", RECIPE, *SMALL, "--trainer.default_root_dir", str(run)]
    main(["fit", *common, "--data.train", str(train), "--data.val", str(test), "--data.sample_rate", "8000",
          "--trainer.max_epochs", "2", "--data.batch_size", "8"])
    checkpoint = next(run.glob("lightning_logs/version_0/checkpoints/best.ckpt"))
    main(["test", *common, "--data.train", str(train), "--data.test", str(test), "--ckpt_path", str(checkpoint)])
    assert "test/acc" in capsys.readouterr().out
    # validate without data.val: the training clips' held-out share, as a fit without data.val holds it out
    main(["validate", *common, "--data.train", str(train), "--ckpt_path", str(checkpoint)])
    assert "val/acc" in capsys.readouterr().out
    output = tmp_path / "predictions.csv"
    main(["predict", *common, "--data.predict", str(predict), "--ckpt_path", str(checkpoint), "--prediction.path", str(output)])
    frame = pd.read_csv(output).set_index("id")
    assert list(frame.columns) == ["label", "prob_chirp", "prob_noise", "prob_tone"] and len(frame) == 3
    np.testing.assert_allclose(frame.filter(like="prob_").sum(1), 1, atol=1e-5)
    # the README's other predict input: a manifest of paths alone (no label, no split column)
    (predict / "manifest.csv").write_text("path\nchirp.wav\ntone.ogg\n")
    main(["predict", *common, "--data.predict", str(predict / "manifest.csv"), "--ckpt_path", str(checkpoint),
          "--prediction.path", str(tmp_path / "from_manifest.csv")])
    assert len(pd.read_csv(tmp_path / "from_manifest.csv")) == 2
    same = frame.loc[[str(predict / "chirp.wav"), str(predict / "chirp_padded.wav")]]
    assert same["label"].nunique() == 1
    np.testing.assert_allclose(same.iloc[0, 1:].to_numpy(float), same.iloc[1, 1:].to_numpy(float), atol=1e-5)


def test_a_bad_clip_is_a_clean_cli_error(tmp_path, capsys):
    train = write_clips(tmp_path / "train", np.random.default_rng(1), 2)
    (train / "tone" / "broken.flac").write_bytes(b"not audio at all")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", RECIPE, *SMALL, "--data.train", str(train), "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "broken.flac: cannot read audio header" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 2])
def test_a_clip_with_a_nan_sample_is_one_line_naming_it_from_a_worker_too(tmp_path, capsys, workers):
    train = write_clips(tmp_path / "train", np.random.default_rng(1), 2)
    samples = clip("tone", 0.3, 8000, np.random.default_rng(2))
    samples[100] = np.nan
    sf.write(train / "tone" / "nan.wav", samples, 8000, subtype="FLOAT")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", RECIPE, *SMALL, "--data.train", str(train), "--data.num_workers", str(workers),
              "--trainer.default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"seqpipe: error: {train / 'tone' / 'nan.wav'}: sample 100 " in err


@pytest.mark.parametrize("frontend,bidirectional", [("patch", False), ("conv", False), ("filterbank", False), ("filterbank", True)])
def test_right_padding_in_a_batch_changes_no_prediction(frontend, bidirectional):
    """Float64 model in eval mode: the clip alone, and padded to twice its length beside a longer clip, agree."""
    torch.manual_seed(0)
    block = lambda d: S4Block(d, d_state=8, bidirectional=bidirectional)  # noqa: E731
    backbone = Backbone(d_model=16, n_layers=2, block=block, frontend=frontend, stride=8, frontend_filters=6)
    info = {"input_dim": 1, "label_names": ["a", "b", "c"], "sample_rate": 8000}
    model = SequenceModel(backbone, SequenceClassification(), data_info=info).double().eval()
    wave = torch.randn(1, 1003, 1, dtype=torch.float64)
    batch = {"x": torch.cat([torch.cat([wave, torch.zeros_like(wave)], 1), torch.randn(1, 2006, 1, dtype=torch.float64)]),
             "lengths": torch.tensor([1003, 2006])}
    with torch.no_grad():
        alone = model({"x": wave, "lengths": torch.tensor([1003])})
        torch.testing.assert_close(model(batch)[0], alone[0], rtol=0, atol=1e-10)


def test_resumed_audio_run_reaches_the_weights_of_an_uninterrupted_run(tmp_path):
    """fit stopped by SIGTERM after epoch 0, then ``fit --ckpt_path last``: the training clips are read again
    (the checkpoint's labels kept) and the final weights equal those of one uninterrupted run (on the CPU: GPU
    kernels do not repeat bit for bit)."""
    train = write_clips(tmp_path / "train", np.random.default_rng(0), 4)
    common = ["fit", "--config", RECIPE, *SMALL, "--data.train", str(train), "--data.sample_rate", "8000",
              "--data.batch_size", "4", "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu"]
    main([*common, "--trainer.default_root_dir", str(tmp_path / "a")])
    with pytest.raises(SystemExit) as stopped:
        main([*common, "--trainer.default_root_dir", str(tmp_path / "b"), "--trainer.callbacks+=interrupt_helpers.SigtermAfterEpoch"])
    assert stopped.value.code == 143
    main([*common, "--trainer.default_root_dir", str(tmp_path / "b"), "--ckpt_path", "last"])
    expected = torch.load(tmp_path / "a/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "b/lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] > 0
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=0, atol=1e-6, msg=name)
