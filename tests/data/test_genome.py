"""Genome windows: FASTA access (plain, gzip, bgzip), GFF tracks, samplers, splits, padding and masks."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
import zarr

from genome_fixtures import CHROMS, write_genome, write_gff
from seqpipe.callbacks import SequenceLengthWarmup
from seqpipe.cli import main
from seqpipe.data.genome import GenomeData, GenomeWindowDataset, read_bed
from seqpipe.data.genome_io import Genome, Track, compression
from seqpipe.data.gff_track import build_track, main as gff_track_main
from seqpipe.data.samplers import (
    GridWindowSampler, Interval, RandomWindowSampler, Window, parse_region, split_intervals,
)
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.errors import ConfigError, DataError

TOKENIZER = DNATokenizer()


@pytest.fixture
def genome_files(tmp_path):
    fasta, sequences = write_genome(tmp_path, seed=1)
    masks = write_gff(tmp_path / "genes.gff", seed=2)
    build_track(tmp_path / "genes.gff", fasta, tmp_path / "cds.zarr", ["CDS"])
    return fasta, sequences, masks, tmp_path / "cds.zarr"


@pytest.mark.parametrize("kind", ["none", "gzip", "bgzip"])
def test_genome_reads_every_compression_like_the_sequence(tmp_path, kind):
    fasta, sequences = write_genome(tmp_path, seed=3, compression=kind)
    assert compression(fasta) == kind
    genome = Genome(fasta, cache=tmp_path / "cache")
    assert genome.chrom_sizes == CHROMS
    rng = np.random.default_rng(0)
    for chrom, sequence in sequences.items():
        for _ in range(5):
            start = int(rng.integers(0, len(sequence) - 50))
            np.testing.assert_array_equal(genome.read(chrom, start, start + 50), TOKENIZER.encode_array(sequence[start:start + 50]))
    if kind == "gzip":  # decompressed once, into the cache, and reused
        assert genome.path.parent.parent == tmp_path / "cache"
        assert Genome(fasta, cache=tmp_path / "cache").path == genome.path
    assert sorted(p.name for p in fasta.parent.iterdir()) == ["cache", fasta.name]  # no index beside the user's FASTA


def test_an_index_beside_the_fasta_is_used_and_an_edited_fasta_indexed_anew(tmp_path):
    fasta, sequences = write_genome(tmp_path, seed=3)
    Genome(fasta, cache=tmp_path / "cache")
    fasta.write_text(">chrZ\n" + sequences["chrA"][:100] + "\n")  # edited in place: the cached index must not be reused
    assert Genome(fasta, cache=tmp_path / "cache").chrom_sizes == {"chrZ": 100}
    beside = fasta.with_name(fasta.name + ".fai")
    beside.write_text("chrZ\t50\t6\t100\t101\n")  # the user's own index (samtools faidx) is the one read
    assert Genome(fasta, cache=tmp_path / "cache").chrom_sizes == {"chrZ": 50}
    beside.write_text("chrZ\t50\t9\t100\t101\n")  # newer, but of another FASTA (offset 9): not read shifted
    assert Genome(fasta, cache=tmp_path / "cache").chrom_sizes == {"chrZ": 100}
    beside.write_text("chrZ\t50\t6\t100\t101\n")
    os.utime(beside, ns=(0, 0))  # older than the FASTA: pyfaidx would rewrite it, so the cache's is used instead
    assert Genome(fasta, cache=tmp_path / "cache").chrom_sizes == {"chrZ": 100}
    assert beside.read_text() == "chrZ\t50\t6\t100\t101\n" and beside.stat().st_mtime_ns == 0


def test_a_bgzip_fasta_with_a_fai_but_no_gzi_beside_it_gets_both_in_the_cache(tmp_path):
    fasta, _ = write_genome(tmp_path, seed=3, compression="bgzip")
    Genome(fasta, cache=tmp_path / "one")
    [made] = (tmp_path / "one" / "index").glob("*.fai")
    fasta.with_name(fasta.name + ".fai").write_bytes(made.read_bytes())  # as if the user had run samtools faidx
    Genome(fasta, cache=tmp_path / "two")
    assert sorted(p.name for p in fasta.parent.iterdir()) == sorted(["one", "two", fasta.name, fasta.name + ".fai"])


def test_read_off_chromosome_ends_is_n(genome_files):
    fasta, sequences, _, _ = genome_files
    genome = Genome(fasta)
    ids = genome.read("chrC", -4, 904)
    assert (ids[:4] == 5).all() and (ids[-4:] == 5).all()
    np.testing.assert_array_equal(ids[4:-4], TOKENIZER.encode_array(sequences["chrC"]))


def test_genome_handle_reopens_after_pickling(genome_files):
    import pickle

    genome = Genome(genome_files[0])
    genome.read("chrA", 0, 10)
    clone = pickle.loads(pickle.dumps(genome))
    assert clone._fasta is None
    np.testing.assert_array_equal(clone.read("chrA", 5, 25), genome.read("chrA", 5, 25))


def test_gff_track_matches_the_features(genome_files, tmp_path, capsys):
    _, _, masks, track_path = genome_files
    group = zarr.open_group(str(track_path), mode="r")
    assert list(group.attrs["label_names"]) == ["other", "CDS"]
    for chrom, mask in masks.items():
        np.testing.assert_array_equal(group[chrom][:], mask)
    gff_track_main(["--gff", str(tmp_path / "genes.gff"), "--data.fasta", str(genome_files[0]), "--out", str(tmp_path / "again.zarr"), "--feature", "CDS"])
    assert "CDS" in capsys.readouterr().out


def test_gff_track_never_replaces_a_users_folder_but_replaces_its_own_track(genome_files, tmp_path, capsys):
    fasta, _, masks, _ = genome_files
    users = tmp_path / "results"
    users.mkdir()
    (users / "thesis.txt").write_text("keep")
    code = gff_track_main(["--gff", str(tmp_path / "genes.gff"), "--data.fasta", str(fasta), "--out", str(users), "--feature", "CDS"])
    assert code == 2 and capsys.readouterr().err.strip().splitlines() == [
        f"seqpipe: error: {users} exists and is not a seqpipe per-base track: refusing to replace it "
        "(move it away or choose another output path)"]
    assert [p.name for p in users.iterdir()] == ["thesis.txt"] and not (tmp_path / "results.partial").exists()
    # a second run over its own track replaces it (here with another feature: every base 0)
    track = tmp_path / "genes.zarr"
    for feature, expected in (("CDS", masks), ("gene_X", {c: np.zeros_like(m) for c, m in masks.items()})):
        if feature == "gene_X":
            with open(tmp_path / "genes.gff", "a") as gff:
                gff.write("chrA\tsim\tgene_X\t1\t1\t.\t+\t.\tID=x\n")
            expected = {**expected, "chrA": np.r_[1, np.zeros(CHROMS["chrA"] - 1, np.uint8)]}
        gff_track_main(["--gff", str(tmp_path / "genes.gff"), "--data.fasta", str(fasta), "--out", str(track), "--feature", feature])
        group = zarr.open_group(str(track), mode="r")
        assert list(group.attrs["label_names"]) == ["other", feature]
        for chrom in CHROMS:
            np.testing.assert_array_equal(group[chrom][:], expected[chrom])
    assert sorted(p.name for p in tmp_path.glob("genes.zarr*")) == ["genes.zarr"]


@pytest.mark.parametrize("lines, message", [
    ("chrZ\tsim\tCDS\t1\t10\t.\t+\t0\tID=x\n", "bad.gff, line 1: feature on 'chrZ', which is not a record of the FASTA$"),
    ("chrC\tsim\tCDS\t850\t950\t.\t+\t0\tID=x\n", r"bad.gff, line 1: span 850-950 is not within 1-\d+$"),
    ("chrC\tsim\tCDS\t1\t10\t.\t+\t0\tID=x\nchrC\tsim\tCDS\tabc\t200\t.\t+\t0\tID=y\n",
     "bad.gff, line 2: start 'abc' is not an integer$"),
    ("chrC\tsim\tCDS\t100\t2x0\t.\t+\t0\tID=x\n", "bad.gff, line 1: end '2x0' is not an integer$"),
    ("chrC\tsim\tCDS\t300\t200\t.\t+\t0\tID=x\n", "bad.gff, line 1: start 300 is after end 200$"),
])
def test_gff_track_rejects_features_off_the_genome(genome_files, tmp_path, lines, message):
    bad = tmp_path / "bad.gff"
    bad.write_text(lines)
    with pytest.raises(DataError, match=message):
        build_track(bad, genome_files[0], tmp_path / "bad.zarr", ["CDS"])
    assert not (tmp_path / "bad.zarr").exists()


def test_gff_track_refuses_a_truncated_gff(genome_files, tmp_path):
    truncated = tmp_path / "truncated.gff.gz"
    truncated.write_bytes(gzip.compress(b"chrA\tsim\tCDS\t1\t10\t.\t+\t0\tID=x\n" * 50)[:60])
    with pytest.raises(DataError, match="truncated.gff.gz: cannot be read as a \\(gzipped\\) text GFF file"):
        build_track(truncated, genome_files[0], tmp_path / "bad.zarr", ["CDS"])
    assert not (tmp_path / "bad.zarr").exists()


def test_gff_track_checks_the_fasta_as_fit_does(genome_files, tmp_path):
    fasta, sequences, _, track = genome_files
    text = fasta.read_text()
    bad = tmp_path / "bad.fa"
    bad.write_text(text.replace(sequences["chrB"][:60], sequences["chrB"][:6] + "!" + sequences["chrB"][7:60], 1))
    with pytest.raises(DataError, match=r"bad.fa, record 'chrB'.*: character '!' at position 7 is not a nucleotide"):
        build_track(tmp_path / "genes.gff", bad, track, ["CDS"])
    assert sorted(p.name for p in tmp_path.glob("cds.zarr*")) == ["cds.zarr"]  # the earlier track, untouched
    assert zarr.open_group(str(track), mode="r").attrs["source"]["fasta"] == str(fasta)


def test_gff_track_without_the_feature_lists_the_types_there_are(genome_files, tmp_path, capsys):
    gff = tmp_path / "genes.gff"
    counts = {kind: gff.read_text().count(f"\t{kind}\t") for kind in ("CDS", "gene")}
    assert gff_track_main(["--gff", str(gff), "--data.fasta", str(genome_files[0]), "--out", str(tmp_path / "lower.zarr"), "--feature", "cds"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: {gff}: no features of type ['cds']; its types are CDS ({counts['CDS']}), gene ({counts['gene']})"]
    assert gff_track_main(["--gff", str(gff), "--data.fasta", str(genome_files[0]), "--out", str(tmp_path / "one.zarr"), "--feature", "CDS", "--feature", "rRNA"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: {gff}: no features of type ['rRNA']; its types are CDS ({counts['CDS']}), gene ({counts['gene']})"]
    assert gff_track_main(["--gff", str(gff), "--data.fasta", str(genome_files[0]), "--out", str(tmp_path / "end.zarr"), "--feature", "CDS:middle"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: {gff}: no features of type ['CDS:middle'] ('CDS:middle': the part after ':' names an end, "
        f"'start' or 'end'); its types are CDS ({counts['CDS']}), gene ({counts['gene']})"]
    many = tmp_path / "many.gff"
    many.write_text("".join(f"chrA\tsim\ttype{k:02d}\t1\t10\t.\t+\t.\tID=x{k}\n" for k in range(12)) + "##FASTA\n>chrA\n")
    with pytest.raises(DataError, match=r"its types are type00 \(1\), .*, type09 \(1\) and 2 more$"):
        build_track(many, genome_files[0], tmp_path / "x.zarr", ["CDS"])
    (tmp_path / "empty.gff").write_text("##gff-version 3\n")
    with pytest.raises(DataError, match=r"no features of type \['CDS'\]; it has no feature lines$"):
        build_track(tmp_path / "empty.gff", genome_files[0], tmp_path / "x.zarr", ["CDS"])
    assert not list(tmp_path.glob("*.zarr.partial")) and not (tmp_path / "x.zarr").exists()


def test_track_must_match_the_genome(genome_files, tmp_path):
    group = zarr.open_group(str(tmp_path / "short.zarr"), mode="w")
    for chrom, size in CHROMS.items():
        group.create_array(chrom, shape=(size - (chrom == "chrB"),), dtype="uint8")
    with pytest.raises(DataError, match="chrB"):
        Track(tmp_path / "short.zarr", CHROMS)


def test_regions_and_splits_never_overlap():
    assert parse_region("chrA:10-20", CHROMS) == [Interval("chrA", 10, 20)]
    assert parse_region("*:50%-100%", CHROMS)[1] == Interval("chrB", 850, 1700)
    assert parse_region("chrB:99.5%-100%", CHROMS) == [Interval("chrB", round(1700 * 0.995), 1700)]
    assert parse_region("chrA:1,000-2,000", CHROMS) == [Interval("chrA", 1000, 2000)]
    with pytest.raises(ConfigError, match="expected 'chrom'"):
        parse_region("chrA:1.5-20", CHROMS)  # a decimal position is not a base
    with pytest.raises(ConfigError, match="chrA:20-10 is empty$"):
        parse_region("chrA:20-10", CHROMS)
    with pytest.raises(ConfigError, match=r"chrC:800-1000 ends past the chromosome's end \(length 900\)$"):
        parse_region("chrC:800-1000", CHROMS)
    splits = split_intervals(CHROMS, ["chrC"], ["chrA:2000-3000", "chrB:0-100"])
    covered = np.zeros(sum(CHROMS.values()), dtype=int)
    offsets = dict(zip(CHROMS, np.cumsum([0, *CHROMS.values()])))
    for intervals in splits.values():
        for chrom, start, end in intervals:
            covered[offsets[chrom] + start:offsets[chrom] + end] += 1
    assert (covered == 1).all()  # every base in exactly one split
    with pytest.raises(ConfigError, match="overlap"):
        split_intervals(CHROMS, ["chrA:0-500"], ["chrA:400-600"])


def test_random_windows_stay_in_their_intervals_and_are_reproducible():
    intervals = split_intervals(CHROMS, [], ["*:80%-100%"])["train"]
    draw = lambda seed: list(RandomWindowSampler(intervals, 256, 200, "length", torch.Generator().manual_seed(seed)))
    windows = draw(0)
    assert windows == draw(0) and windows != draw(1)
    for window in windows:
        interval = next(i for i in intervals if i.chrom == window.chrom)
        assert interval.start <= window.keep_start < window.keep_end <= interval.end
        assert window.end - window.start == 256
    chromosome_counts = {c: sum(w.chrom == c for w in windows) for c in CHROMS}
    assert chromosome_counts["chrA"] > chromosome_counts["chrC"]  # length-weighted
    uniform = list(RandomWindowSampler(intervals, 256, 3000, "uniform", torch.Generator().manual_seed(0)))
    shares = [sum(w.chrom == c for w in uniform) / 3000 for c in CHROMS]
    assert all(abs(share - 1 / 3) < 0.05 for share in shares)


@pytest.mark.parametrize("stride", [100, 64, 37])
def test_grid_keeps_tile_each_interval_exactly_once(stride):
    intervals = [Interval("chrA", 0, 3000), Interval("chrC", 250, 900)]
    windows = list(GridWindowSampler(intervals, 100, stride))
    assert len(windows) == len(GridWindowSampler(intervals, 100, stride))
    for interval in intervals:
        kept = [(w.keep_start, w.keep_end) for w in windows if w.chrom == interval.chrom]
        assert kept[0][0] == interval.start and kept[-1][1] == interval.end
        assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))
    assert all(w.end - w.start == 100 and w.start <= w.keep_start and w.keep_end <= w.end for w in windows)
    assert all(w.continues == (stride == 100 and w.keep_start > 0 and w.keep_start != 250) for w in windows)


def test_dataset_pads_and_masks_chromosome_ends(genome_files):
    fasta, sequences, masks, track_path = genome_files
    genome = Genome(fasta)
    dataset = GenomeWindowDataset(genome, "track", Track(track_path, genome.chrom_sizes), ["other", "CDS"])
    item = dataset[Window("chrC", 850, 950, 850, 950)]
    assert item["x"].shape == (100,) and (item["x"][50:] == 5).all()
    assert item["mask"][:50].all() and not item["mask"][50:].any()
    np.testing.assert_array_equal(item["y"][:50].numpy(), masks["chrC"][850:])
    lm = GenomeWindowDataset(genome, "next_base")[Window("chrB", 10, 30, 10, 30)]
    next_ids = TOKENIZER.encode_array(sequences["chrB"][11:31])
    np.testing.assert_array_equal(lm["y"][lm["mask"]].numpy(), next_ids[lm["mask"].numpy()] - 1)
    assert lm["mask"].numpy().tolist() == ((next_ids >= 1) & (next_ids <= 4)).tolist()


def test_data_module_splits_by_region(genome_files):
    fasta, _, _, track_path = genome_files
    data = GenomeData(
        str(fasta), track=str(track_path), window_length=128, val_regions=["chrC"], test_regions=["chrA:80%-100%", "chrB:0-300"],
        windows_per_epoch=50, batch_size=4,
    )
    with pytest.raises(ConfigError):
        GenomeData(str(fasta), track=str(track_path), val_regions=["chrC"], test_regions=["chrC:0-10"]).setup("fit")
    data.setup("fit")
    assert data.data_info.label_names == ["other", "CDS"] and data.data_info.input.vocab_size == 6
    train_scored = _scored(data.train_dataloader())
    for split in ("val", "test"):
        held_out = _scored(getattr(data, f"{split}_dataloader")())
        assert not train_scored & held_out
        expected = {(i.chrom, p) for i in data.intervals[split] for p in range(i.start, i.end)}
        assert held_out == expected  # every held-out base scored exactly once


def _scored(loader) -> set[tuple[str, int]]:
    scored = set()
    for batch in loader:
        assert batch["x"].shape[1] == batch["mask"].shape[1]
        for row, chrom in enumerate(batch["chrom"]):
            positions = int(batch["start"][row]) + torch.nonzero(batch["mask"][row]).squeeze(1)
            scored |= {(chrom, p) for p in positions.tolist()}
    return scored


def test_bed_windows_with_labels_and_splits(genome_files, tmp_path):
    fasta = genome_files[0]
    bed = tmp_path / "windows.bed"
    bed.write_text("track name=x\nchrA\t100\t200\tpos\ttrain\nchrA\t900\t1000\tneg\ttrain\nchrB\t5\t105\tpos\tval\n"
                   "chrC\t500\t600\tneg\ttest\n")
    data = GenomeData(str(fasta), target="window_class", bed=str(bed), label_column=3, split_column=4, window_length=64)
    data.setup("fit")
    assert data.data_info.label_names == ["neg", "pos"]
    batch = next(iter(data.val_dataloader()))
    assert batch["y"].tolist() == [1] and batch["x"].shape == (1, 64) and int(batch["start"][0]) == 23
    no_split = GenomeData(str(fasta), target="window_class", bed=str(bed), label_column=3, window_length=64, test_regions=["chrC"])
    no_split.setup("fit")
    assert [w.chrom for w in no_split.bed_windows["test"]] == ["chrC"]
    with pytest.warns(UserWarning, match="SequenceLengthWarmup is not applied: data.bed .* fixes every window"):
        data.length_warmup = SequenceLengthWarmup([{"epochs": 1, "window_length": 32, "batch_size": 8}])
    assert data.length_warmup is None and data.training_window(64, 4) == (64, 4)
    bed.write_text("chrQ\t1\t10\tpos\n")
    with pytest.raises(DataError, match="chrQ"):
        read_bed(bed, CHROMS, 3)
    # column 6 read as the label or the split, not as a strand
    bed.write_text("chrA\t100\t200\tx\t0\ttrain\nchrA\t300\t400\ty\t0\tval\n")
    assert [(row.window.strand, row.split) for row in read_bed(bed, CHROMS, 3, 5)] == [("+", "train"), ("+", "val")]
    assert [row.window.label for row in read_bed(bed, CHROMS, 5)] == ["train", "val"]


def test_bad_inputs_raise_with_the_file_named(tmp_path, genome_files):
    with pytest.raises(DataError, match="no such FASTA"):
        Genome(tmp_path / "missing.fa")
    with pytest.raises(ConfigError, match="track"):
        GenomeData(str(genome_files[0]), target="track").setup("fit")
    with pytest.raises(ConfigError, match="window_length"):
        GenomeData(str(genome_files[0]), track="x.zarr", window_length=(1 << 20) + 1).setup("fit")
    with pytest.raises(ConfigError, match="overlap"):
        GenomeData(str(genome_files[0]), track="x.zarr", stream=True, predict_overlap=8).setup("predict")
    for option, value in (("batch_size", 0), ("windows_per_epoch", -1), ("eval_stride", 0)):
        with pytest.raises(ConfigError, match=f"data.{option} must be a positive integer, got {value}"):
            GenomeData(str(genome_files[0]), **{option: value})
    with pytest.raises(ConfigError, match="data.shift_augment must be 0 .off. or a positive number of bases, got -1"):
        GenomeData(str(genome_files[0]), shift_augment=-1)
    bed = tmp_path / "rows.bed"
    bed.write_text("chrA\t100\t200\tx\t0\tval\n")
    data = GenomeData(str(genome_files[0]), track=str(genome_files[3]), window_length=256, bed=str(bed), split_column=5)
    data.setup("fit")
    with pytest.raises(ConfigError, match=f"no train windows: no row of data.bed {bed} is in the training split"):
        data.train_dataloader()
    data = GenomeData(str(genome_files[0]), track=str(genome_files[3]), window_length=256)
    data.setup("test")
    with pytest.raises(ConfigError, match="no test windows: set data.test_regions"):
        data.test_dataloader()
    (tmp_path / "uneven.fa").write_text(">chrX\nACGTACGT\nACG\nACGTACGT\n")
    with pytest.raises(DataError, match=r"uneven.fa, record 'chrX', line 3: a sequence line of another length .* seqkit"):
        Genome(tmp_path / "uneven.fa", tmp_path / "cache").read("chrX", 0, 4)
    (tmp_path / "bad.fa").write_text(">chrX\nACGT?ACGT\n")
    with pytest.raises(DataError, match="bad.fa"):
        Genome(tmp_path / "bad.fa").read("chrX", 0, 9)


def test_a_corrupt_gzip_genome_is_one_error_and_leaves_nothing_in_the_cache(tmp_path):
    bases = np.random.default_rng(0).choice(list(b"ACGT"), 20000).astype(np.uint8).tobytes()
    packed = bytearray(gzip.compress(b">chrX\n" + bases))
    packed[100:120] = bytes(20)  # damage the deflate stream itself: zlib.error, not a CRC or EOF error
    (tmp_path / "bad.fa.gz").write_bytes(bytes(packed))
    with pytest.raises(DataError, match=r"bad.fa.gz: cannot decompress this gzip FASTA"):
        Genome(tmp_path / "bad.fa.gz", cache=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_bad_character_is_named_by_chromosome_position_before_anything_is_written(tmp_path, capsys):
    """The position is in the chromosome (not in the window that read it), found in setup: the run stops
    before Lightning writes its config or hyperparameters."""
    fasta, sequences = write_genome(tmp_path, seed=3)
    chrB = sequences["chrB"]
    fasta.write_text(fasta.read_text().replace(chrB[:60], chrB[:33] + "X" + chrB[34:60]))
    with pytest.raises(DataError, match=r"genome.fa, record 'chrB': character 'X' at position 34 is not a nucleotide"):
        Genome(fasta).read("chrB", 20, 60)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as error:
        main(["fit", "--data.class_path", "seqpipe.data.genome.GenomeData", "--data.fasta", str(fasta),
              "--data.target", "next_base", "--data.window_length", "64", "--model.head", "seqpipe.tasks.per_base.NextBaseLM",
              "--model.backbone.d_model", "8", "--model.backbone.n_layers", "1", "--trainer.default_root_dir", str(run)])
    assert error.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"seqpipe: error: {fasta}, record 'chrB': character 'X' at position 34 is not a nucleotide "
        "(expected A, C, G, T, U, N or another IUPAC code)"]
    assert not run.exists() or not any(run.rglob("*"))


def test_gff_track_start_and_end_codons_follow_the_strand(genome_files, tmp_path):
    gff = tmp_path / "ends.gff"
    gff.write_text(
        "##gff-version 3\n"
        "chrA\tsim\tCDS\t101\t130\t.\t+\t0\tID=plus\n"
        "chrA\tsim\tCDS\t201\t230\t.\t-\t0\tID=minus\n"
        # one CDS in two parts (a programmed frameshift): its start is that of the first part, its end the last's
        "chrB\tsim\tCDS\t11\t40\t.\t+\t0\tID=split;Name=prfB\n"
        "chrB\tsim\tCDS\t40\t70\t.\t+\t0\tID=split;Name=prfB\n"
        "chrC\tsim\tCDS\t5\t6\t.\t-\t0\t.\n"  # shorter than a codon, no ID: the whole feature
        "chrC\tsim\tgene\t1\t100\t.\t.\t.\tID=g\n"
    )
    counts = build_track(gff, genome_files[0], tmp_path / "ends.zarr", ["CDS", "CDS:start", "CDS:end"])
    expected = {chrom: np.zeros(size, np.uint8) for chrom, size in CHROMS.items()}
    expected["chrA"][100:130] = 1
    expected["chrA"][100:103], expected["chrA"][127:130] = 2, 3  # + strand: start at the left
    expected["chrA"][200:230] = 1
    expected["chrA"][227:230], expected["chrA"][200:203] = 2, 3  # - strand: start at the right
    expected["chrB"][10:70] = 1
    expected["chrB"][10:13], expected["chrB"][67:70] = 2, 3
    expected["chrC"][4:6] = 3  # start and end are the same two bases: the later --feature wins
    group = zarr.open_group(str(tmp_path / "ends.zarr"), mode="r")
    assert list(group.attrs["label_names"]) == ["other", "CDS", "CDS:start", "CDS:end"]
    for chrom in CHROMS:
        np.testing.assert_array_equal(group[chrom][:], expected[chrom])
    assert counts == {name: int(sum((e == k).sum() for e in expected.values()))
                      for k, name in enumerate(["other", "CDS", "CDS:start", "CDS:end"])}


def test_gff_track_start_and_end_need_a_strand_and_one_place(genome_files, tmp_path):
    gff = tmp_path / "bad.gff"
    gff.write_text("chrA\tsim\tCDS\t101\t130\t.\t.\t0\tID=x\n")
    build_track(gff, genome_files[0], tmp_path / "ok.zarr", ["CDS"])  # a mask needs no strand
    with pytest.raises(DataError, match=r"bad.gff.*line 1.*strand '\.'"):
        build_track(gff, genome_files[0], tmp_path / "bad.zarr", ["CDS:start"])
    gff.write_text("chrA\tsim\tCDS\t101\t130\t.\t+\t0\tID=x\nchrA\tsim\tCDS\t140\t160\t.\t-\t0\tID=x\n")
    with pytest.raises(DataError, match=r"line 2.*CDS x: this part is on chrA -, the part on line 1 on chrA \+"):
        build_track(gff, genome_files[0], tmp_path / "bad.zarr", ["CDS:end"])
    with pytest.raises(ConfigError, match="twice"):
        build_track(gff, genome_files[0], tmp_path / "bad.zarr", ["CDS:end", "CDS", "CDS:end"])
    with pytest.raises(ConfigError, match="':start'"):
        build_track(gff, genome_files[0], tmp_path / "bad.zarr", [":start"])
    assert not (tmp_path / "bad.zarr").exists()


def test_gff_track_joins_parts_by_parent_and_refuses_a_feature_across_the_origin(genome_files, tmp_path):
    gff = tmp_path / "parts.gff"
    # GTF-converted GFF: CDS parts with a Parent only; the transcript's start is the first part's, its end the last's
    gff.write_text("chrA\tsim\tCDS\t101\t130\t.\t+\t0\tParent=t1\nchrA\tsim\tCDS\t151\t180\t.\t+\t0\tParent=t1\n")
    build_track(gff, genome_files[0], tmp_path / "parts.zarr", ["CDS:start", "CDS:end"])
    values = zarr.open_group(str(tmp_path / "parts.zarr"), mode="r")["chrA"][:]
    assert np.flatnonzero(values == 1).tolist() == [100, 101, 102] and np.flatnonzero(values == 2).tolist() == [177, 178, 179]
    # GTF: the CDS exons of one transcript_id are one feature, on either strand
    gtf = tmp_path / "parts.gtf"
    gtf.write_text('chrA\tsim\tCDS\t101\t130\t.\t-\t0\tgene_id "g1"; transcript_id "t1";\n'
                   'chrA\tsim\tCDS\t151\t180\t.\t-\t0\tgene_id "g1"; transcript_id "t1";\n')
    build_track(gtf, genome_files[0], tmp_path / "gtf.zarr", ["CDS:start", "CDS:end"])
    values = zarr.open_group(str(tmp_path / "gtf.zarr"), mode="r")["chrA"][:]
    assert np.flatnonzero(values == 1).tolist() == [177, 178, 179] and np.flatnonzero(values == 2).tolist() == [100, 101, 102]
    size = CHROMS["chrA"]
    gff.write_text(f"chrA\tsim\tCDS\t1\t60\t.\t+\t0\tID=ori\nchrA\tsim\tCDS\t{size - 59}\t{size}\t.\t+\t0\tID=ori\n")
    with pytest.raises(DataError, match=r"parts.gff.*line 2.*CDS ori: its parts reach both ends of chrA"):
        build_track(gff, genome_files[0], tmp_path / "ori.zarr", ["CDS:start"])
    assert not (tmp_path / "ori.zarr").exists()


def test_numbered_chromosomes_are_names_in_region_lists(tmp_path):
    """Ensembl names chromosomes 1, 2, X: a command line's [2] is a list of one number, read as the name "2"."""
    from jsonargparse import ArgumentParser

    fasta = tmp_path / "numbered.fa"
    fasta.write_text(">1\n" + "ACGT" * 100 + "\n>2\n" + "GGCA" * 50 + "\n>X\n" + "TTAG" * 25 + "\n")
    parser = ArgumentParser()
    parser.add_class_arguments(GenomeData, "data")
    options = parser.parse_args(["--data.fasta", str(fasta), "--data.target", "next_base", "--data.val_regions", "[2]",
                                 "--data.predict_regions", "[X, 1:0-40]"])
    data = GenomeData(**options.data)
    data.setup("fit")
    assert data.intervals["val"] == [Interval("2", 0, 200)]
    data.setup("predict")  # in FASTA order, whatever the order given
    assert data.intervals["predict"] == [Interval("1", 0, 40), Interval("X", 0, 100)]
