"""Break the engine once per mutant and check that the test suite notices (STYLE habit 15).

    python tests/mutants.py                  # every mutant, with a baseline run first
    python tests/mutants.py accept_after_rejection stale_target_cache

Each mutant is one textual edit of one source file, applied to a copy of the repository in a temp
folder (the working tree is never touched); the mutant's tests run there (PYTHONPATH points at the
copy, ahead of the editable install). A mutant is killed when a test that passes on the unmutated
copy fails on it. Not collected by pytest (tests/conftest.py ignores this file): it takes minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("metasd_train", "tests", "configs", "recipes", "pyproject.toml", "train.py", "decode.py")
GREEDY, SAMPLING = "tests/unit/test_engine_greedy.py", "tests/unit/test_engine_sampling.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # source file, relative to the repository
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]
    why: str


MUTANTS = [
    Mutant(
        "accept_after_rejection",
        "metasd_train/decoding/sampling.py",
        "n = torch.cumprod(accepted.to(torch.int64), dim=0).sum()",
        "n = accepted.to(torch.int64).sum()",
        (SAMPLING,),
        "verify_sampling counts drafts accepted after a rejection",
    ),
    Mutant(
        "greedy_accept_after_mismatch",
        "metasd_train/decoding/sampling.py",
        "n = torch.cumprod((pred[:k] == draft).to(torch.int64), dim=0).sum()",
        "n = (pred[:k] == draft).to(torch.int64).sum()",
        (GREEDY,),
        "verify_greedy counts matches after the first mismatch",
    ),
    Mutant(
        "stale_dynamic_cache",
        "metasd_train/decoding/cache.py",
        "            self.cache.crop(-drop)\n            self.seen = length",
        "            pass",
        (GREEDY, SAMPLING),
        "CachedLM.rewind keeps rejected positions in the KV cache",
    ),
    Mutant(
        "stale_static_cache",
        "metasd_train/decoding/static_cache.py",
        "        self.seen = min(self.seen, length)",
        "        pass",
        (GREEDY,),
        "StaticLM.rewind does not rewind: later tokens land after the rejected slots",
    ),
    Mutant(
        "static_mask_sees_next_slot",
        "metasd_train/decoding/fused_ops.py",
        "allowed = slots[None, :] <= pos[:, None]",
        "allowed = slots[None, :] <= pos[:, None] + 1",
        (GREEDY,),
        "the fast forward attends one slot past its position (a stale or future slot)",
    ),
    Mutant(
        "catch_up_off_by_one",
        "metasd_train/decoding/arms.py",
        "logits = self.lm.forward(seq.ids[self.lm.seen : seq.length])[-1]",
        "logits = self.lm.forward(seq.ids[self.lm.seen + 1 : seq.length])[-1]",
        (GREEDY, SAMPLING),
        "ModelArm.draft catches up from one token too far",
    ),
    Mutant(
        "target_rewind_off_by_one",
        "metasd_train/decoding/engine.py",
        "self.target.rewind(L + n)",
        "self.target.rewind(L + n + 1)",
        (GREEDY, SAMPLING),
        "the target keeps the first rejected draft in its cache",
    ),
    Mutant(
        "residual_is_p",
        "metasd_train/decoding/sampling.py",
        "row = (p_n - q_n).clamp_min(0)",
        "row = p_n",
        (SAMPLING,),
        "after a rejection, sample from p instead of norm(max(p - q, 0))",
    ),
    Mutant(
        "eos_dropped",
        "metasd_train/decoding/engine.py",
        'new, stop = new[: hit[0] + 1], "eos"',
        'new, stop = new[: hit[0]], "eos"',
        (GREEDY, SAMPLING),
        "a generation that hits EOS inside a block loses the EOS token",
    ),
]


def copy_repo(dest: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[set[str], str]:
    """The failing test ids, and pytest's last lines."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTEST_XDIST_WORKER": "mutants"}  # one torch thread (conftest)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-p", "no:xdist", *tests]
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    failed = set(re.findall(r"^(?:FAILED|ERROR) (\S+)", out.stdout, re.M))
    return failed, "\n".join(out.stdout.strip().splitlines()[-3:])


def check_import_path(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", "import metasd_train; print(metasd_train.__file__)"],
                         cwd=tree, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip().startswith(str(tree)), f"the copy is not what gets imported: {out.stdout}"


def apply(tree: Path, m: Mutant) -> None:
    path = tree / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise LookupError(f"{m.path}: the text to mutate occurs {text.count(m.old)} times (the source changed?)")
    path.write_text(text.replace(m.old, m.new))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    files = tuple(sorted({t for m in chosen for t in m.tests}))
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        base = Path(tmp) / "baseline"
        copy_repo(base)
        check_import_path(base)
        baseline_failures, tail = run_tests(base, files)
        print(f"baseline ({', '.join(files)}): {len(baseline_failures)} failing; {tail.splitlines()[-1]}")
        survived = 0
        for m in chosen:
            tree = Path(tmp) / m.name
            copy_repo(tree)
            start = time.perf_counter()
            try:
                apply(tree, m)
            except LookupError as e:
                print(f"{m.name:<28} NOT APPLIED  {e}")
                survived += 1
                continue
            failed, tail = run_tests(tree, m.tests)
            killers = sorted(failed - baseline_failures)
            verdict = "killed" if killers else "SURVIVED"
            survived += not killers
            print(f"{m.name:<28} {verdict:<8} {time.perf_counter() - start:5.0f}s  {m.why}")
            for t in killers:
                print(f"{'':<30}by {t}")
            shutil.rmtree(tree)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
