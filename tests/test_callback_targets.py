"""Callback targets (issue 15, item 5): which URLs can be called and which addresses may be
reached without a `[http] callback_allow` prefix. Pure, no sockets."""
from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from proxyd import config as config_mod
from proxyd.http import params as PR
from proxyd.http.callclient import CallbackClient, Refused
from proxyd.http.dlr import Request
from proxyd.http.targets import BadUrl, allowed_by, parse_url, public, shown


@pytest.mark.parametrize("url", [
    "http://x:y/", "http://x:/", "http:///path", "http://", "https://:80/", "ftp://x/",
    "mailto:x@y", "x", "", "//h/p", "http://a b/", "http://h/\x00", "http://h/\n",
    "http://hé.example/", "http://[::1/", "http://[nothex]/", "http://h:99999/",
    "http://h:0/", "http://bad_host!/", "javascript:alert(1)", "http://h:-1/",
])
def test_malformed_urls(url):
    with pytest.raises(BadUrl):
        parse_url(url)


def test_well_formed_urls():
    t = parse_url("https://CB.Example:8443/d?x=%d&y=%p")
    assert (t.scheme, t.host, t.port) == ("https", "cb.example", 8443)
    assert t.url == "https://cb.example:8443/d?x=%d&y=%p"
    assert parse_url("http://h/").port == 80 and parse_url("https://h").port == 443
    t = parse_url("http://[2001:db8::1]:81/x")
    assert (t.host, t.port, t.url) == ("2001:db8::1", 81, "http://[2001:db8::1]:81/x")


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.5.6.7", "10.0.0.1", "172.16.3.4", "192.168.1.1", "169.254.169.254",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "100.64.0.1",
    "192.0.2.1", "198.18.0.1", "240.0.0.1", "::1", "::", "fc00::1", "fd12:3456::1",
    "fe80::1", "fe80::1%eth0", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "64:ff9b::7f00:1", "2002:7f00:1::1", "2001:db8::1", "not an address",
])
def test_non_global_addresses_are_not_public(address):
    assert not public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "203.0.114.1",
                                     "2001:4860:4860::8888", "2606:4700::1111"])
def test_global_addresses_are_public(address):
    assert public(address)


def test_allow_prefixes_match_the_url_as_called():
    allow = ("http://127.0.0.1:8000/",)
    assert allowed_by(parse_url("http://127.0.0.1:8000/dlr?x=1"), allow)
    assert allowed_by(parse_url("HTTP://127.0.0.1:8000/dlr"), allow)
    assert not allowed_by(parse_url("http://127.0.0.1:8001/dlr"), allow)
    assert not allowed_by(parse_url("https://127.0.0.1:8000/dlr"), allow)
    # user info is not part of the target: this is a call to 169.254.169.254
    assert not allowed_by(parse_url("http://127.0.0.1:8000@169.254.169.254/"), allow)
    assert not allowed_by(parse_url("http://127.0.0.1:8000/"), ())
    assert allowed_by(parse_url("http://cb.internal/x"), ("HTTP://CB.Internal/",))


class Resolver:
    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def __call__(self, host, port):
        self.asked.append(host)
        return defer.succeed(self.answers[host])


def client(answers, allow=()):
    c = CallbackClient(Clock(), allow=allow, resolve=Resolver(answers))
    sent = []
    c._send = lambda addresses, target, request: sent.append((addresses, target)) or \
        defer.Deferred()
    return c, sent


def failure_of(d):
    out = []
    d.addErrback(out.append)
    return out[0] if out else None


def test_a_name_is_refused_when_any_address_it_resolves_to_is_not_public():
    c, sent = client({"mixed.test": ["8.8.8.8", "10.0.0.1"], "meta.test": ["169.254.169.254"],
                      "ok.test": ["8.8.8.8", "2001:4860:4860::8888"]})
    assert failure_of(c.call(Request("GET", "http://mixed.test/x"))).check(Refused)
    assert failure_of(c.call(Request("GET", "http://meta.test/x"))).check(Refused)
    assert sent == []
    c.call(Request("GET", "http://ok.test/x"))
    assert [a for a, _t in sent] == [["8.8.8.8", "2001:4860:4860::8888"]]


def test_literal_addresses_are_checked_without_resolving():
    c, sent = client({})
    for url in ("http://127.0.0.1/", "http://[::1]:8080/", "http://169.254.169.254/latest",
                "http://10.1.2.3/", "http://[fe80::1]/", "http://0.0.0.0:80/"):
        assert failure_of(c.call(Request("GET", url))).check(Refused), url
    assert failure_of(c.call(Request("GET", "http://x:y/"))).check(BadUrl)
    assert sent == [] and c.resolve.asked == []


