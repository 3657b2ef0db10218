"""The default DNA recipe's training options through the CLI: weight averaging (EMA) and shift augmentation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from seqpipe.cli import main
from seqpipe.data.synthetic import make_dna_motif_dataset

RECIPE = Path(__file__).parents[1] / "configs" / "dna_classify.yaml"
SMALL = ["--seed_everything", "0", "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--model.backbone.init_args.d_model", "16", "--data.init_args.batch_size", "16"]
EMA = ["--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging", "--trainer.callbacks.decay=0.9"]


def test_ema_weights_are_the_ones_validated_saved_and_tested(tmp_path):
    """With EMAWeightAveraging the best checkpoint holds the averaged weights (beside the raw ones), and testing it
    on the validation set reproduces the val/acc logged for its epoch: the averaged model is the one validated."""
    data = make_dna_motif_dataset(tmp_path / "dna", seed=2, n_train=120, n_test=60, n_unlabelled=1, length=40)
    sets = ["--data.train", data / "train", "--data.val", data / "test"]
    main([str(a) for a in ["fit", "--config", RECIPE, *SMALL, *EMA, "--data.shift_augment", "2", *sets,
                           "--trainer.default_root_dir", tmp_path / "run"]])
    (version,) = (tmp_path / "run").glob("lightning_logs/version_*")
    checkpoint = torch.load(version / "checkpoints/best.ckpt", weights_only=False)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[name], raw[name]) for name in averaged if averaged[name].is_floating_point())
    logged = pd.read_csv(version / "metrics.csv").dropna(subset=["val/acc"])
    best_val = logged.loc[logged["epoch"] == checkpoint["epoch"], "val/acc"].max()

    main([str(a) for a in ["test", "--config", RECIPE, *SMALL, *sets, "--data.test", data / "test",
                           "--ckpt_path", version / "checkpoints/best.ckpt", "--trainer.default_root_dir", tmp_path / "test"]])
    (metrics,) = (tmp_path / "test").glob("lightning_logs/version_*/metrics.csv")
    assert pd.read_csv(metrics)["test/acc"].dropna().item() == pytest.approx(best_val, abs=1e-6)
