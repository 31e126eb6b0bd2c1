"""The report of bench/scaling.sh: distillation throughput and the generalist's validation per device count.

python -m bench.scaling out=DIR devices="1 2 4" [recipe=NAME steps=N]

Reads scale_<d>gpu_throughput.json and scale_<d>gpu_acceptance.json under out=DIR (what the script
copied out of each run) and writes scaling.json, scaling.md and scaling.png there. Scaling is each
count's training tokens/s over the smallest count's; with a batch per GPU, the global batch grows
with the count (weak scaling).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.harness import card_name
from metasd_train.atomic import write_json, write_text
from metasd_train.cli.args import parse
from metasd_train.errors import UserError, one_line_errors
from metasd_train.pipeline import plots


@dataclass
class ScalingArgs:
    out: str = ""  # the folder bench/scaling.sh wrote
    devices: str = "1 2"  # device counts, space- or comma-separated
    recipe: str = ""  # recorded only
    steps: int = 0  # recorded only


def counts(devices: str) -> list[int]:
    try:
        out = sorted({int(d) for d in devices.replace(",", " ").split()})
    except ValueError:
        out = []
    if not out or out[0] < 1:
        raise UserError(f'devices={devices!r} is not a list of device counts; pass e.g. devices="1 2 4"')
    return out


def validation(acceptance: dict) -> dict[str, float]:
    """The generalist's per-domain validation figure: accepted length for heads, else acceptance."""
    rows = acceptance["generalist"]
    metric = "accept_len" if any("accept_len" in r for r in rows.values()) else "acceptance"
    return {"metric": metric, **{d: round(r[metric], 4) for d, r in sorted(rows.items()) if metric in r}}


def report(out: Path, devices: list[int], recipe: str, steps: int) -> dict:
    rows = []
    for d in devices:
        files = [out / f"scale_{d}gpu_{kind}.json" for kind in ("throughput", "acceptance")]
        if missing := [str(f) for f in files if not f.exists()]:
            raise UserError(f"{missing[0]} is missing; run bash bench/scaling.sh first (it writes one per count)")
        tp, acc = (json.loads(f.read_text()) for f in files)
        rows.append({"devices": d, **tp["generalist"], "validation": validation(acc)})
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["scaling"] = round(r["tokens_per_s"] / base, 3)
    result = {"card": card_name(), "recipe": recipe, "steps": steps, "rows": rows}
    write_json(out / "scaling.json", result)
    write_text(out / "scaling.md", markdown(result))
    plots.bars(
        [f"{r['devices']} GPU" for r in rows],
        {"training tokens/s": [r["tokens_per_s"] for r in rows]},
        f"{recipe}: distillation throughput ({card_name()})",
        "tokens/s",
        out / "scaling.png",
    )
    return result


def markdown(result: dict) -> str:
    rows = result["rows"]
    metric = rows[0]["validation"]["metric"]
    domains = [k for k in rows[0]["validation"] if k != "metric" and all(k in r["validation"] for r in rows)]
    lines = [
        f"# Distillation on {', '.join(str(r['devices']) for r in rows)} GPUs ({result['card']})",
        "",
        f"recipe {result['recipe']}, {result['steps']} steps, the generalist only; one run per count.",
        "",
        "| GPUs | tokens | seconds | training tokens/s | scaling |",
        "|---|---|---|---|---|",
        *(
            f"| {r['devices']} | {r['tokens']} | {r['seconds']:.2f} | {r['tokens_per_s']:.0f} | {r['scaling']:.2f}x |"
            for r in rows
        ),
        "",
        f"Validation {metric} of the generalist, per domain:",
        "",
        "| GPUs | " + " | ".join(domains) + " |",
        "|---|" + "---|" * len(domains),
        *(f"| {r['devices']} | " + " | ".join(f"{r['validation'][d]:.3f}" for d in domains) + " |" for r in rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = parse(ScalingArgs, argv, required=("out",))
    result = report(Path(args.out), counts(args.devices), args.recipe, args.steps)
    print(markdown(result))


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
