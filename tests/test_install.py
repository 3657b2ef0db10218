"""The installed set loads together: torchaudio's native library with this torch (a torchaudio built for another
torch release fails at import with an undefined symbol, and the audio data module with it)."""

from __future__ import annotations

import math

import pytest
import torch


def test_torchaudio_matches_torch_and_its_resampler_runs():
    try:
        import torchaudio
        import torchaudio.functional
    except (ImportError, OSError) as error:
        pytest.fail(f"torchaudio does not load with torch {torch.__version__}: {error}; install the versions pinned "
                    f"in constraints.txt (make install)")
    release = lambda version: version.split("+")[0]  # noqa: E731 - '2.11.0+cpu' and '2.11.0' are one release
    assert release(torchaudio.__version__) == release(torch.__version__), (
        f"torchaudio {torchaudio.__version__} is built for another torch than {torch.__version__}; "
        f"install the versions pinned in constraints.txt")
    # a 440 Hz tone at 8 kHz, resampled to 16 kHz, is the same tone sampled at 16 kHz (away from the edges)
    t8, t16 = torch.arange(800) / 8000, torch.arange(1600) / 16000
    resampled = torchaudio.functional.resample(torch.sin(2 * math.pi * 440 * t8)[None], 8000, 16000)[0]
    torch.testing.assert_close(resampled[200:-200], torch.sin(2 * math.pi * 440 * t16)[200:-200], atol=1e-2, rtol=0)
