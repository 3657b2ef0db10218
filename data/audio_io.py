"""Reading audio clips: the two layouts a split may have, header checks, decoding to mono at one sample rate.

Two layouts are read:

* a directory with one subfolder per class (``DIR/<label>/*.wav|flac|ogg|mp3``; other files are named in one
  warning and left out);
* a CSV manifest with columns ``path,label[,split]``, paths relative to the manifest; ``split`` is
  ``train``, ``val`` (or ``valid``/``validation``) or ``test``.

Clips are decoded with soundfile (torchaudio's own loader needs FFmpeg), mixed to mono and resampled
with :func:`torchaudio.functional.resample`. The data module (:mod:`seqpipe.data.audio`) caches what it decodes.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from seqpipe.data.readers import other_separator
from seqpipe.errors import DataError, first_few

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # read by soundfile (libsndfile >= 1.1)
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class Clip:
    """One labelled clip: ``path``, ``label`` (None when unlabelled), ``length`` in samples at the target rate."""

    __slots__ = ("path", "label", "length")

    def __init__(self, path: Path, label: str | None, length: int):
        self.path, self.label, self.length = path, label, length


# What a clip's header may claim, checked before decoding, so that a broken or hostile header cannot make
# seqpipe allocate gigabytes: the sample rate, the channels, and (data.max_clip_seconds) the duration. A
# frame count larger than the data (libsndfile trims it for WAV, not for a FLAC STREAMINFO) is caught by the
# duration, or else ends at the real end of the data, since clips are decoded block by block.
SAMPLE_RATE_RANGE = (1_000, 384_000)
MAX_CHANNELS = 64
# torchaudio's resampling filter has (new / g) * (orig / g + 2 * width) taps, g = gcd(orig, new): small for
# common rates (44.1 kHz -> 8 kHz: 40k), but 8 GB for a header claiming 2^31 - 1 Hz. Its float64 temporaries
# take about 30 bytes a tap, so this bounds them near 250 MB.
MAX_RESAMPLING_TAPS = 1 << 23
_BLOCK_FRAMES = 1 << 16


def resampling_taps(orig_rate: int, new_rate: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> int:
    """The size of the filter :func:`torchaudio.functional.resample` builds for these rates (its defaults)."""
    if orig_rate == new_rate:
        return 0
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    width = math.ceil(lowpass_filter_width * orig / (min(orig, new) * rolloff))
    return new * (2 * width + orig)


def check_header(path: Path, info, sample_rate: int, max_clip_seconds: float) -> None:
    """Reject a header (``soundfile.info``) whose clip would be empty or unbounded to decode and resample."""
    low, high = SAMPLE_RATE_RANGE
    if not low <= info.samplerate <= high:
        raise DataError(path, f"the header's sample rate {info.samplerate} Hz is outside the {low}-{high} Hz seqpipe reads")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise DataError(path, f"the header claims {info.channels} channels; seqpipe reads 1 to {MAX_CHANNELS}")
    if info.frames <= 0:
        raise DataError(path, "zero-length clip")
    seconds = info.frames / info.samplerate
    if seconds > max_clip_seconds:
        raise DataError(path, f"the clip is {seconds:.0f} s long, above data.max_clip_seconds ({max_clip_seconds:g} s)")
    taps = resampling_taps(info.samplerate, sample_rate)
    if taps > MAX_RESAMPLING_TAPS:
        raise DataError(path, f"resampling {info.samplerate} Hz to {sample_rate} Hz needs a filter of {taps / 1e6:.0f} million "
                        f"taps (at most {MAX_RESAMPLING_TAPS / 1e6:.0f} million); convert the file to a common rate first")


def decode_clip(path: Path, sample_rate: int) -> np.ndarray:
    """Decode ``path`` to a mono float32 waveform (L,) at ``sample_rate``; DataError if it cannot be read or holds a
    NaN or infinite sample.

    Channels are mixed block by block, so memory holds the mono clip, not every channel of it."""
    try:
        with sf.SoundFile(str(path)) as handle:
            source_rate = handle.samplerate
            blocks = [block.mean(axis=1) for block in handle.blocks(_BLOCK_FRAMES, dtype="float32", always_2d=True)]
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise DataError(path, f"cannot decode audio ({error})") from None
    mono = torch.from_numpy(np.concatenate(blocks) if blocks else np.zeros(0, np.float32))
    finite = torch.isfinite(mono)
    if not bool(finite.all()):
        first = int(torch.nonzero(~finite)[0])
        raise DataError(path, f"sample {first} (at {first / source_rate:.3f} s, channels mixed) is "
                              f"{mono[first].item()}: a clip's samples must be finite")
    if source_rate != sample_rate:
        mono = AF.resample(mono, source_rate, sample_rate)
    if mono.numel() == 0:
        raise DataError(path, "zero-length clip")
    return mono.numpy()


def trim_silence(samples: np.ndarray, below_peak_db: float) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``below_peak_db`` under the clip's peak (L,) -> (L',)."""
    loud = np.flatnonzero(np.abs(samples) > np.abs(samples).max() * 10 ** (-below_peak_db / 20))
    return samples[loud[0]:loud[-1] + 1] if len(loud) else samples


