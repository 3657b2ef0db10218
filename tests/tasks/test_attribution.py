"""``seqpipe explain``: ISM and gradient x input recover a motif planted in a model's weights; ISM of a per-base
model equals scoring the mutants one by one from their letters; arrays and logos written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dna_tool_fixtures import CAUSAL_CLASSIFIER, MOTIF_MODEL, RC_PER_BASE, reverse_complement, write_checkpoint, write_fasta
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.tasks.attribution import Explainer, main

MOTIF = "TATAAT"
rng = np.random.default_rng(5)


def random_sequence(length: int) -> str:
    return "".join(rng.choice(list("CG"), length))  # no A or T: the motif and its near-matches cannot occur


def test_ism_and_gradients_find_the_planted_motif(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", MOTIF_MODEL, ["absent", "present"])
    starts = {"s1": 5, "s2": 20, "s3": 31}
    records = {}
    for name, start in starts.items():
        background = random_sequence(40)
        records[name] = background[:start] + MOTIF + background[start + len(MOTIF):]
    records["none"] = random_sequence(40)
    fasta = write_fasta(tmp_path / "x.fa", records)
    # the head's module is not seqpipe's: refused (never imported) unless the user names it
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / "e")]) == 2
    assert ("names 'dna_tool_fixtures.PlantedMotifHead' (head), from a module this run does not name; name it in your "
            "config or on the command line to allow it (the DNA tools: --trust_module dna_tool_fixtures)") in capsys.readouterr().err
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / "e"),
                 "--top", "2", "--batch_size", "50", "--trust_module", "dna_tool_fixtures"]) == 0
    assert "explained 4 records (class present)" in capsys.readouterr().out
    result = np.load(tmp_path / "e.npz")
    assert list(result["ids"]) == ["s1", "s2", "s3", "none"] and result["ism"].shape == (4, 40, 4)
    assert (result["score"][:3] > result["score"][3] + 1).all()
    for i, start in enumerate(starts.values()):
        motif = set(range(start, start + len(MOTIF)))
        importance = -result["ism"][i].sum(1)
        elsewhere = sorted(set(range(40)) - motif)
        # the motif's bases matter; a base elsewhere can only add a (weaker) match when mutated, never lose one
        # (1e-5: float32 rounding of log-odds near 10, a few ulps)
        assert importance[sorted(motif)].min() > 0.1 and importance[elsewhere].max() < 1e-5
        assert np.abs(importance[elsewhere][np.abs(np.array(elsewhere) - start - 2.5) > 9]).max() < 1e-5  # far away: none
        assert set(np.argsort(-result["grad_x_input"][i])[:len(MOTIF)].tolist()) == motif
        # the gradient of each base at its position is the column of the planted weight matrix
        own = result["gradient"][i][np.arange(40), ["ACGT".index(b) for b in records[f"s{i + 1}"]]]
        np.testing.assert_allclose(own, result["grad_x_input"][i], atol=1e-6)
    marker, *logos = sorted(p.name for p in (tmp_path / "e.logos").iterdir())  # the folder is a seqpipe output
    assert marker == ".seqpipe-output" and len(logos) == 2 and all(name.endswith(".png") for name in logos)


def test_per_base_ism_equals_scoring_each_mutant(tmp_path):
    model = write_checkpoint(tmp_path / "m.ckpt", RC_PER_BASE, ["other", "CDS"], seed=2)
    sequence = "".join(rng.choice(list("ACGT"), 24))
    fasta = write_fasta(tmp_path / "x.fa", {"r": sequence})
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / "e"),
                 "--span", "4:20"]) == 0
    ism = np.load(tmp_path / "e.npz")["ism"][0]

    def score(letters: str) -> float:
        tokenizer = DNATokenizer()
        with torch.no_grad():
            both = [model({"x": tokenizer.encode(s)[None]}).softmax(-1)[0, :, 1] for s in (letters, reverse_complement(letters))]
        p = float(((both[0] + both[1].flip(0)) / 2)[4:20].mean())
        return np.log(p / (1 - p))

    for position, base in [(0, 0), (7, 2), (12, 3), (23, 1)]:
        mutant = sequence[:position] + "ACGT"[base] + sequence[position + 1:]
        expected = 0.0 if mutant == sequence else score(mutant) - score(sequence)
        assert ism[position, base] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("strands", ["pair", "forward"])
def test_the_explained_score_is_the_log_odds_predict_gives(tmp_path, strands):
    """A strand-aware model (``pair``) or one reading the given strand is explained as it predicts the record as
    given, not averaged with the record's reverse complement."""
    head = {"class_path": "seqpipe.tasks.classification.SequenceClassification", "init_args": {"strands": strands}}
    model = write_checkpoint(tmp_path / "m.ckpt", {**CAUSAL_CLASSIFIER, "head": head}, ["neg", "pos"], seed=4)
    records = {"a": random_sequence(24), "b": random_sequence(30)}
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", write_fasta(tmp_path / "x.fa", records),
                 "--out", str(tmp_path / "e")]) == 0
    with torch.no_grad():
        p = [float(model({"x": DNATokenizer().encode(s)[None]}).softmax(-1)[0, 1]) for s in records.values()]
        rc = [float(model({"x": DNATokenizer().encode(reverse_complement(s))[None]}).softmax(-1)[0, 1])
              for s in records.values()]
    np.testing.assert_allclose(np.load(tmp_path / "e.npz")["score"], np.log(np.array(p) / (1 - np.array(p))), atol=1e-5)
    assert not np.allclose(p, rc, atol=1e-3)  # the strands disagree, so an average would differ


