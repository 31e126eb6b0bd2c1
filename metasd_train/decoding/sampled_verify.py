"""A sampled round's verification replayed as one CUDA graph per draft length.

Eagerly, a sampled verify is some thirty small kernels over [k+1, V] probabilities (temperature and
softmax, the accept test, the residual, the draw, the block divergence): on a GPU each costs a
launch, not bytes. Here they are captured once per k = 0..γmax. The randomness is drawn outside the
graph from the engine's generator, into buffers the graph reads, in the order `verify_sampling`
draws it: the uniforms for the accept test, then the exponential noise of the final draw. The maths
is `sampling.round_outcome`, the same function the eager path runs.
"""

from __future__ import annotations

import torch

from metasd_train.decoding.sampling import SamplingParams, round_outcome


class SampledVerify:
    """verify(logits [k+1, V], q [k, V], draft [k]) -> (n, next, divergence, p [k+1, V]) on CUDA graphs.

    The returned tensors are the graph's own buffers: they hold until the next call (a round reads
    them before its next verify). With graphs=False (tests on a CPU) the same buffers are filled and
    round_outcome runs on them eagerly, where a replay would run.
    """

    def __init__(
        self, vocab_size: int, max_block: int, params: SamplingParams, device: torch.device, graphs: bool = True
    ):
        self.vocab_size, self.max_block, self.params, self.device = vocab_size, max_block, params, device
        self.graphs = graphs
        self._captured: dict[int, tuple] = {}
        self._pool = None
        # one set of input buffers for every k (graph k reads their leading rows), made before any capture
        k, V = max_block - 1, vocab_size
        self._logits = torch.zeros(k + 1, V, device=device)
        self._q = torch.zeros(k, V, device=device)
        self._draft = torch.zeros(k, dtype=torch.long, device=device)
        self._u = torch.full((k,), 0.5, device=device)
        self._noise = torch.ones(V, device=device)

    @property
    def graph_count(self) -> int:
        return len(self._captured)

    @torch.inference_mode()
    def warmup(self) -> None:
        for k in range(self.max_block) if self.graphs else ():
            self._graph(k)

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, q: torch.Tensor, draft: torch.Tensor, generator=None):
        k = draft.shape[0]
        graph, l_buf, q_buf, d_buf, u_buf, e_buf, *out = self._graph(k) if self.graphs else (None, *self._inputs(k))
        l_buf.copy_(logits)
        q_buf.copy_(q)
        d_buf.copy_(draft)
        u_buf.uniform_(generator=generator)
        e_buf.exponential_(1, generator=generator)
        if graph is None:
            return round_outcome(l_buf, q_buf, d_buf, u_buf, e_buf, self.params)
        graph.replay()
        return tuple(out)

    def _inputs(self, k: int) -> tuple:
        return self._logits[: k + 1], self._q[:k], self._draft[:k], self._u[:k], self._noise

    def _graph(self, k: int) -> tuple:
        if k not in self._captured:
            self._captured[k] = self._capture(k)
        return self._captured[k]

    def _capture(self, k: int) -> tuple:
        inputs = self._inputs(k)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                round_outcome(*inputs, self.params)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = round_outcome(*inputs, self.params)
        self._pool = self._pool or graph.pool()
        return (graph, *inputs, *out)
