"""seqpipe: long-sequence learning with S4 and Mamba state space models."""

__version__ = "0.1.0"
