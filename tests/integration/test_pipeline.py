"""The whole pipeline on the tiny recipe: outputs, resume, regeneration, export, decode."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from metasd_train.compose import compose
from metasd_train.errors import UserError
from metasd_train.pipeline.run_dir import RunDir
from metasd_train.pipeline.runner import train

STAGES = ["data", "distill", "log_acceptance", "fit_bandit", "export"]


def run_tiny(path, *overrides):
    return train(compose(["recipe=tiny", f"run_dir={path}", *overrides]), root=str(path.parent))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return run_tiny(tmp_path_factory.mktemp("runs") / "full")


def finished(run: RunDir) -> dict:
    return {k: v["finished"] for k, v in run.manifest()["stages"].items()}


def test_full_run_writes_every_stage(full_run):
    p = full_run.path
    assert list(full_run.manifest()["stages"]) == STAGES
    for f in (
        "config.yaml",
        "data/prompts",
        "data/examples",
        "distill/generalist/model.safetensors",
        "distill/specialists/code/adapter_model.safetensors",
        "log_acceptance/rounds",
        "log_acceptance/tau_heatmap.png",
        "fit_bandit/bandit.safetensors",
        "fit_bandit/replay.json",
        "fit_bandit/reward_separation.png",
        "export/ensemble.json",
        "export/code/README.md",
        "export/code/adapter/adapter_config.json",
    ):
        assert (p / f).exists(), f
    assert not list(p.glob(".*.tmp")) and not (p / ".data.partial").exists()
    card = (p / "export/code/README.md").read_text()
    assert card.startswith("---\nbase_model: random") and "| code |" in card


def test_killed_between_stages_resumes_with_the_same_outputs(full_run, tmp_path):
    path = tmp_path / "resumed"
    run_tiny(path, "stages=[data,distill]")  # "killed" after distill
    before = finished(RunDir(path))
    run = run_tiny(path)  # the same command again
    after = finished(run)
    assert {k: after[k] for k in before} == before  # finished stages were skipped
    assert list(after) == STAGES
    for name in ("generalist", "code", "math"):
        a = load_file(str(full_run.path / "export" / name / "model.safetensors"))
        b = load_file(str(run.path / "export" / name / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ja = json.loads((full_run.path / "fit_bandit/replay.json").read_text())
    jb = json.loads((run.path / "fit_bandit/replay.json").read_text())
    assert ja["deterministic"] == jb["deterministic"]  # the "timed" part rests on timed forwards


def test_failure_inside_a_stage_leaves_no_half_written_output(tmp_path, monkeypatch):
    import metasd_train.pipeline.stage_distill as stage

    path = tmp_path / "crash"

    def boom(*a, **k):
        raise RuntimeError("killed mid-stage")

    monkeypatch.setattr(stage, "_train", boom)
    with pytest.raises(RuntimeError):
        run_tiny(path)
    assert (path / "data").exists() and not (path / "distill").exists()
    assert list(RunDir(path).manifest()["stages"]) == ["data"]
    monkeypatch.undo()
    assert list(run_tiny(path).manifest()["stages"]) == STAGES


def test_deleting_one_stage_output_regenerates_only_that_stage(full_run, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(full_run.path, path)
    before = finished(RunDir(path))
    shutil.rmtree(path / "fit_bandit")
    after = finished(run_tiny(path))
    changed = [k for k in STAGES if after[k] != before[k]]
    assert changed == ["fit_bandit"]


def test_resuming_with_another_target_is_refused(full_run):
    with pytest.raises(UserError, match="was made with target.name"):
        compose_and_open = compose(["recipe=tiny", f"run_dir={full_run.path}", "target.name=smollm2-135m-instruct"])
        RunDir.create_or_open(compose_and_open)


def test_decode_refuses_an_ensemble_trained_for_another_target(full_run, tmp_path):
    from metasd_train.cli.decode import decode, parse_args

    export = tmp_path / "export"
    shutil.copytree(full_run.path / "export", export)
    manifest = json.loads((export / "ensemble.json").read_text())
    manifest["target"]["seed"] = 123  # a different random target
    (export / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="fingerprint"):
        decode(parse_args([f"run={export}", "prompt=hi", "quiet=true"]))


@pytest.mark.parametrize(
    "shipped,amx,want",
    [
        ("fp32", True, torch.float32),
        ("bf16", False, torch.bfloat16),
        ("auto", True, torch.bfloat16),  # a CPU with bf16 matrix units
        ("auto", False, torch.float32),
        (None, True, torch.bfloat16),  # a manifest from before decode.dtype was read: auto
    ],
)
def test_decode_dtype_defaults_to_the_exports_and_an_explicit_one_wins(
    full_run, tmp_path, monkeypatch, shipped, amx, want
):
    from metasd_train.export.ensemble import load_ensemble

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    export = tmp_path / "export"
    shutil.copytree(full_run.path / "export", export)
    manifest = json.loads((export / "ensemble.json").read_text())
    manifest["decode"].pop("dtype")
    if shipped is not None:
        manifest["decode"]["dtype"] = shipped
    (export / "ensemble.json").write_text(json.dumps(manifest))
    assert load_ensemble(export, "cpu").target.model.dtype == want
    other = torch.bfloat16 if want == torch.float32 else torch.float32
    assert load_ensemble(export, "cpu", dtype=str(other).removeprefix("torch.")).target.model.dtype == other


def test_decode_answers_a_question_file(full_run, tmp_path):
    from metasd_train.cli.decode import decode, parse_args

    q = tmp_path / "q.jsonl"
    q.write_text(
        '{"question_id": 1, "category": "code", "turns": ["Write a loop.", "Now in C."]}\n'
        '{"question_id": 2, "category": "math", "turns": ["What is 3+4?"]}\n'
    )
    out = tmp_path / "answers.jsonl"
    summary = decode(
        parse_args(
            [f"run={full_run.path}", f"prompts={q}", f"out={out}", "max_new_tokens=8", "quiet=true", "dtype=bf16"]
        )
    )
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(a["answers"]) for a in answers] == [2, 1]
    assert set(summary) == {"code", "math", "all"} and summary["all"]["requests"] == 3
    assert summary["all"]["speedup"] > 0 and (tmp_path / "answers.arms.png").exists()


def test_exported_drafter_matches_hf_assisted_generation(full_run, monkeypatch):
    """Plain transformers loads the export; HF assisted generation's match counts equal our accepted counts."""
    from transformers import AutoModelForCausalLM
    from transformers.generation.candidate_generator import AssistedCandidateGenerator

    from metasd_train.bandit.chooser import BanditChooser
    from metasd_train.bandit.policies import FixedArm
    from metasd_train.decoding.arms import ModelArm
    from metasd_train.decoding.engine import SpecEngine
    from metasd_train.models import load_model

    manifest = json.loads((full_run.path / "export/ensemble.json").read_text())
    target = load_model(manifest["target"], "cpu").model
    drafter = AutoModelForCausalLM.from_pretrained(full_run.path / "export/generalist", dtype=torch.float32).eval()
    gamma = 3
    drafter.generation_config.num_assistant_tokens = gamma
    drafter.generation_config.num_assistant_tokens_schedule = "constant"
    drafter.generation_config.assistant_confidence_threshold = 0.0
    matches = []
    original = AssistedCandidateGenerator.update_candidate_strategy

    def record(self, input_ids, scores, num_matches):
        matches.append(int(num_matches))
        return original(self, input_ids, scores, num_matches)

    monkeypatch.setattr(AssistedCandidateGenerator, "update_candidate_strategy", record)
    engine = SpecEngine(target, [ModelArm("generalist", drafter, target.config.vocab_size, gamma)], eos_ids=[])
    total = 0
    for prompt in ([5, 17, 300, 42], [1000, 2000, 3000], [7] * 6):
        matches.clear()
        hf = target.generate(
            torch.tensor([prompt]),
            assistant_model=drafter,
            do_sample=False,
            max_new_tokens=20,
            eos_token_id=None,
            pad_token_id=0,
        )
        ours = engine.generate(prompt, 20, BanditChooser(FixedArm(1)))
        assert ours.tokens == hf[0, len(prompt) :].tolist()
        assert [r.accepted for r in ours.rounds] == matches
        total += sum(matches)
    assert 0 < total < 3 * 20  # some drafts accepted, some rejected: the comparison is not trivial


