"""DNA-aware backbones: a motif front end before a causal stack (streams), bidirectional, and reverse-complement
equivariant by parameter sharing.

The bidirectional and RC-equivariant backbones see the whole window (one scan runs backwards), so they cannot
stream: their ``initial_state``, ``forward_chunk`` and ``step`` raise a :class:`~seqpipe.errors.ConfigError`;
predict long sequences with overlapping windows (``GenomeData(predict_overlap=...)``) instead.

Reverse complement of a hidden sequence ``h`` (B, L, D) means reversing the valid positions *and* the
channels (Caduceus, Schiff et al. 2024): channel ``i`` of one strand is channel ``D - 1 - i`` of the other.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqpipe.backbone import Backbone, BlockFactory, ResidualBlock
from seqpipe.dna_alphabet import DNA_COMPLEMENT, reverse_complement_ids, reverse_valid
from seqpipe.errors import ConfigError
from seqpipe.mamba import MambaBlock
from seqpipe.streaming import StreamingModule, WholeWindowsOnly

class BidirectionalMixer(WholeWindowsOnly, StreamingModule):
    """``forward(x) + reverse(backward(reverse(x)))``: two scans with their own parameters, the second
    on the sequence reversed (each row's valid part, so right padding never enters a scan first)."""

    def __init__(self, forward_mixer: StreamingModule, backward_mixer: StreamingModule):
        super().__init__()
        self.forward_mixer, self.backward_mixer = forward_mixer, backward_mixer

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        backward = reverse_valid(self.backward_mixer(reverse_valid(x, lengths), lengths), lengths)
        return self.forward_mixer(x, lengths) + backward


class BidirectionalBackbone(WholeWindowsOnly, Backbone):
    """A :class:`~seqpipe.backbone.Backbone` whose every mixer is a :class:`BidirectionalMixer` of two
    ``block``s (Mamba, S4, ...). Token inputs (DNA); features (B, L, d_model).

    Args:
        d_model: channels of the residual stream.
        n_layers: residual blocks (as for :class:`~seqpipe.backbone.Backbone`).
        block: the sequence mixer of each block, e.g. ``seqpipe.mamba.MambaBlock``.
        dropout: dropout after each block's mixer.
        vocab_size: token ids (set from the data when unset).
        strand_average: at evaluation (not in training), average the features of the sequence with the
            position-reversed features of its reverse complement — test-time augmentation over both strands
            for strand-symmetric per-base tasks.
    """

    def __init__(
        self,
        d_model: int = 128,
        n_layers: int = 4,
        block: BlockFactory = MambaBlock,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        strand_average: bool = False,
    ):
        super().__init__(
            d_model=d_model, n_layers=n_layers, block=lambda d: BidirectionalMixer(block(d), block(d)),
            dropout=dropout, vocab_size=vocab_size,
        )
        self.strand_average = strand_average

    @property
    def strand_invariant(self) -> bool:
        """Whether, outside training, a sequence and its reverse complement get the same features at mirrored
        positions (``strand_average``)."""
        return self.strand_average

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L) token ids -> features (B, L, d_model)."""
        features = super().forward(x, lengths)
        if self.strand_average and not self.training:
            other_strand = super().forward(reverse_complement_ids(x, lengths), lengths)
            features = (features + reverse_valid(other_strand, lengths)) / 2
        return features


class RCEmbedding(nn.Module):
    """Token ids (B, L) -> (B, L, 2E): the embedding of each base beside the channel-reversed embedding of
    its complement, one table shared by both strands."""

    def __init__(self, vocab_size: int, half_width: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, half_width, padding_idx=0)
        self.register_buffer("complement", torch.tensor(DNA_COMPLEMENT), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.embedding(x), self.embedding(self.complement[x]).flip(-1)], dim=-1)


class RCNorm(nn.Module):
    """RMSNorm of each strand's half with shared weights (the second half read channel-reversed)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.RMSNorm(d_model // 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        forward_half, reverse_half = h.chunk(2, dim=-1)
        return torch.cat([self.norm(forward_half), self.norm(reverse_half.flip(-1)).flip(-1)], dim=-1)


class RCResidualBlock(WholeWindowsOnly, StreamingModule):
    """``h + mixer(norm(h))`` where one mixer of width D/2 reads the first half forwards and the second
    half as the reverse complement (positions and channels reversed), then maps it back."""

    def __init__(self, d_model: int, mixer: StreamingModule, dropout: float = 0.0):
        super().__init__()
        self.norm = RCNorm(d_model)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        forward_half, reverse_half = self.norm(h).chunk(2, dim=-1)
        reverse_half = reverse_valid(reverse_half, lengths).flip(-1)
        mixed_reverse = reverse_valid(self.mixer(reverse_half, lengths).flip(-1), lengths)
        return h + self.dropout(torch.cat([self.mixer(forward_half, lengths), mixed_reverse], dim=-1))


