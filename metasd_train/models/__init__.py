"""Load targets and drafters; check that their tokenizers agree."""

from metasd_train.models.loading import LoadedModel, load_model, load_tokenizer, pick_device, pick_dtype, resolve_source
from metasd_train.models.tokenizers import check_tokenizers

__all__ = [
    "LoadedModel",
    "check_tokenizers",
    "load_model",
    "load_tokenizer",
    "pick_device",
    "pick_dtype",
    "resolve_source",
]
