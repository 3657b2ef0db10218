"""Data modules, readers and tokenizers."""
