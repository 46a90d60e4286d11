"""Issue 5 end to end: simulator + proxyd (twistd) + a plain urllib client.

Every reply is checked byte for byte (status and body). One stack serves the module; each
test uses its own destinations or accounts, so tests do not disturb each other's checks.
"""
from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.text.udh import parse_concat, split_udh

from .conftemplate import config_text, listen
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, write_config
from .valkey_fixture import ValkeyProcess

HTTP = {"max_request_bytes": 4096, "max_receivers": 5,     # and a listener
        "max_connections_per_address": 300}    # 200 concurrent requests from one address
CONFIG = dict(relay={"queue_wait_s": 0.5},
              upstream={"binds": 2, "window": 100, "response_timeout_s": 5, "reconnect_max_s": 1,
                        "prefixes": ["13", "15", "+86"]},
              account={"max_parts": 6},
              accounts=[{"system_id": "poor", "password": "poor1", "service_codes": ["10690002"]},
                        {"system_id": "bulk", "password": "bulk1", "service_codes": ["10690003"],
                         "price": 3},
                        {"system_id": "pfx", "password": "pfx1", "service_codes": ["10690004"],
                         "sender_mode": "prefix"}])

ACCEPTED = "0: Accepted for delivery"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    sim, sim_port, record = start_sim(tmp)
    port, hport = free_port(), free_port()
    cfg = write_config(tmp, config_text(port, sim_port, http={"listen": listen(hport), **HTTP},
                                        **CONFIG))
    proxyd = start_proxyd(tmp, cfg, hport)
    try:
        wait_until(lambda: proxyd.text().count("upstream sim bound") >= 2, "upstream binds", 20)
        admin(tmp, cfg, "topup", "acme", "1000000")
        admin(tmp, cfg, "topup", "bulk", "100000")
        admin(tmp, cfg, "topup", "pfx", "100000")
        yield {"http": hport, "record": record, "proxyd": proxyd, "tmp": tmp, "cfg": cfg}
    finally:
        proxyd.stop()
        sim.stop()


def call(port: int, path: str, method: str = "GET", body: bytes | None = None,
         headers: dict | None = None, **q) -> tuple[int, str, dict]:
    url = "http://127.0.0.1:%d%s" % (port, path)
    if q:
        url += "?" + urllib.parse.urlencode(q)
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def kannel(stack, **q) -> tuple[int, str]:
    q.setdefault("username", "acme")
    q.setdefault("password", "s3cret")
    if "frm" in q:
        q["from"] = q.pop("frm")
    status, body, _ = call(stack["http"], "/cgi-bin/sendsms", **q)
    return status, body


def submits_to(stack, dest: str) -> list:
    out = []
    for line in read_record(stack["record"]):
        p = P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(line["body"]))
        if p.destination_addr.decode() == dest:
            out.append(p)
    return out


# --- Kannel ------------------------------------------------------------------------------------

def test_kannel_accepted_and_relayed(stack):
    status, body, headers = call(stack["http"], "/cgi-bin/sendsms", username="acme",
                                 password="s3cret", to="13800000001", text="hello world",
                                 **{"from": "1069000188"})
    assert (status, body) == (202, ACCEPTED)
    mid = headers["X-Proxyd-Message-Id"]
    assert len(mid) == 25
    wait_until(lambda: submits_to(stack, "13800000001"), "submit at the simulator", 10)
    [p] = submits_to(stack, "13800000001")
    assert p.source_addr == b"1069000188" and p.short_message == b"hello world"
    assert p.data_coding == 0 and p.esm_class == 0 and p.registered_delivery == 0


def test_kannel_user_pass_aliases_and_default_sender(stack):
    status, body, _ = call(stack["http"], "/cgi-bin/sendsms", user="acme", **{"pass": "s3cret"},
                           to="13800000002", text="alias")
    assert (status, body) == (202, ACCEPTED)
    wait_until(lambda: submits_to(stack, "13800000002"), "submit", 10)
    assert submits_to(stack, "13800000002")[0].source_addr == b"10690001"


