"""What drafting costs each arm, learned online, for scoring idle arms on the speed reward."""

from __future__ import annotations


class DraftCosts:
    """Per-arm mean draft seconds per drafted token, from the rounds where that arm drafted.

    Prior: an arm that has not drafted yet is assumed free (0 s/token). The prior is optimistic on
    purpose: a full-information policy, which never explores, then picks an untried arm that looks
    good once, and from that round on the arm is charged its measured cost. Catch-up forwards are
    part of drafting, so an arm's switching cost is in its estimate.
    """

    def __init__(self, n_arms: int):
        self.seconds = [0.0] * n_arms
        self.tokens = [0] * n_arms

    def observe(self, arm: int, t_draft: float, drafted: int) -> None:
        if drafted > 0:
            self.seconds[arm] += t_draft
            self.tokens[arm] += drafted

    def per_token(self, arm: int) -> float:
        return self.seconds[arm] / self.tokens[arm] if self.tokens[arm] else 0.0
