"""Parameters of the legacy HTTP APIs: parsing and validation, pure functions.

`parse_kannel(args)` and `parse_jasmin(args)` take the request arguments as twisted.web
gives them (``{b"name": [b"value", ...]}``, percent-decoded bytes) and return a `Submission`
or raise `Invalid(status, text)` with the API's own error text (a dlr-url whose host is a
non-public address, unless one of the `callback_allow` prefixes names it, is refused too) (the resource wraps a
Jasmin text as ``Error "<text>"``). `build_payloads` then encodes and splits the text for
one account (its max_parts). Nothing here does I/O, so every rule is tested without sockets.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from proxyd.text.codec import DC_UCS2, decode_text, text_kind
from proxyd.text.gsm import encode_gsm, is_gsm
from proxyd.text.split import TooManyParts, split_text

from .encoding import split_payload, udh_fits, with_class
from .targets import BadUrl, parse_url, private_literal

Args = dict  # {bytes: [bytes, ...]}

KANNEL = "kannel"
JASMIN = "jasmin"


class Invalid(Exception):
    """A request refused before it reaches the relay: HTTP status and the API's text."""

    def __init__(self, status: int, text: str, reason: str = "parameters") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DlrSettings:
    """What a client asked for in delivery reports; kept for the receipts module (issue 6).

    api: "kannel" or "jasmin". url: the callback ("" = none). mask: Kannel dlr-mask (bits
    1 delivered, 2 undelivered, 4 buffered, 8 SMSC ack, 16 SMSC nack, 32 intermediate).
    level: Jasmin dlr-level (1 SMSC, 2 terminal, 3 both; 0 for Kannel). method: "GET" or
    "POST" (Kannel calls back with GET). registered_delivery: what is asked of the operator.
    """
    api: str
    url: str
    mask: int
    level: int
    method: str
    registered_delivery: int


@dataclass(frozen=True, slots=True)
class Submission:
    """One validated send request, before encoding for an account."""
    api: str
    username: str
    password: str
    source: str                    # "" = the account's first service code
    recipients: tuple[str, ...]
    text: str | None               # decoded text (None: bytes given as they are)
    data: bytes | None             # raw payload when the client gave bytes (binary, hex, raw)
    data_coding: int | None        # None = choose GSM 03.38 or UCS-2 from the text
    udh: bytes = b""
    mclass: int | None = None
    priority: int = 0
    validity: bytes = b""          # SMPP relative time, or b""
    deferred: bytes = b""
    dlr: DlrSettings | None = None


# --- helpers ---------------------------------------------------------------------------------

_INT = re.compile(rb"^-?[0-9]{1,9}$")


def first(args: Args, *names: bytes) -> bytes | None:
    for n in names:
        v = args.get(n)
        if v:
            return v[0]
    return None


def _int(value: bytes | None, lo: int, hi: int, error: str) -> int | None:
    if value is None:
        return None
    v = value.strip()
    if not _INT.match(v):
        raise Invalid(400, error)
    n = int(v)
    if not lo <= n <= hi:
        raise Invalid(400, error)
    return n


def relative_time(minutes: int) -> bytes:
    """SMPP relative time (YYMMDDhhmmss000R) for a number of minutes; months of 30 days,
    years of 365. Raises ValueError beyond 99 years."""
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    years, days = divmod(days, 365)
    months, days = divmod(days, 30)
    if years > 99:
        raise ValueError("relative time beyond 99 years")
    return b"%02d%02d%02d%02d%02d00000R" % (years, months, days, hours, mins)


def _minutes(value: bytes | None, error: str, allow_undefined: bool) -> bytes:
    n = _int(value, -1 if allow_undefined else 0, 99 * 365 * 1440, error)
    if n is None or n <= 0:
        return b""
    return relative_time(n)


def _url(value: bytes | None) -> str | None:
    """A dlr-url as given (None: none given), or "" when it cannot be called: not ASCII, a
    scheme other than http/https, no host, a bad port (proxyd.http.targets.parse_url; the
    Kannel placeholders such as %d are in the path or query, where they stay as they are).
    A host written as an address is checked by `_private`; a name only once resolved, when
    the callback is made."""
    if value is None or value == b"":
        return None
    try:
        url = value.decode("ascii")
        parse_url(url)
    except (UnicodeDecodeError, BadUrl):
        return ""
    return url


def _private(url: str, allow: tuple[str, ...]) -> str:
    """The host of a well-formed dlr-url when it is a non-public address that no
    `callback_allow` prefix names (refused at submit), else ""."""
    target = parse_url(url)
    return target.host if private_literal(target, allow) else ""


