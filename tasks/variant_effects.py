"""Variant effect scores from a VCF: ``seqpipe variants``.

    seqpipe variants --ckpt_path CKPT --data.fasta GENOME.fa[.gz] --vcf FILE.vcf[.gz] --out PREFIX [--window N] [--device cuda]

For every single-base substitution (each ALT of a record separately) the model scores the reference window
and the alternate window centred on the variant (the variant at index ``window // 2``; an odd window makes the
two strands mirror images), each as the mean of both strands. A per-base model's score of a class is its
probability averaged over the ``--central`` positions at the window's centre (default: the whole window); a
sequence model has one score per window, and ``--central`` is an error there.

A DNA language model (``NextBaseLM``, ``MaskedBaseLM``: pre-training checkpoints) scores zero-shot, as one
log-likelihood ratio ``llr`` in nats, the mean of both strands: a next-base model, log P(alternate window) - log
P(reference window), the sum over the variant's base and every base after it (the bases before it are predicted
alike in both); a masked model, log P(ALT) - log P(REF) at the variant's position, masked, given the rest of the
window. Negative: the model finds the alternate less likely. Written:

* ``PREFIX.tsv``: chrom, pos (1-based, as in the VCF), ref, alt, id, then per class ``diff_<class>`` (alt - ref
  probability) and ``log_odds_<class>`` (log-odds of alt minus log-odds of ref), or a language model's ``llr``;
* ``PREFIX.vcf.gz``: the input records with these scores in INFO (``SEQPIPE_DIFF_<class>``,
  ``SEQPIPE_LOG_ODDS_<class>``, or ``SEQPIPE_LLR``, one value per ALT, ``.`` for an ALT not scored); a record with an
  ALT that was not scored also gets ``SEQPIPE_SKIPPED``, one reason per ALT (``.`` for a scored one);
* ``PREFIX.skipped.tsv``: every allele not scored and why: an indel, a multi-base substitution, a symbolic or
  missing ALT, a chromosome the FASTA lacks, or a REF that disagrees with the FASTA (never scored). The count of
  each reason is printed, and each record whose REF disagrees is named once on stderr (the first 10; the rest
  are in the file).

An earlier run's outputs are replaced; anything else at one of the three paths stops the run before any work,
naming it.

VCFs are read with cyvcf2. Windows are read through :class:`seqpipe.data.genome_io.Genome` (N past the
chromosome ends); ``--chunk_size`` runs long windows chunk by chunk with carried state (causal backbones).
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seqpipe.data.genome_io import Genome
from seqpipe.data.readers import compression, open_text
from seqpipe.dna_alphabet import DNA_VOCAB, N_ID, base_index, complement_ids, is_base, letters, reverse_complement_ids
from seqpipe.errors import ConfigError, DataError
from seqpipe.outputs import Output, writing
from seqpipe.tasks.model_scoring import (add_device_option, batches, class_probabilities, label_names, load_model,
                                         log_odds, window_scores)
from seqpipe.tasks.per_base import MaskedBaseLM, NextBaseLM
from seqpipe.tool_io import output_prefix, positive_int, run_tool, tool_parser

SHOWN_MISMATCHES = 10
#: IUPAC codes of more than one base (N apart), which an ALT may hold but a substitution cannot be scored for
IUPAC_AMBIGUITY = set("RYSWKMBDHV")
#: the smallest --window a language model scores: a base before the variant predicts it, one after it on the other strand
LANGUAGE_MODEL_MIN_WINDOW = 3


@dataclass
class Allele:
    """One ALT of a VCF record; ``pos`` 0-based."""

    record: int
    chrom: str
    pos: int
    ref: str
    alt: str
    id: str


#: the skip reason of a REF that is not the FASTA's base (a VCF of another assembly?), warned about record by record
DISAGREES = "disagrees with the FASTA"


def check_allele(allele: Allele, genome: Genome) -> str | None:
    """Why ``allele`` cannot be scored, or None. Only single-base substitutions are scored: an indel would need
    reference and alternate windows of different lengths, which a per-base score cannot compare position by
    position."""
    if len(allele.alt) == 1 and allele.alt.upper() in IUPAC_AMBIGUITY:
        return "ALT is an ambiguity code"
    if allele.alt.upper().strip("ACGTN"):
        return "symbolic or missing ALT"
    if len(allele.ref) != len(allele.alt):
        return "indel"
    if len(allele.ref) != 1:
        return "multi-base substitution"
    if allele.alt.upper() == "N":
        return "ALT is N"
    if allele.ref.upper() == "N":
        return "REF is N"
    if allele.ref.upper() in IUPAC_AMBIGUITY:
        return "REF is an ambiguity code"
    if allele.chrom not in genome.chrom_sizes:
        return "chromosome not in the FASTA"
    if allele.pos < 0:
        return "POS 0 (before the chromosome's first base)"
    if allele.pos >= genome.chrom_sizes[allele.chrom]:
        return "position past the chromosome end"
    found = letters(genome.read(allele.chrom, allele.pos, allele.pos + 1))
    if allele.ref.upper() != found:
        return f"REF {allele.ref} {DISAGREES} ({found})"
    return None


@dataclass(frozen=True)
class Score:
    """One score of every scored allele: its TSV column, its INFO key in the scored VCF, and its values (n,)."""

    column: str
    info: str
    description: str
    values: np.ndarray


def class_scores(model, genome: Genome, alleles: list[Allele], window: int, span: tuple[int, int] | None,
                 batch_size: int) -> list[Score]:
    """A classifier's (sequence or per-base) scores of each class: alt - ref probability, and alt - ref log-odds."""
    ref, alt = score_alleles(model, genome, alleles, window, span, batch_size)
    diff, odds = alt - ref, (log_odds(torch.from_numpy(alt)) - log_odds(torch.from_numpy(ref))).numpy()
    scores = []
    for k, name in enumerate(label_names(model)):
        scores.append(Score(f"diff_{name}", info_key("DIFF", name), f"alt - ref probability of class {name}", diff[:, k]))
        scores.append(Score(f"log_odds_{name}", info_key("LOG_ODDS", name),
                            f"log-odds of alt - log-odds of ref of class {name}", odds[:, k]))
    return scores


