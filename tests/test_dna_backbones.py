"""DNA backbones: exact reverse-complement equivariance, bidirectional = a direct two-pass reference, strand
averaging, and a clear error when asked to stream."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from seqpipe.dna_alphabet import reverse_complement_ids, reverse_valid
from seqpipe.backbone import Backbone, position_reading_ahead
from seqpipe.contracts import TokenInput
from seqpipe.dna_backbones import BidirectionalBackbone, MotifBackbone, RCEquivariantBackbone
from seqpipe.errors import ConfigError


def block_factory(kind: str):
    if kind == "mamba":
        from seqpipe.mamba import MambaBlock

        return partial(MambaBlock, d_state=4)
    if kind == "mamba2":
        from seqpipe.mamba2 import Mamba2Block

        return partial(Mamba2Block, d_state=4, head_dim=4, chunk_size=8)
    from seqpipe.s4 import S4Block

    return partial(S4Block, d_state=8)


BLOCKS = ["mamba", "mamba2", "s4"]


def tokens(seed: int, batch: int = 3, length: int = 40) -> torch.Tensor:
    return torch.randint(1, 6, (batch, length), generator=torch.Generator().manual_seed(seed))


def padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    for row, n in enumerate(lengths.tolist()):
        x[row, n:] = 0
    return x


@pytest.mark.parametrize("kind", BLOCKS)
def test_the_reading_ahead_probe_passes_causal_backbones_and_finds_the_two_way_ones(kind):
    """What refuses next-base targets on a backbone that would see them (SequenceModel at fit)."""
    torch.manual_seed(0)
    causal = [Backbone(16, 2, block_factory(kind), vocab_size=6), MotifBackbone(16, 1, block_factory(kind), vocab_size=6)]
    two_way = [BidirectionalBackbone(16, 2, block_factory(kind), vocab_size=6),
               RCEquivariantBackbone(16, 2, block_factory(kind), vocab_size=6)]
    assert [position_reading_ahead(backbone, TokenInput(6)) for backbone in causal] == [None, None]
    for backbone in two_way:
        position = position_reading_ahead(backbone, TokenInput(6))
        assert position is not None and 0 <= position < 63 and backbone.training  # its mode put back


@pytest.mark.parametrize("kind", BLOCKS)
def test_rc_equivariance_is_exact(kind):
    torch.manual_seed(0)
    model = RCEquivariantBackbone(16, 2, block_factory(kind), vocab_size=6).double().eval()
    x = tokens(1)
    with torch.no_grad():
        features = model(x)
        features_rc = model(reverse_complement_ids(x, None))
    assert features.abs().max() > 0.1
    torch.testing.assert_close(features_rc, features.flip(1).flip(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", BLOCKS)
def test_rc_equivariance_with_right_padding(kind):
    torch.manual_seed(1)
    model = RCEquivariantBackbone(16, 2, block_factory(kind), vocab_size=6).double().eval()
    lengths = torch.tensor([40, 29, 12])
    x = padded(tokens(2), lengths)
    with torch.no_grad():
        features = model(x, lengths)
        features_rc = model(reverse_complement_ids(x, lengths), lengths)
    expected = reverse_valid(features, lengths).flip(-1)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(features_rc[row, :n], expected[row, :n], rtol=0, atol=1e-12)


def test_rc_invariant_output_is_the_same_on_both_strands():
    torch.manual_seed(2)
    model = RCEquivariantBackbone(16, 2, block_factory("s4"), vocab_size=6, output="invariant").double().eval()
    x = tokens(3)
    with torch.no_grad():
        torch.testing.assert_close(model(reverse_complement_ids(x, None)), model(x).flip(1), rtol=0, atol=1e-12)


def test_rc_backbone_shares_parameters_between_strands():
    plain = sum(p.numel() for p in block_factory("s4")(8).parameters())
    model = RCEquivariantBackbone(16, 1, block_factory("s4"), vocab_size=6)
    mixer = sum(p.numel() for p in model.layers[0].mixer.parameters())
    assert mixer == plain  # one half-width block serves both strands
    with pytest.raises(ConfigError, match="takes DNA token ids .* not a vocabulary of 25"):
        RCEquivariantBackbone(16, 1, block_factory("s4"), vocab_size=25)


@pytest.mark.parametrize("kind", BLOCKS)
def test_bidirectional_equals_a_direct_two_pass_reference(kind):
    torch.manual_seed(3)
    model = BidirectionalBackbone(12, 2, block_factory(kind), vocab_size=6).double().eval()
    x = tokens(4)
    with torch.no_grad():
        h = model.encoder(x)
        for layer in model.layers:
            normed = layer.norm(h)
            mixer = layer.mixer
            h = h + mixer.forward_mixer(normed) + mixer.backward_mixer(normed.flip(1)).flip(1)
        reference = model.norm(h)
        torch.testing.assert_close(model(x), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", BLOCKS)
def test_bidirectional_padded_rows_equal_unpadded_ones(kind):
    torch.manual_seed(4)
    model = BidirectionalBackbone(12, 2, block_factory(kind), vocab_size=6).double().eval()
    lengths = torch.tensor([40, 23, 9])
    x = padded(tokens(5), lengths)
    with torch.no_grad():
        batch = model(x, lengths)
        for row, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(batch[row, :n], model(x[row:row + 1, :n])[0], rtol=0, atol=1e-10)


def test_strand_average_makes_the_output_strand_symmetric():
    torch.manual_seed(5)
    model = BidirectionalBackbone(12, 1, block_factory("s4"), vocab_size=6, strand_average=True).double().eval()
    x = tokens(6)
    with torch.no_grad():
        averaged = model(x)
        torch.testing.assert_close(model(reverse_complement_ids(x, None)), averaged.flip(1), rtol=0, atol=1e-12)
        model.train()
        assert not torch.allclose(model(x), averaged)  # training sees one strand only


@pytest.mark.parametrize("backbone", [BidirectionalBackbone, RCEquivariantBackbone])
def test_whole_window_backbones_refuse_to_stream(backbone):
    model = backbone(8, 1, block_factory("s4"), vocab_size=6)
    with pytest.raises(ConfigError, match="predict_overlap"):
        model.initial_state(1)
    with pytest.raises(ConfigError, match="cannot stream"):
        model.forward_chunk(tokens(0, 1, 8), None)


def test_rc_backbone_needs_an_even_width_and_tokens():
    with pytest.raises(ConfigError, match="even"):
        RCEquivariantBackbone(15, 1, block_factory("s4"))
    with pytest.raises(ConfigError, match="token"):
        RCEquivariantBackbone(16, 1, block_factory("s4"), vocab_size=None).set_input(d_input=3)


@pytest.mark.parametrize("motif_channels", [None, 12])
def test_motif_backbone_streams_like_its_whole_sequence_forward(motif_channels):
    from streaming_checks import assert_streaming_invariant

    from seqpipe.dna_backbones import MotifBackbone
    from seqpipe.mamba import MambaBlock

    torch.manual_seed(0)
    backbone = MotifBackbone(d_model=8, n_layers=1, block=partial(MambaBlock, d_state=4), vocab_size=6, motif_width=5,
                             motif_channels=motif_channels).double()
    x = torch.randint(1, 6, (2, 23))
    assert_streaming_invariant(backbone, x, split_points=[2, 3, 11])
    assert type(backbone.layers[0].mixer).__name__ == "MotifConv" and len(backbone.layers) == 2


def motif_conv_reference(conv, x: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) -> (B, L, D), position by position: project(gelu(sum_k W[:, :, k] x[t - width + 1 + k] + b)),
    inputs before the start taken as zero."""
    weight, bias = conv.conv.weight, conv.conv.bias  # (C, D, width), (C,)
    width = weight.shape[-1]
    padded = torch.cat([x.new_zeros(x.shape[0], width - 1, x.shape[2]), x], dim=1)
    detected = torch.stack([torch.einsum("cdk,bkd->bc", weight, padded[:, t:t + width]) + bias
                            for t in range(x.shape[1])], dim=1)
    activated = 0.5 * detected * (1 + torch.erf(detected / 2**0.5))
    return activated @ conv.project.weight.T + conv.project.bias


