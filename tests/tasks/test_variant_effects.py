"""``seqpipe variants``: scores against a direct forward of hand-built windows, strand symmetry of an
RC-equivariant model, skipped alleles reported, the scored VCF read back with cyvcf2."""

from __future__ import annotations

import gzip
from contextlib import closing

import numpy as np
import pandas as pd
import pytest
import torch
from cyvcf2 import VCF

from dna_tool_fixtures import (CAUSAL_CLASSIFIER, FORECASTER, RC_PER_BASE, SERIES_INFO, needs_proc, open_files_under,
                               reverse_complement, write_checkpoint, write_fasta)
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.tasks import variant_effects
from seqpipe.tasks.variant_effects import main

WINDOW = 31
rng = np.random.default_rng(3)
CHROM = "".join(rng.choice(list("ACGT"), 400))


def write_vcf(path, rows, contigs: dict[str, int], gz: bool = False):
    header = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={n}>" for c, n in contigs.items()),
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    text = "\n".join(header + ["\t".join(map(str, (*row, ".", "PASS", "."))) for row in rows]) + "\n"
    (path.write_bytes(gzip.compress(text.encode())) if gz else path.write_text(text))
    return str(path)


def direct_score(model, sequence: str) -> np.ndarray:
    """The model's class probabilities of a window, averaged over the window and both strands, computed from
    the letters (the reference for the tool's windows, reverse complement and averaging)."""
    tokenizer = DNATokenizer()
    with torch.no_grad():
        probs = [model({"x": tokenizer.encode(s)[None]}).softmax(-1)[0] for s in (sequence, reverse_complement(sequence))]
    per_strand = [p.mean(0) if p.dim() == 2 else p for p in probs]
    return ((per_strand[0] + per_strand[1]) / 2).numpy()


def test_scores_equal_a_direct_forward_of_the_windows_and_skips_are_reported(tmp_path, capsys):
    model = write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    wrong = "ACGT".replace(CHROM[99], "")[0]
    rows = [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0]),
            ("chr1", 5, ".", CHROM[4], "ACGT".replace(CHROM[4], "")[1]),             # window runs off the start
            ("chr1", 100, "bad_ref", wrong, CHROM[99]),                            # REF disagrees with the FASTA
            ("chr1", 300, "indel", CHROM[299], "ACGT".replace(CHROM[299], "")[0] + "," + CHROM[299] + "A"),  # SNV, indel
            ("chr1", 310, "mnp", CHROM[309:311], reverse_complement(CHROM[309:311]) if CHROM[309:311] != reverse_complement(CHROM[309:311]) else "AA"),
            ("chr1", 320, "sv", CHROM[319], "<DEL>"),
            ("chrZ", 3, "nochrom", "A", "C")]
    vcf = write_vcf(tmp_path / "v.vcf.gz", rows, {"chr1": 400, "chrZ": 10}, gz=True)
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf,
                 "--window", str(WINDOW), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "scored 3 of 8 alleles" in out
    assert f"skipped 5 (listed in {tmp_path / 'out.skipped.tsv'}): 1 REF disagrees with the FASTA, 1 indel, " \
           "1 multi-base substitution, 1 symbolic or missing ALT, 1 chromosome not in the FASTA" in out
    assert "chr1:100 bad_ref: REF " + wrong + f" disagrees with the FASTA ({CHROM[99]})" in err
    table = pd.read_csv(tmp_path / "out.tsv", sep="\t")
    assert list(table.columns) == ["chrom", "pos", "ref", "alt", "id", "diff_neg", "log_odds_neg", "diff_pos", "log_odds_pos"]
    padded = "N" * WINDOW + CHROM + "N" * WINDOW
    for row in table.itertuples():
        start = row.pos - 1 - WINDOW // 2 + WINDOW
        ref_window = padded[start:start + WINDOW]
        alt_window = ref_window[:WINDOW // 2] + row.alt + ref_window[WINDOW // 2 + 1:]
        ref, alt = direct_score(model, ref_window), direct_score(model, alt_window)
        np.testing.assert_allclose([row.diff_neg, row.diff_pos], alt - ref, atol=1e-5)
        logit = lambda p: np.log(p / (1 - p))  # noqa: E731
        np.testing.assert_allclose(row.log_odds_pos, logit(alt[1]) - logit(ref[1]), rtol=1e-3, atol=1e-5)
    skipped = pd.read_csv(tmp_path / "out.skipped.tsv", sep="\t")
    assert list(skipped["id"]) == ["bad_ref", "indel", "mnp", "sv", "nochrom"]
    assert list(skipped["reason"])[1:] == ["indel", "multi-base substitution", "symbolic or missing ALT", "chromosome not in the FASTA"]
    records = list(VCF(str(tmp_path / "out.vcf.gz")))
    assert len(records) == 7
    assert records[0].INFO.get("SEQPIPE_DIFF_pos") == pytest.approx(table["diff_pos"][0], abs=1e-5)
    assert records[2].INFO.get("SEQPIPE_SKIPPED").startswith("REF") and records[2].INFO.get("SEQPIPE_DIFF_pos") is None
    # a record with a scored ALT and one not: one value each, "." where not scored
    diff, skipped_alts = records[3].INFO.get("SEQPIPE_DIFF_pos"), records[3].INFO.get("SEQPIPE_SKIPPED")
    assert diff[0] == pytest.approx(table.set_index("id").loc["indel", "diff_pos"], abs=1e-5) and diff[1] is None
    assert skipped_alts == ".,indel"
    # the scored VCF given again: refused, as its new scores would sit beside the old ones
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", str(tmp_path / "out.vcf.gz"),
                 "--window", str(WINDOW), "--out", str(tmp_path / "again")]) == 2
    assert "out.vcf.gz: seqpipe variants wrote it already (its header declares SEQPIPE_DIFF_neg, " in capsys.readouterr().err
    # long windows streamed chunk by chunk with carried state (a causal model) give the same scores
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", str(WINDOW),
                 "--chunk_size", "8", "--out", str(tmp_path / "chunked")]) == 0
    chunked = pd.read_csv(tmp_path / "chunked.tsv", sep="\t")
    np.testing.assert_allclose(chunked.filter(like="diff_"), table.filter(like="diff_"), atol=1e-6)


