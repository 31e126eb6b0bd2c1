"""Atomic folders: whole or nothing, and content-keyed caches keep their first writer."""

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
