"""[store] maxmemory: a size, checked at load."""
from __future__ import annotations

import pytest

from proxyd import config


@pytest.mark.parametrize("value", ["lots", "0", "1tb", "-5mb", ""])
def test_bad_maxmemory_is_a_config_error(value):
    with pytest.raises(config.ConfigError, match="store.maxmemory"):
        config.parse({"store": {"maxmemory": value}})


@pytest.mark.parametrize("value", ["512mb", "2gb", "1048576", "64KB"])
def test_sizes_are_accepted(value):
    assert config.parse({"store": {"maxmemory": value}}).store.maxmemory == value