def test_a_users_file_at_any_output_is_refused_and_an_earlier_runs_outputs_are_replaced(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])], {"chr1": 400})
    argv = ["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", str(WINDOW)]
    (tmp_path / "mine.skipped.tsv").write_text("a user's notes\n")
    assert main(argv + ["--out", str(tmp_path / "mine")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: {tmp_path / 'mine.skipped.tsv'} exists and is not a seqpipe skipped variants TSV: refusing "
        "to replace it (move it away or choose another output path)"]
    assert sorted(p.name for p in tmp_path.glob("*mine*")) == ["mine.skipped.tsv"]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 0
    written = {p.name: p.read_bytes() for p in tmp_path.glob("out.*")}
    assert sorted(written) == ["out.skipped.tsv", "out.tsv", "out.vcf.gz"]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.glob("out.*")} == written


def test_a_malformed_record_is_one_line_saying_what_htslib_found(tmp_path, capfd):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0]),
                                          ("chr1", "abc", "rs2", "A", "C")], {"chr1": 400})
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", str(WINDOW),
                 "--out", str(tmp_path / "out")]) == 2
    assert capfd.readouterr().err.splitlines() == [
        f"seqpipe: error: {vcf}, line 5: malformed VCF: POS 'abc' is not a position (an integer >= 0)"]
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


GOOD_RECORD = "chr1\t201\trs1\t{ref}\t{alt}\t.\tPASS\t."


