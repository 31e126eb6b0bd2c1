"""Runs that never get stuck: distillation resumes from step checkpoints and from finished ones, a
Ctrl-C is one line, half-written data shards are never read, and bad input is one line before any
stage runs. Everything here trains for a few steps at most (no full pipeline run)."""

import gzip
import subprocess
import sys
from pathlib import Path

import datasets
import lightning as L
import pytest
import torch

from metasd_train.compose import compose
from metasd_train.data.datamodule import DistillDataModule
from metasd_train.distill.module import DistillModule
from metasd_train.distill.trainer import check_trainer, fit, make_trainer
from metasd_train.errors import UserError, one_line_errors
from metasd_train.models.random_init import tiny_llama
from metasd_train.pipeline import stage_data
from metasd_train.pipeline.context import StageContext
from metasd_train.pipeline.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[2]
V = 32


@pytest.fixture(scope="module")
def teacher():
    return tiny_llama(V, layers=2, seed=1)


@pytest.fixture(scope="module")
def examples():
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(24):
        ids = torch.randint(2, V, (10,), generator=g).tolist()
        split = "val" if i % 8 == 0 else "train"
        rows.append({"domain": "d", "split": split, "prompt_ids": ids[:4], "response_ids": ids[4:]})
    return datasets.Dataset.from_list(rows)


class KillAt(L.Callback):
    """Raises `error` once training reaches optimizer step `step` (a kill, or a Ctrl-C)."""

    def __init__(self, step: int, error: BaseException):
        self.step, self.error = step, error

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise self.error


def distill(teacher, examples, ckpt: Path, max_steps: int, every: int = 0, kill: KillAt | None = None) -> dict:
    L.seed_everything(0, verbose=False)
    student = tiny_llama(V, layers=1, seed=2)
    module = DistillModule(student, teacher, ["d"], max_steps=max(max_steps, 1), warmup_steps=0)
    trainer = make_trainer({"accelerator": "cpu", "enable_progress_bar": False}, ckpt.parent / "logs", "g",
                           max_steps, 100, ckpt, checkpoint_every=every)  # fmt: skip
    if kill:
        trainer.callbacks.append(kill)
    return fit(module, DistillDataModule(examples, ["d"], 2, 0), trainer, ckpt)


def ckpt_step(ckpt: Path) -> int:
    return int(torch.load(ckpt / "last.ckpt", weights_only=True)["global_step"])


def test_a_kill_mid_model_resumes_from_the_last_checkpoint_boundary(teacher, examples, tmp_path):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        distill(teacher, examples, ckpt, 7, every=3, kill=KillAt(5, RuntimeError("killed")))
    assert ckpt_step(ckpt) == 3 and not list(ckpt.glob(".*.tmp"))
    resumed = distill(teacher, examples, ckpt, 7, every=3)
    assert ckpt_step(ckpt) == 7  # the steps after the last boundary are saved when training ends
    fresh = distill(teacher, examples, tmp_path / "fresh", 7, every=3)
    assert 0 < resumed["tokens"] < fresh["tokens"]  # only steps 4..7 ran after the resume


def test_a_finished_checkpoint_or_zero_steps_refit_nothing_and_report_throughput(teacher, examples, tmp_path):
    ckpt = tmp_path / "ckpt"
    first = distill(teacher, examples, ckpt, 2)
    again = distill(teacher, examples, ckpt, 2)  # last.ckpt is at max_steps: Lightning fits nothing
    assert again == first and again["tokens_per_s"] > 0
    zero = distill(teacher, examples, tmp_path / "zero", 0)
    assert zero["tokens"] == 0 and zero["tokens_per_s"] == 0.0


def test_ctrl_c_inside_lightning_is_one_line_and_exit_130(teacher, examples, tmp_path, capsys):
    with pytest.raises(SystemExit) as e, one_line_errors():
        distill(teacher, examples, tmp_path / "ckpt", 5, kill=KillAt(2, KeyboardInterrupt()))
    assert e.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted: re-run the same command to resume"


