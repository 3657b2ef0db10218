"""Pre-training (seqpipe.data.pretrain) and fine-tuning through the CLI, on generated data with planted repeats."""

from __future__ import annotations

import re
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from seqpipe.cli import main
from seqpipe.data.dna import DNAClassificationData
from seqpipe.data.pretrain import DNAPretrainData, mask_bases
from seqpipe.data.synthetic import make_dna_motif_dataset, write_fasta
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_alphabet import N_ID, reverse_complement
from seqpipe.dna_backbones import MotifBackbone
from seqpipe.errors import ConfigError, DataError
from seqpipe.mamba import MambaBlock
from seqpipe.model import SequenceModel
from seqpipe.tasks.classification import SequenceClassification

BACKBONE = {"class_path": "seqpipe.dna_backbones.MotifBackbone",
            "init_args": {"d_model": 16, "n_layers": 1, "motif_width": 5,
                          "block": {"class_path": "seqpipe.mamba.MambaBlock", "init_args": {"d_state": 4}}}}
TRAINER = {"enable_progress_bar": False, "enable_model_summary": False}


def repeat_genome(path, seed: int = 0, repeat_length: int = 24, copies: int = 150):
    """Two contigs of one repeated random unit with 2% point mutations: masked bases are predictable from their
    neighbours, so a model that learns lowers the loss far below log(4)."""
    rng = np.random.default_rng(seed)
    unit = rng.choice(list("ACGT"), repeat_length)
    contigs = []
    for name in ("chrA", "chrB"):
        bases = np.tile(unit, copies)
        mutated = rng.random(len(bases)) < 0.02
        bases[mutated] = rng.choice(list("ACGT"), int(mutated.sum()))
        contigs.append((name, "".join(bases)))
    return write_fasta(path, contigs)


def test_masking_follows_80_10_10_and_never_touches_padding_or_n():
    ids = torch.randint(1, 5, (200_000,))
    ids[:1000] = 5
    x, y, mask = mask_bases(ids, 0.15, torch.Generator().manual_seed(0))
    assert not mask[:1000].any()
    assert mask.float().mean().item() == pytest.approx(0.15 * 199 / 200, abs=0.003)
    assert torch.equal(y[mask], ids[mask] - 1)
    chosen_x = x[mask]
    assert (chosen_x == N_ID).float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert (chosen_x == ids[mask]).float().mean().item() == pytest.approx(0.1 + 0.1 / 4, abs=0.01)
    assert torch.equal(x[~mask], ids[~mask])


def test_pretrain_data_reads_genomes_and_classification_sequences(tmp_path):
    genome = repeat_genome(tmp_path / "g.fa")
    classes = make_dna_motif_dataset(tmp_path / "cls", seed=0, n_train=40, n_test=4, length=30)
    data = DNAPretrainData(fasta=[str(tmp_path)], sequences=[str(classes / "train")], window_length=64,
                           windows_per_epoch=10, batch_size=4, objective="next_base")
    data.setup("fit")
    assert sum(1 for name in data.contigs.chrom_sizes if not name.startswith("s")) == 2
    assert len(data.intervals["val"]["sequences"]) == 2 and len(data.intervals["train"]["sequences"]) == 38
    batch = next(iter(data.train_dataloader()))
    row = 0
    x, y, mask = batch["x"][row, : batch["lengths"][row]], batch["y"][row], batch["mask"][row]
    assert torch.equal(y[: len(x) - 1][mask[: len(x) - 1]], x[1:][mask[: len(x) - 1]] - 1)  # next base
    val = [b for b in data.val_dataloader()]
    assert sum(int(b["lengths"].sum()) for b in val) == 2 * 180 + sum(
        data.contigs.chrom_sizes[i.chrom] for i in data.intervals["val"]["sequences"])
    assert genome.exists()
    bed = tmp_path / "regions.bed"
    bed.write_text("chr1\t0\t50\n")
    with pytest.raises(ConfigError, match=rf"data.sequences {bed} is a BED file: .* pre-train on the genome itself"):
        DNAPretrainData(fasta=[str(genome)], sequences=[str(bed)], window_length=64).setup("fit")


