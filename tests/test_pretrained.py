"""Fine-tuning from a checkpoint (seqpipe.pretrained) and strand-averaged DNA classification."""

from __future__ import annotations

import math
import re
import warnings
from types import SimpleNamespace

import pytest
import torch

from seqpipe.backbone import Backbone
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_backbones import MotifBackbone, RCEquivariantBackbone
from seqpipe.errors import CheckpointError, ConfigError
from seqpipe.mamba import MambaBlock
from seqpipe.model import SequenceModel
from seqpipe.pretrained import SAME_BACKBONE, load_backbone_weights
from seqpipe.s4 import S4Block
from seqpipe.tasks.classification import SequenceClassification
from seqpipe.tasks.per_base import NextBaseLM

DNA_INFO = {"vocab_size": 6, "tokenizer": "dna", "label_names": ["a", "b"]}


def mamba_backbone(d_model: int = 16) -> Backbone:
    return Backbone(d_model=d_model, n_layers=2, block=lambda d: MambaBlock(d, d_state=4))


def motif_s4d_backbone(d_model: int = 16) -> Backbone:
    """The DNA recipe's backbone (configs/dna_classify.yaml), small: motif convolution, then causal S4D layers."""
    return MotifBackbone(d_model=d_model, n_layers=2, motif_width=5, block=lambda d: S4Block(d, d_state=8, mode="diag"))


def rc_backbone(d_model: int = 16) -> Backbone:
    """configs/dna_classify_rc.yaml's backbone, small: reverse-complement equivariant S4D layers."""
    return RCEquivariantBackbone(d_model=d_model, n_layers=2, block=lambda d: S4Block(d, d_state=8, mode="diag"))


def classifier(seed: int, d_model: int = 16, strands: str = "average", make_backbone=mamba_backbone, **options) -> SequenceModel:
    torch.manual_seed(seed)
    head = SequenceClassification(strands=strands)
    return SequenceModel(make_backbone(d_model), head, data_info=DNA_INFO, **options)


def save_lm_checkpoint(path, seed: int = 0, d_model: int = 16, make_backbone=mamba_backbone) -> SequenceModel:
    """A pre-training model (next-base head, other classes) saved as ``seqpipe fit`` saves it: its weights and its
    backbone's class."""
    torch.manual_seed(seed)
    model = SequenceModel(make_backbone(d_model), NextBaseLM(), data_info={"vocab_size": 6, "label_names": list("ACGT"), "next_token_targets": True})
    backbone = {"class_path": f"{type(model.backbone).__module__}.{type(model.backbone).__name__}"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"backbone": backbone}}, path)
    return model