@pytest.mark.parametrize(
    "trainer_cfg,match",
    [
        ({"precision": "bogus"}, "trainer: Precision 'bogus' is invalid"),
        ({"devices": "lots"}, "trainer: "),
        ({"max_steps": 3}, "trainer.max_steps is set by the recipe's distill"),
        ({"colour": "red"}, "trainer.* keys are lightning.Trainer arguments"),
    ],
)
def test_lightning_config_errors_are_one_line_before_any_stage(trainer_cfg, match):
    with pytest.raises(UserError, match=match) as e:
        check_trainer({"accelerator": "cpu", **trainer_cfg})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "override,match",
    [
        ("distill.lr=0", "distill.lr=0.0 is out of range"),
        ("distill.lr=nan", "distill.lr=nan is out of range"),
        ("data.batch_size=0", "data.batch_size=0 is out of range"),
        ("data.domains.code.n=0", "data.domains.code.n=0 is out of range"),
        ("bandit.ridge=0", "bandit.ridge=0.0 is out of range"),
        ("decode.temperature=1e-45", "decode.temperature=1e-45 is out of range: it must be 0 (greedy) or >= 0.001"),
        ("drafter.gamma=1000", "drafter.gamma=1000 is out of range"),
        ("drafter.kind=pretrained", "drafter.kind=pretrained needs drafter.path"),
        ("decode.heldout_per_domain=0", "decode.heldout_per_domain=0 is out of range"),
        ("data.split=[0.8,0.2,0.0]", "leaves 10 training and 0 held-out prompts"),
    ],
)
def test_bad_settings_are_one_line_before_any_stage(override, match):
    with pytest.raises(UserError, match=match.replace("(", r"\(").replace(")", r"\)")):
        compose(["recipe=tiny", override])


def tiny_ctx(tmp_path, *overrides) -> StageContext:
    cfg = compose(["recipe=tiny", f"run_dir={tmp_path / 'run'}", *overrides])
    return StageContext(cfg, RunDir.create_or_open(cfg))


def test_half_written_data_shards_are_never_read_and_finished_ones_are_kept(tmp_path, monkeypatch):
    state = {"kill": True, "answered": 0}

    def answer(target, tok, batch, max_new, batch_size, temperature, seed):
        if temperature > 0 and state["kill"]:
            raise RuntimeError("killed while answering code (sampled)")
        state["answered"] += len(batch)
        return [[7, 8, 9] for _ in batch]

    monkeypatch.setattr(stage_data, "answer", answer)
    ctx = tiny_ctx(tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        stage_data.run(ctx)  # code (greedy) is finished; code (sampled) was being answered
    ctx.run.close()
    partial, done_first = ctx.run.path / ".data.partial", state["answered"]
    assert [p.name for p in partial.iterdir() if p.is_dir()] == ["code-greedy"]
    (partial / ".code-sampled.k9.tmp").mkdir()  # what a kill -9 inside save_to_disk leaves
    (partial / ".code-sampled.k9.tmp" / "data-00000-of-00001.arrow").write_bytes(b"\0" * 10)
    state.update(kill=False, answered=0)
    ctx = tiny_ctx(tmp_path)
    summary = stage_data.run(ctx)
    ctx.run.close()
    examples = datasets.load_from_disk(str(ctx.run.path / "data" / "examples"))
    assert len(examples) == 2 * sum(n for k, n in summary["prompts"].items() if not k.endswith("heldout"))
    assert state["answered"] == len(examples) - done_first  # the finished shard was not answered again
    assert not partial.exists() and not list(ctx.run.path.glob(".*.tmp"))


def test_prompts_longer_than_the_targets_context_are_refused_at_the_data_stage(tmp_path):
    ctx = tiny_ctx(tmp_path, "target.config.max_position_embeddings=64")
    with pytest.raises(UserError, match="data.max_prompt_tokens=192 \\+ data.max_new_tokens=12 exceed .* 64 tokens"):
        stage_data.run(ctx)
    ctx.run.close()


def test_a_second_train_py_on_a_run_in_use_exits_2_naming_the_holder(tmp_path):
    cfg = compose(["recipe=tiny", f"run_dir={tmp_path / 'run'}"])
    held = RunDir.create_or_open(cfg)
    try:
        cmd = [sys.executable, "train.py", "recipe=tiny", f"run_dir={held.path}"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        held.close()
    import os

    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"error: run_dir={held.path} is in use by process {os.getpid()} on ")
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "source,content,match",
    [
        (
            "humaneval",
            b'{"task_id": "a", "prompt": "def f():"}\n[1, 2]\n',
            r"HumanEval.jsonl.gz:2 is not a JSON object",
        ),
        ("humaneval", b'{"task_id": "a", "prompt": "\xff\xfe"}\n', "cannot be read as UTF-8 JSON lines"),
        ("champ", b'{"problems": {"p1": {"_text": "\xff"}}}', r"v0.json is not UTF-8 text \(byte"),
        ("champ", b'{"problems": [1, 2]}', "is not CHAMP's problem file"),
        ("sharegpt", b'[{"id": "1", "conversations": []}, "text", {}]', "record 1 is not a JSON object"),
    ],
)
def test_unreadable_source_files_are_one_line_naming_the_file(tmp_path, monkeypatch, source, content, match):
    from metasd_train.data import sources

    def fake_file(package, relative, install, needed_for):
        path = tmp_path / Path(relative).name
        path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
        return path

    monkeypatch.setattr(sources, "package_file", fake_file)
    with pytest.raises(UserError, match=match) as e:
        list(sources.load_source(source, {}))
    assert "--force-reinstall" in str(e.value)


