"""CMPP 3.0 and 2.0 PDUs, sans-IO: typed values, encode, strict decode (QB-GF-028-2003).

A frame is a 12-octet header (Total_Length, Command_Id, Sequence_Id, big-endian) and a body.
Every PDU of the SP <-> ISMG interface is a named tuple (`Connect`, `ConnectResp`,
`Terminate`, `TerminateResp`, `Submit`, `SubmitResp`, `Query`, `QueryResp`, `Deliver`,
`DeliverResp`, `Cancel`, `CancelResp`, `ActiveTest`, `ActiveTestResp`) and the status report
carried in a Deliver's Msg_Content is a `Report`. One class serves both versions; the layout
differs (`V3`, `V2`):

* 3.0: 4-octet Status/Result/Success_Id; 32-octet terminal ids with a type octet after
  (Fee_terminal_type, Dest_terminal_type, Src_terminal_type); a 20-octet LinkID last.
* 2.0: 1-octet Status/Result/Success_Id; 21-octet terminal ids, no type octets; 8 reserved
  octets where 3.0 has LinkID (kept in `link_id`).

Fixed-width Octet Strings are right-padded with NUL on the wire and stripped of trailing NULs
when decoded; a value longer than its field refuses to encode (ValueError naming the field).

`decode(version, command_id, seq, body)` returns a PDU or a `BadPdu` whose `error` is the
CMPP result to answer with (1 message structure error, 2 command id error, 4 message length
error) and whose `message` names the field. Nothing is shared between PDUs.

Also here: `msg_id_pack` / `msg_id_unpack` (the 64-bit Msg_Id: month, day, hour, minute,
second, gateway id, sequence), `authenticator_source` (MD5(Source_Addr + 9 NULs + secret +
MMDDHHMMSS)) and `authenticator_ismg` (MD5(Status + AuthenticatorSource + secret), the Status
as its wire octets).
"""
from __future__ import annotations

import hashlib
import struct
from collections import namedtuple
from typing import Any

HEADER = struct.Struct(">III")
HEADER_LEN = 12
MAX_FRAME = 4096         # the largest PDU is a Submit to 100 terminals (about 3.4 KB)

CONNECT, CONNECT_RESP = 0x00000001, 0x80000001
TERMINATE, TERMINATE_RESP = 0x00000002, 0x80000002
SUBMIT, SUBMIT_RESP = 0x00000004, 0x80000004
DELIVER, DELIVER_RESP = 0x00000005, 0x80000005
QUERY, QUERY_RESP = 0x00000006, 0x80000006
CANCEL, CANCEL_RESP = 0x00000007, 0x80000007
ACTIVE_TEST, ACTIVE_TEST_RESP = 0x00000008, 0x80000008
RESP_BIT = 0x80000000

V3, V2 = 0x30, 0x20

# results (CMPP_SUBMIT_RESP / CMPP_DELIVER_RESP)
R_OK, R_STRUCTURE, R_COMMAND, R_SEQUENCE, R_LENGTH, R_FEE, R_TOO_LONG, R_SERVICE, \
    R_FLOW, R_FEE_NUMBER, R_SRC_ID, R_MSG_SRC, R_FEE_TERMINAL, R_DEST = range(14)
# CMPP_CONNECT_RESP status
C_OK, C_STRUCTURE, C_SOURCE, C_AUTH, C_VERSION = range(5)

MSG_FMTS = frozenset((0, 3, 4, 8, 15))
MAX_DESTS = 100
STAT_LEN = 7

COMMAND_NAMES = {CONNECT: "CMPP_CONNECT", CONNECT_RESP: "CMPP_CONNECT_RESP",
                 TERMINATE: "CMPP_TERMINATE", TERMINATE_RESP: "CMPP_TERMINATE_RESP",
                 SUBMIT: "CMPP_SUBMIT", SUBMIT_RESP: "CMPP_SUBMIT_RESP",
                 DELIVER: "CMPP_DELIVER", DELIVER_RESP: "CMPP_DELIVER_RESP",
                 QUERY: "CMPP_QUERY", QUERY_RESP: "CMPP_QUERY_RESP",
                 CANCEL: "CMPP_CANCEL", CANCEL_RESP: "CMPP_CANCEL_RESP",
                 ACTIVE_TEST: "CMPP_ACTIVE_TEST", ACTIVE_TEST_RESP: "CMPP_ACTIVE_TEST_RESP"}