def language_model_scores(model, genome: Genome, alleles: list[Allele], window: int, batch_size: int) -> list[Score]:
    """A DNA language model's log-likelihood ratio of each allele (see the module), both strands averaged."""
    masked = isinstance(model.head, MaskedBaseLM)
    centre, llr = window // 2, []
    with torch.no_grad():
        for part in batches(len(alleles), batch_size):
            group = alleles[part]
            refs = torch.from_numpy(np.stack([genome.read(a.chrom, a.pos - centre, a.pos - centre + window) for a in group])).long()
            ref_ids = torch.tensor([DNA_VOCAB[a.ref.upper()] for a in group])
            alt_ids = torch.tensor([DNA_VOCAB[a.alt.upper()] for a in group])
            # both strands always: even where the features are strand-symmetric, the other strand reads the
            # complemented alleles, so its ratio differs (for a complementing substitution, A>T, it is the opposite)
            strands = [(refs, centre, ref_ids, alt_ids),
                       (reverse_complement_ids(refs, None), window - 1 - centre, complement_ids(ref_ids), complement_ids(alt_ids))]
            per_strand = [masked_site_llr(model, *strand) if masked else next_base_llr(model, *strand) for strand in strands]
            llr.append(torch.stack(per_strand).mean(0))
    return [Score("llr", "SEQPIPE_LLR", "log P(alt) - log P(ref) under the DNA language model, nats, both strands "
                  "averaged", torch.cat(llr).numpy())]


