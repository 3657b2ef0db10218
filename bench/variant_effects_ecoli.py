"""Variant effects of coding changes on a bacterial genome: a generated VCF of single-base substitutions in
annotated CDS (synonymous, missense, stop-gain, start-loss, and start-retained: a start codon changed into
another start codon, the control placed where start-loss variants are) and outside them, scored with ``seqpipe
variants``; prints the score distribution of each class.

    python bench/variant_effects_ecoli.py make GENOME.fna.gz GENOME.gff.gz OUT.vcf --per_class 2000
    seqpipe variants --ckpt_path CKPT --data.fasta GENOME.fna.gz --vcf OUT.vcf --out scores
    python bench/variant_effects_ecoli.py summarize OUT.vcf scores.tsv
    python bench/variant_effects_ecoli.py starts GENOME.fna.gz GENOME.gff.gz starts.fa --count 40
    seqpipe explain --ckpt_path CKPT --data.predict starts.fa --target CDS --span 53:101 --out ism_starts
    python bench/variant_effects_ecoli.py ism ism_starts.npz
    python bench/variant_effects_ecoli.py auroc GENOME.fna.gz TRACK.zarr RUN/genome_predictions.zarr --region NC_000913.3:3713321-4641652

``auroc`` scores ``seqpipe predict``'s per-base probabilities against the ``seqpipe track`` annotation of a region:
one-vs-rest AUROC of every class, of "any feature" (1 - P(other)) against every annotated base, and beside a
``TYPE:start`` / ``TYPE:end`` class a codon baseline (1 where the base lies in a start / stop codon on either
strand).

The consequence of each substitution is computed from the annotation (Biopython, translation table 11) and
written in the VCF's INFO (``CSQ``); the scores never see it.
"""

from __future__ import annotations

import argparse
import gzip

import numpy as np
import pandas as pd
import torch
from Bio.Data.CodonTable import unambiguous_dna_by_id
from Bio.Seq import Seq

from seqpipe.data.genome_io import Genome
from seqpipe.data.tokenizers import DNATokenizer

STARTS = {"ATG", "GTG", "TTG"}
TABLE_11 = {**unambiguous_dna_by_id[11].forward_table, **{codon: "*" for codon in unambiguous_dna_by_id[11].stop_codons}}
CLASSES = ["synonymous", "missense", "stop_gain", "start_loss", "start_retained", "noncoding"]


def coding_sequences(gff: str) -> list[tuple[str, int, int, str]]:
    """CDS features (chrom, 0-based start, end, strand) whose length is a whole number of codons."""
    cds = []
    with gzip.open(gff, "rt") as lines:
        for line in lines:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 9 and fields[2] == "CDS" and (int(fields[4]) - int(fields[3]) + 1) % 3 == 0:
                cds.append((fields[0], int(fields[3]) - 1, int(fields[4]), fields[6]))
    return cds


def letters(genome: Genome, chrom: str, start: int, end: int) -> str:
    return DNATokenizer().decode(torch.from_numpy(genome.read(chrom, start, end)).long())


def consequences(genome: Genome, cds: tuple[str, int, int, str], start_codon_only: bool = False):
    """Every substitution of one CDS (or of its start codon): (chrom, 0-based position, ref, alt,
    consequence), REF and ALT on the + strand."""
    chrom, start, end, strand = cds
    plus = letters(genome, chrom, start, end)
    coding = plus if strand == "+" else str(Seq(plus).reverse_complement())
    for offset in range(3 if start_codon_only else len(coding)):
        codon_start = offset - offset % 3
        codon = coding[codon_start:codon_start + 3]
        if "N" in codon:
            continue
        for alt in "ACGT":
            if alt == coding[offset]:
                continue
            mutant = codon[:offset % 3] + alt + codon[offset % 3 + 1:]
            before, after = TABLE_11[codon], TABLE_11[mutant]
            if codon_start == 0:
                # start_retained (ATG -> GTG, ...): the same place as start_loss, the start kept: its control
                kind = None if codon not in STARTS else "start_loss" if mutant not in STARTS else "start_retained"
            elif codon_start == len(coding) - 3:
                kind = None  # stop codon changes: not among the classes
            elif after == "*":
                kind = "stop_gain"
            else:
                kind = "synonymous" if after == before else "missense"
            if kind is None:
                continue
            position = start + offset if strand == "+" else end - 1 - offset
            ref, alt_plus = (coding[offset], alt) if strand == "+" else (str(Seq(coding[offset]).complement()), str(Seq(alt).complement()))
            yield chrom, position, ref, alt_plus, kind


