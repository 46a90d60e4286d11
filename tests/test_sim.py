"""The SMSC simulator: as a real process driven by a third-party client (smpplib), and
in-process with a fake clock for the timing features (latency, receipt delay, throttling)."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import smpplib.client
import smpplib.exceptions
from twisted.internet import task
from twisted.internet.testing import StringTransport

from proxyd.sim.service import Options
from proxyd.sim.smsc import SmscConfig, SmscFactory, parse_receipt_stat, parse_status
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 15.0


# --- helpers: a real simulator process ---------------------------------------------------------

def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_accepting(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("simulator exited with %s:\n%s" % (proc.returncode,
                                                                     log.read_text()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("simulator not accepting on port %d:\n%s" % (port, log.read_text()))


class Sim:
    def __init__(self, tmp: Path, args: list[str], control: bool = False) -> None:
        self.port = free_port()
        self.record = tmp / "record.jsonl"
        self.log = tmp / "sim.log"
        self.control_port = free_port() if control else None
        cmd = [sys.executable, "-m", "proxyd.sim",
               "--listen", "tcp:%d:interface=127.0.0.1" % self.port,
               "--record", str(self.record), *args]
        if control:
            cmd += ["--control", "tcp:%d:interface=127.0.0.1" % self.control_port]
        self.logfh = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=self.logfh,
                                     stderr=subprocess.STDOUT)
        wait_accepting(self.proc, self.port, self.log)
        if control:
            wait_accepting(self.proc, self.control_port, self.log)

    def records(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def control(self, line: str) -> str:
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as s:
            s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode().strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfh.close()


@pytest.fixture
def start_sim(tmp_path):
    sims: list[Sim] = []

    def start(*args: str, control: bool = False) -> Sim:
        sim = Sim(tmp_path, list(args), control=control)
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        sim.stop()


@pytest.fixture
def clients():
    made: list[smpplib.client.Client] = []

    def make(port: int) -> smpplib.client.Client:
        c = smpplib.client.Client("127.0.0.1", port, timeout=DEADLINE_S,
                                  allow_unknown_opt_params=True)
        c.connect()
        made.append(c)
        return c

    yield make
    for c in made:
        if c._socket is not None:
            c._socket.close()
            c._socket = None


def submit(c: smpplib.client.Client, i: int, registered_delivery: int = 0):
    return c.send_message(source_addr_ton=1, source_addr_npi=1, source_addr="10690001",
                          dest_addr_ton=1, dest_addr_npi=1,
                          destination_addr="86138%08d" % i,
                          short_message=b"message number %d, hello" % i,
                          registered_delivery=registered_delivery)


# --- real process, real client -----------------------------------------------------------------

@pytest.mark.timeout(120)
def test_submits_answered_recorded_and_receipted(start_sim, clients):
    sim = start_sim("--receipt-delay", "0.05")
    c = clients(sim.port)
    bind = c.bind_transceiver(system_id="acme", password="pw")
    assert bind.status == 0
    resps = []
    receipts = []
    c.set_message_sent_handler(lambda pdu, **kw: resps.append(pdu))
    c.set_message_received_handler(lambda pdu, **kw: receipts.append(pdu))
    sent = {}
    for i in range(50):
        p = submit(c, i, registered_delivery=1)
        sent[p.sequence] = i
    while len(resps) < 50 or len(receipts) < 50:
        c.read_once(auto_send_enquire_link=False)   # raises socket.timeout: test fails
    assert [r.status for r in resps] == [0] * 50
    assert sorted(r.sequence for r in resps) == sorted(sent)
    ids = [r.message_id for r in resps]
    assert len(set(ids)) == 50
    assert all(int(i, 16) >= 0 for i in ids)       # hex ids by default
    by_id = {r.message_id: sent[r.sequence] for r in resps}

    assert sorted(d.receipted_message_id for d in receipts) == sorted(ids)
    for d in receipts:
        assert d.esm_class & C.ESM_RECEIPT_MASK == C.ESM_DELIVERY_RECEIPT
        assert d.message_state == 2
        i = by_id[d.receipted_message_id]
        sm = d.short_message
        assert sm.startswith(b"id:%s sub:001 dlvrd:001 submit date:" % d.receipted_message_id)
        assert b" stat:DELIVRD err:000 text:" + (b"message number %d, hello" % i)[:20] in sm
        assert sm.endswith((b"message number %d, hello" % i)[:20])
        # a receipt comes back from the recipient to the sender
        assert d.source_addr == b"86138%08d" % i
        assert d.destination_addr == b"10690001"

    recs = sim.records()
    assert len(recs) == 50
    assert {r["id"].encode() for r in recs} == set(ids)
    for r in recs:
        assert r["system_id"] == "acme"
        assert r["cmd"] == "submit_sm"
        s = P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(r["body"]))
        i = by_id[r["id"].encode()]
        assert s.source_addr == b"10690001"
        assert s.destination_addr == b"86138%08d" % i
        assert s.short_message == b"message number %d, hello" % i
        assert s.registered_delivery == 1
    assert c.unbind().command == "unbind_resp"


@pytest.mark.timeout(120)
def test_fail_every_third_with_chosen_status(start_sim, clients):
    sim = start_sim("--fail-every", "3", "--fail-status", "0x58")
    c = clients(sim.port)
    c.bind_transmitter(system_id="acme", password="pw")
    seqs = [submit(c, i).sequence for i in range(9)]
    status = {}
    while len(status) < 9:
        p = c.read_pdu()
        assert p.command == "submit_sm_resp"
        status[p.sequence] = (p.status, p.message_id)
    got = [status[s][0] for s in seqs]
    assert got == [0, 0, 0x58] * 3
    ok_ids = {status[s][1] for s in seqs if status[s][0] == 0}
    assert len(ok_ids) == 6
    # nothing recorded for the refused ones
    assert {r["id"].encode() for r in sim.records()} == ok_ids


@pytest.mark.timeout(120)
def test_drop_after_closes_without_answering_the_last(start_sim, clients):
    sim = start_sim("--drop-after", "5")
    c = clients(sim.port)
    c.bind_transceiver(system_id="acme", password="pw")
    for i in range(5):
        submit(c, i)
    answered = []
    with pytest.raises(smpplib.exceptions.ConnectionError):
        while True:
            p = c.read_pdu()
            assert p.command == "submit_sm_resp" and p.status == 0
            answered.append(p.message_id)
    assert len(answered) == 4
    assert {r["id"].encode() for r in sim.records()} == set(answered)
    # the simulator itself is still up: a new connection binds
    c2 = clients(sim.port)
    assert c2.bind_transmitter(system_id="acme", password="pw").status == 0


@pytest.mark.timeout(120)
def test_fixed_credentials(start_sim, clients):
    sim = start_sim("--system-id", "acme", "--password", "secret")
    with pytest.raises(smpplib.exceptions.PDUError) as e:
        clients(sim.port).bind_transceiver(system_id="acme", password="wrong")
    assert e.value.args[1] == C.STATUS["ESME_RINVPASWD"]
    with pytest.raises(smpplib.exceptions.PDUError) as e:
        clients(sim.port).bind_transceiver(system_id="other", password="secret")
    assert e.value.args[1] == C.STATUS["ESME_RINVSYSID"]
    assert clients(sim.port).bind_transceiver(system_id="acme",
                                              password="secret").status == 0


@pytest.mark.timeout(120)
def test_raw_session_enquire_link_unknown_command_and_bind_state(start_sim):
    sim = start_sim("--id-format", "dec", "--id-start", "1000")
    with socket.create_connection(("127.0.0.1", sim.port), timeout=DEADLINE_S) as s:
        dec = P.Decoder()

        def roundtrip(data: bytes, n: int = 1) -> list:
            s.sendall(data)
            got: list = []
            while len(got) < n:
                chunk = s.recv(65536)
                assert chunk, "connection closed"
                got += dec.feed(chunk)
            return got

        sub = P.SubmitSm(seq=2, source_addr=b"10690001", destination_addr=b"8613800000000",
                         short_message=b"hi").encode()
        # before a bind: refused; unknown command: generic_nack; enquire_link: answered
        r = roundtrip(P.frame(C.ENQUIRE_LINK, 0, 1) + sub + P.frame(0x00000099, 0, 3), 3)
        assert [(type(x).__name__, x.seq, x.status) for x in r] == [
            ("EnquireLinkResp", 1, 0), ("SubmitSmResp", 2, C.STATUS["ESME_RINVBNDSTS"]),
            ("GenericNack", 3, C.STATUS["ESME_RINVCMDID"])]
        [b] = roundtrip(P.BindTransmitter(seq=4, system_id=b"acme", password=b"pw").encode())
        assert b.status == 0 and b.system_id
        [again] = roundtrip(P.BindTransceiver(seq=5, system_id=b"acme").encode())
        assert again.status == C.STATUS["ESME_RALYBND"]
        # many submits in one write: all answered, decimal ids in order
        batch = b"".join(P.SubmitSm(seq=10 + i, source_addr=b"1", destination_addr=b"2",
                                    short_message=b"x").encode() for i in range(20))
        r = roundtrip(batch, 20)
        assert [x.seq for x in r] == list(range(10, 30))
        assert [x.message_id for x in r] == [b"%d" % (1000 + i) for i in range(20)]
        # data_sm is answered too
        [d] = roundtrip(P.DataSm(seq=40, source_addr=b"1", destination_addr=b"2").encode())
        assert type(d).__name__ == "DataSmResp" and d.status == 0 and d.message_id == b"1020"
        [u] = roundtrip(P.frame(C.UNBIND, 0, 41))
        assert type(u).__name__ == "UnbindResp"
        assert s.recv(10) == b""        # the simulator closes after unbind_resp
    assert len(sim.records()) == 21


@pytest.mark.timeout(120)
def test_mo_injection_through_the_control_port(start_sim, clients):
    sim = start_sim("--no-receipts", control=True)
    # queued while nobody is bound, delivered when a receiver binds
    assert sim.control("MO 8613800000000 10690001 %s" % b"TD".hex()) == "OK queued"
    c = clients(sim.port)
    c.bind_receiver(system_id="acme", password="pw")
    d = c.read_pdu()
    assert d.command == "deliver_sm"
    assert (d.source_addr, d.destination_addr, d.short_message) == (
        b"8613800000000", b"10690001", b"TD")
    assert d.esm_class & C.ESM_RECEIPT_MASK == 0
    assert sim.control("MO 8613800000001 10690001 %s 8 acme" % "退订".encode(
        "utf-16-be").hex()) == "OK sent"
    d = c.read_pdu()
    assert d.short_message == "退订".encode("utf-16-be") and d.data_coding == 8
    stats = json.loads(sim.control("STATS"))
    assert stats["mo"] == 2 and stats["deliver_sent"] == 2 and stats["deliver_queued"] == 0
    assert sim.control("NONSENSE").startswith("ERR")


@pytest.mark.timeout(120)
def test_usage_error_exits_nonzero():
    r = subprocess.run([sys.executable, "-m", "proxyd.sim", "--id-format", "octal"],
                       cwd=str(ROOT), capture_output=True, timeout=60)
    assert r.returncode == 2
    assert b"id_format" in r.stderr


# --- options --------------------------------------------------------------------------------

def test_options():
    o = Options()
    o.parseOptions(["--fail-every", "3", "--fail-status", "0x58", "--receipt-stat",
                    "DELIVRD:2,UNDELIV:1", "--no-receipts", "--record", "rec.jsonl"])
    cfg = o.config
    assert cfg.fail_every == 3 and cfg.fail_status == 0x58
    assert cfg.receipt_stat == ("DELIVRD", "DELIVRD", "UNDELIV")
    assert cfg.receipts is False
    assert cfg.record == os.path.abspath("rec.jsonl")
    assert Options().parseOptions([]) is None
    assert parse_status("88") == 88 and parse_status("ESME_RTHROTTLED") == 0x58
    with pytest.raises(ValueError):
        parse_receipt_stat("SENT")


def test_make_service_is_a_service():
    from twisted.application.service import IService
    from proxyd.sim.service import makeService
    o = Options()
    o.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
    assert IService.providedBy(makeService(o))


# --- in-process, fake clock ----------------------------------------------------------------------

class CountingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


class Harness:
    def __init__(self, tmp: Path | None = None, **cfg) -> None:
        self.clock = task.Clock()
        self.wall = [1_700_000_000.0]
        if tmp is not None:
            cfg.setdefault("record", str(tmp / "rec.jsonl"))
        self.factory = SmscFactory(SmscConfig(id_start=1, **cfg), reactor=self.clock,
                                   wallclock=lambda: self.wall[0])

    def connect(self, bind: int = C.BIND_TRANSCEIVER, system_id: bytes = b"acme"):
        p = self.factory.buildProtocol(None)
        t = CountingTransport()
        p.makeConnection(t)
        p.dataReceived(P.PDU_CLASSES[bind](seq=1, system_id=system_id).encode())
        data = t.value()
        n = struct.unpack(">I", data[:4])[0]
        resp = P.decode(data[:n])
        assert resp.command_id == bind | C.RESP_BIT and resp.status == 0
        t.clear()
        t.io.write(data[n:])                    # deliveries queued for this bind, if any
        t.writes = 0
        return p, t, P.Decoder()


def submits(n: int, start_seq: int = 1, reg: int = 0) -> bytes:
    return b"".join(P.SubmitSm(seq=start_seq + i, source_addr=b"10690001",
                               destination_addr=b"86138%08d" % i, short_message=b"m%d" % i,
                               registered_delivery=reg).encode() for i in range(n))


def test_one_write_per_batch_and_recorded_before_answer(tmp_path):
    h = Harness(tmp_path)
    p, t, dec = h.connect()
    rec = tmp_path / "rec.jsonl"
    seen_at_write = []
    orig = t.write

    def write(data: bytes) -> None:
        seen_at_write.append(len(rec.read_text().splitlines()))
        orig(data)
    t.write = write
    p.dataReceived(submits(30))
    assert t.writes == 1
    assert seen_at_write == [30]
    assert [r.message_id for r in dec.feed(t.value())] == [b"%x" % i for i in range(1, 31)]


def test_latency_one_timer_per_connection(tmp_path):
    h = Harness(tmp_path, latency_ms=200)
    p, t, dec = h.connect()
    p.dataReceived(submits(5) + P.frame(C.ENQUIRE_LINK, 0, 99))
    [el] = dec.feed(t.value())
    assert el.seq == 99                        # only non-submit answers go at once
    t.clear()
    h.clock.advance(0.1)
    p.dataReceived(submits(5, start_seq=6))
    assert len(h.clock.getDelayedCalls()) == 1
    assert t.value() == b""
    h.clock.advance(0.1)
    assert [r.seq for r in dec.feed(t.value())] == [1, 2, 3, 4, 5]
    t.clear()
    h.clock.advance(0.1)
    assert [r.seq for r in dec.feed(t.value())] == [6, 7, 8, 9, 10]
    assert h.clock.getDelayedCalls() == []


def test_receipts_queued_then_round_robin(tmp_path):
    h = Harness(tmp_path, receipt_delay_s=1.0, receipt_stat=parse_receipt_stat(
        "DELIVRD:1,UNDELIV:1"))
    tx, ttx, dtx = h.connect(C.BIND_TRANSMITTER)
    tx.dataReceived(submits(4, reg=1))
    assert len(dtx.feed(ttx.value())) == 4
    ttx.clear()
    assert len(h.clock.getDelayedCalls()) == 1   # one timer for all receipts
    h.clock.advance(1.0)
    assert ttx.value() == b""                  # a transmitter gets no receipts
    assert sum(len(q) for q in h.factory.pending.values()) == 4
    rx1, t1, d1 = h.connect(C.BIND_RECEIVER)
    got = d1.feed(t1.value())
    assert [g.tlv(C.TAG_RECEIPTED_MESSAGE_ID) for g in got] == [b"1\0", b"2\0", b"3\0",
                                                                 b"4\0"]
    assert [g.tlv(C.TAG_MESSAGE_STATE) for g in got] == [b"\x02", b"\x05"] * 2
    assert [b"stat:DELIVRD" in g.short_message for g in got] == [True, False] * 2
    rx2, t2, d2 = h.connect(C.BIND_RECEIVER)
    t1.clear()
    t1.writes = 0
    tx.dataReceived(submits(4, start_seq=10, reg=1))
    h.clock.advance(1.0)
    # one receipt to each receiver in turn, one write per receiver
    assert (t1.writes, t2.writes) == (1, 1)
    a, b = d1.feed(t1.value()), d2.feed(t2.value())
    assert (len(a), len(b)) == (2, 2)
    t1.clear()
    t2.clear()
    tx.dataReceived(submits(1, start_seq=20, reg=1))
    h.clock.advance(1.0)
    a2, b2 = d1.feed(t1.value()), d2.feed(t2.value())
    assert (len(a2), len(b2)) == (1, 0)
    t1.clear()
    # receipts of another system_id never reach acme's binds
    other, to, do = h.connect(C.BIND_TRANSCEIVER, system_id=b"other")
    to.clear()
    other.dataReceived(submits(1, reg=1))
    h.clock.advance(1.0)
    assert d1.feed(t1.value()) == [] and d2.feed(t2.value()) == []
    assert [type(x).__name__ for x in do.feed(to.value())] == ["SubmitSmResp", "DeliverSm"]


def test_no_receipt_without_registered_delivery_or_when_off(tmp_path):
    h = Harness(tmp_path)
    p, t, dec = h.connect()
    p.dataReceived(submits(3, reg=0))
    h.clock.advance(1)
    assert all(type(x).__name__ == "SubmitSmResp" for x in dec.feed(t.value()))
    h2 = Harness(tmp_path, receipts=False)
    p2, t2, dec2 = h2.connect()
    p2.dataReceived(submits(3, reg=1))
    h2.clock.advance(1)
    assert all(type(x).__name__ == "SubmitSmResp" for x in dec2.feed(t2.value()))


def test_throttle_per_second(tmp_path):
    h = Harness(tmp_path, throttle_tps=5, stats=str(tmp_path / "stats.jsonl"))
    p, t, dec = h.connect()
    p.dataReceived(submits(8))
    assert [r.status for r in dec.feed(t.value())] == [0] * 5 + [0x58] * 3
    t.clear()
    h.wall[0] += 1
    p.dataReceived(submits(2, start_seq=20))
    assert [r.status for r in dec.feed(t.value())] == [0, 0]
    assert len((tmp_path / "rec.jsonl").read_text().splitlines()) == 7
    h.factory.close()
    lines = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert lines == [{"t": 1_700_000_000, "submits": 8, "accepted": 5, "rejected": 3},
                     {"t": 1_700_000_001, "submits": 2, "accepted": 2, "rejected": 0}]


def test_mo_in_process_and_udh_bit(tmp_path):
    h = Harness(tmp_path)
    assert h.factory.send_mo("8613800000000", "10690001", b"\x05\x00\x03\x01\x02\x01T",
                             esm_class=0x40) is False
    p, t, dec = h.connect(C.BIND_RECEIVER)
    [d] = dec.feed(t.value())
    assert d.esm_class == 0x40 and d.short_message.endswith(b"T")
    assert h.factory.send_mo(b"8613800000000", b"10690001", b"x" * 300) is True
    [d] = dec.feed(t.value()[len(d.encode()):])
    assert d.short_message == b"" and d.tlv(C.TAG_MESSAGE_PAYLOAD) == b"x" * 300


def test_framing_error_nacks_and_closes(tmp_path):
    h = Harness(tmp_path)
    p, t, dec = h.connect()
    p.dataReceived(struct.pack(">IIII", 8, C.SUBMIT_SM, 0, 7))
    [n] = dec.feed(t.value())
    assert type(n).__name__ == "GenericNack" and n.status == C.STATUS["ESME_RINVCMDLEN"]
    assert t.disconnecting


def test_malformed_submit_when_receipts_are_read(tmp_path):
    h = Harness(tmp_path)
    p, t, dec = h.connect()
    p.dataReceived(P.frame(C.SUBMIT_SM, 0, 5, b"\0\1\1" + b"1" * 30))
    [r] = dec.feed(t.value())
    assert r.seq == 5 and r.status != 0
    assert not (tmp_path / "rec.jsonl").exists()


def test_receiver_bind_refused_every_request_it_may_not_send(tmp_path):
    h = Harness(tmp_path)
    p, t, dec = h.connect(C.BIND_RECEIVER)
    p.dataReceived(submits(1, start_seq=5) + P.CancelSm(seq=6, message_id=b"1").encode()
                   + P.QuerySm(seq=7, message_id=b"1").encode() + P.frame(C.ENQUIRE_LINK, 0, 8))
    assert t.value() == b"".join(struct.pack(">IIII", 16, cid, st, seq) for cid, st, seq in (
        (C.SUBMIT_SM_RESP, 4, 5), (C.CANCEL_SM_RESP, 4, 6), (C.QUERY_SM_RESP, 4, 7),
        (C.ENQUIRE_LINK_RESP, 0, 8)))
    assert t.writes == 1 and h.factory.counters["submits"] == 0
