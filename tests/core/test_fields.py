"""Config dataclasses from mappings: known fields pass through, unknown ones are named in the error."""

from dataclasses import dataclass

import pytest

from hyperprag.core.fields import from_known_fields


@dataclass
class Cfg:
    rank: int = 2
    lr: float = 1e-3


def test_known_fields_build_the_dataclass():
    assert from_known_fields(Cfg, {"rank": 4}) == Cfg(rank=4, lr=1e-3)


def test_unknown_fields_are_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown Cfg fields \['rnak'\]; known: \['lr', 'rank'\]"):
        from_known_fields(Cfg, {"rnak": 4})
    with pytest.raises(ValueError, match="unknown teacher settings fields"):
        from_known_fields(Cfg, {"x": 1}, "teacher settings")
