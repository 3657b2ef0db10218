"""Fine-tuning from a pre-trained checkpoint: backbone weights loaded by name, frozen or trained slower.

A pre-training run (``configs/dna_pretrain.yaml``) and a classification run share the backbone: the same
class and sizes give the same parameter names under ``backbone.``, embedding included, while each task keeps
its own head. Only the backbone is taken from the checkpoint; the head is always new.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from seqpipe.checkpoints import read_checkpoint
from seqpipe.errors import CheckpointError, ConfigError

PREFIX = "backbone."


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Copy the ``backbone.*`` tensors of the Lightning checkpoint at ``path`` into ``backbone`` by name.

    Returns (loaded names, names the checkpoint did not have, which keep their fresh initialisation).
    A tensor whose shape differs is a :class:`ConfigError` naming the parameter and both shapes; a missing or
    unreadable checkpoint (read with ``weights_only``, see :func:`seqpipe.checkpoints.read_checkpoint`), or one
    with no backbone tensor at all, is a :class:`CheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--model.pretrained {path}: no such checkpoint file")
    saved = read_checkpoint(path)["state_dict"]
    saved = {name[len(PREFIX):]: tensor for name, tensor in saved.items() if name.startswith(PREFIX)}
    if not saved:
        raise CheckpointError(f"--model.pretrained {path}: the checkpoint holds no backbone weights (no 'backbone.*' tensors)")
    own = backbone.state_dict()
    for name, tensor in own.items():
        if name in saved and saved[name].shape != tensor.shape:
            raise ConfigError(
                f"--model.pretrained {path}: parameter backbone.{name} has shape {tuple(saved[name].shape)} in the "
                f"checkpoint but {tuple(tensor.shape)} in this model: use the backbone settings of the pre-training run"
            )
    loaded = [name for name in own if name in saved]
    backbone.load_state_dict({name: saved[name] for name in loaded}, strict=False)
    return loaded, [name for name in own if name not in saved]


def report_loaded(path: str | Path, loaded: list[str], new: list[str]) -> None:
    """One line for what came from the checkpoint, one for what is new (the head is always new)."""
    rank_zero_info(f"pretrained {path}: loaded {len(loaded)} backbone tensors ({_summary(loaded)})")
    rank_zero_info(f"pretrained {path}: new (not in the checkpoint): {_summary(new) if new else 'no backbone tensor'}; the head")


def _summary(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f", ... {len(names) - shown} more" if len(names) > shown else "")

