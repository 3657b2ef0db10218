"""Mamba2Block: the streaming invariant on every CPU backend, configuration errors, initialisation,
weight-decay marks, and a bf16-mixed training step."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from seqpipe.backbone import Backbone
from seqpipe.errors import ConfigError
from seqpipe.mamba2 import Mamba2Block
from seqpipe.model import SequenceModel
from seqpipe.tasks.classification import SequenceClassification
from streaming_checks import assert_streaming_invariant
from test_model import RandomTokens
from triton_params import triton_marks

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("backend", ["ref", "chunked"])
@pytest.mark.parametrize("split_points", [[5], [1, 2, 17], [10, 11]])
def test_forward_equals_chunks_and_steps(backend, split_points):
    torch.manual_seed(0)
    block = Mamba2Block(12, d_state=6, head_dim=6, n_groups=2, chunk_size=8, scan_backend=backend).double()
    assert_streaming_invariant(block, torch.randn(2, 23, 12, dtype=torch.float64), split_points)


def test_chunked_backend_equals_the_reference_with_gradients():
    torch.manual_seed(1)
    block = Mamba2Block(8, d_state=4, head_dim=4, chunk_size=4).double()
    x = torch.randn(2, 19, 8, dtype=torch.float64)
    outputs, grads = [], []
    for backend in ("ref", "chunked"):
        block.scan_backend = backend
        block.zero_grad()
        y = block(x)
        (y * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        outputs.append(y)
        grads.append([p.grad.clone() for p in block.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-12)
    for chunked, ref in zip(*grads):
        # A, D and the Δ bias enter the scan as float32, as in MambaBlock: their gradients carry its rounding
        torch.testing.assert_close(chunked, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device", [pytest.param(DEVICE, marks=triton_marks(DEVICE))])
def test_triton_backend_runs_any_chunk_size_and_equals_chunked(device):
    """A block configured with a chunk the Triton kernels cannot tile (8) runs on them all the same."""
    torch.manual_seed(4)
    block = Mamba2Block(8, d_state=4, head_dim=4, chunk_size=8, scan_backend="chunked").double().to(device)
    x = torch.randn(2, 21, 8, dtype=torch.float64, device=device)
    expected = block(x)
    block.scan_backend = "triton"
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)


def test_configuration_errors_say_what_to_change():
    with pytest.raises(ConfigError, match="head_dim"):
        Mamba2Block(12, head_dim=5)
    with pytest.raises(ConfigError, match="n_groups=3"):
        Mamba2Block(16, head_dim=8, n_groups=3)


def test_initialisation_and_weight_decay_marks():
    torch.manual_seed(2)
    block = Mamba2Block(64, d_state=16, head_dim=32, dt_min=1e-3, dt_max=1e-1)
    assert block.n_heads == 4 and block.conv_dim == 128 + 2 * 16
    assert block.in_proj.out_features == 2 * 128 + 2 * 16 + 4
    A = block.A_log.exp()
    assert A.min() >= 1 and A.max() <= 16
    dt = torch.nn.functional.softplus(block.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    for param in (block.A_log, block.D, block.dt_bias):
        assert getattr(param, "_no_weight_decay", False)
    assert not getattr(block.in_proj.weight, "_no_weight_decay", False)


def test_trains_under_bf16_mixed_precision(tmp_path):
    torch.manual_seed(3)
    backbone = Backbone(d_model=16, n_layers=2, block=lambda d: Mamba2Block(d, d_state=8, head_dim=8, chunk_size=8))
    model = SequenceModel(backbone, SequenceClassification())
    trainer = L.Trainer(default_root_dir=tmp_path, precision="bf16-mixed", max_steps=3, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    seen = []
    block = model.backbone.layers[0].mixer
    block.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    trainer.fit(model, RandomTokens())
    assert torch.bfloat16 in seen  # the block ran under autocast
    assert torch.isfinite(torch.as_tensor(trainer.callback_metrics["train/loss"])).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
