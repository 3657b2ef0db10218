"""seqpipe: long-sequence learning with S4 and Mamba state space models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seqpipe")  # pyproject.toml's, as installed
except PackageNotFoundError:  # imported from a source tree that was not installed
    __version__ = "unknown"
