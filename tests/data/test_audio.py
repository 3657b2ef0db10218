"""AudioClassificationData: decoding, resampling, mono mix, crop/pad/bucketing, cache, augmentation, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf
import torch

import seqpipe.data.audio as audio
from seqpipe.data.audio import AudioClassificationData, BucketBatchSampler
from seqpipe.data.audio_io import decode_clip, list_clips, trim_silence
from seqpipe.data.base import stratified_holdout
from seqpipe.errors import ConfigError, DataError


def tone(freq: float, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))).astype(np.float32)


def write_class_folders(root, rng, per_class=4, classes=("hum", "beep", "chirp"), rate=8000, fmt="wav"):
    """Class folders of tones at class-specific frequencies and random durations."""
    for k, label in enumerate(classes):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            sf.write(root / label / f"{i}.{fmt}", tone(300 + 400 * k, rng.uniform(0.1, 0.4), rate, rng), rate)
    return root


def data_module(tmp_path, **kwargs) -> AudioClassificationData:
    kwargs.setdefault("augment", False)
    return AudioClassificationData(**kwargs)


@pytest.mark.parametrize("fmt,tolerance", [("wav", 1e-4), ("flac", 1e-4), ("ogg", 0.05)])
def test_decode_returns_the_written_signal(tmp_path, fmt, tolerance):
    rng = np.random.default_rng(0)
    signal = tone(440, 0.5, 8000, rng) + 0.05 * rng.standard_normal(4000).astype(np.float32)
    sf.write(tmp_path / f"clip.{fmt}", signal, 8000)
    decoded = decode_clip(tmp_path / f"clip.{fmt}", 8000)
    assert decoded.dtype == np.float32 and len(decoded) == len(signal)
    # Vorbis is lossy: compare by the error's energy relative to the signal's
    error = np.sqrt(np.mean((decoded - signal) ** 2) / np.mean(signal**2))
    assert error < tolerance


def test_resampling_keeps_the_tone_frequency(tmp_path):
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "tone.flac", tone(1000, 1.0, 44100, rng), 44100)
    decoded = decode_clip(tmp_path / "tone.flac", 8000)
    assert len(decoded) == 8000
    spectrum = np.abs(np.fft.rfft(decoded * np.hanning(len(decoded))))
    assert np.fft.rfftfreq(len(decoded), 1 / 8000)[spectrum.argmax()] == pytest.approx(1000, abs=2)


def test_stereo_is_mixed_to_mono(tmp_path):
    rng = np.random.default_rng(2)
    left, right = rng.standard_normal(800).astype(np.float32) * 0.3, rng.standard_normal(800).astype(np.float32) * 0.3
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], 1), 8000, subtype="FLOAT")
    np.testing.assert_allclose(decode_clip(tmp_path / "stereo.wav", 8000), (left + right) / 2, atol=1e-6)


def test_silence_around_a_clip_is_trimmed():
    rng = np.random.default_rng(11)
    clip = rng.uniform(0.1, 1, 500).astype(np.float32) * rng.choice([-1, 1], 500)
    padded = np.concatenate([np.zeros(300), clip, 1e-5 * rng.standard_normal(700)]).astype(np.float32)
    np.testing.assert_array_equal(trim_silence(padded, 60), clip)
    np.testing.assert_array_equal(trim_silence(np.zeros(5, np.float32), 60), np.zeros(5))


def test_batches_are_padded_with_lengths_and_sorted_labels(tmp_path):
    write_class_folders(tmp_path / "train", np.random.default_rng(3))
    dm = data_module(tmp_path, train=str(tmp_path / "train"), batch_size=4, val_fraction=0.25, normalize=False, trim_db=None)
    dm.setup("fit")
    assert dm.data_info.to_dict() == {"input_dim": 1, "label_names": ["beep", "chirp", "hum"], "sample_rate": 8000}
    assert len(dm.datasets["train"]) == 9 and len(dm.datasets["val"]) == 3  # one per class held out
    assert sorted(c.label for c in dm.datasets["val"].clips) == ["beep", "chirp", "hum"]
    for batch in dm.train_dataloader():
        assert batch["x"].dtype == torch.float32 and batch["x"].shape[2] == 1
        assert batch["x"].shape[1] == batch["lengths"].max()
        for row, (length, path) in enumerate(zip(batch["lengths"], batch["ids"])):
            np.testing.assert_allclose(batch["x"][row, :length, 0].numpy(), decode_clip(path, 8000))
            assert batch["x"][row, length:].abs().sum() == 0
            assert dm.data_info.label_names[batch["y"][row]] in path


def test_crop_to_max_seconds_and_pad_to_max(tmp_path):
    write_class_folders(tmp_path / "train", np.random.default_rng(4))
    dm = data_module(tmp_path, train=str(tmp_path / "train"), max_seconds=0.2, pad_to_max=True, batch_size=5)
    dm.setup("fit")
    for batch in dm.val_dataloader():
        assert batch["x"].shape[1] == 1600 and batch["lengths"].max() <= 1600
    clip = next(i for i, c in enumerate(dm.datasets["val"].clips) if c.length > 1600)
    whole = dm.datasets["val"].waveform(clip)
    start = (len(whole) - 1600) // 2  # evaluation keeps the centre
    torch.testing.assert_close(dm.datasets["val"][clip]["x"], whole[start:start + 1600])


def test_bucketing_groups_similar_lengths_and_covers_every_clip_once():
    lengths = torch.randint(100, 10_000, (300,), generator=torch.Generator().manual_seed(5)).tolist()
    sampler = BucketBatchSampler(lengths, batch_size=10, shuffle=True, pool_batches=30)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(300)) and len(batches) == len(sampler)
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert padding < 0.05 * sum(lengths)  # random batches would pad about half
    assert list(sampler) != batches  # the next epoch is shuffled again


def test_second_epoch_does_not_decode_again(tmp_path, monkeypatch):
    write_class_folders(tmp_path / "train", np.random.default_rng(6))
    calls = []
    real = audio.decode_clip
    monkeypatch.setattr(audio, "decode_clip", lambda path, rate: calls.append(path) or real(path, rate))
    dm = data_module(tmp_path, train=str(tmp_path / "train"), batch_size=4, augment=True)
    dm.setup("fit")
    for _ in range(2):
        for _ in dm.train_dataloader():
            pass
    assert len(calls) == len(dm.datasets["train"]) == len(set(calls))


def test_augmentation_only_on_training_clips(tmp_path):
    write_class_folders(tmp_path / "train", np.random.default_rng(7))
    torch.manual_seed(0)
    dm = AudioClassificationData(train=str(tmp_path / "train"), batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert not torch.equal(train[0]["x"], train[0]["x"])
    torch.testing.assert_close(val[0]["x"], val[0]["x"])
    torch.testing.assert_close(val[0]["x"], val.waveform(0))
    assert val.waveform(0).abs().max().item() == pytest.approx(1.0)  # normalized to peak 1


def test_manifest_with_splits_supplies_val_and_test(tmp_path):
    rng = np.random.default_rng(8)
    write_class_folders(tmp_path / "clips", rng, per_class=3, classes=("a", "b"))
    rows = [f"clips/{label}/{i}.wav,{label},{['train', 'val', 'test'][i]}" for label in "ab" for i in range(3)]
    (tmp_path / "m.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    dm = data_module(tmp_path, train=str(tmp_path / "m.csv"))
    dm.setup("fit")
    assert [len(dm.datasets[s]) for s in ("train", "val")] == [2, 2]
    dm.setup("test")
    assert [c.path.name for c in dm.datasets["test"].clips] == ["2.wav", "2.wav"]


def bad_input_cases(tmp_path):
    rng = np.random.default_rng(9)
    good = write_class_folders(tmp_path / "good", rng, per_class=2, classes=("a", "b"))
    corrupt = write_class_folders(tmp_path / "corrupt", rng, per_class=2, classes=("a", "b"))
    (corrupt / "a" / "broken.wav").write_bytes(rng.bytes(500))
    empty_clip = write_class_folders(tmp_path / "empty_clip", rng, per_class=2, classes=("a", "b"))
    sf.write(empty_clip / "b" / "silent.wav", np.zeros(0, np.float32), 8000)
    empty_folder = write_class_folders(tmp_path / "empty_folder", rng, per_class=2, classes=("a", "b"))
    (empty_folder / "c").mkdir()
    (tmp_path / "missing.csv").write_text("path,label\ngood/a/0.wav,a\ngood/a/nope.wav,a\n")
    (tmp_path / "bad_split.csv").write_text("path,label,split\ngood/a/0.wav,a,train\ngood/b/0.wav,b,holdout\n")
    del good
    return {
        "corrupt": (corrupt, "broken.wav: cannot read audio header"),
        "empty_clip": (empty_clip, "silent.wav: zero-length clip"),
        "empty_folder": (empty_folder, "empty_folder/c: empty class folder"),
        "missing.csv": (tmp_path / "missing.csv", "line 3: audio file .*nope.wav' does not exist"),
        "bad_split.csv": (tmp_path / "bad_split.csv", "line 3: unknown split 'holdout'"),
    }


@pytest.mark.parametrize("case", ["corrupt", "empty_clip", "empty_folder", "missing.csv", "bad_split.csv"])
def test_bad_input_raises_a_data_error_naming_the_file(tmp_path, case):
    source, message = bad_input_cases(tmp_path)[case]
    with pytest.raises(DataError, match=message):
        data_module(tmp_path, train=str(source)).setup("fit")


def test_hidden_files_in_class_folders_are_not_clips(tmp_path):
    """macOS leaves ``._0.wav`` resource forks beside the clips it copies: not audio, and not read."""
    root = write_class_folders(tmp_path / "clips", np.random.default_rng(3))
    (root / "hum" / "._0.wav").write_bytes(b"\x00\x05\x16\x07 not audio")
    dm = data_module(tmp_path, train=str(root))
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 12


@pytest.mark.parametrize("case", ["corrupt", "empty_clip"])
def test_skip_bad_leaves_out_and_counts_bad_clips(tmp_path, case):
    source, _ = bad_input_cases(tmp_path)[case]
    dm = data_module(tmp_path, train=str(source), skip_bad=True)
    with pytest.warns(UserWarning, match=r"data.skip_bad: skipped 1 unreadable or empty clip\(s\): ") as warned:
        dm.setup("fit")
    assert len(dm.skipped) == 1 and str(dm.skipped[0]) in str(warned[0].message)  # named, with what is wrong with it
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 4


def test_prediction_without_a_model_and_pad_without_max_are_config_errors(tmp_path):
    write_class_folders(tmp_path / "clips", np.random.default_rng(10))
    with pytest.raises(ConfigError, match="--ckpt_path"):
        data_module(tmp_path, predict=str(tmp_path / "clips")).setup("predict")
    with pytest.raises(ConfigError, match="max_seconds"):
        AudioClassificationData(pad_to_max=True)
    with pytest.raises(ConfigError, match=r"data.val_fraction must be between 0 and 1 \(exclusive\), got 1.0"):
        AudioClassificationData(val_fraction=1.0)
    with pytest.raises(ConfigError, match="data.batch_size must be a positive integer, got 0"):
        AudioClassificationData(batch_size=0)


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2
    val = stratified_holdout(labels, 0.2, seed=3).tolist()
    train = [i for i in range(len(labels)) if i not in val]
    assert stratified_holdout(labels, 0.2, seed=3).tolist() == val
    assert sorted(labels[i] for i in val) == ["a", "a", "b", "c"] and sorted(train + val) == list(range(17))


def wav_with_header(path, rate: int, channels: int, frames: int) -> None:
    """A 16-bit PCM WAV whose header says ``rate`` and ``channels``, whatever a writer would allow."""
    data = np.zeros(frames * channels, np.int16).tobytes()
    block = 2 * channels
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block & 0xFFFFFFFF, block, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", len(data)) + data)


def flac_claiming(path, frames: int) -> None:
    """A real one-second FLAC whose STREAMINFO claims ``frames`` samples (a 36-bit field)."""
    sf.write(path, tone(440, 1.0, 8000, np.random.default_rng(0)), 8000, format="FLAC")
    data = bytearray(path.read_bytes())
    start = data.find(b"fLaC") + 8 + 10  # marker, block header, then 10 bytes before the rate/channels/total word
    word = int.from_bytes(data[start:start + 8], "big")
    data[start:start + 8] = ((word & ~((1 << 36) - 1)) | frames).to_bytes(8, "big")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case, message", [
    ("rate_2_31", r"rate_2_31.wav: the header's sample rate 2147483647 Hz is outside the 1000-384000 Hz"),
    ("rate_1", r"rate_1.wav: the header's sample rate 1 Hz is outside"),
    ("channels_1000", r"channels_1000.wav: the header claims 1000 channels; seqpipe reads 1 to 64"),
    ("odd_rate", r"odd_rate.wav: resampling 7999 Hz to 8000 Hz needs a filter of 64 million taps"),
    ("lying_flac", r"lying_flac.flac: the clip is 4294967 s long, above data.max_clip_seconds \(600 s\)"),
])
def test_hostile_headers_are_refused_before_decoding(tmp_path, monkeypatch, case, message):
    write_class_folders(tmp_path / "clips", np.random.default_rng(1), per_class=2, classes=("a",))
    (tmp_path / "clips" / "b").mkdir()
    path = tmp_path / "clips" / "b" / (case + (".flac" if case == "lying_flac" else ".wav"))
    if case == "lying_flac":
        flac_claiming(path, 1 << 35)
    else:
        rate, channels = {"rate_2_31": (2**31 - 1, 1), "rate_1": (1, 1), "channels_1000": (1000, 1000), "odd_rate": (7999, 1)}[case]
        wav_with_header(path, 8000 if case == "channels_1000" else rate, channels, 100)
    monkeypatch.setattr(audio, "decode_clip", lambda *args: pytest.fail("decoded a clip whose header is out of bounds"))
    with pytest.raises(DataError, match=message):
        data_module(tmp_path, train=str(tmp_path / "clips")).setup("fit")


def test_one_training_class_or_a_class_skip_bad_empties_is_one_error_naming_it(tmp_path):
    one = write_class_folders(tmp_path / "one", np.random.default_rng(11), classes=("hum",))
    with pytest.raises(DataError, match=r"one: the training clips have one class \('hum'\); a classifier needs two or more"):
        data_module(tmp_path, train=str(one)).setup("fit")
    two = write_class_folders(tmp_path / "two", np.random.default_rng(12), classes=("hum", "beep", "chirp"))
    for clip in (two / "beep").iterdir():
        clip.write_bytes(b"not audio")
    with pytest.raises(DataError, match=r"two: no readable clip is left of class\(es\) \['beep'\]: skip_bad skipped them all"):
        data_module(tmp_path, train=str(two), skip_bad=True).setup("fit")


def test_a_clip_with_a_nan_sample_is_named_when_decoded(tmp_path):
    from seqpipe.data.audio_io import decode_clip

    samples = np.zeros(800, dtype=np.float32)
    samples[123] = np.nan
    sf.write(tmp_path / "nan.wav", samples, 8000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan.wav: sample 123 \(at 0.015 s, channels mixed\) is nan: a clip's samples must be finite"):
        decode_clip(tmp_path / "nan.wav", 8000)


def test_mp3_clips_are_read_and_other_files_of_class_folders_named(tmp_path):
    root = write_class_folders(tmp_path / "clips", np.random.default_rng(13), per_class=1, classes=("hum", "beep"))
    wave = tone(440, 0.5, 8000, np.random.default_rng(14))
    sf.write(root / "hum" / "extra.mp3", wave, 8000, format="MP3")
    (root / "beep" / "notes.txt").write_text("recorded on Tuesday")
    with pytest.warns(UserWarning, match=r"1 file\(s\) of the class folders are not .wav/.flac/.ogg/.mp3 clips and are left out: beep/notes.txt"):
        rows = list_clips(root, None)
    assert (root / "hum" / "extra.mp3", "hum") in rows and len(rows) == 3
    decoded = decode_clip(root / "hum" / "extra.mp3", 8000)
    assert abs(len(decoded) - len(wave)) < 0.01 * len(wave)  # lossy: the length, not the samples


def test_a_manifest_row_without_a_label_is_named_by_its_line(tmp_path):
    root = write_class_folders(tmp_path / "clips", np.random.default_rng(15), per_class=2, classes=("hum", "beep"))
    (tmp_path / "m.csv").write_text("path,label\nclips/hum/0.wav,hum\nclips/hum/1.wav,\nclips/beep/0.wav,beep\n")
    with pytest.raises(DataError, match=r"m.csv, line 3: clip '.*clips/hum/1.wav' of the train split has no label"):
        data_module(tmp_path, train=str(root.parent / "m.csv")).setup("fit")
    (tmp_path / "bom.csv").write_text("\ufeffpath,label\nclips/hum/0.wav,hum\nclips/beep/0.wav,beep\n", encoding="utf-8")
    assert list_clips(tmp_path / "bom.csv", "train") == [(root / "hum" / "0.wav", "hum"), (root / "beep" / "0.wav", "beep")]
    for name, text, message in (
        ("class.csv", "path,class\nclips/hum/0.wav,hum\n", r"line 1: the train clips need a 'label' column; found \['path', 'class'\]"),
        ("twice.csv", "path,label\nclips/hum/0.wav,hum\nclips/beep/0.wav,beep\nclips/hum/0.wav,beep\n",
         r"line 4: clip '.*clips/hum/0.wav' is listed twice with different labels: 'hum' at line 2, 'beep' here"),
        ("tabs.csv", "path\tlabel\nclips/hum/0.wav\thum\n", r"line 1: a manifest needs a 'path' column .*: the file seems separated "
                                                             r"by '\\t', and a manifest is comma-separated"),
    ):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=rf"{name}, {message}"):
            list_clips(tmp_path / name, "train")


def test_a_flat_folder_of_clips_cannot_train(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    sf.write(flat / "a.wav", tone(440, 0.2, 8000, np.random.default_rng(16)), 8000)
    with pytest.raises(DataError, match=r"flat: a flat folder of clips has no labels: the train clips need class subfolders"):
        data_module(tmp_path, train=str(flat)).setup("fit")