@pytest.mark.parametrize("text,line,message", [
    ("{header}{good}\n\n", 5, "an empty line: a VCF holds one record per line"),
    ("{header}{good}\n\n{good}\n", 5, "an empty line"),
    ("{header}chr1 201 rs1 A C . PASS .\n", 4, "malformed VCF: 1 tab-separated field(s); a record has at least 8"),
    ("{bare}chr1\tnotanumber\trs1\tA\tC\t.\tPASS\t.\n", 3, "malformed VCF: POS 'notanumber' is not a position"),
    ("{bare}chr1\t123\n", 3, "malformed VCF: 2 tab-separated field(s)"),
    ("{bare}{good}\nchrZ\t123\n", 4, "malformed VCF: 2 tab-separated field(s)"),
    ("{bare}chr1\t-5\trs1\tA\tC\t.\tPASS\t.\n", 3, "malformed VCF: POS '-5' is not a position"),
    ("##fileformat=VCFv4.2\n{good}\n", 2, "cannot be read as a VCF: a record before the header line"),
    ("##fileformat=VCFv4.2\n", None, "cannot be read as a VCF: no header line '#CHROM"),
], ids=["trailing empty line", "empty line", "spaces", "bad POS, no contig", "2 fields, no contig",
        "2 fields, new contig", "negative POS", "no #CHROM before a record", "no #CHROM"])
def test_vcf_lines_htslib_would_crash_on_are_one_line_naming_them(tmp_path, capfd, text, line, message):
    """Each of these made cyvcf2 crash the process (a segmentation fault, nothing printed) where the contig is not
    declared or on an empty line: now one error line naming the line, and nothing written."""
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    good = GOOD_RECORD.format(ref=CHROM[200], alt="ACGT".replace(CHROM[200], "")[0])
    bare = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    header = "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=400>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    vcf = tmp_path / "x.vcf"
    vcf.write_text(text.format(header=header, bare=bare, good=good))
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", str(vcf), "--window", str(WINDOW),
                 "--out", str(tmp_path / "out")]) == 2
    where = f"{vcf}, line {line}" if line else str(vcf)
    (err,) = capfd.readouterr().err.splitlines()
    assert err.startswith(f"seqpipe: error: {where}: {message}")
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


def test_an_even_window_is_scored_with_a_warning(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])], {"chr1": 400})
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", "30",
                 "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        "seqpipe: warning: --window 30 is even: the variant is not at its centre, so the two strands' windows are not "
        "mirror images (an odd window makes them so)")


def test_info_format_and_filter_tags_the_header_does_not_declare_are_declared_in_the_scored_vcf(tmp_path, capfd):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    alt = "ACGT".replace(CHROM[200], "")[0]
    vcf = tmp_path / "v.vcf"  # DP, XF (a flag), BAR (a value, then bare), XX (FORMAT) and q10 are used, not declared
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=400>\n"
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\n"
                   f"chr1\t201\trs1\t{CHROM[200]}\t{alt}\t50\tq10\tDP=3;XF;BAR=2\tXX\t7\n"
                   f"chr1\t202\trs2\t{CHROM[201]}\t{'ACGT'.replace(CHROM[201], '')[0]}\t50\tPASS\tBAR\tXX\t8\n")
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", str(fasta), "--vcf", str(vcf),
                 "--window", str(WINDOW), "--out", str(tmp_path / "out")]) == 0
    err = capfd.readouterr().err
    assert (f"seqpipe: warning: {vcf}: its header does not declare INFO DP, INFO XF, INFO BAR, FORMAT XX, FILTER q10; "
            "the scored VCF declares them") in err
    assert "not defined in the header" not in err  # htslib's warnings of the first read are replaced by that line
    first, second = VCF(str(tmp_path / "out.vcf.gz"))
    assert (first.INFO["DP"], first.INFO["XF"], first.INFO["BAR"], first.FILTER) == ("3", True, "2", "q10")
    assert list(first.format("XX")) == ["7"] and list(second.format("XX")) == ["8"]
    assert first.INFO["SEQPIPE_DIFF_pos"] == pytest.approx(-first.INFO["SEQPIPE_DIFF_neg"], abs=1e-5)