def _ascii(value: bytes | None) -> str:
    return "" if value is None else value.decode("latin-1").strip()


def kannel_registered_delivery(mask: int) -> int:
    """SMPP registered_delivery for a Kannel dlr-mask: final receipts when 1 or 2 are set
    (2 alone: failures only), intermediate notifications when 4 or 32 are set. 8 and 16
    (SMSC accepted/refused) are known from the submit response and ask nothing upstream."""
    final = mask & 0x03
    rd = 0
    if final == 0x02:
        rd = 0x02
    elif final:
        rd = 0x01
    if mask & 0x24:
        rd |= 0x10
    return rd


# --- Kannel ----------------------------------------------------------------------------------

K_AUTH_FAILED = "Authorization failed for sendsms"
K_MISSING_TO = "Missing receiver number, rejected"
K_EMPTY_TO = "Empty receiver number not allowed, rejected"
K_DLR_MASK = "DLR-Mask field misformed, rejected"
K_DLR_URL = "DLR-URL field misformed, rejected"
K_MCLASS = "MClass field misformed, rejected"
K_CODING = "Coding field misformed, rejected"
K_VALIDITY = "Validity field misformed, rejected"
K_DEFERRED = "Deferred field misformed, rejected"
K_PRIORITY = "Priority field misformed, rejected"
K_UDH = "UDH field misformed, rejected"
K_UDH_LONG = "UDH field is too long, rejected"
K_CHARSET = "Charset or body misformed, rejected"
K_NO_TEXT = "Missing text, rejected"
K_NO_SENDER = "Sender missing and no global set, rejected"


def k_too_many_receivers(count: int, limit: int) -> str:
    return "Too many receivers: %d, at most %d allowed, rejected" % (count, limit)


def check_receivers(args: Args, limit: int) -> None:
    """Kannel `to`: at most `limit` receivers ([http] max_receivers). Checked first, before
    authentication and any per-receiver work; raises Invalid(400)."""
    to = first(args, b"to")
    if to is None:
        return
    n = len(to.split())
    if n > limit:
        raise Invalid(400, k_too_many_receivers(n, limit), "receivers")


def kannel_credentials(args: Args) -> tuple[str, str] | None:
    user = first(args, b"username", b"user")
    pw = first(args, b"password", b"pass")
    if user is None or pw is None:
        return None
    return user.decode("utf-8", "replace"), pw.decode("utf-8", "replace")


def parse_kannel(args: Args, callback_allow: tuple[str, ...] = ()) -> Submission:
    """/cgi-bin/sendsms parameters (after authentication, as smsbox checks them);
    `callback_allow`: the `[http] callback_allow` prefixes (for the dlr-url)."""
    creds = kannel_credentials(args) or ("", "")
    to = first(args, b"to")
    if to is None:
        raise Invalid(400, K_MISSING_TO)
    recipients = tuple(t.decode("latin-1") for t in to.split())
    if not recipients:
        raise Invalid(400, K_EMPTY_TO)
    udh = first(args, b"udh") or b""
    if udh:
        if len(udh) != udh[0] + 1:
            raise Invalid(400, K_UDH)
        if len(udh) > 140:
            raise Invalid(400, K_UDH_LONG)
    dlr_url = _url(first(args, b"dlr-url", b"dlrurl"))
    if dlr_url == "" or (dlr_url and _private(dlr_url, callback_allow)):
        raise Invalid(400, K_DLR_URL)
    mask = _int(first(args, b"dlr-mask", b"dlrmask"), -1, 63, K_DLR_MASK)
    mclass = _int(first(args, b"mclass"), -1, 3, K_MCLASS)
    coding = _int(first(args, b"coding"), -1, 2, K_CODING)
    validity = _minutes(first(args, b"validity"), K_VALIDITY, True)
    deferred = _minutes(first(args, b"deferred"), K_DEFERRED, True)
    priority = _int(first(args, b"priority"), 0, 3, K_PRIORITY)
    if mclass == -1:
        mclass = None
    if coding == -1 or coding is None:
        coding = 1 if udh else None        # Kannel: a UDH without a coding means 8-bit
    raw = first(args, b"text")
    if raw is None:
        raw = b""
    if not raw and not udh:
        raise Invalid(400, K_NO_TEXT)
    text: str | None
    data: bytes | None = None
    dc: int | None
    if coding == 1:
        text, data, dc = None, raw, 0x04
    else:
        charset = (first(args, b"charset") or b"UTF-8").decode("latin-1")
        try:
            codecs.lookup(charset)
            text = raw.decode(charset)
            # some codecs (utf-7, unicode_escape, ...) decode to lone surrogates, which no
            # alphabet can carry: refused here, never met later by the encoder
            text.encode("utf-8")
        except (LookupError, UnicodeError, ValueError, TypeError):
            raise Invalid(400, K_CHARSET)
        if coding == 0:
            if not is_gsm(text):
                raise Invalid(400, K_CHARSET)
            dc = 0x00
        elif coding == 2:
            dc = DC_UCS2
        else:
            dc = None
    rd = 0
    dlr = None
    if mask is not None and mask > 0:
        rd = kannel_registered_delivery(mask)
        dlr = DlrSettings(KANNEL, dlr_url or "", mask, 0, "GET", rd)
    return Submission(KANNEL, creds[0], creds[1], _ascii(first(args, b"from")), recipients,
                      text, data, dc, udh, mclass, priority or 0, validity, deferred, dlr)


