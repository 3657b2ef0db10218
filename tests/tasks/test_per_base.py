"""Per-base heads: masked loss, epoch metrics over every valid base, prediction rows, next-base perplexity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from seqpipe.contracts import DataInfo, TokenInput
from seqpipe.tasks.per_base import NextBaseLM, PerBaseClassification


def labels(names: list[str]) -> DataInfo:
    """DNA tokens with these classes, as the genome data module describes them."""
    return DataInfo(TokenInput(6), names)


def batch(seed: int, classes: int = 2, length: int = 30):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, length, classes, generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (3, length), generator=generator)
    mask = torch.rand(3, length, generator=generator) > 0.3
    return logits, {"y": y, "mask": mask, "chrom": ["c1", "c1", "c2"], "start": torch.tensor([0, 30, 100])}


def test_loss_uses_the_masked_positions_only():
    head = PerBaseClassification()
    head.bind(8, labels(["other", "CDS"]))
    logits, data = batch(0)
    expected = np.mean([
        -F.log_softmax(logits[b, t], -1)[data["y"][b, t]].item()
        for b in range(3) for t in range(30) if data["mask"][b, t]
    ])
    assert head.loss(logits, data).item() == pytest.approx(expected, rel=1e-6)
    scrambled = logits.clone()
    scrambled[~data["mask"]] = 1e6  # whatever sits at masked positions does not count
    assert head.loss(scrambled, data).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("classes", [2, 3])
def test_epoch_metrics_cover_every_valid_base(classes):
    head = PerBaseClassification(auroc_bins=None)
    head.bind(8, labels([f"c{k}" for k in range(classes)]))
    metrics = head.metrics()
    probs, targets = [], []
    for seed in range(3):
        logits, data = batch(seed, classes)
        head.update_metrics(metrics, logits, data)
        probs.append(logits[data["mask"]].softmax(-1).numpy())
        targets.append(data["y"][data["mask"]].numpy())
    probs, targets = np.concatenate(probs), np.concatenate(targets)
    values = metrics.compute()
    assert values["acc"].item() == pytest.approx((probs.argmax(1) == targets).mean(), abs=1e-6)
    expected_auroc = roc_auc_score(targets, probs[:, 1]) if classes == 2 else roc_auc_score(targets, probs, multi_class="ovr")
    assert values["auroc"].item() == pytest.approx(expected_auroc, abs=1e-5)


def test_prediction_rows_name_each_scored_base():
    head = PerBaseClassification()
    head.bind(8, labels(["other", "CDS"]))
    logits, data = batch(4)
    frame = head.predictions(logits, data, labels(["other", "CDS"]))
    assert list(frame.columns) == ["chrom", "position", "prob_other", "prob_CDS"]
    assert len(frame) == int(data["mask"].sum())
    row = frame.iloc[-1]
    b, t = 2, int(torch.nonzero(data["mask"][2])[-1])
    assert row["chrom"] == "c2" and row["position"] == 100 + t
    assert row["prob_CDS"] == pytest.approx(logits[b, t].softmax(-1)[1].item(), rel=1e-6)


def test_next_base_perplexity_is_exp_of_the_loss():
    head = NextBaseLM()
    head.bind(8, DataInfo(TokenInput(6), ["A", "C", "G", "T"], next_token_targets=True))
    metrics = head.metrics()
    logits, data = batch(5, classes=4)
    head.update_metrics(metrics, logits, data)
    assert metrics.compute()["perplexity"].item() == pytest.approx(np.exp(head.loss(logits, data).item()), rel=1e-5)


def test_a_language_model_head_refuses_the_other_objectives_targets():
    """NextBaseLM on masked targets, or MaskedBaseLM on next-base targets or on classes: one line at bind, so that no
    model is trained (and no variant scored) with a head that reads its targets as something else."""
    from seqpipe.errors import ConfigError
    from seqpipe.tasks.per_base import MaskedBaseLM

    masked, next_base = DataInfo(TokenInput(6), list("ACGT")), DataInfo(TokenInput(6), list("ACGT"), next_token_targets=True)
    with pytest.raises(ConfigError, match="NextBaseLM predicts the next base, but the data's targets are not the next base"):
        NextBaseLM().bind(8, masked)
    with pytest.raises(ConfigError, match="MaskedBaseLM predicts the masked bases .* the data's targets are the next base"):
        MaskedBaseLM().bind(8, next_base)
    with pytest.raises(ConfigError, match=r"the data's targets are the classes \['other', 'CDS'\]"):
        MaskedBaseLM().bind(8, labels(["other", "CDS"]))
    NextBaseLM().bind(8, next_base), MaskedBaseLM().bind(8, masked)  # their own targets
