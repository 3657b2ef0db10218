"""The DNA alphabet, defined once: token ids, the complement, and the other strand of a padded batch.

The tokenizer (:class:`seqpipe.data.tokenizers.DNATokenizer`), the DNA backbones, the heads that score both
strands and the DNA tools all take their ids and complements from here.
"""

from __future__ import annotations

import torch

#: the four bases, in id order
BASES = "ACGT"
#: token -> id: padding 0, the bases 1-4, N (any ambiguous base) 5
DNA_VOCAB = {"<pad>": 0, "A": 1, "C": 2, "G": 3, "T": 4, "N": 5}
PAD_ID = DNA_VOCAB["<pad>"]
#: the id of N, also what reads past a sequence's end give and what masked pre-training puts in a masked base
N_ID = DNA_VOCAB["N"]
#: the ids of BASES, in order: consecutive, from DNA_VOCAB["A"]
BASE_IDS = tuple(DNA_VOCAB[base] for base in BASES)
_COMPLEMENT_LETTER = {"<pad>": "<pad>", "A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}
#: the id of each id's complement: pad, A, C, G, T, N -> pad, T, G, C, A, N
DNA_COMPLEMENT = [DNA_VOCAB[_COMPLEMENT_LETTER[token]] for token in DNA_VOCAB]
_LETTER_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def reverse_complement(sequence: str) -> str:
    """Letters (A, C, G, T, N in either case) -> the reverse complement."""
    return sequence[::-1].translate(_LETTER_COMPLEMENT)


def is_base(ids):
    """Token ids (any shape; torch or numpy) -> where each is A, C, G or T (not padding, not N)."""
    return (ids >= BASE_IDS[0]) & (ids <= BASE_IDS[-1])


def base_index(ids):
    """Token ids (any shape; torch or numpy) -> the index of each base in BASES (A 0 .. T 3); ids that are not
    bases (padding, N) fall outside 0..3."""
    return ids - BASE_IDS[0]


def letters(ids) -> str:
    """Token ids (L,) (torch, numpy or a list) -> their letters, padding dropped."""
    names = list(DNA_VOCAB)
    return "".join(names[i] for i in (ids.tolist() if hasattr(ids, "tolist") else ids) if i != PAD_ID)


def next_base_targets(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (L + 1,) of a window and the base after it -> (x (L,) the window, y (L,) the next base as 0..3,
    mask (L,) where that next base is A, C, G or T)."""
    following = ids[1:]
    return ids[:-1], base_index(following).clamp(0, 3), is_base(following)


def reverse_valid(h: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """h (B, L, ...) -> each row's first ``lengths`` (B,) positions reversed, right padding left in place
    (all L positions when ``lengths`` is None)."""
    if lengths is None:
        return h.flip(1)
    positions = torch.arange(h.shape[1], device=h.device)[None, :]
    lengths = lengths.to(h.device)[:, None]
    source = torch.where(positions < lengths, lengths - 1 - positions, positions)
    return h.gather(1, source.view(*source.shape, *[1] * (h.dim() - 2)).expand_as(h))


def complement_ids(ids: torch.Tensor) -> torch.Tensor:
    """Token ids (any shape) -> the id of each one's complement (A <-> T, C <-> G; padding and N stay), same dtype."""
    return torch.tensor(DNA_COMPLEMENT, device=ids.device)[ids.long()].to(ids.dtype)


def reverse_complement_ids(ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Token ids (B, L), right-padded -> the reverse complement of each row's valid part, in ``ids``' dtype.
    ``lengths`` (B,): each row's valid length (None: the whole row, padding included, is flipped)."""
    return reverse_valid(complement_ids(ids), lengths)