def bench_rows(run_path, shipped: str, mode: str, reference: str) -> set[str]:
    """The rows the bench must report on the tiny run (1 prompt per category for HF's slow rows)."""
    manifest = json.loads((run_path / "export/ensemble.json").read_text())
    arms = [d["name"] for d in manifest["drafters"]] + (["ngram"] if manifest["ngram"] else [])
    rows = {"hf_static_compile", "hf_eager (1 prompts)", "engine_target_only", "oracle_per_category_hindsight"}
    rows |= {f"metasd:{shipped}:persistent", f"metasd:{shipped}:paper", f"not_shipped:metasd:{reference}"}
    rows |= {f"sampled_T0.7:metasd:{shipped}:{mode}", "sampled_T0.7:engine_target_only"}
    rows |= {"hf_assisted:generalist (1 prompts)"} if "generalist" in arms else set()
    return rows | {f"engine_fixed:{a}" for a in arms}


def test_bench_runs_every_configuration_and_greedy_ones_equal_the_target(full_run, tmp_path):
    """bench on the tiny run (CPU, fp32): every configuration reports, greedy ones give the target's tokens,
    fp32 decoding equals HF greedy on every prompt, and headline.json gets this recipe's entry merged in."""
    from bench.bench import main
    from bench.headline import KEYS
    from metasd_train.bandit.policies import POLICIES

    out, headline = tmp_path / "bench", tmp_path / "headline.json"
    headline.write_text(json.dumps({"another_recipe": {"card": "elsewhere"}}))
    heldout = full_run.path / "data/heldout.jsonl"
    bandit = json.loads((full_run.path / "export/bandit/bandit.json").read_text())
    shipped, mode = bandit["policy"], "paper" if bandit["config"].get("reset_per_request") else "persistent"
    reference = next(p for p in POLICIES if p not in (shipped, "fixed"))
    common = [f"run={full_run.path}", f"prompts={heldout}", "per_category=1", "max_new_tokens=12", f"out={out}"]
    common += [f"headline={headline}", "commit=abc123", "hf_max=1", "check_fp32=12", "dtype=fp32"]
    main([*common, "check_eager=1", f"policies={reference}"])
    report = json.loads((out / "results.json").read_text())
    names = set(report["results"])
    assert bench_rows(full_run.path, shipped, mode, reference) <= names
    mismatches = report["meta"]["greedy_mismatches_vs_baseline"]
    assert set(mismatches) == {k for k in names if not k.startswith(("hf_", "sampled_"))}
    assert set(mismatches.values()) == {0}, mismatches
    notes = report["meta"]["notes"]
    n = len({q["category"] for q in map(json.loads, heldout.read_text().splitlines())})
    assert notes["fp32_fast_path_vs_hf_greedy_same_tokens"].startswith(f"{n}/{n} ")
    assert notes["float32_fast_vs_eager_engine_same_tokens"].startswith("1/1 ")  # CPU fast path vs HF-cache engine

    written = json.loads(headline.read_text())
    assert written["another_recipe"] == {"card": "elsewhere"}  # merged, not overwritten
    entry = written["tiny"]
    assert tuple(entry) == KEYS
    assert entry["commit"] == "abc123" and entry["prompts"] == n and entry["metasd_policy"] == shipped
    assert f"engine_fixed:{entry['best_fixed_arm']}" in names
    ratios = [k for k in KEYS if k.endswith(("_over_hf_compile", "_over_best_fixed", "_over_oracle", "_target_alone"))]
    assert all(entry[k] > 0 for k in [*ratios, "hf_compile_tok_s", "startup_s"] if not k.startswith("head_"))
    if entry["head_tau"] is None:  # no head arm in this ensemble: every head field is null
        assert entry["head_over_hf_compile"] is None and entry["head_step_over_target_step"] is None
    else:
        assert entry["head_tau"] >= 1 and entry["head_over_hf_compile"] > 0

    main([*common, "timed=false", "check_eager=0"])
    checks = json.loads((out / "checks.json").read_text())["checks"]
    assert list(checks) == ["fp32_fast_path_vs_hf_greedy_same_tokens"]
    assert json.loads(headline.read_text()) == written  # a checks-only run leaves the headline alone