# --- Jasmin ----------------------------------------------------------------------------------

_J_PATTERNS = {
    b"to": re.compile(rb"^\+?[0-9]+$"),
    b"coding": re.compile(rb"^(0|1|2|3|4|5|6|7|8|9|10|13|14)$"),
    b"username": re.compile(rb"^.{1,16}$", re.S),
    b"password": re.compile(rb"^.{1,16}$", re.S),
    b"priority": re.compile(rb"^[0-3]$"),
    b"validity-period": re.compile(rb"^[0-9]{1,9}$"),
    b"dlr": re.compile(rb"^(yes|no)$"),
    b"dlr-url": re.compile(rb"^(http|https)://.+$", re.I | re.S),
    b"dlr-level": re.compile(rb"^[1-3]$"),
    b"dlr-method": re.compile(rb"^(get|post)$", re.I),
}
_J_MANDATORY = (b"username", b"password", b"to")
_J_TEXT_CODINGS = {0: "gsm", 1: "ascii", 3: "latin-1", 8: "utf-16-be"}


def _shown(value: bytes) -> str:
    return value[:64].decode("utf-8", "replace")


def _jasmin_common(args: Args, mandatory: tuple[bytes, ...]) -> dict[bytes, bytes]:
    got = {k: v[0] for k, v in args.items() if v}
    if not got:
        raise Invalid(400, "Mandatory arguments not found, please refer to the HTTPAPI "
                           "specifications.")
    for name in mandatory:
        if name not in got:
            raise Invalid(400, "Mandatory argument [%s] is not found." % name.decode())
    for name, pattern in _J_PATTERNS.items():
        v = got.get(name)
        if v is not None and not pattern.match(v):
            shown = "" if name == b"password" else _shown(v)
            raise Invalid(400, "Argument [%s] has an invalid value: [%s]."
                          % (name.decode(), shown))
    return got