def test_pretrain_reverse_complement_augment_reads_training_windows_from_both_strands(tmp_path):
    """Every training window's original bases (x with the targets put back) are a stretch of the genome or of its
    reverse complement (string reference), both strands occur, and validation windows keep the given strand."""
    rng = np.random.default_rng(1)
    genome = "".join(rng.choice(list("ACGT"), 3000))
    write_fasta(tmp_path / "g.fa", [("chr1", genome)])
    letters = list(DNATokenizer.vocab)
    for objective in ("next_base", "masked"):
        torch.manual_seed(0)
        data = DNAPretrainData(fasta=[str(tmp_path / "g.fa")], window_length=40, windows_per_epoch=64, batch_size=64,
                               objective=objective, reverse_complement_augment=True, val_fraction=0.2)
        data.setup("fit")
        on_given_strand = {"train": set(), "val": set()}
        for split, loader in (("train", data.train_dataloader()), ("val", data.val_dataloader())):
            for batch in loader:
                for row, length in enumerate(batch["lengths"].tolist()):
                    x, y, mask = (batch[key][row, :length].tolist() for key in ("x", "y", "mask"))
                    if objective == "next_base":
                        read = "".join(letters[i] for i in x) + ("ACGT"[y[-1]] if mask[-1] else "")  # none at the end
                    else:
                        read = "".join("ACGT"[b] if chosen else letters[i] for i, b, chosen in zip(x, y, mask))
                    assert read in genome or read in reverse_complement(genome), (objective, split, read)
                    on_given_strand[split].add(read in genome)
        assert on_given_strand == {"train": {True, False}, "val": {True}}, objective


def test_pretrain_data_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.fasta"):
        DNAPretrainData()
    genome = repeat_genome(tmp_path / "genome.fa")
    sequences = tmp_path / "sequences.fa"
    sequences.write_text(">pos\nACGT\n>pos\nACGT\nAC!T\n>neg\nACGT\n")  # the ids repeat: named by number
    with pytest.raises(DataError, match=rf"^{re.escape(str(sequences))}, record #2, line 5: character '!' at position 7"):
        DNAPretrainData(fasta=[str(genome)], sequences=[str(sequences)]).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no FASTA files"):
        DNAPretrainData(fasta=[str(tmp_path / "empty")]).setup("fit")
    (tmp_path / "empty" / "notes.txt").write_text("not a genome")  # beside a FASTA: named, not read
    (tmp_path / "empty" / "genome.fa").write_text(genome.read_text())
    with pytest.warns(UserWarning, match=r"1 entries that are not FASTA files .* are not read: notes.txt$"):
        DNAPretrainData(fasta=[str(tmp_path / "empty")]).setup("fit")


def fit(tmp_path, name: str, config: dict, *args: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / name), *args])
    (version,) = (tmp_path / name).glob("lightning_logs/version_*")
    return version


def test_masked_lm_loss_decreases_on_a_genome_with_planted_repeats_then_fine_tunes(tmp_path, capsys, caplog):
    genome = repeat_genome(tmp_path / "genome.fa")
    config = {
        "seed_everything": 0,
        "trainer": {**TRAINER, "max_epochs": 4, "callbacks": [{"class_path": "seqpipe.callbacks.TokenThroughput"}]},
        "model": {"backbone": BACKBONE, "head": {"class_path": "seqpipe.tasks.per_base.MaskedBaseLM"}, "lr": 1e-2},
        "data": {"class_path": "seqpipe.data.pretrain.DNAPretrainData",
                 "init_args": {"objective": "masked", "window_length": 96, "windows_per_epoch": 64, "batch_size": 16,
                               "val_fraction": 0.2}},
    }
    version = fit(tmp_path, "lm", config, "--data.fasta", str(genome))  # one path, or a list of them
    metrics = pd.read_csv(version / "metrics.csv")
    val_loss = metrics["val/loss"].dropna().to_numpy()
    assert val_loss[-1] < 0.8 * np.log(4) and val_loss[-1] < val_loss[0]
    assert metrics["train/tokens_per_s"].dropna().gt(0).all()

    classes = make_dna_motif_dataset(tmp_path / "cls", seed=0, n_train=60, n_test=4, length=40)
    classify = {"seed_everything": 0, "trainer": {**TRAINER, "max_epochs": 1},
                "model": {"backbone": BACKBONE, "head": {"class_path": "seqpipe.tasks.classification.SequenceClassification"}},
                "data": {"class_path": "seqpipe.data.dna.DNAClassificationData", "init_args": {"batch_size": 16}}}
    pretrained = version / "checkpoints/last.ckpt"
    with caplog.at_level("INFO"):
        tuned = fit(tmp_path, "tune", classify, "--data.train", str(classes / "train"),
                    "--model.pretrained", str(pretrained), "--model.freeze_backbone", "true")
    assert f"pretrained {pretrained}: loaded" in caplog.text
    before, after = torch.load(pretrained, weights_only=False)["state_dict"], torch.load(
        tuned / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    backbone = [name for name in before if name.startswith("backbone.")]
    assert backbone and all(torch.equal(before[name], after[name]) for name in backbone)

    # resuming the fine-tuning run needs its own checkpoint only, which holds every weight
    moved = pretrained.rename(tmp_path / "moved.ckpt")
    caplog.clear()
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(tmp_path / "tune.yaml"), "--trainer.default_root_dir", str(tmp_path / "tune"),
              "--data.train", str(classes / "train"), "--model.pretrained", str(pretrained), "--model.freeze_backbone",
              "true", "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert "Restored all states" in caplog.text and "backbone tensors" not in caplog.text
    moved.rename(pretrained)

    rc_backbone = {"class_path": "seqpipe.dna_backbones.RCEquivariantBackbone", "init_args": {
        "d_model": 16, "n_layers": 1, "block": BACKBONE["init_args"]["block"]}}
    capsys.readouterr()
    with pytest.raises(SystemExit):  # another backbone: one error line, nothing loaded in part
        fit(tmp_path, "other", {**classify, "model": {**classify["model"], "backbone": rc_backbone}},
            "--data.train", str(classes / "train"), "--model.pretrained", str(pretrained))
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: --model.pretrained {pretrained}: the checkpoint's backbone is seqpipe.dna_backbones.MotifBackbone, "
        "this model's is seqpipe.dna_backbones.RCEquivariantBackbone: fine-tune with the backbone class, layers and sizes "
        "of the run that wrote the checkpoint (its model.backbone)"]


