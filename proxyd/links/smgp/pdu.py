"""SMGP 3.0 (China Telecom's short message gateway protocol) PDUs, sans-IO.

The header is 12 octets: PacketLength, RequestID, SequenceID (32-bit integers, network order).
Bodies are fixed layouts (see `proxyd.links.fixed`); Submit, Deliver and Forward end with
TLVs. Every PDU an SP exchanges with its gateway is here (Login, Submit, Deliver, Active_Test,
Exit, Query, and Forward for gateway-to-gateway links), with their responses; the GNS route
and prepaid commands are not (they decode as `UnknownPdu`).

Also here: the Login digests (AuthenticatorClient / AuthenticatorServer), the 10-octet MsgID
(gateway code, MMDDHHMM, counter; BCD) and the status report text of a Deliver with
IsReport = 1.
"""
from __future__ import annotations

import hashlib
import re
import struct
import time
from typing import Any, NamedTuple

from ..fixed import BadPdu, Codec, Errors, FramingError, Layout, UnknownPdu

__all__ = ["BadPdu", "UnknownPdu", "FramingError", "CODEC"]

VERSION = 0x30

# RequestID values (6.1.2)
LOGIN = 0x00000001
SUBMIT = 0x00000002
DELIVER = 0x00000003
ACTIVE_TEST = 0x00000004
FORWARD = 0x00000005
EXIT = 0x00000006
QUERY = 0x00000007
RESP = 0x80000000
LOGIN_RESP = LOGIN | RESP
SUBMIT_RESP = SUBMIT | RESP
DELIVER_RESP = DELIVER | RESP
ACTIVE_TEST_RESP = ACTIVE_TEST | RESP
FORWARD_RESP = FORWARD | RESP
EXIT_RESP = EXIT | RESP
QUERY_RESP = QUERY | RESP

# Status values (6.2.6) that proxyd sends, checks or maps
OK = 0
SYSTEM_BUSY = 1
TOO_MANY_CONNECTIONS = 2
BAD_STRUCTURE = 10
BAD_COMMAND = 11
DUPLICATE_SEQUENCE = 12
BAD_IP = 20
AUTH_ERROR = 21
VERSION_TOO_HIGH = 22
BAD_MSG_TYPE = 30
BAD_PRIORITY = 31
BAD_FEE_TYPE = 32
BAD_FEE_CODE = 33
BAD_MSG_FORMAT = 34
BAD_TIME_FORMAT = 35
BAD_MSG_LENGTH = 36
EXPIRED = 37
BAD_QUERY_TYPE = 38
ROUTE_ERROR = 39
BAD_FIXED_FEE = 40
BAD_SERVICE_ID = 43
BAD_VALID_TIME = 44
BAD_AT_TIME = 45
BAD_SRC_TERM_ID = 46
BAD_DEST_TERM_ID = 47
BAD_CHARGE_TERM_ID = 48
SP_FORBIDDEN_HOURS = 74
SP_DAILY_LIMIT = 75
SP_ACCOUNT_EXPIRED = 76

# LoginMode (6.2.3)
MODE_SEND = 0
MODE_RECEIVE = 1
MODE_TRANSMIT = 2

# MsgType (6.2.9), MsgFormat (6.2.16)
MSG_MO = 0
MSG_MT = 6
MSG_P2P = 7
FORMAT_ASCII = 0
FORMAT_BINARY = 4
FORMAT_UCS2 = 8
FORMAT_GB18030 = 15
MSG_FORMATS = frozenset((0, 3, 4, 8, 15, 246))

# TLV tags (6.3.1) and the value length the specification fixes for each
TP_PID = 0x0001
TP_UDHI = 0x0002
LINK_ID = 0x0003
CHARGE_USER_TYPE = 0x0004
CHARGE_TERM_TYPE = 0x0005
CHARGE_TERM_PSEUDO = 0x0006
DEST_TERM_TYPE = 0x0007
DEST_TERM_PSEUDO = 0x0008
PK_TOTAL = 0x0009
PK_NUMBER = 0x000A
SUBMIT_MSG_TYPE = 0x000B
SP_DEAL_RESULT = 0x000C
SRC_TERM_TYPE = 0x000D
SRC_TERM_PSEUDO = 0x000E
NODES_COUNT = 0x000F
MSG_SRC = 0x0010
SRC_TYPE = 0x0011
M_SERVICE_ID = 0x0012
TLV_SIZES = {TP_PID: 1, TP_UDHI: 1, LINK_ID: 20, CHARGE_USER_TYPE: 1, CHARGE_TERM_TYPE: 1,
             DEST_TERM_TYPE: 1, PK_TOTAL: 1, PK_NUMBER: 1, SUBMIT_MSG_TYPE: 1,
             SP_DEAL_RESULT: 1, SRC_TERM_TYPE: 1, NODES_COUNT: 1, MSG_SRC: 8, SRC_TYPE: 1,
             M_SERVICE_ID: 21}

