"""Character tokenizers: sequences of letters to integer ids, through a 256-entry lookup table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from seqpipe.contracts import TokenInput
from seqpipe.dna_alphabet import DNA_VOCAB, PAD_ID, letters, reverse_complement_ids
from seqpipe.errors import DataError

_INVALID = 255


class DNATokenizer:
    """DNA nucleotides to ids: pad 0, A 1, C 2, G 3, T 4, N 5 (``vocab_size`` 6).

    Letters are case-insensitive. The other IUPAC ambiguity codes (R Y S W K M B D H V) become N, and
    U becomes T, so RNA reads as its DNA equivalent. Any other character (gaps ``-``, ``.``, ``*``,
    digits, spaces inside a sequence) is a :class:`~seqpipe.errors.DataError` that names the file,
    the record and the 1-based position.
    """

    name = "dna"
    pad_id = PAD_ID
    vocab = DNA_VOCAB
    vocab_size = len(vocab)

    def __init__(self):
        table = np.full(256, _INVALID, dtype=np.uint8)
        aliases = {**{base: base for base in "ACGTN"}, "U": "T", **{code: "N" for code in "RYSWKMBDHV"}}
        for letter, base in aliases.items():
            table[ord(letter)] = table[ord(letter.lower())] = self.vocab[base]
        self._table = table

    def token_input(self) -> TokenInput:
        """What the tokens are, for the data modules' :class:`~seqpipe.contracts.DataInfo`."""
        return TokenInput(self.vocab_size, dict(self.vocab), self.name)

    def encode_array(
        self, sequence: str, *, source: str | Path = "<sequence>", record: str | None = None,
        line: int | Callable[[int], int] | None = None, offset: int = 0,
    ) -> np.ndarray:
        """sequence of length L -> ids (L,) uint8. ``source``, ``record`` and ``line`` only name the error:
        ``line`` is the record's line, or a function of a 0-based position in ``sequence`` giving the line
        that holds it; ``offset`` is where ``sequence`` starts in its record (positions are reported in the
        record, 1-based)."""
        raw = sequence.encode("ascii", errors="replace")  # a non-ASCII character becomes "?", which is invalid
        ids = self._table[np.frombuffer(raw, dtype=np.uint8)]
        invalid = np.flatnonzero(ids == _INVALID)
        if invalid.size:
            position = int(invalid[0])
            raise DataError(
                source,
                f"character {sequence[position]!r} at position {offset + position + 1} is not a nucleotide "
                "(expected A, C, G, T, U, N or another IUPAC code)",
                record=record,
                line=line(position) if callable(line) else line,
            )
        return ids

    def encode(self, sequence: str, **where) -> torch.Tensor:
        """sequence of length L -> ids (L,) int64; ``where``: see :meth:`encode_array`."""
        return torch.from_numpy(self.encode_array(sequence, **where)).long()

    def decode(self, ids: torch.Tensor) -> str:
        """ids (L,) -> the letters, padding dropped (ambiguity codes come back as N)."""
        return letters(ids)

    def reverse_complement(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """ids (..., L) right-padded -> the reverse complement of each sequence, padding kept on the right.

        ``lengths`` (...,): valid tokens per sequence; by default the count of non-pad ids.
        """
        if lengths is None:
            lengths = (ids != self.pad_id).sum(-1)
        rows = ids.reshape(-1, ids.shape[-1])
        return reverse_complement_ids(rows, lengths.reshape(-1)).reshape(ids.shape)
