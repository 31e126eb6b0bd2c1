"""Load targets and drafters; check that their tokenizers agree."""

from metasd_train.models.loading import (
    PACKAGED,
    LoadedModel,
    decode_dtype,
    load_model,
    load_tokenizer,
    pick_device,
    pick_dtype,
    resolve_source,
)
from metasd_train.models.random_init import random_lm
from metasd_train.models.tokenizers import check_tokenizers

__all__ = [
    "PACKAGED",
    "LoadedModel",
    "check_tokenizers",
    "decode_dtype",
    "load_model",
    "load_tokenizer",
    "pick_device",
    "pick_dtype",
    "random_lm",
    "resolve_source",
]