STATUS_NAMES = {
    0: "OK", 1: "system busy", 2: "too many connections", 10: "message structure error",
    11: "command error", 12: "duplicate sequence", 20: "IP address error",
    21: "authentication error", 22: "version too high", 30: "invalid MsgType",
    31: "invalid Priority", 32: "invalid FeeType", 33: "invalid FeeCode",
    34: "invalid MsgFormat", 35: "invalid time format", 36: "invalid MsgLength",
    37: "validity expired", 38: "invalid QueryType", 39: "routing error",
    40: "invalid FixedFee", 43: "invalid ServiceID", 44: "invalid ValidTime",
    45: "invalid AtTime", 46: "invalid SrcTermID", 47: "invalid DestTermID",
    48: "invalid ChargeTermID", 49: "invalid SPCode", 73: "invalid MServiceID",
    74: "SP forbidden hours", 75: "SP over daily volume", 76: "SP account expired"}


def status_name(status: int) -> str:
    return "%d (%s)" % (status, STATUS_NAMES.get(status, "reserved"))


def _s(n: int) -> tuple:
    return ("s", n)


def _check_submit(p: Any) -> tuple[int, str] | None:
    # 6.2.23: an MT message holds at most 140 octets; ASCII text (MsgFormat 0) may have up
    # to 160 characters, which the SMSC packs into 140 octets
    n = len(p.msg_content)
    if n > 140 and p.msg_format != FORMAT_ASCII:
        return BAD_MSG_LENGTH, "msg_content: %d octets in MsgFormat %d (at most 140)" % (
            n, p.msg_format)
    return None


B, I_ = ("B",), ("I",)
_MSGID = ("x", 10)
_ID_STATUS = Layout((("msg_id", _MSGID), ("status", I_)))

LAYOUTS = {
    LOGIN: ("Login", Layout(
        (("client_id", _s(8)), ("authenticator", ("x", 16)), ("login_mode", B),
         ("timestamp", I_), ("version", B)),
        allowed={"login_mode": (MODE_SEND, MODE_RECEIVE, MODE_TRANSMIT)})),
    LOGIN_RESP: ("LoginResp", Layout(
        (("status", I_), ("authenticator", ("x", 16)), ("version", B)))),
    SUBMIT: ("Submit", Layout(
        (("msg_type", B), ("need_report", B), ("priority", B), ("service_id", _s(10)),
         ("fee_type", _s(2)), ("fee_code", _s(6)), ("fixed_fee", _s(6)),
         ("msg_format", B), ("valid_time", _s(17)), ("at_time", _s(17)),
         ("src_term_id", _s(21)), ("charge_term_id", _s(21)),
         ("dest_term_ids", ("l8", 21)), ("msg_content", ("v8",)), ("reserve", _s(8))),
        tlvs=True,
        allowed={"msg_type": (MSG_MO, MSG_MT, MSG_P2P), "need_report": (0, 1),
                 "priority": (0, 1, 2, 3), "msg_format": MSG_FORMATS},
        limits={"dest_term_ids": (1, 100), "msg_content": (0, 160)},
        check=_check_submit)),
    SUBMIT_RESP: ("SubmitResp", _ID_STATUS),
    DELIVER: ("Deliver", Layout(
        (("msg_id", _MSGID), ("is_report", B), ("msg_format", B), ("recv_time", _s(14)),
         ("src_term_id", _s(21)), ("dest_term_id", _s(21)), ("msg_content", ("v8",)),
         ("reserve", _s(8))),
        tlvs=True, allowed={"is_report": (0, 1)})),
    DELIVER_RESP: ("DeliverResp", _ID_STATUS),
    ACTIVE_TEST: ("ActiveTest", Layout(())),
    ACTIVE_TEST_RESP: ("ActiveTestResp", Layout(())),
    FORWARD: ("Forward", Layout(
        (("msg_id", _MSGID), ("dest_smgw_no", _s(6)), ("src_smgw_no", _s(6)),
         ("smc_no", _s(6)), ("msg_type", B), ("report_flag", B), ("priority", B),
         ("service_id", _s(10)), ("fee_type", _s(2)), ("fee_code", _s(6)),
         ("fixed_fee", _s(6)), ("msg_format", B), ("valid_time", _s(17)),
         ("at_time", _s(17)), ("src_term_id", _s(21)), ("dest_term_id", _s(21)),
         ("charge_term_id", _s(21)), ("msg_content", ("v8",)), ("reserve", _s(8))),
        tlvs=True, allowed={"report_flag": (0, 1, 2)})),
    FORWARD_RESP: ("ForwardResp", Layout((("msg_id", _MSGID), ("status", I_)), tlvs=True)),
    EXIT: ("Exit", Layout(())),
    EXIT_RESP: ("ExitResp", Layout(())),
    QUERY: ("Query", Layout(
        (("query_time", _s(8)), ("query_type", B), ("query_code", _s(10))),
        allowed={"query_type": (0, 1)})),
    QUERY_RESP: ("QueryResp", Layout(
        (("query_time", _s(8)), ("query_type", B), ("query_code", _s(10)),
         ("mt_tlmsg", I_), ("mt_tlusr", I_), ("mt_scs", I_), ("mt_wt", I_), ("mt_fl", I_),
         ("mo_scs", I_), ("mo_wt", I_), ("mo_fl", I_), ("reserve", _s(8))))),
}

