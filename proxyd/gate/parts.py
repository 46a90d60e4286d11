"""From a message-carrying PDU to the `Message` the gate judges."""
from __future__ import annotations

from typing import Any

from proxyd.message import Message
from proxyd.smpp import constants as C
from proxyd.text.codec import decode_text


def message_text(pdu: Any) -> str | None:
    """The decoded text of a submit_sm/deliver_sm/data_sm (UDH stripped, message_payload
    used when short_message is empty); None for binary data codings."""
    data = pdu.payload
    if pdu.esm_class & C.ESM_UDHI and data:
        data = data[data[0] + 1:]
    return decode_text(data, pdu.data_coding)


def build_message(account: Any, pdu: Any, text: str | None, segments: tuple,
                  billable: int, channel: str = "smpp") -> Message:
    """The Message of `segments` ((pdu, body) wire parts; `pdu` the first) whose whole text
    is `text`, billed as `billable` parts."""
    return Message(account.system_id, pdu.source_addr.decode("latin-1"),
                   pdu.destination_addr.decode("latin-1"), pdu.source_addr_ton,
                   pdu.source_addr_npi, pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.esm_class,
                   pdu.data_coding, pdu.registered_delivery, text, billable, channel,
                   segments)