def tokens(seed: int = 0, batch: int = 3, length: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([length, length - 7, length - 12])[:batch]
    x = torch.randint(1, 5, (batch, length), generator=generator)
    x[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return x, lengths


@pytest.mark.parametrize("make_backbone", [mamba_backbone, motif_s4d_backbone, rc_backbone])
def test_loading_a_checkpoint_restores_identical_backbone_outputs(tmp_path, make_backbone):
    pretrained = save_lm_checkpoint(tmp_path / "lm.ckpt", seed=0, make_backbone=make_backbone).eval()
    model = classifier(seed=1, make_backbone=make_backbone).eval()
    x, lengths = tokens()
    assert not torch.allclose(model.backbone(x, lengths), pretrained.backbone(x, lengths))

    loaded = load_backbone_weights(model.backbone, tmp_path / "lm.ckpt")

    assert sorted(loaded) == sorted(pretrained.backbone.state_dict())  # embedding and motif convolution too
    assert torch.equal(model.backbone(x, lengths), pretrained.backbone(x, lengths))


def plain_s4d_backbone(d_model: int = 16, n_layers: int = 2) -> Backbone:
    """configs/forecast.yaml's kind of backbone (plain causal S4D layers), small."""
    return Backbone(d_model=d_model, n_layers=n_layers, block=lambda d: S4Block(d, d_state=8, mode="diag"))


@pytest.mark.parametrize("saved_backbone, make_backbone, difference", [
    (plain_s4d_backbone, motif_s4d_backbone,  # a forecaster's backbone into the DNA recipe's
     "the checkpoint's backbone is seqpipe.backbone.Backbone, this model's is seqpipe.dna_backbones.MotifBackbone"),
    (motif_s4d_backbone, rc_backbone,  # configs/dna_pretrain.yaml's into configs/dna_classify_rc.yaml's
     "the checkpoint's backbone is seqpipe.dna_backbones.MotifBackbone, this model's is "
     "seqpipe.dna_backbones.RCEquivariantBackbone"),
    (plain_s4d_backbone, lambda: plain_s4d_backbone(n_layers=1),
     "the checkpoint's backbone is not this model's (backbone tensors only in the checkpoint: layers.1.norm.weight, "
     "layers.1.mixer.log_dt, layers.1.mixer.A_log_neg_real and 6 more)"),
    (lambda: plain_s4d_backbone(n_layers=1), plain_s4d_backbone,
     "the checkpoint's backbone is not this model's (backbone tensors only in this model: layers.1.norm.weight, "
     "layers.1.mixer.log_dt, layers.1.mixer.A_log_neg_real and 6 more)"),
])
def test_a_checkpoint_of_another_backbone_is_refused_and_nothing_is_loaded(tmp_path, saved_backbone, make_backbone,
                                                                           difference):
    save_lm_checkpoint(tmp_path / "lm.ckpt", make_backbone=lambda d: saved_backbone())
    model = classifier(seed=1, make_backbone=lambda d: make_backbone())
    before = {name: tensor.clone() for name, tensor in model.backbone.state_dict().items()}
    expected = f"--model.pretrained {tmp_path / 'lm.ckpt'}: {difference}: {SAME_BACKBONE}"
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        load_backbone_weights(model.backbone, tmp_path / "lm.ckpt")
    assert all(torch.equal(before[name], tensor) for name, tensor in model.backbone.state_dict().items())


def test_a_checkpoint_without_its_backbone_class_is_still_compared_by_its_tensors(tmp_path):
    torch.manual_seed(0)
    plain = SequenceModel(plain_s4d_backbone(), NextBaseLM(), data_info={"vocab_size": 6, "label_names": list("ACGT"), "next_token_targets": True})
    torch.save({"state_dict": plain.state_dict()}, tmp_path / "bare.ckpt")  # no hyper-parameters, so no class
    with pytest.raises(ConfigError, match=r"bare\.ckpt: the checkpoint's backbone is not this model's \(backbone "
                                          r"tensors only in the checkpoint: layers\.0\.mixer\.log_dt, .*; only in "
                                          r"this model: layers\.0\.mixer\.conv\.weight, "):
        load_backbone_weights(classifier(seed=1, make_backbone=motif_s4d_backbone).backbone, tmp_path / "bare.ckpt")


def test_a_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path):
    save_lm_checkpoint(tmp_path / "lm.ckpt", d_model=16)
    model = classifier(seed=1, d_model=24)
    with pytest.raises(ConfigError, match=r"parameter backbone\.layers\.0\.norm\.weight has shape \(16,\) in the "
                                          r"checkpoint but \(24,\) in this model: fine-tune with the backbone class"):
        load_backbone_weights(model.backbone, tmp_path / "lm.ckpt")


def test_a_missing_or_foreign_checkpoint_is_one_error(tmp_path):
    model = classifier(seed=1)
    with pytest.raises(CheckpointError, match="^--model.pretrained .*absent.ckpt: no such checkpoint file$"):
        load_backbone_weights(model.backbone, tmp_path / "absent.ckpt")
    with pytest.raises(CheckpointError, match="^--model.pretrained .*: is a directory, not a checkpoint file$"):
        load_backbone_weights(model.backbone, tmp_path)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt: not a readable checkpoint"):
        load_backbone_weights(model.backbone, tmp_path / "junk.ckpt")
    torch.save({"state_dict": {"head.classifier.weight": torch.zeros(2, 16)}}, tmp_path / "head_only.ckpt")
    with pytest.raises(CheckpointError, match="no backbone weights"):
        load_backbone_weights(model.backbone, tmp_path / "head_only.ckpt")


def optimizer_lrs(model: SequenceModel) -> dict[str, float]:
    """Each parameter's learning rate in the optimizer ``configure_optimizers`` builds."""
    model._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = model.configure_optimizers()["optimizer"]
    by_id = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters() if id(p) in by_id}


