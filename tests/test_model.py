"""SequenceModel: binding from data_info, optimizer groups, schedule, checkpoint round trip."""

from __future__ import annotations

from unittest import mock

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, Timer
from torch.utils.data import DataLoader

from seqpipe.backbone import Backbone
from seqpipe.contracts import DataInfo
from seqpipe.mamba import MambaBlock
from seqpipe.model import SequenceModel
from seqpipe.tasks.classification import SequenceClassification, pool

INFO = {"vocab_size": 6, "label_names": ["a", "b", "c"]}


class RandomTokens(L.LightningDataModule):
    """Random token sequences whose label is the most frequent of tokens 1..3 (learnable, not constant)."""

    def __init__(self, n: int = 48, length: int = 24):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randint(1, 6, (n, length), generator=generator)
        counts = torch.stack([(self.x == token).sum(1) for token in (1, 2, 3)], 1)
        self.y = counts.argmax(1)
        self.lengths = torch.randint(length // 2, length + 1, (n,), generator=generator)

    def setup(self, stage: str) -> None:
        self.data_info = DataInfo.from_dict(INFO)

    def _loader(self):
        items = [{"x": x, "y": y, "lengths": n, "ids": f"r{i}"} for i, (x, y, n) in enumerate(zip(self.x, self.y, self.lengths))]
        return DataLoader(items, batch_size=16)

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = _loader


def make_model(**kwargs) -> SequenceModel:
    backbone = Backbone(d_model=16, n_layers=2, block=lambda d: MambaBlock(d, d_state=4, scan_backend="ref"))
    return SequenceModel(backbone, SequenceClassification(), **kwargs)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, enable_progress_bar=False, logger=False, enable_model_summary=False, **kwargs)


def test_pool_respects_lengths():
    features = torch.randn(2, 5, 3)
    lengths = torch.tensor([2, 5])
    torch.testing.assert_close(pool(features, lengths, "mean")[0], features[0, :2].mean(0))
    torch.testing.assert_close(pool(features, lengths, "mean")[1], features[1].mean(0))
    torch.testing.assert_close(pool(features, lengths, "last")[0], features[0, 1])


def optimizer_setup(model: SequenceModel, tmp_path, total_steps: int) -> dict:
    """``model.configure_optimizers()`` as if a fit of ``total_steps`` optimizer steps were starting."""
    model.trainer = trainer(tmp_path)
    with mock.patch.object(L.Trainer, "estimated_stepping_batches", new_callable=mock.PropertyMock, return_value=total_steps):
        return model.configure_optimizers()


def test_weight_decay_skips_marked_parameters_biases_and_norms(tmp_path):
    model = make_model(data_info=INFO, weight_decay=0.3)
    optimizer = optimizer_setup(model, tmp_path, 10)["optimizer"]
    decayed, not_decayed = (set(map(id, group["params"])) for group in optimizer.param_groups)
    block = model.backbone.layers[0].mixer
    for param in (block.A_log, block.D, block.dt_bias, block.conv_bias, model.backbone.norm.weight):
        assert id(param) in not_decayed
    for param in (block.in_proj.weight, block.x_proj.weight, block.out_proj.weight):
        assert id(param) in decayed
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.3, 0.0]


def test_schedule_warms_up_then_decays_to_the_floor(tmp_path):
    model = make_model(data_info=INFO, lr=1.0, warmup_fraction=0.2, min_lr_ratio=0.1)
    scheduler = optimizer_setup(model, tmp_path, 100)["lr_scheduler"]["scheduler"]
    factors = []
    for _ in range(100):
        factors.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert factors[0] < factors[10] < factors[20]
    assert max(factors) == pytest.approx(1.0, abs=0.05)
    assert factors[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in zip(factors[20:], factors[21:]))


class EpochClock(Timer):
    """trainer.max_time of ``duration`` seconds on a clock that reads ``first`` seconds for the first epoch begun and
    ``then`` for every later one."""

    def __init__(self, duration: float, first: float, then: float | None = None):
        super().__init__(duration={"seconds": duration})
        self.first, self.then, self.epochs_begun = first, first if then is None else then, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs_begun += 1

    def time_elapsed(self, stage: str = "train") -> float:
        return self.first + self.then * (self.epochs_begun - 1) if self.epochs_begun else 0.0


class SaveAfterSecondEpoch(Callback):
    def __init__(self, path):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            trainer.save_checkpoint(self.path)


