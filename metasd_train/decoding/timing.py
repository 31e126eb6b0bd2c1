"""Phase timing inside a round without extra host syncs: CUDA events on GPU, perf_counter on CPU."""

from __future__ import annotations

import time

import torch


class Stopwatch:
    """mark(name) closes the phase named `name`; durations() is read after the round's one sync."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = []
        self._start = self._now()

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def mark(self, name: str) -> None:
        self.marks.append((name, self._now()))

    def durations(self) -> dict[str, float]:
        """Seconds per phase (phases marked twice add up); call after the device sync."""
        out: dict[str, float] = {}
        if self.cuda and self.marks:
            self.marks[-1][1].synchronize()  # the round has synced already; this only guards a late mark
        prev = self._start
        for name, t in self.marks:
            dt = prev.elapsed_time(t) / 1000 if self.cuda else t - prev
            out[name] = out.get(name, 0.0) + dt
            prev = t
        return out
