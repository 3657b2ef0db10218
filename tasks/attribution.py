"""Attribution maps of a trained DNA model: ``seqpipe explain``.

    seqpipe explain --ckpt_path CKPT --data.predict X.fa --out PREFIX [--target CLASS] [--span START:END] [--top 10] [--device cuda]

For each record (any input ``seqpipe predict`` takes) the explained score is the log-odds of the ``--target`` class's probability (default:
the last class) as ``predict`` gives it: the model's own pass over the record as given, which reads its reverse
complement too where the head does (``strands`` "average" or "pair"); a per-base model's probability is first
averaged over the positions
``--span`` of the record (0-based, half-open; default all); a sequence model has one score per record, and
``--span`` is an error there. Written:

* ``PREFIX.npz``: ``ids`` (N,), ``lengths`` (N,), ``score`` (N,) of the records as given, and, padded with NaN
  to the longest record, ``ism`` (N, L, 4): in-silico mutagenesis, the score with base A, C, G, T at each
  position minus the record's score (0 at the record's own base; every single-base mutant is scored, in
  batches); ``gradient`` (N, L, 4): the gradient of the score with respect to the one-hot input;
  ``grad_x_input`` (N, L): gradient times input (the gradient at the record's own base). Columns A, C, G, T.
* ``PREFIX.logos/``: sequence logos (logomaker) of the ``--top`` records by score: ISM importance of each
  base (minus the mean effect of mutating it) and gradient x input, over ``--logo_width`` positions around
  the most important one.

An earlier run's outputs are replaced; anything else at either path stops the run before any work, naming it.

Gradients come from captum (``Saliency``, ``InputXGradient``) through a differentiable one-hot input: the
backbone's per-token encoder is a lookup, so its output is ``one_hot @ table`` (Caduceus' RC embedding too).
A :class:`~seqpipe.tasks.dna_classification.DNASequenceClassification` head with ``kmer_size`` > 0 also reads
k-mer counts of the token ids, which have no gradient: its gradient maps cover the backbone's path only (a note
on stderr says so), while ISM, which scores every mutant, includes the k-mer features.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from seqpipe.contracts import chosen_class
from seqpipe.dna_alphabet import BASE_IDS, BASES, DNA_COMPLEMENT, DNA_VOCAB, reverse_valid
from seqpipe.errors import ConfigError, DataError
from seqpipe.outputs import Output, writing
from seqpipe.tasks.dna_classification import DNASequenceClassification
from seqpipe.tasks.model_scoring import (add_bed_genome_options, add_device_option, add_table_options, batches, class_probabilities,
                                         label_names, load_model, log_odds, predict_data, reads_both_strands,
                                         window_scores)
from seqpipe.tool_io import non_negative_int, output_prefix, positive_int, run_tool, tool_parser

#: BASE_IDS as a tensor, to index and compare token ids with
BASE_ID_TENSOR = torch.tensor(BASE_IDS)
#: the longest record explained: ISM's 3 L mutants of L bases are 3 x 10^8 bases at 10 kb (minutes on a CPU)
LONGEST_EXPLAINED = 10_000


class Explainer:
    """The explained score of a model and its attributions.

    Args:
        model: a DNA :class:`~seqpipe.model.SequenceModel` (eval mode).
        target: index of the explained class.
        span: per-base models: positions ``(start, end)`` whose probabilities are averaged (None: all).
    """

    def __init__(self, model, target: int, span: tuple[int, int] | None = None):
        self.model, self.target, self.span = model, target, span

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> the explained score (B,)."""
        return log_odds(window_scores(class_probabilities(self.model, x, both_strands=False), self.span)[:, self.target])

    def ism(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """One record's ids (L,) -> (L, 4): the score of every single-base mutant minus the record's score
        (0 at the record's own base, which is not scored again)."""
        length = len(x)
        positions, bases = torch.nonzero(BASE_ID_TENSOR[None, :] != x[:, None], as_tuple=True)

        def mutants(part: slice) -> torch.Tensor:  # one batch at a time: all 3L of them would hold 3L x L ids
            batch = x.repeat(len(positions[part]), 1)
            batch[torch.arange(len(batch)), positions[part]] = BASE_ID_TENSOR[bases[part]]
            return batch

        with torch.no_grad():
            reference = self.score(x[None])
            scores = torch.cat([self.score(mutants(part)) for part in batches(len(positions), batch_size)])
        effects = torch.zeros(length, 4)
        effects[positions, bases] = scores - reference
        return effects

    def gradients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids (B, L) -> (gradient (B, L, 4) of the score w.r.t. the one-hot input, gradient x input (B, L))."""
        from captum.attr import InputXGradient, Saliency

        one_hot = torch.nn.functional.one_hot(x.to(self.model.device), len(DNA_VOCAB)).float().requires_grad_()
        gradient = Saliency(self._score_of_one_hot).attribute(one_hot, abs=False)
        grad_x_input = InputXGradient(self._score_of_one_hot).attribute(one_hot).sum(-1)
        return gradient.detach().cpu()[..., BASE_ID_TENSOR], grad_x_input.detach().cpu()

    def _score_of_one_hot(self, one_hot: torch.Tensor) -> torch.Tensor:
        """one_hot (B, L, V) -> score (B,), differentiable in ``one_hot``: the encoder's output is replaced by
        ``one_hot @ table`` on its first call (the record) and, for a head that reads both strands, by the reverse
        complement's one-hot on its second. Told apart by the order of the calls, not by their ids: a batch of
        reverse-complement palindromes reads the same ids twice."""
        encoder = self.model.backbone.encoder
        with torch.no_grad():
            table = encoder(torch.arange(one_hot.shape[-1], device=one_hot.device)[None])[0]  # (V, D)
        ids = one_hot.argmax(-1)
        reverse = reverse_valid(one_hot[..., DNA_COMPLEMENT], None)  # the one-hot of reverse_complement_ids(ids)
        strands = [(ids, one_hot), (reverse.argmax(-1), reverse)][: 2 if reads_both_strands(self.model) else 1]

        def differentiable(token_ids: torch.Tensor) -> torch.Tensor:
            expected, values = strands.pop(0) if strands else (None, None)
            if expected is None or not torch.equal(token_ids, expected):
                raise ConfigError("seqpipe explain: the model's encoder read something other than the record and then its "
                                  "reverse complement (a chunked or multi-pass model); gradients need one pass per strand")
            return values @ table

        with _replaced_output(encoder, differentiable):
            return self.score(ids)


@contextmanager
def _replaced_output(module: torch.nn.Module, make_output):
    handle = module.register_forward_hook(lambda _module, inputs, _output: make_output(inputs[0]))
    try:
        yield
    finally:
        handle.remove()


def explain(options: argparse.Namespace) -> None:
    """``seqpipe explain`` with its parsed ``options`` (see :func:`parser`)."""
    suffixes = (".npz", ".logos")
    out = output_prefix(options.out, suffixes)
    paths = [out.with_name(out.name + suffix) for suffix in suffixes]
    outputs = [Output(paths[0], "attribution arrays file"), Output(paths[1], "attribution logos folder", folder=True)]
    with writing(*outputs) as (npz, logos):
        model = load_model(options.ckpt_path, trusted_modules=options.trust_module, device=options.device)
        names = label_names(model)
        target = chosen_class(names, options.target, "--target")
        span = parse_span(options.span)
        sequences = predict_data(model, options.predict, options).splits["predict"]  # the readers refuse empty records
        ids, records = sequences.ids, [torch.from_numpy(tokens).long() for tokens in sequences.tokens]
        if isinstance(model.head, DNASequenceClassification) and model.head.kmer_size:
            print(f"seqpipe explain: note: the head's {model.head.kmer_size}-mer counts have no gradient; the gradient "
                  "maps cover the backbone's path only, ISM includes the k-mer features", file=sys.stderr)
        too_long = next((i for i, x in enumerate(records) if len(x) > LONGEST_EXPLAINED), None)
        if too_long is not None:
            raise DataError(options.predict, f"a record of {len(records[too_long]):,} bases is longer than the "
                            f"{LONGEST_EXPLAINED:,} explained at most: ISM scores 3 mutants of the whole record per base "
                            "(3 L^2 bases); explain a region of it (a BED row with --data.fasta)", record=ids[too_long])
        explainer = Explainer(model, names.index(target), span)
        longest = max(len(x) for x in records)
        ism, gradient = (np.full((len(records), longest, 4), np.nan, np.float32) for _ in range(2))
        grad_x_input = np.full((len(records), longest), np.nan, np.float32)
        scores = np.zeros(len(records), np.float32)
        for i, x in enumerate(records):
            with torch.no_grad():
                scores[i] = explainer.score(x[None])  # refuses --span first if the model is not per-base
            if span is not None and span[1] > len(x):
                raise ConfigError(f"--span {options.span} runs past record {ids[i]!r} of length {len(x)}")
            ism[i, :len(x)] = explainer.ism(x, options.batch_size).numpy()
            g, gx = explainer.gradients(x[None])
            gradient[i, :len(x)], grad_x_input[i, :len(x)] = g[0].numpy(), gx[0].numpy()
        top = np.argsort(-scores, kind="stable")[:options.top]
        with open(npz, "wb") as handle:
            np.savez_compressed(handle, ids=np.array(ids), lengths=np.array([len(x) for x in records]), score=scores,
                                ism=ism, gradient=gradient, grad_x_input=grad_x_input, target=target, bases=np.array(list(BASES)))
        for rank, i in enumerate(top, start=1):
            draw_logos(records[i], ism[i, :len(records[i])], grad_x_input[i, :len(records[i])], options.logo_width,
                       f"{ids[i]}: log-odds of {target} {scores[i]:.2f}", logos / f"{rank:03d}_{safe_name(ids[i])}.png")
    logos_written = f"{len(top)} logo{'' if len(top) == 1 else 's'}"
    print(f"explained {len(records)} records (class {target}); wrote {paths[0]} and {logos_written} to {paths[1]}")


def draw_logos(x: torch.Tensor, ism: np.ndarray, grad_x_input: np.ndarray, width: int, title: str, path: Path) -> None:
    """Two logos of one record around its most important position: the ISM importance of each observed base
    (minus the mean effect of the three substitutions) and gradient x input."""
    import logomaker
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    observed = (BASE_ID_TENSOR[None, :] == x[:, None]).numpy()
    importance = -ism.sum(1) / 3
    centre = int(np.abs(importance).argmax())
    start = max(0, min(centre - width // 2, len(x) - width))
    window = slice(start, start + width)
    figure, axes = plt.subplots(2, 1, figsize=(max(6, width * 0.15), 4), sharex=True)
    for axis, values, label in ((axes[0], importance, "ISM importance"), (axes[1], grad_x_input, "gradient x input")):
        frame = pd.DataFrame(observed[window] * values[window, None], columns=list(BASES), index=range(start, start + len(observed[window])))
        with warnings.catch_warnings():  # an all-zero window (the model ignores it) is drawn flat, without a warning
            warnings.filterwarnings("ignore", "Attempting to set identical low and high ylims")
            logomaker.Logo(frame, ax=axis)
        axis.set_xlim(start - 0.5, start + len(frame) - 0.5)  # the window, not the record from position 0
        axis.set_ylabel(label)
    axes[0].set_title(title)
    axes[1].set_xlabel("position (0-based)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parse_span(text: str | None) -> tuple[int, int] | None:
    """``--span START:END`` (0-based, end excluded) -> (start, end); None stays None."""
    if text is None:
        return None
    start, _, end = text.partition(":")
    if not (start.isdigit() and end.isdigit() and int(start) < int(end)):
        raise ConfigError(f"--span must be START:END with 0 <= START < END, got {text!r}")
    return int(start), int(end)


def safe_name(text: str) -> str:
    """A record id as a file name: characters other than letters, digits and ``._-`` replaced, at most 80."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:80]


def parser() -> argparse.ArgumentParser:
    p = tool_parser("seqpipe explain", __doc__)
    p.add_argument("--data.predict", dest="predict", required=True, help="the sequences to explain: a FASTA file (plain or gzip), a folder of FASTA files, a TSV/CSV table or a BED file, as for predict")
    p.add_argument("--out", required=True, help="prefix of the outputs: PREFIX.npz and PREFIX.logos/")
    p.add_argument("--target", help="the class whose log-odds is explained (default: the last class)")
    p.add_argument("--span", help="per-base models: START:END, the positions whose probabilities are averaged")
    p.add_argument("--top", type=non_negative_int, default=10, help="logos for this many records of highest score (default 10)")
    p.add_argument("--logo_width", type=positive_int, default=60, help="positions per logo (default 60)")
    p.add_argument("--batch_size", type=positive_int, default=256, help="mutants per forward pass (default 256)")
    add_table_options(p)
    add_bed_genome_options(p)
    add_device_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``seqpipe explain``; returns the exit code."""
    return run_tool(explain, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
