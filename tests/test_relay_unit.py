"""Small pure pieces of the relay: ids, id forms, masking."""
from __future__ import annotations

from types import SimpleNamespace

from proxyd.delivery.text import normalise_upstream_id
from proxyd.gate import MessageIds
from proxyd.logs import configure_logging, mask


def test_message_ids_unique_short_and_node_specific():
    a, b = MessageIds("node-a"), MessageIds("node-b")
    ids = {a.next() for _ in range(10000)} | {b.next() for _ in range(10000)}
    assert len(ids) == 20000
    assert all(len(i) <= 64 and i.isalnum() for i in ids)


def test_upstream_id_forms_meet():
    # an SMSC answering 0x1F4 in hex in submit_sm_resp and 500 in decimal in the receipt
    assert set(normalise_upstream_id(b"1f4")) & set(normalise_upstream_id(b"500"))
    assert set(normalise_upstream_id(b"0001F4")) & set(normalise_upstream_id(b"1f4"))
    assert normalise_upstream_id(b"000")[0] == "0"


def test_masking_follows_the_config():
    try:
        assert mask("13812345678") == "138****5678"
        assert mask("12345") == "*****"
        configure_logging(SimpleNamespace(mask_numbers=False))
        assert mask("13812345678") == "13812345678"
    finally:
        configure_logging(SimpleNamespace(mask_numbers=True))
