"""The outcome log: a node-local write-ahead file that closes the crash window of the
ledger's batched records (issue 17, "no invisible message").

The relay learns a part's outcome (the operator's answer) before its money records reach
the store: they wait up to 2 x `record_delay_s` to be batched, then one store round trip.
A node killed meanwhile used to leave parts the operator holds (and the client was told OK)
with no charge and no journal record. Now:

* every outcome is appended here (``P`` line) when the relay learns it, before the client's
  answer can leave (a copy into a shared memory map of the segment file: no system call,
  and a process killed after it loses nothing; `fsync_s` bounds what a power loss can
  take);
* every batch call that carries money records is appended (``C`` line: its token and
  operations) before it is sent, and acknowledged (``A`` line) when the store answered;
* at start, the segments of nodes that are gone (no process holds their lock) are
  replayed into the store: calls not acknowledged are sent again with their own token (the
  store does nothing twice: `calls:{A}`), and outcomes no call carried are written as a
  commit or refund of the part's reservation, or, for a part admitted on a lease whose
  reservation was never written, as a reservation settled at once (a ``g`` item).

Segments rotate at `segment_bytes`; one whose outcomes are all carried by acknowledged
calls is deleted. A clean shutdown leaves none. File format, one record a line, fields
separated by \\x1f (newlines inside a call's operations escaped as \\x1c):

    N node                                 the segment's writer (its lease's name)
    S account price to id,id,...           a message admitted on the lease, being relayed
    P account msg_id C|R note price to     an outcome (price 0: not admitted on a lease)
    C token account ops                    a batch call about to be sent
    A token                                its answer came (or it was given up)
"""
from __future__ import annotations

import fcntl
import mmap
import os
from typing import Any, Sequence

from twisted.internet import defer, threads
from twisted.logger import Logger

from proxyd.store.ledger.access import StoreAccess, text
from proxyd.store.journal import UNKNOWN_OUTCOME
from proxyd.store.ledger.ops import (LEASED, SEP, SETTLE, BadBatch, Group, Leased, Queued,
                                     Settle, pack_group, pack_part, pack_settle, parse_ops)

log = Logger()

US = "\x1f"
_NL = str.maketrans({"\n": "\x1c", "\x1c": " "})


class NoLog:
    """No outcome log (`outcome_log = ""`): every call does nothing."""

    def sent(self, account: str, msg_ids: Sequence[str], price: int, to: str) -> None:
        pass

    def part(self, account: str, msg_id: str, commit: bool, note: str, price: int = 0,
             to: str = "") -> None:
        pass

    def call(self, token: str, account: str, chunk: Sequence[Queued]) -> None:
        pass

    def flush(self) -> None:
        pass

    def ack(self, token: str) -> None:
        pass

    def close(self) -> defer.Deferred:
        return defer.succeed(None)


class _Segment:
    __slots__ = ("path", "fd", "mm", "size", "pos", "pending")

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.size = size
        os.ftruncate(fd, size)      # (sparse: disk is used as it is written)
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.pos = 0
        self.pending = 0        # outcomes no acknowledged call carries + calls not answered


