"""Seeded generators of small synthetic data sets, for tests and the demo. Nothing is downloaded.

    seqpipe synthetic dna-motifs --out DIR --seed 0
    seqpipe synthetic audio-clips --out DIR --kind formants --n_per_class 300

Each data set is one subcommand and one plain function that tests call with tiny sizes.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqpipe.dna_alphabet import BASES, reverse_complement
from seqpipe.errors import ConfigError
from seqpipe.outputs import Output, writing
from seqpipe.tool_io import positive_int, run_tool, tool_parser

if TYPE_CHECKING:
    import pandas as pd

NUCLEOTIDES = np.array(list(BASES))

# Two motifs (the bacterial -10 box with its extension, and the NF-kB site). Every sequence carries one
# copy of each motif or of a shuffle of it, so all classes share the same base composition and only the
# order of the letters separates them.
PROMOTER_MOTIF = "TGTATAATG"
ENHANCER_MOTIF = "GGGAATTTCC"
DNA_MOTIF_CLASSES = {  # class -> which of (PROMOTER_MOTIF, ENHANCER_MOTIF) appear intact
    "background": (False, False),
    "enhancer_like": (False, True),
    "promoter_like": (True, False),
}


def write_fasta(path: str | Path, records: Iterable[tuple[str, str]], width: int = 60) -> Path:
    """Write ``(header, sequence)`` pairs as FASTA, sequences wrapped at ``width`` letters."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for header, sequence in records:
            handle.write(f">{header}\n")
            handle.writelines(sequence[i : i + width] + "\n" for i in range(0, len(sequence), width))
    return path


def random_dna(rng: np.random.Generator, length: int) -> str:
    """Uniform random A/C/G/T of ``length`` letters."""
    return "".join(rng.choice(NUCLEOTIDES, length))


def shuffled(rng: np.random.Generator, motif: str) -> str:
    """A permutation of ``motif``'s letters that differs from it (same composition, no motif)."""
    while True:
        candidate = "".join(rng.permutation(list(motif)))
        if candidate != motif:
            return candidate


def motif_sequence(rng: np.random.Generator, label: str, length: int) -> str:
    """Random background with the class's two segments (intact or shuffled motifs) at random,
    non-overlapping positions. Drawn again if the background happens to hold a motif the class must
    not have, on either strand (so no label is wrong)."""
    wanted = DNA_MOTIF_CLASSES[label]
    motifs = (PROMOTER_MOTIF, ENHANCER_MOTIF)
    if length < sum(map(len, motifs)):
        raise ConfigError(f"--length {length} is too short for the motifs ({sum(map(len, motifs))} bases)")
    while True:
        segments = [motif if intact else shuffled(rng, motif) for motif, intact in zip(motifs, wanted)]
        rng.shuffle(segments)
        free = length - sum(map(len, segments))
        gaps = np.diff(np.sort(rng.integers(0, free + 1, len(segments))), prepend=0)  # background before each
        parts = []
        for gap, segment in zip(gaps, segments):
            parts += [random_dna(rng, int(gap)), segment]
        parts.append(random_dna(rng, length - sum(map(len, parts))))
        sequence = "".join(parts)
        present = tuple(motif in sequence or reverse_complement(motif) in sequence for motif in motifs)
        if present == wanted:
            return sequence


