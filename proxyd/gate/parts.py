"""From a message-carrying PDU to the `Message` the gate judges."""
from __future__ import annotations

from typing import Any

from proxyd.message import Message


def build_message(account: Any, pdu: Any, text: str | None, segments: tuple,
                  billable: int, channel: str = "smpp") -> Message:
    """The Message of `segments` ((pdu, body) wire parts; `pdu` the first) whose whole text
    is `text`, billed as `billable` parts."""
    return Message(account.system_id, pdu.source_addr.decode("latin-1"),
                   pdu.destination_addr.decode("latin-1"), pdu.source_addr_ton,
                   pdu.source_addr_npi, pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.esm_class,
                   pdu.data_coding, pdu.registered_delivery, text, billable, channel,
                   segments)
