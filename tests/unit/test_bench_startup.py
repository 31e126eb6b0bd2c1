"""bench.startup: its arguments, and a clear error off a GPU."""

import pytest
import torch

from bench.startup import SHAPES, main, parse_args
from metasd_train.errors import UserError


def test_defaults_and_a_bad_shape():
    assert parse_args([]).shapes == "qwen-coder" and set(SHAPES) == {"qwen-coder", "smollm2"}
    with pytest.raises(UserError, match="shapes='llama70b' is not known"):
        parse_args(["shapes=llama70b"])
    with pytest.raises(UserError, match="heads"):
        parse_args(["heads=-1"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without a GPU")
def test_without_a_gpu_it_says_so_before_building_anything():
    with pytest.raises(UserError, match="GPU"):
        main(["shapes=smollm2"])
