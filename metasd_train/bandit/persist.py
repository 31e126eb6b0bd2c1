"""Save and load a fitted policy: tensors as safetensors, everything else as JSON (bandit.json)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metasd_train.atomic import write_json, write_with
from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.policies import Policy, make_policy
from metasd_train.errors import UserError


def save_bandit(
    folder: str | Path, policy: Policy, name: str, arm_names: list[str], cfg: dict, featurizer: Featurizer | None = None
) -> None:
    """bandit.safetensors (the policy's state and the featurizer's projection) and bandit.json."""
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


def _read(folder: Path) -> tuple[dict, dict]:
    try:
        meta = json.loads((folder / "bandit.json").read_text())
        tensors = load_file(str(folder / "bandit.safetensors"))
        meta["policy"], meta["arms"], meta["config"], meta["featurizer"]  # noqa: B018 (the keys must be there)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise UserError(f"{folder}: unreadable bandit files ({type(e).__name__}: {e}); re-run fit_bandit") from None
    return meta, tensors


def load_bandit(folder: str | Path, keep_prior: bool = True) -> tuple[Policy, Featurizer | None, dict]:
    """(policy, featurizer, bandit.json); `keep_prior=False` gives the same policy unfitted (e.g. for
    sampling when the log was greedy)."""
    folder = Path(folder)
    meta, tensors = _read(folder)
    feat = None
    if meta["featurizer"]:
        f = meta["featurizer"]
        feat = Featurizer(f["hidden_size"], f["dim"], f["seed"])
        feat.proj.copy_(tensors.pop("featurizer.proj"))
    cfg = meta["config"]
    dim = feat.dim if feat else int(cfg.get("context_dim", 16))
    policy = make_policy(meta["policy"], len(meta["arms"]), cfg, dim=dim, arm_names=meta["arms"])
    if keep_prior:
        try:
            policy.load_state_dict(tensors)
        except (KeyError, RuntimeError) as e:
            raise UserError(
                f"{folder}: bandit state does not fit policy {meta['policy']!r} ({e}); re-run fit_bandit"
            ) from None
    return policy, feat, meta
