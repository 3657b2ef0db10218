"""Whole-genome prediction writer: per-base and binned zarr scores, the bedGraph and the bigWig, against numpy
computations from the per-base scores; order checks; option errors."""

from __future__ import annotations

import shutil
from functools import partial
from types import SimpleNamespace

import lightning as L
import numpy as np
import pandas as pd
import pyBigWig
import pytest
import torch
import zarr

from dna_tool_fixtures import needs_proc, open_files_under
from genome_fixtures import CHROMS, bin_means, write_genome
from seqpipe.backbone import Backbone
from seqpipe.contracts import DataInfo, TokenInput
from seqpipe.data.genome import GenomeData
from seqpipe.errors import ConfigError
from seqpipe.model import SequenceModel
from seqpipe.s4 import S4Block
from seqpipe.tasks.bigwig_writer import main as bigwig_main
from seqpipe.tasks.genome_writer import BedGraphRuns, BinMeans, GenomePredictionWriter
from seqpipe.tasks.per_base import NextBaseLM

#: out of genome order, two overlapping: predicted in genome order, each base once
REGIONS = ["chrB", "chrA:2400-2950", "chrA:130-2000", "chrC:5-800", "chrA:1900-2100"]


def read_bedgraph(path) -> pd.DataFrame:
    with open(path) as handle:
        assert handle.readline().startswith("track type=bedGraph")
    return pd.read_csv(path, sep="\t", header=None, skiprows=1, names=["chrom", "start", "end", "value"])


