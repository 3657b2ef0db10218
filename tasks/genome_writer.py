"""Whole-genome predictions to disk: scores per base or per bin in zarr and bigWig, and intervals in a bedGraph.

Add it to the trainer's callbacks (``configs/genome_per_base.yaml`` does)::

    trainer:
      callbacks:
        - class_path: seqpipe.tasks.genome_writer.GenomePredictionWriter
          init_args: {zarr_path: scores.zarr, bedgraph_path: scores.bedgraph, bin_size: 1, bedgraph_bin_size: 100}

While it is there, ``seqpipe predict`` writes no per-base CSV (one row per base: 4.6 million rows for
E. coli, billions for a human genome); ``--prediction.path small.csv`` asks for one as well.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from seqpipe.contracts import chosen_class
from seqpipe.errors import ConfigError
from seqpipe.outputs import Output, claim_all, run_directory
from seqpipe.tasks.bigwig_writer import write_bigwig

#: bins per zarr chunk of a chromosome's score array
ZARR_CHUNK_BINS = 1 << 20


class BinMeans:
    """Means of per-base values over the bins ``[i * bin_size, (i + 1) * bin_size)`` of one chromosome,
    fed in genome order; a bin holds the mean of the bases it was given.

    :meth:`add` takes increasing positions (n,) and their values (n, k) and returns the bins it completed,
    as (bin indices (m,), means (m, k)); the last bin stays open until a later position lies beyond it or
    :meth:`flush` closes it.
    """

    def __init__(self, bin_size: int, columns: int):
        self.bin_size, self.columns = bin_size, columns
        self._open: tuple[int, np.ndarray, int] | None = None  # bin index, sums (k,), count

    def add(self, positions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(positions) == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.columns))
        bins = positions // self.bin_size
        firsts = np.r_[0, np.flatnonzero(np.diff(bins)) + 1]
        index = bins[firsts]
        sums = np.add.reduceat(values.astype(np.float64), firsts, axis=0)
        counts = np.diff(np.r_[firsts, len(bins)])
        if self._open is not None:
            open_bin, open_sums, open_count = self._open
            if index[0] == open_bin:
                sums[0] += open_sums
                counts[0] += open_count
            else:
                index, sums, counts = np.r_[open_bin, index], np.vstack([open_sums, sums]), np.r_[open_count, counts]
        self._open = (int(index[-1]), sums[-1], int(counts[-1]))
        return index[:-1], sums[:-1] / counts[:-1, None]

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        if self._open is None:
            return np.zeros(0, np.int64), np.zeros((0, self.columns))
        index, sums, count = self._open
        self._open = None
        return np.array([index]), (sums / count)[None]


class BedGraphRuns:
    """Bins of one value -> bedGraph lines, adjacent bins with the same rounded value merged into one line,
    also across batches (the last line stays open until a bin that cannot extend it arrives)."""

    def __init__(self, handle, bin_size: int, decimals: int):
        self.handle, self.bin_size, self.decimals = handle, bin_size, decimals
        self._open: list | None = None  # chrom, chromosome size, first bin, end bin, value

    def add(self, chrom: str, size: int, index: np.ndarray, values: np.ndarray) -> None:
        if len(index) == 0:
            return
        values = values.round(self.decimals)
        change = np.flatnonzero((np.diff(index) != 1) | (np.diff(values) != 0)) + 1
        firsts, lasts = np.r_[0, change], np.r_[change, len(index)] - 1
        runs = [chrom, size, index[firsts], index[lasts] + 1, values[firsts]]
        held = self._open
        if held is not None and held[0] == chrom and held[3] == runs[2][0] and held[4] == runs[4][0]:
            runs[2][0] = held[2]
        else:
            self.close()
        self._write(chrom, size, runs[2][:-1], runs[3][:-1], runs[4][:-1])
        self._open = [chrom, size, runs[2][-1], runs[3][-1], runs[4][-1]]

    def close(self) -> None:
        if self._open is not None:
            chrom, size, first, end, value = self._open
            self._write(chrom, size, np.array([first]), np.array([end]), np.array([value]))
            self._open = None

    def _write(self, chrom: str, size: int, first_bins: np.ndarray, end_bins: np.ndarray, values: np.ndarray) -> None:
        frame = pd.DataFrame({
            "chrom": chrom, "start": first_bins * self.bin_size,
            "end": np.minimum(end_bins * self.bin_size, size), "value": values,
        })
        frame.to_csv(self.handle, sep="\t", header=False, index=False, float_format=f"%.{self.decimals}f")


class GenomePredictionWriter(BasePredictionWriter):
    """Writes the per-base predictions of :class:`seqpipe.tasks.per_base.PerBaseClassification` as they
    are made: scores to zarr, one class's score to a bedGraph and a bigWig.

    Args:
        zarr_path: zarr group with one float32 array (bins, classes) per chromosome holding ``prob_<class>``,
            bins = ceil(chromosome length / ``bin_size``); never-predicted bins stay NaN. Group attributes
            ``label_names`` (the columns) and ``bin_size``. Default ``genome_predictions.zarr`` in the run
            directory.
        bedgraph_path: bedGraph of the ``target`` class, one value per bin of ``bedgraph_bin_size`` bases,
            adjacent bins with the same rounded value merged into one line. Default
            ``genome_predictions.bedgraph`` in the run directory.
        bin_size: bases per zarr value: 1 (every base) or the mean over bins of ``bin_size`` bases (bin i =
            bases ``[i * bin_size, (i + 1) * bin_size)`` of its chromosome; the last bin may be shorter). A
            bin only partly predicted (the edge of ``predict_regions``, or positions the data masked) holds
            the mean of the bases that were.
        bedgraph_bin_size: bases per bedGraph value, the same way (default: ``bin_size``). A human genome
            per base is billions of lines; 100 or so keeps a genome browser track small.
        bigwig_path: bigWig of the ``target`` class at ``bin_size`` resolution, for IGV/UCSC
            (:mod:`seqpipe.tasks.bigwig_writer`; never-predicted bins are left out). Default
            ``genome_predictions.bw`` in the run directory.
        target: the class whose probability goes into the bedGraph and the bigWig (default: the last class —
            the feature, for a two-class track).
        decimals: rounding of the bedGraph values (fewer decimals, fewer and longer intervals).

    Needs :class:`seqpipe.data.genome.GenomeData` and windows in genome order (its grid sampler, one
    process); a window out of order is an error. The three outputs are written under ``<path>.partial`` and
    renamed when prediction has finished; an existing output is replaced only when seqpipe wrote it as
    the same kind of output, anything else at the path stops the run before prediction starts. Predictions are not also kept in memory: the writer turns off
    Lightning's ``return_predictions``, which would hold every base of the genome until the end.
    """

    def __init__(
        self,
        zarr_path: str | None = None,
        bedgraph_path: str | None = None,
        bin_size: int = 1,
        bedgraph_bin_size: int | None = None,
        target: str | None = None,
        decimals: int = 3,
        bigwig_path: str | None = None,
    ):
        super().__init__(write_interval="batch")
        for name, value in (("bin_size", bin_size), ("bedgraph_bin_size", bedgraph_bin_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"GenomePredictionWriter {name} must be a whole number of bases >= 1, got {value!r}")
        self.zarr_path, self.bedgraph_path, self.target, self.decimals = zarr_path, bedgraph_path, target, decimals
        self.bigwig_path = bigwig_path
        self.bin_size, self.bedgraph_bin_size = bin_size, bedgraph_bin_size or bin_size
        self._bedgraph = None
        self._outputs: tuple[Output, ...] = ()

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Check the arguments and claim the three outputs before any prediction is made (see :mod:`seqpipe.outputs`)."""
        if stage != "predict":
            return
        self._chrom_sizes = getattr(trainer.datamodule, "chrom_sizes", None)
        if self._chrom_sizes is None:
            raise ConfigError("GenomePredictionWriter needs a data module with chrom_sizes (seqpipe.data.genome.GenomeData)")
        # the model's own classes once it is bound (restored from a checkpoint), else those it will be bound from
        info = pl_module.data_info or getattr(trainer.datamodule, "data_info", None)
        if info is None:
            raise ConfigError("GenomePredictionWriter: the model has no classes yet: predict with --ckpt_path")
        names = info.classes(type(self).__name__)
        target = chosen_class(names, self.target, "GenomePredictionWriter: target")
        run_dir = run_directory(trainer)
        self._outputs = (
            Output(self.zarr_path or run_dir / "genome_predictions.zarr", "genome predictions zarr", zarr=True),
            Output(self.bedgraph_path or run_dir / "genome_predictions.bedgraph", "genome predictions bedGraph"),
            Output(self.bigwig_path or run_dir / "genome_predictions.bw", "genome predictions bigWig"),
        )
        claim_all(self._outputs)
        self._names, self._target = names, target

    def on_predict_start(self, trainer, pl_module) -> None:
        import zarr

        names, target = self._names, self._target
        trainer.predict_loop.return_predictions = False
        zarr_output, bedgraph_output, _ = self._outputs
        group = zarr.open_group(str(zarr_output.partial), mode="a")
        group.attrs.update({"label_names": names, "bin_size": self.bin_size, "chrom_sizes": dict(self._chrom_sizes)})
        self._arrays = {}
        for chrom, size in self._chrom_sizes.items():
            bins = -(-size // self.bin_size)
            self._arrays[chrom] = group.create_array(
                chrom, shape=(bins, len(names)), chunks=(min(bins, ZARR_CHUNK_BINS), len(names)), dtype="float32", fill_value=np.nan
            )
        self._columns = [f"prob_{name}" for name in names]
        self._target_index = names.index(target)
        self._bedgraph = open(bedgraph_output.partial, "w")
        per_bin = "" if self.bedgraph_bin_size == 1 else f", mean per {self.bedgraph_bin_size} bases"
        self._bedgraph.write(f'track type=bedGraph name="{target} probability{per_bin}"\n')
        self._runs = BedGraphRuns(self._bedgraph, self.bedgraph_bin_size, self.decimals)
        self._chrom, self._last_position, self._done = None, -1, set()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        if not isinstance(prediction, pd.DataFrame) or "position" not in prediction:
            raise TypeError("GenomePredictionWriter expects per-base prediction rows (chrom, position, prob_*)")
        for chrom, rows in prediction.groupby("chrom", sort=False):
            positions = rows["position"].to_numpy()
            if chrom != self._chrom:
                self._finish_chromosome()
                if chrom in self._done:
                    raise ConfigError(f"GenomePredictionWriter: {chrom} came back after other chromosomes; it needs windows in genome order (one process)")
                self._chrom, self._last_position = chrom, -1
                columns = len(self._columns)
                self._zarr_bins, self._bedgraph_bins = BinMeans(self.bin_size, columns), BinMeans(self.bedgraph_bin_size, columns)
            previous = np.r_[self._last_position, positions[:-1]]
            back = np.flatnonzero(positions <= previous)
            if len(back):
                raise ConfigError(
                    f"GenomePredictionWriter: {chrom} positions go back (to {positions[back[0]]} after {previous[back[0]]}); "
                    "it needs non-overlapping windows in genome order (one process)"
                )
            self._last_position = int(positions[-1])
            probs = rows[self._columns].to_numpy(np.float32)
            self._store(*self._zarr_bins.add(positions, probs))
            self._write_runs(*self._bedgraph_bins.add(positions, probs))

    def _write_runs(self, index: np.ndarray, means: np.ndarray) -> None:
        self._runs.add(self._chrom, self._chrom_sizes[self._chrom], index, means[:, self._target_index])

    def _store(self, index: np.ndarray, means: np.ndarray) -> None:
        """Write bins to the zarr array of the current chromosome, one slice per run of consecutive bins."""
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        for run, values in zip(np.split(index, breaks), np.split(means, breaks)):
            if len(run):
                self._arrays[self._chrom][run[0]:run[-1] + 1] = values.astype(np.float32)

    def _finish_chromosome(self) -> None:
        if self._chrom is None:
            return
        self._store(*self._zarr_bins.flush())
        self._write_runs(*self._bedgraph_bins.flush())
        self._done.add(self._chrom)
        self._chrom = None

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._bedgraph is None:
            return
        self._finish_chromosome()
        self._runs.close()
        self._bedgraph.close()
        self._bedgraph = None
        zarr_output, bedgraph_output, bigwig_output = self._outputs
        write_bigwig(zarr_output.partial, bigwig_output.partial, self._target)
        for output in self._outputs:
            output.commit()
        rank_zero_info(f"genome predictions written to {zarr_output.path}, {bedgraph_output.path} and {bigwig_output.path}")
        self._outputs = ()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A failed run leaves no half-written output."""
        if self._bedgraph is not None:
            self._bedgraph.close()
            self._bedgraph = None
        for output in self._outputs:
            output.discard()
        self._outputs = ()