def next_base_llr(model, refs: torch.Tensor, site: int, ref_ids: torch.Tensor, alt_ids: torch.Tensor) -> torch.Tensor:
    """Reference windows (B, L) with the variant at ``site``, its REF and ALT ids (B,) -> log P(alternate window)
    - log P(reference window) (B,) under a next-base model: the terms of the bases from ``site`` (>= 1) on; before
    it the two windows, and so their predictions, are the same."""
    alts = refs.clone()
    alts[:, site] = alt_ids
    windows = torch.cat([refs, alts])
    logp = model({"x": windows.to(model.device)}).float().log_softmax(-1).cpu()  # (2B, L, 4): position i -> base i + 1
    following = windows[:, site:]
    terms = logp[:, site - 1:-1].gather(-1, base_index(following).clamp(0, 3)[..., None]).squeeze(-1)
    log_likelihood = (terms * is_base(following)).sum(1)
    return log_likelihood[len(refs):] - log_likelihood[:len(refs)]


def masked_site_llr(model, refs: torch.Tensor, site: int, ref_ids: torch.Tensor, alt_ids: torch.Tensor) -> torch.Tensor:
    """As :func:`next_base_llr`, under a masked-base model: log P(ALT) - log P(REF) at ``site``, masked (N)."""
    masked = refs.clone()
    masked[:, site] = N_ID
    logp = model({"x": masked.to(model.device)}).float().log_softmax(-1)[:, site].cpu()  # (B, 4)
    rows = torch.arange(len(refs))
    return logp[rows, base_index(alt_ids)] - logp[rows, base_index(ref_ids)]


def score_alleles(
    model, genome: Genome, alleles: list[Allele], window: int, span: tuple[int, int] | None, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores (n, K) of the reference and of the alternate windows, both strands averaged; ``span``: see
    :func:`~seqpipe.tasks.model_scoring.window_scores`. Reference windows shared by alleles of one position are
    scored once per batch."""
    centre = window // 2
    ref_scores, alt_scores = [], []
    with torch.no_grad():
        for part in batches(len(alleles), batch_size):
            group = alleles[part]
            keys = list(dict.fromkeys((a.chrom, a.pos) for a in group))
            refs = np.stack([genome.read(chrom, pos - centre, pos - centre + window) for chrom, pos in keys])
            ref_row = {key: i for i, key in enumerate(keys)}
            rows = [ref_row[a.chrom, a.pos] for a in group]
            alts = refs[rows].copy()
            alts[:, centre] = [DNA_VOCAB[a.alt.upper()] for a in group]
            probs = class_probabilities(model, torch.from_numpy(np.concatenate([refs, alts])).long())
            scores = window_scores(probs, span, "--central").numpy()
            ref_scores.append(scores[:len(keys)][rows])
            alt_scores.append(scores[len(keys):])
    return np.concatenate(ref_scores), np.concatenate(alt_scores)


def open_vcf(vcf_path: Path):
    """The VCF opened with cyvcf2 (close it: ``contextlib.closing``)."""
    from cyvcf2 import VCF

    try:
        return VCF(str(vcf_path))
    except Exception as error:  # cyvcf2 raises a bare Exception for a header it cannot parse
        raise DataError(vcf_path, f"cannot be read as a VCF: {error}") from None


def is_bcf(path: Path) -> bool:
    """Whether the file is a BCF (binary VCF; plain or BGZF-compressed), which cyvcf2 reads too."""
    with (gzip.open(path, "rb") if compression(path) != "none" else open(path, "rb")) as handle:
        try:
            return handle.read(3) == b"BCF"
        except (OSError, EOFError, zlib.error):
            return False


def check_vcf_lines(vcf_path: Path) -> None:
    """Read the (plain or gzipped) VCF as text and refuse, naming the line, what htslib reads as a half-made record
    and cyvcf2 then crashes on (a segmentation fault, where the contig is not declared): an empty line, a record
    before the ``#CHROM`` header line, fewer than 8 tab-separated fields, a POS that is not an integer >= 1."""
    if vcf_path.is_dir():
        raise DataError(vcf_path, "is a directory, not a VCF file")
    if not vcf_path.is_file():
        raise DataError(vcf_path, "no such VCF file")
    if is_bcf(vcf_path):  # binary: htslib reads its records as typed fields, not text lines
        return
    header = False
    try:
        with open_text(vcf_path) as lines:
            for number, line in enumerate(lines, start=1):
                if line.startswith("#"):
                    header = header or line.startswith("#CHROM")
                    continue
                if not line.strip():
                    raise DataError(vcf_path, "an empty line: a VCF holds one record per line, with no empty lines "
                                              "(htslib cannot read it); remove it", line=number)
                if not header:
                    raise DataError(vcf_path, "cannot be read as a VCF: a record before the header line "
                                              "'#CHROM POS ID REF ALT QUAL FILTER INFO'", line=number)
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) < 8:
                    raise DataError(vcf_path, f"malformed VCF: {len(fields)} tab-separated field(s); a record has at least "
                                              "8 (CHROM POS ID REF ALT QUAL FILTER INFO)", line=number)
                if not (fields[1].isascii() and fields[1].isdigit()):
                    raise DataError(vcf_path, f"malformed VCF: POS {fields[1]!r} is not a position (an integer >= 0)",
                                    line=number)
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as error:
        raise DataError(vcf_path, f"cannot be read as a VCF (plain or gzipped text): {error}") from None
    if not header:
        raise DataError(vcf_path, "cannot be read as a VCF: no header line '#CHROM POS ID REF ALT QUAL FILTER INFO'")


