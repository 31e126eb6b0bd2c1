"""Draft-head folders: `model.safetensors` + `config.json` in SpecForge/SGLang's EAGLE-3 layout.

The one home of the format: `save_head` writes it, `load_head` reads and validates it. LoRA heads
(peft wrappers) are merged into a copy at save time, so every head folder is a plain full head that
SGLang's `LlamaForCausalLMEagle3` can load; heads are one layer, so a merged copy costs little.

Feature layers: ours index HF's `hidden_states` tuple (0 = embeddings, i = output of decoder layer
i); SGLang's `eagle_aux_hidden_state_layer_ids` name 0-based decoder layers whose output is taken,
so `layer_id = feature_layer - 1`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metasd_train.atomic import atomic_dir
from metasd_train.errors import UserError
from metasd_train.models.head import DraftHead, HeadConfig

WEIGHTS, CONFIG = "model.safetensors", "config.json"
ARCHITECTURE = "LlamaForCausalLMEagle3"


def expected_shapes(c: HeadConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a head folder and its shape."""
    d, i, hd = c.hidden_size, c.intermediate_size, c.head_dim
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    shapes = {
        "fc.weight": (d, 3 * d),
        "midlayer.input_layernorm.weight": (d,),
        "midlayer.hidden_norm.weight": (d,),
        "midlayer.self_attn.q_proj.weight": (q, 2 * d),
        "midlayer.self_attn.k_proj.weight": (kv, 2 * d),
        "midlayer.self_attn.v_proj.weight": (kv, 2 * d),
        "midlayer.self_attn.o_proj.weight": (d, q),
        "midlayer.post_attention_layernorm.weight": (d,),
        "midlayer.mlp.gate_proj.weight": (i, d),
        "midlayer.mlp.up_proj.weight": (i, d),
        "midlayer.mlp.down_proj.weight": (d, i),
        "norm.weight": (d,),
        "lm_head.weight": (c.draft_vocab_size, d),
        "d2t": (c.draft_vocab_size,),
        "t2d": (c.vocab_size,),
    }
    if c.attention_bias:
        shapes.update({f"midlayer.self_attn.{p}_proj.bias": (n,) for p, n in (("q", q), ("k", kv), ("v", kv))})
    return shapes


def config_json(c: HeadConfig, dtype: torch.dtype) -> dict:
    """SpecForge/SGLang's draft config.json for a head."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "num_hidden_layers": 1,
        "hidden_act": c.hidden_act,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": None,
        "attention_bias": c.attention_bias,
        "max_position_embeddings": c.max_position_embeddings,
        "vocab_size": c.vocab_size,
        "draft_vocab_size": c.draft_vocab_size,
        "tie_word_embeddings": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "eagle_config": {
            "eagle_aux_hidden_state_layer_ids": [i - 1 for i in c.feature_layers],
            "use_aux_hidden_state": True,
        },
    }


def config_from_json(raw: dict) -> HeadConfig:
    """The HeadConfig of a head folder's config.json (KeyError/TypeError on a malformed one)."""
    fields = (
        "hidden_size intermediate_size num_attention_heads num_key_value_heads head_dim rms_norm_eps rope_theta "
        "hidden_act vocab_size draft_vocab_size max_position_embeddings"
    ).split()
    layers = tuple(i + 1 for i in raw["eagle_config"]["eagle_aux_hidden_state_layer_ids"])
    return HeadConfig(
        **{k: raw[k] for k in fields}, attention_bias=bool(raw.get("attention_bias", False)), feature_layers=layers
    )


def save_head(head, folder) -> Path:
    """Write `head` (a DraftHead or a peft wrapper of one, merged here) to `folder`, atomically."""
    head = _merged(head)
    state = {k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()}
    _check(state, expected_shapes(head.config), Path(folder) / WEIGHTS)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        text = json.dumps(config_json(head.config, head.fc.weight.dtype), indent=2)
        (tmp / CONFIG).write_text(text + "\n")
    return folder


def _merged(head) -> DraftHead:
    if hasattr(head, "merge_and_unload"):  # a peft wrapper: fold the adapters into a copy
        head = copy.deepcopy(head).merge_and_unload()
    if not isinstance(head, DraftHead):
        raise UserError(f"save_head needs a DraftHead (or a peft wrapper of one), got {type(head).__name__}")
    return head


def load_head(folder, device="cpu", dtype: torch.dtype | None = None) -> DraftHead:
    """Read and validate a head folder written by `save_head` (or SpecForge, same layout)."""
    folder = Path(folder)
    config = _read_config(folder / CONFIG)
    path = folder / WEIGHTS
    if not path.is_file():
        raise UserError(f"{path} is missing; save the head again")
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is truncated or corrupt ({e}); save the head again") from None
    _check(state, expected_shapes(config), path)
    state["d2t"], state["t2d"] = state["d2t"].long(), state["t2d"].bool()  # another writer's int types
    with torch.device("meta"):  # no random init to overwrite: the file's tensors become the head's
        head = DraftHead(config)
    head.load_state_dict(state, assign=True)
    return head.to(dtype=dtype or state["fc.weight"].dtype).eval()


def _read_config(path: Path) -> HeadConfig:
    try:
        raw = json.loads(path.read_text())
        if raw.get("architectures") != [ARCHITECTURE]:
            raise UserError(f"{path}: architectures={raw.get('architectures')}, expected [{ARCHITECTURE!r}]")
        return config_from_json(raw)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; save the head again") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a draft-head config ({type(e).__name__}: {e})") from None


def _check(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {shapes[k]}" for k in shapes if k in state and state[k].shape != shapes[k]
    ]
    problems = [f"missing {missing}"] * bool(missing) + [f"unexpected {unexpected}"] * bool(unexpected) + wrong
    if problems:
        raise UserError(f"{path}: draft-head tensors do not match its config: {'; '.join(problems)}")
