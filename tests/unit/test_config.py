"""Recipes compose and validate; bad input gives one clear line (never a traceback)."""

import subprocess
import sys
from pathlib import Path

import pytest

from metasd_train.compose import compose, recipes
from metasd_train.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(recipes()))
def test_every_shipped_recipe_composes_and_validates(name):
    cfg = compose([f"recipe={name}"])
    assert cfg.recipe == name and cfg.description
    assert cfg.stages == ["data", "distill", "log_acceptance", "fit_bandit", "export"]


def test_overrides_win_over_the_recipe():
    cfg = compose(["recipe=quickstart", "drafter.layers=3", "trainer.devices=2"])
    assert cfg.drafter.layers == 3 and cfg.trainer.devices == 2


def cli(*args, script="train.py"):
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_recipe_list_names_every_recipe_with_a_description():
    out = cli("recipe=list")
    assert out.returncode == 0
    for name, text in recipes().items():
        assert name in out.stdout and text[:30] in out.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["recipe=nope"], "unknown recipe 'nope'; valid recipes: quickstart"),
        (["recipe=tiny", "drafter.gama=3"], "unknown config key 'drafter.gama'; valid keys under 'drafter'"),
        (["recipe=tiny", "drafter.gamma=many"], "bad value in override drafter.gamma=many"),
        (["recipe=tiny", "bandit.policy=greedy"], "bandit.policy='greedy' is not valid"),
        (["recipe=tiny", "drafter.ngram_length=auto"], "drafter.ngram_length='auto' is not valid"),
        (["recipe=tiny", "decode.top_p=1.5"], "0 < top_p <= 1"),
        (["recipe=tiny", "decode.dtype=fp8"], "decode.dtype='fp8' is not valid"),
        (["recipe=tiny", "+data.written.nope={source: sharegpt, n: 2}"], "data.written.nope is not a domain"),
        (["recipe=tiny", "+data.written.code={source: sharegpt}"], "data.written.code must be {source: NAME, n: >= 1"),
        (
            ["recipe=tiny", "drafter.head.draft_vocab_sizes=[4,8]"],
            "drafter.head.draft_vocab_sizes=[4, 8] is out of range",
        ),
        (["recipe=tiny", "drafter.head.draft_vocab_tolerance=1.5"], "drafter.head.draft_vocab_tolerance=1.5 is out of"),
        (
            ["recipe=tiny", "target.name=/no/such/model", "stages=[data]", "run_dir=/tmp/metasd-test-bad"],
            "does not exist",
        ),
        (
            ["recipe=tiny", "target.name=HuggingFaceTB/SmolLM2-360M", "stages=[data]", "run_dir=/tmp/metasd-test-hub"],
            "looks like a hub id",
        ),
        (
            [
                "recipe=tiny",
                "+drafter.companions.big={kind: pretrained, path: /no/such/model}",
                "stages=[data]",
                "run_dir=/tmp/metasd-test-companion",
            ],
            "does not exist",
        ),  # a companion is loaded only after the generalist trained: its path is checked up front
    ],
)
def test_bad_input_gives_one_clear_line(args, expected):
    out = cli(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_bad_model_path_leaves_no_run_directory(tmp_path):
    out = cli("recipe=tiny", "target.name=/no/such/model", f"run_dir={tmp_path / 'run'}")
    assert out.returncode == 2 and "does not exist" in out.stderr and not (tmp_path / "run").exists()


def test_decode_bad_options_give_one_clear_line(tmp_path):
    for args, expected in (
        (["run=/nope", "prompt=hi"], "no exported ensemble"),
        (["run=x", "colour=red"], "bad option"),
        (["run=x", "prompt=hi", "temperature=-1"], "temperature=-1.0 is out of range"),
        (["run=x", "prompt=hi", "top_p=0"], "top_p=0.0 is out of range"),
        (["run=x", "prompt=hi", "max_new_tokens=0"], "max_new_tokens=0 is out of range"),
        (["run=x", "prompt=hi", "dtype=fp8"], "dtype='fp8' is not valid"),
    ):
        out = cli(*args, script="decode.py")
        assert out.returncode == 2 and expected in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_missing_gguf_and_packaged_model_errors(monkeypatch, tmp_path):
    from metasd_train.models.loading import resolve_source

    with pytest.raises(UserError, match="GGUF file not found"):
        resolve_source(str(tmp_path / "x.gguf"))
    monkeypatch.setenv("METASD_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(UserError, match="METASD_SMOLLM2_GGUF"):
        resolve_source("smollm2-135m-instruct")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve_source(str(tmp_path / "empty"))


def test_gamma_per_arm_overrides_the_shared_gamma():
    from metasd_train.config import arm_gamma

    cfg = compose(["recipe=tiny", "drafter.gamma=3", "drafter.ngram_gamma=5", "+drafter.gammas={code: 7}"])
    assert [arm_gamma(cfg.drafter, n) for n in ("generalist", "code", "ngram")] == [3, 7, 5]
    with pytest.raises(UserError, match="drafter.gammas.code=0 must be >= 1"):
        compose(["recipe=tiny", "+drafter.gammas={code: 0}"])
    with pytest.raises(UserError, match=r"add one with \+drafter.gammas.code=VALUE"):
        compose(["recipe=tiny", "drafter.gammas.code=7"])
