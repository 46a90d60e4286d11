"""What receipts say: the Appendix B text of an operator's receipt read back, proxyd's own
receipt written, and the facts an HTTP callback (dlr-url, mo_url) is given.

The ``err:`` field of proxyd's own receipts (`own_err`):

    400  content refused (PROXYD_RCONTENT)
    401  insufficient balance (PROXYD_RNOBALANCE)
    408  incomplete: the other parts of a long message never came (reassembly timeout)
    409  expired (stat EXPIRED): ``[delivery] expire_after_s`` > 0 and the operator's
         receipt of a part relayed with registered_delivery did not come within that time
    nnn  otherwise the SMPP status of the refusal in decimal, modulo 1000, e.g. 011 bad or
         opted-out destination (ESME_RINVDSTADR), 020 no upstream capacity (ESME_RMSGQFUL),
         008 system error / outcome unknown (ESME_RSYSERR), 088 throttled
"""
from __future__ import annotations

import re
import time
from typing import Any

from ..smpp import constants as C
from ..smpp import pdu as P
from ..store.messages import STATE, STATE_NAMES
from ..text.reassembly import join_parts
from .records import parse_hexparts

_S = C.STATUS
_FIELDS = re.compile(rb"(sub|dlvrd|submit date|done date|stat|err):(\S*)", re.I)
_TEXT = re.compile(rb"text:(.*)$", re.I | re.S)
_STAT = re.compile(rb"stat:(\S*)", re.I)
_ERR = re.compile(rb"err:(\S*)", re.I)
RECEIPT_ID = re.compile(rb"id:(\S+)")


def normalise_upstream_id(mid: bytes | str) -> list[str]:
    """The keys under which an operator id may be looked up: as given (lower case, no
    leading zeros), and its decimal<->hex twin, so receipts match whatever form they use."""
    s = mid.decode("latin-1") if isinstance(mid, bytes) else mid
    s = s.strip().lower()
    keys = [s.lstrip("0") or "0"]
    if s.isdigit():
        keys.append(format(int(s), "x"))
    else:
        try:
            keys.append(str(int(s, 16)).lstrip("0") or "0")
        except ValueError:
            pass
    return keys


def rewrite_receipt(pdu: Any, mid: bytes) -> Any:
    """The operator's receipt with proxyd's id in the receipted_message_id TLV and the
    Appendix B text; everything else kept."""
    tlvs = tuple((t, mid + b"\0") if t == C.TAG_RECEIPTED_MESSAGE_ID else (t, v)
                 for t, v in pdu.tlvs)
    changes: dict[str, Any] = {"tlvs": tlvs}
    if pdu.command_id == C.DELIVER_SM:
        changes["short_message"] = RECEIPT_ID.sub(b"id:" + mid, pdu.short_message, 1)
    return pdu._replace(**changes)


def own_err(stat: str, status: int) -> str:
    """The 3-digit ``err:`` of proxyd's own receipts (see the module docstring)."""
    if status == _S["PROXYD_RCONTENT"]:
        return "400"
    if status == _S["PROXYD_RNOBALANCE"]:
        return "401"
    if status == _S["ESME_RDELIVERYFAILURE"]:
        return "408"
    if stat == "EXPIRED":
        return "409"
    return "%03d" % (status % 1000)


