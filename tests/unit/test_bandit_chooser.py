"""chooser_for: the exported policy as decode.py and the bench get it, with overrides and clear errors."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from metasd_train.bandit.chooser import chooser_for
from metasd_train.bandit.persist import save_bandit
from metasd_train.bandit.policies import EliminationUCB, FixedArm, Hedge
from metasd_train.errors import UserError

NAMES = ["generalist", "code", "ngram"]


def export(tmp_path: Path, names=NAMES, **cfg) -> SimpleNamespace:
    policy = EliminationUCB(3)
    policy.set_prior(torch.tensor([10.0, 10.0, 10.0]), torch.tensor([2.0, 2.0, 5.0]))
    save_bandit(tmp_path / "bandit", policy, "ucb_elim", NAMES, {"reward": "speed", **cfg})
    return SimpleNamespace(folder=tmp_path, manifest={"bandit": "bandit"}, arm_names=names)


def test_the_exported_policy_comes_back_warm(tmp_path):
    chooser, feedback = chooser_for(export(tmp_path, feedback="full", reset_per_request=True))
    assert isinstance(chooser.policy, EliminationUCB) and chooser.policy.prior[0].sum() == 30
    assert (feedback, chooser.feedback, chooser.reward, chooser.reset_per_request) == ("full", "full", "speed", True)
    assert chooser_for(export(tmp_path), greedy=False)[0].policy.prior.sum() == 0  # no greedy prior when sampling


def test_overrides(tmp_path):
    ens = export(tmp_path)
    assert isinstance(chooser_for(ens, policy="hedge")[0].policy, Hedge)
    assert chooser_for(ens, feedback="full")[1] == "full"
    fixed = chooser_for(ens, arm="ngram")[0].policy
    assert isinstance(fixed, FixedArm) and fixed.select() == 2
    one = chooser_for(export(tmp_path, names=["ngram"]), arm="ngram")[0].policy  # decode.py arm=: one arm loaded
    assert one.select() == 0
    assert chooser_for(None, fixed=1)[0].select(None) == 1


def test_typos_are_user_errors(tmp_path):
    ens = export(tmp_path)
    with pytest.raises(UserError, match="bandit.policy='ucbb' is not valid; choose one of: ucb_elim"):
        chooser_for(ens, policy="ucbb")
    with pytest.raises(UserError, match="bandit.feedback='ful' is not valid; choose one of: bandit, full"):
        chooser_for(ens, feedback="ful")


def test_sleeping_comes_from_the_export_and_can_be_overridden(tmp_path):
    assert chooser_for(export(tmp_path, sleeping=True))[0].sleeping
    assert not chooser_for(export(tmp_path, sleeping=True), sleeping=False)[0].sleeping
    assert not chooser_for(export(tmp_path))[0].sleeping  # an export from before the setting: off
