"""BestWeights across a resume when a checkpoint step is also a validation step: the checkpoint of
that step must carry what BestWeights took from its validation (a finished fit refit from it, or a
killed one resumed, ends on the same weights as the uninterrupted fit)."""

from pathlib import Path

import datasets
import lightning as L
import pytest
import torch

from metasd_train.data.datamodule import DistillDataModule
from metasd_train.distill.module import DistillModule
from metasd_train.distill.trainer import fit, make_trainer
from metasd_train.models.random_init import tiny_llama

V = 32


class Peaked(DistillModule):
    """A validation score peaking at step 4 (the monitor BestWeights keeps the best of)."""

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn == "fit":
            self.log("val/score", -float((self.trainer.global_step - 4) ** 2))


class KillAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


@pytest.fixture(scope="module")
def teacher():
    return tiny_llama(V, layers=1, seed=1)


@pytest.fixture(scope="module")
def examples():
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(24):
        ids = torch.randint(2, V, (10,), generator=g).tolist()
        rows.append(
            {"domain": "d", "split": "val" if i % 8 == 0 else "train", "prompt_ids": ids[:4], "response_ids": ids[4:]}
        )
    return datasets.Dataset.from_list(rows)


def distill(teacher, examples, ckpt: Path, max_steps: int, kill: int | None = None) -> dict:
    """Validation every 2 steps, a checkpoint every 2 steps (each validation step is a checkpoint step)."""
    L.seed_everything(0, verbose=False)
    module = Peaked(tiny_llama(V, layers=1, seed=2), teacher, ["d"], lr=0.05, max_steps=max_steps, warmup_steps=0)
    trainer = make_trainer({"accelerator": "cpu", "enable_progress_bar": False}, ckpt.parent / "logs", "g",
                           max_steps, 2, ckpt, checkpoint_every=2, monitor="val/score")  # fmt: skip
    if kill:
        trainer.callbacks.append(KillAt(kill))
    fit(module, DistillDataModule(examples, ["d"], 2, 0), trainer, ckpt)
    return {k: v.clone() for k, v in module.student.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_fit_refit_from_its_checkpoint_keeps_the_last_validation_s_best(teacher, examples, tmp_path):
    ckpt = tmp_path / "ckpt"
    first = distill(teacher, examples, ckpt, 4)  # best: the validation at step 4 (also a checkpoint step)
    again = distill(teacher, examples, ckpt, 4)  # last.ckpt at max_steps: nothing to fit
    assert same(again, first)


def test_a_resume_after_a_kill_keeps_the_best_validated_at_the_checkpoint_step(teacher, examples, tmp_path):
    fresh = distill(teacher, examples, tmp_path / "fresh", 6)  # validations at 2, 4 (best), 6
    ckpt = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        distill(teacher, examples, ckpt, 6, kill=5)  # last.ckpt: step 4
    resumed = distill(teacher, examples, ckpt, 6)  # Lightning does not validate step 4 again
    assert same(resumed, fresh)
