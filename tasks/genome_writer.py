"""Whole-genome predictions to disk: per-base scores in zarr and intervals in a bedGraph.

Add it to the trainer's callbacks next to the CLI's CSV writer::

    trainer:
      callbacks:
        - class_path: seqpipe.tasks.genome_writer.GenomePredictionWriter
          init_args: {zarr_path: scores.zarr, bedgraph_path: scores.bedgraph}
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from seqpipe.errors import ConfigError

CHUNK = 1 << 20


class GenomePredictionWriter(BasePredictionWriter):
    """Writes the per-base rows of :class:`seqpipe.tasks.per_base.PerBaseClassification` predictions.

    Args:
        zarr_path: zarr group with one float32 array (chromosome length, classes) per chromosome holding
            ``prob_<class>``; bases never predicted stay NaN. Default ``genome_predictions.zarr`` in the run
            directory. The group attribute ``label_names`` names the columns.
        bedgraph_path: bedGraph of one class's probability, adjacent bases with the same rounded value merged
            into one interval. Default ``genome_predictions.bedgraph`` in the run directory.
        score: the class whose probability goes into the bedGraph (default: the last class — the feature,
            for a two-class track).
        decimals: rounding of the bedGraph values (fewer decimals, fewer and longer intervals).

    Needs a data module with ``chrom_sizes`` (:class:`seqpipe.data.genome.GenomeData`). Windows arrive in
    genome order (the grid sampler), so the bedGraph is sorted.
    """

    def __init__(self, zarr_path: str | None = None, bedgraph_path: str | None = None, score: str | None = None, decimals: int = 3):
        super().__init__(write_interval="batch")
        self.zarr_path, self.bedgraph_path, self.score, self.decimals = zarr_path, bedgraph_path, score, decimals
        self._arrays: dict = {}
        self._bedgraph = None
        self._columns: list[str] = []

    def on_predict_start(self, trainer, pl_module) -> None:
        import zarr

        chrom_sizes = getattr(trainer.datamodule, "chrom_sizes", None)
        if chrom_sizes is None:
            raise ConfigError("GenomePredictionWriter needs a data module with chrom_sizes (seqpipe.data.genome.GenomeData)")
        names = list(pl_module.hparams["data_info"]["label_names"])
        score = self.score or names[-1]
        if score not in names:
            raise ConfigError(f"GenomePredictionWriter: score {score!r} is not a class of the model ({names})")
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        zarr_path = Path(self.zarr_path) if self.zarr_path else run_dir / "genome_predictions.zarr"
        bedgraph_path = Path(self.bedgraph_path) if self.bedgraph_path else run_dir / "genome_predictions.bedgraph"
        if zarr_path.exists():
            shutil.rmtree(zarr_path)
        group = zarr.open_group(str(zarr_path), mode="w")
        group.attrs["label_names"] = names
        self._arrays = {
            chrom: group.create_array(
                chrom, shape=(size, len(names)), chunks=(min(size, CHUNK), len(names)), dtype="float32", fill_value=np.nan
            )
            for chrom, size in chrom_sizes.items()
        }
        self._columns = [f"prob_{name}" for name in names]
        self._score_column = f"prob_{score}"
        bedgraph_path.parent.mkdir(parents=True, exist_ok=True)
        self._bedgraph = open(bedgraph_path, "w")
        self._bedgraph.write(f'track type=bedGraph name="{score} probability"\n')
        self._paths = (zarr_path, bedgraph_path)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        if not isinstance(prediction, pd.DataFrame) or "position" not in prediction:
            raise TypeError("GenomePredictionWriter expects per-base prediction rows (chrom, position, prob_*)")
        for chrom, rows in prediction.groupby("chrom", sort=False):
            positions = rows["position"].to_numpy()
            probs = rows[self._columns].to_numpy(np.float32)
            breaks = np.flatnonzero(np.diff(positions) != 1) + 1
            for run, values in zip(np.split(positions, breaks), np.split(probs, breaks)):
                self._arrays[chrom][run[0]:run[-1] + 1] = values
            self._write_intervals(chrom, positions, rows[self._score_column].to_numpy().round(self.decimals))

    def _write_intervals(self, chrom: str, positions: np.ndarray, values: np.ndarray) -> None:
        """Runs of contiguous positions with equal values -> bedGraph lines."""
        change = np.flatnonzero((np.diff(positions) != 1) | (np.diff(values) != 0)) + 1
        starts, ends = np.r_[0, change], np.r_[change, len(positions)]
        frame = pd.DataFrame({
            "chrom": chrom, "start": positions[starts], "end": positions[ends - 1] + 1, "value": values[starts],
        })
        frame.to_csv(self._bedgraph, sep="\t", header=False, index=False, float_format=f"%.{self.decimals}f")

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._bedgraph is not None:
            self._bedgraph.close()
            self._bedgraph = None
            rank_zero_info(f"genome predictions written to {self._paths[0]} and {self._paths[1]}")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._bedgraph is not None:
            self._bedgraph.close()
            self._bedgraph = None