def test_a_variant_scores_like_its_complement_on_the_reverse_complement_genome(tmp_path):
    """For an RC-equivariant per-base model the score of a variant must not depend on the strand the genome
    is written in: G:pos ref>alt scores as G':(n - pos + 1) comp(ref)>comp(alt) on G' = revcomp(G)."""
    write_checkpoint(tmp_path / "m.ckpt", RC_PER_BASE, ["other", "CDS"], seed=1)
    n = len(CHROM)
    forward = write_fasta(tmp_path / "fwd.fa", {"chr1": CHROM})
    reverse = write_fasta(tmp_path / "rev.fa", {"chr1": reverse_complement(CHROM)})
    positions = [10, 150, 151, 390]  # 1-based; two within a half window of the ends
    alts = ["ACGT".replace(CHROM[p - 1], "")[p % 3] for p in positions]
    rows_f = [("chr1", p, f"v{p}", CHROM[p - 1], a) for p, a in zip(positions, alts)]
    rows_r = [("chr1", n - p + 1, f"v{p}", reverse_complement(CHROM[p - 1]), reverse_complement(a)) for p, a in zip(positions, alts)]
    tables = []
    for name, fasta, rows in (("f", forward, rows_f), ("r", reverse, rows_r)):
        vcf = write_vcf(tmp_path / f"{name}.vcf", sorted(rows, key=lambda r: r[1]), {"chr1": n})
        assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf,
                     "--window", str(WINDOW), "--central", "11", "--out", str(tmp_path / name)]) == 0
        tables.append(pd.read_csv(tmp_path / f"{name}.tsv", sep="\t").set_index("id").sort_index())
    assert (tables[0]["diff_CDS"].abs() > 1e-4).all()  # the variants do change the scores
    np.testing.assert_allclose(tables[0][["diff_other", "diff_CDS"]], tables[1][["diff_other", "diff_CDS"]], atol=2e-6)


def test_a_ref_mismatch_is_named_once_per_record_whatever_its_alts(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    wrong, *alts = "ACGT".replace(CHROM[99], "")
    rows = [("chr1", 100, "mism", wrong, ",".join(alts)), ("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])]
    vcf = write_vcf(tmp_path / "v.vcf", rows, {"chr1": 400})
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf,
                 "--window", str(WINDOW), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: warning: chr1:100 mism: REF {wrong} disagrees with the FASTA ({CHROM[99]}); not scored"]
    assert list(pd.read_csv(tmp_path / "out.skipped.tsv", sep="\t")["alt"]) == alts  # each ALT listed


def test_bad_inputs_give_one_line(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    (tmp_path / "broken.vcf").write_text("this is not a VCF\n")
    unscorable = write_vcf(tmp_path / "indels.vcf", [("chr1", 10, "ind1", CHROM[9], CHROM[9] + "A"), ("1", 20, "x", "A", "C")],
                           {"chr1": len(CHROM), "1": 100})
    good = write_vcf(tmp_path / "good.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])], {"chr1": 400})
    for extra, message in (
        (["--vcf", good, "--central", "11"], "--central averages a per-base model's positions, but this model gives "
                                             "one score per sequence: leave --central out"),
        (["--vcf", good, "--window", "11", "--central", "13"], "--central must be at most --window (11), got 13"),
        (["--vcf", str(tmp_path / "missing.vcf")], "missing.vcf: no such VCF file"),
        (["--vcf", str(tmp_path)], f"{tmp_path}: is a directory, not a VCF file"),
        (["--vcf", str(tmp_path / "broken.vcf")], "broken.vcf, line 1: cannot be read as a VCF"),
        (["--vcf", unscorable], "indels.vcf: none of its 2 alleles can be scored (1 indel, "
                                "1 chromosome not in the FASTA)"),
    ):
        assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    for option in ("--window", "--central", "--batch_size"):  # refused by the parser, before the model is loaded
        with pytest.raises(SystemExit, match="2"):
            main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", good, "--out", str(tmp_path / "o"),
                  option, "0"])
        assert f"argument {option}: must be 1 or more, got 0" in capsys.readouterr().err
    assert not list(tmp_path.glob("o*"))


def test_a_checkpoint_of_another_task_is_one_short_line(tmp_path, capsys):
    write_checkpoint(tmp_path / "f.ckpt", FORECASTER, None, data_info=SERIES_INFO)
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])], {"chr1": 400})
    assert main(["--ckpt_path", str(tmp_path / "f.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: --ckpt_path {tmp_path / 'f.ckpt'}: a Forecasting model of 2 real-valued channels; the DNA tools "
        "(variants, explain, embed) need a model trained on DNA sequences"]
    assert not list(tmp_path.glob("o*"))


@needs_proc
def test_a_failure_while_writing_closes_every_file_and_leaves_no_output(tmp_path, monkeypatch):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])], {"chr1": 400})

    def disk_full(*_):
        raise OSError("No space left on device")

    monkeypatch.setattr(variant_effects, "info_values", disk_full)
    with pytest.raises(OSError, match="No space left"):
        main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--out", str(tmp_path / "out")])
        assert False, "not reached"
    assert open_files_under(tmp_path) == []
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


