import pytest
import torch

from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.errors import DataError

tokenizer = DNATokenizer()


def test_vocabulary_and_case():
    assert tokenizer.vocab == {"<pad>": 0, "A": 1, "C": 2, "G": 3, "T": 4, "N": 5}
    assert tokenizer.vocab_size == 6
    assert tokenizer.encode("ACGTN").tolist() == [1, 2, 3, 4, 5]
    assert tokenizer.encode("acgtn").tolist() == [1, 2, 3, 4, 5]
    assert tokenizer.encode("A").dtype == torch.long


def test_iupac_codes_become_n_and_u_becomes_t():
    assert tokenizer.encode("RYSWKMBDHVryswkmbdhv").tolist() == [5] * 20
    assert tokenizer.encode("UuT").tolist() == [4, 4, 4]


@pytest.mark.parametrize(("sequence", "character", "position"), [("ACGXT", "X", 4), ("-ACG", "-", 1), ("ACGé", "é", 4)])
def test_bad_character_names_file_record_and_position(sequence, character, position):
    with pytest.raises(DataError) as error:
        tokenizer.encode(sequence, source="reads.fa", record="chr7_17", line=12)
    message = str(error.value)
    assert "reads.fa" in message and "'chr7_17'" in message and "line 12" in message
    assert repr(character) in message and f"position {position}" in message


def test_reverse_complement():
    assert tokenizer.decode(tokenizer.reverse_complement(tokenizer.encode("AACGTN"))) == "NACGTT"


def test_reverse_complement_twice_is_identity_and_keeps_padding_on_the_right():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 3, 10, 1])
    x = torch.randint(1, 6, (4, 10), generator=generator)
    x[torch.arange(10) >= lengths[:, None]] = tokenizer.pad_id
    once = tokenizer.reverse_complement(x, lengths)
    assert torch.equal(once == tokenizer.pad_id, x == tokenizer.pad_id)
    assert torch.equal(once[0, :7], tokenizer.reverse_complement(x[0, :7]))
    assert torch.equal(tokenizer.reverse_complement(once), x)  # lengths inferred from the padding


def test_long_sequences_encode_in_one_lookup():
    ids = tokenizer.encode("ACGTN" * 200_000)
    assert ids.shape == (1_000_000,) and ids[-1] == 5
