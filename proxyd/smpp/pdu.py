"""SMPP 3.4 PDUs: immutable typed values, encode/decode, and a stream framer (sans-IO).

Every PDU is a tuple subclass (a generated named tuple) holding ``seq``, ``status``, the
command's mandatory parameters (C-octet strings and short_message as ``bytes``, integers as
``int``) and ``tlvs``: a tuple of ``(tag, value_bytes)`` pairs in wire order, unknown tags
kept byte-exact. ``sm_length`` and ``number_of_dests`` are not stored: they are derived.

Decoding is split in two so the relay can forward a client's body unchanged:

* `Framer.feed(data)` takes arbitrary chunks and returns complete frames
  ``(command_id, status, seq, body)``; a broken ``command_length`` raises `FramingError`
  (the stream cannot be resynchronised: answer generic_nack ESME_RINVCMDLEN and close).
* `decode_body(command_id, status, seq, body)` returns the typed PDU, an `UnknownPdu`
  for a command id SMPP 3.4 does not define, or a `BadPdu` naming the field and the SMPP
  status to answer with (unterminated or over-long C-octet string, truncated TLV, ...).

No state is shared between PDUs: a framer is per connection and decoding is pure.
"""
from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any, Iterable

from . import constants as C

_HDR = struct.Struct(">IIII")
_I = struct.Struct(">I")
_HH = struct.Struct(">HH")
HEADER_LEN = 16


class FramingError(Exception):
    """command_length is impossible: the byte stream cannot be trusted any more."""

    def __init__(self, message: str, seq: int = 0, frames: list | None = None) -> None:
        super().__init__(message)
        self.seq = seq
        self.frames = frames or []  # complete frames that preceded the bad header


class BadPdu:
    """A frame whose body does not decode; answer its resp (or generic_nack) with `error`."""

    __slots__ = ("command_id", "seq", "status", "error", "message")

    def __init__(self, command_id: int, seq: int, status: int, error: int, message: str):
        self.command_id = command_id
        self.seq = seq
        self.status = status
        self.error = error
        self.message = message

    def __repr__(self) -> str:
        return "BadPdu(%s seq=%d %s: %s)" % (C.COMMAND_NAMES.get(self.command_id, hex(
            self.command_id)), self.seq, C.status_name(self.error), self.message)


class UnknownPdu:
    """A frame with a command id SMPP 3.4 does not define (answer generic_nack RINVCMDID)."""

    __slots__ = ("command_id", "seq", "status", "body")

    def __init__(self, command_id: int, seq: int, status: int, body: bytes):
        self.command_id = command_id
        self.seq = seq
        self.status = status
        self.body = body

    def __repr__(self) -> str:
        return "UnknownPdu(0x%08X seq=%d)" % (self.command_id, self.seq)


class _DecodeError(Exception):
    def __init__(self, error: int, message: str):
        super().__init__(message)
        self.error = error


# --- layouts -------------------------------------------------------------------------------
# kinds: ("c", maxlen incl. NUL) C-octet string; ("b",) uint8; ("I",) uint32;
#        ("sm",) sm_length + short_message; ("dests",) submit_multi destinations;
#        ("unsucc",) submit_multi_resp unsuccessful SMEs.

def _c(n: int) -> tuple:
    return ("c", n)


B = ("b",)
_BIND = (("system_id", _c(16)), ("password", _c(9)), ("system_type", _c(13)),
         ("interface_version", B), ("addr_ton", B), ("addr_npi", B),
         ("address_range", _c(41)))
_BIND_RESP = (("system_id", _c(16)),)
_SM = (("service_type", _c(6)), ("source_addr_ton", B), ("source_addr_npi", B),
       ("source_addr", _c(21)), ("dest_addr_ton", B), ("dest_addr_npi", B),
       ("destination_addr", _c(21)), ("esm_class", B), ("protocol_id", B),
       ("priority_flag", B), ("schedule_delivery_time", _c(17)),
       ("validity_period", _c(17)), ("registered_delivery", B),
       ("replace_if_present_flag", B), ("data_coding", B), ("sm_default_msg_id", B),
       ("short_message", ("sm",)))
