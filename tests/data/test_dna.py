import gzip
import io
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from seqpipe.contracts import DataInfo
from seqpipe.data.base import stratified_holdout
from seqpipe.data.dna import DNAClassificationData
from seqpipe.data.synthetic import DNA_MOTIF_CLASSES, ENHANCER_MOTIF, PROMOTER_MOTIF, make_dna_motif_dataset, write_fasta
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.errors import ConfigError, DataError

CLASSES = sorted(DNA_MOTIF_CLASSES)


@pytest.fixture(scope="module")
def motifs(tmp_path_factory) -> Path:
    return make_dna_motif_dataset(tmp_path_factory.mktemp("motifs"), seed=0, n_train=60, n_test=15, n_unlabelled=5, length=40)


def attach_checkpoint(data: DNAClassificationData, label_names: list[str]) -> None:
    """What the CLI does with a checkpoint (--ckpt_path)."""
    info = {"vocab_size": 6, "label_names": label_names, "tokenizer": "dna"}
    data.restore_data_info(DataInfo.from_dict(info))


def test_data_info_is_plain_and_survives_a_weights_only_checkpoint(motifs):
    data = DNAClassificationData(train=str(motifs / "train"))
    data.setup("fit")
    vocab = {"<pad>": 0, "A": 1, "C": 2, "G": 3, "T": 4, "N": 5}
    assert data.data_info.to_dict() == {"vocab_size": 6, "vocab": vocab, "label_names": CLASSES, "tokenizer": "dna"}
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": {"data_info": data.data_info.to_dict()}}, buffer)
    buffer.seek(0)
    assert DataInfo.from_dict(torch.load(buffer, weights_only=True)["hyper_parameters"]["data_info"]) == data.data_info


def test_checkpoint_trained_on_another_vocabulary_is_refused(motifs):
    data = DNAClassificationData(predict=str(motifs / "unlabelled.fasta"))
    other = {"<pad>": 0, "A": 1, "C": 2, "G": 3, "T": 4, "N": 5, "U": 6}
    data.restore_data_info(DataInfo.from_dict({"vocab_size": len(other), "vocab": other, "label_names": CLASSES}))
    with pytest.raises(ConfigError, match="vocabulary"):
        data.setup("predict")
    data = DNAClassificationData(predict=str(motifs / "unlabelled.fasta"))  # an audio model's checkpoint
    data.restore_data_info(DataInfo.from_dict({"input_dim": 1, "sample_rate": 16000.0, "label_names": CLASSES}))
    with pytest.raises(ConfigError, match="the checkpoint's model reads 1-channel signals .audio or a series., not DNA"):
        data.setup("predict")


def test_batches(motifs):
    data = DNAClassificationData(train=str(motifs / "train"), test=str(motifs / "test"), predict=str(motifs / "unlabelled.fasta"), batch_size=8)
    for stage in ("fit", "test", "predict"):
        data.setup(stage)
    batch = next(iter(data.train_dataloader()))
    assert batch["x"].shape == (8, 40) and batch["x"].dtype == torch.long
    assert batch["y"].shape == (8,) and batch["lengths"].tolist() == [40] * 8 and len(batch["ids"]) == 8
    test_ids = [i for b in data.test_dataloader() for i in b["ids"]]
    assert len(test_ids) == 15 and all(i.split("_test_")[0] in CLASSES for i in test_ids)
    predict = next(iter(data.predict_dataloader()))
    assert set(predict) == {"x", "lengths", "ids", "where"} and predict["ids"][0] == "query_0000"
    assert predict["where"][0] == f"{motifs / 'unlabelled.fasta'}, record 'query_0000'"


