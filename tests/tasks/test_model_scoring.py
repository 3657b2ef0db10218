"""Both-strand scoring: the mean of a sequence's and its reverse complement's probabilities, position by
position, computed from the letters; skipping the second pass of an RC-invariant model changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dna_tool_fixtures import CAUSAL_CLASSIFIER, RC_PER_BASE, reverse_complement, write_checkpoint
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.errors import CheckpointError
from seqpipe.tasks.model_scoring import class_probabilities, load_model, strand_symmetric

rng = np.random.default_rng(11)


def test_both_strands_are_averaged_at_the_same_genomic_position(tmp_path):
    tokenizer = DNATokenizer()
    sequences = ["".join(rng.choice(list("ACGTN"), 50)) for _ in range(3)]
    x = torch.stack([tokenizer.encode(s) for s in sequences])
    # a per-base head on RC-invariant features and a head that averages the strands itself cover both strands:
    # scored once; a sequence head reading the given strand's k-mers beside RC-invariant features does not
    one_strand_head = {**CAUSAL_CLASSIFIER, "head": {"class_path": "seqpipe.tasks.classification.SequenceClassification",
                                                     "init_args": {"strands": "forward"}}}
    kmers_beside_invariant = {**RC_PER_BASE, "head": {
        "class_path": "seqpipe.tasks.dna_classification.DNASequenceClassification",
        "init_args": {"strands": "forward", "kmer_size": 3}}}
    averaged_bidirectional = {**RC_PER_BASE, "backbone": {
        "class_path": "seqpipe.dna_backbones.BidirectionalBackbone", "init_args": {
            "d_model": 8, "n_layers": 1, "strand_average": True,
            "block": {"class_path": "seqpipe.s4.S4Block", "init_args": {"d_state": 8}}}}}
    for config, labels, symmetric in ((RC_PER_BASE, ["other", "CDS"], True), (CAUSAL_CLASSIFIER, ["a", "b"], True),
                                      (one_strand_head, ["a", "b"], False), (kmers_beside_invariant, ["a", "b"], False),
                                      (averaged_bidirectional, ["other", "CDS"], True)):
        write_checkpoint(tmp_path / "m.ckpt", config, labels, seed=4)
        model = load_model(tmp_path / "m.ckpt")
        assert strand_symmetric(model) == symmetric
        with torch.no_grad():
            got = class_probabilities(model, x)
            for row, s in enumerate(sequences):
                forward = model({"x": tokenizer.encode(s)[None]}).softmax(-1)[0]
                reverse = model({"x": tokenizer.encode(reverse_complement(s))[None]}).softmax(-1)[0]
                expected = (forward + (reverse.flip(0) if reverse.dim() == 2 else reverse)) / 2
                torch.testing.assert_close(got[row], expected, atol=2e-6, rtol=0)


def test_a_checkpoint_is_read_once_and_restores_the_models_outputs(tmp_path, monkeypatch):
    written = write_checkpoint(tmp_path / "m.ckpt", RC_PER_BASE, ["other", "CDS"], seed=5)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(kwargs.get("weights_only")) or real_load(*args, **kwargs))
    model = load_model(tmp_path / "m.ckpt")
    assert loads == [True]  # one read, tensors and plain data only
    x = DNATokenizer().encode("ACGTTGCANNACGT")[None]
    with torch.no_grad():
        torch.testing.assert_close(model({"x": x}), written({"x": x}), atol=0, rtol=0)
    assert not model.training and model.hparams["data_info"]["label_names"] == ["other", "CDS"]


def test_a_checkpoint_with_arguments_this_version_does_not_take_is_one_error_naming_them(tmp_path):
    head = {"class_path": "seqpipe.tasks.classification.SequenceClassification", "init_args": {"colour": "blue"}}
    write_checkpoint(tmp_path / "m.ckpt", CAUSAL_CLASSIFIER, ["neg", "pos"])
    checkpoint = torch.load(tmp_path / "m.ckpt", weights_only=False)
    checkpoint["hyper_parameters"]["head"] = head
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="its model arguments do not fit this version") as error:
        load_model(tmp_path / "old.ckpt")
    assert "'colour' is not accepted" in str(error.value) and "\n" not in str(error.value)
