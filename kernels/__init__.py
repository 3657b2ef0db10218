"""Pure tensor operations behind the seqpipe blocks.

The scans and convolutions have a float64-checkable reference twin (``*_ref``), fast paths, and one dispatcher
(the depthwise causal convolution, one PyTorch call, is its own reference).
Nothing here imports Lightning or anything above this layer.
"""

from seqpipe.kernels.causal_conv import causal_conv1d, causal_conv1d_step
from seqpipe.kernels.fftconv import fft_conv, fft_conv_ref
from seqpipe.kernels.s4d import vandermonde, vandermonde_ref
from seqpipe.kernels.selective_scan import selective_scan, selective_scan_ref
from seqpipe.kernels.selective_state_update import selective_state_update, selective_state_update_ref
from seqpipe.kernels.ssd import ssd_scan, ssd_scan_ref

__all__ = [
    "causal_conv1d", "causal_conv1d_step", "fft_conv", "fft_conv_ref", "vandermonde", "vandermonde_ref",
    "selective_scan", "selective_scan_ref", "selective_state_update", "selective_state_update_ref",
    "ssd_scan", "ssd_scan_ref",
]
