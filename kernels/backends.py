"""The one choice of backend for every kernel op: which implementation runs on a given input.

Every op (``selective_scan``, ``ssd_scan``, ``selective_state_update``, ``vandermonde``, the S4-DPLR Cauchy
kernel) names its backends among "ref" (pure-PyTorch reference), "chunked" (the PyTorch fast path for CPU),
"triton" (fused kernels: CUDA tensors, or CPU under ``TRITON_INTERPRET=1``) and "auto", and calls
:func:`resolve_backend`. "auto" is "triton" for CUDA tensors when the triton package imports, the op's CPU
path otherwise; asking for "triton" where it cannot run is one error naming the op and its input, never a
silent fallback. Triton kernels are imported lazily by each op, so ``import seqpipe.kernels`` works
without triton (e.g. on macOS).
"""

from __future__ import annotations

import os

import torch

BACKENDS = ("ref", "chunked", "triton", "auto")


def triton_importable() -> bool:
    """Whether the triton package is installed and imports."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_runs_on(tensor: torch.Tensor) -> bool:
    """Whether Triton kernels can take ``tensor``: a CUDA tensor, or any tensor under TRITON_INTERPRET=1."""
    return tensor.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(
    backend: str, tensor: torch.Tensor, op: str, name: str, choices: tuple[str, ...] = BACKENDS,
    cpu_backend: str = "chunked",
) -> str:
    """Map ``backend`` (one of ``choices``) to the implementation that will run ``op`` on its input ``tensor``,
    called ``name`` in ``op``'s signature (both only for the messages).

    "auto" is "triton" for CUDA tensors when triton imports, ``cpu_backend`` otherwise.
    """
    if backend not in choices:
        raise ValueError(f"{op}: backend must be one of {choices}, got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.is_cuda and triton_importable() else cpu_backend
    if backend == "triton":
        if not triton_runs_on(tensor):
            raise ValueError(
                f"{op}: backend='triton' needs CUDA tensors ({name} is on {tensor.device}); on CPU use "
                f"backend={cpu_backend!r}, or set TRITON_INTERPRET=1 before importing triton to run the kernels "
                "interpreted"
            )
        if not triton_importable():
            raise ValueError(f"{op}: backend='triton' needs the triton package, which does not import here; "
                             f"use backend={cpu_backend!r}")
    return backend