def test_device_option_is_checked_and_cuda_scores_equal_cpu_scores(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", RC_PER_BASE, ["other", "CDS"], seed=4)
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", p, f"v{p}", CHROM[p - 1], "ACGT".replace(CHROM[p - 1], "")[0]) for p in (40, 200, 333)],
                    {"chr1": len(CHROM)})
    args = ["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", str(WINDOW)]
    assert main([*args, "--out", str(tmp_path / "bad"), "--device", "gpu0"]) == 2
    assert "--device 'gpu0'" in capsys.readouterr().err
    for device in ("meta", "mps"):  # devices torch names but seqpipe does not score on: one line, no traceback
        assert main([*args, "--out", str(tmp_path / "bad"), "--device", device]) == 2
        assert capsys.readouterr().err.strip() == f"seqpipe: error: --device {device}: seqpipe scores on 'cpu' or 'cuda[:N]'"
    assert main([*args, "--out", str(tmp_path / "bad"), "--device", f"cuda:{torch.cuda.device_count()}"]) == 2
    assert "--device cuda:" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--out", str(tmp_path / "bad"), "--device", "cuda"]) == 2
        assert capsys.readouterr().err.strip() == "seqpipe: error: --device cuda: CUDA is not available on this machine (use --device cpu)"
        return
    tables = []
    for device in ("cpu", "cuda"):
        assert main([*args, "--out", str(tmp_path / device), "--device", device]) == 0
        tables.append(pd.read_csv(tmp_path / f"{device}.tsv", sep="\t"))
    np.testing.assert_allclose(tables[0]["diff_CDS"], tables[1]["diff_CDS"], atol=1e-5)


