"""Audio clip classification data: labelled WAV/FLAC/OGG clips -> mono waveforms at one sample rate.

The clips are listed, checked and decoded by :mod:`seqpipe.data.audio_io`. Decoded clips are cached **in
memory**, per dataset, for the life of the data module: epochs after the first do not decode again. (An on-disk
cache was not chosen: at 8-16 kHz a few thousand clips take tens of MB, and decoding them once takes seconds.)
With ``num_workers > 0`` each worker keeps its own cache, so the loaders use persistent workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler

from seqpipe.contracts import ChannelInput, DataInfo
from seqpipe.data.audio_io import Clip, decode_clip, list_clips, probe_clip, trim_silence
from seqpipe.data.base import SplitDataModule, check_options, stratified_holdout, untrained_predict_error
from seqpipe.errors import ConfigError, DataError, first_few

#: skipped clips a warning names (with what is wrong with each); the rest are counted
SHOWN_SKIPPED = 10


class ClipDataset(Dataset):
    """Clips as ``{"x": (L,) float32 samples, "y": class index (-1 unlabelled), "id": the file}``; decoded once,
    then served from an in-memory cache.

    ``augment`` (training only): random crop to ``max_samples``, random shift by up to ``shift_samples``
    (silence in front, or samples dropped from the start), gain within ±``gain_db``, white noise at an
    SNR drawn from [``noise_snr_db``, ``noise_snr_db`` + 20] dB. Without it, long clips keep their centre.
    """

    def __init__(self, clips: list[Clip], label_names: list[str], sample_rate: int, max_samples: int | None,
                 normalize: bool, trim_db: float | None = None, augment: bool = False, gain_db: float = 0.0, noise_snr_db: float | None = None,
                 shift_samples: int = 0):
        self.clips, self.sample_rate, self.max_samples, self.normalize = clips, sample_rate, max_samples, normalize
        self.trim_db = trim_db
        self.index = {name: i for i, name in enumerate(label_names)}
        self.augment, self.gain_db, self.noise_snr_db, self.shift_samples = augment, gain_db, noise_snr_db, shift_samples
        self.cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def waveform(self, i: int) -> torch.Tensor:
        """The decoded clip (L,) at the target rate, silence trimmed, scaled to peak amplitude 1 when ``normalize``."""
        if i not in self.cache:
            samples = decode_clip(self.clips[i].path, self.sample_rate)
            if self.trim_db is not None:
                samples = trim_silence(samples, self.trim_db)
            if self.normalize:
                samples = samples / max(float(np.abs(samples).max()), 1e-8)
            self.cache[i] = samples
        return torch.from_numpy(self.cache[i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        wave = self.waveform(i)
        if self.augment:
            wave = self._augment(wave)
        elif self.max_samples is not None and len(wave) > self.max_samples:
            start = (len(wave) - self.max_samples) // 2
            wave = wave[start:start + self.max_samples]
        label = self.clips[i].label
        return {"x": wave, "y": self.index.get(label, -1), "id": str(self.clips[i].path)}

    def _augment(self, wave: torch.Tensor) -> torch.Tensor:
        if self.shift_samples:
            shift = int(torch.randint(-self.shift_samples, self.shift_samples + 1, ()))
            wave = torch.cat([wave.new_zeros(shift), wave]) if shift > 0 else wave[min(-shift, len(wave) - 1):]
        if self.max_samples is not None and len(wave) > self.max_samples:
            start = int(torch.randint(0, len(wave) - self.max_samples + 1, ()))
            wave = wave[start:start + self.max_samples]
        wave = wave * 10 ** ((2 * torch.rand(()) - 1) * self.gain_db / 20)
        if self.noise_snr_db is not None:
            snr_db = self.noise_snr_db + 20 * torch.rand(())
            rms = wave.pow(2).mean().sqrt()
            wave = wave + torch.randn_like(wave) * rms * 10 ** (-snr_db / 20)
        return wave


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of clips of similar length, so little of each batch is padding.

    Training (``shuffle``): indices are shuffled, cut into pools of ``pool_batches`` batches, each pool is
    sorted by length and cut into batches, and the batches are shuffled — random, yet length-homogeneous.
    Otherwise the batches are taken in order of length. The shuffles draw from ``generator``, which the training
    loader seeds for each epoch (:class:`~seqpipe.data.resumable.ResumableLoader`).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, pool_batches: int = 50,
                 generator: torch.Generator | None = None):
        self.lengths, self.batch_size, self.shuffle, self.pool = list(lengths), batch_size, shuffle, pool_batches
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            order = sorted(range(len(self.lengths)), key=self.lengths.__getitem__)
            yield from (order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size))
            return
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        pool_size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start:start + pool_size], key=self.lengths.__getitem__)
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        yield from (batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist())


def collate_clips(items: list[dict[str, Any]], pad_to: int | None = None) -> dict[str, Any]:
    """Right-pad with silence: ``{"x": (B, L, 1), "y": (B,), "lengths": (B,), "ids": [path, ...]}``."""
    lengths = torch.tensor([len(item["x"]) for item in items])
    x = torch.zeros(len(items), max(int(lengths.max()), pad_to or 0), 1)
    for row, item in enumerate(items):
        x[row, :len(item["x"]), 0] = item["x"]
    return {"x": x, "y": torch.tensor([item["y"] for item in items]), "lengths": lengths, "ids": [item["id"] for item in items]}


class AudioClassificationData(SplitDataModule):
    """Labelled audio clips for :class:`~seqpipe.tasks.classification.SequenceClassification`.

    Args:
        train: training clips: a class-per-folder directory or a ``path,label[,split]`` manifest (see
            :mod:`seqpipe.data.audio_io`); a manifest with a split column also supplies ``val``/``test`` from its
            ``val``/``test`` rows when those arguments are unset.
        val: validation clips, as ``train`` (default: a held-out ``val_fraction`` of ``train``).
        test: test clips, as ``train``.
        predict: clips to classify: a flat folder, class folders or a manifest (labels unused).
        sample_rate: every clip is resampled to this rate (Hz). At test/predict time the rate the
            checkpoint was trained at wins (with a warning if it differs).
        max_seconds: longer clips are cropped to this (a random window in training, the centre otherwise);
            None keeps every clip whole.
        pad_to_max: pad every batch to ``max_seconds`` (fixed-size batches) instead of to its longest clip.
            ``lengths`` are reported either way, so pooling ignores the padding.
        bucket: batch clips of similar length together (train, val and test; predict keeps input order).
        batch_size: clips per batch.
        val_fraction: without ``val``, this share of each training class (seeded) is held out for validation.
        trim_db: drop leading and trailing samples more than this many dB under the clip's peak, so
            silence around a clip changes nothing (None keeps clips whole).
        normalize: scale each clip to peak amplitude 1 before augmentation (gain-invariant inputs; unlike
            RMS scaling, unchanged by silence around the clip).
        augment: training-only random shift, crop, gain and noise (see :class:`ClipDataset`).
        shift_seconds: augmentation: the largest random shift of a clip (seconds).
        gain_db: augmentation: the largest random gain change (dB).
        noise_snr_db: augmentation: the signal-to-noise ratio of added noise (dB); None adds no noise.
        skip_bad: leave out files whose header cannot be read, is out of bounds or that are empty, warning
            how many, instead of raising :class:`~seqpipe.errors.DataError`.
        max_clip_seconds: a longer clip is an error (before decoding), as are headers claiming a sample rate
            outside 1-384 kHz, more than 64 channels, or a rate that needs an oversized resampling filter (see :func:`check_header`): memory stays bounded on broken files.
        num_workers: DataLoader workers (each keeps its own decoded-clip cache, so they persist).
        seed: seed of the validation split (the training order and augmentation follow ``seed_everything``).

    ``data_info``: one channel at ``sample_rate``, the sorted training labels.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        predict: str | None = None,
        sample_rate: int = 8000,
        max_seconds: float | None = None,
        pad_to_max: bool = False,
        bucket: bool = True,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        trim_db: float | None = 60.0,
        normalize: bool = True,
        augment: bool = True,
        shift_seconds: float = 0.1,
        gain_db: float = 6.0,
        noise_snr_db: float | None = 20.0,
        skip_bad: bool = False,
        max_clip_seconds: float = 600.0,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        check_options({"batch_size": batch_size}, {"val_fraction": val_fraction})
        if pad_to_max and max_seconds is None:
            raise ConfigError("data.pad_to_max needs data.max_seconds")
        self.sources = {"train": train, "val": val, "test": test, "predict": predict}
        self.sample_rate, self.max_seconds, self.pad_to_max, self.bucket = sample_rate, max_seconds, pad_to_max, bucket
        self.batch_size, self.val_fraction, self.normalize, self.seed = batch_size, val_fraction, normalize, seed
        self.trim_db = trim_db
        self.augment = dict(shift_seconds=shift_seconds, gain_db=gain_db, noise_snr_db=noise_snr_db) if augment else None
        self.skip_bad, self.num_workers, self.max_clip_seconds = skip_bad, num_workers, max_clip_seconds
        self.datasets: dict[str, ClipDataset] = {}
        self.skipped: list[Path] = []

    @property
    def max_samples(self) -> int | None:
        return None if self.max_seconds is None else round(self.max_seconds * self.sample_rate)

    def setup(self, stage: str) -> None:
        trained = self.trained_info
        if trained is not None:
            rate = trained.input.sample_rate if isinstance(trained.input, ChannelInput) else None
            if rate is None:
                raise ConfigError("the checkpoint's model was not trained on audio (it has no sample rate): give an audio checkpoint")
            if rate != self.sample_rate:
                rank_zero_warn(f"data.sample_rate {self.sample_rate} differs from the checkpoint's "
                               f"{rate} Hz; clips are resampled to {rate} Hz")
                self.sample_rate = rate
            self.data_info = trained
        splits = {"fit": ("train", "val"), "validate": ("train", "val"), "test": ("train", "test"), "predict": ("predict",)}[stage]
        # training clips: to learn the labels, to go on training (fit --ckpt_path) with the checkpoint's labels, or to
        # hold out the validation share again (validate without data.val, as fit held it out)
        needs_train = self.data_info is None or stage == "fit" or (stage == "validate" and self.sources["val"] is None)
        clips = {split: self._load(split) for split in splits if split != "train" or needs_train}
        if "train" in clips:
            self._fit_labels(clips)
        if self.data_info is None:
            raise untrained_predict_error("the class names and sample rate are the checkpoint's")
        for split, split_clips in clips.items():
            if split == "predict" or split_clips is None:
                continue
            self._check_labels(split, split_clips)
        for split, split_clips in clips.items():
            if split_clips is None:
                continue
            augment = self.augment if split == "train" else None
            self.datasets[split] = ClipDataset(
                split_clips, self.data_info.label_names, self.sample_rate, self.max_samples, self.normalize,
                self.trim_db, augment is not None, **self._augment_args(augment),
            )

    def _augment_args(self, augment: dict[str, Any] | None) -> dict[str, Any]:
        if augment is None:
            return {}
        return {"gain_db": augment["gain_db"], "noise_snr_db": augment["noise_snr_db"],
                "shift_samples": round(augment["shift_seconds"] * self.sample_rate)}

    def _load(self, split: str) -> list[Clip] | None:
        """Clips of ``split``: from its own argument, or from the val/test rows of the training manifest."""
        source = self.sources[split]
        if source is None:
            train = self.sources["train"]
            if split in ("val", "test") and train is not None and Path(train).is_file():
                rows = list_clips(train, split, untagged="train")
                return self._probe_all(train, rows) if rows else None
            if split in ("train", "predict"):
                raise ConfigError(f"give data.{split} (a class-per-folder directory or a path,label[,split] CSV)")
            return None
        rows = list_clips(source, None if split == "predict" else split)
        if not rows:
            raise DataError(source, f"no clips for the {split} split")
        if split != "predict" and rows[0][1] is None:  # a manifest's row without a label is refused by its line
            raise DataError(source, f"a flat folder of clips has no labels: the {split} clips need class subfolders "
                                    "(DIR/<label>/<clip>) or a manifest with a label column")
        return self._probe_all(source, rows)

    def _probe_all(self, source: str, rows: list[tuple[Path, str | None]]) -> list[Clip]:
        """The clips of ``rows`` (path, label) listed from ``source``; with ``skip_bad``, unreadable ones left out
        and named in one warning, unless that leaves a class with none."""
        clips, skipped, reasons = [], [], []
        for path, label in rows:
            try:
                clips.append(probe_clip(path, label, self.sample_rate, self.max_clip_seconds))
            except DataError as error:
                if not self.skip_bad:
                    raise
                skipped.append(path)
                reasons.append(str(error))
        if skipped:
            shown = first_few(reasons, SHOWN_SKIPPED, "; ")
            rank_zero_warn(f"data.skip_bad: skipped {len(skipped)} unreadable or empty clip(s): {shown}")
            self.skipped += skipped
            lost = sorted({label for _, label in rows if label is not None} - {clip.label for clip in clips})
            if lost:
                raise DataError(source, f"no readable clip is left of class(es) {lost}: skip_bad skipped them all "
                                        "(fix or remove those clips)")
        return clips

    def _fit_labels(self, clips: dict[str, list[Clip] | None]) -> None:
        """Label names from the training clips (unless a checkpoint's contract already holds them); hold out a
        stratified validation share if no val was given."""
        train = clips["train"]
        if "val" in clips and clips["val"] is None:
            held_out = set(stratified_holdout([c.label for c in train], self.val_fraction, self.seed).tolist())
            clips["train"] = [clip for i, clip in enumerate(train) if i not in held_out]
            clips["val"] = [clip for i, clip in enumerate(train) if i in held_out]
        if self.data_info is None:
            labels = sorted({c.label for c in train})
            if len(labels) < 2:
                raise DataError(self.sources["train"], f"the training clips have one class ({labels[0]!r}); a "
                                                       "classifier needs two or more")
            self.data_info = DataInfo(ChannelInput(1, self.sample_rate), labels)

    def _check_labels(self, split: str, clips: list[Clip]) -> None:
        known = set(self.data_info.label_names)
        for clip in clips:
            if clip.label not in known:
                raise DataError(clip.path, f"label {clip.label!r} of the {split} split is not a training label {sorted(known)}")

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise ConfigError(f"no {split} data: give data.{split}")
        dataset = self.datasets[split]
        pad_to = self.max_samples if self.pad_to_max else None
        common = dict(collate_fn=partial(collate_clips, pad_to=pad_to), num_workers=self.num_workers,
                      persistent_workers=self.num_workers > 0)
        if self.bucket and not self.pad_to_max and split != "predict":
            lengths = [min(c.length, self.max_samples or c.length) for c in dataset.clips]
            generator = torch.Generator()
            sampler = BucketBatchSampler(lengths, self.batch_size, shuffle=split == "train", generator=generator)
            return self.split_loader(split, dataset, batch_sampler=sampler, generator=generator, **common)
        return self.split_loader(split, dataset, batch_size=self.batch_size, shuffle=split == "train", **common)
