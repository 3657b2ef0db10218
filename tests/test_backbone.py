"""MambaBlock and Backbone: the streaming invariant, initialisation, weight-decay marks, padding."""

from __future__ import annotations

import math

import pytest
import torch

from seqpipe.backbone import Backbone
from seqpipe.mamba import MambaBlock
from streaming_checks import assert_streaming_invariant


def block_factories():
    from seqpipe.mamba2 import Mamba2Block
    from seqpipe.s4 import S4Block

    return {
        "mamba": lambda d: MambaBlock(d, d_state=8, scan_backend="ref"),
        "mamba2": lambda d: Mamba2Block(d, d_state=8, head_dim=8, chunk_size=8),
        "s4": lambda d: S4Block(d, d_state=8),
    }


@pytest.mark.parametrize("split_points", [[5], [1, 2, 17], [10, 11]])
def test_mamba_block_forward_equals_chunks_and_steps(split_points):
    torch.manual_seed(0)
    block = MambaBlock(12, d_state=6, scan_backend="ref").double()
    assert_streaming_invariant(block, torch.randn(2, 23, 12, dtype=torch.float64), split_points)


@pytest.mark.parametrize("kind", sorted(block_factories()))
def test_backbone_on_tokens_forward_equals_chunks_and_steps(kind):
    torch.manual_seed(1)
    backbone = Backbone(d_model=16, n_layers=2, block=block_factories()[kind], vocab_size=6).double()
    tokens = torch.randint(1, 6, (3, 19))
    assert_streaming_invariant(backbone, tokens, [4, 13])


def test_backbone_on_real_inputs_forward_equals_chunks_and_steps():
    torch.manual_seed(2)
    backbone = Backbone(d_model=16, n_layers=2, block=block_factories()["mamba"], d_input=3).double()
    assert_streaming_invariant(backbone, torch.randn(2, 15, 3, dtype=torch.float64), [7])


def test_right_padding_does_not_change_valid_positions():
    torch.manual_seed(3)
    backbone = Backbone(d_model=16, n_layers=2, block=block_factories()["mamba"], vocab_size=6).double().eval()
    tokens = torch.randint(1, 6, (1, 12))
    padded = torch.cat([tokens, torch.zeros(1, 8, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(backbone(padded, torch.tensor([12]))[:, :12], backbone(tokens), rtol=0, atol=1e-12)


def test_mamba_initialisation_follows_the_paper():
    torch.manual_seed(4)
    block = MambaBlock(64, d_state=16, dt_min=1e-3, dt_max=1e-1)
    assert block.d_inner == 128 and block.dt_rank == math.ceil(64 / 16)
    torch.testing.assert_close(block.A_log.exp(), torch.arange(1, 17.0).expand(128, 16))
    torch.testing.assert_close(block.D, torch.ones(128))
    dt = torch.nn.functional.softplus(block.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    for param in (block.A_log, block.D, block.dt_bias):
        assert getattr(param, "_no_weight_decay", False)
    assert not getattr(block.in_proj.weight, "_no_weight_decay", False)


def test_backbone_without_input_layer_says_how_to_fix_it():
    backbone = Backbone(d_model=8, n_layers=1, block=block_factories()["mamba"])
    with pytest.raises(RuntimeError, match="vocab_size or d_input"):
        backbone(torch.randint(0, 5, (1, 4)))
    with pytest.raises(ValueError, match="exactly one"):
        backbone.set_input(vocab_size=5, d_input=3)


def test_a_block_instance_instead_of_its_class_is_one_error():
    from seqpipe.errors import ConfigError
    from seqpipe.s4 import S4Block

    with pytest.raises(ConfigError, match="give its class or a functools.partial of it, not a S4Block instance"):
        Backbone(d_model=16, n_layers=2, block=S4Block(16))