def test_written_examples_join_the_generated_ones_and_a_written_change_keeps_the_shards(tmp_path):
    """data.written: the source's own responses become training rows next to the target's answers
    (same columns), never with a domain prompt; the partial shards' stamp leaves data.written out, so
    changing it regenerates no answer."""
    from types import SimpleNamespace

    import datasets

    from metasd_train.pipeline.stage_data import partial_dir

    path = tmp_path / "written"
    run = run_tiny(path, "stages=[data]", "+data.written.code={source: sharegpt, n: 4}")
    summary = run.manifest()["stages"]["data"]["summary"]
    assert summary["written"] == {"code": "4 of 4"}
    examples = datasets.load_from_disk(str(path / "data" / "examples"))
    written = examples.filter(lambda r: r["kind"] == "written")
    assert len(written) == 4 and set(written["split"]) == {"train"} and set(written["domain"]) == {"code"}
    own = {r["prompt"] for r in examples.filter(lambda r: r["kind"] != "written")}
    assert not own & set(written["prompt"])

    def ctx(*overrides):
        return SimpleNamespace(cfg=compose(["recipe=tiny", *overrides]), run=SimpleNamespace(path=tmp_path))

    shard = partial_dir(ctx()) / "code-greedy"
    shard.mkdir()
    assert partial_dir(ctx("+data.written.code={source: sharegpt, n: 2}")) == shard.parent and shard.is_dir()
    partial_dir(ctx("data.max_new_tokens=13"))  # a setting the answers depend on: the shards go
    assert not shard.exists()


