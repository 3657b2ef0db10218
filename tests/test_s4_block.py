"""S4Block: conv mode = chunks = steps for every configuration; padding; bidirectional; gradients; marks."""

from __future__ import annotations

import pytest
import torch

from seqpipe.errors import ConfigError
from seqpipe.s4 import S4Block
from streaming_checks import assert_streaming_invariant, run_chunks, run_steps

CONFIGS = [
    dict(mode="diag", init=init, disc=disc) for init in ("legs", "lin", "inv") for disc in ("zoh", "bilinear")
] + [dict(mode="dplr", init="legs", disc=disc) for disc in ("zoh", "bilinear")]


def config_id(config: dict) -> str:
    return "-".join(config.values())


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_conv_mode_equals_chunks_and_steps_in_float32(config):
    torch.manual_seed(0)
    block = S4Block(16, d_state=8, dt_min=1e-2, dt_max=2e-1, **config).eval()
    x = torch.randn(2, 57, 16)
    with torch.no_grad():
        full = block(x)
        # states in x's precision (float32), as a float32 model streams
        chunked = run_chunks(block, x, sorted(torch.randperm(56)[:4].add(1).tolist()), state_dtype=x.dtype)
        stepped = run_steps(block, x, state_dtype=x.dtype)
    scale = full.abs().max()
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(stepped, full, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[-1]], ids=config_id)
def test_conv_mode_equals_chunks_and_steps_in_float64(config):
    torch.manual_seed(1)
    block = S4Block(8, d_state=6, **config).double()
    assert_streaming_invariant(block, torch.randn(2, 31, 8, dtype=torch.float64), [1, 2, 20])


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[-1]], ids=config_id)
def test_chunks_under_bf16_autocast_match_the_float32_stream(config):
    """bf16-mixed training streams chunks under autocast (genome pre-training): the state stays in float32."""
    torch.manual_seed(4)
    block = S4Block(16, d_state=8, **config).eval()
    x = torch.randn(2, 40, 16)
    with torch.no_grad():
        exact = run_chunks(block, x, [13, 27], state_dtype=x.dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = run_chunks(block, x, [13, 27], state_dtype=x.dtype)
    torch.testing.assert_close(mixed.float(), exact, rtol=0, atol=2e-2 * exact.abs().max())


@pytest.mark.parametrize("mode", ["diag", "dplr"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_right_padding_never_reaches_valid_positions(bidirectional, mode):
    torch.manual_seed(2)
    block = S4Block(8, d_state=8, mode=mode, disc="bilinear", bidirectional=bidirectional).double().eval()
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    lengths = torch.tensor([20, 13])
    padded = x.clone()
    padded[1, 13:] = torch.randn(7, 8, dtype=torch.float64) * 100  # garbage that must not leak
    with torch.no_grad():
        y = block(padded, lengths)
        alone = block(x[1:, :13])
    torch.testing.assert_close(y[1, :13], alone[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(y[0], block(x[:1])[0], rtol=0, atol=1e-10)


def test_bidirectional_block_sees_the_future_and_refuses_to_stream():
    torch.manual_seed(3)
    block = S4Block(8, d_state=8, bidirectional=True).double().eval()
    x = torch.randn(1, 16, 8, dtype=torch.float64)
    changed = x.clone()
    changed[0, -1] += 1.0
    with torch.no_grad():
        assert (block(x)[0, 0] - block(changed)[0, 0]).abs().max() > 1e-8
    state = block.initial_state(1)
    with pytest.raises(ConfigError, match="S4Block reads each window in both directions"):
        block.forward_chunk(x, state)
    with pytest.raises(ConfigError, match="S4Block reads each window in both directions"):
        block.step(x[:, 0], state)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[3], CONFIGS[-2], CONFIGS[-1]], ids=config_id)
def test_gradients_are_finite_and_reach_every_parameter(config):
    torch.manual_seed(4)
    block = S4Block(8, d_state=8, bidirectional=True, dropout=0.1, **config)
    y = block(torch.randn(2, 300, 8), torch.tensor([300, 150]))
    (y * torch.randn_like(y)).sum().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mode", ["diag", "dplr"])
def test_state_parameters_are_kept_out_of_weight_decay_and_A_stays_stable(mode):
    block = S4Block(8, d_state=8, mode=mode)
    marked = {name for name, p in block.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert marked == {"log_dt", "A_log_neg_real", "A_imag", "B", "D"} | ({"P"} if mode == "dplr" else set())
    with torch.no_grad():
        block.A_log_neg_real.fill_(30.0)  # whatever the optimiser does, Re A = -exp(.) < 0
    assert torch.isfinite(block(torch.randn(1, 64, 8))).all()


def test_bad_arguments_say_what_to_fix():
    with pytest.raises(ValueError, match="d_state"):
        S4Block(8, d_state=7)
    with pytest.raises(ValueError, match="init"):
        S4Block(8, init="fourier")
    with pytest.raises(ValueError, match="disc"):
        S4Block(8, disc="euler")
    with pytest.raises(ValueError, match="init='legs'"):
        S4Block(8, mode="dplr", init="lin")