def make(options) -> None:
    rng = np.random.default_rng(options.seed)
    genome = Genome(options.fasta)
    cds = coding_sequences(options.gff)
    sampled = rng.choice(len(cds), min(len(cds), options.genes), replace=False)
    rows = [row for i in sampled for row in consequences(genome, cds[i])]
    rows += [row for i in sorted(set(range(len(cds))) - set(sampled)) for row in consequences(genome, cds[i], start_codon_only=True)]
    frame = pd.DataFrame(rows, columns=["chrom", "pos0", "ref", "alt", "csq"])
    chosen = [group.sample(min(len(group), options.per_class), random_state=options.seed) for _, group in frame.groupby("csq")]
    coding = np.zeros(sum(genome.chrom_sizes.values()), bool)
    for chrom, start, end, _ in cds:
        coding[start:end] = True
    chrom = next(iter(genome.chrom_sizes))
    outside = rng.choice(np.flatnonzero(~coding), options.per_class, replace=False)
    refs = [letters(genome, chrom, p, p + 1) for p in outside]
    alts = ["ACGT".replace(r, "")[int(rng.integers(3))] if r in "ACGT" else "A" for r in refs]
    chosen.append(pd.DataFrame({"chrom": chrom, "pos0": outside, "ref": refs, "alt": alts, "csq": "noncoding"}))
    variants = pd.concat(chosen).sort_values(["chrom", "pos0"]).reset_index(drop=True)
    with open(options.out, "w") as vcf:
        vcf.write("##fileformat=VCFv4.2\n")
        vcf.write('##INFO=<ID=CSQ,Number=1,Type=String,Description="consequence from the annotation">\n')
        for name, size in genome.chrom_sizes.items():
            vcf.write(f"##contig=<ID={name},length={size}>\n")
        vcf.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, row in enumerate(variants.itertuples()):
            vcf.write(f"{row.chrom}\t{row.pos0 + 1}\tv{i}\t{row.ref}\t{row.alt}\t.\tPASS\tCSQ={row.csq}\n")
    print(f"wrote {options.out}: {len(variants)} variants; " + ", ".join(f"{k} {n}" for k, n in variants["csq"].value_counts().items()))


def summarize(options) -> None:
    vcf = pd.read_csv(options.vcf, sep="\t", comment="#", header=None, usecols=[2, 3, 4, 7], names=["id", "REF", "ALT", "info"])
    vcf["csq"] = vcf["info"].str.removeprefix("CSQ=")
    vcf["gc_change"] = vcf["ALT"].isin(["G", "C"]).astype(int) - vcf["REF"].isin(["G", "C"]).astype(int)  # the baseline
    scores = pd.read_csv(options.tsv, sep="\t").merge(vcf[["id", "csq", "gc_change"]], on="id")
    column = options.column or [c for c in scores.columns if c.startswith("diff_")][-1]
    table = scores.groupby("csq")[column].describe(percentiles=[0.1, 0.5, 0.9])[["count", "mean", "std", "10%", "50%", "90%"]]
    table["mean |diff|"] = scores.groupby("csq")[column].apply(lambda s: s.abs().mean())
    print(f"{column} by consequence:")
    print(table.reindex([c for c in CLASSES if c in table.index]).to_string(float_format=lambda v: f"{v:.5f}"))
    from scipy.stats import mannwhitneyu

    def probability_greater(ours, theirs) -> tuple[float, float]:
        test = mannwhitneyu(ours, theirs)
        return test.statistic / (len(ours) * len(theirs)), test.pvalue

    for kind, control in [(kind, "synonymous") for kind in CLASSES[1:]] + [("start_loss", "start_retained")]:
        ours, theirs = (scores[scores["csq"] == name] for name in (kind, control))
        if len(ours) and len(theirs):
            auc, p = probability_greater(ours[column], theirs[column])
            baseline, _ = probability_greater(ours["gc_change"], theirs["gc_change"])
            print(f"{kind} vs {control}: Mann-Whitney p = {p:.2g}, P({kind} > {control}) = {auc:.3f} "
                  f"(GC-change baseline {baseline:.3f})")


def starts(options) -> None:
    """A FASTA of ``--count`` windows of 101 bases around annotated + strand ATG start codons (ATG at 50-52),
    drawn with ``--seed``, for ``seqpipe explain``."""
    genome = Genome(options.fasta)
    cds = [c for c in coding_sequences(options.gff) if c[3] == "+" and letters(genome, c[0], c[1], c[1] + 3) == "ATG"]
    chosen = np.random.default_rng(options.seed).choice(len(cds), min(options.count, len(cds)), replace=False)
    with open(options.out, "w") as fasta:
        for i in sorted(chosen):
            chrom, start, _, _ = cds[i]
            fasta.write(f">{chrom}:{start - 50}-{start + 51}\n{letters(genome, chrom, start - 50, start + 51)}\n")
    print(f"wrote {options.out}: {len(chosen)} windows of 101 bases, ATG at 50-52 (of {len(cds)} + strand ATG starts)")