def test_every_shape_gives_the_same_training_set(tmp_path, motifs):
    rows = ["id\tsequence\tlabel"]
    headers = []
    for label in CLASSES:
        for line in (motifs / "train" / f"{label}.fasta").read_text().split(">")[1:]:
            record_id, *chunks = line.split("\n")
            rows.append(f"{record_id}\t{''.join(chunks)}\t{label}")
            headers.append((f"{record_id} label={label}", "".join(chunks)))
    table = tmp_path / "train.tsv.gz"
    table.write_bytes(gzip.compress("\n".join(rows).encode()))
    fasta = write_fasta(tmp_path / "train.fasta", headers)
    shapes = [
        DNAClassificationData(train=str(motifs / "train")),
        DNAClassificationData(train=str(table), id_column="id"),
        DNAClassificationData(train=str(fasta), label_pattern=r"label=(\w+)"),
    ]
    for data in shapes:
        data.setup("fit")
    reference = shapes[0]
    for data in shapes[1:]:
        assert data.data_info == reference.data_info
        for split in ("train", "val"):
            assert data.splits[split].ids == reference.splits[split].ids
            assert all(np.array_equal(a, b) for a, b in zip(data.splits[split].tokens, reference.splits[split].tokens))


def test_split_is_seeded_and_stratified(motifs):
    def val_ids(seed: int) -> list[str]:
        data = DNAClassificationData(train=str(motifs / "train"), val_fraction=0.25, seed=seed)
        data.setup("fit")
        assert len(data.splits["train"].ids) + len(data.splits["val"].ids) == 60
        assert np.bincount(data.splits["val"].labels).tolist() == [5, 5, 5]
        return data.splits["val"].ids

    assert val_ids(1) == val_ids(1) != val_ids(2)


def test_holdout_keeps_small_classes_on_both_sides():
    labels = np.array([0] * 50 + [1] * 2 + [2])
    held_out = stratified_holdout(labels, 0.1, seed=0)
    assert np.bincount(labels[held_out], minlength=3).tolist() == [5, 1, 0]


def test_variable_lengths_are_padded_on_the_right(tmp_path):
    write_fasta(tmp_path / "train" / "a.fa", [("a1", "ACGTAC"), ("a2", "GG")])
    write_fasta(tmp_path / "train" / "b.fa", [("b1", "TTTTTTTTTT"), ("b2", "CA")])
    data = DNAClassificationData(train=str(tmp_path / "train"), val=str(tmp_path / "train"), batch_size=4)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    assert batch["lengths"].tolist() == [6, 2, 10, 2] and batch["y"].tolist() == [0, 0, 1, 1]
    assert batch["x"].shape == (4, 10)
    assert batch["x"][1].tolist() == [3, 3] + [0] * 8
    assert batch["x"][3].tolist() == [2, 1] + [0] * 8  # no reverse complement outside training


def first_training_batches(data: DNAClassificationData, epochs: int):
    """The first training batch of each of ``epochs`` epochs (their crops and augmentation are functions of the
    epoch and the seed)."""
    for epoch in range(epochs):
        data.trainer = SimpleNamespace(current_epoch=epoch)
        yield next(iter(data.train_dataloader()))


def test_max_length_crops_centre_for_evaluation_and_random_windows_for_training(tmp_path):
    sequence = "ACGTTGCAAC"
    write_fasta(tmp_path / "train" / "a.fa", [("a1", sequence), ("a2", "GA")])
    write_fasta(tmp_path / "train" / "b.fa", [("b1", "TTT"), ("b2", "CA")])
    data = DNAClassificationData(train=str(tmp_path / "train"), val=str(tmp_path / "train"), max_length=4, batch_size=4)
    data.setup("fit")
    tokenizer = DNATokenizer()
    batch = next(iter(data.val_dataloader()))
    assert batch["x"].shape == (4, 4) and batch["lengths"].tolist() == [4, 2, 3, 2]
    assert tokenizer.decode(batch["x"][0]) == sequence[3:7]
    strands = {sequence, tokenizer.decode(tokenizer.reverse_complement(tokenizer.encode(sequence)))}
    windows = set()
    for batch in first_training_batches(data, 200):
        windows |= {tokenizer.decode(row) for row in batch["x"] if len(tokenizer.decode(row)) == 4}
    assert windows == {strand[start : start + 4] for strand in strands for start in range(7)}
    # an odd excess: as many bases off each end (one fewer kept), so a reverse complement keeps the same bases
    reverse = tokenizer.decode(tokenizer.reverse_complement(tokenizer.encode(sequence)))
    write_fasta(tmp_path / "both" / "a.fa", [("forward", sequence), ("reverse", reverse)])
    write_fasta(tmp_path / "both" / "b.fa", [("b1", "TTT")])
    data = DNAClassificationData(train=str(tmp_path / "both"), val=str(tmp_path / "both"), max_length=5, batch_size=4)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    forward, backward = (tokenizer.decode(row[:n]) for row, n in zip(batch["x"][:2], batch["lengths"][:2]))
    assert forward == sequence[3:7] and backward == tokenizer.decode(tokenizer.reverse_complement(tokenizer.encode(forward)))