class RCEquivariantBackbone(WholeWindowsOnly, Backbone):
    """Reverse-complement equivariant backbone by parameter sharing (Caduceus' RCPS): the features of the
    reverse complement are exactly the reverse complement of the features (positions and channels reversed).

    Each layer runs one ``block`` of width ``d_model / 2`` over both strands, so it has the parameters of a
    half-width model and the compute of a full-width one.

    Args:
        d_model: channels of the residual stream (even: half per strand).
        n_layers: residual blocks (as for :class:`~seqpipe.backbone.Backbone`).
        block: the sequence mixer of each block, e.g. ``seqpipe.mamba.MambaBlock``.
        dropout: dropout after each block's mixer.
        vocab_size: token ids (set from the data when unset).
        output: "equivariant" features, or "invariant" ones — the mean of the features and their channel
            reversal, so the reverse complement gives the same features at reversed positions (for
            strand-symmetric per-base tasks such as a coding mask, with any head).
    """

    def __init__(
        self,
        d_model: int = 128,
        n_layers: int = 4,
        block: BlockFactory = MambaBlock,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        output: Literal["equivariant", "invariant"] = "equivariant",
    ):
        if d_model % 2:
            raise ConfigError(f"RCEquivariantBackbone: d_model must be even (half per strand), got {d_model}")
        if output not in ("equivariant", "invariant"):
            raise ConfigError(f"RCEquivariantBackbone: output must be 'equivariant' or 'invariant', got {output!r}")
        super().__init__(d_model=d_model, n_layers=0, dropout=dropout, vocab_size=vocab_size)
        self.layers = nn.ModuleList(RCResidualBlock(d_model, block(d_model // 2), dropout) for _ in range(n_layers))
        self.norm = RCNorm(d_model)
        self.output = output

    @property
    def strand_invariant(self) -> bool:
        """Whether a sequence and its reverse complement get the same features at mirrored positions
        (``output`` "invariant")."""
        return self.output == "invariant"

    def set_input(self, vocab_size: int | None = None, d_input: int | None = None, sample_rate: float | None = None) -> None:
        if vocab_size is None or d_input is not None or sample_rate is not None:
            raise ConfigError("RCEquivariantBackbone takes DNA token ids (vocab_size), not real-valued inputs")
        if vocab_size != len(DNA_COMPLEMENT):
            raise ConfigError(f"RCEquivariantBackbone takes DNA token ids (a vocabulary of {len(DNA_COMPLEMENT)}, "
                              f"seqpipe.dna_alphabet), not a vocabulary of {vocab_size}")
        self.encoder = RCEmbedding(vocab_size, self.d_model // 2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L) token ids -> features (B, L, d_model)."""
        features = super().forward(x, lengths)
        return (features + features.flip(-1)) / 2 if self.output == "invariant" else features


class MotifConv(StreamingModule):
    """A causal convolution of ``width`` positions, ``d_model`` channels in and ``channels`` out, then GELU, then
    (when ``channels`` differs from ``d_model``) a linear map back to ``d_model``: ``channels`` local motif
    detectors (CNNProm's wide first convolution: 200 of width 21) in front of the sequence model. Causal so that
    it streams: its state is the last ``width - 1`` inputs (B, width - 1, d_model).

    Args:
        d_model: channels of the input and the output.
        width: positions each detector spans.
        channels: motif detectors (default ``d_model``: no projection, the parameters of a plain conv).
    """

    def __init__(self, d_model: int, width: int, channels: int | None = None):
        super().__init__()
        if width < 1:
            raise ConfigError(f"MotifConv: width must be positive, got {width}")
        channels = d_model if channels is None else channels
        if channels < 1:
            raise ConfigError(f"MotifConv: motif_channels must be positive (or None for d_model), got {channels}")
        self.width = width
        self.conv = nn.Conv1d(d_model, channels, width)
        self.project = nn.Linear(channels, d_model) if channels != d_model else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D); position t sees positions t - width + 1 .. t (zeros before the start)."""
        return self._detect(F.pad(x.transpose(1, 2), (self.width - 1, 0)))

    def _detect(self, padded: torch.Tensor) -> torch.Tensor:
        """padded (B, D, width - 1 + T) -> (B, T, D): detectors, GELU, projection back to D."""
        return self.project(F.gelu(self.conv(padded)).transpose(1, 2))

    def initial_state(self, batch_size, device=None, dtype=torch.float32):
        return torch.zeros(batch_size, self.width - 1, self.conv.in_channels, device=device, dtype=dtype)

    def forward_chunk(self, x: torch.Tensor, state: torch.Tensor):
        """x (B, T, D), state (B, width - 1, D) -> (B, T, D), the last width - 1 inputs."""
        joined = torch.cat([state.to(x.dtype), x], dim=1)
        return self._detect(joined.transpose(1, 2)), joined[:, joined.shape[1] - (self.width - 1):]

    def step(self, x_t: torch.Tensor, state: torch.Tensor):
        """x_t (B, D), state (B, width - 1, D) -> (B, D), new state."""
        y, state = self.forward_chunk(x_t[:, None], state)
        return y[:, 0], state


class MotifBackbone(Backbone):
    """A :class:`~seqpipe.backbone.Backbone` whose first residual block is a :class:`MotifConv` of
    ``motif_width``: motif detectors before ``n_layers`` sequence blocks. It streams like the blocks do
    (causal blocks: chunked training and prediction of long records). Token or real inputs; (B, L, d_model).

    Args:
        d_model: channels of the residual stream.
        n_layers: residual blocks (as for :class:`~seqpipe.backbone.Backbone`).
        block: the sequence mixer of each block, e.g. ``seqpipe.mamba.MambaBlock``.
        dropout: dropout after each block's mixer.
        vocab_size: token ids (set from the data when unset).
        motif_width: positions each motif detector spans (CNNProm: 21 for 251 bp promoters).
        motif_channels: motif detectors (CNNProm: 200), projected back to ``d_model``; None: ``d_model``
            detectors and no projection.
    """

    def __init__(
        self,
        d_model: int = 128,
        n_layers: int = 4,
        block: BlockFactory = MambaBlock,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        motif_width: int = 15,
        motif_channels: int | None = None,
    ):
        super().__init__(d_model=d_model, n_layers=n_layers, block=block, dropout=dropout, vocab_size=vocab_size)
        self.layers.insert(0, ResidualBlock(d_model, MotifConv(d_model, motif_width, motif_channels), dropout))
