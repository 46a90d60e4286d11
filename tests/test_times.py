"""SMPP 3.4 time fields (section 7.1): what the intake lets through."""
from __future__ import annotations

import pytest

from proxyd.smpp.times import valid_time


@pytest.mark.parametrize("value", [b"", b"261201123000032+", b"261201123000000-",
                                   b"991231235959948+", b"000001000000000R",
                                   b"010203040506000R"])
def test_valid_times(value):
    assert valid_time(value)


@pytest.mark.parametrize("value", [b"x", b"2612011230000", b"261201123000032",
                                   b"261201123000032+0", b"261201123000032Z",
                                   b"26120112300003a+", b"261301123000032+",
                                   b"261200123000032+", b"261201243000032+",
                                   b"261201126000032+", b"261201123060032+",
                                   b"261201123000049+", b"000001000000100R",
                                   b"+261201123000032", b"261201123000032r"])
def test_malformed_times(value):
    assert not valid_time(value)