class OutcomeLog(NoLog):
    """The outcome log of node `node` in directory `dir`.

    A segment is a file of `segment_bytes` mapped into memory (MAP_SHARED): a record is
    copied into the map at once, no system call, and is in the kernel's page cache from
    that moment, so a process killed with -9 right after loses none of it (a power loss
    loses what the last `fsync_s` msync did not reach). The unused rest of a segment is
    zeros: a reader stops at the first NUL."""

    def __init__(self, dir: str, node: str, reactor: Any, fsync_s: float = 1.0,
                 segment_bytes: int = 16 << 20) -> None:
        self.dir = os.path.abspath(dir)
        self.node = node
        self.reactor = reactor
        self.fsync_s = fsync_s
        self.segment_bytes = segment_bytes
        self.stem = "".join(c if c.isalnum() or c in "-." else "_" for c in node)
        self._n = 0
        self._sync_call: Any = None
        self._syncing = False
        self._dirty = False
        self._parts: dict[str, _Segment] = {}     # msg_id -> segment of its P line
        self._sent: dict[str, _Segment] = {}      # msg_id -> segment of its S line
        self._tokens: dict[str, _Segment] = {}    # token -> segment of its C line
        self._old: list[_Segment] = []            # rotated out, not deleted yet
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.seg = self._open()
        self._sync_call = reactor.callLater(fsync_s, self._sync)

    # -- writing (the hot path) -------------------------------------------------------------

    def _put(self, line: str) -> None:
        data = line.encode("utf-8", "surrogateescape")
        seg = self.seg
        end = seg.pos + len(data)
        if end > seg.size:
            if len(data) > self.segment_bytes // 2:
                log.error("outcome log: a record of {n} bytes is too long; not logged",
                          n=len(data))
                return
            self._rotate()
            seg = self.seg
            end = seg.pos + len(data)
        seg.mm[seg.pos:end] = data
        seg.pos = end
        self._dirty = True

    def sent(self, account: str, msg_ids: Sequence[str], price: int, to: str) -> None:
        """A message admitted on the lease (its reservation not written yet), before it is
        relayed: if the node dies before its reservation or outcome is written, the replay
        records it as reserved and refunded, "outcome unknown" (the operator may hold it)."""
        if not to.isprintable():
            to = "".join(c if c.isprintable() else " " for c in to)
        seg = self.seg
        if len(msg_ids) == 1:
            m = msg_ids[0]
            data = ("S\x1f%s\x1f%d\x1f%s\x1f%s\n" % (account, price, to, m)).encode(
                "utf-8", "surrogateescape")
            end = seg.pos + len(data)
            if end <= seg.size:         # (`_put`, inlined: per message)
                seg.mm[seg.pos:end] = data
                seg.pos = end
                self._dirty = True
            else:
                self._put(data.decode("utf-8", "surrogateescape"))
                seg = self.seg
            seg.pending += 1
            self._sent[m] = seg
            return
        self._put("S\x1f%s\x1f%d\x1f%s\x1f%s\n" % (account, price, to, ",".join(msg_ids)))
        seg = self.seg
        seg.pending += len(msg_ids)
        sent = self._sent
        for m in msg_ids:
            sent[m] = seg

    def _done(self, d: dict, m: str) -> None:
        old = d.pop(m, None)
        if old is not None:
            old.pending -= 1
            if old.pending == 0 and old is not self.seg:
                self._retire(old)

    def part(self, account: str, msg_id: str, commit: bool, note: str, price: int = 0,
             to: str = "") -> None:
        """The outcome of one part (before its client answer goes out)."""
        if not note.isprintable():
            note = "".join(c if c.isprintable() else " " for c in note)
        if not to.isprintable():
            to = "".join(c if c.isprintable() else " " for c in to)
        data = ("P\x1f%s\x1f%s\x1f%s\x1f%s\x1f%d\x1f%s\n" % (
            account, msg_id, "C" if commit else "R", note, price, to)).encode(
                "utf-8", "surrogateescape")
        seg = self.seg
        end = seg.pos + len(data)
        if end <= seg.size:             # (`_put`, inlined: per outcome)
            seg.mm[seg.pos:end] = data
            seg.pos = end
            self._dirty = True
        else:
            self._put(data.decode("utf-8", "surrogateescape"))
            seg = self.seg
        parts = self._parts
        if msg_id in parts:
            self._done(parts, msg_id)
        seg.pending += 1
        parts[msg_id] = seg
        old = self._sent.pop(msg_id, None)     # the outcome says more than "sent"
        if old is not None:
            old.pending -= 1
            if not old.pending and old is not seg:
                self._retire(old)

    def call(self, token: str, account: str, chunk: Sequence[Queued]) -> None:
        """A batch call about to be sent with `token`: its money records (reservations of
        leased parts, groups, settles: what the batcher would send again after a failure,
        with the same token) are logged; the parts whose outcomes it carries are no longer
        this log's to replay on their own."""
        if token in self._tokens:       # sent again after a failure: logged already
            return
        ids: list[str] = []         # outcomes carried
        reserved: list[str] = []    # reservations carried (of leased messages)
        packed = []
        for q in chunk:
            if q.kind == SETTLE:
                packed.append(q.packed)
                ids.append(q.info)
            elif q.kind == LEASED:
                packed.append(q.packed)
                if q.packed[0] == "g":
                    ids.extend(q.info)
                else:
                    reserved.extend(q.info)
        ops = SEP.join(packed)
        if "\n" in ops:
            ops = ops.translate(_NL)
        self._put("C\x1f%s\x1f%s\x1f%s\n" % (token, account, ops))
        seg = self.seg
        seg.pending += 1
        self._tokens[token] = seg
        parts, sent = self._parts, self._sent
        for m in ids:
            if m in parts:
                self._done(parts, m)
            if m in sent:
                self._done(sent, m)
        for m in reserved:
            if m in sent:
                self._done(sent, m)

    def ack(self, token: str) -> None:
        seg = self._tokens.pop(token, None)
        if seg is None:
            return
        self._put("A\x1f%s\n" % token)
        seg.pending -= 1
        if seg.pending == 0 and seg is not self.seg:
            self._retire(seg)

    # -- segments -------------------------------------------------------------------------

    def _open(self) -> _Segment:
        while True:
            self._n += 1
            path = os.path.join(self.dir, "%s-%06d.wal" % (self.stem, self._n))
            if not os.path.exists(path):
                break
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)    # ours while this process lives
        seg = _Segment(path, fd, self.segment_bytes)
        head = ("N\x1f%s\n" % self.node).encode()
        seg.mm[0:len(head)] = head
        seg.pos = len(head)
        return seg

    def _rotate(self) -> None:
        old = self.seg
        self.seg = self._open()
        if old.pending == 0:
            self._retire(old)
        else:
            self._old.append(old)

    def _retire(self, seg: _Segment) -> None:
        """Delete a segment with nothing left to replay."""
        if seg in self._old:
            self._old.remove(seg)
        try:
            os.unlink(seg.path)
        except OSError:
            pass
        seg.mm.close()
        os.close(seg.fd)

    def _sync(self) -> None:
        """fsync in a thread (never on the reactor), every `fsync_s`."""
        self._sync_call = self.reactor.callLater(self.fsync_s, self._sync)
        if self._syncing or not self._dirty:
            return
        self._dirty = False
        self._syncing = True
        # fsync of the file writes the map's dirty pages too (one page cache), and unlike
        # mmap.flush it lets the reactor run meanwhile (the GIL is released)
        fd = self.seg.fd

        def done(_: Any) -> None:
            self._syncing = False
        threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), os.fsync, fd
                                  ).addCallbacks(done, lambda f: done(log.warn(
                                      "outcome log: fsync failed: {err}",
                                      err=f.getErrorMessage())))

    def close(self, wait_s: float = 5.0) -> defer.Deferred:
        """At shutdown: wait (up to `wait_s`) for the answers of the calls still out, then
        delete every segment if nothing is left to replay, else keep them (the next start
        replays them: a call the store did but whose answer never came is safe to send
        again only while the store remembers its token)."""
        if self._sync_call is not None and self._sync_call.active():
            self._sync_call.cancel()
        done: defer.Deferred = defer.Deferred()
        end = self.reactor.seconds() + wait_s

        def check() -> None:
            if self._tokens and self.reactor.seconds() < end:
                self.reactor.callLater(0.05, check)
            else:
                self._close_now()
                done.callback(None)
        check()
        return done

    def _close_now(self) -> None:
        left = len(self._tokens) + len(self._parts) + len(self._sent)
        for seg in self._old + [self.seg]:
            if left:
                seg.mm.flush()
                seg.mm.close()
                os.close(seg.fd)
            else:
                self._retire(seg)
        if left:
            log.warn("outcome log: {n} records not confirmed by the store are kept in {dir} "
                     "(replayed at the next start)", n=left, dir=self.dir)


