"""The interface every task head implements. Built-in heads live in ``seqpipe.tasks``; a user's head
may live in any importable module and is named in the YAML by ``class_path``."""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
import torch
from torch import nn
from torchmetrics import MetricCollection

from seqpipe.contracts import DataInfo, InputSpec
from seqpipe.errors import ConfigError


class TaskHead(nn.Module):
    """Turns backbone features into task outputs, and owns the loss, metrics and prediction format.

    Layers that depend on the data (number of classes, horizon, ...) are created in :meth:`bind`, from the
    :class:`~seqpipe.contracts.DataInfo` the data module fitted on the training data; the model saves it in the
    checkpoint, so a restored model is bound again before its weights load.

    One step of the model: ``x, context = head.backbone_input(batch)``, ``features = backbone(x)``, then
    ``head(features, lengths, batch)`` — or ``head(features, lengths, batch, context=context)`` when the head's
    :meth:`backbone_input` returned a context: what its output step needs of its input step travels there.
    """

    #: the head reads nothing of the features but their mean over the valid positions: the model may then stream a
    #: long sequence at evaluation (``chunk_size``) into that mean and pass it as features of length 1
    mean_pooled: bool = False

    #: the head reads nothing of the features but their mean and maximum over the valid positions: the model may
    #: stream a long sequence at evaluation into both and call :meth:`forward_pooled` instead of ``forward``
    mean_max_pooled: bool = False

    #: what a model with this head is, in the user's words, for messages about its checkpoints
    task: str = "a model"

    #: the validation metric that selects the best checkpoint, and whether larger is better
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"

    def bind(self, d_model: int, data_info: DataInfo) -> None:
        """Create the data-dependent layers. ``d_model``: channels of the backbone features."""

    def backbone_input_spec(self, data_info: DataInfo) -> InputSpec:
        """What :meth:`backbone_input` feeds the backbone, which builds its input layer for it: the data's input
        (``data_info.input``), unless the head reshapes it."""
        return data_info.input

    def backbone_input(self, batch: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """``(x, context)``: the tensor fed to the backbone, and what :meth:`forward` needs of this step (None:
        nothing; else it is passed to :meth:`forward` as ``context``). Heads that reshape or normalise their
        input override this."""
        return batch["x"], None

    def evaluation_views(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The batches scored outside training (validation, test, predict), whose outputs
        :meth:`merge_views` combines — test-time augmentation such as both DNA strands. Default: ``batch`` alone."""
        return [batch]

    def training_views(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The batches a training step reads, whose outputs :meth:`merge_views` combines. Default: ``batch`` alone."""
        return [batch]

    def merge_views(self, outputs: list[Any]) -> Any:
        """The outputs of :meth:`evaluation_views` (or :meth:`training_views`), in order -> the outputs of the batch."""
        return outputs[0]

    def unimplemented(self) -> list[str]:
        """The methods every head defines (``forward_pooled`` too for a ``mean_max_pooled`` head) that this one
        leaves to the base class, which only raises."""
        needed = ["forward", "loss", "metrics", "update_metrics", *(["forward_pooled"] if self.mean_max_pooled else [])]
        return [name for name in needed if getattr(type(self), name) is getattr(TaskHead, name)]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None, batch: dict[str, Any]) -> Any:
        """features (B, L, d_model), lengths (B,) or None -> task outputs (head-specific)."""
        raise NotImplementedError

    def forward_pooled(self, mean: torch.Tensor, peak: torch.Tensor, batch: dict[str, Any]) -> Any:
        """``mean_max_pooled`` heads: the features' mean and maximum over the valid positions (B, D) each -> outputs.
        Called with ``context=`` as :meth:`forward` is, when :meth:`backbone_input` returned one."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: dict[str, Any]) -> torch.Tensor:
        """The training objective: this head's ``forward`` outputs and the batch (its targets, masks) -> a scalar
        tensor, averaged over the batch's targets."""
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        """Fresh epoch-level metrics; the model clones them once per split with a ``val/``, ``test/`` prefix."""
        raise NotImplementedError

    def update_metrics(self, metrics: MetricCollection, outputs: Any, batch: dict[str, Any]) -> None:
        """Add one validation/test batch to ``metrics`` (a clone of :meth:`metrics`): the outputs of ``forward``
        against the batch's targets."""
        raise NotImplementedError

    def predictions(self, outputs: Any, batch: dict[str, Any], data_info: DataInfo) -> pd.DataFrame:
        """One row per prediction, with an index column (record id, window, timestamp) first.

        This default writes one row per sequence: ``id`` (the batch's ``ids``; without them empty, and the
        :class:`~seqpipe.prediction.PredictionWriter` numbers the rows across the whole run), then
        the outputs (B, ...) flattened to columns ``output_<class>`` when there is one per class, else
        ``output_0``, ``output_1``, .... Heads with a richer format (labels, probabilities) override it.
        """
        if not isinstance(outputs, torch.Tensor):
            raise ConfigError(
                f"{type(self).__name__}.forward returns {type(outputs).__name__}, not a tensor: define "
                f"{type(self).__name__}.predictions(outputs, batch, data_info) to say what predict writes"
            )
        values = outputs.detach().float().cpu().reshape(len(outputs), -1).numpy()
        names = list(data_info.label_names or [])
        columns = names if len(names) == values.shape[1] else [str(k) for k in range(values.shape[1])]
        frame = pd.DataFrame({"id": batch_ids(batch, len(values))})
        return frame.join(pd.DataFrame(values, columns=[f"output_{c}" for c in columns]))


def batch_ids(batch: dict[str, Any], rows: int) -> list:
    """The record ids of a batch's ``rows`` rows, or None for each when its data module gives none (the prediction
    writer then numbers the rows)."""
    ids = batch.get("ids")
    return list(ids) if ids is not None else [None] * rows