class BadPdu:
    """A frame that does not decode: answer (when it is a request) with `error`."""

    __slots__ = ("command_id", "seq", "error", "message")

    def __init__(self, command_id: int, seq: int, error: int, message: str) -> None:
        self.command_id = command_id
        self.seq = seq
        self.error = error
        self.message = message

    def __repr__(self) -> str:
        return "BadPdu(%s seq=%d result=%d: %s)" % (
            COMMAND_NAMES.get(self.command_id, hex(self.command_id)), self.seq, self.error,
            self.message)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BadPdu) and (self.command_id, self.seq, self.error,
                                              self.message) == (
            other.command_id, other.seq, other.error, other.message)


# --- layouts ----------------------------------------------------------------------------------
# kinds: ("u", n) unsigned integer of n octets; ("s", n) Octet String of n, NUL-padded;
# ("b", n) n raw octets (binary, kept as is); ("d", n) DestUsr_tl then that many n-octet
# terminal ids (a tuple); ("m",) Msg_Length then Msg_Content.
U1, U4, U8 = ("u", 1), ("u", 4), ("u", 8)


def _s(n: int) -> tuple:
    return ("s", n)


def _layouts(v3: bool) -> dict[int, tuple]:
    term = 32 if v3 else 21
    res = U4 if v3 else U1
    t3 = (lambda *f: f) if v3 else (lambda *f: ())
    return {
        CONNECT: (("source_addr", _s(6)), ("authenticator", ("b", 16)), ("version", U1),
                  ("timestamp", U4)),
        CONNECT_RESP: (("status", res), ("authenticator", ("b", 16)), ("version", U1)),
        TERMINATE: (),
        TERMINATE_RESP: (),
        SUBMIT: (("msg_id", U8), ("pk_total", U1), ("pk_number", U1),
                 ("registered_delivery", U1), ("msg_level", U1), ("service_id", _s(10)),
                 ("fee_user_type", U1), ("fee_terminal_id", _s(term)),
                 *t3(("fee_terminal_type", U1)), ("tp_pid", U1), ("tp_udhi", U1),
                 ("msg_fmt", U1), ("msg_src", _s(6)), ("fee_type", _s(2)),
                 ("fee_code", _s(6)), ("valid_time", _s(17)), ("at_time", _s(17)),
                 ("src_id", _s(21)), ("dest_terminal_ids", ("d", term)),
                 *t3(("dest_terminal_type", U1)), ("msg_content", ("m",)),
                 ("link_id", _s(20 if v3 else 8))),
        SUBMIT_RESP: (("msg_id", U8), ("result", res)),
        QUERY: (("time", _s(8)), ("query_type", U1), ("query_code", _s(10)),
                ("reserve", _s(8))),
        QUERY_RESP: (("time", _s(8)), ("query_type", U1), ("query_code", _s(10)),
                     ("mt_tlmsg", U4), ("mt_tlusr", U4), ("mt_scs", U4), ("mt_wt", U4),
                     ("mt_fl", U4), ("mo_scs", U4), ("mo_wt", U4), ("mo_fl", U4)),
        DELIVER: (("msg_id", U8), ("dest_id", _s(21)), ("service_id", _s(10)),
                  ("tp_pid", U1), ("tp_udhi", U1), ("msg_fmt", U1),
                  ("src_terminal_id", _s(term)), *t3(("src_terminal_type", U1)),
                  ("registered_delivery", U1), ("msg_content", ("m",)),
                  ("link_id", _s(20 if v3 else 8))),
        DELIVER_RESP: (("msg_id", U8), ("result", res)),
        CANCEL: (("msg_id", U8),),
        CANCEL_RESP: (("success_id", res),),
        ACTIVE_TEST: (),
        ACTIVE_TEST_RESP: (("reserved", U1),),
    }


REPORT_LAYOUT = {V3: (("msg_id", U8), ("stat", _s(7)), ("submit_time", _s(10)),
                      ("done_time", _s(10)), ("dest_terminal_id", _s(32)),
                      ("smsc_sequence", U4)),
                 V2: (("msg_id", U8), ("stat", _s(7)), ("submit_time", _s(10)),
                      ("done_time", _s(10)), ("dest_terminal_id", _s(21)),
                      ("smsc_sequence", U4))}

LAYOUTS = {V3: _layouts(True), V2: _layouts(False)}

_NAMES = {CONNECT: "Connect", CONNECT_RESP: "ConnectResp", TERMINATE: "Terminate",
          TERMINATE_RESP: "TerminateResp", SUBMIT: "Submit", SUBMIT_RESP: "SubmitResp",
          QUERY: "Query", QUERY_RESP: "QueryResp", DELIVER: "Deliver",
          DELIVER_RESP: "DeliverResp", CANCEL: "Cancel", CANCEL_RESP: "CancelResp",
          ACTIVE_TEST: "ActiveTest", ACTIVE_TEST_RESP: "ActiveTestResp"}


