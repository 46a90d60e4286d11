"""Fixed-layout binary PDUs (SGIP, SMGP): a small table-driven codec, sans-IO.

The Chinese operators' protocols lay a body out as fixed-size fields: unsigned integers in
network order, fixed-length octet strings (left-aligned, NUL-padded on the right), a few
length-prefixed contents and counted lists, and (SMGP) TLVs at the end. A `Layout` describes
one body as ``((name, kind), ...)`` and is compiled once into runs of `struct` formats, so a
decode is a handful of ``unpack_from`` calls, not one per field.

Field kinds:

    ("B",) ("H",) ("I",)   unsigned 8/16/32-bit integer
    ("s", n)               text: n octets, NUL-padded; decoded with the padding stripped
    ("x", n)               raw: exactly n octets, kept as they are (ids, digests)
    ("v8",) ("v32",)       content preceded by its length in 1 or 4 octets
    ("l8", n)              a count octet, then that many n-octet texts (a tuple of bytes)

Decoding never raises on bad input: `decode_body` returns the typed PDU, an `UnknownPdu`
for a command the layout table does not hold, or a `BadPdu` naming the field and carrying
the protocol's own error code (`error`), so the caller can answer with it and log it.
No state is shared between PDUs; a `Framer` is per connection.
"""
from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any, Iterable

_HH = struct.Struct(">HH")
_FIXED = {"B": ("B", 1), "H": ("H", 2), "I": ("I", 4)}


class FramingError(Exception):
    """The length in a header is impossible: the stream cannot be trusted any more."""

    def __init__(self, message: str, frames: list | None = None) -> None:
        super().__init__(message)
        self.frames = frames or []      # complete frames that preceded the bad header


class BadPdu:
    """A frame whose body does not decode: `error` is the protocol's error code to answer
    with, `message` names the field."""

    __slots__ = ("command_id", "seq", "error", "message")

    def __init__(self, command_id: int, seq: Any, error: int, message: str) -> None:
        self.command_id = command_id
        self.seq = seq
        self.error = error
        self.message = message

    def __repr__(self) -> str:
        return "BadPdu(0x%08X seq=%r error=%d: %s)" % (self.command_id, self.seq,
                                                       self.error, self.message)


class UnknownPdu:
    """A frame with a command id this codec does not define."""

    __slots__ = ("command_id", "seq", "body")

    def __init__(self, command_id: int, seq: Any, body: bytes) -> None:
        self.command_id = command_id
        self.seq = seq
        self.body = body

    def __repr__(self) -> str:
        return "UnknownPdu(0x%08X seq=%r)" % (self.command_id, self.seq)


class DecodeError(Exception):
    def __init__(self, error: int, message: str) -> None:
        super().__init__(message)
        self.error = error


class Errors:
    """The protocol's error codes for the faults a decoder finds."""

    __slots__ = ("structure", "length", "values")

    def __init__(self, structure: int, length: int, values: dict[str, int] | None = None):
        self.structure = structure      # truncated or trailing octets, bad TLV, bad count
        self.length = length            # a content longer than the PDU or than allowed
        self.values = values or {}      # field name -> code when its value is not allowed


class Layout:
    """One body: fields compiled into struct runs, optional TLVs, value checks."""

    def __init__(self, fields: tuple, tlvs: bool = False,
                 allowed: dict[str, Any] | None = None,
                 limits: dict[str, tuple[int, int]] | None = None,
                 check: Any = None) -> None:
        self.fields = fields
        self.names = tuple(n for n, _ in fields)
        self.tlvs = tlvs
        self.allowed = allowed or {}    # field -> container of allowed values
        self.limits = limits or {}      # v8/v32/l8 field -> (min, max) length or count
        self.check = check              # pdu -> (error, message) | None: rules across fields
        runs: list[tuple] = []
        fmt: list[str] = []
        members: list[tuple[str, tuple]] = []

        def flush() -> None:
            if members:
                strip = tuple(i for i, (_, k) in enumerate(members) if k[0] == "s")
                runs.append(("run", struct.Struct(">" + "".join(fmt)), tuple(members), strip))
                fmt.clear()
                members.clear()

        for name, kind in fields:
            k = kind[0]
            if k in _FIXED:
                fmt.append(_FIXED[k][0])
            elif k in ("s", "x"):
                fmt.append("%ds" % kind[1])
            else:
                flush()
                runs.append((k, kind, name))
                continue
            members.append((name, kind))
        flush()
        self.runs = tuple(runs)
        # value checks by position in the decoded values (after seq)
        self.checks = tuple((1 + self.names.index(n), n, ok) for n, ok in self.allowed.items())

    def defaults(self) -> list:
        out: list[Any] = []
        for _, kind in self.fields:
            k = kind[0]
            out.append(0 if k in _FIXED else () if k == "l8" else
                       b"\0" * kind[1] if k == "x" else b"")
        return out


def _missing(run: Any, avail: int) -> str:
    """The first field of a struct run that does not fit in `avail` octets."""
    used = 0
    for name, kind in run[2]:
        size = _FIXED[kind[0]][1] if kind[0] in _FIXED else kind[1]
        if used + size > avail:
            return name
        used += size
    return run[2][-1][0]