_MSGID = (("message_id", _c(65)),)

LAYOUTS: dict[int, tuple[str, tuple]] = {
    C.GENERIC_NACK: ("GenericNack", ()),
    C.BIND_RECEIVER: ("BindReceiver", _BIND),
    C.BIND_RECEIVER_RESP: ("BindReceiverResp", _BIND_RESP),
    C.BIND_TRANSMITTER: ("BindTransmitter", _BIND),
    C.BIND_TRANSMITTER_RESP: ("BindTransmitterResp", _BIND_RESP),
    C.BIND_TRANSCEIVER: ("BindTransceiver", _BIND),
    C.BIND_TRANSCEIVER_RESP: ("BindTransceiverResp", _BIND_RESP),
    C.OUTBIND: ("Outbind", (("system_id", _c(16)), ("password", _c(9)))),
    C.UNBIND: ("Unbind", ()),
    C.UNBIND_RESP: ("UnbindResp", ()),
    C.ENQUIRE_LINK: ("EnquireLink", ()),
    C.ENQUIRE_LINK_RESP: ("EnquireLinkResp", ()),
    C.SUBMIT_SM: ("SubmitSm", _SM),
    C.SUBMIT_SM_RESP: ("SubmitSmResp", _MSGID),
    C.DELIVER_SM: ("DeliverSm", _SM),
    C.DELIVER_SM_RESP: ("DeliverSmResp", _MSGID),
    C.DATA_SM: ("DataSm", (
        ("service_type", _c(6)), ("source_addr_ton", B), ("source_addr_npi", B),
        ("source_addr", _c(65)), ("dest_addr_ton", B), ("dest_addr_npi", B),
        ("destination_addr", _c(65)), ("esm_class", B), ("registered_delivery", B),
        ("data_coding", B))),
    C.DATA_SM_RESP: ("DataSmResp", _MSGID),
    C.QUERY_SM: ("QuerySm", (("message_id", _c(65)), ("source_addr_ton", B),
                             ("source_addr_npi", B), ("source_addr", _c(21)))),
    C.QUERY_SM_RESP: ("QuerySmResp", (("message_id", _c(65)), ("final_date", _c(17)),
                                      ("message_state", B), ("error_code", B))),
    C.CANCEL_SM: ("CancelSm", (("service_type", _c(6)), ("message_id", _c(65)),
                               ("source_addr_ton", B), ("source_addr_npi", B),
                               ("source_addr", _c(21)), ("dest_addr_ton", B),
                               ("dest_addr_npi", B), ("destination_addr", _c(21)))),
    C.CANCEL_SM_RESP: ("CancelSmResp", ()),
    C.REPLACE_SM: ("ReplaceSm", (("message_id", _c(65)), ("source_addr_ton", B),
                                 ("source_addr_npi", B), ("source_addr", _c(21)),
                                 ("schedule_delivery_time", _c(17)),
                                 ("validity_period", _c(17)), ("registered_delivery", B),
                                 ("sm_default_msg_id", B), ("short_message", ("sm",)))),
    C.REPLACE_SM_RESP: ("ReplaceSmResp", ()),
    C.SUBMIT_MULTI: ("SubmitMulti", (
        ("service_type", _c(6)), ("source_addr_ton", B), ("source_addr_npi", B),
        ("source_addr", _c(21)), ("dest_addresses", ("dests",)), ("esm_class", B),
        ("protocol_id", B), ("priority_flag", B), ("schedule_delivery_time", _c(17)),
        ("validity_period", _c(17)), ("registered_delivery", B),
        ("replace_if_present_flag", B), ("data_coding", B), ("sm_default_msg_id", B),
        ("short_message", ("sm",)))),
    C.SUBMIT_MULTI_RESP: ("SubmitMultiResp", (("message_id", _c(65)),
                                              ("unsuccess_smes", ("unsucc",)))),
    C.ALERT_NOTIFICATION: ("AlertNotification", (
        ("source_addr_ton", B), ("source_addr_npi", B), ("source_addr", _c(65)),
        ("esme_addr_ton", B), ("esme_addr_npi", B), ("esme_addr", _c(65)))),
}

