"""[policy] max_pending_parts / max_pending_bytes and the accounts' own: checked at load."""
from __future__ import annotations

import pytest

from proxyd import config

ACCT = {"system_id": "a", "password": "pw"}


def test_defaults_and_per_account_values():
    cfg = config.parse({"account": [dict(ACCT, max_pending_parts=3)]})
    assert (cfg.policy.max_pending_parts, cfg.policy.max_pending_bytes) == (200, 262144)
    assert cfg.accounts[0].max_pending_parts == 3 and cfg.accounts[0].max_pending_bytes == 0


@pytest.mark.parametrize("key", ["max_pending_parts", "max_pending_bytes"])
def test_policy_caps_must_be_positive(key):
    with pytest.raises(config.ConfigError, match="policy.%s: must be >= 1" % key):
        config.parse({"policy": {key: 0}})


@pytest.mark.parametrize("key", ["max_pending_parts", "max_pending_bytes"])
def test_account_caps_may_not_be_negative(key):
    with pytest.raises(config.ConfigError, match=r"account\[0\].%s: must be >= 0" % key):
        config.parse({"account": [dict(ACCT, **{key: -1})]})
