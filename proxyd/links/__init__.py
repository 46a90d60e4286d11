"""Operator links: what the gate sends through, whatever the wire protocol.

The gate (`proxyd.gate`) talks to an operator through this interface only, so a second wire
protocol (CMPP, SGIP, SMGP) is an adapter that implements it, not a change to the gate:

    link.name                 the configured name (routing, receipts, metrics, the journal)
    link.available            bound and able to take parts now (routing skips it otherwise)
    link.submit_part(part, source, on_outcome)
        send one wire part; `part` is (pdu, body): the part as judged and charged, an SMPP
        submit_sm/data_sm value with every field the operator needs (addresses, esm_class
        and UDH, data_coding, registered_delivery, the payload) and its encoded body for
        cut-through; `source` a rewritten sender or None. `on_outcome(status, operator_id)`
        is called exactly once: 0 with the operator's id when the operator took it, else an
        SMPP status (ESME_RMSGQFUL / ESME_RTHROTTLED when it may be tried on another link;
        ESME_RSYSERR when its fate is unknown).

Receipts and MO come back from a link as events handed to the delivery side
(`on_deliver(link, pdu, ack)`, a deliver_sm/data_sm value; `ack(status)` once stored), so a
protocol whose reports look different normalises them into that shape in its adapter.

The SMPP link is `proxyd.links.smpp.Upstream`; `routing.py` picks a link for each part.
Every link is built by `factory.build_link` from its `[[upstream]] protocol`; the machinery
they share (connections, backoff, wait queue, rate) is `link.Link`, and the sans-IO window,
timers and framing of the gateway protocols (CMPP, SGIP, SMGP) are `core.LinkCore`.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

OnOutcome = Callable[[int, "bytes | None"], None]


class OperatorLink(Protocol):
    name: str

    @property
    def available(self) -> bool: ...

    def submit_part(self, part: tuple, source: bytes | None,
                    on_outcome: OnOutcome) -> None: ...


OnDeliver = Callable[[Any, Any, Callable[[int], None]], None]