# Responses whose body SMPP 3.4 omits when command_status is not 0.
_EMPTY_ON_ERROR = frozenset((C.SUBMIT_SM_RESP, C.DATA_SM_RESP, C.BIND_RECEIVER_RESP,
                             C.BIND_TRANSMITTER_RESP, C.BIND_TRANSCEIVER_RESP,
                             C.QUERY_SM_RESP, C.SUBMIT_MULTI_RESP))


def _default(kind: tuple) -> Any:
    return {"c": b"", "b": 0, "I": 0, "sm": b"", "dests": (), "unsucc": ()}[kind[0]]


class _PduMixin:
    __slots__ = ()
    command_id: int
    layout: tuple

    def tlv(self, tag: int, default: bytes | None = None) -> bytes | None:
        """Value of the first TLV with this tag, or default."""
        for t, v in self.tlvs:  # type: ignore[attr-defined]
            if t == tag:
                return v
        return default

    @property
    def payload(self) -> bytes:
        """The user data as sent: short_message, or the message_payload TLV when
        short_message is empty (UDH included; b"" when neither is present)."""
        return getattr(self, "short_message", b"") or self.tlv(C.TAG_MESSAGE_PAYLOAD, b"") \
            or b""

    def encode(self) -> bytes:
        return encode(self)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((self.command_id, tuple(self)))

    @property
    def command_name(self) -> str:
        return C.COMMAND_NAMES[self.command_id]


PDU_CLASSES: dict[int, type] = {}


def _make_class(command_id: int, name: str, layout: tuple) -> type:
    fields = ["seq", "status"] + [f for f, _ in layout] + ["tlvs"]
    base = namedtuple(name + "Base", fields,  # type: ignore[misc]
                      defaults=[0, 0] + [_default(k) for _, k in layout] + [()])
    cls = type(name, (_PduMixin, base), {"__slots__": (), "command_id": command_id,
                                         "layout": layout})
    return cls


for _cid, (_name, _layout) in LAYOUTS.items():
    PDU_CLASSES[_cid] = globals()[_name] = _make_class(_cid, _name, _layout)

# names for type checkers and readers
GenericNack: Any; BindReceiver: Any; BindReceiverResp: Any; BindTransmitter: Any
BindTransmitterResp: Any; BindTransceiver: Any; BindTransceiverResp: Any; Outbind: Any
Unbind: Any; UnbindResp: Any; EnquireLink: Any; EnquireLinkResp: Any; SubmitSm: Any
SubmitSmResp: Any; DeliverSm: Any; DeliverSmResp: Any; DataSm: Any; DataSmResp: Any
QuerySm: Any; QuerySmResp: Any; CancelSm: Any; CancelSmResp: Any; ReplaceSm: Any
ReplaceSmResp: Any; SubmitMulti: Any; SubmitMultiResp: Any; AlertNotification: Any


def resp_class(command_id: int) -> type | None:
    """The response class of a request command id (None for responses and outbind)."""
    if command_id & C.RESP_BIT:
        return None
    return PDU_CLASSES.get(command_id | C.RESP_BIT)


# --- decoding --------------------------------------------------------------------------------

_LONG_STATUS = {"source_addr": C.STATUS["ESME_RINVSRCADR"],
                "destination_addr": C.STATUS["ESME_RINVDSTADR"],
                "message_id": C.STATUS["ESME_RINVMSGID"]}


def _cstr(body: bytes, p: int, maxlen: int, name: str) -> tuple[bytes, int]:
    try:
        j = body.index(0, p)
    except ValueError:
        raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"] if p >= len(body) else
                           C.STATUS["ESME_RINVPARLEN"],
                           "%s: C-octet string not terminated" % name) from None
    if j - p >= maxlen:
        raise _DecodeError(_LONG_STATUS.get(name, C.STATUS["ESME_RINVPARLEN"]),
                           "%s: C-octet string longer than %d octets" % (name, maxlen - 1))
    return body[p:j], j + 1


