"""Atomic folders: whole or nothing, and content-keyed caches keep their first writer."""

from pathlib import Path

from metasd_train.atomic import atomic_dir


def test_atomic_dir_without_replace_keeps_the_first_writer(tmp_path):
    """A content-keyed cache folder published by another process is never removed under its readers."""
    path = tmp_path / "cache" / "model"
    with atomic_dir(path, replace=False) as tmp:
        (tmp / "config.json").write_text("first")
    with atomic_dir(path, replace=False) as tmp:
        (tmp / "config.json").write_text("second")
    assert (path / "config.json").read_text() == "first"
    assert [p.name for p in path.parent.iterdir()] == ["model"]  # the loser's temp folder is gone
    with atomic_dir(path) as tmp:  # the default still replaces (stage outputs are rewritten whole)
        (tmp / "config.json").write_text("third")
    assert (path / "config.json").read_text() == "third"


def _cache_writer(rank: int, store: str, out: str, tok) -> None:
    import torch.distributed as dist

    from metasd_train.models.loading import write_hf_dir
    from metasd_train.models.random_init import tiny_llama

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        write_hf_dir(tiny_llama(seed=rank), tok, Path(out))  # rank 1 may publish first
    finally:
        dist.destroy_process_group()


def test_cache_folder_written_from_two_ranks_is_whole(tmp_path):
    """Under a process group every rank writes a whole folder (save_pretrained writes on rank 0 only)."""
    import torch.multiprocessing as mp
    from transformers import AutoModelForCausalLM

    from metasd_train.models.loading import load_tokenizer

    out = tmp_path / "cache" / "model"
    tok = load_tokenizer("smollm2-135m-instruct")
    mp.spawn(_cache_writer, args=(str(tmp_path / "store"), str(out), tok), nprocs=2)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 32 and (out / "tokenizer_config.json").is_file()
    assert [p.name for p in out.parent.iterdir()] == ["model"]
