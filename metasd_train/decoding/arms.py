"""Drafting arms: any HF causal LM sharing the target's tokenizer, and prompt-lookup n-grams."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metasd_train.decoding.cache import CachedLM
from metasd_train.decoding.draft_length import AcceptanceByMatch, best_length
from metasd_train.decoding.sampling import SamplingParams, logits_to_probs, pick
from metasd_train.errors import UserError


@dataclass
class Sequence:
    """The committed tokens: a device buffer sized once, plus a host mirror for n-gram lookups."""

    ids: torch.Tensor  # [capacity] on the engine's device
    host: list[int]

    @property
    def length(self) -> int:
        return len(self.host)

    def extend(self, tokens: list[int]) -> None:
        n = len(self.host)
        self.ids[n : n + len(tokens)] = torch.tensor(tokens, dtype=self.ids.dtype, device=self.ids.device)
        self.host.extend(tokens)


class Arm:
    """What the engine needs of a drafter; the defaults suit arms that keep no cache (n-gram, none).

    `may_sleep` arms can have nothing to propose in a round; a sleeping chooser asks `proposes`
    before it chooses (bandit/chooser.py), so it picks among the arms that do.
    """

    kind, name, gamma = "none", "arm", 0
    may_sleep = False

    def proposes(self, seq: Sequence, k: int) -> bool:
        """Whether `draft(seq, k, ...)` would propose at least one token."""
        return k > 0

    def runtime(self, engine):
        """Per-engine state (caches) this arm drafts with; the engine hands it back through bind()."""
        return None

    def bind(self, runtime) -> None:
        pass

    def reset(self) -> None:
        pass

    def commit(self, length: int) -> None:
        """The first `length` positions are committed."""

    def draft(self, seq: Sequence, k: int, params: SamplingParams, early_stop: float = 0.0, generator=None):
        """Up to k tokens [k'] and the distributions [k', V] they were drawn from."""
        raise NotImplementedError

    def score(self, seq: Sequence, start: int, params: SamplingParams) -> torch.Tensor:
        """Distributions [length-start, V] this arm would have drafted from `start` (full feedback);
        all-zero rows where it proposes nothing."""
        raise NotImplementedError

    def block_matches(self, seq: list[int], prompt_len: int, target) -> list[list[bool]]:
        """Greedy, teacher-forced: for a round starting at each committed length P in
        [prompt_len, len(seq)), whether each token it would draft (up to γ) equals seq[P + j]."""
        return [[] for _ in range(prompt_len, len(seq))]


class ModelArm(Arm):
    """A drafter model with its own KV cache; catches up on unseen tokens in one forward."""

    kind = "model"

    def __init__(self, name: str, model, vocab_size: int, gamma: int = 4):
        self.name, self.gamma, self.model = name, gamma, model
        self.lm = CachedLM(model, vocab_size)  # replaced by the engine's own (eager or static) in bind()

    def runtime(self, engine):
        return engine.make_lm(self.model)

    def bind(self, runtime) -> None:
        self.lm = runtime

    def reset(self) -> None:
        self.lm.reset()

    def draft(self, seq: Sequence, k: int, params: SamplingParams, early_stop: float = 0.0, generator=None):
        logits = self.lm.forward(seq.ids[self.lm.seen : seq.length])[-1]  # catch-up + first step
        tokens, probs = [], []
        for i in range(k):
            token, prob = pick(logits, params, generator)
            tokens.append(token)
            probs.append(prob)
            if i == k - 1 or (early_stop > 0 and logits.softmax(-1).max().item() < early_stop):  # opt-in sync
                break
            logits = self.lm.forward(token.view(1))[-1]
        if not tokens:
            return seq.ids.new_empty(0), logits.new_empty(0, logits.shape[-1])
        return torch.stack(tokens), torch.stack(probs)

    def commit(self, length: int) -> None:
        self.lm.rewind(length)

    def score(self, seq: Sequence, start: int, params: SamplingParams) -> torch.Tensor:
        assert self.lm.seen <= start - 1, "an idle arm must not have seen past the round's start"
        logits = self.lm.forward(seq.ids[self.lm.seen : seq.length - 1])
        return logits_to_probs(logits[-(seq.length - start) :], params)

    @torch.inference_mode()
    def block_matches(self, seq: list[int], prompt_len: int, target) -> list[list[bool]]:
        # a greedy drafter's draft from P, while it matches, is its teacher-forced prediction: one forward
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=torch.tensor([seq[:-1]], device=device)).logits[0]  # [N-1, V]
        pred = logits[prompt_len - 1 :].argmax(-1).tolist()
        agree = [p == t for p, t in zip(pred, seq[prompt_len:])]
        return [agree[i : i + self.gamma] for i in range(len(agree))]


class NoDraftArm(Arm):
    """Drafts nothing, so every round is one target token: the engine as a plain (fast) decoder."""

    may_sleep = True

    def proposes(self, seq: Sequence, k: int) -> bool:
        return False

    def __init__(self, name: str = "target_only", vocab_size: int = 0):
        self.name, self.vocab_size = name, vocab_size

    def draft(self, seq: Sequence, k: int, params: SamplingParams, early_stop: float = 0.0, generator=None):
        return seq.ids.new_empty(0), torch.zeros(0, self.vocab_size, device=seq.ids.device)

    def score(self, seq: Sequence, start: int, params: SamplingParams) -> torch.Tensor:
        return torch.zeros(seq.length - start, self.vocab_size, device=seq.ids.device)


NGRAM_LENGTHS = ("fixed", "cost")
PENDING = 16  # undecided proposals an n-gram runtime keeps


class NgramIndex:
    """The latest end of every n-gram (min_n <= n <= max_n) of one growing token list, kept up to date
    incrementally, so a lookup costs O(max_n) instead of a scan of the whole sequence. Another list
    starts it over; a list that is cleared and refilled needs `reset()` (the engine's prefill does it)."""

    def __init__(self, min_n: int, max_n: int):
        self.sizes = range(max(min_n, 1), max_n + 1)
        self.reset()

    def reset(self) -> None:
        self.ends: dict[tuple[int, ...], int] = {}  # n-gram -> exclusive end of its latest occurrence
        self.indexed, self.host = 0, None

    def lookup(self, host: list[int], k: int) -> list[int]:
        """Same as NgramArm.lookup(host, k): n-grams ending before the last token are the candidates."""
        return self.lookup_match(host, k)[0]

    def lookup_match(self, host: list[int], k: int) -> tuple[list[int], int]:
        """lookup's tokens and the length of the trailing n-gram that matched (0: none)."""
        if host is not self.host or len(host) < self.indexed:  # another sequence: start over
            self.reset()
            self.host = host
        n_tokens = len(host)
        for end in range(self.indexed + 1, n_tokens):  # index every n-gram that ends at or before n_tokens - 1
            for n in self.sizes:
                if end >= n:
                    self.ends[tuple(host[end - n : end])] = end
        self.indexed = max(self.indexed, n_tokens - 1)
        for n in reversed(self.sizes):
            if n <= n_tokens - 1 and (end := self.ends.get(tuple(host[n_tokens - n :]))) is not None:
                return host[end : end + k], n
        return [], 0


class NgramRuntime:
    """One engine's state for an n-gram arm: its index, what it learned of its proposals' acceptance,
    and the engine's verify seconds per width (filled by SpecEngine.calibrate)."""

    def __init__(self, min_n: int, max_n: int, width_seconds: dict[int, float]):
        self.index = NgramIndex(min_n, max_n)
        self.acceptance = AcceptanceByMatch()
        self.width_seconds = width_seconds
        self.pending: list[tuple] = []  # (host, start, tokens, n) of proposals not yet compared

    def reset(self) -> None:
        self.index.reset()
        self.pending = []

    def learn(self, host: list[int]) -> None:
        """Compare earlier proposals with the tokens committed since, once those decide them."""
        keep = []
        for p_host, start, tokens, n in self.pending:
            if p_host is not host:
                continue
            committed = host[start : start + len(tokens)]
            if len(committed) == len(tokens) or any(a != b for a, b in zip(tokens, committed)):
                self.acceptance.update(tokens, n, committed)
            else:
                keep.append((p_host, start, tokens, n))
        self.pending = keep[-PENDING:]


class NgramArm(Arm):
    """Training-free prompt lookup: continue the latest earlier occurrence of the trailing n-gram."""

    kind = "ngram"
    may_sleep = True

    def __init__(
        self,
        name: str = "ngram",
        vocab_size: int = 0,
        gamma: int = 4,
        max_ngram: int = 3,
        min_ngram: int = 1,
        length: str = "fixed",
    ):
        """`length`: "fixed" proposes all its lookup finds (up to the round's k); "cost" proposes the
        length that buys the most tokens per second of verify (decoding/draft_length.py)."""
        if length not in NGRAM_LENGTHS:
            raise UserError(f"n-gram length={length!r}; choose one of: {', '.join(NGRAM_LENGTHS)}")
        self.name, self.gamma, self.vocab_size, self.length = name, gamma, vocab_size, length
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.rt = NgramRuntime(min_ngram, max_ngram, {})
        self._peeked: tuple | None = None  # (host list, length, k, proposal) of the last `proposes`

    @property
    def index(self) -> NgramIndex:
        return self.rt.index

    @property
    def sizes_drafts(self) -> bool:
        return self.length == "cost"

    def runtime(self, engine) -> NgramRuntime:
        return NgramRuntime(self.min_ngram, self.max_ngram, engine.width_seconds)

    def bind(self, runtime) -> None:
        self.rt = runtime

    def reset(self) -> None:
        self.rt.reset()
        self._peeked = None

    def lookup(self, host: list[int], k: int) -> list[int]:
        """Tokens that followed the most recent earlier match of the longest trailing n-gram (a scan:
        the reference the incremental NgramIndex is tested against)."""
        n_tokens = len(host)
        for n in range(min(self.max_ngram, n_tokens - 1), self.min_ngram - 1, -1):
            tail = host[n_tokens - n :]
            for start in range(n_tokens - n - 1, -1, -1):
                if host[start : start + n] == tail:
                    return host[start + n : start + n + k]
        return []

    def _proposal(self, seq: Sequence, k: int) -> list[int]:
        if self._peeked is not None and self._peeked[0] is seq.host and self._peeked[1:3] == (seq.length, k):
            return self._peeked[3]
        tokens, n = self.index.lookup_match(seq.host, k) if k > 0 else ([], 0)
        if self.length == "cost":
            self.rt.learn(seq.host)
            if tokens and not any(h is seq.host and at == seq.length for h, at, _, _ in self.rt.pending):
                self.rt.pending.append((seq.host, seq.length, tokens, n))  # once per position, whatever k asks
                expected = self.rt.acceptance.expected_accepted(n, len(tokens))
                tokens = tokens[: best_length(expected, self.rt.width_seconds)]
        self._peeked = (seq.host, seq.length, k, tokens)
        return tokens

    def proposes(self, seq: Sequence, k: int) -> bool:
        return bool(self._proposal(seq, k))

    def draft(self, seq: Sequence, k: int, params: SamplingParams, early_stop: float = 0.0, generator=None):
        tokens = self._proposal(seq, k)
        ids = torch.tensor(tokens, dtype=torch.long, device=seq.ids.device)
        return ids, torch.nn.functional.one_hot(ids, self.vocab_size).float()  # q is one-hot

    def block_matches(self, seq: list[int], prompt_len: int, target) -> list[list[bool]]:
        return [
            [a == b for a, b in zip(self.lookup(seq[:t], self.gamma), seq[t:])] for t in range(prompt_len, len(seq))
        ]

    def score(self, seq: Sequence, start: int, params: SamplingParams) -> torch.Tensor:
        """One-hot rows of the block it would have drafted at `start` (zeros past its proposal)."""
        rows = torch.zeros(seq.length - start, self.vocab_size, device=seq.ids.device)
        proposal = self.lookup(seq.host[:start], min(self.gamma, seq.length - start))
        if proposal:
            rows[torch.arange(len(proposal)), torch.tensor(proposal)] = 1.0
        return rows
