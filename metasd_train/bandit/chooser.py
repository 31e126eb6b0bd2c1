"""Connects a policy to the engine (decoding.engine.Chooser): context, rewards, feedback, resets."""

from __future__ import annotations

from collections.abc import Mapping

from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.costs import DraftCosts
from metasd_train.bandit.persist import load_bandit
from metasd_train.bandit.policies import FixedArm, Policy, make_policy
from metasd_train.bandit.rewards import chosen_outcome, idle_outcome, reward_fn
from metasd_train.errors import UserError

FEEDBACK = {
    "bandit": "learn from the chosen arm only",
    "full": "also from every idle arm the engine scored on the committed tokens (engine full_feedback=True)",
}


def check_feedback(feedback: str) -> None:
    if feedback not in FEEDBACK:
        raise UserError(f"bandit.feedback={feedback!r} is not valid; choose one of: {', '.join(FEEDBACK)}")


class BanditChooser:
    """The engine's Chooser over a Policy: computes each round's rewards from the engine's RoundRecord.

    `reward` names a function of bandit/rewards.py; `feedback="full"` also scores the idle arms of
    `record.idle` (the engine must run with full_feedback=True to fill it), with drafting charged at
    each arm's running cost (bandit/costs.py); `reset_per_request` returns the policy to its prior at
    every request (paper mode).
    """

    def __init__(
        self,
        policy: Policy,
        reward: str = "speed",
        featurizer: Featurizer | None = None,
        reset_per_request: bool = False,
        feedback: str = "bandit",
        sleeping: bool = False,
    ):
        check_feedback(feedback)
        self.policy, self.reward, self.featurizer = policy, reward, featurizer
        self.sleeping = sleeping and policy.sleeping  # the engine tells select() which arms are asleep
        self.skip_empty = self.sleeping  # then a round whose arm proposed nothing teaches nothing
        self.score = reward_fn(reward)
        self.reset_per_request, self.feedback = reset_per_request, feedback
        self.costs = DraftCosts(policy.n_arms)
        self.x = None

    def begin(self, ctx) -> None:
        if self.reset_per_request:
            self.policy.reset()
        if self.sleeping:
            self.policy.note_sleepers(getattr(ctx, "sleepers", frozenset()))
        self.x = self.featurizer(ctx.features) if (self.featurizer and self.policy.contextual) else None

    def select(self, ctx, asleep: frozenset[int] = frozenset()) -> int:
        return self.policy.select(self.x, asleep)

    def observe(self, ctx, record) -> None:
        """One round's feedback: `record` is the engine's RoundRecord (decoding/records.py)."""
        self.costs.observe(record.arm, record.t_draft, record.drafted)
        if self.skip_empty and record.drafted == 0:
            return
        rewards = {record.arm: self.score(chosen_outcome(record))}
        if self.feedback == "full":
            for arm, idle in record.idle.items():  # the engine scores no arm that was asleep
                rewards[arm] = self.score(idle_outcome(record, idle, self.costs.per_token(arm)))
        self.policy.observe(rewards, record.arm, self.x)


def build_chooser(
    cfg: Mapping,
    arm_names: list[str],
    featurizer: Featurizer | None = None,
    policy: Policy | None = None,
    dim: int = 16,
) -> BanditChooser:
    """A chooser as a BanditConfig-like mapping describes it (policy, reward, feedback, reset_per_request,
    sleeping).

    `policy` (e.g. a loaded, warm-started one) replaces building `cfg["policy"]` afresh.
    """
    if policy is None:
        policy = make_policy(str(cfg.get("policy", "ucb_elim")), len(arm_names), cfg, dim, arm_names)
    return BanditChooser(
        policy,
        str(cfg.get("reward", "speed")),
        featurizer,
        bool(cfg.get("reset_per_request", False)),
        str(cfg.get("feedback", "bandit")),
        bool(cfg.get("sleeping", False)),
    )


def chooser_for(
    ens=None,
    policy: str | None = None,
    arm: str | None = None,
    feedback: str | None = None,
    fixed: int | None = None,
    greedy: bool = True,
    sleeping: bool | None = None,
) -> tuple[BanditChooser, str]:
    """(chooser, feedback) for an exported ensemble (export.ensemble.Ensemble) as decode.py and the bench use it.

    Default: the exported, warm-started policy in its exported mode. `policy` overrides it (fresh,
    not warm-started); `arm` (an ensemble loaded with that one arm) or `fixed` (an arm index, no
    ensemble needed) always picks that arm; `greedy=False` drops a warm start fitted on the greedy
    log; `sleeping` overrides the exported bandit.sleeping. Raises UserError for an unknown policy or
    feedback.
    """
    if ens is None or fixed is not None:
        i = fixed or 0
        return BanditChooser(FixedArm(i + 1, i)), "bandit"
    names = ens.arm_names
    loaded, feat, meta = load_bandit(ens.folder / ens.manifest["bandit"], keep_prior=greedy)
    cfg = dict(meta["config"])
    feedback = feedback or str(cfg.get("feedback", "bandit"))
    check_feedback(feedback)
    if arm is not None:
        chosen = make_policy("fixed", len(names), {"fixed_arm": arm}, arm_names=names)
    elif policy is not None or meta["arms"] != names:
        chosen = make_policy(policy or meta["policy"], len(names), cfg, feat.dim if feat else 16, names)
    else:
        chosen = loaded
    if sleeping is not None:
        cfg["sleeping"] = sleeping
    return build_chooser({**cfg, "feedback": feedback}, names, feat, chosen), feedback
