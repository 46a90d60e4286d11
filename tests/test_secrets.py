"""Secrets kept out of logs (`proxyd.logs.mask_url`) and `ssl:` client endpoints refused."""
from __future__ import annotations

import pytest

from proxyd import config
from proxyd.logs import mask_url
from proxyd.store.client import StoreError, Store

from .conftemplate import config_text


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
    ("rediss://alice:p%40ss@db.example:6380/2", "rediss://alice:***@db.example:6380/2"),
    ("unix:///var/run/valkey.sock?db=1&password=s3cret",
     "unix:///var/run/valkey.sock?db=1&password=***"),
    ("http://u:pw@h/dlr?user=a&password=b&to=1", "http://u:***@h/dlr?user=a&password=***&to=1"),
    ("http://h/cb?PW=1&pass=2&passwd=3&pwd=4#frag",
     "http://h/cb?PW=***&pass=***&passwd=***&pwd=***#frag"),
    ("http://h/cb?token=t&secret=s&x=1", "http://h/cb?token=***&secret=***&x=1"),
    ("redis://db:6379", "redis://db:6379"),
    ("http://h/a@b?passenger=1", "http://h/a@b?passenger=1"),
    ("embedded", "embedded"),
    ("", ""),
])
def test_mask_url(url, shown):
    assert mask_url(url) == shown


def test_mask_url_never_raises_on_garbage():
    for junk in ("://", "http://[::1", "?password", "@@@:::", "\udcff://x:y@z"):
        assert isinstance(mask_url(junk), str)
    assert mask_url("a://b:c@") == "a://b:***@"
    assert mask_url("?=x&password=") == "?=x&password=***"


def test_store_errors_do_not_show_the_password():
    with pytest.raises(StoreError) as e:
        Store.lazy("redis://:s3cret@db:6379/x")   # a bad db number
    assert "s3cret" not in str(e.value)
    with pytest.raises(StoreError) as e:
        Store.lazy("http://:s3cret@db:6379/")
    assert "s3cret" not in str(e.value) and "***" in str(e.value)


def test_config_error_does_not_show_the_store_password():
    with pytest.raises(config.ConfigError) as e:
        config.parse({"store": {"url": "mysql://root:s3cret@db/"}})
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize("connect", ["ssl:host=smsc.example:port=3550",
                                     "SSL:smsc.example:3550", " ssl:host=h:port=1"])
def test_ssl_client_endpoint_is_refused_naming_the_tls_form(connect):
    data = {"upstream": [{"name": "op", "connect": connect, "system_id": "p"}]}
    with pytest.raises(config.ConfigError) as e:
        config.parse(data)
    msg = str(e.value)
    assert msg.startswith("upstream[0].connect:")
    assert "tls:host=HOST:port=PORT" in msg and "trustRoots=" in msg


def test_tls_client_endpoint_is_accepted():
    cfg = config.parse({"upstream": [{"name": "op", "system_id": "p",
                                      "connect": "tls:host=smsc.example:port=3550"}]})
    assert cfg.upstreams[0].connect.startswith("tls:")


def test_ssl_listener_is_still_accepted(tmp_path):
    # server endpoints present their own certificate: ssl: is right there
    text = config_text(2775, 2776, smpp={"listen": ["ssl:2775:privateKey=k.pem:certKey=c.pem"]})
    p = tmp_path / "p.toml"
    p.write_text(text)
    assert config.load(str(p)).smpp.listen[0].startswith("ssl:")


def test_store_ca_file_is_checked(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cfg = config.parse({"store": {"url": "rediss://db:6380", "ca_file": str(ca)}})
    assert cfg.store.ca_file == str(ca)
    with pytest.raises(config.ConfigError, match="store.ca_file: only used with a rediss"):
        config.parse({"store": {"url": "redis://db:6379", "ca_file": str(ca)}})
    with pytest.raises(config.ConfigError, match="store.ca_file: no such file"):
        config.parse({"store": {"url": "rediss://db:6380", "ca_file": str(tmp_path / "no")}})