def check_bedgraph(bedgraph: pd.DataFrame, expected_means: dict[str, np.ndarray], sizes: dict[str, int], bin_size: int,
                   decimals: int = 3) -> None:
    """Each line covers whole bins (the last one clipped to the chromosome) holding its rounded value; the
    lines cover exactly the predicted bins, in order, and no two touching lines could have been merged."""
    for chrom, means in expected_means.items():
        rows = bedgraph[bedgraph["chrom"] == chrom]
        starts, ends, values = (rows[c].to_numpy() for c in ("start", "end", "value"))
        assert (starts % bin_size == 0).all() and (starts < ends).all() and (ends[:-1] <= starts[1:]).all()
        assert ((ends % bin_size == 0) | (ends == sizes[chrom])).all()
        covered = np.zeros(len(means), bool)
        expanded = np.full(len(means), np.nan)
        for start, end, value in zip(starts, ends, values):
            covered[start // bin_size:-(-end // bin_size)] = True
            expanded[start // bin_size:-(-end // bin_size)] = value
        np.testing.assert_array_equal(covered, ~np.isnan(means))
        np.testing.assert_allclose(expanded[covered], means[covered], rtol=0, atol=0.5 * 10 ** -decimals + 1e-7)
        touching = ends[:-1] == starts[1:]
        assert not (touching & (values[:-1] == values[1:])).any(), "adjacent equal lines were not merged"


def predict_genome(tmp_path, writers, seed: int):
    fasta, sequences = write_genome(tmp_path, seed=seed)
    data = GenomeData(str(fasta), target="next_base", window_length=100, predict_overlap=30, predict_regions=REGIONS, batch_size=3)
    torch.manual_seed(seed)
    model = SequenceModel(Backbone(8, 1, partial(S4Block, d_state=8)), NextBaseLM())
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=writers,
                        default_root_dir=tmp_path, accelerator="cpu")
    returned = trainer.predict(model, datamodule=data, return_predictions=True)
    return sequences, returned


def test_per_base_and_binned_scores_and_bedgraphs_agree_with_numpy(tmp_path):
    per_base = GenomePredictionWriter(str(tmp_path / "base.zarr"), str(tmp_path / "base.bedgraph"))
    binned = GenomePredictionWriter(str(tmp_path / "bins.zarr"), str(tmp_path / "bins.bedgraph"), bin_size=7,
                                    bedgraph_bin_size=13, target="G", decimals=2)
    sequences, returned = predict_genome(tmp_path, [per_base, binned], seed=11)
    assert returned is None, "the writer must stop Lightning from keeping every base's prediction in memory"
    base, bins = zarr.open_group(str(tmp_path / "base.zarr"), mode="r"), zarr.open_group(str(tmp_path / "bins.zarr"), mode="r")
    assert base.attrs["label_names"] == ["A", "C", "G", "T"] and base.attrs["bin_size"] == 1 and bins.attrs["bin_size"] == 7
    assert not list(tmp_path.glob("*.partial"))
    regions = {chrom: np.zeros(size, bool) for chrom, size in CHROMS.items()}
    for text in REGIONS:
        chrom, _, span = text.partition(":")
        start, end = map(int, span.split("-")) if span else (0, CHROMS[chrom])
        regions[chrom][start:end] = True
    for chrom, size in CHROMS.items():
        scores = base[chrom][:].astype(np.float64)
        # predicted: inside a region, and the next base is A, C, G or T (next-base targets)
        next_is_base = np.array([c in "ACGTacgt" for c in sequences[chrom][1:]] + [False])
        np.testing.assert_array_equal(~np.isnan(scores).any(1), regions[chrom] & next_is_base)
        np.testing.assert_allclose(scores[~np.isnan(scores[:, 0])].sum(1), 1, atol=1e-5)
        assert bins[chrom].shape == (-(-size // 7), 4)
        np.testing.assert_allclose(bins[chrom][:], bin_means(scores, 7), rtol=0, atol=1e-6)
    check_bedgraph(read_bedgraph(tmp_path / "base.bedgraph"), {c: base[c][:, 3].astype(np.float64) for c in CHROMS}, CHROMS, 1)
    check_bedgraph(read_bedgraph(tmp_path / "bins.bedgraph"),
                   {c: bin_means(base[c][:].astype(np.float64), 13)[:, 2] for c in CHROMS}, CHROMS, 13, decimals=2)


@pytest.mark.parametrize("bin_size", [1, 5, 64])
def test_bin_means_and_runs_across_arbitrary_batches(tmp_path, bin_size):
    """Positions with gaps, fed in random pieces, give numpy's bin means; long equal stretches merge."""
    rng = np.random.default_rng(bin_size)
    size = 2000
    values = np.full((size, 2), np.nan)
    kept = rng.random(size) < 0.8
    kept[300:420], kept[1000:1300] = False, True  # a gap of whole bins; a stretch without one
    values[kept] = rng.random((kept.sum(), 2)).round(1)  # few distinct values: runs to merge
    values[1000:1300] = 0.25  # a long constant stretch: one bedGraph line whatever the bin size
    positions = np.flatnonzero(kept)
    cuts = np.sort(rng.choice(np.arange(1, len(positions)), 12, replace=False))
    means, path = BinMeans(bin_size, 2), tmp_path / "runs.bedgraph"
    stored = np.full((-(-size // bin_size), 2), np.nan)
    with open(path, "w") as handle:
        handle.write("track type=bedGraph\n")
        runs = BedGraphRuns(handle, bin_size, decimals=3)
        for index, mean in [means.add(piece, values[piece]) for piece in np.split(positions, cuts)] + [means.flush()]:
            stored[index] = mean
            runs.add("chrA", size, index, mean[:, 1])
        runs.close()
    expected = bin_means(values, bin_size)
    np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-12)
    check_bedgraph(read_bedgraph(path), {"chrA": expected[:, 1]}, {"chrA": size}, bin_size)
    lines = read_bedgraph(path)
    inner_start, inner_end = -(-1000 // bin_size) * bin_size, 1300 // bin_size * bin_size  # the bins inside the stretch
    constant = lines[(lines["start"] <= inner_start) & (lines["end"] >= inner_end)]
    assert len(constant) == 1 and constant["value"].iloc[0] == 0.25


def fake_run(tmp_path, writer):
    info = DataInfo(TokenInput(6), label_names=["other", "CDS"])
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(chrom_sizes={"chrA": 500, "chrB": 300}, data_info=info), log_dir=str(tmp_path),
        default_root_dir=str(tmp_path), predict_loop=SimpleNamespace(return_predictions=True),
    )
    module = SimpleNamespace(data_info=info)
    writer.setup(trainer, module, "predict")
    writer.on_predict_start(trainer, module)
    return trainer, module


def rows(chrom: str, start: int, end: int) -> pd.DataFrame:
    return pd.DataFrame({"chrom": chrom, "position": np.arange(start, end), "prob_other": 0.5, "prob_CDS": 0.5})


@pytest.mark.parametrize("batches", [
    [("chrA", 100, 200), ("chrA", 150, 250)],  # overlapping windows
    [("chrA", 100, 200), ("chrB", 0, 100), ("chrA", 300, 400)],  # a chromosome comes back
])
def test_windows_out_of_genome_order_are_refused_and_leave_no_output(tmp_path, batches):
    writer = GenomePredictionWriter(bin_size=10)
    trainer, module = fake_run(tmp_path, writer)
    with pytest.raises(ConfigError, match="genome order"):
        for chrom, start, end in batches:
            writer.write_on_batch_end(trainer, module, rows(chrom, start, end), None, None, 0, 0)
    writer.on_exception(trainer, module, RuntimeError())
    assert not list(tmp_path.iterdir())


def test_positions_going_back_inside_one_batch_are_named_as_they_are(tmp_path):
    writer = GenomePredictionWriter(bin_size=10)
    trainer, module = fake_run(tmp_path, writer)
    writer.write_on_batch_end(trainer, module, rows("chrA", 0, 50), None, None, 0, 0)
    batch = pd.concat([rows("chrA", 100, 200), rows("chrA", 150, 250)], ignore_index=True)
    with pytest.raises(ConfigError, match=r"chrA positions go back \(to 150 after 199\)"):
        writer.write_on_batch_end(trainer, module, batch, None, None, 1, 0)
    writer.on_exception(trainer, module, RuntimeError())


def test_a_users_folder_at_the_output_path_survives_and_a_previous_output_is_replaced(tmp_path):
    users = tmp_path / "scores.zarr"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    writer = GenomePredictionWriter(str(users), str(tmp_path / "scores.bedgraph"))
    with pytest.raises(ConfigError, match=f"^{users} exists and is not a seqpipe genome predictions zarr: refusing"):
        fake_run(tmp_path, writer)
    writer.on_exception(None, None, ConfigError())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.zarr"] and (users / "notes.txt").read_text() == "mine"
    # a previous output of the writer is replaced
    writer = GenomePredictionWriter(str(tmp_path / "ours.zarr"), str(tmp_path / "ours.bedgraph"))
    for end in (100, 200):
        trainer, module = fake_run(tmp_path, writer)
        writer.write_on_batch_end(trainer, module, rows("chrA", 0, end), None, None, 0, 0)
        writer.on_predict_end(trainer, module)
        scores = zarr.open_group(str(tmp_path / "ours.zarr"), mode="r")["chrA"][:]
        assert np.isfinite(scores[:end]).all() and np.isnan(scores[end:]).all()
        assert read_bedgraph(tmp_path / "ours.bedgraph")["end"].max() == end
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.replaced-*"))


@pytest.mark.parametrize("option", ["bin_size", "bedgraph_bin_size"])
@pytest.mark.parametrize("value", [0, -3])
def test_bad_bin_size_names_the_option(option, value):
    with pytest.raises(ConfigError, match=f"GenomePredictionWriter {option} must be a whole number of bases >= 1, got {value}"):
        GenomePredictionWriter(**{option: value})


@pytest.mark.parametrize("bin_size", [1, 7])
def test_bigwig_read_back_equals_the_zarr_values(tmp_path, bin_size, capsys):
    """pyBigWig reads back the zarr values base by base (NaN where nothing was predicted), per base and per bin."""
    writer = GenomePredictionWriter(str(tmp_path / "p.zarr"), str(tmp_path / "p.bedgraph"), bin_size=bin_size,
                                    target="G", bigwig_path=str(tmp_path / "p.bw"))
    predict_genome(tmp_path, [writer], seed=3)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    bigwig = pyBigWig.open(str(tmp_path / "p.bw"))
    assert bigwig.chroms() == CHROMS
    for chrom, size in CHROMS.items():
        expected = np.repeat(group[chrom][:, 2], bin_size)[:size]  # column G, each bin over its bases
        assert not np.isnan(expected).all() and (chrom != "chrA" or np.isnan(expected).any())  # REGIONS leave gaps in chrA
        np.testing.assert_array_equal(bigwig.values(chrom, 0, size, numpy=True), expected)
    bigwig.close()
    assert not list(tmp_path.glob("*.partial"))
    # the stand-alone converter writes the same file; it replaces its own output, never a user's file
    assert bigwig_main(["--predictions", str(tmp_path / "p.zarr"), "--out", str(tmp_path / "q.bw"), "--target", "G"]) == 0
    again = pyBigWig.open(str(tmp_path / "q.bw"))
    np.testing.assert_array_equal(again.values("chrB", 0, CHROMS["chrB"], numpy=True),
                                  np.repeat(group["chrB"][:, 2], bin_size)[:CHROMS["chrB"]])
    assert bigwig_main(["--predictions", str(tmp_path / "p.zarr"), "--out", str(tmp_path / "q.bw"), "--target", "G"]) == 0
    (tmp_path / "mine.bw").write_bytes(b"a user's file")
    assert bigwig_main(["--predictions", str(tmp_path / "p.zarr"), "--out", str(tmp_path / "mine.bw")]) == 2
    assert capsys.readouterr().err.strip().endswith("mine.bw exists and is not a seqpipe genome predictions bigWig: "
                                                     "refusing to replace it (move it away or choose another output path)")
    assert (tmp_path / "mine.bw").read_bytes() == b"a user's file"


@needs_proc
def test_a_store_the_converter_cannot_finish_leaves_no_bigwig_and_no_open_file(tmp_path, capsys):
    writer = GenomePredictionWriter(str(tmp_path / "p.zarr"), str(tmp_path / "p.bedgraph"), bin_size=1, target="G")
    predict_genome(tmp_path, [writer], seed=3)
    shutil.rmtree(tmp_path / "p.zarr" / "chrB")
    assert bigwig_main(["--predictions", str(tmp_path / "p.zarr"), "--out", str(tmp_path / "q.bw")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"seqpipe: error: {tmp_path / 'p.zarr'}: no array for chromosome 'chrB' of its chrom_sizes: not a complete prediction store"]
    assert not list(tmp_path.glob("*q.bw*")) and open_files_under(tmp_path) == []


def test_bigwig_of_another_seqpipe_store_names_what_it_is(tmp_path, capsys):
    group = zarr.open_group(str(tmp_path / "emb.zarr"), mode="w")
    group.attrs["seqpipe_output"] = "embeddings zarr"
    assert bigwig_main(["--predictions", str(tmp_path / "emb.zarr"), "--out", str(tmp_path / "x.bw")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"seqpipe: error: {tmp_path / 'emb.zarr'}: a seqpipe embeddings zarr without label_names, bin_size, chrom_sizes: "
        "seqpipe bigwig reads the genome predictions of a per-base model (genome_predictions.zarr of seqpipe predict)"]
    assert not list(tmp_path.glob("x.bw*"))