def test_wide_motif_conv_equals_a_position_by_position_reference_and_streams():
    from streaming_checks import assert_streaming_invariant

    from seqpipe.dna_backbones import MotifConv

    torch.manual_seed(0)
    conv = MotifConv(d_model=6, width=4, channels=10).double()
    assert conv.conv.out_channels == 10 and conv.project.weight.shape == (6, 10)
    x = torch.randn(3, 17, 6, dtype=torch.float64)
    torch.testing.assert_close(conv(x), motif_conv_reference(conv, x))
    assert_streaming_invariant(conv, x, split_points=[1, 2, 9])


def test_default_motif_conv_keeps_its_parameters_and_rejects_bad_channels():
    from seqpipe.dna_backbones import MotifBackbone, MotifConv

    # None (or d_model) detectors: the parameters of a plain conv, so checkpoints saved before motif_channels load
    assert sorted(MotifConv(d_model=6, width=4).state_dict()) == ["conv.bias", "conv.weight"]
    assert sorted(MotifConv(d_model=6, width=4, channels=6).state_dict()) == ["conv.bias", "conv.weight"]
    with pytest.raises(ConfigError, match="motif_channels must be positive.*got 0"):
        MotifBackbone(d_model=8, n_layers=1, vocab_size=6, motif_channels=0)
