"""Checkpoints: the files ``fit`` keeps, how a command names them, and what is checked before one is used.

``fit`` keeps two files per run, in ``RUN/lightning_logs/version_N/checkpoints/``: ``best.ckpt`` (the best
epoch by the head's validation metric) and ``last.ckpt`` (the end of the latest epoch, or the moment an
interrupted run stopped). ``--ckpt_path best`` / ``last`` name them in the newest run under
``--trainer.default_root_dir`` that has one.

A checkpoint is read with ``weights_only=True`` (tensors and plain data only), and the classes its
hyper-parameters name are imported only from trusted packages or from modules this run's own config names.
"""

from __future__ import annotations

import importlib
import os
import pickle
import random
import re
import sys
import zipfile
from argparse import ArgumentError
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seqpipe.contracts import RewindableLoader
from seqpipe.dna_alphabet import DNA_COMPLEMENT
from seqpipe.errors import CheckpointError, first_line

#: names ``--ckpt_path`` resolves to a file of the newest run
RUN_CHECKPOINTS = ("best", "last")
#: top-level packages whose classes a checkpoint may name without the user naming their module
TRUSTED_PACKAGES = ("seqpipe", "torch", "lightning", "torchmetrics")
#: head arguments an earlier seqpipe saved under another name: old name -> (today's name, old value -> today's)
RENAMED_HEAD_ARGUMENTS = {"strand_average": ("strands", {True: "average", False: "forward"})}
#: backbone arguments an earlier seqpipe took, with the one value it could hold (the DNA complement is fixed)
RETIRED_BACKBONE_ARGUMENTS = {"complement": (None, DNA_COMPLEMENT)}
#: how a zip archive, and so every checkpoint ``torch.save`` writes, begins
ZIP_SIGNATURE = b"PK\x03\x04"


def newest_run_checkpoint(name: str, root: str | Path) -> Path:
    """``<name>.ckpt`` of the newest run under ``root``: in ``LOGGER/version_N/checkpoints`` (``lightning_logs``, or
    the logger's own name) or, for a fit without a logger, ``checkpoints/version_N``; of the largest N, then the
    newest file."""
    versions = []
    for path in [*Path(root).glob(f"*/version_*/checkpoints/{name}.ckpt"), *Path(root).glob(f"checkpoints/version_*/{name}.ckpt")]:
        number = _version_number(path.parent.parent if path.parent.name == "checkpoints" else path.parent)
        if number is not None:
            versions.append((number, path.stat().st_mtime_ns, path))
    if not versions:
        raise CheckpointError(
            f"--ckpt_path {name}: no {name}.ckpt under {root} (in */version_*/checkpoints or checkpoints/version_*; "
            "set --trainer.default_root_dir to the directory fit wrote, or give the file's path)"
        )
    return max(versions)[2]


def unused_run_directory(root: Path) -> Path:
    """``root/version_N`` for the first N above every existing one: where a fit without a logger keeps its
    checkpoints, so that no run writes over an earlier one's."""
    numbers = [number for path in root.glob("version_*") if (number := _version_number(path)) is not None]
    return root / f"version_{max(numbers, default=-1) + 1}"


def _version_number(folder: Path) -> int | None:
    """N of a run folder named ``version_N``, else None."""
    number = re.fullmatch(r"version_(\d+)", folder.name)
    return int(number.group(1)) if number else None


def read_checkpoint(path: str | Path, option: str = "--ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True``; one error line naming the file otherwise (and
    ``option``, the option that gave it, when there is no such file)."""
    if Path(path).is_dir():
        raise CheckpointError(f"{option} {path}: is a directory, not a checkpoint file")
    if not Path(path).is_file():
        raise CheckpointError(f"{option} {path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except EOFError:
        raise CheckpointError(f"{path}: not a readable checkpoint (the file is empty or truncated)") from None
    except (RuntimeError, pickle.UnpicklingError, ValueError, OSError, AttributeError, KeyError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({why_unreadable(path, error)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a seqpipe checkpoint (no state_dict)")
    return checkpoint


def why_unreadable(path: str | Path, error: Exception) -> str:
    """Why ``torch.load`` could not read a file, in the user's words: for a cut or foreign file torch speaks of
    errno 22, miniz or pickle opcodes, and for a file holding code it suggests weights_only=False, which would
    run that code."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(ZIP_SIGNATURE))
    except OSError:  # the file cannot be opened: torch's error says why
        start = None
    if start is not None and ZIP_SIGNATURE.startswith(start) and not zipfile.is_zipfile(path):
        return "the file is truncated or corrupt"  # it begins as a checkpoint does, but the archive's end is missing
    if start is not None and not start.startswith(ZIP_SIGNATURE):
        return "not a zip archive, which is what torch.save writes"
    if str(error).startswith("Weights only load failed"):
        # the unpickler's own line: after "WeightsUnpickler error:", or alone after a blank line (a blocked module)
        unpickler = re.search(r"WeightsUnpickler error:\s*([^\n]+)|\n\n([^\n]+)", str(error))
        detail = f": {(unpickler.group(1) or unpickler.group(2)).strip()}" if unpickler else ""
        return f"it holds something other than tensors and plain data{detail}"
    return first_line(error)


