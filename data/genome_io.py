"""Random access to a reference genome and to per-base tracks aligned to it.

:class:`Genome` reads windows of a FASTA through pyfaidx without building chromosome strings; its file
handle opens lazily in each process, so DataLoader workers never share one. A plain-gzip FASTA, which
pyfaidx cannot seek, is decompressed once into a cache directory (``$SEQPIPE_CACHE``, else
``~/.cache/seqpipe/genomes``) under a name keyed by the source's path, size and modification time; bgzip
FASTAs are read in place. Nothing is written beside the user's FASTA: its pyfaidx index is the ``.fai`` (and
for bgzip the ``.gzi``) already there when pyfaidx takes it as it is, else one made in the cache (``index/``,
keyed the same way). :class:`Track` reads a zarr group holding one 1-D array per chromosome.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from seqpipe.data.readers import compression
from seqpipe.data.tokenizers import DNATokenizer
from seqpipe.dna_alphabet import N_ID
from seqpipe.errors import DataError


def cache_dir(override: str | Path | None = None) -> Path:
    """Where decompressed genomes and their indexes go: ``override``, ``$SEQPIPE_CACHE``, or ``~/.cache``."""
    if override is not None:
        return Path(override)
    if os.environ.get("SEQPIPE_CACHE"):
        return Path(os.environ["SEQPIPE_CACHE"])
    return Path.home() / ".cache" / "seqpipe" / "genomes"


def padded_read(size: int, start: int, end: int, read: Callable[[int, int], np.ndarray], fill: int = N_ID,
                dtype: type = np.uint8) -> np.ndarray:
    """Values (end - start,) of [start, end) on a sequence of ``size`` positions, ``fill`` where the range leaves
    [0, size) (default: token ids, N there); ``read(lo, hi)`` gives the values of the part [lo, hi) inside it."""
    values = np.full(end - start, fill, dtype=dtype)
    lo, hi = max(start, 0), min(end, size)
    if lo < hi:
        values[lo - start:hi - start] = read(lo, hi)
    return values


def cache_key(path: Path) -> str:
    """The name of what the cache keeps for the file at ``path``: its path, size and modification time, so that an
    edited file is never matched with what was made of it before."""
    stat = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def seekable_fasta(path: str | Path, cache: str | Path | None = None) -> Path:
    """A FASTA pyfaidx can seek: ``path`` itself (plain or bgzip) or its one-time decompressed copy."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such FASTA file")
    if compression(path) != "gzip":
        return path
    name = path.name[:-3] if path.name.endswith(".gz") else path.name + ".fa"
    target = cache_dir(cache) / cache_key(path) / name
    if not target.exists():
        rank_zero_info(f"{path}: plain gzip, which cannot be read in place; decompressing it once to {target} (bgzip "
                       "reads in place; --data.cache_dir or $SEQPIPE_CACHE choose the folder)")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            with gzip.open(path, "rb") as source, open(partial, "wb") as sink:
                shutil.copyfileobj(source, sink, length=1 << 22)
        except (OSError, EOFError, zlib.error) as error:
            partial.unlink(missing_ok=True)
            if not any(target.parent.iterdir()):
                target.parent.rmdir()
            raise DataError(path, f"cannot decompress this gzip FASTA ({error}); bgzip it or decompress it yourself") from None
        os.replace(partial, target)  # atomic: concurrent processes never see a half-written genome
    return target