def test_backbone_lr_scale_and_freeze_backbone(tmp_path):
    lrs = optimizer_lrs(classifier(seed=1, lr=1e-3, backbone_lr_scale=0.1))
    assert lrs["head.classifier.weight"] == pytest.approx(1e-3)
    backbone_lrs = [lr for name, lr in lrs.items() if name.startswith("backbone.")]
    assert backbone_lrs and backbone_lrs == pytest.approx([1e-4] * len(backbone_lrs))

    lm = save_lm_checkpoint(tmp_path / "lm.ckpt")
    frozen = classifier(seed=1, freeze_backbone=True, pretrained=str(tmp_path / "lm.ckpt"))
    frozen._start_from_pretrained(fitting=True)
    assert set(optimizer_lrs(frozen)) == {"head.classifier.weight", "head.classifier.bias"}
    assert all(torch.equal(p, q) for p, q in zip(frozen.backbone.parameters(), lm.backbone.parameters()))
    with pytest.raises(ConfigError, match="model.freeze_backbone trains the head alone, on a backbone that without "
                                          "model.pretrained is random"):
        classifier(seed=1, freeze_backbone=True)
    with pytest.raises(ConfigError, match="model.backbone_lr_scale and model.freeze_backbone both given"):
        classifier(seed=1, freeze_backbone=True, backbone_lr_scale=0.1, pretrained=str(tmp_path / "lm.ckpt"))


@pytest.mark.parametrize("option, value, needs", [
    ("lr", -1.0, "positive"), ("weight_decay", -0.1, "0 or more"), ("betas", (0.9, 1.0), r"two numbers in \[0, 1\)"),
    ("warmup_fraction", 1.0, r"in \[0, 1\)"), ("min_lr_ratio", 2.0, r"in \[0, 1\]"), ("backbone_lr_scale", 0.0, "positive"),
])
def test_optimizer_settings_out_of_range_are_one_error_naming_the_option(option, value, needs):
    with pytest.raises(ConfigError, match=rf"^model.{option} must be {needs}, got "):
        classifier(seed=1, **{option: value})


