"""What a verify of w positions costs against one position, per dtype and forward path, on this
machine's CPU (or a GPU without graphs): the number that decides whether drafting pays.

python -m bench.widths [target=smollm2-135m-instruct] [dtypes=fp32,bf16] [paths=hf,fast] [max_width=8]
                       [at=120] [reps=15] [new_tokens=64] [out=DIR commit=SHA]

Paths: `hf` is the model's own forward over a DynamicCache (CachedLM: the engine with fast=false),
`fast` our forward over static caches (StaticLM without graphs: the engine's fast path off a GPU).
Per dtype: HF generate's seconds per token (greedy, `new_tokens` tokens of a fixed prompt, after a
warm call), then, per path and width w, the median over `reps` of one forward of w positions after a
prefill of `at` positions, paths and widths interleaved. Writes widths.json and widths.png (ms per
forward against w) under out=DIR.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from metasd_train.cli.args import check_ranges, parse
from metasd_train.decoding.cache import CachedLM
from metasd_train.decoding.hf_generate import hf_generate, sync
from metasd_train.decoding.static_cache import StaticLM
from metasd_train.errors import UserError, one_line_errors
from metasd_train.models import decode_dtype, load_model, pick_device
from metasd_train.models.loading import cpu_multiplies_bf16
from metasd_train.models.tokenizers import eos_ids


@dataclass
class WidthsArgs:
    target: str = "smollm2-135m-instruct"
    dtypes: str = "fp32,bf16"
    paths: str = "hf,fast"  # forward paths: hf (CachedLM) and fast (StaticLM without graphs)
    max_width: int = 8
    at: int = 120  # positions in the cache before the timed forward
    reps: int = 15
    new_tokens: int = 64  # HF generate's tokens per dtype
    device: str = "auto"
    out: str = ""  # folder for widths.json and widths.png ("" = print only)
    commit: str = ""  # the commit measured, written into widths.json


def parse_args(argv: list[str]) -> WidthsArgs:
    args = parse(WidthsArgs, argv)
    if bad := [p for p in args.paths.split(",") if p not in PATHS]:
        raise UserError(f"paths: {bad[0]!r} is not a forward path; choose from: {', '.join(PATHS)}")
    check_ranges(
        args,
        [
            ("max_width", lambda v: v >= 1, ">= 1"),
            ("at", lambda v: v >= 1, ">= 1"),
            ("reps", lambda v: v >= 1, ">= 1"),
            ("new_tokens", lambda v: v >= 1, ">= 1"),
        ],
    )
    return args


def eager_static(m, vocab: int, a) -> StaticLM:
    """StaticLM without graphs: on a CPU, the fast path's forward as the engine runs it."""
    lm = StaticLM(m, vocab, a.at + a.max_width + 1, tuple(range(1, a.max_width + 1)))
    lm.graphs = False
    return lm


PATHS = {"hf": lambda m, vocab, a: CachedLM(m, vocab), "fast": eager_static}


def forward_ms(lms: dict, ids: torch.Tensor, at: int, widths: range, reps: int) -> dict[str, dict[int, float]]:
    """Per path, the median ms of one forward of w positions after `at`, per w; paths and widths
    interleaved within each repetition so that the machine's drift spreads over all of them. The
    first repetition warms up."""
    times = {(p, w): [] for p in lms for w in widths}
    for rep in range(reps + 1):
        for (p, w), t in times.items():
            lm = lms[p]
            lm.reset()
            lm.forward(ids[:at])
            sync(ids.device)
            start = time.perf_counter()
            lm.forward(ids[at : at + w])
            sync(ids.device)
            if rep:
                t.append(time.perf_counter() - start)
    return {p: {w: round(statistics.median(times[p, w]) * 1e3, 2) for w in widths} for p in lms}


@torch.inference_mode()
def measure(a: WidthsArgs, dtype: str) -> dict:
    device = pick_device(a.device)
    m = load_model({"name": a.target, "dtype": decode_dtype(dtype, device)}, device).model
    device, vocab = next(m.parameters()).device, m.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, min(vocab, 30000), (a.at + a.max_width,), generator=g).to(device)
    prompt, eos = ids[:16].tolist(), eos_ids(m)
    hf_generate(m, prompt, 2, eos, min_new_tokens=2)
    tokens, secs = hf_generate(m, prompt, a.new_tokens, eos, min_new_tokens=a.new_tokens)
    lms = {p: PATHS[p](m, vocab, a) for p in a.paths.split(",")}
    ms = forward_ms(lms, ids, a.at, range(1, a.max_width + 1), a.reps)
    return {"hf_generate_ms_per_token": round(secs / len(tokens) * 1e3, 2), "forward_ms": ms}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dtype, r in results["dtypes"].items():
        for kind, ms in r["forward_ms"].items():
            ws = sorted(int(w) for w in ms)
            ax.plot(ws, [ms[w] for w in ws], marker="o", ls="-" if kind == "fast" else "--",
                    label=f"{dtype} {kind} forward")  # fmt: skip
        ax.axhline(
            r["hf_generate_ms_per_token"],
            ls=":",
            lw=1,
            color=ax.lines[-1].get_color(),
            label=f"{dtype} HF generate / token",
        )
    ax.set(
        xlabel="positions in one forward (verify width)",
        ylabel="ms",
        title=f"{results['target']}\n{results['device']}",
    )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    amx = "with" if cpu_multiplies_bf16() else "without"
    return f"{names[0] if names else 'CPU'} ({torch.get_num_threads()} threads, {amx} bf16 matrix units)"


def main(argv: list[str]) -> dict:
    a = parse_args(argv)
    results = {"target": a.target, "device": device_name(pick_device(a.device)), "torch": torch.__version__}
    results["commit"] = a.commit
    results.update(args=asdict(a), dtypes={})
    for dtype in a.dtypes.split(","):
        results["dtypes"][dtype] = r = measure(a, dtype)
        print(dtype, json.dumps(r), flush=True)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "widths.json").write_text(json.dumps(results, indent=1) + "\n")
        plot(results, out / "widths.png")
        print(f"wrote {out / 'widths.json'} and {out / 'widths.png'}")
    return results


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
