"""What an HTTP client is told: one table per API, from proxyd's outcome of a message.

An outcome is one of
    Accepted(ids)                       every part is at the operator
    Refused(refusal)                    proxyd refused it (proxyd.message.Refusal)
    Failed(status, ok_parts, parts)     the operator answered an SMPP error status

Kannel replies are plain text in smsbox's shape; Jasmin's are ``Success "<id>"`` /
``Error "<text>"`` with the HTTP statuses Jasmin uses (400, 403, 412, 500, 503).
README.md ("HTTP API") lists every line of these tables.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

from proxyd.message import Refusal
from proxyd.smpp import constants as C

_S = C.STATUS
# operator statuses after which the same request may succeed later
TEMPORARY = frozenset((_S["ESME_RTHROTTLED"], _S["ESME_RMSGQFUL"], _S["ESME_RSYSERR"]))


@dataclass(frozen=True, slots=True)
class Accepted:
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    refusal: Refusal


@dataclass(frozen=True, slots=True)
class Failed:
    status: int
    ok_parts: int
    parts: int


Outcome = Accepted | Refused | Failed

# --- Kannel ---------------------------------------------------------------------------------

K_ACCEPTED = "0: Accepted for delivery"
K_NOT_ROUTABLE = "Not routable. Do not try again."
K_TEMPORAL = "Temporal failure, try again later."

KANNEL_REFUSALS: dict[str, tuple[int, str]] = {
    "caller": (403, "Sender not allowed: the caller number must be displayable, rejected"),
    "sender": (403, "Sender not allowed for this account, rejected"),
    "destination": (400, "Receiver number not valid, rejected"),
    "binary": (403, "Binary messages not allowed for this account, rejected"),
    "signature": (403, "Signature missing, rejected"),
    "unsubscribe": (403, "Unsubscribe instruction missing, rejected"),
    "balance": (402, "Insufficient balance, rejected"),
    "optout": (403, "Receiver has opted out, rejected"),
    "rate": (429, "Throttled, try again later."),
    "route": (403, K_NOT_ROUTABLE),
    "store": (503, K_TEMPORAL),
    "capacity": (503, K_TEMPORAL),
    "length": (400, "Message too long for this account, rejected"),
    "part": (400, "Duplicate or conflicting part of a long message, rejected"),
    "coding": (400, "Parts of a long message in different codings, rejected"),
}


def kannel_reply(outcome: Outcome) -> tuple[int, str]:
    if type(outcome) is Accepted:
        return 202, K_ACCEPTED
    if type(outcome) is Refused:
        r = outcome.refusal
        if r.reason == "content":
            return 403, "Content refused (%s), rejected" % (r.category or "content")
        hit = KANNEL_REFUSALS.get(r.reason)
        if hit is not None:
            return hit
        return 403, "Rejected (%s), do not try again." % r.reason
    assert type(outcome) is Failed
    sent = ""
    if outcome.ok_parts:
        sent = " (%d of %d parts sent)" % (outcome.ok_parts, outcome.parts)
    if outcome.status in TEMPORARY:
        return 503, K_TEMPORAL + sent
    return 403, "Rejected by the operator (%s). Do not try again.%s" % (
        C.status_name(outcome.status), sent)


def kannel_multi(recipients: tuple[str, ...], outcomes: list[Outcome]) -> tuple[int, str]:
    """Several receivers: all accepted is Kannel's single reply; otherwise the first line
    says which were refused (Kannel's "Denied receivers are:" / "Failed receivers are:")
    and one line per receiver follows: ``<number>: <status> <reply text>``. The numbers
    are HTML-escaped (the reply is text/html, a receiver is whatever the client wrote)."""
    replies = [kannel_reply(o) for o in outcomes]
    # the reply is text/html and a receiver is whatever the client wrote: escaped
    recipients = tuple(html.escape(r) for r in recipients)
    refused = [r for r, o in zip(recipients, outcomes) if type(o) is not Accepted]
    if not refused:
        return 202, K_ACCEPTED
    if len(refused) < len(recipients):
        status, head = 202, K_ACCEPTED + ". Denied receivers are: " + " ".join(refused)
    else:
        codes = {s for s, _ in replies}
        status = replies[0][0] if len(codes) > 1 else codes.pop()
        head = "Sending failed. Failed receivers are: " + " ".join(refused)
    lines = [head] + ["%s: %d %s" % (r, s, t) for r, (s, t) in zip(recipients, replies)]
    return status, "\n".join(lines)


# --- Jasmin ---------------------------------------------------------------------------------

JASMIN_REFUSALS: dict[str, tuple[int, str]] = {
    "caller": (403, "Value filter failed: the caller number must be displayable"),
    "sender": (403, "Value filter failed: sender not allowed for this account"),
    "destination": (400, "Argument [to] has an invalid value"),
    "binary": (403, "Authorization failed: binary content not allowed for this account"),
    "signature": (403, "Content refused: signature missing"),
    "unsubscribe": (403, "Content refused: unsubscribe instruction missing"),
    "balance": (403, "Cannot charge submit_sm: insufficient balance"),
    "optout": (403, "Destination has opted out"),
    "rate": (403, "User throughput exceeded"),
    "route": (412, "No route found"),
    "store": (503, "Service temporarily unavailable, try again later"),
    "capacity": (503, "No connector available now, try again later"),
    "length": (400, "Message too long for this account"),
    "part": (400, "Duplicate or conflicting part of a long message"),
    "coding": (400, "Parts of a long message in different codings"),
}


def jasmin_reply(outcome: Outcome) -> tuple[int, str]:
    if type(outcome) is Accepted:
        return 200, 'Success "%s"' % outcome.ids[0].decode()
    if type(outcome) is Refused:
        r = outcome.refusal
        if r.reason == "content":
            return 403, 'Error "Content refused: category %s"' % (r.category or "content")
        status, text = JASMIN_REFUSALS.get(r.reason, (403, "Refused: %s" % r.reason))
        return status, 'Error "%s"' % text
    assert type(outcome) is Failed
    sent = ""
    if outcome.ok_parts:
        sent = " (%d of %d parts sent)" % (outcome.ok_parts, outcome.parts)
    if outcome.status in TEMPORARY:
        return 503, 'Error "Cannot send submit_sm: %s, try again later%s"' % (
            C.status_name(outcome.status), sent)
    return 500, 'Error "Cannot send submit_sm: %s%s"' % (C.status_name(outcome.status), sent)


def jasmin_error(text: str) -> str:
    return 'Error "%s"' % text


# A status-only answer (the concatenation path answers like SMPP): the refusal it stands for.
_BY_STATUS = {
    _S["ESME_RINVSRCADR"]: Refusal(_S["ESME_RINVSRCADR"], "sender", "sender refused"),
    _S["ESME_RINVDSTADR"]: Refusal(_S["ESME_RINVDSTADR"], "destination",
                                   "destination refused"),
    _S["ESME_RTHROTTLED"]: Refusal(_S["ESME_RTHROTTLED"], "rate", "throttled"),
    _S["PROXYD_RCONTENT"]: Refusal(_S["PROXYD_RCONTENT"], "content", "content refused"),
    _S["PROXYD_RNOBALANCE"]: Refusal(_S["PROXYD_RNOBALANCE"], "balance", "no balance"),
    _S["ESME_RSYSERR"]: Refusal(_S["ESME_RSYSERR"], "store", "try again later"),
    _S["ESME_RMSGQFUL"]: Refusal(_S["ESME_RMSGQFUL"], "capacity", "try again later"),
    _S["ESME_RINVMSGLEN"]: Refusal(_S["ESME_RINVMSGLEN"], "length", "too long"),
    _S["ESME_RINVNUMMSGS"]: Refusal(_S["ESME_RINVNUMMSGS"], "length", "too many parts"),
    _S["PROXYD_RDUPPART"]: Refusal(_S["PROXYD_RDUPPART"], "part", "duplicate part"),
    _S["PROXYD_RMIXEDDCS"]: Refusal(_S["PROXYD_RMIXEDDCS"], "coding", "mixed codings"),
}


def outcome_from_status(status: int, message_id: bytes) -> Outcome:
    if status == 0:
        return Accepted((message_id,))
    r = _BY_STATUS.get(status)
    if r is not None:
        return Refused(r)
    return Failed(status, 0, 1)
