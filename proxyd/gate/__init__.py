"""The gate: where every message is judged, charged, routed and relayed.

    intake.py       SMPP requests -> Message (submit_sm, data_sm, submit_multi, replace_sm)
    reassembly.py   long messages sent as separate parts, on every path, judged whole
    billing.py      what the operator bills for a payload (the parts charged)
    core.py         Gate.send: checks -> charge -> route -> relay -> outcome (one function)
    parts.py        PDU -> Message
    nulls.py        the collaborators of a node without a store or without checks
                    (the in-memory receipt book is delivery/memory.py)
    ids.py          proxyd's message ids

The checks themselves are in `proxyd.policy`, the charge in `proxyd.store.ledger`, the links
to operators behind `proxyd.links`, and receipts go back through `proxyd.delivery`.
"""
from .core import Gate, NO_BALANCE, NO_CAPACITY, NO_ROUTE, OPTED_OUT, STORE_DOWN
from .ids import MessageIds
from .intake import SmppIntake
from .parts import build_message

__all__ = ["Gate", "SmppIntake", "MessageIds", "build_message", "NO_BALANCE", "NO_CAPACITY", "NO_ROUTE", "OPTED_OUT",
           "STORE_DOWN"]
