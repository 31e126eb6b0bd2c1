"""Typed config schemas (the structured config Hydra composes onto; see compose.py) and helpers that
read a composed config."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from metasd_train.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = Path(os.environ.get("METASD_CONFIG_DIR", REPO / "configs"))
RECIPE_DIR = Path(os.environ.get("METASD_RECIPE_DIR", REPO / "recipes"))
STAGES = ("data", "distill", "log_acceptance", "fit_bandit", "export")


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # packaged name | local HF dir | .gguf file | "random"
    config: dict[str, Any] = field(default_factory=dict)  # kwargs of LlamaConfig, for name=random
    tokenizer: str | None = None  # where the tokenizer comes from when name=random
    dtype: str = "auto"  # auto: fp32 on CPU, bf16 on GPU
    trust_remote_code: bool = False
    seed: int = 0  # init seed for name=random


@dataclass
class LoraConfig:
    r: int = 8  # adapter rank: higher fits the domain better, costs more memory
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class HeadDrafterConfig:
    """drafter.kind=head: one EAGLE-3 decoder layer over three target hidden states."""

    draft_vocab: int = 16384  # K most frequent tokens of the target's answers: smaller is cheaper, covers less
    # smaller K tried once the generalist has trained (FR-Spec: its LM head cut, no retraining): the
    # smallest whose validation accepted length is within draft_vocab_tolerance of K's is kept, and
    # the specialists train on it; [] keeps K
    draft_vocab_sizes: list[int] = field(default_factory=list)
    draft_vocab_tolerance: float = 0.01  # the relative loss of validation accepted length a smaller K may cost
    feature_layers: list[int] | None = None  # indices into the target's hidden_states; None: (2, L//2, L-2)
    ttt_steps: int = 5  # training-time test: draft steps unrolled in training (match the arm's γ)
    step_decay: float = 0.8  # weight of unrolled step k: step_decay ** k
    tv_weight: float = 0.0  # add (1 - TV), i.e. acceptance, to the per-step loss


@dataclass
class CompanionConfig:
    """Another drafter beside the generalist and its specialists (e.g. a truncation beside heads, or a
    pretrained black-box small model): built like drafter.kind, distilled for `steps` (0: as built)."""

    kind: str = "truncated"
    layers: int = 4  # truncated: the target's first k layers
    path: str = ""  # pretrained: a model source (packaged name, HF folder, .gguf)
    steps: int = 0  # distillation steps on the domain mix (0: use it as built)
    gamma: int = 4


@dataclass
class DrafterConfig:
    kind: str = "truncated"  # a registered kind (models/drafters.py): truncated | pretrained | fresh | head
    layers: int = 2  # truncated: keep the target's first k layers
    path: str = ""  # pretrained: local HF dir or .gguf
    config: dict[str, Any] = field(default_factory=dict)  # fresh: LlamaConfig kwargs
    freeze_embeddings: bool = True  # truncated: keep embeddings/head frozen
    specialists: str = "lora"  # lora | full | none
    lora: LoraConfig = field(default_factory=LoraConfig)
    gamma: int = 4  # tokens drafted per round: higher pays off when acceptance is high
    ngram: bool = True  # add the training-free prompt-lookup arm
    ngram_gamma: int = 4
    ngram_length: str = "fixed"  # fixed: propose all the lookup finds | cost: the length that pays (draft_length.py)
    gammas: dict[str, int] = field(default_factory=dict)  # per-arm γ by name: +drafter.gammas.code=6
    head: HeadDrafterConfig = field(default_factory=HeadDrafterConfig)  # kind=head only
    companions: dict[str, Any] = field(
        default_factory=dict
    )  # name -> CompanionConfig keys: +drafter.companions.x={...}


@dataclass
class SourceConfig:
    source: str = ""  # a registered source name (see metasd_train/data/sources.py)
    n: int = 32  # prompts taken from the source
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    domains: dict[str, SourceConfig] = field(default_factory=dict)
    # extra training examples per domain whose responses ship with the source, used as written (no
    # generation; EAGLE-1 style): the loss is still the target's distribution at every position.
    # Entries are SourceConfig-shaped ({source, n, options}), untyped so `+data.written.X={...}` works
    written: dict[str, Any] = field(default_factory=dict)
    split: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])  # train / val / held-out
    seed: int = 0
    max_prompt_tokens: int = 256
    max_new_tokens: int = 64  # length of the target's self-distillation answers
    sampled: bool = True  # also keep one T=0.7 answer per prompt
    temperature: float = 0.7
    batch_size: int = 8


@dataclass
class DistillConfig:
    loss: str = "tv"  # distill/losses.py: fkl | rkl | tv | ce (TV is what acceptance measures)
    ce_weight: float = 0.1
    lr: float = 1e-3
    lora_lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 5
    batch_size: int = 4
    # batches of similar lengths (little padding): each epoch's shuffle is sorted by length within groups
    # of this many batches, then the batches are shuffled (HF Trainer's group_by_length); 0 = plain shuffle
    length_groups: int = 50
    accumulate: int = 1
    max_steps: int = 40  # generalist steps
    specialist_steps: int = 20  # steps per domain specialist
    val_every: int = 20
    checkpoint_every: int = 50  # optimizer steps between checkpoints: lower loses less to a kill, writes more


@dataclass
class BanditConfig:
    policy: str = "ucb_elim"  # a registered policy (bandit/policies.py): ucb_elim | ucb | exp3 | hedge | linucb | ...
    reward: str = "speed"  # bandit/rewards.py: speed (tokens/s vs the target alone) | divergence | efficiency
    beta: float = 1.0  # UCB/LinUCB exploration: higher explores more
    exp3_gamma: float = 0.1
    exp3_share: float = 0.0  # EXP3.S fixed share: > 0 lets EXP3 follow a switch of the best drafter
    hedge_eta: float = 10.0  # Hedge learning rate: higher follows the current leader faster
    hedge_share: float = 0.01  # Hedge fixed share: > 0 lets Hedge follow a switch of the best drafter
    shift_threshold: float = 10.0  # ucb_elim: a drop of this many std devs brings eliminated arms back (0 = off)
    budget: int = 64  # Sequential Halving rounds per request
    context_dim: int = 16
    ridge: float = 1.0
    prior_strength: float = 1.0  # weight of the logged on-policy rounds in the warm start (0 = cold start)
    feedback: str = "bandit"  # bandit | full (score idle drafters on the committed tokens too)
    reset_per_request: bool = False  # paper mode: forget online updates between requests
    sleeping: bool = True  # choose only among arms with a proposal this round (an n-gram without a match sits out)
    fixed_arm: str = ""  # arm name for policy=fixed
    seed: int = 0


@dataclass
class DecodeConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 128
    early_stop: float = 0.0  # stop drafting when the drafter's top probability falls below this
    device: str = "auto"
    # decode.py's default: auto = bf16 on a GPU and on a CPU with bf16 matrix units (AMX), else fp32
    dtype: str = "auto"
    heldout_per_domain: int = 4  # prompts per domain in log_acceptance
    seed: int = 0
    fast: bool = True  # static KV caches, our forward (+ CUDA graphs on a GPU); false: HF's over a DynamicCache
    max_len: int = 2048  # positions in the fast path's static caches (prompt + new tokens)
    compile: str = "static"  # fast path fusion (decoding/fastmodel.py COMPILE): none|fused|static|layer|layer-autotune


@dataclass
class ExportConfig:
    dtype: str = "bf16"  # bf16 | fp16 | fp32: weights as written; decode.py casts to its device's dtype
    license: str = "apache-2.0"  # SmolLM2 is Apache-2.0; set to your target's licence


@dataclass
class RunConfig:
    recipe: str = "none"
    description: str = ""
    run_dir: str | None = None  # resume this run directory; default runs/<recipe>/<timestamp>
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    device: str = "auto"
    seed: int = 0
    target: ModelConfig = field(default_factory=ModelConfig)
    drafter: DrafterConfig = field(default_factory=DrafterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    bandit: BanditConfig = field(default_factory=BanditConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    trainer: dict[str, Any] = field(default_factory=dict)  # passed through to lightning.Trainer


def arm_gamma(drafter, name: str) -> int:
    """γ of one arm: drafter.gammas[name], else ngram_gamma for the n-gram arm, a companion's own γ,
    else drafter.gamma."""
    default = drafter.ngram_gamma if name == "ngram" else drafter.gamma
    if name in drafter.companions:
        default = companion(drafter, name).gamma
    return int(drafter.gammas.get(name, default))


def ngram_spec(drafter) -> dict | None:
    """The n-gram arm as the manifest and build_arms take it ({"gamma", "length"}), None without one."""
    return {"gamma": arm_gamma(drafter, "ngram"), "length": drafter.ngram_length} if drafter.ngram else None


def companion(drafter, name: str) -> CompanionConfig:
    """drafter.companions[name] over CompanionConfig's defaults; one error line for a bad key or value."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(OmegaConf.structured(CompanionConfig), drafter.companions[name])
    except OmegaConfBaseException as e:
        raise UserError(f"drafter.companions.{name}: {str(e).splitlines()[0]}") from None


def companion_drafter(drafter, name: str):
    """The drafter config a companion is built with: drafter.* with the companion's kind/layers/path."""
    c = companion(drafter, name)
    return OmegaConf.merge(drafter, {"kind": c.kind, "layers": c.layers, "path": c.path, "specialists": "none"})
