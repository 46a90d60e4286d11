"""/metrics and /health of a real proxyd process (twistd) in front of a real simulator."""
from __future__ import annotations

import os
import signal
import socket
import struct
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text, listen
from .procs import (admin, free_port, read_record, start_proxyd, start_sim, wait_until,
                    wait_log, write_config)

S = C.STATUS

ACCOUNT = {"max_binds": 2}      # overrides of the template's account acme


# --- helpers shared with test_routing_e2e -------------------------------------------------

def http_get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def scrape(port: int) -> dict:
    """{(sample name, frozenset(labels)): value} of /metrics, parsed by prometheus-client."""
    status, ctype, text = http_get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype, text[:200])
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def read_pdu(s: socket.socket):
    data = b""
    while len(data) < 16:
        chunk = s.recv(16 - len(data))
        if not chunk:
            return None
        data += chunk
    length = struct.unpack(">I", data[:4])[0]
    while len(data) < length:
        chunk = s.recv(length - len(data))
        if not chunk:
            return None
        data += chunk
    return P.decode(data)


def bind(port: int, system_id: bytes = b"acme", password: bytes = b"s3cret"
         ) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(P.encode(P.BindTransmitter(1, 0, system_id, password, b"", 0x34, 0, 0, b"")))
    r = read_pdu(s)
    assert r is not None and r.status == 0, r
    return s


def submit_all(s: socket.socket, destinations: list[str], tag: str = "m") -> dict:
    """Send one submit_sm per destination in one write; {destination index: status}."""
    data = b"".join(P.encode(P.SubmitSm(
        seq=i + 2, source_addr=b"10690001", source_addr_ton=0, source_addr_npi=1,
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=d.encode(),
        short_message=("%s %04d" % (tag, i)).encode())) for i, d in enumerate(destinations))
    s.sendall(data)
    answers = {}
    while len(answers) < len(destinations):
        r = read_pdu(s)
        assert r is not None, "session closed after %d answers" % len(answers)
        assert r.command_id == C.SUBMIT_SM_RESP
        answers[r.seq - 2] = r.status
    return answers


def recorded_destinations(record) -> list[str]:
    return [P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).destination_addr.decode()
            for x in read_record(record)]


# --- one simulator ----------------------------------------------------------------------------

CONFIG = dict(relay={"queue_wait_s": 0.2},
              upstream={"name": "only", "binds": 1, "window": 50, "response_timeout_s": 5,
                        "reconnect_max_s": 0.5},
              account=ACCOUNT)


@pytest.fixture
def single(tmp_path):
    # every 5th submit refused with ESME_RSYSERR (a permanent error: no failover)
    sim, sim_port, record = start_sim(tmp_path, None, "--fail-every", "5",
                                      "--fail-status", "ESME_RSYSERR")
    port, admin_port = free_port(), free_port()
    cfg = write_config(tmp_path, config_text(port, sim_port, admin={"listen": listen(admin_port)},
                                             **CONFIG))
    proxyd = start_proxyd(tmp_path, cfg, port)
    wait_log(proxyd, "upstream only bound")
    admin(tmp_path, cfg, "topup", "acme", "100000", "--note", "test funds")
    yield {"port": port, "admin": admin_port, "sim": sim, "sim_port": sim_port,
           "record": record, "proxyd": proxyd, "tmp": tmp_path}
    proxyd.stop()
    sim.stop()


def test_metrics_counters_match_what_was_sent(single):
    s = bind(single["port"])
    before = scrape(single["admin"])
    assert sample(before, "proxyd_binds", account="acme", mode="transmitter") == 1
    assert sample(before, "proxyd_upstream_binds", upstream="only") == 1
    assert sample(before, "proxyd_upstream_window_size", upstream="only") == 50
    dests = ["1380013%04d" % i for i in range(40)]
    dests += ["12ab"] * 3                          # not a number: refused by the policy
    answers = submit_all(s, dests)
    s.close()
    ok = sum(1 for st in answers.values() if st == 0)
    syserr = sum(1 for st in answers.values() if st == S["ESME_RSYSERR"])
    refused = {st for i, st in answers.items() if i >= 40}
    assert ok == 32 and syserr == 8, answers          # every 5th of the 40 failed
    assert refused == {S["ESME_RINVDSTADR"]}
    wait_until(lambda: len(read_record(single["record"])) >= ok, "record", 10)
    assert len(read_record(single["record"])) == ok

    m = scrape(single["admin"])
    assert sample(m, "proxyd_messages_total", account="acme", upstream="only",
                  outcome="ok") == ok
    assert sample(m, "proxyd_messages_total", account="acme", upstream="only",
                  outcome="ESME_RSYSERR") == syserr
    assert sum(v for (name, labels), v in m.items()
               if name == "proxyd_messages_total") == 40
    rejections = {dict(labels)["reason"]: v for (name, labels), v in m.items()
                  if name == "proxyd_rejections_total" and dict(labels)["account"] == "acme"}
    assert rejections == {"destination": 3}
    assert sample(m, "proxyd_submit_latency_seconds_count", account="acme") == 43
    assert sample(m, "proxyd_submit_latency_seconds_bucket", account="acme",
                  le="+Inf") == 43
    assert sample(m, "proxyd_upstream_rtt_seconds_count", upstream="only") == 40
    # nothing left in flight once every answer is in
    wait_until(lambda: sample(scrape(single["admin"]), "proxyd_binds", account="acme",
                              mode="transmitter") == 0, "unbind seen", 10)
    m = scrape(single["admin"])
    assert sample(m, "proxyd_client_outstanding") == 0
    assert sample(m, "proxyd_upstream_window_used", upstream="only") == 0
    assert sample(m, "proxyd_upstream_queue", upstream="only") == 0


def test_health_follows_the_upstream(single):
    assert http_get(single["admin"], "/health")[::2] == (200, "ok\n")
    assert http_get(single["admin"], "/nowhere")[0] == 404
    single["sim"].stop()
    wait_log(single["proxyd"], "upstream only connection lost")
    status, _ctype, body = http_get(single["admin"], "/health")
    assert (status, body) == (503, "no upstream bound\n")
    assert sample(scrape(single["admin"]), "proxyd_upstream_binds", upstream="only") == 0
    # the operator comes back on the same port: bound again, healthy again
    sim2, _, _ = start_sim(single["tmp"], single["sim_port"], name="sim2")
    try:
        wait_log(single["proxyd"], "upstream only bound", count=2)
        assert http_get(single["admin"], "/health")[::2] == (200, "ok\n")
    finally:
        sim2.stop()


def test_health_reports_a_store_that_stopped_answering(single):
    """A frozen store (SIGSTOP): /health says 503 within its short timeout, then 200 again."""
    pid = int((single["tmp"] / "var" / "store" / "valkey.pid").read_text().split()[0])
    assert http_get(single["admin"], "/health")[::2] == (200, "ok\n")
    os.kill(pid, signal.SIGSTOP)
    try:
        status, _ctype, body = http_get(single["admin"], "/health")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert status == 503 and body.startswith("store: ") and body.count("\n") == 1, body
    wait_until(lambda: http_get(single["admin"], "/health")[0] == 200, "healthy again", 10)
