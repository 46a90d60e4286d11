"""proxyd.config: the checks that turn a bad config into one clear line at load."""
from __future__ import annotations

import pytest

from proxyd.config import ConfigError, parse
from proxyd.passwords import hash_password


def account(**kw) -> dict:
    a = {"system_id": "acme", "password": "pw", "service_codes": ["1069000"]}
    a.update(kw)
    return a


def error(doc: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse(doc)
    return str(e.value)


def test_a_good_config_loads():
    cfg = parse({"account": [account(), account(system_id="b", service_codes=["1069001"])],
                 "http": {"max_receivers": 10}})
    assert cfg.http.max_receivers == 10 and parse({}).http.max_receivers == 100


@pytest.mark.parametrize("n", [0, 21, 25])
def test_sender_max_len_at_most_20(n):
    assert error({"account": [account(sender_max_len=n)]}) == (
        "account[0].sender_max_len: must be 1 to 20 (an SMPP source_addr holds at most 20 "
        "digits), got %d" % n)


def test_service_code_longer_than_sender_max_len():
    assert error({"account": [account(sender_max_len=5)]}) == (
        "account[0].service_codes: '1069000' is longer than sender_max_len 5")


def test_two_accounts_cannot_share_a_service_code():
    msg = error({"account": [account(), account(system_id="other",
                                                service_codes=["1069009", "1069000"])]})
    assert msg.startswith("account[1].service_codes: '1069000' is also a service code of "
                          "account 'acme'; accounts 'acme' and 'other' cannot share it")


def test_one_account_may_list_a_code_twice():
    parse({"account": [account(service_codes=["1069000", "1069000"])]})


@pytest.mark.parametrize("key,value,want", [
    ("bind_timeout_s", 0, "smpp.bind_timeout_s: must be >= 0.01, got 0.0"),
    ("bind_timeout_s", -1, "smpp.bind_timeout_s: must be >= 0.01, got -1.0"),
])
def test_smpp_values(key, value, want):
    assert error({"smpp": {key: value}}) == want


@pytest.mark.parametrize("key,value,want", [
    ("max_request_bytes", 0, "http.max_request_bytes: must be >= 256, got 0"),
    ("max_request_bytes", 1 << 30,
     "http.max_request_bytes: must be <= 1048576 (1 MiB), got 1073741824"),
    ("max_receivers", 0, "http.max_receivers: must be >= 1, got 0"),
])
def test_http_values(key, value, want):
    assert error({"http": {key: value}}) == want


def test_a_hashed_password_loads():
    parse({"account": [account(password=hash_password("s3cret"))]})


@pytest.mark.parametrize("stored,problem", [
    ("scrypt$16384$8$1$c2FsdA==", "a scrypt hash is scrypt$n$r$p$salt$hash"),
    ("scrypt$x$8$1$c2FsdA==$a2V5", "scrypt n, r and p must be integers"),
    ("scrypt$1000$8$1$c2FsdA==$a2V5", "scrypt n must be a power of 2 >= 2, got 1000"),
    ("scrypt$16384$0$1$c2FsdA==$a2V5", "scrypt r must be 1 to 64, got 0"),
    ("scrypt$16384$8$17$c2FsdA==$a2V5", "scrypt p must be 1 to 16, got 17"),
    ("scrypt$262144$8$1$c2FsdA==$a2V5", "scrypt n*r needs 256 MiB, more than the 128 MiB"),
    ("scrypt$16384$8$1$!!$a2V5", "scrypt salt and hash must be standard base64"),
    ("scrypt$16384$8$1$c2FsdA==$", "scrypt salt and hash must not be empty"),
])
def test_scrypt_parameters_checked(stored, problem):
    msg = error({"account": [account(password=stored)]})
    assert msg.startswith("account[0].password: " + problem), msg
    assert "hash-password" in msg


def test_low_balance_settings():
    cfg = parse({"account": [account(low_balance=500, notify_url="https://crm.example/l?b=%b")]})
    assert cfg.accounts[0].low_balance == 500
    assert parse({"account": [account()]}).accounts[0].low_balance == 0
    assert "account[0].low_balance" in error({"account": [account(low_balance=-1)]})
    assert "must be an integer" in error({"account": [account(low_balance="100")]})
    msg = error({"account": [account(notify_url="ftp://x/?password=hunter2")]})
    assert msg.startswith("account[0].notify_url: not a callable URL") and "hunter2" not in msg