def make_dna_motif_dataset(
    out_dir: str | Path, seed: int = 0, n_train: int = 1500, n_test: int = 300, n_unlabelled: int = 30, length: int = 200
) -> Path:
    """Write a planted-motif DNA classification set with three balanced classes:

    ``out_dir/train/<class>.fasta`` and ``out_dir/test/<class>.fasta`` (``n_train`` and ``n_test``
    sequences in all), and ``out_dir/unlabelled.fasta`` whose headers hold the true class after the id
    (``>query_0003 true_class=promoter_like``) so predictions can be checked by eye.

    ``promoter_like`` carries an intact promoter motif, ``enhancer_like`` an intact enhancer motif, and
    ``background`` only shuffles of both. Deterministic for a given ``seed``.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    classes = sorted(DNA_MOTIF_CLASSES)
    for split, total in (("train", n_train), ("test", n_test)):
        for k, label in enumerate(classes):
            count = total // len(classes) + (k < total % len(classes))
            records = ((f"{label}_{split}_{i:04d}", motif_sequence(rng, label, length)) for i in range(count))
            write_fasta(out_dir / split / f"{label}.fasta", records)
    queries = ((i, classes[rng.integers(len(classes))]) for i in range(n_unlabelled))
    write_fasta(
        out_dir / "unlabelled.fasta",
        ((f"query_{i:04d} true_class={label}", motif_sequence(rng, label, length)) for i, label in queries),
    )
    return out_dir


def sine_series(seed: int = 0, rows: int = 2000, n_columns: int = 3, freq: str = "h", start: str = "2021-01-01") -> pd.DataFrame:
    """A seeded multivariate series: per column a daily and a weekly sinusoid of random amplitude and
    phase, a linear trend and Gaussian noise; a ``date`` column at ``freq``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    step = np.arange(rows)[:, None]
    daily, weekly = 2 * np.pi * step / 24, 2 * np.pi * step / 168
    values = (
        rng.uniform(1, 3, n_columns) * np.sin(daily + rng.uniform(0, 2 * np.pi, n_columns))
        + rng.uniform(0.5, 1.5, n_columns) * np.sin(weekly + rng.uniform(0, 2 * np.pi, n_columns))
        + rng.uniform(-2, 2, n_columns) * step / rows
        + rng.uniform(-5, 5, n_columns)
        + 0.2 * rng.standard_normal((rows, n_columns))
    )
    frame = pd.DataFrame(values, columns=[f"v{k}" for k in range(n_columns)])
    frame.insert(0, "date", pd.date_range(start, periods=rows, freq=freq))
    return frame


def make_sine_series(out_dir: str | Path, seed: int = 0, rows: int = 2000, n_columns: int = 3) -> Path:
    """Write :func:`sine_series` as ``out_dir/series.csv`` and as a zarr group of 1-D arrays
    (``out_dir/series.zarr``: ``date`` as datetime64 and one array per column)."""
    import zarr

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = sine_series(seed, rows, n_columns)
    frame.to_csv(out_dir / "series.csv", index=False)
    group = zarr.open_group(str(out_dir / "series.zarr"), mode="w")
    group.attrs["columns"] = list(frame.columns[1:])
    for name in frame.columns:
        values = frame[name].to_numpy()
        group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=(min(rows, 512),))[:] = values
    return out_dir


# Two kinds of labelled clips. "signals": tones, chirps, noise bursts and AM/FM tones, at mixed sample rates,
# channel counts and formats — exercises the reader. "formants": ten word-like classes of voiced segments
# (harmonic stacks shaped by moving formants, some with a fricative onset or coda), varied by speaker
# (pitch, vocal-tract scale), speed, onset, gain and noise — a stand-in for a spoken-digit set, 8 kHz WAV.
SIGNAL_CLASSES = ("am_tone", "chirp_down", "chirp_up", "fm_tone", "noise_burst", "tone")
VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240), "e": (530, 1840, 2480),
          "o": (570, 840, 2410), "ae": (660, 1720, 2410)}
FORMANT_WORDS = {  # word -> (fricative onset, vowel path, fricative coda); pairs share vowels in opposite order
    "w0": ("", "a i", ""), "w1": ("", "i a", ""), "w2": ("s", "u e", ""), "w3": ("s", "e u", ""),
    "w4": ("", "o ae", "s"), "w5": ("", "ae o", "s"), "w6": ("f", "i u", ""), "w7": ("f", "u i", ""),
    "w8": ("", "e o a", ""), "w9": ("", "a o e", "f"),
}


