"""Fine-tuning from a pre-trained checkpoint: backbone weights loaded by name, frozen or trained slower.

A pre-training run (``configs/dna_pretrain.yaml``) and a classification run share the backbone: the same
class and sizes give the same parameter names under ``backbone.``, embedding included, while each task keeps
its own head. Only the backbone is taken from the checkpoint, and only when it is the model's backbone: the
same class, the same tensor names and shapes. The head is always new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from seqpipe.checkpoints import read_checkpoint
from seqpipe.errors import CheckpointError, ConfigError, first_few

PREFIX = "backbone."
#: what every "not this model's backbone" error tells the user to do
SAME_BACKBONE = ("fine-tune with the backbone class, layers and sizes of the run that wrote the checkpoint "
                 "(its model.backbone)")


def load_backbone_weights(backbone: nn.Module, path: str | Path, sample_rate: float | None = None) -> list[str]:
    """Copy the ``backbone.*`` tensors of the Lightning checkpoint at ``path`` into ``backbone``; returns their names.

    The checkpoint's backbone must be this one (:func:`check_same_backbone`), else a :class:`ConfigError`; a
    missing or unreadable checkpoint (read with ``weights_only``, see :func:`seqpipe.checkpoints.read_checkpoint`),
    or one with no backbone tensor at all, is a :class:`CheckpointError`. ``sample_rate``: the data's (audio); a
    checkpoint trained at another rate is said in one warning.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, "--model.pretrained")
    saved = {name[len(PREFIX):]: tensor for name, tensor in checkpoint["state_dict"].items() if name.startswith(PREFIX)}
    if not saved:
        raise CheckpointError(f"--model.pretrained {path}: the checkpoint holds no backbone weights (no 'backbone.*' tensors)")
    hparams = checkpoint.get("hyper_parameters") or {}
    check_same_backbone(path, backbone, saved, hparams)
    trained_rate = (hparams.get("data_info") or {}).get("sample_rate")  # DataInfo.to_dict's key
    if sample_rate and trained_rate and trained_rate != sample_rate:
        rank_zero_warn(f"--model.pretrained {path}: its backbone was trained on audio at {trained_rate:g} Hz, this data "
                       f"is at {sample_rate:g} Hz, so its front end's filters and strides read other frequencies and "
                       f"durations; --data.sample_rate {trained_rate:g} matches it")
    backbone.load_state_dict(saved)
    return list(saved)


def check_same_backbone(path: Path, backbone: nn.Module, saved: dict[str, Tensor], hparams: dict[str, Any]) -> None:
    """Refuse, in one line, a checkpoint whose backbone (its tensors ``saved`` by name, its ``hparams``) is not
    ``backbone``: another class (when the checkpoint names one), a tensor on one side only, or another shape.

    Tensors present on both sides would load into a backbone of another kind or depth (a forecaster's second
    layer into a DNA model's first S4 layer), so nothing is loaded in part. Classes are compared by name: the
    checkpoint's ``class_path`` may reach the class through a package that re-exports it.
    """
    config = hparams.get("backbone")
    saved_class = config.get("class_path") if isinstance(config, dict) else None
    own_class = type(backbone)
    if saved_class and saved_class.rpartition(".")[2] != own_class.__name__:
        raise ConfigError(f"--model.pretrained {path}: the checkpoint's backbone is {saved_class}, this model's is "
                          f"{own_class.__module__}.{own_class.__qualname__}: {SAME_BACKBONE}")
    own = backbone.state_dict()
    only_saved, only_own = [name for name in saved if name not in own], [name for name in own if name not in saved]
    if only_saved or only_own:
        sides = [f"{label}: {first_few(names, 3)}" for label, names in
                 (("only in the checkpoint", only_saved), ("only in this model", only_own)) if names]
        raise ConfigError(f"--model.pretrained {path}: the checkpoint's backbone is not this model's (backbone tensors "
                          f"{'; '.join(sides)}): {SAME_BACKBONE}")
    for name, tensor in own.items():
        if saved[name].shape != tensor.shape:
            raise ConfigError(
                f"--model.pretrained {path}: parameter backbone.{name} has shape {tuple(saved[name].shape)} in the "
                f"checkpoint but {tuple(tensor.shape)} in this model: {SAME_BACKBONE}"
            )


def report_loaded(path: str | Path, loaded: list[str]) -> None:
    """One line for what came from the checkpoint (the whole backbone) and what is new (the head)."""
    rank_zero_info(f"pretrained {path}: loaded {len(loaded)} backbone tensors ({first_few(loaded, 6)}); new: the head")