def decode_tlvs(body: bytes, p: int) -> tuple:
    """TLVs from offset p to the end of body, as ((tag, value), ...)."""
    end = len(body)
    out = []
    unpack = _HH.unpack_from
    while p < end:
        if end - p < 4:
            raise _DecodeError(C.STATUS["ESME_RINVOPTPARSTREAM"],
                               "truncated TLV header at offset %d" % (p + HEADER_LEN))
        tag, length = unpack(body, p)
        p += 4
        if p + length > end:
            raise _DecodeError(C.STATUS["ESME_RINVOPTPARSTREAM"],
                               "TLV 0x%04X: length %d exceeds the PDU" % (tag, length))
        out.append((tag, body[p:p + length]))
        p += length
    return tuple(out)


def _decode_sm(cls: type, seq: int, status: int, body: bytes) -> Any:
    """Fast path for submit_sm and deliver_sm (the hot path of the relay)."""
    index = body.index
    j = index(0, 0)
    if j >= 6:
        raise _DecodeError(C.STATUS["ESME_RINVPARLEN"],
                           "service_type: C-octet string longer than 5 octets")
    service_type = body[:j]
    p = j + 1
    src_ton = body[p]
    src_npi = body[p + 1]
    p += 2
    j = index(0, p)
    if j - p >= 21:
        raise _DecodeError(C.STATUS["ESME_RINVSRCADR"],
                           "source_addr: C-octet string longer than 20 octets")
    source_addr = body[p:j]
    p = j + 1
    dst_ton = body[p]
    dst_npi = body[p + 1]
    p += 2
    j = index(0, p)
    if j - p >= 21:
        raise _DecodeError(C.STATUS["ESME_RINVDSTADR"],
                           "destination_addr: C-octet string longer than 20 octets")
    destination_addr = body[p:j]
    p = j + 1
    esm_class = body[p]
    protocol_id = body[p + 1]
    priority_flag = body[p + 2]
    p += 3
    j = index(0, p)
    if j - p >= 17:
        raise _DecodeError(C.STATUS["ESME_RINVPARLEN"],
                           "schedule_delivery_time: longer than 16 octets")
    sched = body[p:j]
    p = j + 1
    j = index(0, p)
    if j - p >= 17:
        raise _DecodeError(C.STATUS["ESME_RINVPARLEN"],
                           "validity_period: longer than 16 octets")
    validity = body[p:j]
    p = j + 1
    registered_delivery, replace_flag, data_coding, default_id, sm_length = \
        body[p:p + 5]
    p += 5
    end = p + sm_length
    if end > len(body):
        raise _DecodeError(C.STATUS["ESME_RINVMSGLEN"],
                           "sm_length %d exceeds the PDU" % sm_length)
    short_message = body[p:end]
    tlvs = decode_tlvs(body, end) if end < len(body) else ()
    return tuple.__new__(cls, (seq, status, service_type, src_ton, src_npi, source_addr,
                               dst_ton, dst_npi, destination_addr, esm_class, protocol_id,
                               priority_flag, sched, validity, registered_delivery,
                               replace_flag, data_coding, default_id, short_message, tlvs))


