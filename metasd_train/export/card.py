"""Model card (README.md with a YAML header) for an exported drafter."""

from __future__ import annotations


def model_card(
    name: str, target: str, recipe: str, license: str, domains: dict, acceptance: dict, tau: dict, kind: str
) -> str:
    tags = ["speculative-decoding", "draft-model", "metasd", "distillation"] + (["lora"] if kind == "lora" else [])
    header = "\n".join(
        [
            "---",
            f"base_model: {target}",
            "library_name: transformers",
            f"license: {license}",
            "pipeline_tag: text-generation",
            "tags:",
        ]
        + [f"  - {t}" for t in tags]
        + ["---", ""]
    )
    rows = "\n".join(
        f"| {d} | {acceptance.get(d, {}).get('acceptance', float('nan')):.3f} | {acceptance.get(d, {}).get('top1', float('nan')):.3f} | "
        f"{tau.get(d, float('nan')):.2f} |"
        for d in sorted(set(acceptance) | set(tau))
    )
    sources = ", ".join(f"{d} ({s['source']}, {s['n']} prompts)" for d, s in domains.items())
    return f"""{header}
# {name}: a draft model for `{target}`

A drafter for speculative decoding, distilled against `{target}` by metasd-train (recipe `{recipe}`).
Kind: {kind}. It shares the target's tokenizer; use it with `generate(assistant_model=...)`, vLLM's
draft model, or metasd-train's `decode.py`, which picks among several such drafters per round.

## Training data
The target's own answers (self-distillation) to prompts from: {sources}.
No MT-bench or Spec-Bench prompt was used for training.

## Acceptance against the target
Validation expected acceptance (mean 1 − TV at T = 1) and top-1 agreement from distillation, and
τ (mean tokens per round, greedy, γ from the recipe) on held-out prompts.

| domain | expected acceptance | top-1 agreement | τ held-out |
|---|---|---|---|
{rows}
"""
