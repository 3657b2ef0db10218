"""Front end of the raw-waveform classifier: none vs patch vs strided conv — accuracy and time per epoch.

    python bench/audio_frontend.py TRAIN_DIR TEST_DIR [--per-class 20] [--epochs 3]

Every variant trains the same S4 backbone (d_model 64, 4 layers, S4D N=64) from the same seed on the same
clips (the first ``--per-class`` training clips of each class, 8 kHz) and is scored on TEST_DIR. "none"
(one position per sample) is only timed over a few training steps: a full epoch costs ~stride times more.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from seqpipe.backbone import Backbone
from seqpipe.data.audio import AudioClassificationData, list_clips
from seqpipe.model import SequenceModel
from seqpipe.s4 import S4Block
from seqpipe.tasks.classification import SequenceClassification

VARIANTS = {"patch/16": ("patch", 16), "conv/16": ("conv", 16), "conv/8": ("conv", 8)}


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


def model(frontend: str, stride: int) -> SequenceModel:
    torch.manual_seed(0)
    backbone = Backbone(64, 4, block=lambda d: S4Block(d, d_state=64), dropout=0.1, frontend=frontend, stride=stride)
    return SequenceModel(backbone, SequenceClassification(dropout=0.1), lr=3e-3, weight_decay=0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    manifest = subset_manifest(args.train, args.test, args.per_class, work / "subset.csv")
    print(f"| front end / stride | test acc after {args.epochs} epochs | s / epoch (median) |\n|---|---|---|", flush=True)
    for name, (frontend, stride) in VARIANTS.items():
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
        net = model(frontend, stride)
        trainer.fit(net, data)
        accuracy = trainer.test(net, data, verbose=False)[0]["test/acc"]
        print(f"| {name} | {accuracy:.3f} | {sorted(epoch_times)[len(epoch_times) // 2]:.0f} |", flush=True)
    # "none": one position per sample; time a few steps on real batches and scale to the epoch
    data = AudioClassificationData(train=str(manifest), batch_size=32)
    data.setup("fit")
    net = model("linear", 1)
    net._bind(data.data_info)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batches, step_times = iter(data.train_dataloader()), []
    for _ in range(2):
        batch = next(batches)
        start = time.perf_counter()
        net.head.loss(net(batch), batch).backward()
        optimizer.step()
        optimizer.zero_grad()
        step_times.append(time.perf_counter() - start)
    per_epoch = min(step_times) * len(data.train_dataloader())
    print(f"| none (linear, stride 1) | not trained | ~{per_epoch:.0f} (from {len(step_times)} steps) |", flush=True)


if __name__ == "__main__":
    main()