def ism_summary(options) -> None:
    """Statistics of ``seqpipe explain``'s ISM maps of the start-codon windows (ATG at 50-52): the importance of
    each ATG base (minus the mean effect of its three substitutions) and its rank among the 101 positions, and
    the mean |ISM| per substitution by region."""
    arrays = np.load(options.npz)
    ism = arrays["ism"]  # (N, 101, 4)
    importance = -ism.sum(-1) / 3  # (N, 101)
    ranks = (-np.abs(importance)).argsort(1).argsort(1) + 1  # 1 = the most important position
    for name, position in (("A", 50), ("T", 51), ("G", 52)):
        print(f"ATG base {name} (position {position}): mean importance {importance[:, position].mean():+.4f}, "
              f"mean rank {ranks[:, position].mean():.1f} of 101, most important in {(ranks[:, position] == 1).sum()} of {len(ism)}")
    in_atg = np.isin(np.abs(importance).argmax(1), [50, 51, 52])
    print(f"windows whose most important position is an ATG base: {int(in_atg.sum())} of {len(ism)}")
    regions = {"upstream -50..-21": (0, 30), "Shine-Dalgarno -20..-6": (30, 45), "-5..-1": (45, 50), "ATG": (50, 53),
               "codons 2-5": (53, 65), "further downstream": (65, 101)}
    per_substitution = np.abs(ism).sum(-1) / 3  # (N, 101): the record's own base contributes 0
    for name, (start, end) in regions.items():
        print(f"mean |ISM| per substitution, {name}: {per_substitution[:, start:end].mean():.4f}")


CODON_BASELINES = {"start": STARTS, "end": {"TAA", "TAG", "TGA"}}


def codon_mask(sequence: str, codons: set[str]) -> np.ndarray:
    """(len(sequence),) bool: the base lies in one of ``codons`` read on either strand."""
    both = codons | {str(Seq(codon).reverse_complement()) for codon in codons}
    mask = np.zeros(len(sequence), bool)
    for i in range(len(sequence) - 2):
        if sequence[i:i + 3] in both:
            mask[i:i + 3] = True
    return mask


def auroc(options) -> None:
    import zarr
    from torchmetrics.functional.classification import binary_auroc

    chrom, _, span = options.region.partition(":")
    start, end = (int(v) for v in span.split("-"))
    truth = zarr.open_group(options.track, mode="r")[chrom][start:end].astype(np.int64)
    group = zarr.open_group(options.predictions, mode="r")
    names = list(group.attrs["label_names"])
    probs = group[chrom][start:end]  # (L, K), NaN where not predicted
    if np.isnan(probs).any():
        raise SystemExit(f"{options.predictions}: {int(np.isnan(probs[:, 0]).sum())} bases of {options.region} not predicted")
    sequence = letters(Genome(options.fasta), chrom, start, end)

    def score(values, labels) -> float:
        return float(binary_auroc(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), torch.from_numpy(labels).long()))

    print(f"{options.region}: {end - start} bases; " + ", ".join(f"{n} {int((truth == k).sum())}" for k, n in enumerate(names)))
    print(f"any feature (1 - P(other)) vs annotated: AUROC {score(1 - probs[:, 0], truth > 0):.4f}")
    for k, name in enumerate(names[1:], start=1):
        line = f"{name}: AUROC {score(probs[:, k], truth == k):.4f}"
        which = name.rpartition(":")[2]
        if which in CODON_BASELINES:
            line += f" (codon baseline {score(codon_mask(sequence, CODON_BASELINES[which]), truth == k):.4f})"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make_parser = commands.add_parser("make")
    make_parser.add_argument("fasta")
    make_parser.add_argument("gff")
    make_parser.add_argument("out")
    make_parser.add_argument("--per_class", type=int, default=2000)
    make_parser.add_argument("--genes", type=int, default=500, help="CDS whose every codon is a candidate (all start codons are)")
    make_parser.add_argument("--seed", type=int, default=0)
    summary_parser = commands.add_parser("summarize")
    summary_parser.add_argument("vcf")
    summary_parser.add_argument("tsv")
    summary_parser.add_argument("--column", help="score column (default: the last diff_ column)")
    starts_parser = commands.add_parser("starts")
    starts_parser.add_argument("fasta")
    starts_parser.add_argument("gff")
    starts_parser.add_argument("out")
    starts_parser.add_argument("--count", type=int, default=40)
    starts_parser.add_argument("--seed", type=int, default=0)
    ism_parser = commands.add_parser("ism")
    ism_parser.add_argument("npz", help="seqpipe explain's arrays of the start-codon windows")
    auroc_parser = commands.add_parser("auroc")
    auroc_parser.add_argument("fasta")
    auroc_parser.add_argument("track", help="seqpipe track's zarr")
    auroc_parser.add_argument("predictions", help="seqpipe predict's genome_predictions.zarr (bin_size 1)")
    auroc_parser.add_argument("--region", required=True, help="CHROM:START-END, 0-based half-open")
    options = parser.parse_args()
    {"make": make, "summarize": summarize, "starts": starts, "ism": ism_summary, "auroc": auroc}[options.command](options)


if __name__ == "__main__":
    main()
