"""The one LightningModule: a backbone and a task head, trained with AdamW and a warm-up + cosine schedule."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from seqpipe.backbone import Backbone, position_reading_ahead
from seqpipe.checkpoints import BestCheckpoint, LastCheckpoint, RandomState, unused_run_directory
from seqpipe.chunked import check_chunk_size, chunked_forward, chunked_mean, chunked_mean_max, valid_mean
from seqpipe.contracts import DataInfo, InputSpec, TokenInput
from seqpipe.errors import ConfigError, TrainingDiverged, location
from seqpipe.heads import TaskHead
from seqpipe.pretrained import load_backbone_weights, report_loaded

#: the splits whose metrics the model keeps (training logs its loss only)
EVALUATED_SPLITS = ("val", "test")
#: the most backbone positions evaluated as one window (the longest genome window); longer inputs must stream
LONGEST_WHOLE_INPUT = 1 << 20
#: the share of trainer.max_time left unplanned when its epochs are counted, for epochs slower than the first
MAX_TIME_MARGIN = 0.1
#: what the too-long error tells a ``seqpipe fit/test/predict`` user to do
STREAM_OR_CROP = ("stream it with --model.chunk_size (e.g. 65536; causal backbones) or crop it (--data.max_length for "
                  "DNA, --data.max_seconds for audio)")


def longest_record(batch: dict[str, Any]) -> str | None:
    """The longest row of ``batch`` as messages name it: its "where" (``file, record 'id'``), else its id (None when
    the batch carries neither)."""
    names, lengths = batch.get("where", batch.get("ids")), batch.get("lengths")
    if names is None:
        return None
    row = 0 if lengths is None else int(lengths.argmax())
    return names[row] if "where" in batch else location(None, names[row])


class SequenceModel(L.LightningModule):
    """Backbone + task head.

    With ``trainer.max_time``, the first epoch's time decides how many of ``trainer.max_epochs`` fit in it: the
    run trains that many (it says so) and the cosine decay ends with the last of them, instead of being cut off
    at a high learning rate when the time runs out. The first epoch also carries one-off start-up costs, so the
    count errs on the side of fewer epochs. A resumed run keeps the count and the schedule; resumed with another
    ``trainer.max_epochs``, it trains on with a new ``trainer.max_time`` budget, counted again after its first epoch.

    Args:
        backbone: the sequence backbone (input layer, blocks, final norm).
        head: the task head (output layer, loss, metrics, prediction format).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay; never applied to biases, norms, or parameters marked with
            :func:`seqpipe.streaming.no_weight_decay` (A, Δ bias, D).
        betas: AdamW betas.
        warmup_fraction: share of the optimizer steps spent in linear warm-up before the cosine decay.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio``.
        data_info: the checkpoint's form (:meth:`seqpipe.contracts.DataInfo.to_dict`) of what the data module
            fitted on the training data (vocabulary, label names, scalers, ...). Leave unset: on ``fit`` the model
            is built from the data module's ``data_info``, and on ``test``/``predict`` from the checkpoint's.
        chunk_size: run windows longer than this through the backbone chunk by chunk with carried state
            (:func:`seqpipe.chunked.chunked_forward`; causal backbones only): the same outputs and
            gradients, the activations of one chunk at a time. Also the chunk size when the data streams a
            sequence window by window (batches with ``continues``).
        checkpoint_chunks: with ``chunk_size``, recompute each chunk in the backward pass
            (``torch.utils.checkpoint``) instead of keeping its activations.
        pretrained: a checkpoint (e.g. of ``configs/dna_pretrain.yaml``) whose backbone weights, embedding
            included, start this ``fit``; its backbone must be this one (class, tensor names and shapes), and the
            head is new (see :mod:`seqpipe.pretrained`).
            Not read by ``test``/``predict``: the fine-tuned checkpoint holds every weight.
        freeze_backbone: train the head only; the backbone keeps its (pre-trained) weights.
        backbone_lr_scale: the backbone's learning rate is ``lr * backbone_lr_scale`` (e.g. 0.1 to fine-tune
            pre-trained weights gently while the new head learns at ``lr``).
        head_warmup_epochs: the backbone's learning rate is 0 for this many epochs, so the new head first learns on
            the (pre-trained) features before everything is fine-tuned ("linear probing, then fine-tuning"); then
            it follows the schedule from where it stands, with no warm-up of its own. The backbone's gradients are
            still computed during the warm-up (and fill AdamW's moments): one set of parameters under every
            Lightning strategy, where switching ``requires_grad`` during training would not be.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: TaskHead,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.01,
        data_info: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        checkpoint_chunks: bool = False,
        pretrained: str | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        head_warmup_epochs: int = 0,
    ):
        super().__init__()
        # Under LightningCLI the hparams hold the backbone and head *configs*, which restore the model from a
        # checkpoint; built from Python they are modules, which a checkpoint must not pickle.
        self.save_hyperparameters(ignore=None if _given_hyperparameters.get() else ["backbone", "head"])
        missing = head.unimplemented()
        if missing:
            raise ConfigError(f"{type(head).__module__}.{type(head).__qualname__} does not define {', '.join(missing)}: a "
                              "TaskHead defines forward, loss, metrics and update_metrics (README: Plug in a task head)")
        self.backbone = backbone
        self.head = head
        self.metrics = nn.ModuleDict()
        self._stream_state = None
        #: the learning-rate schedule, optimizer steps (warm-up, total), set by configure_optimizers
        self._schedule = (0, 1)
        #: epochs this run trains when trainer.max_time holds fewer than trainer.max_epochs (None: max_epochs)
        self._timed_epochs: int | None = None
        self._requested_epochs: int | None = None  # trainer.max_epochs when they were counted
        self._train_on = False  # resumed past a counted run's end: a new max_time budget, the epochs counted again
        self._count_after_epoch: int | None = None  # the epoch after which this run counts the epochs that fit
        #: the contract the model was built from (None until bound); ``hparams["data_info"]`` is its saved form
        self.data_info: DataInfo | None = None
        #: a ``fit`` that resumes from a checkpoint (the CLI sets it for ``--ckpt_path``): ``pretrained`` is not read
        self.resuming = False
        for name, value, valid, needs in (
            ("lr", lr, lr > 0, "positive"), ("weight_decay", weight_decay, weight_decay >= 0, "0 or more"),
            ("betas", list(betas), all(0 <= beta < 1 for beta in betas), "two numbers in [0, 1)"),
            ("warmup_fraction", warmup_fraction, 0 <= warmup_fraction < 1, "in [0, 1)"),
            ("min_lr_ratio", min_lr_ratio, 0 <= min_lr_ratio <= 1, "in [0, 1]"),
            ("backbone_lr_scale", backbone_lr_scale, backbone_lr_scale > 0, "positive"),
        ):
            if not valid:
                raise ConfigError(f"model.{name} must be {needs}, got {value}")
        if chunk_size is not None:
            check_chunk_size(backbone, chunk_size, "model.chunk_size")
        if head_warmup_epochs < 0:
            raise ConfigError(f"model.head_warmup_epochs must be 0 or more, got {head_warmup_epochs}")
        if head_warmup_epochs and freeze_backbone:
            raise ConfigError("model.head_warmup_epochs and model.freeze_backbone both given: with freeze_backbone the "
                              "backbone never trains, so there is nothing to warm up before")
        if freeze_backbone and backbone_lr_scale != 1.0:
            raise ConfigError("model.backbone_lr_scale and model.freeze_backbone both given: a frozen backbone has no "
                              "learning rate to scale; give one of them")
        if freeze_backbone and not pretrained:
            raise ConfigError("model.freeze_backbone trains the head alone, on a backbone that without model.pretrained "
                              "is random: give the pre-trained checkpoint (--model.pretrained PATH.ckpt)")
        if data_info is not None:
            self._bind(DataInfo.from_dict(data_info))

    def _bind(self, data_info: DataInfo) -> None:
        """Create the data-dependent layers and metrics, and remember ``data_info`` for the checkpoint."""
        if hasattr(self.head, "input_spec"):  # the earlier name of the hook, which would be ignored silently
            raise ConfigError(f"{type(self.head).__name__}.input_spec(data_info) is now backbone_input_spec(data_info), "
                              "returning a seqpipe.contracts.TokenInput or ChannelInput: rename it")
        self.data_info = data_info
        self.hparams["data_info"] = data_info.to_dict()
        if self.backbone.encoder is None:
            set_backbone_input(self.backbone, self.head.backbone_input_spec(data_info))
        self.head.bind(self.backbone.d_model, data_info)
        for split in EVALUATED_SPLITS:
            self.metrics[split] = self.head.metrics().clone(prefix=f"{split}/")

    def configure_model(self) -> None:
        """Bind the data's contract (from the trainer's data module unless restored) and, in a ``fit``, load the
        pre-trained backbone. Also called by ``load_from_checkpoint``, without a trainer."""
        fitting = self._trainer is not None and self._trainer.state.fn == "fit"
        if self.data_info is None:
            datamodule = self._trainer.datamodule if self._trainer is not None else None
            info = getattr(datamodule, "data_info", None)
            if info is None:
                raise ConfigError(
                    "the model has no data_info: train it on a data module with training data (data.train), "
                    "or restore it from a checkpoint with --ckpt_path"
                )
            if not isinstance(info, DataInfo):
                raise ConfigError(f"{type(datamodule).__name__}.data_info is a {type(info).__name__}: a data module "
                                  "describes its data with a seqpipe.contracts.DataInfo")
            self._bind(info)
        if self.data_info.next_token_targets and fitting:
            self._refuse_reading_ahead()
        self._start_from_pretrained(fitting)

    def _refuse_reading_ahead(self) -> None:
        """Next-token targets need a causal backbone: one that reads later positions would see the answers."""
        position = position_reading_ahead(self.backbone, self.data_info.input)
        if position is not None:
            raise ConfigError(
                f"the targets are the next base, and {type(self.backbone).__name__} reads ahead (its output at position "
                f"{position} changes when only a later base does), so it would see them: use a causal backbone "
                "(configs/dna_pretrain.yaml's), or masked targets (data.objective masked with "
                "seqpipe.tasks.per_base.MaskedBaseLM, as configs/dna_pretrain_rc.yaml does)")

    def _start_from_pretrained(self, fitting: bool) -> None:
        """``fit`` only: load the ``pretrained`` backbone, unless the fit resumes (``resuming``: the checkpoint holds
        every weight, so the pre-trained file is not read); freeze the backbone when asked."""
        if self.hparams.pretrained and fitting and not self.resuming:
            rate = getattr(self.data_info.input, "sample_rate", None)
            report_loaded(self.hparams.pretrained, load_backbone_weights(self.backbone, self.hparams.pretrained, rate))
        if self.hparams.freeze_backbone:
            self.backbone.requires_grad_(False)

    def forward(self, batch: dict[str, Any]) -> Any:
        """The head's outputs, merged over the head's views of the batch (e.g. both strands)."""
        views = self.head.training_views(batch) if self.training else self.head.evaluation_views(batch)
        return self.head.merge_views([self._forward_view(view) for view in views])

    def _forward_view(self, batch: dict[str, Any]) -> Any:
        lengths, chunk_size = batch.get("lengths"), self.hparams.chunk_size
        given = self.head.backbone_input(batch)
        if not (isinstance(given, tuple) and len(given) == 2):
            raise ConfigError(f"{type(self.head).__name__}.backbone_input must return (inputs, context), context None "
                              f"when the head needs none; it returned a {type(given).__name__}")
        inputs, context = given
        # a head's context reaches its forward only when it made one: heads that need none keep three arguments
        extra = {} if context is None else {"context": context}
        # a long record streamed chunk by chunk into the mean (and maximum) the head reads: memory of one chunk,
        # not (B, L, D) features; not for a sequence the data streams window by window (its state carries over)
        pooled_stream = (chunk_size and inputs.shape[1] > chunk_size and not torch.is_grad_enabled()
                         and batch.get("continues") is None)
        if self.head.mean_pooled and pooled_stream:
            mean = self.mean_features(inputs, lengths, chunk_size)
            return self.head(mean[:, None], torch.ones(len(mean), dtype=torch.long, device=mean.device), batch, **extra)
        if self.head.mean_max_pooled and pooled_stream:
            mean, peak = chunked_mean_max(self.backbone, inputs, self.output_positions(inputs, lengths), chunk_size)
            return self.head.forward_pooled(mean, peak, batch, **extra)
        if not chunk_size and not self.training:
            self.check_whole_input(inputs.shape[1], where=longest_record(batch))
        features = self._features(inputs, lengths, batch.get("continues"))
        return self.head(features, self.backbone.output_lengths(lengths), batch, **extra)

    def check_whole_input(self, length: int, way_out: str = STREAM_OR_CROP, where: str | None = None) -> None:
        """Refuse an input of ``length`` positions too long to evaluate as one window: the (B, L, D) features of a
        chromosome-sized record would take tens of GB. ``way_out``: what the error tells the user to do; ``where``:
        the record, as the error names it first (``file, record 'id'``)."""
        positions = int(self.backbone.output_lengths(torch.tensor([length]))[0])  # after a strided front end
        if positions > LONGEST_WHOLE_INPUT:
            raise ConfigError(f"{where + ': ' if where else ''}a record of {positions:,} positions is longer than the "
                              f"{LONGEST_WHOLE_INPUT:,} evaluated as one window: {way_out}")

    def mean_features(self, inputs: torch.Tensor, lengths: torch.Tensor | None, chunk_size: int | None = None,
                      way_out: str = STREAM_OR_CROP, where: str | None = None) -> torch.Tensor:
        """Backbone inputs (B, L[, C]), right-padded to ``lengths`` (B,) -> each sequence's mean backbone feature over
        its valid positions (B, D). Inputs longer than ``chunk_size`` stream chunk by chunk with carried state
        (causal backbones; memory of one chunk without gradients); others run whole (:meth:`check_whole_input`,
        which ``way_out`` and ``where`` are for)."""
        positions = self.output_positions(inputs, lengths)
        if chunk_size and inputs.shape[1] > chunk_size:
            return chunked_mean(self.backbone, inputs, positions, chunk_size)
        self.check_whole_input(inputs.shape[1], way_out, where)
        return valid_mean(self.backbone(inputs, lengths), positions)

    def output_positions(self, inputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Each row's valid backbone outputs (B,), after a strided front end, from its valid inputs ``lengths``
        (B,; None: every input position of ``inputs`` (B, L[, C]) is valid)."""
        if lengths is None:
            lengths = torch.full((inputs.shape[0],), inputs.shape[1], device=inputs.device)
        return self.backbone.output_lengths(lengths)

    def _features(self, inputs: torch.Tensor, lengths: torch.Tensor | None, continues: torch.Tensor | None) -> torch.Tensor:
        """Backbone features: of the whole window, chunk by chunk (``chunk_size``), or continuing the state the
        previous batch left when the data streams one sequence window by window (``continues`` (B,) bool)."""
        chunk_size = self.hparams.chunk_size
        if continues is not None:
            if bool(continues.any()) and (self._stream_state is None or not bool(continues.all())):
                raise ConfigError("a streamed batch continues a sequence the previous batch did not end in: stream with batch size 1")
            state = self._stream_state if bool(continues.any()) else None
            features, self._stream_state = chunked_forward(self.backbone, inputs, chunk_size or inputs.shape[1], state=state)
            return features
        if chunk_size and inputs.shape[1] > chunk_size:
            return chunked_forward(self.backbone, inputs, chunk_size, self.hparams.checkpoint_chunks)[0]
        return self.backbone(inputs, lengths)

    def _batch_size(self, batch: dict[str, Any]) -> int:
        return len(batch["x"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.head.loss(self(batch), batch)
        if not torch.isfinite(loss.detach()).all():
            # before backward, so the weights (and every checkpoint from now on) stay finite
            raise TrainingDiverged(
                f"train/loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: training "
                f"diverged and was stopped (lower --model.lr, or check the data); no checkpoint was written for it"
            )
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=self._batch_size(batch),
                 sync_dist=self.trainer.world_size > 1)  # under DDP the mean over every process; costly on one
        return loss

    def _evaluate(self, batch: dict[str, Any], split: str) -> None:
        outputs = self(batch)
        # synced across processes under DDP: checkpointing and early stopping monitor it on every rank
        self.log(f"{split}/loss", self.head.loss(outputs, batch), on_epoch=True, sync_dist=True,
                 batch_size=self._batch_size(batch))
        self.head.update_metrics(self.metrics[split], outputs, batch)
        self.log_dict(self.metrics[split], on_step=False, on_epoch=True, prog_bar=split == "val")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        return self.head.predictions(self(batch), batch, self.data_info)

    def configure_optimizers(self):
        lr, scale = self.hparams.lr, self.hparams.backbone_lr_scale
        warmup_epochs = self.hparams.head_warmup_epochs
        # groups (backbone at its own lr?, no weight decay?): decayed first; the backbone apart when its lr differs
        apart = scale != 1.0 or warmup_epochs > 0
        in_backbone = {id(param) for param in self.backbone.parameters()} if apart else set()
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for param in self.parameters():
            if param.requires_grad:
                skip = getattr(param, "_no_weight_decay", False) or param.ndim < 2
                groups.setdefault((id(param) in in_backbone, skip), []).append(param)
        keys = sorted(groups)
        optimizer = torch.optim.AdamW(
            [{"params": groups[key], "weight_decay": 0.0 if key[1] else self.hparams.weight_decay,
              "lr": lr * scale if key[0] else lr} for key in keys],
            lr=lr, betas=tuple(self.hparams.betas),
        )
        if self._timed_epochs is None:  # not restored from a run whose trainer.max_time held fewer epochs
            total = self.trainer.estimated_stepping_batches  # loads the training data
            if total == math.inf:
                raise ConfigError(f"trainer.max_epochs {self.trainer.max_epochs} with no trainer.max_steps sets no end to "
                                  "training, and the learning-rate schedule (warm-up, cosine decay) needs one: give "
                                  "trainer.max_epochs (with trainer.max_time, the epochs that fit it are trained) or "
                                  "trainer.max_steps")
            total = max(1, int(total))
            self._schedule = (int(self.hparams.warmup_fraction * total), total)
        floor = self.hparams.min_lr_ratio
        head_steps = self._head_warmup_steps(warmup_epochs, self._schedule[1]) if warmup_epochs else 0

        def lr_factor(step: int) -> float:
            warmup, total = self._schedule  # read at every step: the first epoch may shorten it
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        def backbone_factor(step: int) -> float:
            return 0.0 if step < head_steps else lr_factor(step)

        factors = [backbone_factor if key[0] else lr_factor for key in keys]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _head_warmup_steps(self, epochs: int, total: int) -> int:
        """The optimizer steps of ``epochs`` epochs, checked to be fewer than the ``total`` of training."""
        batches = self.trainer.num_training_batches
        if batches == math.inf:
            raise ConfigError("model.head_warmup_epochs counts epochs: it needs trainer.max_epochs and training data "
                              "whose number of batches is known")
        steps = self._optimizer_steps(epochs)
        if steps >= total:
            raise ConfigError(f"model.head_warmup_epochs {epochs} is {steps} optimizer steps, not fewer than the "
                              f"{total} of training: the backbone would never train (model.freeze_backbone true "
                              "says that)")
        return steps

    def _optimizer_steps(self, epochs: int) -> int:
        """The optimizer steps of ``epochs`` epochs of training data whose number of batches is known."""
        return epochs * math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches)

    def setup(self, stage: str) -> None:
        if stage == "fit":  # a new fit; a resumed one restores both from its checkpoint next
            self._timed_epochs, self._train_on = None, False

    def on_train_start(self) -> None:
        # estimated_stepping_batches (configure_optimizers) built the training loader before the checkpoint was
        # restored, so Lightning kept the loader's saved position from it (Lightning-AI/pytorch-lightning#20550):
        # hand it over now, before the first batch, which is when seqpipe's training loaders read it
        self.trainer.fit_loop._load_combined_loader_states()
        # here rather than in on_load_checkpoint: under some strategies the checkpoint is restored after the optimizers
        if self._timed_epochs is not None and self._timed_epochs < self.trainer.max_epochs:
            self.trainer.fit_loop.max_epochs = self._timed_epochs
        timer = self._timer()
        if self._train_on and timer is not None:
            timer.load_state_dict({"time_elapsed": {}})  # the time the checkpoint's run spent is not this run's
        self._count_after_epoch = self.current_epoch if self.current_epoch == 0 or self._train_on else None

    def on_train_epoch_end(self) -> None:
        if self.current_epoch == self._count_after_epoch:
            self._fit_epochs_to_max_time()

    def _timer(self) -> Timer | None:
        """The trainer's Timer (``trainer.max_time``), or None."""
        return next((callback for callback in self.trainer.callbacks if isinstance(callback, Timer)), None)

    def _fit_epochs_to_max_time(self) -> None:
        """After this run's first epoch, with ``trainer.max_time``: train only the epochs that fit in it (at least one
        more than ``head_warmup_epochs``), the cosine decay ending with the last of them (the warm-up unchanged)."""
        timer = self._timer()
        remaining = timer.time_remaining() if timer else None
        max_epochs, batches = self.trainer.max_epochs, self.trainer.num_training_batches
        if remaining is None or max_epochs is None or max_epochs < 0 or batches == math.inf:
            return
        first = timer.time_elapsed()
        done = self.current_epoch + 1
        # the epochs that fit in all but MAX_TIME_MARGIN of what remains: a loaded machine's later epochs run slower
        fitting = int(remaining * (1 - MAX_TIME_MARGIN) // max(first, 1e-9))
        fit = max(done + fitting, self.hparams.head_warmup_epochs + 1)
        epochs = self.trainer.strategy.broadcast(fit, src=0)  # rank 0's count, so that every process stops together
        if epochs >= max_epochs:
            return
        self._timed_epochs, self._requested_epochs = epochs, max_epochs
        self.trainer.fit_loop.max_epochs = epochs
        warmup, total = self._schedule
        total = min(total, self._optimizer_steps(epochs))
        self._schedule = (min(warmup, total), total)
        scheduler = self.lr_schedulers()  # the next step's rates now, not after it
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)
        took = f"{first:.0f}" if first >= 10 else f"{first:.2g}"  # "53", or "0.42" rather than "0"
        which = "its" if done > 1 else "the"  # a run resumed past a counted run's end: its own first epoch
        rank_zero_info(f"trainer.max_time {first + remaining:.0f} s: {which} first epoch took {took} s, so this run "
                       f"trains {epochs} of its {max_epochs} epochs, and the learning-rate schedule ends with the last "
                       "of them")

    def configure_callbacks(self):
        """Keep the best checkpoint by the head's validation metric (``best.ckpt``) and the end of every epoch
        (``last.ckpt``), with the random state that makes resuming from it exact. Lightning then drops the trainer's
        ``ModelCheckpoint``s (ours subclass it): its default one, which ours replace, and a user's own, which is
        returned here so that it runs too. With ``enable_checkpointing`` false nothing is written."""
        if not self.trainer.checkpoint_callbacks:
            return [RandomState()]
        own = [c for c in self.trainer.checkpoint_callbacks if type(c) is ModelCheckpoint and not _lightnings_default(c)]
        # without a logger, a run's checkpoints go to a version folder of their own, as a logger's would
        dirpath = None if self.trainer.loggers else unused_run_directory(Path(self.trainer.default_root_dir) / "checkpoints")
        return [BestCheckpoint(self.head.monitor, self.head.monitor_mode, dirpath), LastCheckpoint(dirpath), RandomState(),
                *own]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A run that counted the epochs fitting its trainer.max_time resumes with them and their schedule, unless
        this fit asks for another trainer.max_epochs: then it trains on to that, the schedule over that many."""
        timed = checkpoint.get("max_time_schedule")
        if timed is None:
            return
        requested = timed.get("max_epochs")
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == "fit" and requested is not None and trainer.max_epochs != requested:
            self._train_on = True
            if trainer.max_epochs > checkpoint.get("epoch", 0) + 1:
                rank_zero_info(f"the checkpoint's run trained {timed['epochs']} of its {requested} epochs (what fit its "
                               f"trainer.max_time); with trainer.max_epochs {trainer.max_epochs} training goes on to "
                               f"epoch {trainer.max_epochs} (within a new trainer.max_time, if set), the learning-rate "
                               f"schedule over {trainer.max_epochs} epochs")
            return
        self._timed_epochs, self._requested_epochs = timed["epochs"], requested
        self._schedule = (timed["warmup_steps"], timed["total_steps"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._timed_epochs is not None:
            warmup, total = self._schedule
            checkpoint["max_time_schedule"] = {"epochs": self._timed_epochs, "warmup_steps": warmup, "total_steps": total,
                                               "max_epochs": self._requested_epochs}
        for name, tensor in checkpoint["state_dict"].items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TrainingDiverged(f"the weights {name} are not finite at epoch {self.current_epoch}, step "
                                       f"{self.global_step}: training diverged; no checkpoint was written for it")


def set_backbone_input(backbone: nn.Module, spec: InputSpec) -> None:
    """Create ``backbone``'s input layer for ``spec``: an embedding of the vocabulary, or a projection (or strided
    front end) of the channels."""
    if isinstance(spec, TokenInput):
        backbone.set_input(vocab_size=spec.vocab_size)
    else:
        backbone.set_input(d_input=spec.channels, sample_rate=spec.sample_rate)


def _lightnings_default(checkpoint: ModelCheckpoint) -> bool:
    """Whether ``checkpoint`` is the one a Trainer adds when given none (``ModelCheckpoint()``: no directory,
    metric or file name of its own)."""
    return checkpoint.dirpath is None and checkpoint.monitor is None and checkpoint.filename is None
