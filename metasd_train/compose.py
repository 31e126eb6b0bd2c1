"""Compose a run's config: configs/ + the chosen recipe + command-line overrides, validated.

`python train.py recipe=NAME key=value ...` is Hydra's `group=option` syntax: every file in
recipes/ is registered as an option of the `recipe` group (package `_global_`), so no list of
recipes is kept by hand, and command-line overrides win over the recipe.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from metasd_train.config import CONFIG_DIR, RECIPE_DIR, RunConfig
from metasd_train.errors import UserError
from metasd_train.validation import validate


def recipes() -> dict[str, str]:
    """Recipe name -> one-line description (the recipe's `description:` key)."""
    out = {}
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        out[path.stem] = str(OmegaConf.load(path).get("description", ""))
    return out


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RunConfig)
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        node = OmegaConf.load(path)
        node["recipe"] = path.stem
        cs.store(group="recipe", name=path.stem, node=node, package="_global_")


def compose(overrides: list[str]) -> DictConfig:
    """Compose configs/ + the chosen recipe + overrides into a validated RunConfig."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = hydra_compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(_explain(e, overrides)) from None
    validate(cfg)
    return cfg


def _explain(e: Exception, overrides: list[str]) -> str:
    """One line for a Hydra/OmegaConf composition error."""
    msg = str(e)
    if m := re.search(r"Could not find '(?:recipe/)?([^']*)'", msg):
        if "recipe" in msg:
            return f"unknown recipe {m.group(1)!r}; valid recipes: {', '.join(recipes())} (python train.py recipe=list)"
        return msg.splitlines()[0]
    if m := re.search(r"Could not override '([^']*)'", msg):
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        valid = _keys_at(parent)
        if parent and not valid:  # a free-form mapping such as drafter.gammas or trainer
            return f"'{parent}' is a mapping with no key {leaf!r} yet; add one with +{key}=VALUE"
        where = f"under '{parent}'" if parent else "at the top level"
        return f"unknown config key {key!r}; valid keys {where}: {', '.join(valid)}"
    if m := re.search(r"Error merging override (\S+)", msg):
        cause = str(e.__cause__ or "").splitlines()[0] if e.__cause__ else "bad value"
        return f"bad value in override {m.group(1)}: {cause}"
    return msg.strip().splitlines()[0] + (f" (overrides: {' '.join(overrides)})" if overrides else "")


def _keys_at(parent: str) -> list[str]:
    node = OmegaConf.structured(RunConfig)
    sub = OmegaConf.select(node, parent) if parent else node
    return sorted(sub.keys()) if isinstance(sub, DictConfig) else []
