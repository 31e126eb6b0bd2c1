"""metasd-train: trainable multi-drafter speculative decoding (MetaSD) for PyTorch."""

__version__ = "0.1.0"
