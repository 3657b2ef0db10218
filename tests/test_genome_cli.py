"""The genome recipe end to end on a tiny generated genome: gff_track, fit, test, predict to zarr and
bedGraph (per base or per bin, no per-base CSV unless asked for); streamed prediction in small or large
windows gives identical scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from genome_fixtures import CHROMS, bin_means, write_genome, write_gff
from seqpipe.cli import main
from seqpipe.data.gff_track import main as gff_track_main

BACKBONES = {
    "causal": """
    d_model: 8
    n_layers: 1
    block: {class_path: seqpipe.s4.S4Block, init_args: {d_state: 8}}""",
    "rc": """
    class_path: seqpipe.dna_backbones.RCEquivariantBackbone
    init_args:
      d_model: 8
      n_layers: 1
      output: invariant
      block: {class_path: seqpipe.s4.S4Block, init_args: {d_state: 8}}""",
}


def write_config(tmp_path, backbone: str) -> str:
    path = tmp_path / f"{backbone}.yaml"
    path.write_text(f"""
trainer:
  max_epochs: 2
  logger: false
  enable_checkpointing: true
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: seqpipe.callbacks.SequenceLengthWarmup
      init_args: {{stages: [{{epochs: 1, window_length: 32, batch_size: 8}}]}}
model:
  backbone:{BACKBONES[backbone]}
  head: {{class_path: seqpipe.tasks.per_base.PerBaseClassification}}
  lr: 1.0e-2
data:
  class_path: seqpipe.data.genome.GenomeData
  init_args:
    target: track
    window_length: 64
    val_regions: ["chrC"]
    test_regions: ["chrA:80%-100%"]
    windows_per_epoch: 16
    batch_size: 4
