"""The contract between data, model and heads: one typed description of the data, written by the data module.

Data flows one way::

    reader -> data module -> DataInfo -> backbone input layer and head -> checkpoint -> predict

A data module sets ``data_info`` (a :class:`DataInfo`) in ``setup``, from its training data. The model builds its
input layer and binds its head from it (``SequenceModel.configure_model``) and saves :meth:`DataInfo.to_dict` in
the checkpoint's hyper-parameters: plain values, readable with ``weights_only``. ``seqpipe predict --ckpt_path``
rebuilds the model from that dict alone, and the CLI hands the same description to the data module
(:meth:`RestorableData.restore_data_info`) so that new data is read with the training data's labels, scaler and
vocabulary. No data module reads the description back out of the model.

Each field, who writes it (in ``setup``) and who reads it:

- ``input``: every data module (DNA data: :class:`TokenInput` from its tokenizer; audio and series:
  :class:`ChannelInput`). Read by ``SequenceModel`` to build the backbone's input layer, through
  ``TaskHead.backbone_input_spec`` (a head that reshapes its input, like ``Forecasting``, says what it feeds).
- ``input.vocab``: the DNA data modules. Read by ``DNAClassificationData`` when restoring a model (a checkpoint of
  another vocabulary is refused).
- ``input.tokenizer``: the DNA data modules. Read by ``SequenceClassification`` (``"dna"``: score both strands).
- ``input.sample_rate``: ``AudioClassificationData``. Read by the backbone's filterbank front end, and by the audio
  data module when restoring a model (clips are resampled to the trained rate).
- ``label_names``: the classification, genome and pre-training data modules. Read by the classification and
  per-base heads (output size, prediction columns), ``TaskHead.predictions``, ``GenomePredictionWriter``, the DNA
  tools (``seqpipe.tasks.model_scoring``), and the data modules when restoring a model (class numbering).
- ``series``: ``ForecastData``. Read by ``Forecasting`` (horizon, targets, scaler), ``ForecastPlot``, and
  ``ForecastData`` when restoring a model (columns, scaler, lengths).
- ``next_token_targets``: ``DNAPretrainData`` (objective ``next_base``) and ``GenomeData`` (target ``next_base``).
  Read by ``SequenceModel`` at ``fit``, which refuses a backbone that reads ahead (it would see the answers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from seqpipe.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class TokenInput:
    """Integer tokens over a vocabulary: ``batch["x"]`` (B, L) int64 in ``[0, vocab_size)``, 0 the padding.

    ``vocab``: token -> id, so that a restored model is never fed ids of another tokenizer. ``tokenizer``: the
    tokenizer's name (``"dna"``: the tokens have a reverse complement, which heads may score as well).
    """

    vocab_size: int
    vocab: dict[str, int] | None = None
    tokenizer: str | None = None


@dataclass(frozen=True)
class ChannelInput:
    """Real values: ``batch["x"]`` (B, L, channels) float. ``sample_rate`` (Hz): of an audio waveform, for a
    front end that builds its filters in Hz; None when the steps have no rate."""

    channels: int
    sample_rate: float | None = None


#: what a data module's batches hold in ``x``
InputSpec = TokenInput | ChannelInput


@dataclass(frozen=True)
class SeriesInfo:
    """A forecasting series as fitted on its training rows.

    ``columns``: the input variables (C), in the order of ``x``'s channels; ``targets``: the forecast variables,
    at ``target_index`` in ``columns``; ``mean``, ``std`` (C,): the scaler of the training rows (``x`` and ``y`` are
    scaled by it); ``seq_len`` input rows forecast ``pred_len`` rows; ``freq``: the pandas frequency of the
    timestamps (None: the rows are plain steps); ``calendar``: names of the calendar features in ``x_calendar``.
    """

    columns: list[str]
    targets: list[str]
    target_index: list[int]
    mean: list[float]
    std: list[float]
    seq_len: int
    pred_len: int
    freq: str | None
    calendar: list[str]


_SERIES_KEYS = tuple(SeriesInfo.__dataclass_fields__)
_TOKEN_KEYS = ("vocab_size", "vocab", "tokenizer")
_CHANNEL_KEYS = ("input_dim", "sample_rate")
#: keys that checkpoints of earlier releases carry and nothing reads; accepted and dropped when loading
_RETIRED_KEYS = ("target", "window_length", "objective")


@dataclass(frozen=True)
class DataInfo:
    """What a data module produces, fitted on its training data; see the module docstring for who reads what.

    ``input``: the tokens or channels of ``batch["x"]``; ``label_names``: the classes in index order (the order
    of the model's outputs), None when the task has none; ``series``: forecasting's fitted series description;
    ``next_token_targets``: a position's target is the next input token, so the backbone must be causal;
    ``extra``: plain values a user's own data module and head share (saved and restored as they are, under
    their own keys, which must not collide with the fields above).
    """

    input: InputSpec
    label_names: list[str] | None = None
    series: SeriesInfo | None = None
    next_token_targets: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def classes(self, reader: str) -> list[str]:
        """The label names, for ``reader`` (named in the error), which cannot work without them."""
        if not self.label_names:
            raise ConfigError(f"{reader} needs class labels (label_names), and the data module gives none")
        return list(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's form: one flat dict of plain values (the keys seqpipe has saved since its first
        release, so every checkpoint reads with :meth:`from_dict`). Unset optional fields are left out."""
        saved: dict[str, Any] = {}
        if isinstance(self.input, TokenInput):
            saved["vocab_size"] = self.input.vocab_size
            if self.input.vocab is not None:
                saved["vocab"] = dict(self.input.vocab)
            if self.input.tokenizer is not None:
                saved["tokenizer"] = self.input.tokenizer
        else:
            saved["input_dim"] = self.input.channels
            if self.input.sample_rate is not None:
                saved["sample_rate"] = self.input.sample_rate
        if self.label_names is not None:
            saved["label_names"] = list(self.label_names)
        if self.series is not None:
            saved.update(asdict(self.series))
        if self.next_token_targets:
            saved["next_token_targets"] = True
        clashes = sorted(set(self.extra) & set(saved))
        if clashes:
            raise ConfigError(f"data_info.extra reuses the contract's own keys {clashes}: rename them")
        return {**saved, **self.extra}

    @classmethod
    def from_dict(cls, saved: dict[str, Any], source: str = "data_info") -> DataInfo:
        """The inverse of :meth:`to_dict`; ``source`` (the checkpoint) names a malformed dict's error. Keys the
        contract does not define are kept in ``extra``."""
        known = {*_TOKEN_KEYS, *_CHANNEL_KEYS, "label_names", *_SERIES_KEYS, "next_token_targets", *_RETIRED_KEYS}
        extra = {key: value for key, value in saved.items() if key not in known}
        if "vocab_size" in saved:
            spec: InputSpec = TokenInput(int(saved["vocab_size"]), saved.get("vocab"), saved.get("tokenizer"))
        elif "input_dim" in saved:
            spec = ChannelInput(int(saved["input_dim"]), saved.get("sample_rate"))
        else:
            raise CheckpointError(f"{source}: data_info names no input (vocab_size for tokens, input_dim for channels)")
        series = None
        if any(key in saved for key in _SERIES_KEYS):
            missing = [key for key in _SERIES_KEYS if key not in saved]
            if missing:
                raise CheckpointError(f"{source}: data_info describes a series but lacks {missing}")
            series = SeriesInfo(**{key: saved[key] for key in _SERIES_KEYS})
        label_names = saved.get("label_names")
        if isinstance(label_names, str):
            raise CheckpointError(f"{source}: data_info label_names must be a list of names, got the string {label_names!r}")
        return cls(spec, None if label_names is None else list(label_names), series,
                   bool(saved.get("next_token_targets", False)), extra)


def chosen_class(names: list[str], chosen: str | None, option: str, of: str = "the model") -> str:
    """The class ``chosen`` among ``names`` (the classes ``of`` a model or its predictions, in index order), the last
    when None; one not among them is an error naming ``option``, the tool option or parameter that gave it."""
    chosen = names[-1] if chosen is None else chosen
    if chosen not in names:
        raise ConfigError(f"{option} {chosen!r} is not a class of {of} ({', '.join(names)})")
    return chosen


@runtime_checkable
class RestorableData(Protocol):
    """A data module that reads new data as a restored model's training data was read."""

    def restore_data_info(self, trained: DataInfo) -> None:
        """Called before ``setup`` with the :class:`DataInfo` of the checkpoint being run."""


@runtime_checkable
class RewindableLoader(Protocol):
    """A training loader that saves its position in the epoch (how many batches it handed out) in the checkpoint."""

    def rewind_to(self, batches_done: int) -> None:
        """Called when a fit stops inside a batch: the saved position becomes the ``batches_done`` the fit loop
        finished in this epoch, so the resumed run trains the interrupted batch again."""
