"""The message as the policy checks see it, and what a check answers.

A `Message` is built once per client message (SMPP or HTTP; a concatenated message is one
Message once all its parts are in) and passes the gate (`proxyd.gate`): every check in
`proxyd.policy` sees it, the ledger charges its billable `parts`, and its `segments` are
what the operator links send, each with its own data_coding. A check
returns `None` when the message passes, or a `Refusal` naming the SMPP status, a short
machine reason (used in counters and the journal) and a human text (used in logs and HTTP).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Message:
    account: str                 # system_id of the sending account
    source_addr: str             # as the client sent it (ASCII)
    destination_addr: str
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    esm_class: int = 0
    data_coding: int = 0
    registered_delivery: int = 0
    text: str | None = None      # whole decoded text (UDH stripped, parts joined); None if binary
    parts: int = 1               # billable parts: what the operator bills, what is charged
    channel: str = "smpp"        # "smpp" or "http"
    segments: tuple = ()         # the wire parts exactly as they will be sent: ((pdu, body), ...)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int                  # SMPP command_status for the client
    reason: str                  # short machine name: "sender", "caller", "content", ...
    text: str                    # human explanation (no message text, no full numbers)
    category: str = ""           # content category, when reason == "content"
    # content refusals: the listed term that matched and how it was written (variant class:
    # exact, gap, pinyin, initials, mixed, homophone, split). For the journal and the log
    # line only, never the reply; not part of equality (a refusal is its status and text).
    term: str = field(default="", compare=False)
    variant: str = field(default="", compare=False)

    def __str__(self) -> str:
        return "%s: %s" % (self.reason, self.text)


Verdict = Refusal | None