def _decode_generic(cls: type, seq: int, status: int, body: bytes) -> Any:
    values: list[Any] = [seq, status]
    p = 0
    n = len(body)
    layout = cls.layout
    if n == 0 and layout and (cls.command_id in _EMPTY_ON_ERROR
                              or cls.command_id == C.DELIVER_SM_RESP):
        return cls(seq, status)
    for name, kind in layout:
        k = kind[0]
        if k == "c":
            v, p = _cstr(body, p, kind[1], name)
        elif k == "b":
            if p >= n:
                raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"], "%s: missing" % name)
            v = body[p]
            p += 1
        elif k == "I":
            if p + 4 > n:
                raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"], "%s: missing" % name)
            v = _I.unpack_from(body, p)[0]
            p += 4
        elif k == "sm":
            if p >= n:
                raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"], "sm_length: missing")
            length = body[p]
            p += 1
            if p + length > n:
                raise _DecodeError(C.STATUS["ESME_RINVMSGLEN"],
                                   "sm_length %d exceeds the PDU" % length)
            v = body[p:p + length]
            p += length
        elif k == "dests":
            if p >= n:
                raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"], "number_of_dests: missing")
            count = body[p]
            p += 1
            dests = []
            for _ in range(count):
                if p >= n:
                    raise _DecodeError(C.STATUS["ESME_RINVNUMDESTS"],
                                       "fewer destinations than number_of_dests")
                flag = body[p]
                p += 1
                if flag == 1:
                    if p + 2 > n:
                        raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"], "dest: truncated")
                    ton, npi = body[p], body[p + 1]
                    addr, p = _cstr(body, p + 2, 21, "destination_addr")
                    dests.append((1, ton, npi, addr))
                elif flag == 2:
                    name_, p = _cstr(body, p, 21, "dl_name")
                    dests.append((2, name_))
                else:
                    raise _DecodeError(C.STATUS["ESME_RINVDESTFLAG"],
                                       "dest_flag %d is neither 1 nor 2" % flag)
            v = tuple(dests)
        else:  # unsucc
            if p >= n:
                raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"], "no_unsuccess: missing")
            count = body[p]
            p += 1
            items = []
            for _ in range(count):
                if p + 2 > n:
                    raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"], "unsuccess_sme: truncated")
                ton, npi = body[p], body[p + 1]
                addr, p = _cstr(body, p + 2, 21, "destination_addr")
                if p + 4 > n:
                    raise _DecodeError(C.STATUS["ESME_RINVCMDLEN"], "error_status_code: missing")
                items.append((ton, npi, addr, _I.unpack_from(body, p)[0]))
                p += 4
            v = tuple(items)
        values.append(v)
    values.append(decode_tlvs(body, p) if p < n else ())
    return tuple.__new__(cls, values)


_FAST = {C.SUBMIT_SM: _decode_sm, C.DELIVER_SM: _decode_sm}


def decode_body(command_id: int, status: int, seq: int, body: bytes) -> Any:
    """Typed PDU from a frame; `UnknownPdu` or `BadPdu` instead of raising."""
    cls = PDU_CLASSES.get(command_id)
    if cls is None:
        return UnknownPdu(command_id, seq, status, body)
    try:
        fast = _FAST.get(command_id)
        if fast is not None:
            try:
                return fast(cls, seq, status, body)
            except (ValueError, IndexError):
                pass  # fall through to the generic decoder for a precise error
        return _decode_generic(cls, seq, status, body)
    except _DecodeError as e:
        return BadPdu(command_id, seq, status, e.error, str(e))


def decode(data: bytes) -> Any:
    """Decode exactly one whole PDU (header included)."""
    if len(data) < HEADER_LEN:
        raise FramingError("PDU shorter than its 16-octet header")
    length, command_id, status, seq = _HDR.unpack_from(data, 0)
    if length != len(data):
        raise FramingError("command_length %d but %d octets given" % (length, len(data)), seq)
    return decode_body(command_id, status, seq, bytes(data[HEADER_LEN:]))


class Framer:
    """Splits a byte stream into frames; one per connection, fed arbitrary chunks."""

    __slots__ = ("_buf", "max_pdu_bytes", "limit_name")

    def __init__(self, max_pdu_bytes: int = 65536, limit_name: str = "max_pdu_bytes") -> None:
        self._buf = b""
        self.max_pdu_bytes = max_pdu_bytes
        self.limit_name = limit_name        # named in the error: the config key of the limit

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        """Frames ``(command_id, status, seq, body)`` completed by this chunk."""
        buf = self._buf + data if self._buf else data
        n = len(buf)
        p = 0
        out = []
        unpack = _HDR.unpack_from
        maxlen = self.max_pdu_bytes
        while n - p >= HEADER_LEN:
            length, command_id, status, seq = unpack(buf, p)
            if length < HEADER_LEN or length > maxlen:
                self._buf = b""
                raise FramingError("command_length %d is %s" % (
                    length, "smaller than the 16-octet header" if length < HEADER_LEN
                    else "over %s (%d)" % (self.limit_name, maxlen)), seq, out)
            if n - p < length:
                break
            out.append((command_id, status, seq, buf[p + HEADER_LEN:p + length]))
            p += length
        self._buf = buf[p:] if p < n else b""
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