def test_head_warmup_epochs_keep_only_the_backbone_groups_at_zero_for_whole_optimizer_steps():
    with pytest.raises(ConfigError, match="must be 0 or more, got -1"):
        classifier(seed=1, head_warmup_epochs=-1)
    with pytest.raises(ConfigError, match="head_warmup_epochs and model.freeze_backbone both given"):
        classifier(seed=1, head_warmup_epochs=2, freeze_backbone=True)
    model = classifier(seed=1, lr=1e-3, head_warmup_epochs=2)
    # 5 batches an epoch, 2 accumulated a step: 3 optimizer steps an epoch, so the warm-up is steps 0-5
    model._trainer = SimpleNamespace(estimated_stepping_batches=30, num_training_batches=5, accumulate_grad_batches=2)
    scheduler = model.configure_optimizers()["lr_scheduler"]["scheduler"]
    names = {id(p): name for name, p in model.named_parameters()}
    for group, factor in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
        in_backbone = {names[id(p)].startswith("backbone.") for p in group["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or all head
        assert (factor(5) == 0) == in_backbone.pop() and factor(6) > 0
    model._trainer.estimated_stepping_batches = 6
    with pytest.raises(ConfigError, match="head_warmup_epochs 2 is 6 optimizer steps, not fewer than the 6 of training"):
        model.configure_optimizers()
    model._trainer.num_training_batches = math.inf
    with pytest.raises(ConfigError, match="needs trainer.max_epochs and training data whose number of batches is known"):
        model.configure_optimizers()


@pytest.mark.parametrize("strands", ["average", "pair", "forward"])
def test_only_strand_averaging_gives_a_sequence_and_its_reverse_complement_one_prediction(strands):
    model = classifier(seed=2, strands=strands).eval()
    x, lengths = tokens(seed=3)
    reverse = DNATokenizer().reverse_complement(x, lengths)
    with torch.no_grad():
        logits, reverse_logits = model({"x": x, "lengths": lengths}), model({"x": reverse, "lengths": lengths})
    assert torch.allclose(logits, reverse_logits, atol=1e-6) == (strands == "average")


def test_a_long_record_streams_into_the_mean_with_the_whole_sequence_prediction(monkeypatch):
    import seqpipe.model

    monkeypatch.setattr(seqpipe.model, "chunked_forward", lambda *args, **kwargs: pytest.fail("features of the whole record"))
    whole = classifier(seed=4).double().eval()
    streamed = classifier(seed=4, chunk_size=7).double().eval()
    x, lengths = tokens(seed=5, length=40)
    with torch.no_grad():
        expected, got = whole({"x": x, "lengths": lengths}), streamed({"x": x, "lengths": lengths})
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_a_record_too_long_for_one_window_needs_chunk_size(monkeypatch):
    import seqpipe.model

    monkeypatch.setattr(seqpipe.model, "LONGEST_WHOLE_INPUT", 32)
    x, lengths = tokens(seed=5, length=40)
    with torch.no_grad(), pytest.raises(ConfigError, match="a record of 40 positions is longer than the 32 evaluated as one window"):
        classifier(seed=4).eval()({"x": x, "lengths": lengths})
    with torch.no_grad():
        classifier(seed=4, chunk_size=16).eval()({"x": x, "lengths": lengths})  # streamed: no error


def test_a_record_too_long_for_one_window_is_named_with_its_file(tmp_path, monkeypatch):
    import seqpipe.model
    from seqpipe.data.dna import DNAClassificationData
    from seqpipe.data.synthetic import write_fasta

    monkeypatch.setattr(seqpipe.model, "LONGEST_WHOLE_INPUT", 32)
    queries = write_fasta(tmp_path / "queries.fa", [("short1", "ACGT" * 3), ("long1 chr", "ACGT" * 10), ("short2", "GG")])
    data = DNAClassificationData(predict=str(queries), batch_size=3)
    data.setup("predict")
    expected = f"{queries}, record 'long1': a record of 40 positions is longer than the 32 evaluated as one window"
    with torch.no_grad(), pytest.raises(ConfigError, match="^" + re.escape(expected)):
        classifier(seed=4).eval()(next(iter(data.predict_dataloader())))

    shared = write_fasta(tmp_path / "shared.fa", [("q", "ACGT" * 3), ("q", "ACGT" * 10), ("q", "GG")])  # ids repeat
    data = DNAClassificationData(predict=str(shared), batch_size=3)
    data.setup("predict")
    expected = f"{shared}, record #2: a record of 40 positions"
    with torch.no_grad(), pytest.raises(ConfigError, match="^" + re.escape(expected)):
        classifier(seed=4).eval()(next(iter(data.predict_dataloader())))


def test_the_rc_equivariant_backbone_with_invariant_output_classifies_both_strands_alike():
    from seqpipe.dna_backbones import RCEquivariantBackbone

    torch.manual_seed(6)
    backbone = RCEquivariantBackbone(d_model=16, n_layers=2, block=lambda d: MambaBlock(d, d_state=4), output="invariant")
    model = SequenceModel(backbone, SequenceClassification(strands="forward"), data_info=DNA_INFO).eval()
    x, lengths = tokens(seed=7)
    with torch.no_grad():
        logits = model({"x": x, "lengths": lengths})
        reverse_logits = model({"x": DNATokenizer().reverse_complement(x, lengths), "lengths": lengths})
    torch.testing.assert_close(reverse_logits, logits, rtol=0, atol=1e-5)


def test_predict_streams_with_the_command_lines_chunk_size_over_the_checkpoints(tmp_path, monkeypatch):
    import yaml

    import seqpipe.model
    from seqpipe.cli import main
    from seqpipe.data.synthetic import make_dna_motif_dataset, write_fasta

    data = make_dna_motif_dataset(tmp_path / "dna", seed=0, n_train=40, n_test=4, length=30)
    config = {"seed_everything": 0,
              "trainer": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False, "limit_train_batches": 1},
              "model": {"backbone": {"d_model": 8, "n_layers": 1, "block": {"class_path": "seqpipe.mamba.MambaBlock",
                                                                              "init_args": {"d_state": 4}}},
                        "head": {"class_path": "seqpipe.tasks.classification.SequenceClassification"}},
              "data": {"class_path": "seqpipe.data.dna.DNAClassificationData", "init_args": {"batch_size": 16}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(tmp_path / "config.yaml"), "--data.train", str(data / "train"),
          "--trainer.default_root_dir", str(tmp_path / "run")])
    (checkpoint,) = (tmp_path / "run").glob("lightning_logs/version_*/checkpoints/best.ckpt")
    record = write_fasta(tmp_path / "long.fa", [("long", "ACGTTGCA" * 50)])
    streamed = []
    monkeypatch.setattr(seqpipe.model, "chunked_mean",
                        lambda *args: streamed.append(args[3]) or torch.zeros(1, 8, device=args[1].device))
    main(["predict", "--config", str(tmp_path / "config.yaml"), "--data.predict", str(record), "--ckpt_path", str(checkpoint),
          "--model.chunk_size", "64", "--trainer.default_root_dir", str(tmp_path / "predict")])
    assert streamed == [64, 64]  # both strands, chunk by chunk


def test_load_from_checkpoint_needs_no_trainer_for_a_fine_tuned_or_a_pretraining_model(tmp_path):
    """``SequenceModel.load_from_checkpoint`` (the README's Python way in) calls configure_model without a trainer:
    a model fine-tuned with ``pretrained`` and a next-base pre-training model load, their weights the saved ones."""
    import lightning

    save_lm_checkpoint(tmp_path / "lm.ckpt")
    torch.manual_seed(3)
    next_base = SequenceModel(mamba_backbone(), NextBaseLM(),
                              data_info={"vocab_size": 6, "label_names": list("ACGT"), "next_token_targets": True})
    for model, head in ((classifier(seed=1, pretrained=str(tmp_path / "lm.ckpt")), SequenceClassification(strands="average")),
                        (next_base, NextBaseLM())):
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                    "pytorch-lightning_version": lightning.__version__}, tmp_path / "saved.ckpt")
        loaded = SequenceModel.load_from_checkpoint(tmp_path / "saved.ckpt", backbone=mamba_backbone(), head=head).eval()
        x, lengths = tokens()
        assert torch.equal(loaded.backbone(x, lengths), model.eval().backbone(x, lengths))


def test_a_backbone_pretrained_at_another_sample_rate_is_said(tmp_path):
    """Audio: a learned front end's filters and strides are in samples, so a backbone trained at 8 kHz reads 16 kHz
    data at other frequencies and durations: loaded, with one warning naming both rates."""
    backbone = plain_s4d_backbone()
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()},
                "hyper_parameters": {"data_info": {"input_dim": 1, "sample_rate": 8000, "label_names": ["a", "b"]}}},
               tmp_path / "audio.ckpt")
    with pytest.warns(UserWarning, match=r"trained on audio at 8000 Hz, this data is at 16000 Hz.*--data.sample_rate 8000"):
        load_backbone_weights(plain_s4d_backbone(), tmp_path / "audio.ckpt", sample_rate=16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_backbone_weights(plain_s4d_backbone(), tmp_path / "audio.ckpt", sample_rate=8000)