CODEC = Codec("smgp", ">III", 1, Errors(
    structure=BAD_STRUCTURE, length=BAD_MSG_LENGTH,
    values={"msg_type": BAD_MSG_TYPE, "priority": BAD_PRIORITY,
            "msg_format": BAD_MSG_FORMAT, "msg_content": BAD_MSG_LENGTH,
            "dest_term_ids": BAD_DEST_TERM_ID, "query_type": BAD_QUERY_TYPE,
            "login_mode": BAD_STRUCTURE, "need_report": BAD_STRUCTURE}),
    LAYOUTS, TLV_SIZES)
HEADER_LEN = CODEC.header_len

Login: Any = CODEC.by_name["Login"]
LoginResp: Any = CODEC.by_name["LoginResp"]
Submit: Any = CODEC.by_name["Submit"]
SubmitResp: Any = CODEC.by_name["SubmitResp"]
Deliver: Any = CODEC.by_name["Deliver"]
DeliverResp: Any = CODEC.by_name["DeliverResp"]
ActiveTest: Any = CODEC.by_name["ActiveTest"]
ActiveTestResp: Any = CODEC.by_name["ActiveTestResp"]
Forward: Any = CODEC.by_name["Forward"]
ForwardResp: Any = CODEC.by_name["ForwardResp"]
Exit: Any = CODEC.by_name["Exit"]
ExitResp: Any = CODEC.by_name["ExitResp"]
Query: Any = CODEC.by_name["Query"]
QueryResp: Any = CODEC.by_name["QueryResp"]

decode = CODEC.decode
decode_body = CODEC.decode_body
encode = CODEC.encode
frame = CODEC.frame


# --- Login ------------------------------------------------------------------------------------

def timestamp(now: float) -> int:
    """The TimeStamp field for a moment: MMDDHHMMSS (local time) read as a decimal integer."""
    return int(time.strftime("%m%d%H%M%S", time.localtime(now)))


def authenticator_client(client_id: bytes, secret: bytes, ts: int) -> bytes:
    """MD5(ClientID + 7 zero octets + shared secret + TimeStamp as 10 digits) (6.2.2)."""
    return hashlib.md5(client_id + b"\0" * 7 + secret + b"%010d" % ts).digest()


def authenticator_server(status: int, auth_client: bytes, secret: bytes) -> bytes:
    """MD5(Status as 4 octets + AuthenticatorClient + shared secret) (6.2.7)."""
    return hashlib.md5(struct.pack(">I", status) + auth_client + secret).digest()


