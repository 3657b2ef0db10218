"""The DNA alphabet's one home: ids, complement and reverse complements against letter-level references."""

from __future__ import annotations

import torch

from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_alphabet import (BASE_IDS, BASES, DNA_COMPLEMENT, DNA_VOCAB, base_index, is_base, letters, reverse_complement,
                                  reverse_complement_ids, reverse_valid)

PAIRS = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}  # written out here, not taken from the module


def test_complement_ids_follow_the_base_pairs():
    assert DNA_COMPLEMENT[DNA_VOCAB["<pad>"]] == DNA_VOCAB["<pad>"]
    for base, pair in PAIRS.items():
        assert DNA_COMPLEMENT[DNA_VOCAB[base]] == DNA_VOCAB[pair]
    assert list(BASES) == [token for token in DNA_VOCAB if token in "ACGT"]


def test_base_ids_indices_and_letters_agree_with_the_vocabulary():
    ids = torch.tensor([DNA_VOCAB[token] for token in ["<pad>", "A", "C", "G", "T", "N"]])
    assert BASE_IDS == (1, 2, 3, 4) and base_index(torch.tensor(BASE_IDS)).tolist() == [0, 1, 2, 3]
    assert is_base(ids).tolist() == [False, True, True, True, True, False]
    assert not ((base_index(ids) >= 0) & (base_index(ids) < 4))[~is_base(ids)].any()
    assert letters(ids) == "ACGTN" == letters(ids.tolist()) == DNATokenizer().decode(DNATokenizer().encode("ACGTN"))


def test_reverse_complement_of_letters():
    assert reverse_complement("AACGTN") == "NACGTT" and reverse_complement("acgT") == "Acgt"
    assert reverse_complement(reverse_complement("GATTACA")) == "GATTACA"


def test_reverse_complement_ids_match_the_letters_row_by_row_and_keep_padding():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([40, 31, 7])
    x = torch.randint(1, 6, (3, 40), generator=generator)
    for row, n in enumerate(lengths.tolist()):
        x[row, n:] = 0
    tokenizer = DNATokenizer()
    result = reverse_complement_ids(x, lengths)
    for row, n in enumerate(lengths.tolist()):
        letters = tokenizer.decode(x[row, :n])
        expected = "".join(PAIRS[letter] for letter in reversed(letters))
        assert tokenizer.decode(result[row]) == expected and (result[row, n:] == 0).all()
    torch.testing.assert_close(result, tokenizer.reverse_complement(x, lengths))
    torch.testing.assert_close(reverse_complement_ids(x, lengths), result)


def test_reverse_valid_reverses_only_the_valid_part():
    h = torch.arange(12.0).view(2, 6, 1)
    out = reverse_valid(h, torch.tensor([4, 6]))
    assert out[0, :, 0].tolist() == [3.0, 2.0, 1.0, 0.0, 4.0, 5.0]
    assert out[1, :, 0].tolist() == [11.0, 10.0, 9.0, 8.0, 7.0, 6.0]
    torch.testing.assert_close(reverse_valid(h, None), h.flip(1))
