"""Pure tensor operations behind the seqpipe blocks.

Each op has a float64-checkable reference twin (``*_ref``), fast paths, and one dispatcher.
Nothing here imports Lightning or anything above this layer.
"""

from seqpipe.kernels.causal_conv import causal_conv1d, causal_conv1d_step
from seqpipe.kernels.selective_scan import selective_scan, selective_scan_ref

__all__ = ["causal_conv1d", "causal_conv1d_step", "selective_scan", "selective_scan_ref"]