# --- MsgID -------------------------------------------------------------------------------------

def _bcd(digits: str) -> bytes:
    return bytes.fromhex(digits)


def make_msg_id(gateway: str, mmddhhmm: int, counter: int) -> bytes:
    """The 10-octet MsgID: gateway code (6 digits), MMDDHHMM, counter (6 digits), in BCD."""
    if len(gateway) != 6 or not gateway.isdigit():
        raise ValueError("gateway code: 6 digits")
    return _bcd("%s%08d%06d" % (gateway, mmddhhmm, counter % 1000000))


def msg_id_text(msg_id: bytes) -> bytes:
    """A MsgID as proxyd keeps it: its 20 hex digits (the BCD digits, in order)."""
    return msg_id.hex().encode()


# --- status reports (6.2.63) ---------------------------------------------------------------

class Report(NamedTuple):
    msg_id: bytes           # the 10-octet MsgID of the submitted message
    stat: bytes             # DELIVRD, EXPIRED, DELETED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD
    err: bytes              # three digits, 000 when delivered
    submit_date: bytes = b""
    done_date: bytes = b""
    sub: bytes = b"001"
    dlvrd: bytes = b"001"
    text: bytes = b""


_REPORT_FIELDS = re.compile(rb"(sub|dlvrd|submit[ _]date|done[ _]date|stat|err):\s*(\S*)", re.I)
_REPORT_TEXT = re.compile(rb"text:(.*)$", re.I | re.S)
_HEX20 = re.compile(rb"[0-9A-Fa-f]{20}(?=\s)")


def report_content(r: Report) -> bytes:
    """The MsgContent of a status report: ``id:`` and the MsgID's 10 octets, then the
    SMPP-style fields."""
    return (b"id:" + r.msg_id + b" sub:%s dlvrd:%s submit date:%s done date:%s stat:%s"
            b" err:%s text:%s" % (r.sub, r.dlvrd, r.submit_date, r.done_date, r.stat,
                                  r.err, r.text[:20]))


def parse_report(content: bytes) -> Report | None:
    """The report in a Deliver's MsgContent, or None when it is not one. The id is the 10
    octets after ``id:``; gateways that write it as 20 hex digits are understood too."""
    if not content.startswith(b"id:") or len(content) < 13:
        return None
    m = _HEX20.match(content, 3)
    if m:
        mid, rest = bytes.fromhex(m.group(0).decode()), content[23:]
    else:
        mid, rest = content[3:13], content[13:]
    f = {k.lower().replace(b"_", b" "): v for k, v in _REPORT_FIELDS.findall(rest)}
    if b"stat" not in f:
        return None
    t = _REPORT_TEXT.search(rest)
    return Report(mid, f[b"stat"].upper(), f.get(b"err", b"") or b"000",
                  f.get(b"submit date", b""), f.get(b"done date", b""),
                  f.get(b"sub", b""), f.get(b"dlvrd", b""), t.group(1) if t else b"")


# --- the hot path -------------------------------------------------------------------------------

_SUBMIT_HEAD = struct.Struct(">BBB10s2s6s6sB17s17s21s21sB21sB")
_TLV1 = struct.Struct(">HHB")


def submit_body(need_report: int, priority: int, service_id: bytes, fee_type: bytes,
                fee_code: bytes, msg_format: int, valid_time: bytes, at_time: bytes,
                src_term_id: bytes, dest_term_id: bytes, content: bytes,
                tlvs: bytes = b"") -> bytes:
    """The body of an MT Submit to one destination, as `Submit(...).encode()` would make it
    (one struct call: the relay's hot path); `tlvs` already encoded. Fields longer than
    their width are cut by struct; content over 255 octets raises ValueError."""
    if len(content) > 255:
        raise ValueError("msg_content: at most 255 octets")
    return _SUBMIT_HEAD.pack(MSG_MT, need_report, priority, service_id, fee_type, fee_code,
                             b"", msg_format, valid_time, at_time, src_term_id, b"", 1,
                             dest_term_id, len(content)) + content + b"\0" * 8 + tlvs


def tlv1(tag: int, value: int) -> bytes:
    """An encoded TLV of one octet."""
    return _TLV1.pack(tag, 1, value)