def read_vcf(vcf_path: Path):
    """The open VCF (cyvcf2; close it), its records (cyvcf2 variants) and their alleles, one per ALT.

    INFO and FORMAT keys and FILTER values the header does not declare (common in real files) are declared as the
    file is opened again (``Number=.`` strings; an INFO key never given a value, a flag), so that the scored VCF
    can be written; one warning names them. htslib's own warnings are passed on from the last read."""
    check_vcf_lines(vcf_path)
    vcf = open_vcf(vcf_path)
    try:
        declared = {(line.type, line.info().get("ID")) for line in vcf.header_iter()}
        scored = sorted(name for kind, name in declared if kind == "INFO" and str(name).startswith("SEQPIPE_"))
        if scored:
            raise DataError(vcf_path, f"seqpipe variants wrote it already (its header declares {', '.join(scored)}), "
                                      "and new scores would sit beside the old ones: score the VCF it was made from")
        records, alleles, log = read_alleles(vcf, vcf_path)
        undeclared = undeclared_tags(records, declared)
        if undeclared:
            vcf.close()
            vcf = open_vcf(vcf_path)
            declare(vcf, undeclared)
            records, alleles, log = read_alleles(vcf, vcf_path)
            print(f"seqpipe: warning: {vcf_path}: its header does not declare "
                  f"{', '.join(f'{kind} {name}' for kind, name in undeclared)}; the scored VCF declares them",
                  file=sys.stderr)
    except BaseException:
        vcf.close()
        raise
    # htslib's warnings, as they were, but for an undeclared contig's: the chromosomes are checked against the FASTA
    # (its advice, to index the file with tabix, does not apply)
    sys.stderr.write("".join(f"{line}\n" for line in log if "is not defined in the header" not in line))
    return vcf, records, alleles


