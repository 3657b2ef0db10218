"""Per-base class tracks from bigWig, beside the zarr tracks of :class:`seqpipe.data.genome_io.Track`.

A bigWig holds one value per base where it has data: the class index (0, 1, ... as in ``label_names``, which
a bigWig cannot carry, so ``GenomeData(track_label_names=...)`` names them). Bases without data are read as
-1 and never scored. :func:`open_track` picks the reader from the file's first bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seqpipe.data.genome_io import Track, padded_read
from seqpipe.errors import ConfigError, DataError

BIGWIG_MAGIC = (0x888FFC26).to_bytes(4, "little")
NO_DATA = -1


def is_bigwig(path: str | Path) -> bool:
    """Whether ``path`` is a file that begins as a bigWig does (its magic number), whatever its name."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(4) == BIGWIG_MAGIC


def open_track(path: str | Path, chrom_sizes: dict[str, int], label_names: list[str] | None = None):
    """A :class:`BigWigTrack` for a bigWig file (``label_names`` required), else a zarr :class:`Track`
    (whose ``label_names`` attribute names the classes; ``label_names`` must then be None)."""
    if is_bigwig(path):
        if not label_names:
            raise ConfigError(f"data.track {path} is a bigWig, which cannot name its classes: set data.track_label_names")
        return BigWigTrack(path, chrom_sizes, label_names)
    if label_names:
        raise ConfigError(f"data.track_label_names is for bigWig tracks; the zarr track {path} names its own classes")
    return Track(path, chrom_sizes)


class BigWigTrack:
    """Per-base class indices from a bigWig (pyBigWig), with the :class:`~seqpipe.data.genome_io.Track`
    interface: ``label_names`` and ``read(chrom, start, end)``.

    A chromosome the bigWig lacks has no data (every base -1); one it has must have the FASTA's length.
    The file opens lazily in each process (DataLoader workers never share a handle); :meth:`close` closes it.
    """

    def __init__(self, path: str | Path, chrom_sizes: dict[str, int], label_names: list[str]):
        self.path, self.label_names = Path(path), list(label_names)
        self._handle, self._pid = None, None
        chroms = self._open().chroms()
        problem = next((f"chromosome {chrom!r} has length {size}, the FASTA record has length {chrom_sizes[chrom]}"
                        for chrom, size in chroms.items() if chrom in chrom_sizes and size != chrom_sizes[chrom]), None)
        if problem is None and not set(chroms) & set(chrom_sizes):
            problem = f"no chromosome of the FASTA ({list(chrom_sizes)[:5]}...) is in the bigWig ({list(chroms)[:5]}...)"
        if problem is not None:
            self.close()
            raise DataError(self.path, problem)
        self._chroms = chroms

    def close(self) -> None:
        """Close the bigWig (a later :meth:`read` opens it again)."""
        if self._handle is not None:
            self._handle.close()
            self._handle, self._pid = None, None

    def _open(self):
        import pyBigWig

        if self._handle is None or self._pid != os.getpid():
            try:
                self._handle = pyBigWig.open(str(self.path))
            except RuntimeError as error:
                raise DataError(self.path, f"cannot open as a bigWig: {error}") from None
            self._pid = os.getpid()
        return self._handle

    def read(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Class indices (end - start,) int64; NO_DATA off the chromosome and where the bigWig has no data."""
        return padded_read(self._chroms.get(chrom, 0), start, end, lambda lo, hi: self._class_indices(chrom, lo, hi),
                           fill=NO_DATA, dtype=np.int64)

    def _class_indices(self, chrom: str, lo: int, hi: int) -> np.ndarray:
        """The class indices of [lo, hi) inside ``chrom`` (NO_DATA where the bigWig has none); a value that is not
        one is an error naming its position."""
        raw = self._open().values(chrom, lo, hi, numpy=True)
        has_data = ~np.isnan(raw)
        bad = np.flatnonzero(has_data & ((raw != np.round(raw)) | (raw < 0) | (raw >= len(self.label_names))))
        if bad.size:
            raise DataError(self.path, f"{chrom}:{lo + bad[0] + 1}: value {raw[bad[0]]} is not a class index 0..{len(self.label_names) - 1}")
        return np.where(has_data, raw, NO_DATA).astype(np.int64)

    def __getstate__(self):
        return {**self.__dict__, "_handle": None, "_pid": None}