def test_predict_with_a_checkpoint_crops_as_the_model_was_trained_unless_told_otherwise(tmp_path, caplog):
    write_fasta(tmp_path / "train" / "a.fa", [("a1", "ACGTTGCAAC"), ("a2", "GA")])
    write_fasta(tmp_path / "train" / "b.fa", [("b1", "TTT"), ("b2", "CA")])
    trained = DNAClassificationData(train=str(tmp_path / "train"), max_length=4, val_fraction=0.5)
    trained.setup("fit")
    assert trained.data_info.extra == {"max_length": 4}
    write_fasta(tmp_path / "new.fa", [("q", "ACGTTGCAAC")])
    for given, length in ((None, 4), (6, 6)):
        data = DNAClassificationData(predict=str(tmp_path / "new.fa"), max_length=given)
        data.restore_data_info(trained.data_info)
        data.setup("predict")
        assert next(iter(data.predict_dataloader()))["x"].shape == (1, length)


def test_a_large_max_length_pads_each_batch_to_its_longest_sequence(tmp_path):
    write_fasta(tmp_path / "train" / "a.fa", [("a1", "ACGTTGCAAC"), ("a2", "GA")])
    write_fasta(tmp_path / "train" / "b.fa", [("b1", "TTT"), ("b2", "CA")])
    data = DNAClassificationData(train=str(tmp_path / "train"), val=str(tmp_path / "train"), max_length=10**7, batch_size=4)
    data.setup("fit")
    for loader in (data.train_dataloader(), data.val_dataloader()):
        batch = next(iter(loader))
        assert batch["x"].shape == (4, int(batch["lengths"].max())) and int(batch["lengths"].max()) <= 10


def test_reverse_complement_augmentation_is_for_training_only(tmp_path):
    write_fasta(tmp_path / "train" / "a.fa", [("a1", "AAAC")])
    write_fasta(tmp_path / "train" / "b.fa", [("b1", "GGGA")])
    data = DNAClassificationData(train=str(tmp_path / "train"), val=str(tmp_path / "train"), batch_size=2)
    data.setup("fit")
    tokenizer = DNATokenizer()
    seen = {tokenizer.decode(row) for batch in first_training_batches(data, 50) for row in batch["x"]}
    assert seen == {"AAAC", "GTTT", "GGGA", "TCCC"}
    assert {tokenizer.decode(row) for row in next(iter(data.val_dataloader()))["x"]} == {"AAAC", "GGGA"}
    data = DNAClassificationData(train=str(tmp_path / "train"), val=str(tmp_path / "train"), reverse_complement_augment=False)
    data.setup("fit")
    assert {tokenizer.decode(row) for batch in first_training_batches(data, 20) for row in batch["x"]} == {"AAAC", "GGGA"}


def test_predict_takes_label_names_from_the_checkpoint(motifs):
    data = DNAClassificationData(predict=str(motifs / "unlabelled.fasta"))
    attach_checkpoint(data, CLASSES)
    data.setup("predict")
    assert data.data_info.label_names == CLASSES and "y" not in next(iter(data.predict_dataloader()))


def test_test_without_train_uses_the_checkpoint_classes(motifs):
    data = DNAClassificationData(test=str(motifs / "test"))
    attach_checkpoint(data, CLASSES)
    data.setup("test")
    assert len(data.splits["test"].ids) == 15
    attach_checkpoint(data, ["background", "promoter_like"])
    with pytest.raises(ConfigError, match=r"enhancer_like\.fasta, record 'enhancer_like_test_0000', line 1: label 'enhancer_like'"):
        data.setup("test")


