"""SGIP 1.2 (China Unicom's short message gateway interface protocol) PDUs, sans-IO.

The header is 20 octets: MessageLength, CommandID, and the 12-octet SequenceNumber, which is
three 32-bit integers: the originating node's number, the moment as MMDDHHMMSS read as a
decimal integer, and a counter. In this codec a sequence is a `Seq` (a 3-tuple).

Bodies are fixed layouts (see `proxyd.links.fixed`); there are no TLVs. Here are the PDUs an
SP exchanges with its gateway in either direction: Bind, Unbind, Submit, Deliver, Report,
UserRpt and their responses. The GNS route commands, CheckUser and Trace decode as
`UnknownPdu` (a gateway does not send them to an SP).
"""
from __future__ import annotations

import struct
import time
from typing import Any, NamedTuple

from ..fixed import BadPdu, Codec, Errors, FramingError, Layout, UnknownPdu

__all__ = ["BadPdu", "UnknownPdu", "FramingError", "CODEC"]

# CommandID values (5.1)
BIND = 0x1
UNBIND = 0x2
SUBMIT = 0x3
DELIVER = 0x4
REPORT = 0x5
USERRPT = 0x11
RESP = 0x80000000
BIND_RESP = BIND | RESP
UNBIND_RESP = UNBIND | RESP
SUBMIT_RESP = SUBMIT | RESP
DELIVER_RESP = DELIVER | RESP
REPORT_RESP = REPORT | RESP
USERRPT_RESP = USERRPT | RESP

# LoginType (4.2.3.1.1)
LOGIN_SP_TO_SMG = 1
LOGIN_SMG_TO_SP = 2
LOGIN_SMG_TO_SMG = 3
LOGIN_TYPES = (1, 2, 3, 4, 5, 6, 11)

# Result / ErrorCode values (5.2)
OK = 0
BAD_LOGIN = 1
DUPLICATE_LOGIN = 2
TOO_MANY_CONNECTIONS = 3
BAD_LOGIN_TYPE = 4
BAD_PARAMETER = 5
BAD_NUMBER = 6
BAD_MESSAGE_ID = 7
BAD_LENGTH = 8
BAD_SEQUENCE = 9
BAD_GNS_OPERATION = 10
NODE_BUSY = 11
UNREACHABLE = 21
ROUTE_ERROR = 22
NO_ROUTE = 23
BAD_CHARGE_NUMBER = 24
USER_UNREACHABLE = 25
HANDSET_MEMORY_FULL = 26
NO_SMS_SUPPORT = 27
HANDSET_ERROR = 28
UNKNOWN_USER = 29
NOT_SUPPORTED = 30
BAD_DEVICE = 31
SYSTEM_FAILURE = 32
SMSC_QUEUE_FULL = 33

RESULT_NAMES = {
    0: "OK", 1: "invalid login", 2: "repeated login", 3: "too many connections",
    4: "invalid login type", 5: "parameter format error", 6: "invalid mobile number",
    7: "message id error", 8: "message length error", 9: "invalid sequence number",
    10: "invalid GNS operation", 11: "node busy", 21: "destination unreachable",
    22: "routing error", 23: "no route", 24: "charge number invalid",
    25: "user cannot communicate", 26: "handset memory full", 27: "no SMS support",
    28: "handset error", 29: "unknown user", 30: "not supported", 31: "invalid device",
    32: "system failure", 33: "SMSC queue full"}

# Report State (4.2.3.5.1)
STATE_DELIVERED = 0
STATE_WAITING = 1
STATE_FAILED = 2

# MessageCoding (4.2.3.3.1)
CODING_ASCII = 0
CODING_BINARY = 4
CODING_UCS2 = 8
CODING_GBK = 15


def result_name(result: int) -> str:
    return "%d (%s)" % (result, RESULT_NAMES.get(result, "reserved"))


class Seq(NamedTuple):
    """A SequenceNumber: node number, MMDDHHMMSS, counter."""
    node: int
    stamp: int
    counter: int


def stamp(now: float) -> int:
    """The time part of a sequence number: MMDDHHMMSS (local time) as a decimal integer."""
    return int(time.strftime("%m%d%H%M%S", time.localtime(now)))


class Sequencer:
    """Sequence numbers of one node: (node_id, stamp(now), counter); the counter wraps."""

    __slots__ = ("node", "_n")

    def __init__(self, node: int, start: int = 0) -> None:
        if not 0 <= node <= 0xFFFFFFFF:
            raise ValueError("node id: a 32-bit unsigned integer")
        self.node = node
        self._n = start

    def next(self, now: float) -> Seq:
        n = self._n = (self._n + 1) & 0xFFFFFFFF
        return Seq(self.node, stamp(now), n)


def seq_text(seq: Any) -> bytes:
    """A sequence as proxyd keeps it (a Report names the Submit by it): the three numbers
    in decimal, 10 digits each."""
    return b"%010d%010d%010d" % tuple(seq)


def _s(n: int) -> tuple:
    return ("s", n)


B = ("B",)
_RESULT = Layout((("result", B), ("reserve", _s(8))))