def _default(kind: tuple) -> Any:
    return {"u": 0, "s": b"", "b": b"", "d": (), "m": b""}[kind[0]]


def _union_fields(cid: int) -> list[tuple[str, tuple]]:
    seen: dict[str, tuple] = {}
    for v in (V3, V2):
        for name, kind in LAYOUTS[v][cid]:
            seen.setdefault(name, kind)
    return list(seen.items())


PDU_CLASSES: dict[int, type] = {}
for _cid, _name in _NAMES.items():
    _fields = _union_fields(_cid)
    _cls = namedtuple(_name, [f for f, _ in _fields],  # type: ignore[misc]
                      defaults=[_default(k) for _, k in _fields])
    _cls.command_id = _cid
    PDU_CLASSES[_cid] = _cls
    globals()[_name] = _cls
_fields = list(REPORT_LAYOUT[V3])
Report = namedtuple("Report", [f for f, _ in _fields],  # type: ignore[misc]
                    defaults=[_default(k) for _, k in _fields])

Connect: Any; ConnectResp: Any; Terminate: Any; TerminateResp: Any; Submit: Any
SubmitResp: Any; Query: Any; QueryResp: Any; Deliver: Any; DeliverResp: Any; Cancel: Any
CancelResp: Any; ActiveTest: Any; ActiveTestResp: Any


# --- encoding -------------------------------------------------------------------------------
def _put(out: list, name: str, kind: tuple, value: Any) -> None:
    k = kind[0]
    if k == "u":
        n = kind[1]
        if not isinstance(value, int) or not 0 <= value < (1 << (8 * n)):
            raise ValueError("%s: must be an integer of %d octets, got %r" % (name, n, value))
        out.append(value.to_bytes(n, "big"))
    elif k == "s" or k == "b":
        n = kind[1]
        if len(value) > n:
            raise ValueError("%s: at most %d octets, got %d" % (name, n, len(value)))
        out.append(bytes(value).ljust(n, b"\0"))
    elif k == "d":
        n = kind[1]
        if not 1 <= len(value) <= MAX_DESTS:
            raise ValueError("%s: 1 to %d terminals, got %d" % (name, MAX_DESTS, len(value)))
        out.append(bytes((len(value),)))
        for t in value:
            _put(out, name, ("s", n), t)
    else:  # "m"
        if len(value) > 255:
            raise ValueError("%s: at most 255 octets, got %d" % (name, len(value)))
        out.append(bytes((len(value),)))
        out.append(bytes(value))


def _encode_fields(layout: tuple, pdu: Any) -> bytes:
    out: list[bytes] = []
    for name, kind in layout:
        _put(out, name, kind, getattr(pdu, name))
    return b"".join(out)


def encode_body(pdu: Any, version: int = V3) -> bytes:
    """The body of `pdu` in CMPP `version` (V3 or V2); ValueError naming a bad field."""
    return _encode_fields(LAYOUTS[version][pdu.command_id], pdu)


def encode(pdu: Any, seq: int, version: int = V3) -> bytes:
    """A whole frame: header (with `seq`) and body."""
    body = encode_body(pdu, version)
    return HEADER.pack(HEADER_LEN + len(body), pdu.command_id, seq) + body


def frame(command_id: int, seq: int, body: bytes = b"") -> bytes:
    return HEADER.pack(HEADER_LEN + len(body), command_id, seq) + body


def encode_report(report: Any, version: int = V3) -> bytes:
    """The Msg_Content of a status report Deliver."""
    return _encode_fields(REPORT_LAYOUT[version], report)