def probe_clip(path: Path, label: str | None, sample_rate: int, max_clip_seconds: float) -> Clip:
    """Read the header only: its length at ``sample_rate`` (for bucketing), and reject unreadable, empty or
    unbounded files (see :func:`check_header`)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise DataError(path, f"cannot read audio header ({error}); is it a WAV, FLAC, OGG or MP3 file?") from None
    check_header(path, info, sample_rate, max_clip_seconds)
    return Clip(path, label, math.ceil(info.frames * sample_rate / info.samplerate))


def list_clips(source: str | Path, split: str | None, untagged: str | None = None) -> list[tuple[Path, str | None]]:
    """``(path, label)`` of a class-per-folder directory or a ``path,label[,split]`` manifest.

    ``split``: keep only the manifest rows of that split; None keeps every row. ``untagged``: the split of
    the rows of a manifest without a split column (default: ``split``). Labels may be missing (prediction).
    """
    source = Path(source)
    if not source.exists():
        raise DataError(source, "no such file or directory")
    if source.is_dir():
        return _list_class_folders(source)
    return _read_manifest(source, split, split if untagged is None else untagged)


def _is_clip(path: Path) -> bool:
    """An audio file by its name; hidden files (macOS's ``._clip.wav`` resource forks) are not clips."""
    return path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".")


def _list_class_folders(root: Path) -> list[tuple[Path, str | None]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p for p in root.iterdir() if _is_clip(p))
    if loose and not folders:  # a flat folder of clips: unlabelled, for prediction
        return [(path, None) for path in loose]
    if not folders:
        raise DataError(root, "no clips: expected class subfolders DIR/<label>/<clip>.wav|flac|ogg|mp3 (or, to predict, "
                              "the clips in DIR itself), or give a CSV manifest")
    clips, others = [], []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if _is_clip(p))
        if not files:
            raise DataError(folder, f"empty class folder: no {'/'.join(AUDIO_SUFFIXES)} files")
        clips.extend((path, folder.name) for path in files)
        read = set(files)
        others += [p for p in folder.iterdir() if p.is_file() and p not in read and not p.name.startswith(".")]
    if others:
        shown = first_few([str(p.relative_to(root)) for p in others], 5)
        warnings.warn(f"{root}: {len(others)} file(s) of the class folders are not {'/'.join(AUDIO_SUFFIXES)} clips "
                      f"and are left out: {shown}", stacklevel=2)
    return clips


def _read_manifest(manifest: Path, split: str | None, untagged: str | None) -> list[tuple[Path, str | None]]:
    with open(manifest, newline="", encoding="utf-8-sig") as handle:  # "-sig": a byte-order mark (Excel) is dropped
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns:
            separator = other_separator(columns, ",")
            hint = f": the file seems separated by {separator!r}, and a manifest is comma-separated" if separator else ""
            raise DataError(manifest, f"a manifest needs a 'path' column (and 'label', optional 'split'); found "
                                      f"{columns}{hint}", line=1)
        if split is not None and "label" not in columns:
            raise DataError(manifest, f"the {split} clips need a 'label' column; found {columns}", line=1)
        clips, seen = [], {}
        for line, row in enumerate(reader, start=2):
            if "split" in columns:
                row_split = SPLIT_NAMES.get((row.get("split") or "train").strip().lower())
                if row_split is None:
                    raise DataError(manifest, f"unknown split {row['split']!r}: use train, val or test", line=line)
            else:
                row_split = untagged
            path = manifest.parent / row["path"].strip()
            if not path.is_file():
                raise DataError(manifest, f"audio file {str(path)!r} does not exist", line=line)
            label = (row.get("label") or "").strip() or None
            if path in seen and seen[path][1] != label:
                raise DataError(manifest, f"clip {str(path)!r} is listed twice with different labels: {seen[path][1]!r} "
                                          f"at line {seen[path][0]}, {label!r} here", line=line)
            seen.setdefault(path, (line, label))
            if split is not None and row_split != split:
                continue
            if split is not None and label is None:  # a labelled split (predict reads every row, labels unused)
                raise DataError(manifest, f"clip {str(path)!r} of the {split} split has no label", line=line)
            clips.append((path, label))
    return clips