def test_training_classes_must_match_the_checkpoint(motifs):
    data = DNAClassificationData(train=str(motifs / "train"), test=str(motifs / "test"))
    attach_checkpoint(data, ["background", "enhancer_like"])
    with pytest.raises(ConfigError, match="the checkpoint was trained on"):
        data.setup("test")


def test_generated_motifs_match_their_class(motifs):
    for label, (promoter, enhancer) in DNA_MOTIF_CLASSES.items():
        sequences = [s.replace("\n", "") for s in (motifs / "train" / f"{label}.fasta").read_text().split(">")[1:]]
        assert all((PROMOTER_MOTIF in s) == promoter and (ENHANCER_MOTIF in s) == enhancer for s in sequences)


def bad_input(root: Path, case: str) -> tuple[dict, str]:
    """Write one bad input; return the data module's arguments and what the message must contain."""
    good = write_fasta(root / "good.fa", [("g1 a", "ACGT"), ("g2 b", "GGCC"), ("g3 a", "AC"), ("g4 b", "GG")])
    bad = root / "bad.fa"
    if case == "missing path":
        return {"train": str(root / "absent.fa")}, "absent.fa: no such file"
    if case == "empty file":
        bad.write_text("")
        return {"train": str(bad)}, "bad.fa: the file is empty"
    if case == "no records":
        bad.write_text("\n\n")
        return {"train": str(bad)}, "bad.fa: no FASTA records"
    if case == "header without sequence":
        bad.write_text(">s1 a\nACGT\n>s2 b\n>s3 b\nACGT\n")
        return {"train": str(bad)}, "bad.fa, record 's2', line 3: a header without sequence"
    if case == "non-IUPAC character":
        bad.write_text(">s1 a\nACGT\n>s2 b\nACGT\n\nAC*T\n")  # the line holding the character, not the header's
        return {"train": str(bad)}, "bad.fa, record 's2', line 6: character '*' at position 7"
    if case == "single class":
        write_fasta(bad, [("s1 a", "ACGT"), ("s2 a", "GGCC")])
        return {"train": str(bad)}, "bad.fa: only one class ('a')"
    if case == "table without the named columns":
        table = root / "bad.tsv"
        table.write_text("seq\ty\nACGT\ta\n")
        return {"train": str(table), "sequence_column": "dna"}, "bad.tsv: no column 'dna' or 'label'; the columns are ['seq', 'y']"
    if case == "test label unseen in training":
        write_fasta(bad, [("t1 a", "ACGT"), ("t2 z", "GG")])
        return {"train": str(good), "test": str(bad)}, "bad.fa, record 't2', line 3: label 'z' does not occur in the training data"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing path", "empty file", "no records", "header without sequence", "non-IUPAC character",
        "single class", "table without the named columns", "test label unseen in training",
    ],
)
def test_bad_input_raises_a_data_error_naming_file_and_record(tmp_path, case):
    arguments, expected = bad_input(tmp_path, case)
    for stage in ("fit", "test") if "test" in arguments else ("fit",):  # fit checks the test file before training
        with pytest.raises(DataError) as error:
            DNAClassificationData(**arguments, label_pattern=r"\s(\w+)").setup(stage)
        assert expected in str(error.value)


def test_headers_that_start_with_record_ids_are_refused_as_labels(tmp_path):
    ids = write_fasta(tmp_path / "ids.fa", [(f"{('pos', 'neg')[i % 2]}_train_{i}", "ACGT") for i in range(30)])
    with pytest.raises(DataError) as error:
        DNAClassificationData(train=str(ids)).setup("fit")
    assert str(error.value).startswith(
        f"{ids}: 30 records give 30 distinct labels, and 30 of the records are the only one of their class (e.g. record "
        "'pos_train_0' on line 1 has label 'pos_train_0'): the labels look like record ids, not classes; each header's "
        r"label is what --data.label_pattern '^(\S+)' finds in it: put one FASTA per class in a folder"
    )
    assert str(error.value).endswith("whose group 1 is the label, e.g. '^(neg|pos)'")  # the labels' leading words
    named = write_fasta(tmp_path / "named.fa", [(f"{('promoter', 'background')[i % 2]}-{i}", "ACGT") for i in range(30)])
    with pytest.raises(DataError, match=r"e\.g\. '\^\(background\|promoter\)'$"):
        DNAClassificationData(train=str(named)).setup("fit")
    table = tmp_path / "ids.tsv"
    table.write_text("sequence\tlabel\n" + "".join(f"ACGT\tr{i}\n" for i in range(5)) + "ACGT\tr0\n")
    with pytest.raises(DataError, match=r"ids\.tsv: 6 records give 5 distinct labels, and 4 of the records .*\(--data.label_column"):
        DNAClassificationData(train=str(table)).setup("fit")
    data = DNAClassificationData(train=str(ids), label_pattern="^(pos|neg)")
    data.setup("fit")
    assert data.data_info.label_names == ["neg", "pos"] and len(data.splits["val"].ids) == 4