# BestWeights across a resume when a checkpoint step is also a validation step: the checkpoint of that
# step must carry what BestWeights took from its validation (a finished fit refit from it, or a killed
# one resumed, ends on the same weights as the uninterrupted fit).


class Peaked(DistillModule):
    """A validation score peaking at step 4 (the monitor BestWeights keeps the best of)."""

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn == "fit":
            self.log("val/score", -float((self.trainer.global_step - 4) ** 2))


def distill_peaked(teacher, examples, ckpt: Path, max_steps: int, kill: int | None = None) -> dict:
    """Validation every 2 steps, a checkpoint every 2 steps (each validation step is a checkpoint step)."""
    L.seed_everything(0, verbose=False)
    module = Peaked(tiny_llama(V, layers=1, seed=2), teacher, ["d"], lr=0.05, max_steps=max_steps, warmup_steps=0)
    trainer = make_trainer({"accelerator": "cpu", "enable_progress_bar": False}, ckpt.parent / "logs", "g",
                           max_steps, 2, ckpt, checkpoint_every=2, monitor="val/score")  # fmt: skip
    if kill:
        trainer.callbacks.append(KillAt(kill, RuntimeError("killed")))
    fit(module, DistillDataModule(examples, ["d"], 2, 0), trainer, ckpt)
    return {k: v.clone() for k, v in module.student.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_fit_refit_from_its_checkpoint_keeps_the_last_validation_s_best(teacher, examples, tmp_path):
    ckpt = tmp_path / "ckpt"
    first = distill_peaked(teacher, examples, ckpt, 4)  # best: the validation at step 4 (also a checkpoint step)
    again = distill_peaked(teacher, examples, ckpt, 4)  # last.ckpt at max_steps: nothing to fit
    assert same(again, first)


def test_a_resume_after_a_kill_keeps_the_best_validated_at_the_checkpoint_step(teacher, examples, tmp_path):
    fresh = distill_peaked(teacher, examples, tmp_path / "fresh", 6)  # validations at 2, 4 (best), 6
    ckpt = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        distill_peaked(teacher, examples, ckpt, 6, kill=5)  # last.ckpt: step 4
    resumed = distill_peaked(teacher, examples, ckpt, 6)  # Lightning does not validate step 4 again
    assert same(resumed, fresh)