def test_unknown_target_is_one_line(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", MOTIF_MODEL, ["absent", "present"])
    fasta = write_fasta(tmp_path / "x.fa", {"r": "ACGTACGT"})
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / "e"),
                 "--target", "nope", "--trust_module", "dna_tool_fixtures"]) == 2
    assert capsys.readouterr().err.strip() == "seqpipe: error: --target 'nope' is not a class of the model (absent, present)"
    assert not list(tmp_path.glob("e*"))


def test_span_on_a_sequence_classifier_or_past_a_record_is_one_line(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "x.fa", {"r": random_sequence(30)})
    for span in ("10:20", "10:40"):  # refused as meaningless before it is found to run past the record
        assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / "e"),
                     "--span", span]) == 2
        assert capsys.readouterr().err.splitlines() == [
            "seqpipe: error: --span averages a per-base model's positions, but this model gives one score per sequence: "
            "leave --span out"]
    write_checkpoint(tmp_path / "per_base.ckpt", RC_PER_BASE, ["other", "CDS"])
    assert main(["--ckpt_path", str(tmp_path / "per_base.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / "e"),
                 "--span", "10:40"]) == 2
    assert capsys.readouterr().err.splitlines() == ["seqpipe: error: --span 10:40 runs past record 'r' of length 30"]
    assert not list(tmp_path.glob("e*"))


def test_a_users_file_at_either_output_is_refused_and_an_earlier_runs_outputs_are_replaced(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", MOTIF_MODEL, ["absent", "present"])
    argv = ["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", write_fasta(tmp_path / "x.fa", {"r": "ACGTACGT"}),
            "--out", str(tmp_path / "e"), "--top", "1", "--trust_module", "dna_tool_fixtures"]

    def outputs() -> dict:
        files = (p for p in tmp_path.rglob("*") if p.is_file() and p.relative_to(tmp_path).parts[0].startswith("e"))
        return {p.relative_to(tmp_path): p.read_bytes() for p in files}

    for mine, kind in (("e.npz", "attribution arrays file"), ("e.logos", "attribution logos folder")):
        (tmp_path / mine).write_text("a user's notes\n")
        assert main(argv) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"seqpipe: error: {tmp_path / mine} exists and is not a seqpipe {kind}: refusing to replace it "
            "(move it away or choose another output path)"]
        assert outputs() == {Path(mine): b"a user's notes\n"}
        (tmp_path / mine).unlink()
    assert main(argv) == 0
    written = outputs()
    assert sorted(map(str, written)) == ["e.logos/.seqpipe-output", "e.logos/001_r.png", "e.npz"]
    assert main(argv) == 0 and outputs() == written


def test_a_table_without_the_sequence_column_names_the_tools_option(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", MOTIF_MODEL, ["absent", "present"])
    (tmp_path / "x.csv").write_text("id,seq\ns1,ACGTACGT\n")
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", str(tmp_path / "x.csv"), "--out",
                 str(tmp_path / "e"), "--trust_module", "dna_tool_fixtures"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: {tmp_path / 'x.csv'}: no column 'sequence'; the columns are ['id', 'seq'] (set --sequence_column)"]


def test_a_class_folder_and_a_table_are_explained_as_the_fasta_file_of_their_records(tmp_path):
    """--data.predict takes what predict takes: the same records in a folder of FASTA files and in a TSV give the
    FASTA file's ids and maps."""
    write_checkpoint(tmp_path / "m.ckpt", MOTIF_MODEL, ["absent", "present"])
    records = {"s1": random_sequence(12) + MOTIF + random_sequence(10), "s2": random_sequence(30)}
    inputs = {"fasta": write_fasta(tmp_path / "x.fa", records)}
    (tmp_path / "folder").mkdir()
    inputs["folder"] = str(tmp_path / "folder")
    write_fasta(tmp_path / "folder" / "query.fa", records)
    inputs["table"] = str(tmp_path / "x.tsv")
    (tmp_path / "x.tsv").write_text("id\tsequence\n" + "".join(f"{name}\t{seq}\n" for name, seq in records.items()))
    results = {}
    for shape, path in inputs.items():
        argv = ["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", path, "--out", str(tmp_path / shape),
                "--trust_module", "dna_tool_fixtures", "--top", "0"]
        assert main(argv + (["--id_column", "id"] if shape == "table" else [])) == 0
        results[shape] = np.load(tmp_path / f"{shape}.npz")
    for shape in ("folder", "table"):
        assert list(results[shape]["ids"]) == ["s1", "s2"]
        np.testing.assert_array_equal(results[shape]["ism"], results["fasta"]["ism"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_attributions_equal_cpu_attributions(tmp_path):
    write_checkpoint(tmp_path / "m.ckpt", RC_PER_BASE, ["other", "CDS"], seed=2)
    fasta = write_fasta(tmp_path / "x.fa", {"r": "".join(rng.choice(list("ACGT"), 24))})
    for device in ("cpu", "cuda"):
        assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / device),
                     "--span", "4:20", "--device", device]) == 0
    cpu, cuda = np.load(tmp_path / "cpu.npz"), np.load(tmp_path / "cuda.npz")
    for name in ("score", "ism", "gradient", "grad_x_input"):
        np.testing.assert_allclose(cpu[name], cuda[name], atol=1e-4)


def test_gradients_of_a_reverse_complement_palindrome_are_those_it_gets_beside_another_record(tmp_path):
    from seqpipe.tasks.attribution import Explainer

    model = write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"], seed=3)  # scores both strands
    half = "".join(rng.choice(list("ACGT"), 12))
    palindrome, other = half + reverse_complement(half), "".join(rng.choice(list("ACGT"), 24))
    assert palindrome == reverse_complement(palindrome) and other != reverse_complement(other)
    tokenizer = DNATokenizer()
    explainer = Explainer(model, target=1)
    alone = explainer.gradients(tokenizer.encode(palindrome)[None])
    # beside a record that is no palindrome, the batch's two strands differ: the reference
    beside = explainer.gradients(torch.stack([tokenizer.encode(palindrome), tokenizer.encode(other)]))
    for a, b in zip(alone, beside):
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("strands", ["average", "pair", "forward"])
def test_gradients_follow_every_pass_of_the_model(tmp_path, strands):
    """The score the gradients are taken of is the score the tools compute without them (``class_probabilities``:
    the model's passes, whichever strands each reads), and its gradient along a direction of the one-hot input is
    the central difference of that score."""
    head = {"class_path": "seqpipe.tasks.classification.SequenceClassification", "init_args": {"strands": strands}}
    model = write_checkpoint(tmp_path / "m.ckpt", {**CAUSAL_CLASSIFIER, "head": head}, ["neg", "pos"], seed=4).double()
    explainer = Explainer(model, target=1)
    ids = DNATokenizer().encode("".join(rng.choice(list("ACGT"), 24)))[None]
    one_hot = torch.nn.functional.one_hot(ids, DNATokenizer().vocab_size).double()
    with torch.no_grad():
        torch.testing.assert_close(explainer._score_of_one_hot(one_hot), explainer.score(ids), rtol=0, atol=1e-12)
    direction = torch.randn(one_hot.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    variable = one_hot.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(explainer._score_of_one_hot(variable).sum(), variable)
    with torch.no_grad():  # the tools' probabilities are float32
        step = 1e-3
        central = (explainer._score_of_one_hot(one_hot + step * direction)
                   - explainer._score_of_one_hot(one_hot - step * direction)).double() / (2 * step)
    torch.testing.assert_close((gradient * direction).sum().double(), central.sum(), rtol=0, atol=2e-4)  # float32 noise: ~5e-5


def test_a_kmer_head_is_noted_and_its_kmers_move_ism_but_not_gradients(tmp_path, capsys):
    backbone = {"class_path": "seqpipe.backbone.Backbone", "init_args": {"d_model": 4, "n_layers": 0}}
    head = {"class_path": "seqpipe.tasks.dna_classification.DNASequenceClassification",
            "init_args": {"pooling": "mean", "kmer_size": 2, "strands": "forward"}}
    model = write_checkpoint(tmp_path / "m.ckpt", {"backbone": backbone, "head": head}, ["neg", "pos"])
    with torch.no_grad():  # only the k-mer features count: the backbone's pooled features get weight 0
        model.head.classifier.weight[:, :4] = 0
    torch.save({**torch.load(tmp_path / "m.ckpt", weights_only=False), "state_dict": model.state_dict()}, tmp_path / "m.ckpt")
    fasta = write_fasta(tmp_path / "x.fa", {"r": "".join(rng.choice(list("ACGT"), 20))})
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.predict", fasta, "--out", str(tmp_path / "e")]) == 0
    assert "the head's 2-mer counts have no gradient" in capsys.readouterr().err
    result = np.load(tmp_path / "e.npz")
    assert np.abs(result["ism"]).max() > 1e-3 and np.abs(result["gradient"]).max() == 0


def test_bed_rows_are_explained_as_their_bases_and_a_record_too_long_is_one_line(tmp_path, capsys, monkeypatch):
    from seqpipe.tasks import attribution

    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    chrom = random_sequence(300)
    genome = write_fasta(tmp_path / "g.fa", {"chr1": chrom})
    (tmp_path / "rows.bed").write_text("chr1\t20\t60\trow1\n")
    common = ["--ckpt_path", str(tmp_path / "m.ckpt"), "--top", "1"]
    assert main([*common, "--data.predict", str(tmp_path / "rows.bed"), "--out", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: --data.predict {tmp_path / 'rows.bed'} is a BED file: give --data.fasta, the genome its rows refer to"]
    assert main([*common, "--data.predict", str(tmp_path / "rows.bed"), "--data.fasta", genome, "--out", str(tmp_path / "bed")]) == 0
    assert main([*common, "--data.predict", write_fasta(tmp_path / "row.fa", {"row1": chrom[20:60]}), "--out", str(tmp_path / "fa")]) == 0
    bed, fasta = np.load(tmp_path / "bed.npz"), np.load(tmp_path / "fa.npz")
    np.testing.assert_array_equal(bed["ism"], fasta["ism"])

    monkeypatch.setattr(attribution, "LONGEST_EXPLAINED", 39)
    capsys.readouterr()
    assert main([*common, "--data.predict", str(tmp_path / "row.fa"), "--out", str(tmp_path / "long")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: {tmp_path / 'row.fa'}, record 'row1': a record of 40 bases is longer than the 39 explained at "
        "most: ISM scores 3 mutants of the whole record per base (3 L^2 bases); explain a region of it (a BED row with "
        "--data.fasta)"]
    assert not list(tmp_path.glob("long*"))


def test_a_logo_shows_its_window_not_the_record_from_position_0(tmp_path, monkeypatch):
    import matplotlib.figure

    from seqpipe.tasks.attribution import draw_logos

    limits = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, *a, **k: limits.extend(ax.get_xlim() for ax in figure.axes))
    x = torch.randint(1, 5, (1000,))
    ism = np.zeros((1000, 3))
    ism[500] = -1.0  # the most important position
    draw_logos(x, ism, np.zeros(1000), 60, "r", tmp_path / "logo.png")
    assert limits == [(469.5, 529.5), (469.5, 529.5)]


@pytest.mark.parametrize("option,value,message", [("--top", "-1", "must be 0 or more, got -1"),
                                                  ("--logo_width", "0", "must be 1 or more, got 0")])
def test_counts_out_of_range_are_refused_before_any_work(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as stop:
        main(["--ckpt_path", str(tmp_path / "none.ckpt"), "--data.predict", "x.fa", "--out", str(tmp_path / "m"), option, value])
    assert stop.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(f"argument {option}: {message}")