def test_a_class_with_a_single_training_record_is_named_in_a_warning(tmp_path):
    records = [(f"r{i} {('pos', 'neg')[i % 2]}", "ACGT") for i in range(10)] + [("r10 rare", "GG"), ("r11 typo", "GG")]
    train = write_fasta(tmp_path / "train.fa", records)
    expected = (f"classes 'rare' ({train}, record 'r10', line 21), 'typo' ({train}, record 'r11', line 23) of data.train "
                "have a single record: one example is too few to learn a class from")
    with pytest.warns(UserWarning, match=re.escape(f"{expected}, and the validation split held out of data.train has none of them")):
        DNAClassificationData(train=str(train), label_pattern=r"\s(\w+)").setup("fit")
    with pytest.warns(UserWarning, match=re.escape(expected) + "$"):
        DNAClassificationData(train=str(train), val=str(train), label_pattern=r"\s(\w+)").setup("fit")


def test_repeated_predict_ids_give_one_warning_naming_the_first(tmp_path):
    queries = write_fasta(tmp_path / "q.fa", [("q1", "AC"), ("q2", "GG"), ("q1 again", "TT"), ("q2", "CC"), ("q1", "AA")])
    data = DNAClassificationData(predict=str(queries))
    with pytest.warns(UserWarning) as warnings:
        data.setup("predict")
    assert [str(w.message) for w in warnings] == [
        f"{queries}: 3 of its records repeat an earlier record's id (the first repeat: {queries}, record 'q1', line 5); "
        "their output rows (predictions, embeddings, maps) share the id, in input order"
    ]
    assert data.splits["predict"].ids == ["q1", "q2", "q1", "q2", "q1"]


def test_predict_records_without_a_base_are_named_in_one_warning(tmp_path):
    queries = write_fasta(tmp_path / "q.fa", [("q1", "ACGT"), ("gap", "NNNNNNNN"), ("iupac", "RYNN"), ("q4", "nnna")])
    data = DNAClassificationData(predict=str(queries))
    with pytest.warns(UserWarning) as warnings:
        data.setup("predict")
    assert [str(w.message) for w in warnings] == [
        f"{queries}: 2 of its records have no A, C, G or T (the first: {queries}, record 'gap', line 3); their scores "
        "say nothing of a sequence"]


def test_predict_names_a_record_whose_id_others_share_by_its_number_as_fit_does(tmp_path):
    fasta = tmp_path / "labels.fa"
    fasta.write_text(">pos\nACGT\n>neg\nACGT\n>pos\nAC\nGT\n>neg x7\nAC\nXT\n")
    for stage, files in (("fit", {"train": str(fasta)}), ("predict", {"predict": str(fasta)})):
        with pytest.raises(DataError, match=r"labels\.fa, record #4, line 10: character 'X' at position 3 "):
            DNAClassificationData(**files).setup(stage)
    fasta.write_text(">q1\nACGT\n>q2\nAXGT\n>q1\nACGT\n")  # an id no other record has still names its record
    with pytest.raises(DataError, match=r"labels\.fa, record 'q2', line 4: character 'X'"):
        DNAClassificationData(predict=str(fasta)).setup("predict")


