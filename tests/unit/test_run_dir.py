"""Run directories: only our own folders are opened, one process at a time, finished stages keep their
settings and target, leftovers of a kill are cleaned, and outputs are readable by other accounts."""

import errno
import json
import os
import stat
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from metasd_train.atomic import atomic_dir, write_text
from metasd_train.compose import compose
from metasd_train.errors import UserError
from metasd_train.pipeline import lock as lock_module
from metasd_train.pipeline.run_dir import RunDir
from metasd_train.pipeline.runner import link_latest


@pytest.fixture(scope="module")
def base():
    return compose(["recipe=tiny"])


def cfg_for(base, path, **changes):
    cfg = base.copy()
    cfg.run_dir = str(path)
    for key, value in changes.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    return cfg


def open_run(base, path, **changes) -> RunDir:
    return RunDir.create_or_open(cfg_for(base, path, **changes))


def finish(run: RunDir, stage: str) -> None:
    write_text(run.stage_dir(stage) / "out.txt", "whole")
    run.mark_done(stage, 1.0)


def test_new_and_empty_folders_become_runs(base, tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "new", tmp_path / "empty"):
        run = open_run(base, path)
        run.close()
        assert run.manifest()["format"] == "metasd-train run" and (path / "config.yaml").is_file()
        assert RunDir(path).is_run()


def test_an_ordinary_folder_or_a_file_is_refused_and_left_untouched(base, tmp_path):
    user = tmp_path / "mine"
    (user / "data").mkdir(parents=True)
    (user / "data" / "thesis.tex").write_text("years of work")
    (user / "config.yaml").write_text("font: serif\n")  # a config.yaml that is not ours
    with pytest.raises(UserError, match="not a metasd-train run, and nothing in it is touched"):
        open_run(base, user)
    assert sorted(p.name for p in user.rglob("*")) == ["config.yaml", "data", "thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        open_run(base, tmp_path / "file")


def test_a_second_process_is_told_who_holds_the_lock(base, tmp_path):
    run = open_run(base, tmp_path / "run")
    with pytest.raises(UserError, match=rf"in use by process {os.getpid()} on \S+ \(since 20\d\d-"):
        open_run(base, tmp_path / "run")
    run.close()
    open_run(base, tmp_path / "run").close()  # released: the next one opens it


def test_the_lock_of_a_killed_process_is_taken_over(base, tmp_path):
    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / ".lock"
    code = "import sys, time; from metasd_train.pipeline.lock import RunLock; RunLock(sys.argv[1]).acquire('x'); "
    holder = subprocess.Popen([sys.executable, "-c", code + "print(1, flush=True); time.sleep(60)", str(lock)],
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        holder.stdout.readline()
        with pytest.raises(UserError, match=f"in use by process {holder.pid} "):
            open_run(base, tmp_path / "run")
    finally:
        holder.kill()  # kill -9: no chance to release anything
        holder.wait()
    assert json.loads(lock.read_text())["pid"] == holder.pid  # its record stays; its flock went with it
    open_run(base, tmp_path / "run").close()


def test_without_flock_a_dead_pid_of_this_host_is_stale_and_a_live_one_is_not(base, tmp_path, monkeypatch):
    def no_flock(fd, op):
        if op != lock_module.fcntl.LOCK_UN:
            raise OSError(errno.ENOLCK, "no locks here")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_flock)
    run = open_run(base, tmp_path / "run")
    host = json.loads((tmp_path / "run" / ".lock").read_text())["host"]
    with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
        open_run(base, tmp_path / "run")  # our own pid: alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": host, "since": "then"}))
    open_run(base, tmp_path / "run").close()
    run.close()


def test_changed_settings_of_finished_stages_are_refused_the_rest_recorded(base, tmp_path):
    path = tmp_path / "run"
    run = open_run(base, path)
    finish(run, "data")
    run.close()
    with pytest.raises(UserError, match=r"with data.seed=0, not 5 \(also changed: target.seed\); its finished 'data'"):
        open_run(base, path, data__seed=5, target__seed=3)
    # settings of stages not yet run, and how-to-run settings, may change; config.yaml then says so
    open_run(base, path, distill__lr=0.5, stages=["data"], trainer__devices=1, distill__checkpoint_every=7).close()
    assert OmegaConf.load(path / "config.yaml").distill.lr == 0.5


def test_a_key_the_schema_gained_since_the_run_was_made_is_not_a_change(base, tmp_path):
    path = tmp_path / "run"
    run = open_run(base, path)
    finish(run, "data")
    run.close()
    old = OmegaConf.load(path / "config.yaml")
    del old.distill["checkpoint_every"]
    old.data["retired_key"] = 1  # a key since removed from the schema
    (path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    open_run(base, path).close()


def test_another_target_under_the_same_name_is_refused(base, tmp_path):
    run = open_run(base, tmp_path / "run")
    run.check_target("aaaa", "random")
    finish(run, "data")
    run.check_target("aaaa", "random")
    with pytest.raises(UserError, match="fingerprint aaaa, but target.name=random now loads one of fingerprint bbbb"):
        run.check_target("bbbb", "random")
    run.close()


def test_a_truncated_output_makes_its_stage_unfinished(base, tmp_path):
    run = open_run(base, tmp_path / "run")
    finish(run, "data")
    assert run.is_done("data")
    (run.stage_dir("data") / "out.txt").write_text("who")  # truncated Arrow file, say
    assert not run.is_done("data")
    run.close()


@pytest.mark.parametrize("name,text", [("manifest.json", '{"stages": {"data"'), ("config.yaml", "recipe: [tiny\n")])
def test_a_corrupt_manifest_or_config_is_one_line_naming_the_file(base, tmp_path, name, text):
    path = tmp_path / "run"
    open_run(base, path).close()
    (path / name).write_text(text)
    with pytest.raises(UserError, match=rf"{path / name} is corrupt \(") as e:
        open_run(base, path)
    assert "\n" not in str(e.value)


def test_temp_files_left_by_a_kill_are_removed_when_the_run_is_opened(base, tmp_path):
    path = tmp_path / "run"
    open_run(base, path).close()
    leftovers = [path / ".data.x1.tmp" / "data-00000.arrow", path / ".data.partial" / ".code-greedy.x2.tmp" / "a"]
    leftovers += [path / ".checkpoints" / "generalist" / ".last.ckpt.partial.tmp", path / ".manifest.json.x3.tmp"]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("half")
    (path / ".data.partial" / "code-greedy").mkdir()  # a finished shard stays
    open_run(base, path).close()
    assert not [p for p in path.rglob("*.tmp")]
    assert (path / ".data.partial" / "code-greedy").is_dir()


def test_latest_replaces_only_our_own_link(base, tmp_path):
    run = open_run(base, tmp_path / "a")
    (tmp_path / "latest").write_text("a user's file")
    link_latest(run)
    assert (tmp_path / "latest").read_text() == "a user's file"
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").symlink_to(tmp_path / "a")  # an absolute link: the user's, not ours
    link_latest(run)
    assert os.readlink(tmp_path / "latest") == str(tmp_path / "a")
    (tmp_path / "latest").unlink()
    link_latest(run)
    other = open_run(base, tmp_path / "b")
    link_latest(other)
    assert os.readlink(tmp_path / "latest") == "b"
    run.close()
    other.close()


def test_published_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "f.json", "{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