def test_max_time_fits_the_epochs_and_the_schedule_to_it_and_resuming_keeps_them(tmp_path, caplog):
    model = make_model(lr=1.0, min_lr_ratio=0.1)
    fit = trainer(tmp_path, max_epochs=20, callbacks=[EpochClock(35, 10), SaveAfterSecondEpoch(tmp_path / "epoch1.ckpt")])
    with caplog.at_level("INFO"):
        fit.fit(model, RandomTokens())  # 3 batches an epoch; 10 s of 35 for the first leave 2 more epochs
    assert fit.current_epoch == 3 and fit.global_step == 9
    assert "trains 3 of its 20 epochs" in caplog.text
    assert fit.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.1)  # the cosine's end
    # resumed after the second epoch under a trainer without max_time: the same 3 epochs, the same schedule
    resumed = trainer(tmp_path / "resumed", max_epochs=20)
    resumed.fit(make_model(lr=1.0, min_lr_ratio=0.1), RandomTokens(), ckpt_path=tmp_path / "epoch1.ckpt")
    assert resumed.current_epoch == 3 and resumed.global_step == 9
    assert resumed.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.1)
    # the finished run resumed asking for another trainer.max_epochs: it trains on to it, the cosine over 6 epochs
    caplog.clear()
    fit.save_checkpoint(tmp_path / "end.ckpt")
    on = trainer(tmp_path / "on", max_epochs=6)
    with caplog.at_level("INFO"):
        on.fit(make_model(lr=1.0, min_lr_ratio=0.1), RandomTokens(), ckpt_path=tmp_path / "end.ckpt")
    assert "trained 3 of its 20 epochs (what fit its trainer.max_time); with trainer.max_epochs 6 training goes on" in caplog.text
    assert on.current_epoch == 6 and on.global_step == 18
    assert on.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.1)  # the end of the 6-epoch cosine
    # ... and with trainer.max_time still set: a new budget (the checkpoint's spent time dropped), the epochs that fit
    # it counted after this run's first epoch (10 s of 35: 2 more), the cosine ending with the last of them
    caplog.clear()
    clock = EpochClock(35, 10)
    timed_on = trainer(tmp_path / "timed_on", max_epochs=30, callbacks=[clock])
    with caplog.at_level("INFO"):
        timed_on.fit(make_model(lr=1.0, min_lr_ratio=0.1), RandomTokens(), ckpt_path=tmp_path / "end.ckpt")
    assert clock._offset == 0 and "its first epoch took 10 s, so this run trains 6 of its 30 epochs" in caplog.text
    assert timed_on.current_epoch == 6 and timed_on.global_step == 18
    assert timed_on.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.1)


def test_max_time_says_how_long_a_short_first_epoch_took(tmp_path, caplog):
    fit = trainer(tmp_path, max_epochs=20, callbacks=[EpochClock(1.5, 0.42)])
    with caplog.at_level("INFO"):
        fit.fit(make_model(), RandomTokens())
    assert "the first epoch took 0.42 s, so this run trains 3 of its 20 epochs" in caplog.text


def test_max_time_keeps_one_epoch_after_the_head_warm_up(tmp_path):
    fit = trainer(tmp_path, max_epochs=20, callbacks=[EpochClock(35, 20, 1)])  # by the first epoch, 1 fits
    fit.fit(make_model(lr=1.0, min_lr_ratio=0.1, head_warmup_epochs=2), RandomTokens())
    assert fit.current_epoch == 3


def test_max_time_that_holds_every_epoch_changes_nothing(tmp_path):
    fit = trainer(tmp_path, max_epochs=3, callbacks=[EpochClock(100, 10)])
    fit.fit(make_model(lr=1.0, min_lr_ratio=0.1), RandomTokens())
    assert fit.current_epoch == 3 and fit.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.1)


def test_fit_binds_from_data_and_checkpoint_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = make_model()
    data = RandomTokens()
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(model, data)
    assert model.hparams["data_info"] == INFO
    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["data_info"] == INFO

    restored = SequenceModel(make_model().backbone, SequenceClassification(), data_info=checkpoint["hyper_parameters"]["data_info"])
    restored.load_state_dict(checkpoint["state_dict"])
    batch = next(iter(data.test_dataloader()))
    model.eval(), restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(batch), model(batch))
    frame = restored.predict_step(batch, 0)
    assert list(frame.columns) == ["id", "label", "prob_a", "prob_b", "prob_c"]
    assert frame["label"].isin(INFO["label_names"]).all()
    assert frame.filter(like="prob_").sum(1).to_numpy() == pytest.approx(1.0, abs=1e-5)


def test_model_without_data_info_and_without_training_data_says_so(tmp_path):
    class NoInfo(RandomTokens):
        def setup(self, stage):
            pass

    with pytest.raises(ValueError, match="data.train"):
        trainer(tmp_path, max_epochs=1).validate(make_model(), NoInfo())