# --- replay at start ---------------------------------------------------------------------------

class Replay:
    """What one segment holds that the store may lack."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.node = ""
        self.calls: dict[str, tuple[str, str]] = {}     # token -> (account, ops), in order
        self.acked: set[str] = set()
        self.parts: dict[str, tuple] = {}               # msg_id -> (account, C|R, note, price, to)
        self.sent: dict[str, tuple] = {}                # msg_id -> (account, price, to)
        self.bad = 0

    def read(self, data: bytes) -> "Replay":
        data = data.split(b"\0", 1)[0]       # the unused rest of the segment
        lines = data.decode("utf-8", "surrogateescape").split("\n")
        if lines and lines[-1]:
            lines[-1] = ""          # a torn last line (killed mid-write): not whole, skipped
        for line in lines:
            if not line:
                continue
            f = line.split(US)
            kind = f[0]
            if kind == "P" and len(f) == 7 and f[5].isdigit():
                self.parts[f[2]] = (f[1], f[3], f[4], int(f[5]), f[6])
            elif kind == "C" and len(f) >= 4:
                self.calls[f[1]] = (f[2], US.join(f[3:]).replace("\x1c", "\n"))
            elif kind == "S" and len(f) == 5 and f[2].isdigit():
                for m in f[4].split(","):
                    self.sent[m] = (f[1], int(f[2]), f[3])
            elif kind == "A" and len(f) == 2:
                self.acked.add(f[1])
            elif kind == "N" and len(f) == 2:
                self.node = f[1]
            else:
                self.bad += 1
        return self

    def todo(self) -> tuple[list[tuple[str, str, str]], list[tuple]]:
        """(calls not answered: (token, account, ops); outcomes no call carried:
        (msg_id, account, C|R, note, price, to), then the messages sent on the lease that
        neither a call nor an outcome carried, as (msg_id, account, "U", "", price, to))."""
        carried: set[str] = set()
        reserved: set[str] = set()
        for account, ops in self.calls.values():
            try:
                for op in parse_ops(ops):
                    if isinstance(op, Settle):
                        carried.add(op.msg_id)
                    elif isinstance(op, Group):
                        carried.update(p.msg_id for p in op.parts)
                    elif isinstance(op, Leased):
                        reserved.update(op.ids)
            except BadBatch:
                self.bad += 1
        calls = [(t, a, o) for t, (a, o) in self.calls.items() if t not in self.acked]
        parts = [(m, *v) for m, v in self.parts.items() if m not in carried]
        parts += [(m, a, "U", "", price, to) for m, (a, price, to) in self.sent.items()
                  if m not in carried and m not in reserved and m not in self.parts]
        return calls, parts


def dead_segments(dir: str) -> list[tuple[str, int]]:
    """(path, locked fd) of the segments in `dir` that no live process holds, oldest
    first. The caller owns the fds (closing one releases its lock)."""
    out: list[tuple[str, int]] = []
    if not os.path.isdir(dir):
        return out
    for name in sorted(os.listdir(dir)):
        if not name.endswith(".wal"):
            continue
        path = os.path.join(dir, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise OSError("replaced")
        except OSError:
            os.close(fd)        # a live node's, or replayed and deleted meanwhile
            continue
        out.append((path, fd))
    return out


@defer.inlineCallbacks
def replay(access: StoreAccess, dir: str) -> Any:
    """Replay the segments of dead nodes in `dir` into the store, deleting each one that
    was replayed whole. Deferred[(calls, outcomes)]: how many were sent."""
    n_calls = n_parts = 0
    for path, fd in dead_segments(dir):
        try:
            with open(path, "rb") as fh:
                r = Replay(path).read(fh.read())
            calls, parts = r.todo()
            for token, account, ops in calls:
                keys, argv = access.args(account, ops, token, 3600)
                reply = yield access.evalsha("batch", keys, argv, ordered=True)
                _log_missing(account, text(reply))
                n_calls += 1
            for msg_id, account, o, note, price, to in parts:
                if o == "U":
                    # relayed on the lease, no record and no outcome: the operator may hold
                    # it; journaled as reserved and refunded, "outcome unknown"
                    g = pack_group(price, r.node, [pack_part(msg_id, to, False,
                                                             UNKNOWN_OUTCOME)])
                    keys, argv = access.args(account, g)
                    _log_missing(account, text((yield access.evalsha("batch", keys, argv,
                                                                     ordered=True))))
                    n_parts += 1
                    continue
                keys, argv = access.args(account, pack_settle(o, msg_id, note))
                reply = text((yield access.evalsha("batch", keys, argv, ordered=True)))
                if reply == "-1" and price > 0:
                    # admitted on the lease, its reservation never written: reserve and
                    # settle at once (from the old lease if the store still has it)
                    g = pack_group(price, r.node, [pack_part(msg_id, to, o == "C", note)])
                    keys, argv = access.args(account, g)
                    _log_missing(account, text((yield access.evalsha("batch", keys, argv,
                                                                     ordered=True))))
                n_parts += 1
            os.unlink(path)
            if calls or parts:
                log.warn("outcome log: replayed {c} calls and {p} outcomes of node {node} "
                         "({path})", c=len(calls), p=len(parts), node=r.node, path=path)
            if r.bad:
                log.warn("outcome log: {n} unreadable records in {path}", n=r.bad, path=path)
        finally:
            os.close(fd)
    return n_calls, n_parts


def _log_missing(account: str, reply: str) -> None:
    if "-1:" in reply and any(r.startswith("-1:") and not r[3:].lstrip("-").isdigit()
                              for r in reply.split(",")):
        log.error("outcome log: {account}: parts relayed on a lease the store no longer had "
                  "and the free balance could not cover: not charged ({r})",
                  account=account, r=reply)


__all__ = ["NoLog", "OutcomeLog", "Replay", "replay", "dead_segments"]
