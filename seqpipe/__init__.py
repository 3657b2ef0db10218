"""seqpipe: long-sequence learning with S4 and Mamba state space models."""

from importlib.metadata import version

__version__ = version("seqpipe")  # pyproject.toml's, as installed