def test_an_allowed_prefix_lets_a_local_target_through():
    c, sent = client({"cb.local": ["127.0.0.1"]},
                     allow=("http://127.0.0.1:8000/", "http://cb.local/"))
    c.call(Request("GET", "http://127.0.0.1:8000/dlr"))
    c.call(Request("GET", "http://cb.local/x"))
    assert [a for a, _t in sent] == [["127.0.0.1"], ["127.0.0.1"]]
    assert failure_of(c.call(Request("GET", "http://127.0.0.1:8001/dlr"))).check(Refused)


# --- at submit: the documented refusals ------------------------------------------------------

def args(**kw):
    return {k.replace("_", "-").encode(): [v.encode() if isinstance(v, str) else v]
            for k, v in kw.items() if v is not None}


@pytest.mark.parametrize("url", ["http://x:y/", "http:///dlr", "https://:81/", "ftp://h/",
                                 "http://h:99999/d", "http://[::1/d"])
def test_kannel_bad_dlr_url_is_refused(url):
    with pytest.raises(PR.Invalid) as e:
        PR.parse_kannel(args(username="u", password="p", to="13800138000", text="hi",
                             dlr_mask="3", dlr_url=url))
    assert (e.value.status, e.value.text) == (400, "DLR-URL field misformed, rejected")


@pytest.mark.parametrize("url", ["http://x:y/", "http:///dlr", "https://h:0/"])
def test_jasmin_bad_dlr_url_is_refused(url):
    with pytest.raises(PR.Invalid) as e:
        PR.parse_jasmin(args(username="u", password="p", to="13800138000", content="hi",
                             dlr_url=url))
    assert e.value.status == 400
    assert e.value.text == ("Argument [dlr-url] has an invalid value: [%s]: not a callable "
                            "http(s) URL." % url)


def test_config_keys():
    cfg = config_mod.parse({"http": {"callback_allow": ["http://127.0.0.1:8000/"],
                                     "callback_per_account": 3}})
    assert cfg.http.callback_allow == ("http://127.0.0.1:8000/",)
    assert cfg.http.callback_per_account == 3 and cfg.http.callback_max_body == 65536
    with pytest.raises(config_mod.ConfigError, match="callback_allow"):
        config_mod.parse({"http": {"callback_allow": ["127.0.0.1:8000"]}})
    with pytest.raises(config_mod.ConfigError, match="callback_per_account"):
        config_mod.parse({"http": {"callback_per_account": 0}})
    with pytest.raises(config_mod.ConfigError, match="mo_url"):
        config_mod.parse({"account": [{"system_id": "a", "password": "p",
                                       "mo_url": "http://x:y/mo?from=%p"}]})


def test_logged_urls_hold_no_secrets():
    assert shown("https://user:pw@cb.example:81/d?to=138&t=%d#x") == "https://cb.example:81/d"
    assert shown("http://u:p@h?x=1") == "http://h"
    assert shown("http://x:y/") == "http://x:y/"


@pytest.mark.parametrize("url,allow,refused", [
    ("http://127.0.0.1:8000/d", (), True),
    ("http://127.0.0.1:8000/d", ("http://127.0.0.1:8000/",), False),
    ("http://127.0.0.1:9000/d", ("http://127.0.0.1:8000/",), True),
    ("http://169.254.169.254/latest", (), True),
    ("http://u:p@192.168.1.1/d", ("http://u:p@192.168.1.1/",), True),  # as called: no user info
    ("http://[fe80::1%25eth0]/d", (), True),
    ("http://8.8.8.8/d", (), False),
    ("http://localhost/d", (), False),          # a name: checked once resolved, when called
])
def test_a_dlr_url_to_a_non_public_literal_address_is_refused_at_submit(url, allow, refused):
    kannel = args(username="u", password="p", to="13800138000", text="hi", dlr_mask="3",
                  dlr_url=url)
    jasmin = args(username="u", password="p", to="13800138000", content="hi", dlr_url=url)
    if not refused:
        assert PR.parse_kannel(kannel, allow).dlr.url == url
        assert PR.parse_jasmin(jasmin, allow).dlr.url == url
        return
    with pytest.raises(PR.Invalid) as e:
        PR.parse_kannel(kannel, allow)
    assert (e.value.status, e.value.text) == (400, "DLR-URL field misformed, rejected")
    with pytest.raises(PR.Invalid) as e:
        PR.parse_jasmin(jasmin, allow)
    assert e.value.status == 400 and "is not a public address." in e.value.text
