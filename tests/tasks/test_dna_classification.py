"""The DNA classification head: k-mer counts against a string-counting reference, max pooling that ignores
padding, and both strands still given one prediction."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqpipe.backbone import Backbone
from seqpipe.chunked import valid_max
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_alphabet import reverse_complement_ids
from seqpipe.dna_backbones import MotifBackbone
from seqpipe.errors import ConfigError
from seqpipe.model import SequenceModel
from seqpipe.s4 import S4Block
from seqpipe.tasks.classification import SequenceClassification
from seqpipe.tasks.dna_classification import DNASequenceClassification, kmer_profile

TOKENS = DNATokenizer()
DNA_INFO = {"vocab_size": 6, "tokenizer": "dna", "label_names": ["no", "yes"]}


def reference_profile(sequence: str, k: int) -> list[float]:
    """L2-normalised counts of the k-mers without N, in lexicographic order of ACGT."""
    counts = Counter(sequence[i:i + k] for i in range(len(sequence) - k + 1))
    vector = [float(counts["".join(kmer)]) for kmer in itertools.product("ACGT", repeat=k)]
    norm = sum(v * v for v in vector) ** 0.5
    return [v / norm if norm else 0.0 for v in vector]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_kmer_profile_counts_like_the_string_reference_and_skips_n_and_padding(k):
    sequences = ["ACGTTGCAAC", "GGNACGTA", "TTT", "AN"]
    padded = torch.nn.utils.rnn.pad_sequence([TOKENS.encode(s) for s in sequences], batch_first=True)
    profile = kmer_profile(padded, k)
    expected = torch.tensor([reference_profile(s, k) for s in sequences])
    torch.testing.assert_close(profile, expected)


def test_valid_max_ignores_padding():
    features = torch.randn(2, 6, 3)
    lengths = torch.tensor([6, 2])
    padded = features.clone()
    padded[1, 2:] = 100.0
    torch.testing.assert_close(valid_max(padded, lengths), torch.stack([features[0].amax(0), features[1, :2].amax(0)]))


@pytest.mark.parametrize("pooling,kmer_size", [("mean_max", 3), ("max", 0), ("mean", 4)])
def test_both_strands_get_one_prediction_and_padding_changes_nothing(pooling, kmer_size):
    torch.manual_seed(0)
    backbone = MotifBackbone(d_model=8, n_layers=1, motif_width=5, block=lambda d: S4Block(d, d_state=4, mode="diag"))
    model = SequenceModel(backbone, DNASequenceClassification(pooling=pooling, kmer_size=kmer_size), data_info=DNA_INFO)
    model = model.double().eval()
    records = [torch.randint(1, 5, (n,)) for n in (30, 11)]
    x = torch.nn.utils.rnn.pad_sequence(records, batch_first=True)
    lengths = torch.tensor([30, 11])
    logits = model({"x": x, "lengths": lengths})
    rc = model({"x": reverse_complement_ids(x, lengths), "lengths": lengths})
    torch.testing.assert_close(rc, logits, rtol=0, atol=1e-10)
    alone = torch.cat([model({"x": r[None], "lengths": torch.tensor([len(r)])}) for r in records])
    torch.testing.assert_close(alone, logits, rtol=0, atol=1e-10)


@pytest.mark.parametrize("training", [False, True])
def test_strand_pair_is_one_linear_layer_over_the_pooled_features_of_both_strands(training):
    torch.manual_seed(2)
    backbone = MotifBackbone(d_model=8, n_layers=1, motif_width=5, block=lambda d: S4Block(d, d_state=4, mode="diag"))
    head = DNASequenceClassification(pooling="mean_max", kmer_size=2, strands="pair")
    model = SequenceModel(backbone, head, data_info=DNA_INFO).double().train(training)
    records = [torch.randint(1, 5, (n,)) for n in (30, 11)]
    x = torch.nn.utils.rnn.pad_sequence(records, batch_first=True)
    lengths = torch.tensor([30, 11])
    rc = reverse_complement_ids(x, lengths)

    def pooled(tokens):  # (B, 2 * 8 + 16): what the head reads of one strand, by plain loops over the records
        features = backbone(tokens, lengths)
        return torch.stack([torch.cat([f[:n].mean(0), f[:n].amax(0), torch.tensor(reference_profile(
            TOKENS.decode(t[:n]), 2), dtype=torch.float64)]) for f, t, n in zip(features, tokens, lengths)])

    weight = torch.cat([head.classifier.weight, head.reverse_classifier.weight], dim=1)
    expected = torch.cat([pooled(x), pooled(rc)], dim=1) @ weight.T + head.classifier.bias
    logits = model({"x": x, "lengths": lengths})
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-7)  # the head counts k-mers in float32
    # the strands keep their roles: the reverse complement's prediction differs
    assert not torch.allclose(model({"x": rc, "lengths": lengths}), logits, atol=1e-3)


def test_a_pair_head_without_the_reverse_strands_layer_stops_rather_than_reuse_the_forward_one():
    model = SequenceModel(Backbone(8, 1, vocab_size=6), DNASequenceClassification(strands="pair"), data_info=DNA_INFO)
    model.head.reverse_classifier = None  # as a subclass that makes its own layers in bind would leave it
    with pytest.raises(ConfigError, match="strands 'pair' needs a linear layer for the reverse strand"):
        model.eval()({"x": torch.randint(1, 5, (2, 12))})


def test_bad_options_are_one_error():
    with pytest.raises(ConfigError, match="strands must be one of average, pair, forward"):
        DNASequenceClassification(strands="both")
    with pytest.raises(ConfigError, match="pooling must be"):
        DNASequenceClassification(pooling="sum")
    with pytest.raises(ConfigError, match="SequenceClassification: pooling must be 'mean' or 'last', got 'max'"):
        SequenceClassification(pooling="max")  # the plain head has no max: it would have pooled the last position
    with pytest.raises(ConfigError, match="monitor must be acc, mcc, f1 or auroc, got 'loss'"):
        DNASequenceClassification(monitor="loss")
    assert DNASequenceClassification(monitor="mcc").monitor == "val/mcc" and SequenceClassification().monitor == "val/acc"
    with pytest.raises(ConfigError, match="kmer_size must be"):
        DNASequenceClassification(kmer_size=12)
    with pytest.raises(ConfigError, match="needs DNA tokens"):
        SequenceModel(Backbone(8, 1, d_input=3), DNASequenceClassification(kmer_size=3),
                      data_info={"input_dim": 3, "label_names": ["a", "b"]})


@pytest.mark.parametrize("strands", ["average", "pair"])
@pytest.mark.parametrize("pooling", ["mean_max", "max", "mean"])
def test_a_long_record_streamed_in_chunks_gets_the_whole_records_prediction(pooling, strands, monkeypatch):
    torch.manual_seed(1)
    backbone = MotifBackbone(d_model=8, n_layers=2, motif_width=5, block=lambda d: S4Block(d, d_state=4, mode="diag"))
    head = DNASequenceClassification(pooling=pooling, kmer_size=2, strands=strands)
    whole = SequenceModel(backbone, head, data_info=DNA_INFO).double().eval()
    streamed = SequenceModel(backbone, whole.head, data_info=DNA_INFO, chunk_size=16).double().eval()
    records = [torch.randint(1, 5, (n,)) for n in (120, 37)]
    batch = {"x": torch.nn.utils.rnn.pad_sequence(records, batch_first=True), "lengths": torch.tensor([120, 37])}
    # streamed into pooled statistics: neither the whole features nor the chunked (B, L, D) features are made
    monkeypatch.setattr(type(backbone), "forward", lambda *a, **k: pytest.fail("whole features computed"))
    monkeypatch.setattr("seqpipe.model.chunked_forward", lambda *a, **k: pytest.fail("chunked features computed"))
    with torch.no_grad():
        logits = streamed(batch)
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(logits, whole(batch), rtol=0, atol=1e-10)


def test_mcc_matches_scikit_learn_and_is_zero_for_a_constant_prediction():
    """Against scikit-learn's matthews_corrcoef: random predictions of 2 and 3 classes, and the undefined cases
    (one class predicted, one class true) where it is 0, not torchmetrics 1.9's limit value (0.92 below)."""
    from sklearn.metrics import matthews_corrcoef

    from seqpipe.tasks.classification import MatthewsCorrCoef

    generator = torch.Generator().manual_seed(0)
    cases = [(torch.randint(0, k, (50,), generator=generator), torch.randint(0, k, (50,), generator=generator), k)
             for k in (2, 3)]
    cases += [(torch.zeros(20, dtype=torch.long), torch.tensor([0] * 19 + [1]), 2),  # the majority class, always
              (torch.tensor([0, 1] * 10), torch.zeros(20, dtype=torch.long), 2)]     # one true class
    for predicted, truth, k in cases:
        metric = MatthewsCorrCoef(k)
        metric.update(predicted, truth)
        assert float(metric.compute()) == pytest.approx(matthews_corrcoef(truth.numpy(), predicted.numpy()), abs=1e-6)


@pytest.mark.parametrize("thresholds", [None, 2000])
def test_auroc_averages_the_classes_the_split_holds_as_scikit_learn(thresholds):
    """Macro one-vs-rest AUROC against scikit-learn's over the classes present: a class the split lacks (a one-record
    class kept for training) is left out, not counted as 0 as torchmetrics 1.9 does; none present is NaN."""
    from sklearn.metrics import roc_auc_score

    from seqpipe.tasks.classification import PresentClassesAUROC

    generator = torch.Generator().manual_seed(1)
    truth = torch.randint(0, 2, (80,), generator=generator)  # classes 0 and 1 of three
    probs = torch.softmax(torch.randn(80, 3, generator=generator) + 2 * F.one_hot(truth, 3), -1)
    metric = PresentClassesAUROC(3, thresholds)
    metric.update(probs, truth)
    expected = np.mean([roc_auc_score(truth.numpy() == k, probs[:, k].numpy()) for k in (0, 1)])
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-3 if thresholds else 1e-6)
    one_class = PresentClassesAUROC(3, thresholds)
    one_class.update(probs, torch.zeros(80, dtype=torch.long))
    with pytest.warns(UserWarning, match="AUROC is undefined"):
        assert torch.isnan(one_class.compute())