class _PduMixin:
    __slots__ = ()
    command_id: int
    layout: Layout
    codec: "Codec"

    def tlv(self, tag: int, default: bytes | None = None) -> bytes | None:
        for t, v in getattr(self, "tlvs", ()):
            if t == tag:
                return v
        return default

    def encode(self) -> bytes:
        return self.codec.encode(self)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((self.command_id, tuple(self)))


class Codec:
    """One protocol: its header, its PDU classes (generated from the layouts), its errors.

    `header` packs (length, command_id, *seq); `seq_size` is 1 (an integer sequence) or 3
    (SGIP's node/time/counter triple, given and returned as a tuple)."""

    def __init__(self, name: str, header: str, seq_size: int, errors: Errors,
                 layouts: dict[int, tuple[str, Layout]],
                 tlv_sizes: dict[int, int] | None = None, max_pdu_bytes: int = 4096) -> None:
        self.name = name
        self.header = struct.Struct(header)
        self.header_len = self.header.size
        self.seq_size = seq_size
        self.errors = errors
        self.tlv_sizes = tlv_sizes or {}        # known tag -> its fixed value length
        self.max_pdu_bytes = max_pdu_bytes
        self.classes: dict[int, type] = {}
        self.by_name: dict[str, type] = {}
        for cid, (cname, layout) in layouts.items():
            fields = ["seq"] + list(layout.names) + (["tlvs"] if layout.tlvs else [])
            dflt = [0 if seq_size == 1 else (0, 0, 0)] + layout.defaults() + (
                [()] if layout.tlvs else [])
            base = namedtuple(cname + "Base", fields, defaults=dflt)  # type: ignore[misc]
            cls = type(cname, (_PduMixin, base), {"__slots__": (), "command_id": cid,
                                                  "layout": layout, "codec": self})
            self.classes[cid] = cls
            self.by_name[cname] = cls

    # --- decoding ---------------------------------------------------------------------------
    def decode_tlvs(self, body: bytes, p: int) -> tuple:
        end = len(body)
        out = []
        sizes = self.tlv_sizes
        err = self.errors.structure
        while p < end:
            if end - p < 4:
                raise DecodeError(err, "truncated TLV header at body offset %d" % p)
            tag, length = _HH.unpack_from(body, p)
            p += 4
            if p + length > end:
                raise DecodeError(err, "TLV 0x%04X: length %d exceeds the PDU" % (tag, length))
            want = sizes.get(tag)
            if want is not None and want != length:
                raise DecodeError(err, "TLV 0x%04X: length %d, the specification says %d"
                                  % (tag, length, want))
            out.append((tag, body[p:p + length]))
            p += length
        return tuple(out)

    def _decode(self, cls: type, seq: Any, body: bytes) -> Any:
        layout: Layout = cls.layout
        errors = self.errors
        values: list[Any] = [seq]
        p = 0
        n = len(body)
        for run in layout.runs:
            k = run[0]
            if k == "run":
                st = run[1]
                if p + st.size > n:
                    raise DecodeError(errors.structure, "%s: truncated (the body ends)"
                                      % _missing(run, n - p))
                vals = st.unpack_from(body, p)
                p += st.size
                if run[3]:
                    vals = list(vals)
                    for i in run[3]:
                        vals[i] = vals[i].rstrip(b"\0")
                values.extend(vals)
            elif k == "v8" or k == "v32":
                name = run[2]
                w = 1 if k == "v8" else 4
                if p + w > n:
                    raise DecodeError(errors.structure, "%s: length missing" % name)
                length = body[p] if w == 1 else struct.unpack_from(">I", body, p)[0]
                p += w
                lim = layout.limits.get(name)
                if p + length > n or (lim is not None and not lim[0] <= length <= lim[1]):
                    raise DecodeError(errors.values.get(name, errors.length),
                                      "%s: length %d %s" % (name, length, "exceeds the PDU"
                                                            if p + length > n else
                                                            "outside %d..%d" % lim))
                values.append(body[p:p + length])
                p += length
            else:  # l8
                name, size = run[2], run[1][1]
                if p >= n:
                    raise DecodeError(errors.structure, "%s: count missing" % name)
                count = body[p]
                p += 1
                lim = layout.limits.get(name)
                if lim is not None and not lim[0] <= count <= lim[1]:
                    raise DecodeError(errors.values.get(name, errors.structure),
                                      "%s: count %d outside %d..%d" % ((name, count) + lim))
                if p + count * size > n:
                    raise DecodeError(errors.structure, "%s: %d entries exceed the PDU"
                                      % (name, count))
                values.append(tuple(body[q:q + size].rstrip(b"\0")
                                    for q in range(p, p + count * size, size)))
                p += count * size
        if layout.tlvs:
            values.append(self.decode_tlvs(body, p) if p < n else ())
        elif p < n:
            raise DecodeError(errors.structure, "%d octets after the last field" % (n - p))
        for i, name, ok in layout.checks:
            v = values[i]
            if v not in ok:
                raise DecodeError(errors.values.get(name, errors.structure),
                                  "%s: value %r not allowed" % (name, v))
        pdu = tuple.__new__(cls, values)
        if layout.check is not None:
            bad = layout.check(pdu)
            if bad is not None:
                raise DecodeError(*bad)
        return pdu

    def decode_body(self, command_id: int, seq: Any, body: bytes) -> Any:
        """The typed PDU of a frame; `UnknownPdu` or `BadPdu` instead of raising."""
        cls = self.classes.get(command_id)
        if cls is None:
            return UnknownPdu(command_id, seq, body)
        try:
            return self._decode(cls, seq, body)
        except DecodeError as e:
            return BadPdu(command_id, seq, e.error, str(e))

    def decode(self, data: bytes) -> Any:
        """Exactly one whole PDU, header included."""
        hl = self.header_len
        if len(data) < hl:
            raise FramingError("PDU shorter than its %d-octet header" % hl)
        h = self.header.unpack_from(data, 0)
        if h[0] != len(data):
            raise FramingError("length %d but %d octets given" % (h[0], len(data)))
        seq = h[2] if self.seq_size == 1 else tuple(h[2:])
        return self.decode_body(h[1], seq, bytes(data[hl:]))

    # --- encoding ---------------------------------------------------------------------------
    def encode_body(self, pdu: Any) -> bytes:
        layout: Layout = pdu.layout
        out = []
        i = 1
        for run in layout.runs:
            k = run[0]
            if k == "run":
                members = run[2]
                vals = list(pdu[i:i + len(members)])
                for j, (name, kind) in enumerate(members):
                    if kind[0] in ("s", "x"):
                        v = vals[j]
                        if len(v) > kind[1] or (kind[0] == "x" and len(v) != kind[1]):
                            raise ValueError("%s: %s %d octets, got %d" % (
                                name, "at most" if kind[0] == "s" else "exactly",
                                kind[1], len(v)))
                try:
                    out.append(run[1].pack(*vals))
                except struct.error as e:
                    raise ValueError("%s: %s" % (",".join(n for n, _ in members), e)) from None
                i += len(members)
            elif k == "v8" or k == "v32":
                v = pdu[i]
                if k == "v8":
                    if len(v) > 255:
                        raise ValueError("%s: at most 255 octets" % run[2])
                    out.append(bytes((len(v),)) + v)
                else:
                    out.append(struct.pack(">I", len(v)) + v)
                i += 1
            else:
                v = pdu[i]
                size = run[1][1]
                if len(v) > 255:
                    raise ValueError("%s: at most 255 entries" % run[2])
                parts = [bytes((len(v),))]
                for item in v:
                    if len(item) > size:
                        raise ValueError("%s: an entry over %d octets" % (run[2], size))
                    parts.append(item.ljust(size, b"\0"))
                out.append(b"".join(parts))
                i += 1
        if layout.tlvs and pdu[-1]:
            out.append(b"".join(_HH.pack(t, len(v)) + v for t, v in pdu[-1]))
        return b"".join(out)

    def frame(self, command_id: int, seq: Any, body: bytes = b"") -> bytes:
        """Header + an encoded body."""
        length = self.header_len + len(body)
        if self.seq_size == 1:
            return self.header.pack(length, command_id, seq) + body
        return self.header.pack(length, command_id, *seq) + body

    def encode(self, pdu: Any) -> bytes:
        return self.frame(pdu.command_id, pdu.seq, self.encode_body(pdu))

    def framer(self, max_pdu_bytes: int | None = None) -> "Framer":
        return Framer(self, max_pdu_bytes or self.max_pdu_bytes)