def test_pre_training_resumed_mid_epoch_reaches_the_very_weights_of_an_uninterrupted_run(tmp_path):
    """Masked-LM pre-training with a sequence-length warm-up, reverse-complement augmentation and dropout, stopped by
    SIGTERM in the middle of epoch 1 and resumed with ``--ckpt_path last``: the rest of the run draws the windows,
    strands, masks and dropout of the uninterrupted run, so the final weights are identical."""
    genome = repeat_genome(tmp_path / "genome.fa")
    warmup = {"class_path": "seqpipe.callbacks.SequenceLengthWarmup",
              "init_args": {"stages": [{"epochs": 1, "window_length": 48, "batch_size": 8}]}}
    config = {
        "seed_everything": 0,
        "trainer": {**TRAINER, "max_epochs": 3, "callbacks": [{"class_path": "seqpipe.callbacks.TokenThroughput"}, warmup]},
        "model": {"backbone": {**BACKBONE, "init_args": {**BACKBONE["init_args"], "dropout": 0.2}},
                  "head": {"class_path": "seqpipe.tasks.per_base.MaskedBaseLM"}},
        "data": {"class_path": "seqpipe.data.pretrain.DNAPretrainData",
                 "init_args": {"objective": "masked", "window_length": 64, "windows_per_epoch": 48, "batch_size": 16,
                               "reverse_complement_augment": True}},
    }
    expected = fit(tmp_path, "full", config, "--data.fasta", f"[{genome}]") / "checkpoints/last.ckpt"
    interrupt = {"class_path": "interrupt_helpers.SigtermAfterStep", "init_args": {"step": 8}}  # epoch 0 has 6 batches
    stopped = {**config, "trainer": {**config["trainer"], "callbacks": [*config["trainer"]["callbacks"], interrupt]}}
    with pytest.raises(SystemExit, match="143"):
        fit(tmp_path, "stopped", stopped, "--data.fasta", f"[{genome}]")
    (tmp_path / "stopped.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(tmp_path / "stopped.yaml"), "--trainer.default_root_dir", str(tmp_path / "stopped"),
          "--data.fasta", f"[{genome}]", "--ckpt_path", "last"])
    expected = torch.load(expected, weights_only=True)
    resumed = torch.load(tmp_path / "stopped/lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] == 12
    assert all(torch.equal(resumed["state_dict"][name], tensor) for name, tensor in expected["state_dict"].items())


def test_a_head_warmup_keeps_the_pretrained_backbone_through_its_epochs_then_trains_it(tmp_path):
    genome = repeat_genome(tmp_path / "genome.fa")
    config = {"seed_everything": 0, "trainer": {**TRAINER, "max_epochs": 1},
              "model": {"backbone": BACKBONE, "head": {"class_path": "seqpipe.tasks.per_base.NextBaseLM"}},
              "data": {"class_path": "seqpipe.data.pretrain.DNAPretrainData",
                       "init_args": {"objective": "next_base", "window_length": 64, "windows_per_epoch": 32,
                                     "batch_size": 16}}}
    pretrained = fit(tmp_path, "lm", config, "--data.fasta", f"[{genome}]") / "checkpoints/last.ckpt"
    before = {name.removeprefix("backbone."): tensor for name, tensor
              in torch.load(pretrained, weights_only=False)["state_dict"].items() if name.startswith("backbone.")}

    class BackboneAtEpochEnd(L.Callback):
        def __init__(self):
            self.states = []

        def on_train_epoch_end(self, trainer, model):
            self.states.append({name: tensor.clone() for name, tensor in model.backbone.state_dict().items()})

    torch.manual_seed(0)
    block = BACKBONE["init_args"]["block"]["init_args"]
    backbone = MotifBackbone(d_model=16, n_layers=1, motif_width=5, block=lambda d: MambaBlock(d, **block))
    model = SequenceModel(backbone, SequenceClassification(), lr=1e-2, pretrained=str(pretrained), head_warmup_epochs=2)
    classes = make_dna_motif_dataset(tmp_path / "cls", seed=0, n_train=60, n_test=4, length=40)
    recorder = BackboneAtEpochEnd()
    trainer = L.Trainer(max_epochs=3, callbacks=[recorder], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path / "tune")
    trainer.fit(model, DNAClassificationData(train=str(classes / "train"), batch_size=16))

    warm, tuned = recorder.states[1], recorder.states[2]
    assert sorted(warm) == sorted(before) and all(torch.equal(before[name], warm[name]) for name in before)
    assert sum(not torch.equal(before[name], tuned[name]) for name in before) > len(before) // 2


def test_a_head_warmup_as_long_as_training_is_one_error_that_leaves_no_run_behind(tmp_path, capsys):
    classes = make_dna_motif_dataset(tmp_path / "cls", seed=0, n_train=20, n_test=4, length=30)
    config = {"trainer": {**TRAINER, "max_epochs": 2},
              "model": {"backbone": BACKBONE, "head": {"class_path": "seqpipe.tasks.classification.SequenceClassification"},
                        "head_warmup_epochs": 2},
              "data": {"class_path": "seqpipe.data.dna.DNAClassificationData", "init_args": {"batch_size": 8}}}
    with pytest.raises(SystemExit):
        fit(tmp_path, "tune", config, "--data.train", str(classes / "train"))
    err = capsys.readouterr().err
    assert re.search(r"^seqpipe: error: model.head_warmup_epochs 2 is (\d+) optimizer steps, not fewer than the \1 of "
                     r"training: the backbone would never train", err)
    assert "Traceback" not in err and not (tmp_path / "tune").exists()


@pytest.mark.parametrize("backbone", ["BidirectionalBackbone", "RCEquivariantBackbone"])
def test_next_base_targets_on_a_backbone_that_reads_ahead_are_one_error_that_leaves_no_run_behind(tmp_path, capsys,
                                                                                                   backbone):
    """Such a backbone sees each target in its input: it would score far above chance and learn nothing."""
    genome = repeat_genome(tmp_path / "genome.fa")
    config = {"trainer": {**TRAINER, "max_epochs": 1},
              "model": {"backbone": {"class_path": f"seqpipe.dna_backbones.{backbone}",
                                     "init_args": {"d_model": 16, "n_layers": 1, "block": BACKBONE["init_args"]["block"]}},
                        "head": {"class_path": "seqpipe.tasks.per_base.NextBaseLM"}},
              "data": {"class_path": "seqpipe.data.pretrain.DNAPretrainData",
                       "init_args": {"objective": "next_base", "window_length": 64, "windows_per_epoch": 16}}}
    with pytest.raises(SystemExit):
        fit(tmp_path, "lm", config, "--data.fasta", f"[{genome}]")
    err = capsys.readouterr().err
    assert re.fullmatch(rf"seqpipe: error: the targets are the next base, and {backbone} reads ahead \(its output at "
                        r"position \d+ changes when only a later base does\), so it would see them: use a causal "
                        r"backbone .*MaskedBaseLM, as configs/dna_pretrain_rc.yaml does\)\n", err)
    assert not (tmp_path / "lm").exists()