class Genome:
    """A reference FASTA read window by window.

    Args:
        path: FASTA, plain, bgzip or plain gzip (decompressed once into the cache, see the module docstring).
        cache: cache directory override.

    ``chrom_sizes``: chromosome name (first word of the header) -> length, in file order.
    ``read(chrom, start, end)``: token ids (end - start,) uint8; positions off the chromosome are N.
    ``check_letters()``: reject a record without bases, or a character that is no nucleotide code anywhere in the genome.
    ``close()``: close the file (``contextlib.closing(Genome(...))``).
    """

    def __init__(self, path: str | Path, cache: str | Path | None = None):
        self.source = Path(path)
        self.path = seekable_fasta(path, cache)
        self._cache = cache
        self._fasta = None
        self._pid = None
        self._tokenizer = DNATokenizer()
        fasta = self._handle()
        self.chrom_sizes = {name: len(fasta[name]) for name in fasta.keys()}
        if not self.chrom_sizes:
            self.close()
            raise DataError(self.source, "no FASTA records")

    def _handle(self):
        """The pyfaidx handle of this process; opened again after a fork (DataLoader workers)."""
        if self._fasta is None or self._pid != os.getpid():
            import pyfaidx

            index, blocks = (self.path.with_name(self.path.name + suffix) for suffix in (".fai", ".gzi"))
            if self.path == self.source and not _usable_index(self.path, index, blocks):
                key = cache_key(self.path)  # nothing is written beside the user's FASTA: its index goes to the cache
                index, blocks = (cache_dir(self._cache) / "index" / f"{key}{suffix}" for suffix in (".fai", ".gzi"))
                index.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._fasta = pyfaidx.Fasta(str(self.path), indexname=str(index), gzi_indexname=str(blocks), as_raw=True)
            except (pyfaidx.FastaIndexingError, ValueError, OSError, EOFError, struct.error, RuntimeError) as error:
                # struct.error, RuntimeError: what a truncated or damaged bgzip file gives
                uneven = re.search(r"Inconsistent line found in >(\S+) at line (\d+)", str(error))
                if uneven:
                    raise DataError(self.source, "a sequence line of another length than the record's first: an indexed "
                                                 "genome needs every line of a record but its last as long (re-wrap it, "
                                                 "e.g. seqkit seq -w 60)", record=uneven[1], line=int(uneven[2])) from None
                raise DataError(self.source, f"cannot index this FASTA with pyfaidx (a truncated or damaged file?): "
                                             f"{error}") from None
            self._pid = os.getpid()
        return self._fasta

    def __getstate__(self):
        return {**self.__dict__, "_fasta": None, "_pid": None}

    def close(self) -> None:
        """Close the FASTA file (a later :meth:`read` opens it again)."""
        if self._fasta is not None:
            self._fasta.close()
            self._fasta = None

    def read(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Token ids (end - start,) uint8 of ``chrom``'s bases [start, end), 0-based; positions off it are N."""
        size = self.chrom_sizes.get(chrom)
        if size is None:
            raise DataError(self.source, f"no chromosome {chrom!r} (it has {list(self.chrom_sizes)[:5]}...)")
        return padded_read(size, start, end, lambda lo, hi: self._tokenizer.encode_array(
            self._handle()[chrom][lo:hi], source=self.source, record=chrom, offset=lo))

    def check_letters(self, block: int = 1 << 24) -> None:
        """Read the whole genome once, ``block`` bases at a time, so that a character that is no nucleotide
        code stops the run before training (a :class:`DataError` naming the chromosome and the 1-based
        position in it) rather than when a window happens to cover it; a record without bases is one too, as it
        is for the sequence classification data. About a second per 100 Mbp."""
        for chrom, size in self.chrom_sizes.items():
            if size == 0:
                raise DataError(self.source, "a header without sequence", record=chrom)
            for start in range(0, size, block):
                try:
                    self.read(chrom, start, min(size, start + block))
                except (EOFError, OSError, struct.error, RuntimeError, zlib.error) as error:  # a damaged bgzip block
                    raise DataError(self.source, f"cannot be read (a truncated or damaged file?): {error}",
                                    record=chrom) from None


def _usable_index(fasta: Path, index: Path, blocks: Path) -> bool:
    """Whether pyfaidx reads the ``index`` (and, for bgzip, ``blocks``) beside ``fasta`` without rewriting it:
    present and not older than the FASTA (pyfaidx rebuilds an older one in place)."""
    needed = [index, blocks] if compression(fasta) == "bgzip" else [index]
    current = all(path.exists() and path.stat().st_mtime >= fasta.stat().st_mtime for path in needed)
    return current and (compression(fasta) == "bgzip" or _index_fits(fasta, index))


def _index_fits(fasta: Path, index: Path) -> bool:
    """Whether each record of a plain FASTA's ``.fai`` starts where the index says: its header line (``>name``)
    ends just before the offset, and the file holds the bases after it. An index left from an edited FASTA (a copy
    that kept a newer time) fails, and is then made anew in the cache rather than read shifted."""
    size = fasta.stat().st_size
    try:
        with open(index) as entries, open(fasta, "rb") as handle:
            for entry in entries:
                name, length, offset, line_bases, line_width = entry.split("\t")[:5]
                length, offset, line_bases, line_width = int(length), int(offset), int(line_bases), int(line_width)
                handle.seek(max(0, offset - 65536))
                before = handle.read(offset - max(0, offset - 65536))
                header = before.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
                end = offset + (length // line_bases) * line_width + length % line_bases if line_bases else offset
                if not before.endswith(b"\n") or header.split()[:1] != [b">" + name.encode()] or end > size:
                    return False
    except (OSError, ValueError):
        return False
    return True


class Track:
    """Per-base values aligned to a genome: a zarr group with one 1-D array per chromosome.

    The group's ``label_names`` attribute names the classes of an integer track (index = value), as written
    by ``seqpipe track``. Arrays must have their chromosome's length.
    """

    def __init__(self, path: str | Path, chrom_sizes: dict[str, int]):
        self.path = Path(path)
        group = self._open()
        self.label_names = list(group.attrs.get("label_names", []))
        for chrom, size in chrom_sizes.items():
            if chrom not in group:
                raise DataError(self.path, f"no array for chromosome {chrom!r}: the track must cover every FASTA record")
            if group[chrom].shape != (size,):
                raise DataError(self.path, f"array {chrom!r} has shape {group[chrom].shape}, the FASTA record has length {size}")
        self._group, self._pid = None, None

    def _open(self):
        import zarr

        if not self.path.exists():
            raise DataError(self.path, "no such zarr store")
        try:
            return zarr.open_group(str(self.path), mode="r")
        except Exception as error:  # zarr raises several unrelated types for a store it cannot read
            raise DataError(self.path, f"cannot open as a zarr group: {error}") from None

    def close(self) -> None:
        """Let go of the store (a later :meth:`read` opens it again)."""
        self._group, self._pid = None, None

    def read(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Values (end - start,) int64; positions off the chromosome get 0."""
        if self._group is None or self._pid != os.getpid():
            self._group, self._pid = self._open(), os.getpid()
        array = self._group[chrom]
        return padded_read(array.shape[0], start, end, lambda lo, hi: array[lo:hi], fill=0, dtype=np.int64)

    def __getstate__(self):
        return {**self.__dict__, "_group": None, "_pid": None}
