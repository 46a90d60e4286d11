"""Issue 17, "no invisible message": the outcome log (proxyd/store/ledger/wal.py). Unit
tests of the file (what a killed node leaves, what is replayed) and a replay into a real
Valkey: an outcome whose records never reached the store is written, one that did is not
written twice."""
from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet import defer, reactor, task

from proxyd.store.ledger import Ledger
from proxyd.store.ledger.ops import (LEASED, SETTLE, Queued, pack_group, pack_leased,
                                     pack_part, pack_settle)
from proxyd.store.ledger.wal import OutcomeLog, Replay, dead_segments, replay
from tests.test_lease import admit
from tests.procs import wait_until
from tests.test_store import LedgerTestBase
from tests.valkey_fixture import valkey_class, valkey_socket  # noqa: F401


def log_in(tmp_path, node: str = "n1", **kw: Any) -> OutcomeLog:
    return OutcomeLog(str(tmp_path), node, task.Clock(), fsync_s=3600, **kw)


def read_all(tmp_path) -> list[Replay]:
    out = []
    for path, fd in dead_segments(str(tmp_path)):
        with open(path, "rb") as fh:
            out.append(Replay(path).read(fh.read()))
        os.close(fd)
    return out


def settle_q(msg_id: str, note: str = "up=op id=U") -> Queued:
    return Queued(SETTLE, pack_settle("C", msg_id, note), None, msg_id)


def group_q(ids: list[str]) -> Queued:
    return Queued(LEASED, pack_group(5, "n1", [pack_part(m, "138", True, "up=op")
                                                for m in ids]), None, ids)


def kill(wal: OutcomeLog) -> None:
    """What kill -9 does to the log: the maps and fds go, the files stay."""
    for seg in wal._old + [wal.seg]:
        seg.mm.close()
        os.close(seg.fd)


def test_what_a_killed_node_leaves_to_replay(tmp_path):
    wal = log_in(tmp_path)
    # a: outcome only (its call never left); b, c: carried by call t1, answered;
    # d: carried by call t2, never answered; e: an outcome after t2
    for m in "abcd":
        wal.part("acme", m, True, "up=op id=U" + m, 5, "13800138000")
    wal.call("t1", "acme", [group_q(["b", "c"])])
    wal.ack("t1")
    wal.call("t2", "acme", [settle_q("d")])
    wal.part("acme", "e", False, "up=op status=ESME_RSUBMITFAIL")
    # sent on the lease: f and g with no record at all, h whose reservation left ('l'),
    # i whose outcome came
    wal.sent("acme", ["f", "g"], 5, "138")
    wal.sent("acme", ["h", "i"], 5, "139")
    wal.call("t3", "acme", [Queued(LEASED, pack_leased(5, "n1", "139", ["h"]), None, ["h"])])
    wal.ack("t3")
    wal.part("acme", "i", True, "up=op id=Ui", 5, "139")
    # a live node's segment is never taken
    assert read_all(tmp_path) == []
    kill(wal)
    [r] = read_all(tmp_path)
    calls, parts = r.todo()
    assert r.node == "n1" and r.bad == 0
    assert calls == [("t2", "acme", pack_settle("C", "d", "up=op id=U"))]
    assert parts == [("a", "acme", "C", "up=op id=Ua", 5, "13800138000"),
                     ("e", "acme", "R", "up=op status=ESME_RSUBMITFAIL", 0, ""),
                     ("i", "acme", "C", "up=op id=Ui", 5, "139"),
                     ("f", "acme", "U", "", 5, "138"), ("g", "acme", "U", "", 5, "138")]


def test_a_torn_last_record_and_odd_text_are_safe(tmp_path):
    wal = log_in(tmp_path)
    wal.part("acme", "a", True, "up=op id=x\ny\x1fz", 5, "1\n2")
    wal.call("t1", "acme", [settle_q("b", "line\nbreak")])
    seg = wal.seg
    torn = b"P\x1facme\x1fc"
    seg.mm[seg.pos:seg.pos + len(torn)] = torn                # killed mid-copy
    kill(wal)
    [r] = read_all(tmp_path)
    calls, parts = r.todo()
    assert [p[0] for p in parts] == ["a"] and "\n" not in parts[0][3]
    assert calls == [("t1", "acme", pack_settle("C", "b", "line\nbreak"))]


def test_segments_rotate_and_go_when_done(tmp_path):
    wal = log_in(tmp_path, segment_bytes=4096)
    for i in range(200):
        m = "m%03d" % i
        wal.part("acme", m, True, "up=op id=%d" % i, 5, "13800138000")
        wal.call("t%d" % i, "acme", [settle_q(m)])
        wal.ack("t%d" % i)
    files = [f for f in os.listdir(tmp_path) if f.endswith(".wal")]
    assert files == [os.path.basename(wal.seg.path)]      # the rotated ones were deleted
    wal.part("acme", "open", True, "up=op", 5, "")
    wal.close()
    assert [f for f in os.listdir(tmp_path) if f.endswith(".wal")]  # kept: "open" is due
    wal2 = log_in(tmp_path / "clean")
    wal2.part("acme", "x", True, "up=op", 5, "")
    wal2.call("t", "acme", [settle_q("x")])
    wal2.ack("t")
    wal2.close()
    assert os.listdir(tmp_path / "clean") == []


@pytest.mark.usefixtures("valkey_class")
class TestReplay(LedgerTestBase):

    @defer.inlineCallbacks
    def test_replay_writes_what_the_store_lacks_and_nothing_twice(self) -> Any:
        import tempfile
        d = tempfile.mkdtemp(prefix="proxyd-wal-")
        led = Ledger(self.store, reactor, node="dead", lease_parts=10, lease_ttl_s=30,
                     lease_idle_s=60, record_delay_s=0.005, outcome_log=d,
                     outcome_fsync_s=3600)
        yield led.topup(self.a, 1000)
        self.assertEqual((yield admit(led, self.a, ["m0"])[1])[0], 0)
        yield wait_until(lambda: self.a in led.leases.held, "the lease")
        led.settle(self.a, "m0", "up=op id=U0", True)       # written (a call, answered)
        yield wait_until(lambda: led.reservations(self.a).addCallback(lambda r: not r),
                         "m0 settled")
        # m1: admitted on the lease, relayed, OK; killed before any record of it left
        entry = led.admit_leased(self.a, ["m1"], 5, "")
        led.settle_leased(entry, 0, "up=op id=U1", True)
        # m2: admitted on the lease and relayed, no outcome yet, no record either
        self.assertIsNotNone(led.admit_leased(self.a, ["m2"], 5, "", "13900000000"))
        led.batcher._lq.clear()
        led.batcher._flush_call.cancel()
        led.batcher._flush_call = None
        wal = led.outcome_log
        kill(wal)
        wal._sync_call.cancel()
        led.leases.held.clear()
        led.leases._tick_call.cancel()
        # the next process replays: m1 reserved and committed, m0 untouched
        calls, parts = yield replay(led.access, d)
        self.assertEqual((calls, parts), (0, 2))
        self.assertEqual(os.listdir(d), [])
        rep = yield led.entries(self.a, 10)
        self.assertEqual(sorted((e["msg_id"], e["op"], e["note"]) for e in rep
                                if e["msg_id"]),
                         [("m0", "commit", "up=op id=U0"), ("m0", "reserve", ""),
                          ("m1", "commit", "up=op id=U1"), ("m1", "reserve", ""),
                          ("m2", "refund", "outcome unknown"),
                          ("m2", "reserve", "to=13900000000")])
        self.assertEqual((yield led.balance(self.a)), 990)
