"""Issue 17, the HA store's configuration: sentinel:// urls, replicas_ack, the outcome log
keys; clear errors for what cannot work."""
from __future__ import annotations

import pytest

from proxyd.config import ConfigError, parse
from proxyd.logs import mask_url
from proxyd.store.client import Store, StoreError, parse_target

URL = "sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster?db=2"


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_servers_password():
    assert parse_target(URL) == {"sentinels": [("10.0.0.1", 26379), ("10.0.0.2", 26380)],
                                 "service": "mymaster", "password": "s3cret",
                                 "username": None, "db": 2}
    assert parse_target("sentinel://u:p@[::1]:26379/m")["sentinels"] == [("::1", 26379)]
    assert mask_url(URL) == "sentinel://:***@10.0.0.1:26379,10.0.0.2:26380/mymaster?db=2"


@pytest.mark.parametrize("bad, why", [
    ("sentinel://h1:26379,h2:26379", "service name"),
    ("sentinel://h1,h2:26379/m", "host:port"),
    ("sentinel:///m", "host:port"),
])
def test_a_bad_sentinel_url_is_refused_clearly(bad, why):
    with pytest.raises(StoreError, match=why):
        Store.lazy(bad)


def test_the_store_keys_of_issue_17():
    cfg = parse({"store": {"url": URL, "replicas_ack": 1, "outcome_log": "var/o",
                           "outcome_fsync_s": 0.5}})
    assert (cfg.store.replicas_ack, cfg.store.outcome_log) == (1, "var/o")
    d = parse({}).store
    assert (d.replicas_ack, d.outcome_log, d.outcome_fsync_s) == (0, "var/outcomes", 1.0)
    for doc, why in [({"replicas_ack": 1}, "needs a store with replicas"),
                     ({"replicas_ack": -1}, "replicas_ack: must be >= 0"),
                     ({"outcome_fsync_s": 0}, "outcome_fsync_s"),
                     ({"url": "sentinels://h:1/m"}, "sentinel://")]:
        with pytest.raises(ConfigError, match=why):
            parse({"store": doc})