def model_hparams(path: str | Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The model arguments a checkpoint was saved with, as today's classes take them: Lightning's
    ``_instantiator`` dropped; backbone arguments an earlier seqpipe took, where they hold the one value that is
    now built in (:data:`RETIRED_BACKBONE_ARGUMENTS`), dropped; head arguments an earlier seqpipe named otherwise
    (:data:`RENAMED_HEAD_ARGUMENTS`) renamed, each said in one printed line. Old values this version cannot map are
    left for the one-line "arguments do not fit" error."""
    hparams = {key: value for key, value in (checkpoint.get("hyper_parameters") or {}).items() if key != "_instantiator"}
    backbone = hparams.get("backbone")
    backbone_args = backbone.get("init_args") if isinstance(backbone, dict) else None
    if isinstance(backbone_args, dict):
        retired = {key for key, value in backbone_args.items() if value in RETIRED_BACKBONE_ARGUMENTS.get(key, ())}
        hparams["backbone"] = {**backbone, "init_args": {k: v for k, v in backbone_args.items() if k not in retired}}
    head = hparams.get("head")
    init_args = head.get("init_args") if isinstance(head, dict) else None
    if not isinstance(init_args, dict):
        return hparams
    init_args = dict(init_args)
    for old, (new, values) in RENAMED_HEAD_ARGUMENTS.items():
        value = init_args.get(old)
        if new in init_args or not isinstance(value, Hashable) or value not in values:
            continue
        del init_args[old]
        init_args[new] = values[value]
        print(f"{path}: head argument {old}={value} of an earlier seqpipe read as {new}={values[value]!r}")
    return {**hparams, "head": {**head, "init_args": init_args}}


def load_trained_model(path: str | Path, trusted_modules: Iterable[str] = ()):
    """The :class:`~seqpipe.model.SequenceModel` of a ``seqpipe fit`` checkpoint, on the CPU in eval mode, for
    tools that score outside Lightning's loops (``seqpipe variants``, ``seqpipe explain``). The file is read
    once (:func:`read_checkpoint`), the classes its hyper-parameters name are checked
    (:func:`check_checkpoint_classes`; ``trusted_modules``: the user's own, beside :data:`TRUSTED_PACKAGES`),
    the model is built from them as LightningCLI built it, and its weights are loaded."""
    from lightning.pytorch.cli import instantiate_module

    from seqpipe.model import SequenceModel  # imported here: seqpipe.model imports this module

    path = Path(path)
    checkpoint = read_checkpoint(path)
    hparams = model_hparams(path, checkpoint)
    check_checkpoint_classes(path, hparams, set(trusted_modules))
    try:
        model = instantiate_module(SequenceModel, hparams)
        model.load_state_dict(checkpoint["state_dict"])
    except ArgumentError as error:
        raise arguments_do_not_fit(path, error) from None
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: not a seqpipe model checkpoint ({first_line(error)})") from None
    return model.eval()


def arguments_do_not_fit(path: str | Path, error: Exception) -> CheckpointError:
    """The one-line error for a checkpoint whose model arguments this version's classes do not take (as
    jsonargparse words it, e.g. an argument renamed since the checkpoint was saved)."""
    reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    missing = re.search(r"class_path '([^']+)': No module named '([^']+)'", reason)
    if missing:
        class_path, module = missing.groups()
        if not class_path.startswith(f"{module}."):  # the class's module imports a package that is missing
            return CheckpointError(f"{path}: its model uses {class_path}, whose module needs {module!r}, which is not "
                                   "installed here")
        return CheckpointError(f"{path}: its model uses {class_path}, and its module {module!r} cannot be imported "
                               f"here: run from the folder that holds {module.split('.')[0]}, or add that folder to "
                               "PYTHONPATH")
    return CheckpointError(f"{path}: its model arguments do not fit this version of seqpipe ({reason}); "
                           f"fit the model again with this version")


def class_paths(config: Any) -> Iterator[tuple[str, str]]:
    """``(key, class_path)`` for every ``class_path`` in a nested config (dicts, lists, jsonargparse Namespaces)."""
    items = vars(config).items() if hasattr(config, "__dict__") and not isinstance(config, type) else None
    if isinstance(config, dict):
        items = config.items()
    if items is not None:
        for key, value in items:
            if key == "class_path" and isinstance(value, str):
                yield key, value
            else:
                for inner_key, path in class_paths(value):
                    yield f"{key}.{inner_key}", path
    elif isinstance(config, (list, tuple)):
        for value in config:
            yield from class_paths(value)


def check_checkpoint_classes(path: str | Path, hparams: dict[str, Any], user_modules: set[str]) -> None:
    """Refuse a checkpoint whose hyper-parameters name a class outside the trusted packages and the modules
    the user named (importing a module runs its code, so a doctored checkpoint must not choose one)."""
    for key, class_path in class_paths(hparams):
        module = class_path.rpartition(".")[0]
        if module.split(".")[0] in TRUSTED_PACKAGES or module in user_modules:
            continue
        raise CheckpointError(
            f"{path}: its model names {class_path!r} ({key.removesuffix('.class_path')}), from a module this run "
            f"does not name; name it in your config or on the command line to allow it (the DNA tools: "
            f"--trust_module {module})"
        )


def check_same_task(path: str | Path, hparams: dict[str, Any], head_class_path: str | None) -> None:
    """Refuse a checkpoint trained with another head than the one this run's config names."""
    trained = (hparams.get("head") or {}).get("class_path") if isinstance(hparams.get("head"), dict) else None
    if head_class_path and trained and trained != head_class_path:
        raise CheckpointError(
            f"{path}: a checkpoint of {describe_head(trained)}, but this config is for {describe_head(head_class_path)}: "
            f"give a checkpoint of this task, or the config it was trained with"
        )


def describe_head(class_path: str) -> str:
    """A head class as messages name it, its :attr:`~seqpipe.heads.TaskHead.task` and path: "a forecasting model
    (seqpipe.tasks.forecasting.Forecasting)"; the path alone for a class that cannot be imported or says nothing."""
    module, _, name = class_path.rpartition(".")
    try:
        return f"{getattr(importlib.import_module(module), name).task} ({class_path})"
    except (ImportError, AttributeError, ValueError):  # ValueError: a path without a module
        return class_path


class AtomicCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose file is written whole or not at all: into ``<file>.partial`` beside it, then renamed.
    Lightning's own writer goes through a temporary file elsewhere (a copy, not a rename, across file systems), and
    a full disk left a truncated ``last.ckpt`` over the good one; a folder made read-only mid-run failed silently.
    A write that fails stops the run with one line naming the file and why."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        partial = Path(f"{filepath}.partial")
        try:
            super()._save_checkpoint(trainer, str(partial))
            if trainer.is_global_zero:
                os.replace(partial, filepath)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise CheckpointError(f"{filepath}: the checkpoint could not be written ({error.strerror or error}); the "
                                  "run stops here (free space or fix the folder's permissions, then resume from the "
                                  "last checkpoint written)") from None
        self._last_checkpoint_saved = filepath


class BestCheckpoint(AtomicCheckpoint):
    """Writes ``best.ckpt``, the best epoch by ``monitor``, over the epochs a resumed run's checkpoint had trained too.

    A resumed run writes into a new ``version_N``, and Lightning then forgets the best score so far: the first epoch
    after the resume would be "best" however it scored. Here the earlier score stays the bar to beat, and the earlier
    run's ``best.ckpt`` stays where it is (never removed), so ``--ckpt_path best`` (the newest ``version_N`` holding
    one) is the best epoch of the whole run."""

    def __init__(self, monitor: str, mode: str, dirpath: Path | None = None):
        super().__init__(dirpath, monitor=monitor, mode=mode, filename="best", enable_version_counter=False)

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)  # as saved before

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        score = state_dict.get("best_model_score")
        earlier = self.best_model_path and Path(self.best_model_path).is_file()  # (a moved run: Lightning's way)
        if state_dict.get("dirpath", self.dirpath) != self.dirpath and score is not None and earlier:
            self.best_model_score, self.best_k_models = score, {self.best_model_path: score}
            self.kth_best_model_path, self.kth_value = self.best_model_path, score

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        if Path(filepath).parent == Path(self.dirpath):  # an earlier run's best.ckpt is that run's to keep
            super()._remove_checkpoint(trainer, filepath)


