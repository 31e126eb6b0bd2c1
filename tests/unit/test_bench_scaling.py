"""bench/scaling.py: the report of bench/scaling.sh from the files each run leaves."""

import json

import pytest

from bench import scaling
from metasd_train.errors import UserError


def _write(out, d, tokens_per_s, accept_len):
    tp = {"generalist": {"tokens": 1000 * d, "seconds": 10.0, "tokens_per_s": tokens_per_s, "world_size": d}}
    acc = {"init": {"code": {"accept_len": 1.0}}, "generalist": {"code": {"acceptance": 0.4, "accept_len": accept_len}}}
    (out / f"scale_{d}gpu_throughput.json").write_text(json.dumps(tp))
    (out / f"scale_{d}gpu_acceptance.json").write_text(json.dumps(acc))


def test_report_scales_against_the_smallest_count(tmp_path):
    for d, tps in ((1, 100.0), (2, 190.0), (4, 360.0)):
        _write(tmp_path, d, tps, 2.0 + d / 10)
    result = scaling.report(tmp_path, scaling.counts("4,1 2"), "qwen-coder", 150)
    assert [r["devices"] for r in result["rows"]] == [1, 2, 4]
    assert [r["scaling"] for r in result["rows"]] == [1.0, 1.9, 3.6]
    assert result["rows"][2]["validation"] == {"metric": "accept_len", "code": 2.4}
    assert json.loads((tmp_path / "scaling.json").read_text()) == result
    md = (tmp_path / "scaling.md").read_text()
    assert "| 4 | 4000 | 10.00 | 360 | 3.60x |" in md and "accept_len" in md
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_missing_count_and_bad_devices_are_one_line_errors(tmp_path):
    _write(tmp_path, 1, 100.0, 2.0)
    with pytest.raises(UserError, match="scale_2gpu_throughput.json is missing"):
        scaling.report(tmp_path, [1, 2], "r", 1)
    with pytest.raises(UserError, match="not a list of device counts"):
        scaling.counts("one two")
