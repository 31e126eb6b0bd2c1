"""Save and load a fitted chooser: tensors as safetensors, everything else as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from metasd_train.atomic import write_json, write_with
from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.policies import Policy, make_policy


def save_bandit(
    folder: str | Path, policy: Policy, name: str, arm_names: list[str], cfg: dict, featurizer: Featurizer | None = None
) -> None:
    folder = Path(folder)
    tensors = {k: v.contiguous() for k, v in policy.state_dict().items()}
    if featurizer is not None:
        tensors["featurizer.proj"] = featurizer.proj.contiguous()
    write_with(folder / "bandit.safetensors", lambda p: save_file(tensors, str(p)))
    meta = {
        "policy": name,
        "arms": arm_names,
        "config": cfg,
        "featurizer": None
        if featurizer is None
        else {"hidden_size": featurizer.hidden_size, "dim": featurizer.dim, "seed": featurizer.seed},
    }
    write_json(folder / "bandit.json", meta)


def load_bandit(folder: str | Path) -> tuple[Policy, Featurizer | None, dict]:
    folder = Path(folder)
    meta = json.loads((folder / "bandit.json").read_text())
    tensors = load_file(str(folder / "bandit.safetensors"))
    feat = None
    if meta["featurizer"]:
        f = meta["featurizer"]
        feat = Featurizer(f["hidden_size"], f["dim"], f["seed"])
        feat.proj.copy_(tensors.pop("featurizer.proj"))
    cfg = meta["config"]
    policy = make_policy(
        meta["policy"],
        len(meta["arms"]),
        cfg,
        dim=feat.dim if feat else int(cfg.get("context_dim", 16)),
        fixed_arm=int(cfg.get("fixed_arm_index", 0)),
    )
    policy.load_state_dict(tensors)
    return policy, feat, meta