class LastCheckpoint(AtomicCheckpoint):
    """Writes ``last.ckpt`` at the end of every epoch, and when a run is interrupted (SIGTERM, Ctrl-C),
    so that ``fit --ckpt_path last`` resumes where it stopped. Nothing is written when the run failed
    (a non-finite loss must not leave a checkpoint behind).

    SIGTERM stops after a batch; Ctrl-C stops at once, mostly inside a batch, which the resumed run then trains again
    from its start (its data and the random states it started with). Either way the resumed run is bit-identical to
    an uninterrupted one, but for a Ctrl-C inside the optimizer's step and a stop inside a gradient-accumulation
    window. A run stopped inside an epoch's validation validates that epoch again when resumed."""

    def __init__(self, dirpath: Path | None = None):
        super().__init__(dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != "fit":
            return
        path = self.format_checkpoint_name({})
        in_validation = trainer.validating and not trainer.sanity_checking
        if in_validation:
            _validate_again_on_resume(trainer)
        else:
            _train_unfinished_batch_on_resume(trainer)
        self._save_checkpoint(trainer, path)
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            caveat = f" (validating epoch {trainer.current_epoch} first)" if in_validation else ""
            print(f"seqpipe: fit stopped by Ctrl-C; {self.resume_hint(caveat)}", file=sys.stderr)

    def resume_hint(self, caveat: str = "") -> str:
        """What a stopped fit tells its user: the ``last.ckpt`` that resumes it (``caveat`` after), or that it
        stopped before writing one."""
        path = Path(self.format_checkpoint_name({}))
        if path.is_file():
            return f"{path} resumes it (--ckpt_path last){caveat}"
        return "it stopped before training began, so there is nothing to resume: run it again"


def _batch_progress(trainer):
    """The fit loop's counters of the epoch's training batches: ``ready`` (fetched), ``processed`` (stepped)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current


def _train_unfinished_batch_on_resume(trainer) -> None:
    """A fit stopped inside a training batch, before its optimizer step (Ctrl-C), or after its loader handed it out:
    a :class:`~seqpipe.contracts.RewindableLoader` saves the position of the batches the fit loop processed, so the
    resumed run trains that batch again rather than skip it (:class:`RandomState` saves the generators as the batch
    started). Skipped, the epoch would be a batch short, and its validation could be skipped too."""
    loader = trainer.train_dataloader
    if isinstance(loader, RewindableLoader):
        loader.rewind_to(_batch_progress(trainer).processed)


def _validate_again_on_resume(trainer) -> None:
    """A fit stopped inside the validation of an epoch: set the validation loop's counters to "restarted before its
    first batch", the state in which Lightning's resumed fit runs that validation (whole) before the next epoch.
    Saved as they are (training done, validation not), they would make it skip the validation, so the epoch would
    never be scored, checkpointed as best or seen by early stopping."""
    progress = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    done_before = progress.total.completed - progress.current.completed  # batches of the fit's earlier validations
    for counter, before in ((progress.total, done_before), (progress.current, 0)):
        counter.ready, counter.started, counter.processed, counter.completed = before + 1, before + 1, before, before


class RandomState(Callback):
    """Saves the random generators' states in the checkpoint and restores them on resume, so a resumed run draws
    dropout (and anything else that uses the global generators) exactly as the uninterrupted run would have. The
    training data's order and augmentation do not depend on them (:mod:`seqpipe.data.resumable`). A fit stopped
    inside a training batch saves the states the batch started with, so the resumed run trains that batch as the
    uninterrupted run did."""

    def __init__(self):
        self._batch_start: tuple[int, dict[str, Any]] | None = None  # (the batch's ``ready`` count, the generators)
        self._stopped_inside_batch = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = (_batch_progress(trainer).ready, self._current())

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # before LastCheckpoint writes (Lightning runs checkpoint callbacks last); the snapshot must be of the batch
        # the fit stopped inside
        progress = _batch_progress(trainer)
        self._stopped_inside_batch = (trainer.training and progress.ready > progress.processed
                                      and self._batch_start is not None and self._batch_start[0] == progress.ready)

    def state_dict(self) -> dict[str, Any]:
        return self._batch_start[1] if self._stopped_inside_batch else self._current()

    @staticmethod
    def _current() -> dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        # as tensors and plain data: checkpoints are read with weights_only=True
        numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian)
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
        return {"torch": torch.get_rng_state(), "cuda": cuda, "python": random.getstate(), "numpy": numpy_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        kind, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict.get("cuda", [])  # absent from checkpoints of earlier versions
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(state_dict["python"])