def _jasmin_content(got: dict[bytes, bytes], required: bool
                    ) -> tuple[str | None, bytes | None, int | None]:
    content = got.get(b"content")
    hexed = got.get(b"hex-content")
    coding = int(got[b"coding"]) if b"coding" in got else None
    if content is not None and hexed is not None:
        raise Invalid(400, "content and hex-content cannot be used both in same request.")
    if content is None and hexed is None:
        if required:
            raise Invalid(400, "content or hex-content not present.")
        content = b""
    if hexed is not None:
        try:
            data = bytes.fromhex(hexed.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise Invalid(400, "Invalid hex-content data.")
        dc = coding if coding is not None else 0
        return decode_text(data, dc), data, dc
    assert content is not None
    if coding is None:
        try:
            return content.decode("utf-8"), None, None
        except UnicodeDecodeError:
            raise Invalid(400, "Argument [content] is not valid UTF-8.")
    enc = _J_TEXT_CODINGS.get(coding)
    if enc is None:                        # binary and other codings: the bytes as given
        return decode_text(content, coding), content, coding
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(400, "Argument [content] is not valid UTF-8.")
    if coding == 0:
        if not is_gsm(text):
            raise Invalid(400, "Argument [content] cannot be encoded in coding 0 (GSM 03.38).")
        return text, encode_gsm(text), 0
    try:
        return text, text.encode(enc), coding
    except UnicodeEncodeError:
        raise Invalid(400, "Argument [content] cannot be encoded in coding %d." % coding)


def parse_jasmin(args: Args, callback_allow: tuple[str, ...] = ()) -> Submission:
    """/send parameters, validated before authentication as Jasmin does;
    `callback_allow`: the `[http] callback_allow` prefixes (for the dlr-url)."""
    got = _jasmin_common(args, _J_MANDATORY)
    text, data, dc = _jasmin_content(got, required=True)
    if (text == "" and data is None) or data == b"":
        raise Invalid(400, "content or hex-content not present.")
    dlr_flag = got.get(b"dlr", b"no")
    if b"dlr-url" in got or b"dlr-level" in got:
        dlr_flag = b"yes"
    dlr = None
    if dlr_flag == b"yes":
        level = int(got.get(b"dlr-level", b"1"))
        method = got.get(b"dlr-method", b"POST").decode("ascii").upper()
        url = got.get(b"dlr-url", b"").decode("ascii", "replace")
        if url and _url(got[b"dlr-url"]) == "":
            raise Invalid(400, "Argument [dlr-url] has an invalid value: [%s]: not a callable "
                          "http(s) URL." % _shown(got[b"dlr-url"]))
        host = _private(url, callback_allow) if url else ""
        if host:
            raise Invalid(400, "Argument [dlr-url] has an invalid value: [%s]: %s is not a "
                          "public address." % (_shown(got[b"dlr-url"]), host))
        rd = 0x01 if level >= 2 else 0x00   # level 1 (SMSC) is known from the submit response
        dlr = DlrSettings(JASMIN, url, 0, level, method, rd)
    validity = b""
    if b"validity-period" in got:
        try:
            validity = _minutes(got[b"validity-period"], "", False)
        except (Invalid, ValueError):
            raise Invalid(400, "Argument [validity-period] has an invalid value: [%s]."
                          % _shown(got[b"validity-period"]))
    return Submission(JASMIN, got[b"username"].decode("utf-8", "replace"),
                      got[b"password"].decode("utf-8", "replace"),
                      _ascii(got.get(b"from")), (got[b"to"].decode("ascii"),), text, data, dc,
                      b"", None, int(got.get(b"priority", b"0")), validity, b"", dlr)


def parse_jasmin_query(args: Args, mandatory: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """/balance and /rate: the common checks (mandatory arguments, value patterns)."""
    return _jasmin_common(args, mandatory)


def jasmin_rate_content(got: dict[bytes, bytes]) -> tuple[str | None, bytes | None, int | None]:
    return _jasmin_content(got, required=False)


# --- encoding for an account -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Encoded:
    data_coding: int
    esm_class: int
    payloads: tuple[bytes, ...]
    text: str | None               # the whole text the content filter reads (None: binary)


def build_payloads(sub: Submission, max_parts: int, ref: int) -> Encoded:
    """Encode and split a submission. Raises TooManyParts (never truncates) or Invalid."""
    return encode(sub.text, sub.data, sub.data_coding, sub.udh, sub.mclass, max_parts, ref)


def encode(text: str | None, data: bytes | None, dc: int | None, udh: bytes,
           mclass: int | None, max_parts: int, ref: int) -> Encoded:
    if data is None:
        assert text is not None
        if dc is None:
            if udh:
                from proxyd.text.codec import choose_encoding
                dc, data = choose_encoding(text)
            else:
                dc, parts = split_text(text, max_parts, ref & 0xFF)
                return Encoded(with_class(dc, mclass), 0x40 if len(parts) > 1 else 0,
                               tuple(parts), text)
        elif text_kind(dc) == "gsm":
            data = encode_gsm(text)
        elif dc == DC_UCS2:
            data = text.encode("utf-16-be")
        else:
            data = text.encode("latin-1")
    if text is None and text_kind(dc) != "binary":
        text = decode_text(data, dc)
    dc_out = with_class(dc, mclass)
    if udh:
        if not udh_fits(dc, udh, data):
            raise Invalid(400, "Text too long for one message with the given UDH, rejected")
        return Encoded(dc_out, 0x40, (udh + data,), text)
    parts = split_payload(dc, data, max_parts, ref)
    return Encoded(dc_out, 0x40 if len(parts) > 1 else 0, tuple(parts), text)


__all__ = ["Invalid", "DlrSettings", "Submission", "Encoded", "parse_kannel", "parse_jasmin",
           "kannel_credentials", "check_receivers", "build_payloads", "encode",
           "relative_time", "first", "kannel_registered_delivery", "TooManyParts", "KANNEL", "JASMIN"]
