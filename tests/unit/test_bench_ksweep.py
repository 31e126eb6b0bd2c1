"""bench.ksweep's sizes: by default the head's own K and its halvings, so a head whose training cut
its draft vocabulary (drafter.head.draft_vocab_sizes) sweeps without naming sizes."""

import pytest

from bench.ksweep import sizes
from metasd_train.errors import UserError


def test_default_sizes_follow_the_heads_own_vocabulary():
    assert sizes("", 32768) == [2048, 4096, 8192, 16384, 32768]
    assert sizes("", 8192) == [2048, 4096, 8192]
    assert sizes("", 1000) == [1000]


def test_named_sizes_are_sorted_and_checked():
    assert sizes("4096,2048,4096") == [2048, 4096]
    for bad in ("x", "0,8"):
        with pytest.raises(UserError, match="ks="):
            sizes(bad)
