"""Which stage each setting feeds: a finished stage's settings cannot change under its outputs."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from metasd_train.config import STAGES, RunConfig

# The settings each stage's outputs are built from, as dotted key prefixes; the longest prefix that
# matches a key decides. A stage builds on the outputs of every stage before it, so once a stage is
# done, the settings of it and of all earlier stages are fixed. None: settings that change how a
# run executes, not what it makes (devices, checkpoint cadence, the stage list itself).
STAGE_OF_SETTING: dict[str, str | None] = {
    "seed": "data",
    "target": "data",
    "data": "data",
    "decode.heldout_per_domain": "data",
    "drafter": "distill",
    "distill": "distill",
    "trainer.precision": "distill",
    "drafter.gamma": "log_acceptance",
    "drafter.gammas": "log_acceptance",
    "drafter.ngram": "log_acceptance",
    "drafter.ngram_gamma": "log_acceptance",
    "drafter.ngram_length": "log_acceptance",
    "decode": "log_acceptance",
    "bandit": "fit_bandit",
    "export": "export",
    "recipe": None,
    "description": None,
    "run_dir": None,
    "stages": None,
    "device": None,
    "trainer": None,
    "decode.device": None,
    "decode.fast": None,
    "decode.compile": None,
    "distill.checkpoint_every": None,
}


def stage_of_setting(key: str) -> str | None:
    """The first stage whose outputs depend on `key` (keys of no known section: the data stage)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in STAGE_OF_SETTING:
            return STAGE_OF_SETTING[prefix]
    return "data"


def changed_settings(old: DictConfig, new: DictConfig, done: list[str]) -> list[tuple[str, object, object, str]]:
    """(key, old value, new value, stage) for each setting that differs and that a finished stage
    (or a stage before a finished one) was built with; keys the schema gained or lost are not changes."""
    if not done:
        return []
    last = max(STAGES.index(s) for s in done)
    a, b = flat(OmegaConf.to_container(old)), flat(OmegaConf.to_container(new))
    schema = OmegaConf.structured(RunConfig)
    out = []
    for key in sorted(a.keys() | b.keys()):
        stage = stage_of_setting(key)
        if stage is None or STAGES.index(stage) > last or a.get(key, MISSING) == b.get(key, MISSING):
            continue
        if key not in a and b[key] == OmegaConf.select(schema, key, default=MISSING):
            continue  # a key added to the schema since the run was made, at its default
        if key not in b and schema_dropped(schema, key):
            continue  # a key the schema no longer has
        out.append((key, a.get(key), b.get(key), stage))
    return out


MISSING = object()


def flat(tree, prefix: str = "") -> dict:
    """{dotted.key: leaf} of nested dicts (lists are leaves; an empty mapping has no keys)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def schema_dropped(schema: DictConfig, key: str) -> bool:
    """Whether `key` names a field the config schema does not have (not an entry of a user's mapping)."""
    node = schema
    for part in key.split("."):
        if not isinstance(node, DictConfig) or OmegaConf.get_type(node) is dict:
            return False  # inside a free-form mapping (data.domains, trainer, ...): the user's own keys
        if part not in node:
            return True
        node = node[part]
    return False