class Decoder:
    """Convenience: frames and typed PDUs in one step (tests, simulator, tools)."""

    def __init__(self, max_pdu_bytes: int = 65536) -> None:
        self.framer = Framer(max_pdu_bytes)

    def feed(self, data: bytes) -> list[Any]:
        return [decode_body(cid, st, seq, body)
                for cid, st, seq, body in self.framer.feed(data)]


# --- encoding ---------------------------------------------------------------------------------

def encode_tlvs(tlvs: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(_HH.pack(t, len(v)) + v for t, v in tlvs)


def _caddr(v: bytes, maxlen: int, name: str) -> bytes:
    if len(v) >= maxlen:
        raise ValueError("%s: at most %d octets" % (name, maxlen - 1))
    if 0 in v:
        raise ValueError("%s: contains a NUL octet" % name)
    return v + b"\0"


def _encode_body(pdu: Any) -> bytes:
    cid = pdu.command_id
    if pdu.status and cid in _EMPTY_ON_ERROR and not pdu.tlvs and not any(
            pdu[2:-1]):
        return b""
    out = []
    for (name, kind), v in zip(pdu.layout, pdu[2:-1]):
        k = kind[0]
        if k == "c":
            if len(v) >= kind[1]:
                raise ValueError("%s: at most %d octets" % (name, kind[1] - 1))
            if 0 in v:
                raise ValueError("%s: contains a NUL octet" % name)
            out.append(v + b"\0")
        elif k == "b":
            out.append(bytes((v,)))
        elif k == "I":
            out.append(_I.pack(v))
        elif k == "sm":
            if len(v) > 255:
                raise ValueError("short_message: at most 255 octets (use message_payload)")
            out.append(bytes((len(v),)) + v)
        elif k == "dests":
            parts = [bytes((len(v),))]
            for d in v:
                if d[0] == 1:
                    parts.append(bytes((1, d[1], d[2])) + _caddr(d[3], 21, "destination_addr"))
                elif d[0] == 2:
                    parts.append(b"\x02" + _caddr(d[1], 21, "dl_name"))
                else:
                    raise ValueError("dest_flag %r is neither 1 nor 2" % (d[0],))
            out.append(b"".join(parts))
        else:
            parts = [bytes((len(v),))]
            for ton, npi, addr, err in v:
                parts.append(bytes((ton, npi)) + _caddr(addr, 21, "destination_addr")
                             + _I.pack(err))
            out.append(b"".join(parts))
    if pdu.tlvs:
        out.append(encode_tlvs(pdu.tlvs))
    return b"".join(out)


def encode(pdu: Any) -> bytes:
    """Whole PDU (header included)."""
    body = _encode_body(pdu)
    return _HDR.pack(HEADER_LEN + len(body), pdu.command_id, pdu.status, pdu.seq) + body


def frame(command_id: int, status: int, seq: int, body: bytes = b"") -> bytes:
    """Header + an already-encoded body (used to relay a client's body unchanged)."""
    return _HDR.pack(HEADER_LEN + len(body), command_id, status, seq) + body


def message_id_resp(command_id: int, seq: int, status: int, message_id: bytes) -> bytes:
    """Fast encoder for submit_sm_resp / data_sm_resp / deliver_sm_resp."""
    if status and command_id != C.DELIVER_SM_RESP:
        return _HDR.pack(HEADER_LEN, command_id, status, seq)
    body = message_id + b"\0"
    return _HDR.pack(HEADER_LEN + len(body), command_id, status, seq) + body


def generic_nack(seq: int, status: int) -> bytes:
    return _HDR.pack(HEADER_LEN, C.GENERIC_NACK, status, seq)


class Sequence:
    """Sequence numbers 1..0x7FFFFFFF, wrapping back to 1 (one per connection)."""

    __slots__ = ("_n",)

    def __init__(self, start: int = 0) -> None:
        self._n = start

    def next(self) -> int:
        n = self._n + 1
        if n > C.MAX_SEQUENCE:
            n = 1
        self._n = n
        return n