class Framer:
    """Splits a byte stream into frames ``(command_id, seq, body)``; one per connection."""

    __slots__ = ("_buf", "_header", "_hl", "_seq1", "max_pdu_bytes")

    def __init__(self, codec: Codec, max_pdu_bytes: int) -> None:
        self._buf = b""
        self._header = codec.header
        self._hl = codec.header_len
        self._seq1 = codec.seq_size == 1
        self.max_pdu_bytes = max_pdu_bytes

    def feed(self, data: bytes) -> list[tuple[int, Any, bytes]]:
        buf = self._buf + data if self._buf else data
        n = len(buf)
        p = 0
        hl = self._hl
        out: list[tuple[int, Any, bytes]] = []
        unpack = self._header.unpack_from
        while n - p >= hl:
            h = unpack(buf, p)
            length = h[0]
            if length < hl or length > self.max_pdu_bytes:
                self._buf = b""
                raise FramingError("length %d is %s" % (
                    length, "smaller than the %d-octet header" % hl if length < hl
                    else "over the limit of %d" % self.max_pdu_bytes), out)
            if n - p < length:
                break
            out.append((h[1], h[2] if self._seq1 else h[2:], buf[p + hl:p + length]))
            p += length
        self._buf = buf[p:] if p < n else b""
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


def encode_tlvs(tlvs: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(_HH.pack(t, len(v)) + v for t, v in tlvs)

