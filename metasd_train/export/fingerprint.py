"""A target fingerprint that survives dtype and device changes, so a mismatched target is refused."""

from __future__ import annotations

import hashlib
import json

import torch


def fingerprint(model) -> str:
    """sha256 of the architecture and a bf16 rounding of the embedding's first rows and the final norm."""
    cfg = model.config
    arch = {
        k: getattr(cfg, k, None)
        for k in (
            "model_type",
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
        )
    }
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    emb = model.get_input_embeddings().weight[:64].detach()
    norm = [p for n, p in model.named_parameters() if n.endswith("norm.weight")][-1].detach()
    for t in (emb, norm):
        h.update(t.to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]