def signal_clip(rng: np.random.Generator, label: str, seconds: float, sample_rate: int) -> np.ndarray:
    """One clip (L,) of a ``SIGNAL_CLASSES`` class, peak about 0.5, with a little noise."""
    t = np.arange(max(1, int(seconds * sample_rate))) / sample_rate
    f0 = rng.uniform(200, 0.2 * sample_rate)
    if label == "tone":
        wave = np.sin(2 * np.pi * f0 * t)
    elif label in ("chirp_up", "chirp_down"):
        low, high = rng.uniform(100, 300), rng.uniform(0.25, 0.4) * sample_rate
        start, end = (low, high) if label == "chirp_up" else (high, low)
        freq = start + (end - start) * t / max(t[-1], 1e-9)
        wave = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
    elif label == "am_tone":
        wave = (1 + 0.9 * np.sin(2 * np.pi * rng.uniform(4, 12) * t)) / 2 * np.sin(2 * np.pi * f0 * t)
    elif label == "fm_tone":
        freq = f0 * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(3, 8) * t))
        wave = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
    else:
        wave = rng.standard_normal(len(t)) * (np.sin(2 * np.pi * rng.uniform(2, 6) * t) > 0.3)
    wave = wave / max(np.abs(wave).max(), 1e-9)
    return (0.5 * wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def formant_clip(rng: np.random.Generator, label: str, sample_rate: int = 8000) -> np.ndarray:
    """One utterance (L,) of a ``FORMANT_WORDS`` word: 0.2-2.3 s, random speaker, onset, gain and noise."""
    onset, path, coda = FORMANT_WORDS[label]
    speech = rng.uniform(0.18, 0.8) * (1.0 if rng.random() < 0.9 else 1.8)
    lead, trail = rng.uniform(0, 0.6) * rng.random(), rng.uniform(0, 0.6) * rng.random()
    n, fric = int(speech * sample_rate), int(rng.uniform(0.04, 0.1) * sample_rate)
    t = np.arange(n) / sample_rate
    # moving formants: piecewise-linear between the vowel targets at jittered times, scaled by the speaker
    targets = np.array([VOWELS[v] for v in path.split()], dtype=float) * rng.uniform(0.85, 1.2)
    knots = np.concatenate([[0], np.sort(rng.uniform(0.25, 0.75, len(targets) - 2)), [1]])
    jitter = 1 + 0.06 * rng.standard_normal(targets.shape)
    formants = np.stack([np.interp(t / t[-1], knots, targets[:, i] * jitter[:, i]) for i in range(3)])  # (3, n)
    f0 = rng.uniform(90, 260) * (1 + rng.uniform(-0.15, 0.15) * t / t[-1]) * (1 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harmonics = np.arange(1, int(0.5 * sample_rate / 90) + 1)[:, None]  # (K, 1)
    freq = harmonics * f0[None, :]
    bandwidth = np.array([80, 120, 180])[:, None, None] * rng.uniform(0.8, 1.3)
    gain = np.array([1.0, 0.6, 0.3])[:, None, None]
    amplitude = (gain / (1 + ((freq[None] - formants[:, None]) / bandwidth) ** 2)).sum(0) * (freq < 0.5 * sample_rate)
    voiced = (amplitude * np.sin(harmonics * phase[None, :]) / np.sqrt(harmonics)).sum(0)
    voiced *= np.hanning(n) ** 0.3
    parts = [voiced / np.abs(voiced).max()]
    for place, kind in ((0, onset), (1, coda)):
        if kind:  # fricative: high-passed noise ("s") or flat noise ("f")
            noise = rng.standard_normal(fric)
            noise = np.diff(noise, prepend=0) if kind == "s" else noise
            parts.insert(place * len(parts), 0.3 * noise / np.abs(noise).max() * np.hanning(fric))
    wave = np.concatenate([np.zeros(int(lead * sample_rate)), *parts, np.zeros(int(trail * sample_rate))])
    wave = wave[: int(2.3 * sample_rate)]
    level = 0.5 * 10 ** (rng.uniform(-12, 0) / 20)  # random gain
    noise_rms = level * np.sqrt(np.mean(parts[0] ** 2)) * 10 ** (-rng.uniform(5, 30) / 20)  # SNR 5-30 dB
    wave = level * wave + noise_rms * rng.standard_normal(len(wave))
    return wave.astype(np.float32)


def make_audio_clip_dataset(
    out_dir: str | Path,
    seed: int = 0,
    n_per_class: int = 40,
    test_fraction: float = 0.2,
    kind: str = "signals",
    seconds: tuple[float, float] = (0.2, 2.3),
    sample_rates: tuple[int, ...] = (8000, 16000, 44100),
    formats: tuple[str, ...] = ("wav", "flac", "ogg"),
    channels: tuple[int, ...] = (1, 2),
) -> Path:
    """Write ``OUT/{train,test}/<class>/<clip>.<format>`` and ``OUT/manifest.csv`` (path,label,split).

    ``kind="signals"``: ``SIGNAL_CLASSES`` at random durations in ``seconds``, sample rates, channel counts
    (stereo channels differ by a small gain) and formats. ``kind="formants"``: ``FORMANT_WORDS`` as mono
    clips at the first of ``sample_rates`` in the first of ``formats`` (their durations are their own).
    """
    import soundfile as sf

    if not 0 < seconds[0] <= seconds[1]:
        raise ConfigError(f"--seconds MIN MAX: need 0 < MIN <= MAX, got {seconds[0]} {seconds[1]}")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    classes = SIGNAL_CLASSES if kind == "signals" else tuple(FORMANT_WORDS)
    rows = []
    for label in classes:
        n_test = round(test_fraction * n_per_class)
        for i in range(n_per_class):
            split = "test" if i < n_test else "train"
            rate, fmt = rng.choice(sample_rates), rng.choice(formats)
            if kind == "signals":
                wave = signal_clip(rng, label, rng.uniform(*seconds), int(rate))
                n_channels = int(rng.choice(channels))
                wave = np.stack([wave * (1 - 0.1 * c) for c in range(n_channels)], axis=1)
            else:
                rate, fmt = sample_rates[0], formats[0]
                wave = formant_clip(rng, label, int(rate))
            path = out_dir / split / label / f"{label}_{i:04d}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave, int(rate))
            rows.append(f"{path.relative_to(out_dir)},{label},{split}")
    (out_dir / "manifest.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return out_dir


def write_data_set(options: argparse.Namespace) -> None:
    """Write the data set ``options.dataset`` into ``options.out``, a seqpipe output folder (written whole or not
    at all; a folder of the user's there is refused)."""
    with writing(Output(options.out, f"synthetic {options.dataset} set", folder=True)) as (partial,):
        options.make(options, partial)
    print(f"wrote {options.out}")


def main(argv: list[str] | None = None) -> int:
    """``seqpipe synthetic``; returns the exit code."""
    parser = tool_parser("seqpipe synthetic", __doc__, checkpoint=False)
    datasets = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    dna = datasets.add_parser("dna-motifs", allow_abbrev=False, help="DNA classification with planted motifs, one FASTA per class")
    dna.add_argument("--out", required=True, type=Path, help="output directory (new, empty, or an earlier one of this command's)")
    dna.add_argument("--seed", type=int, default=0)
    dna.add_argument("--n_train", type=positive_int, default=1500)
    dna.add_argument("--n_test", type=positive_int, default=300)
    dna.add_argument("--length", type=positive_int, default=200)
    dna.set_defaults(make=lambda a, out: make_dna_motif_dataset(out, a.seed, a.n_train, a.n_test, length=a.length))

    series = datasets.add_parser("sine-series", allow_abbrev=False, help="multivariate hourly series (sinusoids, trend, noise) as CSV and zarr")
    series.add_argument("--out", required=True, type=Path, help="output directory (new, empty, or an earlier one of this command's)")
    series.add_argument("--seed", type=int, default=0)
    series.add_argument("--rows", type=positive_int, default=2000)
    series.add_argument("--columns", type=positive_int, default=3)
    series.set_defaults(make=lambda a, out: make_sine_series(out, a.seed, a.rows, a.columns))

    clips = datasets.add_parser("audio-clips", allow_abbrev=False, help="labelled audio clips (signals or word-like formants), class folders")
    clips.add_argument("--out", required=True, type=Path, help="output directory (new, empty, or an earlier one of this command's)")
    clips.add_argument("--seed", type=int, default=0)
    clips.add_argument("--kind", choices=["signals", "formants"], default="signals")
    clips.add_argument("--n_per_class", type=positive_int, default=40)
    clips.add_argument("--seconds", type=float, nargs=2, default=(0.2, 2.3), metavar=("MIN", "MAX"))
    clips.add_argument("--sample_rates", type=positive_int, nargs="+", default=[8000, 16000, 44100])
    clips.add_argument("--formats", nargs="+", default=["wav", "flac", "ogg"], choices=["wav", "flac", "ogg"])
    clips.add_argument("--channels", type=positive_int, nargs="+", default=[1, 2])
    clips.set_defaults(make=lambda a, out: make_audio_clip_dataset(
        out, a.seed, a.n_per_class, kind=a.kind, seconds=tuple(a.seconds), sample_rates=tuple(a.sample_rates),
        formats=tuple(a.formats), channels=tuple(a.channels)))
    return run_tool(write_data_set, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
