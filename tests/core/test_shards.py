"""N shards cover every document exactly once, the same way on every run."""

import pytest

from hyperprag.core.shards import parse_shard, shard_of


def test_shards_partition_ids_exactly_once():
    ids = [f"doc-{i}" for i in range(500)]
    parts = [[d for d in ids if shard_of(d, 4) == i] for i in range(4)]
    assert sorted(sum(parts, [])) == sorted(ids)
    assert all(len(p) > 80 for p in parts)  # roughly balanced
    assert shard_of("doc-7", 4) == shard_of("doc-7", 4)


@pytest.mark.parametrize("bad", ["3", "4/4", "-1/2", "a/b", "1/0"])
def test_bad_shard_spec_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(bad)
    assert parse_shard("1/3") == (1, 3)