def test_kannel_post_form(stack):
    form = urllib.parse.urlencode({"username": "acme", "password": "s3cret",
                                   "to": "13800000003", "text": "by post"}).encode()
    status, body, _ = call(stack["http"], "/cgi-bin/sendsms", "POST", form,
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (202, ACCEPTED)


def test_kannel_wrong_password(stack):
    assert kannel(stack, password="nope", to="13800000004", text="x") == \
        (403, "Authorization failed for sendsms")
    assert kannel(stack, username="nobody", to="13800000004", text="x") == \
        (403, "Authorization failed for sendsms")
    status, body, _ = call(stack["http"], "/cgi-bin/sendsms", to="13800000004", text="x")
    assert (status, body) == (403, "Authorization failed for sendsms")


def test_kannel_missing_and_empty_to(stack):
    assert kannel(stack, text="x") == (400, "Missing receiver number, rejected")
    assert kannel(stack, to="", text="x") == (400, "Empty receiver number not allowed, rejected")
    assert kannel(stack, to="   ", text="x") == \
        (400, "Empty receiver number not allowed, rejected")


@pytest.mark.parametrize("field,value,text", [
    ("dlr-mask", "abc", "DLR-Mask field misformed, rejected"),
    ("dlr-mask", "64", "DLR-Mask field misformed, rejected"),
    ("dlr-mask", "3x", "DLR-Mask field misformed, rejected"),
    ("dlr-url", "ftp://example.com/", "DLR-URL field misformed, rejected"),
    ("dlr-url", "http://x:y/", "DLR-URL field misformed, rejected"),
    ("dlr-url", "http:///no-host", "DLR-URL field misformed, rejected"),
    ("coding", "3", "Coding field misformed, rejected"),
    ("validity", "-5", "Validity field misformed, rejected"),
    ("deferred", "soon", "Deferred field misformed, rejected"),
    ("priority", "4", "Priority field misformed, rejected"),
    ("mclass", "7", "MClass field misformed, rejected"),
    ("charset", "no-such-charset", "Charset or body misformed, rejected"),
])
def test_kannel_misformed_fields(stack, field, value, text):
    assert kannel(stack, to="13800000005", text="x", **{field: value}) == (400, text)
    assert submits_to(stack, "13800000005") == []


def test_kannel_dlr_mask_sets_registered_delivery(stack):
    assert kannel(stack, to="13800000006", text="dlr", **{
        "dlr-mask": "3", "dlr-url": "http://example.com/dlr?id=%d"}) == (202, ACCEPTED)
    wait_until(lambda: submits_to(stack, "13800000006"), "submit", 10)
    assert submits_to(stack, "13800000006")[0].registered_delivery == 1


def test_kannel_chinese_300_chars_five_ucs2_parts(stack):
    text = ("短信测试内容一二三四五六七八九十" * 20)[:300]
    assert len(text) == 300
    assert kannel(stack, to="13800000007", text=text) == (202, ACCEPTED)
    wait_until(lambda: len(submits_to(stack, "13800000007")) == 5, "5 parts", 10)
    parts = submits_to(stack, "13800000007")
    assert len(parts) == 5
    seen = {}
    for p in parts:
        assert p.data_coding == 8 and p.esm_class & 0x40
        udh, rest = split_udh(p.short_message)
        ref, total, seq = parse_concat(udh)
        assert total == 5
        seen[seq] = (ref, rest)
    assert sorted(seen) == [1, 2, 3, 4, 5]
    assert len({ref for ref, _ in seen.values()}) == 1
    assert b"".join(seen[i][1] for i in range(1, 6)).decode("utf-16-be") == text


def test_kannel_too_many_parts_refused_not_truncated(stack):
    text = "长" * (67 * 6 + 1)         # 7 parts; acme allows 6
    assert kannel(stack, to="13800000008", text=text) == \
        (400, "Message too long: 7 parts, at most 6 allowed, rejected")
    assert submits_to(stack, "13800000008") == []


def test_kannel_banned_content(stack):
    assert kannel(stack, to="13800000009", text="欢迎来玩赌博游戏") == \
        (403, "Content refused (obscenity_gambling_violence_terror), rejected")
    assert submits_to(stack, "13800000009") == []


def test_kannel_sender_not_own(stack):
    assert kannel(stack, to="13800000010", text="x", frm="10690999") == \
        (403, "Sender not allowed for this account, rejected")


def test_kannel_zero_balance_402(stack):
    assert kannel(stack, username="poor", password="poor1", to="13800000011", text="x") == \
        (402, "Insufficient balance, rejected")


def test_kannel_not_routable(stack):
    assert kannel(stack, to="447700900012", text="x") == (403, "Not routable. Do not try again.")


def test_kannel_several_recipients(stack):
    status, body = kannel(stack, to="13800000013 12 13800000014", text="multi")
    assert status == 202
    assert body == ("0: Accepted for delivery. Denied receivers are: 12\n"
                    "13800000013: 202 0: Accepted for delivery\n"
                    "12: 400 Receiver number not valid, rejected\n"
                    "13800000014: 202 0: Accepted for delivery")
    assert kannel(stack, to="13800000015 13800000016", text="all ok") == (202, ACCEPTED)
    wait_until(lambda: submits_to(stack, "13800000016"), "submit", 10)
    assert len(submits_to(stack, "13800000013")) == 1
    assert len(submits_to(stack, "13800000015")) == 1


def test_kannel_several_recipients_all_refused(stack):
    status, body = kannel(stack, username="poor", password="poor1",
                          to="13800000017 13800000018", text="x")
    assert status == 402
    assert body == ("Sending failed. Failed receivers are: 13800000017 13800000018\n"
                    "13800000017: 402 Insufficient balance, rejected\n"
                    "13800000018: 402 Insufficient balance, rejected")


def test_kannel_too_many_receivers_refused_first(stack):
    """Over [http] max_receivers (5 here): 400 before authentication, nothing relayed."""
    many = " ".join("138000000%d" % i for i in range(40, 46))
    want = (400, "Too many receivers: 6, at most 5 allowed, rejected")
    assert kannel(stack, to=many, text="x") == want
    assert kannel(stack, to=many, text="x", password="wrong") == want
    assert kannel(stack, to=" ".join(many.split()[:5]), text="five") == (202, ACCEPTED)
    wait_until(lambda: submits_to(stack, "13800000044"), "submit", 10)
    assert submits_to(stack, "13800000045") == []


def test_kannel_utf7_lone_surrogate_refused_not_hung(stack):
    status, body, _ = call(stack["http"], "/cgi-bin/sendsms", username="acme",
                           password="s3cret", to="13800000046", charset="utf-7",
                           text="+2D0AQQ-")
    assert (status, body) == (400, "Charset or body misformed, rejected")
    assert submits_to(stack, "13800000046") == []


def test_kannel_refused_numbers_escaped(stack):
    status, body = kannel(stack, to="13800000047 <script>x</script>", text="esc")
    assert status == 202
    assert "<script>" not in body and "&lt;script&gt;x&lt;/script&gt;" in body


def test_kannel_prefix_mode_without_from_sends_the_code_once(stack):
    assert kannel(stack, username="pfx", password="pfx1", to="13800000048",
                  text="pfx") == (202, ACCEPTED)
    wait_until(lambda: submits_to(stack, "13800000048"), "submit", 10)
    assert submits_to(stack, "13800000048")[0].source_addr == b"10690004"


def test_kannel_coding_udh_and_mclass(stack):
    assert kannel(stack, to="13800000019", text="hi", coding="2", mclass="1") == (202, ACCEPTED)
    wait_until(lambda: submits_to(stack, "13800000019"), "submit", 10)
    p = submits_to(stack, "13800000019")[0]
    assert p.data_coding == 0x19 and p.short_message == "hi".encode("utf-16-be")
    # a UDH without a coding is 8-bit, as in Kannel: refused for an account without binary
    assert kannel(stack, to="13800000020", text="x", udh=b"\x05\x04\x0b\x84\x23\xf0") == \
        (403, "Binary messages not allowed for this account, rejected")
    assert kannel(stack, to="13800000020", text="x", udh=b"\x09\x04") == \
        (400, "UDH field misformed, rejected")


def test_unknown_path_and_method(stack):
    assert call(stack["http"], "/nothing")[:2] == (404, "Not Found")
    assert call(stack["http"], "/cgi-bin/sendsms", "DELETE")[:2] == (405, "Method Not Allowed")


def test_request_too_large_413(stack):
    status, body, _ = call(stack["http"], "/cgi-bin/sendsms", username="acme",
                           password="s3cret", to="13800000021", text="x" * 5000)
    assert (status, body) == (413, "Request too large")
    form = b"username=acme&password=s3cret&to=13800000021&text=" + b"y" * 5000
    status, body, _ = call(stack["http"], "/cgi-bin/sendsms", "POST", form,
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (413, "Request too large")
    assert submits_to(stack, "13800000021") == []


def test_keep_alive_connection_serves_many(stack):
    c = http.client.HTTPConnection("127.0.0.1", stack["http"], timeout=30)
    for i in range(20):
        q = urllib.parse.urlencode({"username": "acme", "password": "s3cret",
                                    "to": "139000000%02d" % i, "text": "ka %d" % i})
        c.request("GET", "/cgi-bin/sendsms?" + q)
        r = c.getresponse()
        assert (r.status, r.read()) == (202, ACCEPTED.encode())
    c.close()


# --- Jasmin ------------------------------------------------------------------------------------

def jasmin(stack, path="/send", **q) -> tuple[int, str]:
    if "frm" in q:
        q["from"] = q.pop("frm")
    status, body, _ = call(stack["http"], path, **q)
    return status, body


def test_jasmin_send_success(stack):
    status, body = jasmin(stack, username="acme", password="s3cret", to="13800000030",
                          content="hello jasmin", dlr="yes", **{"dlr-url": "http://x.example/d",
                                                                "dlr-level": "3"})
    assert status == 200 and body.startswith('Success "') and body.endswith('"')
    assert len(body) == len('Success ""') + 25
    wait_until(lambda: submits_to(stack, "13800000030"), "submit", 10)
    p = submits_to(stack, "13800000030")[0]
    assert p.short_message == b"hello jasmin" and p.registered_delivery == 1


def test_jasmin_hex_content_goes_through_the_filter(stack):
    hexed = "赌博".encode("utf-16-be").hex()
    assert jasmin(stack, username="acme", password="s3cret", to="13800000031", coding="8",
                  **{"hex-content": hexed}) == \
        (403, 'Error "Content refused: category obscenity_gambling_violence_terror"')
    ok = "你好".encode("utf-16-be").hex()
    status, body = jasmin(stack, username="acme", password="s3cret", to="13800000031",
                          coding="8", **{"hex-content": ok})
    assert status == 200 and body.startswith('Success "')


def test_jasmin_errors(stack):
    assert jasmin(stack, username="acme", password="bad", to="13800000032", content="x") == \
        (403, 'Error "Authentication failure for username:acme"')
    assert jasmin(stack, username="acme", password="s3cret", content="x") == \
        (400, 'Error "Mandatory argument [to] is not found."')
    assert jasmin(stack, username="acme", password="s3cret", to="13800000032") == \
        (400, 'Error "content or hex-content not present."')
    assert jasmin(stack, username="acme", password="s3cret", to="1380abc", content="x") == \
        (400, 'Error "Argument [to] has an invalid value: [1380abc]."')
    assert jasmin(stack, username="acme", password="s3cret", to="13800000032", content="x",
                  **{"dlr-level": "5"}) == \
        (400, 'Error "Argument [dlr-level] has an invalid value: [5]."')
    assert jasmin(stack, username="acme", password="s3cret", to="13800000032", content="x",
                  **{"dlr-url": "http://x:y/"}) == \
        (400, 'Error "Argument [dlr-url] has an invalid value: [http://x:y/]: not a callable '
              'http(s) URL."')
    assert submits_to(stack, "13800000032") == []
    assert jasmin(stack, username="acme", password="s3cret", to="447700900032",
                  content="x") == (412, 'Error "No route found"')
    assert jasmin(stack, username="poor", password="poor1", to="13800000032", content="x") == \
        (403, 'Error "Cannot charge submit_sm: insufficient balance"')


def test_jasmin_balance_and_rate(stack):
    status, body = jasmin(stack, "/balance", username="bulk", password="bulk1")
    assert status == 200
    got = json.loads(body)
    assert got["sms_count"] == "ND" and isinstance(got["balance"], int)
    assert jasmin(stack, "/balance", username="bulk", password="x") == \
        (403, '"Authentication failure for username:bulk"')
    assert jasmin(stack, "/rate", username="acme", password="s3cret", to="13800000033",
                  content="x" * 200) == (200, '{"unit_rate": 5, "submit_sm_count": 2}')
    assert jasmin(stack, "/rate", username="acme", password="s3cret",
                  to="447700900033") == (412, '"No route found"')


# --- concurrency -------------------------------------------------------------------------------

def test_200_concurrent_requests_balance_exact(stack):
    before = int(admin(stack["tmp"], stack["cfg"], "balance", "bulk").stdout.split()[0])
    results: list = []
    lock = threading.Lock()

    def one(i: int) -> None:
        q = {"username": "bulk", "password": "bulk1", "to": "1500000%04d" % i,
             "text": "concurrent %d" % i}
        if i % 10 == 0:
            q["text"] = "赌博 %d" % i            # refused: not charged
        r = call(stack["http"], "/cgi-bin/sendsms", **q)
        with lock:
            results.append((i, r[0], r[1]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 200
    ok = [i for i, s, b in results if (s, b) == (202, ACCEPTED)]
    refused = [i for i, s, b in results if s == 403]
    assert sorted(ok + refused) == list(range(200))
    assert sorted(refused) == list(range(0, 200, 10))
    after = int(admin(stack["tmp"], stack["cfg"], "balance", "bulk").stdout.split()[0])
    assert before - after == 3 * len(ok) == 3 * 180


# --- store down --------------------------------------------------------------------------------

def test_store_down_answers_503(tmp_path):
    vk = ValkeyProcess()
    sock = vk.start()
    sim, sim_port, _ = start_sim(tmp_path)
    port, hport = free_port(), free_port()
    store = {"url": "unix://%s" % sock, "timeout_s": 0.5}
    cfg = write_config(tmp_path, config_text(port, sim_port, http={"listen": listen(hport), **HTTP},
                                             store=store, **CONFIG))
    proxyd = start_proxyd(tmp_path, cfg, hport)
    try:
        wait_until(lambda: proxyd.text().count("upstream sim bound") >= 2, "binds", 20)
        admin(tmp_path, cfg, "topup", "acme", "1000")
        assert call(hport, "/cgi-bin/sendsms", username="acme", password="s3cret",
                    to="13800000040", text="up")[:2] == (202, ACCEPTED)
        vk.stop()
        assert call(hport, "/cgi-bin/sendsms", username="acme", password="s3cret",
                    to="13800000041", text="down")[:2] == (503, "Temporal failure, try again later.")
        assert call(hport, "/send", username="acme", password="s3cret", to="13800000041",
                    content="down")[:2] == \
            (503, 'Error "Service temporarily unavailable, try again later"')
        assert call(hport, "/balance", username="acme", password="s3cret")[:2] == \
            (503, '"Balance unavailable, try again later"')
    finally:
        proxyd.stop()
        sim.stop()
        vk.cleanup()