# --- decoding -------------------------------------------------------------------------------
class _Bad(Exception):
    def __init__(self, error: int, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def _decode_fields(layout: tuple, body: bytes, what: str) -> dict[str, Any]:
    vals: dict[str, Any] = {}
    p = 0
    n = len(body)
    for name, kind in layout:
        k = kind[0]
        if k == "u" or k == "s" or k == "b":
            w = kind[1]
            if p + w > n:
                raise _Bad(R_LENGTH, "%s: %s truncated (body of %d octets)" % (what, name, n))
            raw = body[p:p + w]
            p += w
            if k == "u":
                vals[name] = int.from_bytes(raw, "big")
            elif k == "s":
                vals[name] = raw.rstrip(b"\0")
            else:
                vals[name] = raw
        elif k == "d":
            w = kind[1]
            if p >= n:
                raise _Bad(R_LENGTH, "%s: DestUsr_tl truncated" % what)
            count = body[p]
            p += 1
            if not 1 <= count <= MAX_DESTS:
                raise _Bad(R_STRUCTURE, "%s: DestUsr_tl must be 1 to %d, got %d"
                           % (what, MAX_DESTS, count))
            if p + count * w > n:
                raise _Bad(R_LENGTH, "%s: %d Dest_terminal_Id of %d octets exceed the body"
                           % (what, count, w))
            vals[name] = tuple(body[p + i * w:p + (i + 1) * w].rstrip(b"\0")
                               for i in range(count))
            p += count * w
        else:  # "m"
            if p >= n:
                raise _Bad(R_LENGTH, "%s: Msg_Length truncated" % what)
            ln = body[p]
            p += 1
            if p + ln > n:
                raise _Bad(R_LENGTH, "%s: Msg_Length %d exceeds the body" % (what, ln))
            vals[name] = body[p:p + ln]
            p += ln
    if p != n:
        raise _Bad(R_LENGTH, "%s: body is %d octets, the fields take %d" % (what, n, p))
    return vals


def _check(cid: int, v: dict[str, Any], version: int, what: str) -> None:
    if cid == SUBMIT:
        if not 1 <= v["pk_total"] or not 1 <= v["pk_number"] <= v["pk_total"]:
            raise _Bad(R_STRUCTURE, "%s: Pk_number %d outside 1..Pk_total %d"
                       % (what, v["pk_number"], v["pk_total"]))
        if v["registered_delivery"] > 1:
            raise _Bad(R_STRUCTURE, "%s: Registered_Delivery must be 0 or 1, got %d"
                       % (what, v["registered_delivery"]))
        if v["fee_user_type"] > 3:
            raise _Bad(R_STRUCTURE, "%s: Fee_UserType must be 0 to 3, got %d"
                       % (what, v["fee_user_type"]))
    if cid == SUBMIT or cid == DELIVER:
        if v["msg_fmt"] not in MSG_FMTS:
            raise _Bad(R_STRUCTURE, "%s: Msg_Fmt %d is not 0, 3, 4, 8 or 15"
                       % (what, v["msg_fmt"]))
        if v["tp_udhi"] > 1:
            raise _Bad(R_STRUCTURE, "%s: TP_udhi must be 0 or 1, got %d" % (what, v["tp_udhi"]))
        if v["tp_udhi"] and v["msg_content"]:
            udhl = v["msg_content"][0]
            if udhl + 1 > len(v["msg_content"]):
                raise _Bad(R_STRUCTURE, "%s: UDH length %d exceeds Msg_Content of %d octets"
                           % (what, udhl, len(v["msg_content"])))
    if cid == DELIVER:
        if v["registered_delivery"] > 1:
            raise _Bad(R_STRUCTURE, "%s: Registered_Delivery must be 0 or 1, got %d"
                       % (what, v["registered_delivery"]))
        if v["registered_delivery"] == 1:
            want = report_len(version)
            if len(v["msg_content"]) != want:
                raise _Bad(R_LENGTH, "%s: a status report's Msg_Content is %d octets, got %d"
                           % (what, want, len(v["msg_content"])))


def report_len(version: int) -> int:
    return 71 if version == V3 else 60


def decode(version: int, command_id: int, seq: int, body: bytes) -> Any:
    """The typed PDU of a frame's body, or a `BadPdu` (never raises)."""
    layout = LAYOUTS[version].get(command_id)
    what = COMMAND_NAMES.get(command_id, "0x%08x" % command_id)
    if layout is None:
        return BadPdu(command_id, seq, R_COMMAND, "unknown Command_Id 0x%08x" % command_id)
    try:
        vals = _decode_fields(layout, body, what)
        _check(command_id, vals, version, what)
    except _Bad as e:
        return BadPdu(command_id, seq, e.error, e.message)
    return PDU_CLASSES[command_id](**vals)


def decode_frame(version: int, data: bytes) -> tuple[int, int, Any]:
    """(command_id, seq, pdu or BadPdu) of a whole frame (as cut by a Framer)."""
    length, cid, seq = HEADER.unpack_from(data)
    return cid, seq, decode(version, cid, seq, data[HEADER_LEN:length])


def decode_report(version: int, content: bytes) -> Any:
    """The `Report` in a status report's Msg_Content, or a `BadPdu` (command DELIVER)."""
    try:
        return Report(**_decode_fields(REPORT_LAYOUT[version], content, "status report"))
    except _Bad as e:
        return BadPdu(DELIVER, 0, e.error, e.message)


# --- a CMPP_SUBMIT read for the simulator's hot path ----------------------------------------
# offsets of the fixed part: Pk_total 8, Pk_number 9, Registered_Delivery 10, Fee_UserType
# 22, then TP_pId / TP_udhi / Msg_Fmt after Fee_terminal_Id (and its type octet in 3.0),
# Src_Id, DestUsr_tl
_SCAN = {V3: (56, 57, 58, 107, 128, 32, 1, 20), V2: (44, 45, 46, 95, 116, 21, 0, 8)}


def scan_submit(version: int, body: bytes) -> tuple[int, bytes, bytes, int, bytes] | None:
    """(Registered_Delivery, Src_Id, first Dest_terminal_Id, TP_udhi, Msg_Content) of a
    CMPP_SUBMIT body that `decode` accepts, read at fixed offsets; None for any body it
    would refuse (decode it then for the precise error)."""
    _pid, udhi_at, fmt_at, src_at, dests_at, term, dtype, tail = _SCAN[version]
    n = len(body)
    if n <= dests_at:
        return None
    count = body[dests_at]
    p = dests_at + 1 + count * term + dtype
    if not 1 <= count <= MAX_DESTS or p >= n:
        return None
    ln = body[p]
    if p + 1 + ln + tail != n:
        return None
    total, number, reg = body[8], body[9], body[10]
    udhi = body[udhi_at]
    content = body[p + 1:p + 1 + ln]
    if not (1 <= number <= total and reg <= 1 and body[22] <= 3 and udhi <= 1
            and body[fmt_at] in MSG_FMTS) or (udhi and content and content[0] + 1 > ln):
        return None
    return (reg, body[src_at:src_at + 21].rstrip(b"\0"),
            body[dests_at + 1:dests_at + 1 + term].rstrip(b"\0"), udhi, content)


# --- Msg_Id ---------------------------------------------------------------------------------
def msg_id_pack(month: int, day: int, hour: int, minute: int, second: int, gateway: int,
                seq: int) -> int:
    """The 64-bit Msg_Id: month (bits 64-61), day (60-56), hour (55-51), minute (50-45),
    second (44-39), gateway id (38-17), sequence (16-1)."""
    for name, v, bits in (("month", month, 4), ("day", day, 5), ("hour", hour, 5),
                          ("minute", minute, 6), ("second", second, 6),
                          ("gateway", gateway, 22), ("seq", seq, 16)):
        if not 0 <= v < (1 << bits):
            raise ValueError("Msg_Id %s: %r does not fit %d bits" % (name, v, bits))
    return (month << 60 | day << 55 | hour << 50 | minute << 44 | second << 38
            | gateway << 16 | seq)


def msg_id_unpack(msg_id: int) -> tuple[int, int, int, int, int, int, int]:
    """(month, day, hour, minute, second, gateway, seq) of a Msg_Id."""
    return (msg_id >> 60 & 0xF, msg_id >> 55 & 0x1F, msg_id >> 50 & 0x1F, msg_id >> 44 & 0x3F,
            msg_id >> 38 & 0x3F, msg_id >> 16 & 0x3FFFFF, msg_id & 0xFFFF)


# --- authentication ---------------------------------------------------------------------------
def timestamp(month: int, day: int, hour: int, minute: int, second: int) -> int:
    """The Timestamp field: MMDDHHMMSS as an integer."""
    return (((month * 100 + day) * 100 + hour) * 100 + minute) * 100 + second


def authenticator_source(source_addr: bytes, secret: bytes, ts: int) -> bytes:
    """MD5(Source_Addr + 9 NUL octets + shared secret + MMDDHHMMSS as 10 digits)."""
    return hashlib.md5(source_addr + b"\0" * 9 + secret + b"%010d" % ts).digest()


def authenticator_ismg(status: int, auth_source: bytes, secret: bytes,
                       version: int = V3) -> bytes:
    """MD5(Status + AuthenticatorSource + shared secret), Status as its wire octets
    (4 in 3.0, 1 in 2.0)."""
    st = status.to_bytes(4 if version == V3 else 1, "big")
    return hashlib.md5(st + auth_source + secret).digest()


__all__ = ["BadPdu", "Report", "decode", "decode_frame", "decode_report", "encode",
           "encode_body", "encode_report", "frame", "msg_id_pack", "msg_id_unpack",
           "authenticator_source", "authenticator_ismg", "timestamp", "V3", "V2",
           "HEADER", "HEADER_LEN", "MAX_FRAME", "PDU_CLASSES", "COMMAND_NAMES"]