def own_receipt_pdu(mid: bytes, submit_pdu: Any, stat: str, err: str, state: int,
                    now: float) -> Any:
    """proxyd's own receipt of the part `submit_pdu` (addresses swapped): a deliver_sm in
    the Appendix B format, esm_class 0x04, receipted_message_id and message_state TLVs."""
    date = time.strftime("%y%m%d%H%M", time.localtime(now)).encode()
    data = submit_pdu.payload
    if submit_pdu.esm_class & C.ESM_UDHI and data:
        data = data[data[0] + 1:]
    sm = (b"id:%s sub:001 dlvrd:000 submit date:%s done date:%s stat:%s err:%s text:%s"
          % (mid, date, date, stat.encode(), err.encode(), data[:20]))
    return P.DeliverSm(
        seq=0, source_addr_ton=submit_pdu.dest_addr_ton,
        source_addr_npi=submit_pdu.dest_addr_npi,
        source_addr=submit_pdu.destination_addr,
        dest_addr_ton=submit_pdu.source_addr_ton,
        dest_addr_npi=submit_pdu.source_addr_npi, destination_addr=submit_pdu.source_addr,
        esm_class=C.ESM_DELIVERY_RECEIPT, data_coding=submit_pdu.data_coding,
        short_message=sm, tlvs=((C.TAG_RECEIPTED_MESSAGE_ID, mid + b"\0"),
                                (C.TAG_MESSAGE_STATE, bytes((state,)))))


def parse_receipt(pdu: Any) -> dict:
    """The Appendix B fields of a receipt (as str), with its state from the message_state
    TLV or the stat text."""
    text = pdu.payload
    f = {k.lower().decode().replace(" ", ""): v.decode("latin-1")
         for k, v in _FIELDS.findall(text)}
    m = _TEXT.search(text)
    tlv = pdu.tlv(C.TAG_MESSAGE_STATE)
    state = tlv[0] if tlv else STATE.get(f.get("stat", "").upper(), 7)
    stat = f.get("stat", "").upper() or STATE_NAMES.get(state, "UNKNOWN")
    return {"state": state, "stat": stat, "err": f.get("err", "") or "000",
            "sub": f.get("sub", ""), "dlvrd": f.get("dlvrd", ""),
            "subdate": f.get("submitdate", ""), "donedate": f.get("donedate", ""),
            "text": m.group(1).decode("latin-1") if m else "",
            "reply": text.decode("latin-1")}


def receipt_state(pdu: Any) -> tuple[int, str]:
    """(message_state, err) of a receipt, as `parse_receipt` finds them (cheaper: the
    stored state needs no more)."""
    tlv = pdu.tlv(C.TAG_MESSAGE_STATE)
    text = pdu.payload
    if tlv:
        state = tlv[0]
    else:
        stat = _STAT.findall(text)
        state = STATE.get(stat[-1].decode("latin-1").upper(), 7) if stat else 7
    err = _ERR.findall(text)
    return state, (err[-1].decode("latin-1") if err else "") or "000"


def expand_facts(facts: dict) -> dict:
    """The facts of an HTTP receipt callback (see proxyd.http.dlr) from what the receipt
    script keeps ({"ev": "final", mid, up, smsc_id, t, c: command id, hex: PDU body});
    facts already complete are returned as they are."""
    if facts is not None and facts.get("ev") == "mo":
        return mo_facts(facts)
    if facts is None or "hex" not in facts:
        return facts
    out = P.decode_body(int(facts["c"]), 0, 0, bytes.fromhex(facts["hex"]))
    full = dict(parse_receipt(out), ev=facts.get("ev", "final"), mid=facts.get("mid", ""),
                up=facts.get("up", ""), smsc_id=facts.get("smsc_id", ""),
                t=int(facts.get("t", 0)), to=out.source_addr.decode("latin-1"),
                dc=getattr(out, "data_coding", 0))
    full["from"] = out.destination_addr.decode("latin-1")
    return full


def mo_facts(facts: dict) -> dict:
    """The facts of an MO for a mo_url (proxyd.http.mo) from what is queued: from, to, dc,
    upstream, id, ts and "hexparts" ("seq:hex,...", payloads without UDH), joined in seq
    order and decoded (text "" for a binary coding)."""
    parts = parse_hexparts(facts.get("hexparts") or "")
    dc = int(facts.get("dc", 0))
    try:
        text = join_parts(parts, dc)
    except ValueError:
        text = None
    out = dict(facts)
    out.pop("hexparts", None)
    out["raw"] = b"".join(p for _, p in parts)
    out["text"] = text or ""
    return out
