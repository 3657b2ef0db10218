"""The data contract: the checkpoint's dict form round-trips, old checkpoints load, malformed ones are named,
and the model is built from what the data module declares."""

from __future__ import annotations

import pytest
import torch

from seqpipe.backbone import Backbone
from seqpipe.contracts import ChannelInput, DataInfo, SeriesInfo, TokenInput
from seqpipe.errors import CheckpointError, ConfigError
from seqpipe.heads import TaskHead
from seqpipe.mamba import MambaBlock
from seqpipe.model import SequenceModel
from seqpipe.tasks.classification import SequenceClassification
from seqpipe.tasks.forecasting import Forecasting

DNA = DataInfo(TokenInput(6, {"<pad>": 0, "A": 1, "C": 2, "G": 3, "T": 4, "N": 5}, "dna"), ["neg", "pos"])
AUDIO = DataInfo(ChannelInput(1, 8000), ["a", "b", "c"])
SERIES = DataInfo(ChannelInput(3), series=SeriesInfo(["a", "b", "c"], ["c"], [2], [0.0, 1.0, 2.0], [1.0, 2.0, 3.0],
                                                       24, 12, "h", []))


@pytest.mark.parametrize("info", [DNA, AUDIO, SERIES, DataInfo(TokenInput(6), list("ACGT"))])
def test_the_dict_form_is_plain_and_round_trips_through_a_weights_only_checkpoint(info, tmp_path):
    torch.save({"hyper_parameters": {"data_info": info.to_dict()}}, tmp_path / "x.ckpt")
    saved = torch.load(tmp_path / "x.ckpt", weights_only=True)["hyper_parameters"]["data_info"]
    assert DataInfo.from_dict(saved) == info and saved == info.to_dict()


def test_the_keys_are_those_checkpoints_have_always_had():
    assert AUDIO.to_dict() == {"input_dim": 1, "label_names": ["a", "b", "c"], "sample_rate": 8000}
    assert set(SERIES.to_dict()) == {"input_dim", "columns", "targets", "target_index", "mean", "std", "seq_len",
                                     "pred_len", "freq", "calendar"}


def test_an_older_genome_checkpoint_loads_and_drops_what_nothing_reads():
    old = {"vocab_size": 6, "target": "track", "label_names": ["other", "CDS"], "window_length": 4096}
    assert DataInfo.from_dict(old) == DataInfo(TokenInput(6), ["other", "CDS"])


def test_keys_of_a_users_data_module_round_trip_in_extra():
    saved = {"vocab_size": 6, "horizon": 8, "label_names": ["a", "b"]}
    info = DataInfo.from_dict(saved)
    assert info.extra == {"horizon": 8} and info.to_dict() == saved
    with pytest.raises(ConfigError, match=r"reuses the contract's own keys \['vocab_size'\]"):
        DataInfo(TokenInput(6), extra={"vocab_size": 5}).to_dict()


@pytest.mark.parametrize("saved,message", [
    ({"vocab_size": 6, "label_names": "ab"}, "run.ckpt: data_info label_names must be a list"),
    ({"label_names": ["a"]}, "run.ckpt: data_info names no input"),
    ({"input_dim": 2, "seq_len": 4}, r"run.ckpt: data_info describes a series but lacks \['columns'"),
])
def test_a_malformed_dict_is_one_error_naming_the_checkpoint(saved, message):
    with pytest.raises(CheckpointError, match=message):
        DataInfo.from_dict(saved, source="run.ckpt")


def backbone() -> Backbone:
    return Backbone(d_model=8, n_layers=1, block=lambda d: MambaBlock(d, d_state=4, scan_backend="ref"))


def test_the_backbone_input_layer_follows_the_declared_input():
    tokens = SequenceModel(backbone(), SequenceClassification(), data_info=DNA.to_dict())
    assert isinstance(tokens.backbone.encoder, torch.nn.Embedding) and tokens.backbone.encoder.num_embeddings == 6
    assert tokens.head.strand_invariant  # the tokens are DNA: the head averages both strands
    channels = SequenceModel(backbone(), SequenceClassification(), data_info=AUDIO.to_dict())
    assert isinstance(channels.backbone.encoder, torch.nn.Linear) and channels.backbone.encoder.in_features == 1
    assert not channels.head.strand_invariant and channels.data_info == AUDIO


@pytest.mark.parametrize("channel_independent,channels", [(True, 1), (False, 3)])
def test_a_head_that_reshapes_its_input_says_what_it_feeds(channel_independent, channels):
    model = SequenceModel(backbone(), Forecasting(channel_independent=channel_independent), data_info=SERIES.to_dict())
    assert model.backbone.encoder.in_features == channels


def test_a_head_without_the_data_it_needs_is_one_error():
    with pytest.raises(ConfigError, match="SequenceClassification needs class labels"):
        SequenceModel(backbone(), SequenceClassification(), data_info=SERIES.to_dict())
    with pytest.raises(ConfigError, match="Forecasting head needs a series"):
        SequenceModel(backbone(), Forecasting(), data_info=AUDIO.to_dict())


class OldSpecHead(SequenceClassification):
    def input_spec(self, data_info):  # the hook's earlier name: it would be ignored
        return {"vocab_size": 6}


class TensorInputHead(SequenceClassification):
    def backbone_input(self, batch):  # the earlier form: the inputs alone
        return batch["x"]


def test_a_head_written_for_the_earlier_interface_is_one_clear_error():
    with pytest.raises(ConfigError, match="OldSpecHead.input_spec.*is now backbone_input_spec"):
        SequenceModel(backbone(), OldSpecHead(), data_info=DNA.to_dict())
    model = SequenceModel(backbone(), TensorInputHead(), data_info=DNA.to_dict()).train()
    with pytest.raises(ConfigError, match=r"TensorInputHead.backbone_input must return \(inputs, context\)"):
        model({"x": torch.randint(1, 5, (4, 12)), "lengths": torch.full((4,), 12)})


class ContextMeanMaxHead(SequenceClassification):
    """Reads only the mean and maximum, and passes a context from its input step to its output step."""

    mean_max_pooled = True

    def backbone_input(self, batch):
        return batch["x"], "from the input step"

    def forward_pooled(self, mean, peak, batch, context=None):
        assert context == "from the input step"
        return self.classifier(mean)


def test_a_record_streamed_into_the_mean_and_max_keeps_the_heads_context():
    causal = Backbone(d_model=8, n_layers=1, block=lambda d: MambaBlock(d, d_state=4, scan_backend="ref"))
    model = SequenceModel(causal, ContextMeanMaxHead(pooling="last", strands="forward"), data_info=DNA.to_dict(), chunk_size=8).eval()
    with torch.no_grad():
        logits = model({"x": torch.randint(1, 5, (2, 20)), "lengths": torch.full((2,), 20)})
    assert logits.shape == (2, 2)


class HeadWithoutLoss(TaskHead):
    def bind(self, d_model, data_info):
        self.out = torch.nn.Linear(d_model, 2)

    def forward(self, features, lengths, batch):
        return self.out(features.mean(1))

    def metrics(self):
        from torchmetrics import MetricCollection
        return MetricCollection({})


def test_a_head_that_leaves_required_methods_undefined_is_refused_when_the_model_is_built():
    with pytest.raises(ConfigError, match=r"test_contracts.HeadWithoutLoss does not define loss, update_metrics: a TaskHead "
                                          r"defines forward, loss, metrics and update_metrics"):
        SequenceModel(backbone(), HeadWithoutLoss(), data_info=DNA.to_dict())