def undeclared_tags(records, declared: set[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    """The (kind, name) of every INFO key, FORMAT key and FILTER value the ``records`` use and the header does not
    declare (``declared``), each with whether it is a flag (an INFO key never given a value)."""
    flags: dict[tuple[str, str], bool] = {}
    for variant in records:
        tags = [("INFO", key, isinstance(value, bool)) for key, value in variant.INFO]
        tags += [("FORMAT", key, False) for key in variant.FORMAT or []]
        tags += [("FILTER", name, False) for name in (variant.FILTER or "").split(";") if name]
        for kind, name, flag in tags:
            if (kind, name) not in declared:
                flags[kind, name] = flags.get((kind, name), True) and flag
    return flags


def declare(vcf, tags: dict[tuple[str, str], bool]) -> None:
    """Add the ``tags`` (:func:`undeclared_tags`) to the header of ``vcf``, opened but not yet read."""
    note = "not declared in the input VCF's header; declared by seqpipe variants"
    for (kind, name), flag in tags.items():
        if kind == "FILTER":
            vcf.add_filter_to_header({"ID": name, "Description": note})
        else:
            add = vcf.add_info_to_header if kind == "INFO" else vcf.add_format_to_header
            add({"ID": name, "Number": "0" if flag else ".", "Type": "Flag" if flag else "String", "Description": note})


def read_alleles(vcf, vcf_path: Path) -> tuple[list, list[Allele], list[str]]:
    """The records (cyvcf2 variants) of an open VCF, their alleles (one per ALT) and the lines htslib printed
    while reading them. A malformed record is one error that says what htslib found wrong, naming the line (htslib
    prints it to the process's stderr, which is read here instead)."""
    records, alleles = [], []
    with tempfile.TemporaryFile() as htslib_log:
        try:
            with redirected_stderr(htslib_log):
                for number, variant in enumerate(vcf, start=1):
                    records.append(variant)
                    for alt in variant.ALT or ["."]:
                        alleles.append(Allele(number - 1, variant.CHROM, variant.POS - 1, variant.REF, alt, variant.ID or "."))
        except Exception as error:  # htslib reports a malformed record as a generic exception
            errors = [line.partition("] ")[2] for line in read_log(htslib_log) if line.startswith("[E::")]
            raise DataError(vcf_path, f"malformed VCF: {errors[0] if errors else error}",
                            line=header_lines(vcf_path) + len(records) + 1) from None
        log = read_log(htslib_log)
    if not records:
        raise DataError(vcf_path, "no variant records")
    return records, alleles, log


def header_lines(vcf_path: Path) -> int:
    """How many lines of the (plain or gzipped) VCF come before its first record."""
    with open_text(vcf_path) as lines:
        return sum(1 for _ in takewhile(lambda line: line.startswith("#"), lines))


@contextmanager
def redirected_stderr(file) -> Iterator[None]:
    """File descriptor 2 (what C libraries such as htslib write to) goes to ``file`` inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read_log(file) -> list[str]:
    """The lines written to ``file``."""
    file.seek(0)
    return file.read().decode(errors="replace").splitlines()


def info_key(kind: str, name: str) -> str:
    """INFO keys must match [A-Za-z_][0-9A-Za-z_.]*: other characters of a class name become ``_``."""
    return f"SEQPIPE_{kind}_" + re.sub(r"[^0-9A-Za-z_.]", "_", name)


def score_vcf(options: argparse.Namespace) -> None:
    """``seqpipe variants`` with its parsed ``options`` (see :func:`parser`)."""
    suffixes = (".tsv", ".vcf.gz", ".skipped.tsv")
    out = output_prefix(options.out, suffixes)
    paths = [out.with_name(out.name + suffix) for suffix in suffixes]
    if options.window % 2 == 0:
        print(f"seqpipe: warning: --window {options.window} is even: the variant is not at its centre, so the two "
              "strands' windows are not mirror images (an odd window makes them so)", file=sys.stderr)
    span = None
    if options.central is not None:
        if options.central > options.window:
            raise ConfigError(f"--central must be at most --window ({options.window}), got {options.central}")
        span_start = options.window // 2 - options.central // 2
        span = (span_start, span_start + options.central)
    kinds = ("variant scores TSV", "scored VCF", "skipped variants TSV")
    outputs = [Output(path, kind) for path, kind in zip(paths, kinds)]
    with ExitStack() as stack:  # the inputs are closed before the outputs are committed or discarded
        tsv, vcf_out, skipped_tsv = stack.enter_context(writing(*outputs))
        model = load_model(options.ckpt_path, options.chunk_size, options.trust_module, options.device)
        language_model = isinstance(model.head, NextBaseLM)
        if language_model:
            check_language_model_options(options)
        else:
            label_names(model)  # a model without classes is refused before the genome and the VCF are read
        genome = stack.enter_context(closing(Genome(options.fasta, options.cache_dir)))
        vcf, records, alleles = read_vcf(Path(options.vcf))
        stack.callback(vcf.close)
        reasons = [check_allele(a, genome) for a in alleles]
        scored = [a for a, reason in zip(alleles, reasons) if reason is None]
        if not scored:
            absent = sorted({a.chrom for a, reason in zip(alleles, reasons) if reason == "chromosome not in the FASTA"})
            names = (f"; its chromosomes {absent[:5]} are not among the FASTA's {list(genome.chrom_sizes)[:5]}"
                     if absent else "")
            raise DataError(options.vcf, f"none of its {len(alleles)} alleles can be scored ({reason_counts(reasons)}){names}")
        if language_model:
            scores = language_model_scores(model, genome, scored, options.window, options.batch_size)
        else:
            scores = class_scores(model, genome, scored, options.window, span, options.batch_size)
        table = pd.DataFrame({
            "chrom": [a.chrom for a in scored], "pos": [a.pos + 1 for a in scored], "ref": [a.ref for a in scored],
            "alt": [a.alt for a in scored], "id": [a.id for a in scored], **{score.column: score.values for score in scores},
        })
        skipped = pd.DataFrame(
            [(a.chrom, a.pos + 1, a.ref, a.alt, a.id, reason) for a, reason in zip(alleles, reasons) if reason is not None],
            columns=["chrom", "pos", "ref", "alt", "id", "reason"],
        )
        table.to_csv(tsv, sep="\t", index=False, float_format="%.6g")
        skipped.to_csv(skipped_tsv, sep="\t", index=False)
        write_scored_vcf(vcf, records, alleles, reasons, scores, vcf_out, Path(options.vcf))
    # one line per record: its ALTs share the REF
    mismatches = {a.record: f"{a.chrom}:{a.pos + 1} {a.id}: {reason}" for a, reason in zip(alleles, reasons)
                  if reason is not None and DISAGREES in reason}
    report(len(alleles), skipped, list(mismatches.values()), paths)


def write_scored_vcf(vcf, records, alleles, reasons, scores: list[Score], path: Path, source: Path) -> None:
    """The input records (of the VCF ``source``) with one value of each score per ALT in INFO, bgzipped."""
    from cyvcf2 import Writer

    for score in scores:
        vcf.add_info_to_header({"ID": score.info, "Number": "A", "Type": "Float",
                                "Description": f"seqpipe variants: {score.description}"})
    vcf.add_info_to_header({"ID": "SEQPIPE_SKIPPED", "Number": "A", "Type": "String",
                            "Description": "seqpipe variants: why each ALT was not scored (. for a scored ALT)"})
    with closing(Writer(str(path), vcf, mode="wz")) as writer:  # closed before a failure discards its output
        _write_records(writer, records, alleles, reasons, scores, source)


def _write_records(writer, records, alleles, reasons, scores: list[Score], source: Path) -> None:
    by_record: dict[int, list[int]] = {}
    for index, allele in enumerate(alleles):
        by_record.setdefault(allele.record, []).append(index)
    score_row = np.cumsum([reason is None for reason in reasons]) - 1
    for number, variant in enumerate(records):
        indices = by_record[number]
        scored = [reasons[i] is None for i in indices]
        if not all(scored):
            variant.INFO["SEQPIPE_SKIPPED"] = ",".join(
                "." if reasons[i] is None else re.sub(r"[\s;,=]+", "_", reasons[i]) for i in indices)
        if any(scored):
            rows = [score_row[i] if ok else None for i, ok in zip(indices, scored)]
            for score in scores:
                variant.INFO[score.info] = info_values(score.values, rows)
        try:
            writer.write_record(variant)
        except Exception as error:  # cyvcf2 refuses a record htslib flagged (an error code), as a generic exception
            raise DataError(source, f"cannot write record #{number + 1} ({variant.CHROM}:{variant.POS}) of the "
                            f"input to the scored VCF: {error}") from None


def check_language_model_options(options: argparse.Namespace) -> None:
    """Options that do not apply to a language model's log-likelihood ratio, refused."""
    if options.central is not None:
        raise ConfigError("--central averages a per-base classifier's positions; a language model scores each variant "
                          "by one log-likelihood ratio: leave --central out")
    if options.window < LANGUAGE_MODEL_MIN_WINDOW:
        raise ConfigError(f"--window must be >= {LANGUAGE_MODEL_MIN_WINDOW} for a language model (bases on both "
                          f"sides of the variant), got {options.window}")


def info_values(values: np.ndarray, rows: list[int | None]) -> str:
    """One INFO value per ALT (``Number=A``), ``values[row]`` or ``.`` where ``row`` is None (an ALT not scored):
    cyvcf2 sets such a value from its text, not from a list."""
    return ",".join("." if row is None else f"{values[row]:.6g}" for row in rows)


def report(total: int, skipped, mismatches: list[str], paths: list[Path]) -> None:
    """The counts on stdout; on stderr the records whose REF disagrees with the FASTA (the first
    SHOWN_MISMATCHES)."""
    print(f"scored {total - len(skipped)} of {total} alleles; wrote {paths[0]}, {paths[1]} and {paths[2]}")
    if len(skipped):
        print(f"skipped {len(skipped)} (listed in {paths[2]}): {reason_counts(skipped['reason'])}")
    for mismatch in mismatches[:SHOWN_MISMATCHES]:
        print(f"seqpipe: warning: {mismatch}; not scored", file=sys.stderr)
    if len(mismatches) > SHOWN_MISMATCHES:
        print(f"seqpipe: warning: {len(mismatches) - SHOWN_MISMATCHES} more REF mismatches in {paths[2]}", file=sys.stderr)


def reason_counts(reasons) -> str:
    """"2 indel, 1 REF disagrees with the FASTA": how many alleles were skipped for each reason."""
    counts = Counter(f"REF {DISAGREES}" if DISAGREES in r else r for r in reasons if r is not None)
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


def parser() -> argparse.ArgumentParser:
    p = tool_parser("seqpipe variants", __doc__)
    p.add_argument("--data.fasta", dest="fasta", required=True, help="the reference genome (plain, bgzip or gzip)")
    p.add_argument("--vcf", required=True, help="the variants (VCF, plain, gzip or bgzip)")
    p.add_argument("--out", required=True, help="prefix of the outputs: PREFIX.tsv, PREFIX.vcf.gz, PREFIX.skipped.tsv")
    p.add_argument("--window", type=positive_int, default=1001, help="bases per window, centred on the variant (default 1001)")
    p.add_argument("--central", type=positive_int, help="per-base models: the positions at the window's centre whose probabilities are averaged (default: the whole window)")
    p.add_argument("--batch_size", type=positive_int, default=64, help="alleles per forward pass (default 64)")
    p.add_argument("--chunk_size", type=int, help="run windows chunk by chunk with carried state (causal backbones)")
    add_device_option(p)
    p.add_argument("--data.cache_dir", dest="cache_dir", help="where a plain-gzip FASTA is decompressed once")
    return p


def main(argv: list[str] | None = None) -> int:
    """``seqpipe variants``; returns the exit code."""
    return run_tool(score_vcf, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