@pytest.mark.parametrize(("stop", "status", "name"), [("ctrl-c", 130, "Ctrl-C"), ("sigterm", 143, "SIGTERM")])
def test_a_tool_stopped_by_ctrl_c_or_sigterm_says_so_in_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch,
                                                                                    stop, status, name):
    import os
    import signal
    import time

    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])], {"chr1": 400})

    def stopped(*args, **kwargs):  # in the middle of the scoring, its outputs begun
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("SIGTERM did not stop the tool")

    monkeypatch.setattr(variant_effects, "score_alleles", stopped)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", str(WINDOW),
                 "--out", str(tmp_path / "out")]) == status
    assert capsys.readouterr().err.splitlines() == [f"seqpipe variants: stopped by {name}; nothing was written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the tool's handler is gone with it


NEXT_BASE_LM = {**CAUSAL_CLASSIFIER, "head": {"class_path": "seqpipe.tasks.per_base.NextBaseLM"}}
MASKED_LM = {"backbone": {"class_path": "seqpipe.dna_backbones.BidirectionalBackbone", "init_args": {
                 "d_model": 8, "n_layers": 1, "block": {"class_path": "seqpipe.s4.S4Block", "init_args": {"d_state": 8}}}},
             "head": {"class_path": "seqpipe.tasks.per_base.MaskedBaseLM"}}
#: RC-invariant features (configs/dna_pretrain_rc.yaml's kind): the same distribution at the site on both strands,
#: but the other strand reads the complemented alleles, so its ratio is not the forward one
MASKED_RC_LM = {**RC_PER_BASE, "head": {"class_path": "seqpipe.tasks.per_base.MaskedBaseLM"}}


def window_log_likelihood(model, sequence: str) -> float:
    """log P of a whole window under a next-base model, one sequence at a time in float64: the sum over every base
    that a position before it predicts (the reference for the tool's terms from the variant on)."""
    with torch.no_grad():
        logp = model.double()({"x": DNATokenizer().encode(sequence)[None]})[0].log_softmax(-1)
    return sum(float(logp[i, "ACGT".index(sequence[i + 1])]) for i in range(len(sequence) - 1) if sequence[i + 1] in "ACGT")


def masked_llr(model, sequence: str, site: int, ref: str, alt: str) -> float:
    """log P(alt) - log P(ref) at ``site`` of ``sequence`` with that base masked (N), in float64."""
    masked = sequence[:site] + "N" + sequence[site + 1:]
    with torch.no_grad():
        logp = model.double()({"x": DNATokenizer().encode(masked)[None]})[0, site].log_softmax(-1)
    return float(logp["ACGT".index(alt)] - logp["ACGT".index(ref)])


@pytest.mark.parametrize("config", [NEXT_BASE_LM, MASKED_LM, MASKED_RC_LM], ids=["next-base", "masked", "masked, RC-invariant"])
def test_a_language_model_scores_the_log_likelihood_ratio_of_both_strands(tmp_path, capsys, config):
    """The tool's llr (batched, only the terms from the variant on, strands averaged) against whole windows scored
    one at a time in float64 from the letters, on each strand; a window running off the chromosome start included."""
    data_info = {"vocab_size": 6, "tokenizer": "dna", "label_names": list("ACGT"),
                 "next_token_targets": config is NEXT_BASE_LM}
    model = write_checkpoint(tmp_path / "lm.ckpt", config, None, data_info=data_info)
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    rows = [("chr1", pos, f"v{pos}", CHROM[pos - 1], "ACGT".replace(CHROM[pos - 1], "")[k])
            for pos, k in ((201, 0), (201, 2), (5, 1), (399, 0))]
    vcf = write_vcf(tmp_path / "v.vcf", rows, {"chr1": 400})
    args = ["--ckpt_path", str(tmp_path / "lm.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", str(WINDOW)]
    assert main([*args, "--out", str(tmp_path / "out"), "--batch_size", "3"]) == 0
    table = pd.read_csv(tmp_path / "out.tsv", sep="\t")
    assert list(table.columns) == ["chrom", "pos", "ref", "alt", "id", "llr"]
    padded, centre = "N" * WINDOW + CHROM + "N" * WINDOW, WINDOW // 2
    for row in table.itertuples():
        start = row.pos - 1 - centre + WINDOW
        ref_window = padded[start:start + WINDOW]
        alt_window = ref_window[:centre] + row.alt + ref_window[centre + 1:]
        if config is NEXT_BASE_LM:
            strands = [window_log_likelihood(model, window(alt_window)) - window_log_likelihood(model, window(ref_window))
                       for window in (str, reverse_complement)]
        else:  # both strands, whatever the backbone
            strands = [masked_llr(model, ref_window, centre, row.ref, row.alt),
                       masked_llr(model, reverse_complement(ref_window), WINDOW - 1 - centre, reverse_complement(row.ref),
                                  reverse_complement(row.alt))]
        assert row.llr == pytest.approx(np.mean(strands), abs=1e-4)
    complementing = np.array([reverse_complement(r) == a for r, a in zip(table["ref"], table["alt"])])
    if config is MASKED_RC_LM:  # strand-invariant features cannot tell A>T from T>A: the two strands cancel exactly
        assert complementing.any() and np.abs(table["llr"][complementing]).max() < 1e-6
    assert table["llr"][~complementing].abs().min() > 1e-4  # the model's random weights do tell the alleles apart
    records = list(VCF(str(tmp_path / "out.vcf.gz")))
    assert [r.INFO.get("SEQPIPE_LLR") for r in records] == pytest.approx(list(table["llr"]), abs=1e-5)
    capsys.readouterr()
    for bad, message in ((["--central", "5"], "--central averages a per-base classifier's positions; a language model"),
                         (["--window", "2"], "--window must be >= 3 for a language model")):
        assert main([*args, *bad, "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("bad*"))


def test_an_out_folder_and_unknown_chromosome_names_are_said(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    numbered = write_vcf(tmp_path / "n.vcf", [("1", 20, "x", "A", "C"), ("1", 30, "y", "A", "R")], {"1": 100})
    args = ["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", numbered]
    assert main([*args, "--out", f"{tmp_path / 'scores'}/"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"a prefix of file names, not a folder; give e.g. {tmp_path / 'scores' / 'scores'}")
    assert main([*args, "--out", str(tmp_path / "scores.tsv")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"a prefix, to which the tool adds .tsv, .vcf.gz, .skipped.tsv; give "
                                                    f"--out {tmp_path / 'scores'}")
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith("none of its 2 alleles can be scored (1 chromosome not in the FASTA, 1 ALT is an "
                                                    "ambiguity code); its chromosomes ['1'] are not among the FASTA's ['chr1']")


def test_ref_n_and_pos_0_are_skipped_with_their_reason(tmp_path, capsys):
    """REF N (an N in the FASTA) has no base to compare with; POS 0 (allowed by VCF for telomeres) lies before the
    chromosome. Both are listed as skipped; the rest is scored."""
    data_info = {"vocab_size": 6, "tokenizer": "dna", "label_names": list("ACGT"), "next_token_targets": False}
    write_checkpoint(tmp_path / "lm.ckpt", MASKED_LM, None, data_info=data_info)
    chrom = CHROM[:100] + "N" + CHROM[101:150] + "R" + CHROM[151:]
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": chrom})
    rows = [("chr1", 101, "n", "N", "A"), ("chr1", 0, "tel", "A", "C"), ("chr1", 151, "iupac", "R", "A"),
            ("chr1", 201, "ok", chrom[200], "ACGT".replace(chrom[200], "")[0])]
    vcf = write_vcf(tmp_path / "v.vcf", rows, {"chr1": 400})
    assert main(["--ckpt_path", str(tmp_path / "lm.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", str(WINDOW),
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert "skipped 3 (listed in" in printed.out and "disagree" not in printed.out + printed.err  # none is a mismatch
    skipped = pd.read_csv(tmp_path / "out.skipped.tsv", sep="\t")
    assert list(zip(skipped["id"], skipped["reason"])) == [("n", "REF is N"), ("tel", "POS 0 (before the chromosome's first base)"),
                                                          ("iupac", "REF is an ambiguity code")]
    assert list(pd.read_csv(tmp_path / "out.tsv", sep="\t")["id"]) == ["ok"]


def test_a_bcf_is_read_as_its_vcf(tmp_path):
    """A BCF (binary VCF, which cyvcf2 reads) passes the text checks untouched and scores as the VCF it was made of."""
    from cyvcf2 import Writer

    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])], {"chr1": 400})
    source = VCF(vcf)
    with closing(Writer(str(tmp_path / "v.bcf"), source, mode="wb")) as writer:
        for record in source:
            writer.write_record(record)
    source.close()
    for name in ("v.vcf", "v.bcf"):
        assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", str(tmp_path / name),
                     "--window", str(WINDOW), "--out", str(tmp_path / name.replace(".", "_"))]) == 0
    assert pd.read_csv(tmp_path / "v_bcf.tsv", sep="\t").equals(pd.read_csv(tmp_path / "v_vcf.tsv", sep="\t"))


def test_a_vcf_without_contig_lines_scores_without_htslibs_tabix_advice(tmp_path, capfd):
    """Undeclared contigs are common and the chromosomes are checked against the FASTA: htslib's warning for each,
    with its advice to index the file with tabix, is not passed on."""
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": CHROM})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 201, "rs1", CHROM[200], "ACGT".replace(CHROM[200], "")[0])], {})
    assert main(["--ckpt_path", str(tmp_path / "m.ckpt"), "--data.fasta", fasta, "--vcf", vcf, "--window", str(WINDOW),
                 "--out", str(tmp_path / "out")]) == 0
    out, err = capfd.readouterr()
    assert "scored 1 of 1 alleles" in out and "is not defined in the header" not in err
