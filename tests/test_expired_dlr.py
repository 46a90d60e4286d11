"""Issue 6: Kannel dlr-mask 16 (SMSC rejected) / Jasmin level 1 failure for a message the
operator refused (simulator ``--fail-every 1 --fail-status 0x45``), end to end. Deadlines
are limits on waiting, never measurements."""
from __future__ import annotations

import http.client
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from .conftemplate import config_text, listen
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config
from .test_dlr_e2e import CONFIG, LOCAL_CALLBACKS, Receiver, get


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dlrfail")
    sim, sim_port, _record = start_sim(tmp, None, "--fail-every", "1", "--fail-status", "0x45")
    port, hport = free_port(), free_port()
    cfg = write_config(tmp, config_text(port, sim_port, http={"listen": listen(hport),
                                                               "callback_allow": LOCAL_CALLBACKS},
                                        store={"dir": tmp / "store"}, **CONFIG))
    proxyd = start_proxyd(tmp, cfg, port)
    try:
        wait_until(lambda: proxyd.text().count("upstream sim bound") >= 2, "upstream binds", 20)
        admin(tmp, cfg, "topup", "acme", "100000", "--note", "test funds")
        yield {"http": hport, "proxyd": proxyd}
    finally:
        proxyd.stop()
        sim.stop()


def test_kannel_mask_16_gets_the_rejection(stack):
    rx = Receiver()
    try:
        url = "http://127.0.0.1:%d/dlr?type=%%d&to=%%p&user=%%n&reply=%%A" % rx.port
        status, body, _h = get(stack["http"], "/cgi-bin/sendsms?" + urlencode({
            "username": "acme", "password": "s3cret", "to": "13800138200",
            "text": "refused please", "dlr-mask": "16", "dlr-url": url}))
        assert status != 202, body
        wait_until(lambda: len(rx.ok()) >= 1, "the type 16 report", 30)
        calls = [{k: v[0] for k, v in parse_qs(urlsplit(p).query).items()}
                 for _m, p, _f, _c in rx.ok()]
        assert len(calls) == 1
        c = calls[0]
        assert c["type"] == "16" and c["to"] == "13800138200" and c["user"] == "acme"
        assert c["reply"].startswith("NACK/69/")
    finally:
        rx.close()


def test_kannel_mask_8_gets_nothing_for_a_rejection(stack):
    rx, marker = Receiver(), Receiver()
    try:
        url = "http://127.0.0.1:%d/dlr?type=%%d" % rx.port
        get(stack["http"], "/cgi-bin/sendsms?" + urlencode({
            "username": "acme", "password": "s3cret", "to": "13800138201",
            "text": "refused quietly", "dlr-mask": "11", "dlr-url": url}))
        # a second message asking for 16 goes through the same queue after it: once its
        # report came, the first one's would have come too
        get(stack["http"], "/cgi-bin/sendsms?" + urlencode({
            "username": "acme", "password": "s3cret", "to": "13800138202",
            "text": "refused marker", "dlr-mask": "16",
            "dlr-url": "http://127.0.0.1:%d/m?type=%%d" % marker.port}))
        wait_until(lambda: len(marker.ok()) >= 1, "the marker's report", 30)
        assert rx.requests == []
    finally:
        rx.close()
        marker.close()


def test_jasmin_level_1_failure(stack):
    rx = Receiver(body=b"ACK/Jasmin")
    try:
        c = http.client.HTTPConnection("127.0.0.1", stack["http"], timeout=20)
        form = urlencode({"username": "acme", "password": "s3cret", "to": "13800138203",
                          "content": "jasmin refused", "dlr": "yes", "dlr-level": "1",
                          "dlr-method": "POST",
                          "dlr-url": "http://127.0.0.1:%d/jasmin" % rx.port})
        c.request("POST", "/send", form, {"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        r.read()
        wait_until(lambda: len(rx.ok()) >= 1, "the level 1 failure report", 30)
        forms = [{k: v[0] for k, v in parse_qs(f).items()} for _m, _p, f, _c in rx.ok()]
        assert len(forms) == 1
        assert forms[0]["level"] == "1" and forms[0]["message_status"] == "ESME_RSUBMITFAIL"
    finally:
        rx.close()