LAYOUTS = {
    BIND: ("Bind", Layout(
        (("login_type", B), ("login_name", _s(16)), ("login_password", _s(16)),
         ("reserve", _s(8))), allowed={"login_type": LOGIN_TYPES})),
    BIND_RESP: ("BindResp", _RESULT),
    UNBIND: ("Unbind", Layout(())),
    UNBIND_RESP: ("UnbindResp", Layout(())),
    SUBMIT: ("Submit", Layout(
        (("sp_number", _s(21)), ("charge_number", _s(21)), ("user_numbers", ("l8", 21)),
         ("corp_id", _s(5)), ("service_type", _s(10)), ("fee_type", B),
         ("fee_value", _s(6)), ("given_value", _s(6)), ("agent_flag", B),
         ("morelate_to_mt_flag", B), ("priority", B), ("expire_time", _s(16)),
         ("schedule_time", _s(16)), ("report_flag", B), ("tp_pid", B), ("tp_udhi", B),
         ("message_coding", B), ("message_type", B), ("message_content", ("v32",)),
         ("reserve", _s(8))),
        allowed={"fee_type": range(0, 5), "agent_flag": (0, 1),
                 "morelate_to_mt_flag": range(0, 4), "priority": range(0, 10),
                 "report_flag": range(0, 4), "tp_udhi": (0, 1)},
        limits={"user_numbers": (1, 100), "message_content": (0, 160)})),
    SUBMIT_RESP: ("SubmitResp", _RESULT),
    DELIVER: ("Deliver", Layout(
        (("user_number", _s(21)), ("sp_number", _s(21)), ("tp_pid", B), ("tp_udhi", B),
         ("message_coding", B), ("message_content", ("v32",)), ("reserve", _s(8))),
        allowed={"tp_udhi": (0, 1)}, limits={"message_content": (0, 160)})),
    DELIVER_RESP: ("DeliverResp", _RESULT),
    REPORT: ("Report", Layout(
        (("submit_node", ("I",)), ("submit_stamp", ("I",)), ("submit_counter", ("I",)),
         ("report_type", B), ("user_number", _s(21)), ("state", B), ("error_code", B),
         ("reserve", _s(8))),
        allowed={"report_type": (0, 1), "state": (0, 1, 2)})),
    REPORT_RESP: ("ReportResp", _RESULT),
    USERRPT: ("UserRpt", Layout(
        (("sp_number", _s(21)), ("user_number", _s(21)), ("user_condition", B),
         ("reserve", _s(8))), allowed={"user_condition": (0, 1, 2)})),
    USERRPT_RESP: ("UserRptResp", _RESULT),
}

CODEC = Codec("sgip", ">IIIII", 3, Errors(
    structure=BAD_PARAMETER, length=BAD_LENGTH,
    values={"login_type": BAD_LOGIN_TYPE, "user_numbers": BAD_NUMBER,
            "message_content": BAD_LENGTH}), LAYOUTS, max_pdu_bytes=4096)
HEADER_LEN = CODEC.header_len

Bind: Any = CODEC.by_name["Bind"]
BindResp: Any = CODEC.by_name["BindResp"]
Unbind: Any = CODEC.by_name["Unbind"]
UnbindResp: Any = CODEC.by_name["UnbindResp"]
Submit: Any = CODEC.by_name["Submit"]
SubmitResp: Any = CODEC.by_name["SubmitResp"]
Deliver: Any = CODEC.by_name["Deliver"]
DeliverResp: Any = CODEC.by_name["DeliverResp"]
Report: Any = CODEC.by_name["Report"]
ReportResp: Any = CODEC.by_name["ReportResp"]
UserRpt: Any = CODEC.by_name["UserRpt"]
UserRptResp: Any = CODEC.by_name["UserRptResp"]

decode = CODEC.decode
decode_body = CODEC.decode_body
encode = CODEC.encode
frame = CODEC.frame


def report_submit_seq(report: Any) -> Seq:
    """The sequence of the Submit a Report is about."""
    return Seq(report.submit_node, report.submit_stamp, report.submit_counter)


# --- the hot path -------------------------------------------------------------------------------

_SUBMIT_HEAD = struct.Struct(">21s21sB21s5s10sB6s6sBBB16s16sBBBBBI")


def submit_body(sp_number: bytes, charge_number: bytes, user_number: bytes, corp_id: bytes,
                service_type: bytes, fee_type: int, fee_value: bytes, priority: int,
                expire_time: bytes, schedule_time: bytes, report_flag: int, tp_pid: int,
                tp_udhi: int, coding: int, content: bytes) -> bytes:
    """The body of a Submit to one user (GivenValue "0", AgentFlag 0, MorelatetoMTFlag 2:
    not caused by an MO, MessageType 0), as `Submit(...).encode()` would make it, in one
    struct call (the relay's hot path)."""
    return _SUBMIT_HEAD.pack(sp_number, charge_number, 1, user_number, corp_id, service_type,
                             fee_type, fee_value, b"0", 0, 2, priority, expire_time,
                             schedule_time, report_flag, tp_pid, tp_udhi, coding, 0,
                             len(content)) + content + b"\0" * 8
