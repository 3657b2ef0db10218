"""Genome inputs beside FASTA + zarr: bigWig class tracks (equal to the zarr track they were made from, gaps
not scored), BED edge cases (0-based half-open, windows past the chromosome ends, unknown chromosome as one
line through the CLI), reverse-complement and shift augmentation."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyBigWig
import pytest
import torch

from dna_tool_fixtures import needs_proc, open_files_under
from genome_fixtures import write_genome, write_gff
from seqpipe.cli import main as cli_main
from seqpipe.contracts import DataInfo, TokenInput
from seqpipe.data.bigwig_track import BigWigTrack
from seqpipe.data.dna import DNAClassificationData
from seqpipe.data.genome import GenomeData
from seqpipe.data.gff_track import build_track
from seqpipe.data.pretrain import DNAPretrainData
from seqpipe.data.samplers import Window
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.errors import ConfigError, DataError
from seqpipe.tasks.per_base import PerBaseClassification


@pytest.fixture
def genome(tmp_path):
    fasta, sequences = write_genome(tmp_path, seed=21)
    masks = write_gff(tmp_path / "genes.gff", seed=22)
    build_track(tmp_path / "genes.gff", fasta, tmp_path / "cds.zarr", ["CDS"])
    return str(fasta), sequences, masks


def write_bigwig(path, masks: dict[str, np.ndarray], gap: tuple[str, int, int] | None = None) -> str:
    """The masks as a bigWig of 0/1 values, one entry per base, without data inside ``gap``."""
    handle = pyBigWig.open(str(path), "w")
    handle.addHeader([(c, len(m)) for c, m in masks.items()])
    for chrom, mask in masks.items():
        keep = np.ones(len(mask), bool)
        if gap and gap[0] == chrom:
            keep[gap[1]:gap[2]] = False
        starts = np.flatnonzero(keep)
        handle.addEntries([chrom] * len(starts), starts.tolist(), ends=(starts + 1).tolist(), values=mask[keep].astype(float).tolist())
    handle.close()
    return str(path)


def test_bigwig_track_gives_the_zarr_targets_and_masks_its_gaps(genome, tmp_path):
    fasta, _, masks = genome
    bigwig = write_bigwig(tmp_path / "cds.bw", masks, gap=("chrB", 100, 160))
    from_zarr = GenomeData(fasta, track=str(tmp_path / "cds.zarr"), window_length=200, val_regions=["chrB"])
    from_bigwig = GenomeData(fasta, track=bigwig, track_label_names=["other", "CDS"], window_length=200, val_regions=["chrB"])
    for data in (from_zarr, from_bigwig):
        data.setup("fit")
    assert from_bigwig.data_info.label_names == ["other", "CDS"]
    for a, b in zip(from_zarr.val_dataloader(), from_bigwig.val_dataloader()):
        np.testing.assert_array_equal(a["x"], b["x"])
        both = a["mask"] & b["mask"]
        np.testing.assert_array_equal(a["y"][both], b["y"][both])
        gap = (a["start"][:, None] + torch.arange(200)[None] >= 100) & (a["start"][:, None] + torch.arange(200)[None] < 160)
        np.testing.assert_array_equal(b["mask"], a["mask"] & ~gap)  # the gap, and only the gap, is not scored
    with pytest.raises(ConfigError, match="track_label_names"):
        GenomeData(fasta, track=bigwig, window_length=200).setup("fit")
    bad = dict(masks, chrA=masks["chrA"] * 3)
    data = GenomeData(fasta, track=write_bigwig(tmp_path / "bad.bw", bad), track_label_names=["other", "CDS"], window_length=3000)
    data.setup("fit")
    first = int(np.flatnonzero(masks["chrA"])[0])
    with pytest.raises(DataError, match=rf"bad.bw: chrA:{first + 1}: value 3.0 is not a class index 0..1"):
        data._datasets["val"][Window("chrA", 0, 3000, 0, 3000)]


def test_bed_windows_are_0_based_half_open_and_may_run_off_the_chromosome(genome, tmp_path):
    fasta, sequences, _ = genome
    bed = tmp_path / "w.bed"
    bed.write_text("chrA\t10\t20\tpos\nchrC\t895\t900\tneg\nchrB\t0\t10\tneg\n")
    data = GenomeData(fasta, target="window_class", bed=str(bed), label_column=3, window_length=10)
    data.setup("fit")
    tokenizer = DNATokenizer()
    items = [data._datasets["train"][w] for w in data.bed_windows["train"]]
    assert tokenizer.decode(items[0]["x"]) == sequences["chrA"][10:20].upper()
    # chrC is 900 long: the window 892-902 reads 8 bases and 2 Ns, and scores only the 8
    assert tokenizer.decode(items[1]["x"]) == sequences["chrC"][892:900].upper() + "NN"
    assert items[1]["mask"].tolist() == [True] * 8 + [False] * 2
    assert tokenizer.decode(items[2]["x"]) == sequences["chrB"][0:10].upper()


def test_bed_with_an_unknown_chromosome_is_one_line_naming_the_record(genome, tmp_path, capsys):
    fasta, _, _ = genome
    bed = tmp_path / "w.bed"
    bed.write_text("# header\nchrA\t10\t20\tpos\nchr9\t5\t50\tneg\n")
    with pytest.raises(SystemExit):
        cli_main(["fit", "--data", "seqpipe.data.genome.GenomeData", "--data.fasta", fasta, "--data.target", "window_class",
                  "--data.bed", str(bed), "--data.label_column", "3", "--model.backbone.d_model", "8",
                  "--model.head", "seqpipe.tasks.classification.SequenceClassification",
                  "--trainer.logger", "false", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run")])
    assert capsys.readouterr().err.strip().splitlines() == [f"seqpipe: error: {bed}, line 3: chromosome 'chr9' is not in the FASTA"]


def test_a_per_base_head_on_a_class_per_window_is_one_line_naming_the_head_to_use(genome, tmp_path, capsys):
    fasta, _, _ = genome
    bed = tmp_path / "w.bed"
    bed.write_text("".join(f"chrA\t{start}\t{start + 20}\t{'pos' if start % 200 else 'neg'}\n" for start in range(0, 2000, 100)))
    with pytest.raises(SystemExit):
        cli_main(["fit", "--data", "seqpipe.data.genome.GenomeData", "--data.fasta", fasta, "--data.target", "window_class",
                  "--data.bed", str(bed), "--data.label_column", "3", "--data.window_length", "32",
                  "--model.backbone.d_model", "8", "--model.head", "seqpipe.tasks.per_base.PerBaseClassification",
                  "--data.val_regions", "[chrA:0-1000]",
                  "--trainer.logger", "false", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run")])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "seqpipe: error: PerBaseClassification scores every base, but the data gives one class per window (data.target "
        "window_class): use a sequence head, --model.head seqpipe.tasks.classification.SequenceClassification")


def test_reverse_complement_and_shift_augmentation(genome):
    fasta, sequences, masks = genome
    data = GenomeData(fasta, track=str(genome[0]).replace("genome.fa", "cds.zarr"), window_length=50,
                      reverse_complement_augment=True, shift_augment=7)
    data.setup("fit")
    dataset, tokenizer = data._datasets["train"], DNATokenizer()
    window = Window("chrA", 100, 150, 105, 145)
    complement = str.maketrans("ACGTN", "TGCAN")
    seen_rc, shifts = False, set()
    torch.manual_seed(0)
    for _ in range(40):
        item = dataset[window]
        letters = tokenizer.decode(item["x"])
        forward = letters in sequences["chrA"].upper()
        start = (sequences["chrA"].upper().find(letters) if forward
                 else sequences["chrA"].upper().find(letters.translate(complement)[::-1]))
        assert start >= 0 and abs(start - 100) <= 7
        shifts.add(start - 100)
        y, mask = (item["y"], item["mask"]) if forward else (item["y"].flip(0), item["mask"].flip(0))
        seen_rc |= not forward
        scored = start + np.flatnonzero(mask.numpy())
        assert scored.min() >= 105 and scored.max() < 145  # never beyond the original kept span
        np.testing.assert_array_equal(y.numpy(), masks["chrA"][start:start + 50])
    assert seen_rc and len(shifts) > 5
    assert not data._datasets["val"].reverse_complement_p and not data._datasets["val"].max_shift


def test_classification_data_reads_labelled_regions_from_bed(genome, tmp_path):
    fasta, sequences, _ = genome
    bed = tmp_path / "regions.bed"
    rows = [("chrA", 0, 30, "pos"), ("chrA", 40, 70, "neg"), ("chrB", 1670, 1700, "pos"), ("chrC", 7, 37, "neg")] * 3
    bed.write_text("".join(f"{c}\t{s}\t{e}\t{label}\n" for c, s, e, label in rows))
    data = DNAClassificationData(train=str(bed), val=str(bed), fasta=fasta, batch_size=4)
    data.setup("fit")
    assert data.data_info.label_names == ["neg", "pos"]
    train, tokenizer = data.splits["train"], DNATokenizer()
    for (chrom, start, end, label), tokens, y, record_id in zip(rows, train.tokens, train.labels, train.ids):
        assert tokenizer.decode(torch.from_numpy(tokens)) == sequences[chrom][start:end].upper()
        assert record_id == f"{chrom}:{start}-{end}" and data.data_info.label_names[y] == label
    with pytest.raises(ConfigError, match="is a BED file: give data.fasta"):
        DNAClassificationData(train=str(bed), val=str(bed)).setup("fit")
    (tmp_path / "past.bed").write_text("chrA\t0\t30\tpos\nchrB\t1690\t1720\tneg\n")  # chrB is 1,700 bases long
    with pytest.raises(DataError, match=r"past.bed, line 2: chrB:1690-1720 ends past the end of chrB \(1,700 bases"):
        DNAClassificationData(train=str(tmp_path / "past.bed"), fasta=fasta).setup("fit")


def test_classification_data_reads_the_label_column_it_is_given_and_refuses_a_name_for_bed(genome, tmp_path):
    fasta, _, _ = genome
    bed = tmp_path / "scored.bed"
    rows = [("chrA", 0, 30, "x", "pos"), ("chrA", 40, 70, "y", "neg"), ("chrB", 10, 40, "z", "pos"), ("chrC", 7, 37, "w", "neg")]
    bed.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows * 2))
    data = DNAClassificationData(train=str(bed), val=str(bed), fasta=fasta, label_column=4)
    data.setup("fit")
    names = data.data_info.label_names
    assert names == ["neg", "pos"] and [names[y] for y in data.splits["val"].labels] == [row[4] for row in rows * 2]
    with pytest.raises(ConfigError, match=r"data.label_column 'label': .*scored.bed is a BED file, whose label column is given by its 0-based number"):
        DNAClassificationData(train=str(bed), val=str(bed), fasta=fasta, label_column="label").setup("fit")


def reverse_complement(letters: str) -> str:
    return letters.upper().translate(str.maketrans("ACGTN", "TGCAN"))[::-1]


def test_a_minus_strand_bed_row_is_read_as_the_reverse_complement_and_gzip_bed_is_read(genome, tmp_path):
    fasta, sequences, _ = genome
    rows = [("chrA", 0, 30, "pos", "+"), ("chrA", 40, 70, "neg", "-"), ("chrB", 100, 130, "pos", "-"), ("chrC", 7, 37, "neg", ".")] * 2
    text = "".join(f"{c}\t{s}\t{e}\t{label}\t0\t{strand}\n" for c, s, e, label, strand in rows)
    bed = tmp_path / "regions.bed.gz"
    bed.write_bytes(gzip.compress(text.encode()))
    data = DNAClassificationData(train=str(bed), val=str(bed), fasta=fasta, batch_size=4)
    data.setup("fit")
    tokenizer = DNATokenizer()
    for (chrom, start, end, _, strand), tokens, record_id in zip(rows, data.splits["val"].tokens, data.splits["val"].ids):
        forward = sequences[chrom][start:end].upper()
        assert tokenizer.decode(torch.from_numpy(tokens)) == (reverse_complement(forward) if strand == "-" else forward)
        assert record_id == f"{chrom}:{start}-{end}" + ("(-)" if strand == "-" else "")
    windows = GenomeData(fasta, target="window_class", bed=str(bed), label_column=3, window_length=30)
    windows.setup("fit")
    for window, (chrom, start, end, _, strand) in zip(windows.bed_windows["train"], rows):
        item = windows._datasets["val"][window]
        forward = sequences[chrom][start:end].upper()
        assert tokenizer.decode(item["x"]) == (reverse_complement(forward) if strand == "-" else forward)
        assert item["strand"] == ("-" if strand == "-" else "+")


def test_per_base_targets_of_a_minus_strand_window_stay_with_their_bases(genome, tmp_path):
    fasta, sequences, masks = genome
    bed = tmp_path / "w.bed"
    bed.write_text("chrA\t100\t160\tx\t0\t-\nchrA\t200\t260\tx\t0\t+\n")
    data = GenomeData(fasta, track=fasta.replace("genome.fa", "cds.zarr"), bed=str(bed), window_length=60, batch_size=2)
    data.setup("fit")
    batch = next(iter(data.val_dataloader() if data.bed_windows["val"] else data.train_dataloader()))
    for row in range(2):
        start = int(batch["start"][row])
        expected_y = masks["chrA"][start:start + 60]
        expected_x = sequences["chrA"][start:start + 60].upper()
        if batch["strand"][row] == "-":
            expected_y, expected_x = expected_y[::-1], reverse_complement(expected_x)
        np.testing.assert_array_equal(batch["y"][row].numpy(), expected_y)
        assert DNATokenizer().decode(batch["x"][row]) == expected_x
    # a model that outputs its targets: the predictions, back in genome order, are the track
    head = PerBaseClassification()
    logits = torch.nn.functional.one_hot(batch["y"], 2).float() * 10
    rows = head.predictions(logits, batch, DataInfo(TokenInput(6), ["other", "CDS"]))
    for chrom, positions, cds in zip(rows["chrom"], rows["position"], rows["prob_CDS"]):
        assert round(cds) == masks[chrom][positions]


def test_bed_errors_name_the_file_and_line(genome, tmp_path):
    fasta, _, _ = genome
    bed = tmp_path / "w.bed"
    bed.write_text("chrA\t10\t20\tpos\t0\t+\nchrA\t30\t40\tneg\t0\tforward\n")
    with pytest.raises(DataError, match=rf"^{bed}, line 2: strand \(column 6\) 'forward' must be"):
        GenomeData(fasta, target="window_class", bed=str(bed), label_column=3, window_length=10).setup("fit")
    bed.write_text("chrA\t10\t20\tpos\t0\t-\n")
    with pytest.raises(ConfigError, match=r"data.label_column .* with 'next_base' it would be ignored"):
        GenomeData(fasta, target="next_base", bed=str(bed), label_column=3, window_length=10).setup("fit")
    with pytest.raises(DataError, match=rf"^{bed}, line 1: strand '-' with data.target 'next_base'"):
        GenomeData(fasta, target="next_base", bed=str(bed), window_length=10).setup("fit")
    train, val = tmp_path / "train.bed", tmp_path / "val.bed"
    train.write_text("chrA\t10\t20\tpos\nchrA\t30\t40\tneg\n")
    val.write_text("# header\nchrB\t10\t20\tpos\nchrB\t30\t40\tother\n")
    with pytest.raises(DataError, match=rf"^{val}, record 'chrB:30-40', line 3: label 'other' does not occur"):
        DNAClassificationData(train=str(train), val=str(val), fasta=fasta).setup("fit")
    both = tmp_path / "both.bed"
    both.write_text("chrA\t10\t20\tpos\ttrain\nchrA\t30\t40\tneg\ttrain\nchrB\t10\t20\tother\tval\n")
    with pytest.raises(DataError, match=rf"^{both}, line 3: class 'other' does not occur in the training windows"):
        GenomeData(fasta, target="window_class", bed=str(both), label_column=3, split_column=4, window_length=10).setup("fit")


@needs_proc
def test_bigwig_and_genome_files_are_closed_at_teardown_and_after_an_error(genome, tmp_path):
    fasta, _, masks = genome
    data = GenomeData(fasta, track=write_bigwig(tmp_path / "cds.bw", masks), track_label_names=["other", "CDS"],
                      window_length=200, val_regions=["chrB"])
    data.setup("fit")
    next(iter(data.val_dataloader()))
    assert any(path.endswith("cds.bw") for path in open_files_under(tmp_path))
    data.teardown("fit")
    assert open_files_under(tmp_path) == []
    short = dict(masks, chrA=masks["chrA"][:100])
    with pytest.raises(DataError, match="short.bw: chromosome 'chrA' has length 100, the FASTA record has length 3000"):
        BigWigTrack(write_bigwig(tmp_path / "short.bw", short), data.chrom_sizes, ["other", "CDS"])
    assert open_files_under(tmp_path) == []


def test_pretraining_data_names_a_bad_letter_by_file_chromosome_and_position_at_setup(tmp_path):
    fasta, sequences = write_genome(tmp_path, seed=3)
    chrB = sequences["chrB"]
    fasta.write_text(fasta.read_text().replace(chrB[:60], chrB[:33] + "X" + chrB[34:60]))
    with pytest.raises(DataError, match=rf"^{fasta}, record 'chrB': character 'X' at position 34 is not a nucleotide"):
        DNAPretrainData(fasta=[str(fasta)], window_length=64).setup("fit")


def test_a_minus_strand_bed_window_is_cut_like_a_plus_strand_one_read_on_its_strand(genome, tmp_path):
    fasta, sequences, _ = genome
    bed = tmp_path / "odd.bed"
    bed.write_text("chrA\t100\t130\tx\t0\t+\nchrA\t100\t130\ty\t0\t-\n")  # 30 bases into 29: one base must go
    windows = GenomeData(fasta, target="window_class", bed=str(bed), label_column=3, window_length=29)
    windows.setup("fit")
    plus, minus = (windows._datasets["val"][w] for w in windows.bed_windows["train"])
    tokenizer, element = DNATokenizer(), sequences["chrA"][100:130].upper()
    # each drops the element's last base on its own strand: + reads bases 100..128, - reads 129..101
    assert tokenizer.decode(plus["x"]) == element[:29]
    assert tokenizer.decode(minus["x"]) == reverse_complement(element)[:29]


@pytest.mark.parametrize("stream", [False, True])
def test_per_base_prediction_scores_exactly_the_bed_bases_in_genome_order(genome, tmp_path, stream):
    fasta, _, masks = genome
    bed = tmp_path / "w.bed"
    # out of order, one row on "-", one longer than a window, one at a chromosome start
    rows = [("chrA", 1000, 1500, "+"), ("chrB", 0, 30, "+"), ("chrA", 100, 600, "-" if not stream else "+"), ("chrA", 600, 610, "+")]
    bed.write_text("".join(f"{c}\t{s}\t{e}\tx\t0\t{strand}\n" for c, s, e, strand in rows))
    data = GenomeData(fasta, track=fasta.replace("genome.fa", "cds.zarr"), bed=str(bed), window_length=256,
                      predict_overlap=0 if stream else 64, stream=stream, batch_size=3)
    data.setup("predict")
    head, info = PerBaseClassification(), DataInfo(TokenInput(6), ["other", "CDS"])
    predicted = []
    for batch in data.predict_dataloader():
        logits = torch.zeros(*batch["x"].shape, 2)
        predicted.append(head.predictions(logits, batch, info)[["chrom", "position"]])
    predicted = pd.concat(predicted, ignore_index=True)
    expected = [(c, p) for c, s, e, _ in sorted(rows, key=lambda r: (r[0], r[1])) for p in range(s, e)]
    assert list(predicted.itertuples(index=False, name=None)) == expected


def test_per_base_bed_windows_score_only_the_rows_bases_and_evaluate_every_one(genome, tmp_path):
    fasta, _, masks = genome
    bed = tmp_path / "w.bed"
    # training rows shorter and longer than a window; test rows longer than a window, overlapping, one on "-"
    bed.write_text("chrA\t1000\t1100\nchrA\t1500\t2100\nchrB\t50\t650\nchrB\t600\t700\t.\t0\t-\n")
    data = GenomeData(fasta, track=fasta.replace("genome.fa", "cds.zarr"), bed=str(bed), window_length=256,
                      test_regions=["chrB"], batch_size=4)
    data.setup("fit")

    def scored(split):
        positions = []
        for window in data.bed_windows[split]:
            item = data._datasets[split][window]
            bases = np.arange(item["start"], item["start"] + 256)
            bases = bases[::-1] if item["strand"] == "-" else bases
            positions += [("chrA" if item["chrom"] == "chrA" else "chrB", int(b)) for b in bases[item["mask"].numpy()]]
            np.testing.assert_array_equal(item["y"][item["mask"]], masks[item["chrom"]][bases[item["mask"].numpy()]])
        return sorted(positions)

    assert scored("train") == [("chrA", b) for b in [*range(1000, 1100), *range(1500, 2100)]]
    [short] = [w for w in data.bed_windows["train"] if w.keep_start == 1000]
    assert (short.start, short.end) == (922, 1178)  # centred on its row: the other 156 bases are context
    assert scored("test") == sorted([("chrB", b) for b in range(50, 650)] + [("chrB", b) for b in range(600, 700)])

    # a long row whose centre misses a held-out region but whose first tile touches it: that tile is held out
    bed.write_text("chrA\t1000\t1800\n")
    data = GenomeData(fasta, track=fasta.replace("genome.fa", "cds.zarr"), bed=str(bed), window_length=256,
                      test_regions=["chrA:1000-1200"])
    data.setup("fit")
    assert scored("test") == [("chrA", b) for b in range(1000, 1256)]
    assert scored("train") == [("chrA", b) for b in range(1256, 1800)]


def test_overlapping_bed_rows_for_per_base_prediction_are_one_error_naming_the_lines(genome, tmp_path):
    fasta, _, _ = genome
    bed = tmp_path / "w.bed"
    bed.write_text("chrA\t100\t600\nchrB\t0\t10\nchrA\t550\t700\n")
    data = GenomeData(fasta, track=fasta.replace("genome.fa", "cds.zarr"), bed=str(bed), window_length=256)
    data.setup("fit")  # training windows may overlap
    with pytest.raises(DataError, match=rf"^{bed}, line 3: chrA:550-700 overlaps line 1 \(ending at 600\); "
                                        "per-base prediction scores each base once$"):
        data.setup("predict")
    bed.write_text("chrA\t100\t600\tx\t0\t-\n")
    with pytest.raises(DataError, match=rf"^{bed}, line 1: strand '-' with data.stream: the state is carried along"):
        GenomeData(fasta, bed=str(bed), window_length=256, stream=True).setup("predict")


def test_an_empty_fasta_record_is_one_error_naming_the_file_and_record(tmp_path):
    fasta = tmp_path / "mixed.fa"
    fasta.write_text(">tiny\nACGTAC\n>empty\n>long\n" + "ACGT" * 500 + "\n")
    for stage in ("fit", "predict"):
        with pytest.raises(DataError, match=rf"^{fasta}, record 'empty': a header without sequence$"):
            GenomeData(str(fasta), target="next_base", window_length=64, val_regions=["*:70%-80%"]).setup(stage)


def test_a_truncated_or_damaged_bgzip_genome_is_one_error_naming_it(tmp_path):
    from Bio import bgzf

    from seqpipe.data.genome_io import Genome

    rng = np.random.default_rng(4)
    text = ">chr1\n" + "\n".join("".join(rng.choice(list("ACGT"), 60)) for _ in range(3000)) + "\n"
    with bgzf.BgzfWriter(str(tmp_path / "g.fa.bgz"), "wb") as writer:
        writer.write(text.encode())
    whole = (tmp_path / "g.fa.bgz").read_bytes()
    damaged = bytearray(whole)
    damaged[len(whole) // 2] ^= 0xFF
    for name, content in (("truncated.fa.bgz", whole[: len(whole) // 2]), ("damaged.fa.bgz", bytes(damaged))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=rf"^{tmp_path / name}.*(cannot index this FASTA|cannot be read).*a truncated or "
                                            r"damaged file\?"):
            genome = Genome(tmp_path / name, tmp_path / "cache")
            genome.check_letters()
