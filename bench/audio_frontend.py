"""Front end of the raw-waveform classifier — patch vs strided conv vs learned filterbank — beside an
MFCC + logistic-regression baseline: test accuracy and time per epoch, same clips and seed.

    python bench/audio_frontend.py TRAIN_DIR TEST_DIR [--per-class 60] [--epochs 4] [--variants ...] [--baseline]

Every variant trains the backbone of configs/audio_classify.yaml (d_model 64, 4 bidirectional S4D layers,
N 32, lr 5e-3) from the same seed on the same clips (the first ``--per-class`` training clips of each
class, 8 kHz) and is scored on TEST_DIR. ``--baseline`` adds MFCC statistics + logistic regression on the same training clips, decoded,
trimmed and peak-normalised by the same data module (no augmentation): per clip, 20 MFCCs (40 mel bands,
32 ms window, 10 ms hop) -> their mean, std and delta std over the clip and their means over its thirds.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from seqpipe.backbone import Backbone
from seqpipe.data.audio import AudioClassificationData, ClipDataset
from seqpipe.data.audio_io import list_clips
from seqpipe.model import SequenceModel
from seqpipe.s4 import S4Block
from seqpipe.tasks.classification import SequenceClassification

VARIANTS = {  # name -> (front end, stride, kernel)
    "patch/16": ("patch", 16, None),
    "conv/16": ("conv", 16, 32),
    "filterbank/80": ("filterbank", 80, 256),
}


def subset_manifest(train: Path, test: Path, per_class: int, out: Path) -> Path:
    rows, seen = [], {}
    for path, label in list_clips(train, None):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= per_class:
            rows.append((path, label, "train"))
    rows += [(path, label, "test") for path, label in list_clips(test, None)]
    with open(out, "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "split"), *((str(p.resolve()), l, s) for p, l, s in rows)])
    return out


def model(frontend: str, stride: int, kernel: int | None) -> SequenceModel:
    """The backbone, head and optimiser of configs/audio_classify.yaml with the given front end."""
    torch.manual_seed(0)
    block = lambda d: S4Block(d, d_state=32, dt_min=0.01, dt_max=1.0, bidirectional=True)  # noqa: E731
    backbone = Backbone(64, 4, block=block, dropout=0.1, frontend=frontend, stride=stride, frontend_kernel=kernel)
    return SequenceModel(backbone, SequenceClassification(dropout=0.1), lr=5e-3, weight_decay=0.05)


def mfcc_statistics(dataset: ClipDataset) -> tuple[np.ndarray, np.ndarray]:
    """Features (clips, 120) and labels (clips,) of every clip of ``dataset``."""
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(dataset.sample_rate, n_mfcc=20, melkwargs={"n_fft": 256, "hop_length": 80, "n_mels": 40})
    features, labels = [], []
    for i in range(len(dataset)):
        coefficients = mfcc(dataset.waveform(i))  # (20, frames)
        delta = torchaudio.functional.compute_deltas(coefficients)
        thirds = [part.mean(1) for part in torch.tensor_split(coefficients, 3, dim=1)]
        features.append(torch.cat([coefficients.mean(1), coefficients.std(1), delta.std(1), *thirds]).numpy())
        labels.append(dataset.index[dataset.clips[i].label])
    return np.stack(features), np.array(labels)


def mfcc_baseline(manifest: Path) -> tuple[float, float]:
    """(test accuracy, seconds for features + fit) of MFCC statistics + standardised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    data = AudioClassificationData(train=str(manifest))
    data.setup("test")  # every training clip (no validation share); waveforms come unaugmented
    x_train, y_train = mfcc_statistics(data.datasets["train"])
    x_test, y_test = mfcc_statistics(data.datasets["test"])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(x_train, y_train)
    return float((classifier.predict(x_test) == y_test).mean()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--baseline", action="store_true", help="add the MFCC + logistic regression row")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    manifest = subset_manifest(args.train, args.test, args.per_class, work / "subset.csv")
    print(f"| front end / stride | test acc after {args.epochs} epochs | s / epoch (median) |\n|---|---|---|", flush=True)
    for name in args.variants:
        L.seed_everything(0, verbose=False)
        data = AudioClassificationData(train=str(manifest), batch_size=32)
        epoch_times = []

        class Timer(L.Callback):
            def on_train_epoch_start(self, *_):
                self.start = time.perf_counter()

            def on_train_epoch_end(self, *_):
                epoch_times.append(time.perf_counter() - self.start)

        trainer = L.Trainer(max_epochs=args.epochs, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()],
                            num_sanity_val_steps=0, limit_val_batches=0)
        net = model(*VARIANTS[name])
        trainer.fit(net, data)
        accuracy = trainer.test(net, data, verbose=False)[0]["test/acc"]
        print(f"| {name} | {accuracy:.3f} | {sorted(epoch_times)[len(epoch_times) // 2]:.0f} |", flush=True)
    if args.baseline:
        accuracy, seconds = mfcc_baseline(manifest)
        print(f"| MFCC statistics + logistic regression | {accuracy:.3f} | {seconds:.0f} (features + fit) |", flush=True)


if __name__ == "__main__":
    main()
