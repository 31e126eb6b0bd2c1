"""BestWeights: a fit ends on the weights of its best validation, also across a resume."""

from types import SimpleNamespace

import torch

from metasd_train.distill.families import FAMILIES
from metasd_train.distill.trainer import BestWeights


def validated(cb: BestWeights, module: torch.nn.Module, value: float, weight: float) -> None:
    with torch.no_grad():
        module.weight.fill_(weight)
    trainer = SimpleNamespace(callback_metrics={"val/score": torch.tensor(value)}, sanity_checking=False)
    cb.on_validation_end(trainer, module)


def test_the_best_validation_s_weights_are_restored_and_survive_a_resume():
    module = torch.nn.Linear(2, 2, bias=False)
    cb = BestWeights("val/score")
    validated(cb, module, 0.5, 1.0)
    validated(cb, module, 0.3, 2.0)  # worse: not kept
    resumed = BestWeights("val/score")
    resumed.load_state_dict(cb.state_dict())
    validated(resumed, module, 0.4, 3.0)  # still worse than 0.5
    resumed.on_fit_end(None, module)
    assert torch.equal(module.weight, torch.ones(2, 2)) and resumed.best == 0.5


def test_heads_keep_their_best_simulated_accepted_length_and_models_their_last_step():
    assert FAMILIES["head"].monitor == "val/accept_len/all" and FAMILIES["model"].monitor is None