def test_errors_name_a_record_whose_header_is_its_label_by_its_number(tmp_path):
    fasta = tmp_path / "labels.fa"
    fasta.write_text(">pos\nACGT\n>neg\nACGT\n>pos\nAC\nGT\n>neg x7\nAC\nXT\n")
    with pytest.raises(DataError, match=r"labels\.fa, record #4, line 10: character 'X' at position 3 "):
        DNAClassificationData(train=str(fasta)).setup("fit")
    train = write_fasta(tmp_path / "train.fa", [("pos", "ACGT"), ("neg", "ACGT"), ("pos", "GG"), ("neg", "GG")])
    unseen = write_fasta(tmp_path / "unseen.fa", [("pos", "ACGT"), ("other", "ACGT")])
    with pytest.raises(DataError, match=r"unseen\.fa, record #2, line 3: label 'other' does not occur"):
        DNAClassificationData(train=str(train), test=str(unseen)).setup("test")


@pytest.mark.parametrize(
    ("arguments", "stage", "expected"),
    [
        ({}, "fit", "data.train is not set"),
        ({"train": "x.fa"}, "predict", "data.predict is not set"),
        ({"val_fraction": 1.0}, None, "data.val_fraction"),
        ({"max_length": 0}, None, "data.max_length"),
        ({"max_length": 1}, None, "data.max_length must be at least 2, got 1"),
    ],
)
def test_missing_or_invalid_arguments_are_config_errors(arguments, stage, expected):
    with pytest.raises(ConfigError, match=expected):
        DNAClassificationData(**arguments).setup(stage)


def test_shift_moves_the_bases_and_fills_the_vacated_end_with_n():
    from seqpipe.data.dna import shift

    x = torch.tensor([1, 2, 3, 4, 1, 2])
    assert shift(x, 2, 5).tolist() == [3, 4, 1, 2, 5, 5]
    assert shift(x, -2, 5).tolist() == [5, 5, 1, 2, 3, 4]
    assert shift(x, 0, 5).tolist() == x.tolist()
    assert shift(x, 9, 5).tolist() == [5] * 6 and shift(x, -9, 5).tolist() == [5] * 6


def test_shift_augmentation_draws_every_offset_for_training_only(tmp_path):
    sequence = "ACGTTGCAAC"
    write_fasta(tmp_path / "train" / "a.fa", [("a1", sequence)])
    write_fasta(tmp_path / "train" / "b.fa", [("b1", "GGGA")])
    data = DNAClassificationData(train=str(tmp_path / "train"), val=str(tmp_path / "train"), batch_size=2,
                                 shift_augment=2, reverse_complement_augment=False)
    data.setup("fit")
    tokenizer = DNATokenizer()
    seen = set()
    for batch in first_training_batches(data, 100):
        assert sorted(batch["lengths"].tolist()) == [4, 10]
        seen.add(tokenizer.decode(batch["x"][int(batch["lengths"].argmax())]))
    # the window moved by s bases: the slice sequence[s:] (s > 0) or sequence[:10 + s] (s < 0) beside |s| Ns
    expected = {sequence[s:] + "N" * s for s in range(3)} | {"N" * s + sequence[: len(sequence) - s] for s in (1, 2)}
    assert seen == expected
    assert tokenizer.decode(next(iter(data.val_dataloader()))["x"][0]) == sequence
    with pytest.raises(ConfigError, match="data.shift_augment"):
        DNAClassificationData(train="x.fa", shift_augment=-1)


def test_a_record_too_long_to_batch_is_named_before_training(tmp_path):
    rng = np.random.default_rng(4)
    records = [(f"s{i}", "".join(rng.choice(list("ACGT"), 100))) for i in range(20)]
    write_fasta(tmp_path / "train" / "pos.fa", [*records[:10], ("big", "ACGT" * 37_500)])
    write_fasta(tmp_path / "train" / "neg.fa", records[10:])
    data = DNAClassificationData(train=str(tmp_path / "train"), batch_size=64, val_fraction=0.2)
    with pytest.warns(UserWarning, match=r"pos.fa, record 'big': a training record of 150,000 bases: a batch of 64 padded "
                                         r"to it holds 9,600,000 positions, which may not fit in memory: crop with "
                                         r"--data.max_length 65536 or less"):
        data.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DNAClassificationData(train=str(tmp_path / "train"), batch_size=64, val_fraction=0.2, max_length=65_536).setup("fit")
