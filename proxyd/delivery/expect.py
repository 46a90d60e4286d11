"""What the gate and the HTTP API tell of the parts that will get receipts: their state,
their receipt map entries and their HTTP receipt settings (keys in proxyd.store.messages).

`remember` collects, per reactor turn, the state records (``msg:{A}:<mid>``, ENROUTE) and
HTTP receipt settings (``dlr:{A}:<mid>``) of each account into one script call, and writes
the receipt map entries of the turn (one script per upstream) only once those are stored: a
receipt found in the map always finds its message's state and settings.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from ..smpp import constants as C
from ..store.messages import dlr_key, msg_key, record_value

log = Logger(namespace="proxyd.delivery")


class Expected:
    """The state records, map entries and HTTP settings of this turn, written at its end."""

    def __init__(self, rs: Any, messages: Any, clock: Any, dlr: Any,
                 counters: dict[str, int], track: Callable[[defer.Deferred], defer.Deferred],
                 expire_after_s: float) -> None:
        self.rs = rs
        self.messages = messages
        self.clock = clock
        self.dlr = dlr
        self.counters = counters
        self.track = track
        self.expire_after_s = expire_after_s
        self._records: dict[str, list[tuple[str, str]]] = {}   # account -> [(key, value)]
        self._maps: dict[str, list[tuple[str, str, bytes]]] = {}  # -> [(upstream, id, mid)]
        self._record_call: Any = None

    def remember(self, upstream: str, upstream_id: str, account: str, mid: bytes,
                 source: bytes = b"", destination: bytes = b"") -> None:
        """The operator took a part that asked for a receipt: its state (ENROUTE) and its
        receipt map entry, written with the others of this reactor turn."""
        m = mid.decode("latin-1")
        self._records.setdefault(account, []).append(
            (msg_key(account, m), record_value(1, upstream, upstream_id,
                                               self.messages.now_ms(),
                                               source.decode("latin-1"),
                                               destination.decode("latin-1"))))
        self._maps.setdefault(account, []).append((upstream, upstream_id, mid))
        self._schedule_records()

    def _schedule_records(self) -> None:
        if self._record_call is None:
            self._record_call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """One script per account for the states and HTTP settings of this turn; the map
        entries of parts with HTTP settings are written once those are stored (a receipt
        that finds them finds the settings), the others at once (no wait: an SMPP receipt
        needs no settings, and its script creates the state if the record is late)."""
        if self._record_call is not None and self._record_call.active():
            self._record_call.cancel()
        self._record_call = None
        records, self._records = self._records, {}
        maps, self._maps = self._maps, {}
        now_maps: dict[str, list] = {}
        for account in set(records) | set(maps):
            items = records.get(account)
            http = {k for k, _v in items or () if k.startswith("dlr:")}
            later: list = []
            for upstream, upstream_id, mid in maps.get(account, ()):
                entry = (upstream_id, account, mid)
                if http and dlr_key(account, mid.decode("latin-1")) in http:
                    later.append((upstream, entry))
                else:
                    now_maps.setdefault(upstream, []).append(entry)
            if not items:
                continue

            def failed(f: Any, account: str = account, n: int = len(items)) -> None:
                self.counters["record_errors"] += 1
                log.warn("state of {n} messages of {acct} not stored: {err}; query_sm and "
                         "HTTP receipts will not know them", n=n, acct=account,
                         err=f.getErrorMessage())

            def mapped(_: Any, later: list = later) -> Any:
                return self._write_maps(later)

            due = (self.messages.now_ms() + int(self.expire_after_s * 1000)
                   if self.expire_after_s > 0 else 0)
            self.track(self.messages.record(account, items, due).addErrback(failed)
                       .addCallback(mapped))
        for upstream, entries in now_maps.items():
            self.track(self.rs.remember_many(upstream, entries))

    def _write_maps(self, entries: list) -> Any:
        by_up: dict[str, list] = {}
        for upstream, entry in entries:
            by_up.setdefault(upstream, []).append(entry)
        ds = [self.rs.remember_many(upstream, items) for upstream, items in by_up.items()]
        return defer.gatherResults(ds, consumeErrors=True) if ds else None

    def expect_http_dlr(self, account_id: str, number: str, part_ids: Any,
                        settings: Any, status: int = 0) -> None:
        """An HTTP-submitted message with dlr settings was answered (called by
        proxyd.http.api). Taken by the operator (`status` 0): keep the settings per part, so
        its receipts go to the URL, and queue the SMSC-level report (Kannel mask 8, Jasmin
        level 1) now. Refused by the operator (`status` its SMPP status, `part_ids` the parts
        it took, often none): one SMSC-failure report (Kannel mask 16 with %d = 16, Jasmin
        level 1 with message_status the status name) for the message, with the first id
        given (``""`` when none was)."""
        if not getattr(settings, "url", ""):
            return
        sj = json.dumps({"api": settings.api, "url": settings.url, "mask": settings.mask,
                         "level": settings.level, "method": settings.method,
                         "acct": account_id, "to": number}, separators=(",", ":"))
        if status:
            want = (settings.mask & 0x10) if settings.api == "kannel" else (settings.level & 1)
            if not want:
                return
            ids = [mid.decode("latin-1") if isinstance(mid, bytes) else str(mid)
                   for mid in part_ids or ()]
            m = ids[0] if ids else ""
            facts = {"ev": "smsc", "mid": m, "up": "", "smsc_id": "", "to": number,
                     "reply": "NACK/%d/%s" % (status, C.status_name(status)),
                     "t": int(self.clock.seconds()), "status": status,
                     "status_name": C.status_name(status)}
            cb_id = "%s:%s" % (m or "nack", uuid.uuid4().hex[:12])
            self.messages.add_callback(account_id, cb_id, sj, facts).addCallbacks(
                lambda _: self.dlr.kick(account_id),
                lambda f: log.warn("SMSC-failure HTTP receipt for {acct} not stored: {err}",
                                   acct=account_id, err=f.getErrorMessage()))
            return
        final = settings.registered_delivery & 0x03
        smsc = (settings.mask & 0x08) if settings.api == "kannel" else (settings.level & 1)
        pending = {mid: (up, uid) for up, uid, mid in self._maps.get(account_id, ())}
        now = self.clock.seconds()
        for mid in part_ids:
            m = mid.decode("latin-1") if isinstance(mid, bytes) else str(mid)
            if final:
                self._records.setdefault(account_id, []).append((dlr_key(account_id, m), sj))
                self._schedule_records()
            if smsc:
                up, uid = pending.get(mid if isinstance(mid, bytes) else m.encode(), ("", ""))
                facts = {"ev": "smsc", "mid": m, "up": up, "smsc_id": uid, "to": number,
                         "reply": "ACK/", "t": int(now), "status": 0,
                         "status_name": "ESME_ROK"}
                cb_id = "%s:%s" % (m, uuid.uuid4().hex[:12])
                self.messages.add_callback(account_id, cb_id, sj, facts).addCallbacks(
                    lambda _: self.dlr.kick(account_id),
                    lambda f, m=m: log.warn("SMSC-level HTTP receipt of {mid} not stored: "
                                            "{err}", mid=m, err=f.getErrorMessage()))