""")
    return str(path)


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    directory = tmp_path_factory.mktemp("genome")
    fasta, _ = write_genome(directory, seed=7, compression="gzip")
    write_gff(directory / "genes.gff", seed=8)
    gff_track_main(["--gff", str(directory / "genes.gff"), "--data.fasta", str(fasta), "--out", str(directory / "cds.zarr"), "--feature", "CDS"])
    return directory, str(fasta), str(directory / "cds.zarr")


def run(command: str, config: str, genome, root, *extra: str) -> None:
    directory, fasta, track = genome
    main([command, "--config", config, "--data.fasta", fasta, "--data.track", track,
          "--data.cache_dir", str(directory / "cache"), "--trainer.default_root_dir", str(root), *extra])


def predict(config, genome, root, name, *extra, csv: bool = True) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    asked = ["--prediction.path", str(root / f"{name}.csv")] if csv else []
    run("predict", config, genome, root, "--ckpt_path", str(root / "best.ckpt"), *asked,
        "--trainer.callbacks+=seqpipe.tasks.genome_writer.GenomePredictionWriter",
        f"--trainer.callbacks.zarr_path={root / name}.zarr", f"--trainer.callbacks.bedgraph_path={root / name}.bedgraph",
        *extra)
    group = zarr.open_group(str(root / f"{name}.zarr"), mode="r")
    scores = {chrom: group[chrom][:] for chrom in CHROMS}
    bedgraph = pd.read_csv(root / f"{name}.bedgraph", sep="\t", header=None, skiprows=1, names=["chrom", "start", "end", "value"])
    return scores, bedgraph


def fit_and_keep_best(config, genome, root) -> None:
    run("fit", config, genome, root)
    best = sorted(root.rglob("best*.ckpt"))
    assert best, "fit wrote no best checkpoint"
    best[0].rename(root / "best.ckpt")


def test_causal_recipe_fit_test_and_streamed_predictions(genome, tmp_path, capsys):
    config = write_config(tmp_path, "causal")
    fit_and_keep_best(config, genome, tmp_path)
    run("test", config, genome, tmp_path, "--ckpt_path", str(tmp_path / "best.ckpt"))
    assert "test/auroc" in capsys.readouterr().out
    # windows of 64 streamed in chunks of 16, against windows of 256 in one piece (4k vs 64k at test scale)
    small, bedgraph = predict(config, genome, tmp_path, "stream64", "--data.stream", "true", "--data.window_length", "64",
                              "--model.chunk_size", "16")
    large, _ = predict(config, genome, tmp_path, "stream256", "--data.stream", "true", "--data.window_length", "256")
    for chrom, size in CHROMS.items():
        assert small[chrom].shape == (size, 2) and not np.isnan(small[chrom]).any()
        np.testing.assert_allclose(small[chrom], large[chrom], rtol=0, atol=1e-6)
        np.testing.assert_allclose(small[chrom].sum(1), 1, atol=1e-5)
    # the bedGraph covers each chromosome once, in order, with the CDS probability of the zarr
    for chrom, rows in bedgraph.groupby("chrom"):
        assert rows["start"].iloc[0] == 0 and rows["end"].iloc[-1] == CHROMS[chrom]
        assert (rows["start"].to_numpy()[1:] == rows["end"].to_numpy()[:-1]).all()
        expanded = np.repeat(rows["value"].to_numpy(), (rows["end"] - rows["start"]).to_numpy())
        np.testing.assert_allclose(expanded, small[chrom][:, 1], atol=6e-4)
    csv = pd.read_csv(tmp_path / "stream64.csv")  # asked for with --prediction.path
    assert len(csv) == sum(CHROMS.values()) and list(csv.columns) == ["chrom", "position", "prob_other", "prob_CDS"]
    # without --prediction.path the genome writer is the only output; bins are the means of the per-base scores
    binned, _ = predict(config, genome, tmp_path, "binned", "--data.stream", "true", "--data.window_length", "64",
                        "--model.chunk_size", "16", "--trainer.callbacks.bin_size", "50", csv=False)
    assert not list(tmp_path.rglob("binned*.csv")) and not list(tmp_path.rglob("predictions*.csv"))
    for chrom in CHROMS:
        np.testing.assert_allclose(binned[chrom], bin_means(small[chrom].astype(np.float64), 50), rtol=0, atol=1e-6)
    # prediction needs no labels: without --data.track it gives the same scores
    directory, fasta, _ = genome
    main(["predict", "--config", config, "--data.fasta", fasta, "--data.cache_dir", str(directory / "cache"),
          "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(tmp_path / "best.ckpt"),
          "--data.stream", "true", "--data.window_length", "64", "--model.chunk_size", "16",
          "--trainer.callbacks+=seqpipe.tasks.genome_writer.GenomePredictionWriter",
          f"--trainer.callbacks.zarr_path={tmp_path / 'unlabelled.zarr'}",
          f"--trainer.callbacks.bedgraph_path={tmp_path / 'unlabelled.bedgraph'}"])
    unlabelled = zarr.open_group(str(tmp_path / "unlabelled.zarr"), mode="r")
    for chrom in CHROMS:
        np.testing.assert_array_equal(unlabelled[chrom][:], small[chrom])
    with pytest.raises(SystemExit) as error:
        predict(config, genome, tmp_path, "bad", "--trainer.callbacks.bin_size", "0", csv=False)
    message = capsys.readouterr().err.strip().splitlines()
    assert error.value.code == 2 and message == ["seqpipe: error: GenomePredictionWriter bin_size must be a whole number of bases >= 1, got 0"]


@pytest.mark.slow  # a second fit; the overlap tiling and the streaming refusal also have fast unit tests
def test_rc_recipe_predicts_with_overlapping_windows_and_refuses_to_stream(genome, tmp_path, capsys):
    config = write_config(tmp_path, "rc")
    fit_and_keep_best(config, genome, tmp_path)
    scores, _ = predict(config, genome, tmp_path, "overlap", "--data.predict_overlap", "32")
    assert all(not np.isnan(scores[chrom]).any() for chrom in CHROMS)
    with pytest.raises(SystemExit) as error:
        predict(config, genome, tmp_path, "stream", "--data.stream", "true")
    assert error.value.code == 2 and "cannot stream" in capsys.readouterr().err


def test_resumed_genome_run_reaches_the_weights_of_an_uninterrupted_run(genome, tmp_path):
    """SIGTERM after epoch 0, then ``fit --ckpt_path last``: the random training windows of epoch 1 (and the
    length warm-up's stage) are those of the uninterrupted run, so the final weights are equal."""
    config = write_config(tmp_path, "causal")
    logged = ["--trainer.logger", "true"]
    run("fit", config, genome, tmp_path / "a", *logged)
    with pytest.raises(SystemExit) as stopped:
        run("fit", config, genome, tmp_path / "b", *logged, "--trainer.callbacks+=interrupt_helpers.SigtermAfterEpoch")
    assert stopped.value.code == 143
    run("fit", config, genome, tmp_path / "b", *logged, "--ckpt_path", "last")
    expected = torch.load(tmp_path / "a/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "b/lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] > 0
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=0, atol=1e-6, msg=name)
