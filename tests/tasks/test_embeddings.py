"""``seqpipe embed``: one mean-feature vector per sequence, the same streamed in chunks as whole, padding-free,
ids kept in input order, and the output written by the rule of seqpipe.outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from dna_tool_fixtures import DNA_INFO, FORECASTER, RC_PER_BASE, SERIES_INFO, write_checkpoint, write_fasta
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_alphabet import reverse_complement_ids
from seqpipe.tasks.embeddings import main, sequence_embeddings

MOTIF_CLASSIFIER = {
    "backbone": {"class_path": "seqpipe.dna_backbones.MotifBackbone", "init_args": {
        "d_model": 8, "n_layers": 2, "motif_width": 5,
        "block": {"class_path": "seqpipe.s4.S4Block", "init_args": {"d_state": 8, "mode": "diag"}}}},
    "head": {"class_path": "seqpipe.tasks.classification.SequenceClassification"},
}
PRETRAINING = {**MOTIF_CLASSIFIER, "head": {"class_path": "seqpipe.tasks.per_base.NextBaseLM"}}
TOKENS = DNATokenizer()


def random_ids(generator: torch.Generator, length: int) -> torch.Tensor:
    return torch.randint(1, 5, (length,), generator=generator)


def test_a_record_streamed_in_chunks_gets_the_embedding_of_the_whole_record(tmp_path):
    model = write_checkpoint(tmp_path / "m.ckpt", MOTIF_CLASSIFIER, ["a", "b"]).double()
    x = random_ids(torch.Generator().manual_seed(0), 301)[None]
    whole = sequence_embeddings(model, x)
    reference = model.backbone(x).mean(1)  # the plain mean over every position of one unpadded record
    torch.testing.assert_close(whole, reference, rtol=0, atol=1e-12)
    for chunk_size in (7, 64, 300):
        torch.testing.assert_close(sequence_embeddings(model, x, chunk_size=chunk_size), whole, rtol=0, atol=1e-10)


@pytest.mark.parametrize("config", [MOTIF_CLASSIFIER, RC_PER_BASE], ids=["causal", "rc-equivariant"])
def test_padding_changes_no_embedding(tmp_path, config):
    model = write_checkpoint(tmp_path / "m.ckpt", config, ["a", "b"]).double()
    generator = torch.Generator().manual_seed(1)
    records = [random_ids(generator, n) for n in (40, 17, 29)]
    padded = torch.nn.utils.rnn.pad_sequence(records, batch_first=True)
    lengths = torch.tensor([len(r) for r in records])
    for both_strands in (False, True):
        batch = sequence_embeddings(model, padded, lengths, both_strands=both_strands)
        alone = torch.cat([sequence_embeddings(model, r[None], both_strands=both_strands) for r in records])
        torch.testing.assert_close(batch, alone, rtol=0, atol=1e-10)


def test_both_strands_gives_a_sequence_and_its_reverse_complement_one_embedding(tmp_path):
    model = write_checkpoint(tmp_path / "m.ckpt", MOTIF_CLASSIFIER, ["a", "b"]).double()
    x = random_ids(torch.Generator().manual_seed(2), 50)[None]
    rc = reverse_complement_ids(x, None)
    torch.testing.assert_close(sequence_embeddings(model, rc, both_strands=True),
                               sequence_embeddings(model, x, both_strands=True), rtol=0, atol=1e-10)
    assert not torch.allclose(sequence_embeddings(model, rc), sequence_embeddings(model, x))


@pytest.mark.parametrize("config", [MOTIF_CLASSIFIER, PRETRAINING], ids=["classifier", "pre-trained"])
def test_embed_writes_one_vector_per_record_with_the_ids_in_input_order(tmp_path, config, capsys):
    rng = np.random.default_rng(3)
    records = [(f"seq{k}", "".join(rng.choice(list("ACGT"), n))) for k, n in enumerate((90, 12, 55))]
    fasta = write_fasta(tmp_path / "in.fa", records)
    ckpt = tmp_path / "m.ckpt"
    model = write_checkpoint(ckpt, config, None, data_info={**DNA_INFO, "label_names": ["a", "b"]} if config is MOTIF_CLASSIFIER
                             else {**DNA_INFO, "label_names": list("ACGT"), "next_token_targets": True})
    out = tmp_path / "emb.zarr"
    assert main(["--ckpt_path", str(ckpt), "--data.predict", str(fasta), "--out", str(out), "--chunk_size", "16", "--batch_size", "2"]) == 0
    group = zarr.open_group(str(out), mode="r")
    assert list(group["id"][:]) == [name for name, _ in records]
    expected = torch.cat([sequence_embeddings(model, TOKENS.encode(s)[None]) for _, s in records]).numpy()
    np.testing.assert_allclose(group["embedding"][:], expected, rtol=1e-4, atol=1e-5)
    assert group.attrs["d_model"] == 8
    # run again: seqpipe's own output is replaced
    assert main(["--ckpt_path", str(ckpt), "--data.predict", str(fasta), "--out", str(out)]) == 0
    assert not (tmp_path / "emb.zarr.partial").exists()
    assert main(["--ckpt_path", str(ckpt), "--data.predict", str(fasta), "--out", str(tmp_path / "e.zarr"), "--chunk_size", "0"]) == 2
    assert capsys.readouterr().err.endswith("--chunk_size must be positive, got 0\n")
    assert main(["--ckpt_path", str(ckpt), "--data.predict", str(fasta), "--out", str(tmp_path / "e.npy")]) == 2
    assert capsys.readouterr().err.endswith("embed writes a zarr group (a folder), not a .npy file; give a name ending in .zarr\n")
    assert not (tmp_path / "e.zarr").exists()


def test_embed_refuses_a_users_path_and_a_bad_record_before_writing(tmp_path, capsys):
    ckpt = tmp_path / "m.ckpt"
    write_checkpoint(ckpt, MOTIF_CLASSIFIER, ["a", "b"])
    fasta = write_fasta(tmp_path / "in.fa", [("r1", "ACGTACGT")])
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    assert main(["--ckpt_path", str(ckpt), "--data.predict", str(fasta), "--out", str(users)]) == 2
    assert "is not a seqpipe embeddings zarr" in capsys.readouterr().err
    assert (users / "notes.txt").read_text() == "keep me"
    bad = write_fasta(tmp_path / "bad.fa", [("r1", "ACGT"), ("r2", "AC-GT")])
    assert main(["--ckpt_path", str(ckpt), "--data.predict", str(bad), "--out", str(tmp_path / "e.zarr")]) == 2
    err = capsys.readouterr().err
    assert "bad.fa" in err and "r2" in err and "'-'" in err
    assert not (tmp_path / "e.zarr").exists() and not (tmp_path / "e.zarr.partial").exists()


def test_a_table_without_the_columns_or_a_bed_file_without_a_genome_names_the_tools_options(tmp_path, capsys):
    ckpt = tmp_path / "m.ckpt"
    write_checkpoint(ckpt, MOTIF_CLASSIFIER, ["a", "b"])
    table = tmp_path / "in.csv"
    table.write_text("name,dna\nr1,ACGTACGT\n")
    for extra, hint in (([], "'sequence'; the columns are ['name', 'dna'] (set --sequence_column)"),
                        (["--sequence_column", "dna", "--id_column", "id"], "'id'; the columns are ['name', 'dna'] (set --id_column)")):
        assert main(["--ckpt_path", str(ckpt), "--data.predict", str(table), "--out", str(tmp_path / "e.zarr"), *extra]) == 2
        assert capsys.readouterr().err.splitlines() == [f"seqpipe: error: {table}: no column {hint}"]
    bed = tmp_path / "rows.bed"
    bed.write_text("chr1\t0\t8\n")
    assert main(["--ckpt_path", str(ckpt), "--data.predict", str(bed), "--out", str(tmp_path / "e.zarr")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: --data.predict {bed} is a BED file: give --data.fasta, the genome its rows refer to"]


def test_a_forecasting_checkpoint_is_one_short_line(tmp_path, capsys):
    write_checkpoint(tmp_path / "f.ckpt", FORECASTER, None, data_info=SERIES_INFO)
    fasta = write_fasta(tmp_path / "in.fa", [("r1", "ACGTACGT")])
    assert main(["--ckpt_path", str(tmp_path / "f.ckpt"), "--data.predict", str(fasta), "--out", str(tmp_path / "e.zarr")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: --ckpt_path {tmp_path / 'f.ckpt'}: a Forecasting model of 2 real-valued channels; the DNA tools "
        "(variants, explain, embed) need a model trained on DNA sequences"]


def test_a_record_too_long_for_one_window_is_refused_with_the_tools_option(tmp_path, monkeypatch):
    import seqpipe.model
    from seqpipe.errors import ConfigError

    model = write_checkpoint(tmp_path / "m.ckpt", MOTIF_CLASSIFIER, ["a", "b"]).double()
    x = random_ids(torch.Generator().manual_seed(4), 40)[None]
    monkeypatch.setattr(seqpipe.model, "LONGEST_WHOLE_INPUT", 32)
    with pytest.raises(ConfigError, match="a record of 40 positions is longer than the 32 .* stream it with --chunk_size"):
        sequence_embeddings(model, x)
    assert sequence_embeddings(model, x, chunk_size=16).shape == (1, 8)  # streamed: no error


def test_embed_names_the_file_and_record_too_long_for_one_window(tmp_path, monkeypatch, capsys):
    import seqpipe.model

    write_checkpoint(tmp_path / "m.ckpt", MOTIF_CLASSIFIER, ["a", "b"])
    fasta = write_fasta(tmp_path / "in.fa", [("short", "ACGT" * 5), ("long1", "ACGT" * 10)])
    monkeypatch.setattr(seqpipe.model, "LONGEST_WHOLE_INPUT", 32)
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", str(fasta), "--out", str(tmp_path / "e.zarr")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: {fasta}, record 'long1': a record of 40 positions is longer than the 32 evaluated as one "
        "window: stream it with --chunk_size (e.g. 65536; causal backbones)"]
    assert not (tmp_path / "e.zarr").exists() and not (tmp_path / "e.zarr.partial").exists()


def test_a_bed_input_reads_a_gzip_genome_decompressed_into_the_given_cache(tmp_path):
    import gzip

    write_checkpoint(tmp_path / "m.ckpt", MOTIF_CLASSIFIER, ["a", "b"])
    rng = np.random.default_rng(0)
    chrom = "".join(rng.choice(list("ACGT"), 200))
    (tmp_path / "g.fa.gz").write_bytes(gzip.compress(f">chr1\n{chrom}\n".encode()))
    (tmp_path / "rows.bed").write_text("chr1\t10\t50\n")
    fasta = write_fasta(tmp_path / "row.fa", [("chr1:10-50", chrom[10:50])])
    common = ["--ckpt_path", str(tmp_path / "m.ckpt")]
    assert main([*common, "--data.predict", str(tmp_path / "rows.bed"), "--data.fasta", str(tmp_path / "g.fa.gz"),
                 "--data.cache_dir", str(tmp_path / "cache"), "--out", str(tmp_path / "bed.zarr")]) == 0
    assert main([*common, "--data.predict", fasta, "--out", str(tmp_path / "fa.zarr")]) == 0
    assert any((tmp_path / "cache").iterdir())
    bed, fa = zarr.open_group(tmp_path / "bed.zarr", mode="r"), zarr.open_group(tmp_path / "fa.zarr", mode="r")
    np.testing.assert_array_equal(bed["embedding"][:], fa["embedding"][:])
    assert list(bed["id"][:]) == ["chr1:10-50"]


def test_embed_reads_whole_records_whatever_max_length_the_model_was_trained_with(tmp_path):
    from dna_tool_fixtures import DNA_INFO

    cropped = write_checkpoint(tmp_path / "m.ckpt", MOTIF_CLASSIFIER, None,
                               data_info={**DNA_INFO, "label_names": ["a", "b"], "max_length": 8})
    sequence = "".join(np.random.default_rng(5).choice(list("ACGT"), 40))
    fasta = write_fasta(tmp_path / "in.fa", [("r1", sequence)])
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / "e.zarr")]) == 0
    whole = sequence_embeddings(cropped, TOKENS.encode(sequence)[None]).numpy()
    np.testing.assert_allclose(zarr.open_group(str(tmp_path / "e.zarr"), mode="r")["embedding"][:], whole, rtol=1e-4, atol=1e-5)