def test_a_head_run_cuts_its_draft_vocabulary_and_every_later_stage_uses_the_cut_head(tmp_path):
    """drafter.head.draft_vocab_sizes: the generalist head is cut after training (the specialists
    then train on the cut head), the record names what was tried and kept, and the acceptance log,
    bandit fit and export all run on the cut head; the export's head has the kept size."""
    from metasd_train.models.head_io import load_head

    run = run_tiny(
        tmp_path / "head",
        "drafter=head",
        "drafter.head.draft_vocab=64",
        "drafter.head.draft_vocab_sizes=[16,32,128]",  # 128 is not smaller than 64: never tried
        "drafter.head.draft_vocab_tolerance=0.5",
    )
    record = json.loads((run.path / "distill/draft_vocab.json").read_text())
    assert set(record["accept_len"]) <= {"16", "32", "64"} and "64" in record["accept_len"]
    kept = record["kept"]
    assert kept in (16, 32, 64) and str(kept) in record["accept_len"]
    assert run.manifest()["stages"]["distill"]["summary"]["draft_vocab"]["kept"] == kept
    assert json.loads((run.path / ".checkpoints/draft_vocab.json").read_text()) == {"kept": kept}  # for a resume
    assert load_head(run.path / "distill/generalist").config.draft_vocab_size == kept
    ensemble = json.loads((run.path / "export/ensemble.json").read_text())
    assert [d["name"] for d in ensemble["drafters"]][0] == "generalist"
    assert json.loads((run.path / "export/generalist/config.json").read_text())["draft_vocab_size"] == kept
