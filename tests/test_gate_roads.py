"""No road around the gate: every command id the codec knows, sent by a bound transceiver
with a banned text in every field that can carry one, either goes through the gate (and is
refused by its checks) or gets a refusal status; nothing banned reaches an operator link.

No sockets: a ClientSession over a string transport, the real SmppIntake and Gate with the
shipped word lists, a link and a message store that record what they are given."""
from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from proxyd.config import AccountConfig, Config, PolicyConfig, SmppConfig
from proxyd.gate import Gate, MessageIds, SmppIntake
from proxyd.delivery.memory import MemoryReceipts
from proxyd.gate.nulls import FreeLedger
from proxyd.metrics import Metrics
from proxyd.policy import Policy
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.smpp.server import ClientFactory
from proxyd.store.messages import Record

from .procs import FILTERS

S = C.STATUS
ACCOUNT = AccountConfig(system_id="acme", password="pw", service_codes=("10690001",),
                        max_parts=10)
BANNED = "网上赌博".encode("utf-16-be")
CLEAN = "您好明天见".encode("utf-16-be")


class Registry:
    def authenticate(self, sid: str, pw: str, peer: str):
        return defer.succeed((0, ACCOUNT))

    def bound(self, session, account) -> int:
        return 0

    def ready(self, session) -> None:
        pass

    def unbound(self, session) -> None:
        pass

    def receivers(self, account):
        return []


class Link:
    """An operator link that takes everything and remembers it."""
    name = "sim"
    available = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def submit_part(self, part, source, on_outcome) -> None:
        self.sent.append(part[1])
        on_outcome(0, b"op%d" % len(self.sent))

    def submit(self, cid: int, body: bytes, on_resp) -> None:
        self.sent.append(body)
        on_resp(0, None)


class Router:
    def __init__(self, link: Link) -> None:
        self.upstreams = [link]

    def routable(self, dest: str, account) -> bool:
        return True

    def pick(self, dest: str, account, tried: tuple = ()):
        return None if tried else self.upstreams[0]


class Messages:
    """Every message id names a replaceable (ENROUTE) message at the link."""

    def get(self, account: str, mid: str):
        return defer.succeed(Record(1, 0, "", "sim", "op1", 0, "10690001", "13800138000"))

    def set_state(self, account: str, mid: str, rec) -> defer.Deferred:
        return defer.succeed(None)


class CountingGate(Gate):
    """Counts the messages that entered the gate: `send` (checks -> charge -> route ->
    relay) or `judge` (the checks alone, for replace_sm)."""
    judged = 0

    def send(self, account, msg, done, ids=None):
        self.judged += 1
        return super().send(account, msg, done, ids)

    def judge(self, msg, account):
        self.judged += 1
        return super().judge(msg, account)


def make():
    clock = Clock()
    cfg = Config(smpp=SmppConfig(window=10), accounts=(ACCOUNT,),
                 policy=PolicyConfig(filters_dir=str(FILTERS)))
    link = Link()
    router = Router(link)
    registry = Registry()
    receipts = MemoryReceipts(lambda: cfg, registry, clock)
    gate = CountingGate(cfg, Policy(cfg, clock=clock.seconds), FreeLedger(), router,
                        receipts, Metrics(), clock, MessageIds("t"))

    class Reassembly:       # long-message parts: refused here (the e2e tests cover them)
        def add_part(self, account, pdu, body, ident, reply):
            reply(S["ESME_RSYSERR"], b"")

    intake = SmppIntake(gate, Reassembly(), Messages(), router, clock)
    f = ClientFactory(cfg.smpp, registry, intake, clock, auth=registry)
    t = StringTransport()
    s = f.buildProtocol(None)
    s.makeConnection(t)
    s.dataReceived(P.encode(P.BindTransceiver(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b"")))
    assert P.Decoder().feed(t.value())[0].status == 0
    t.clear()
    return gate, link, s, t


def loaded(cls, text: bytes):
    """A PDU of `cls` with `text` in each field that can carry user data."""
    fields = dict(source_addr=b"10690001", destination_addr=b"13800138000",
                  dest_addresses=((1, 1, 1, b"13800138000"),), data_coding=8,
                  short_message=text, message_id=b"abc",
                  tlvs=((C.TAG_MESSAGE_PAYLOAD, text),))
    names = set(cls._fields)
    kw = {k: v for k, v in fields.items() if k in names}
    pdu = cls(seq=7, **kw)
    if "short_message" in names and pdu.command_id in (C.SUBMIT_SM, C.SUBMIT_MULTI,
                                                      C.DELIVER_SM):
        # short_message and message_payload together are invalid: one road each
        return [pdu._replace(tlvs=()), pdu._replace(short_message=b"")]
    return [pdu]


def test_every_command_id_goes_through_the_gate_or_is_refused():
    requests = [cid for cid in P.PDU_CLASSES if not cid & C.RESP_BIT]
    assert {C.SUBMIT_SM, C.DATA_SM, C.SUBMIT_MULTI, C.REPLACE_SM, C.CANCEL_SM,
            C.QUERY_SM, C.DELIVER_SM} <= set(requests)
    for cid in P.PDU_CLASSES:
        for pdu in loaded(P.PDU_CLASSES[cid], BANNED):
            gate, link, s, t = make()
            s.dataReceived(P.encode(pdu))
            answers = P.Decoder().feed(t.value())
            name = C.COMMAND_NAMES.get(cid, hex(cid))
            assert not any(BANNED in body for body in link.sent), name
            if cid & C.RESP_BIT or cid in (C.ENQUIRE_LINK, C.UNBIND):
                # responses are matched or ignored; enquire_link / unbind are not messages
                assert all(a.status == 0 or a.command_id == C.GENERIC_NACK
                           for a in answers), name
                continue
            assert answers and answers[0].seq == 7, name
            status = answers[0].status
            if cid in (C.SUBMIT_SM, C.DATA_SM, C.SUBMIT_MULTI, C.REPLACE_SM):
                assert gate.judged >= 1, name          # judged by the gate...
                assert status == S["PROXYD_RCONTENT"], (name, hex(status))    # ...refused
            elif cid == C.CANCEL_SM:
                # carries no text: relayed to the holder of the message, nothing else
                assert link.sent and all(b"abc" not in b for b in link.sent)
            else:
                assert status != 0 or cid == C.QUERY_SM, (name, hex(status))


def test_the_same_roads_with_a_clean_text_reach_the_link():
    """The test above can fail: a clean text on each message road does reach the link."""
    for cid in (C.SUBMIT_SM, C.DATA_SM, C.SUBMIT_MULTI, C.REPLACE_SM):
        for pdu in loaded(P.PDU_CLASSES[cid], CLEAN):
            gate, link, s, t = make()
            s.dataReceived(P.encode(pdu))
            answers = P.Decoder().feed(t.value())
            assert answers[0].status == 0, C.COMMAND_NAMES[cid]
            assert any(CLEAN in body for body in link.sent), C.COMMAND_NAMES[cid]
            assert gate.judged >= 1


def test_message_payload_is_billed_as_the_operator_bills():
    from proxyd.gate.billing import billable_parts
    assert billable_parts(b"x" * 160, 0, 0) == 1
    assert billable_parts(b"x" * 161, 0, 0) == 2
    assert billable_parts(b"x" * 2000, 0, 0) == 14
    assert billable_parts(b"\0x" * 70, 0, 8) == 1
    assert billable_parts(b"\0x" * 71, 0, 8) == 2
    assert billable_parts(b"\0x" * 134, 0, 8) == 2
    assert billable_parts(b"\0x" * 135, 0, 8) == 3
    assert billable_parts(b"x" * 140, 0, 4) == 1
    assert billable_parts(b"x" * 141, 0, 4) == 2
    assert billable_parts(b"x" * 268, 0, 4) == 2
    # a header that is not a concatenation header takes room: 6 octets = 7 septets
    assert billable_parts(b"\x05" + b"p" * 5 + b"x" * 153, 6, 0) == 1
    assert billable_parts(b"\x05" + b"p" * 5 + b"x" * 154, 6, 0) == 2


def test_a_payload_over_max_parts_is_refused_without_charge():
    gate, link, s, t = make()
    pdu = P.SubmitSm(seq=9, source_addr=b"10690001", destination_addr=b"13800138000",
                     tlvs=((C.TAG_MESSAGE_PAYLOAD, b"y" * 1600),))      # 11 parts > 10
    s.dataReceived(P.encode(pdu))
    [answer] = P.Decoder().feed(t.value())
    assert answer.status == S["ESME_RINVMSGLEN"] and not link.sent


def test_the_rate_is_taken_first_and_a_throttled_flood_is_logged_once_a_second():
    """The bucket comes before every other check (a refused sender costs a token), and the
    refusals over the rate are logged at most once a second per account, with a count."""
    import dataclasses

    from twisted.logger import globalLogPublisher

    from proxyd.message import Message

    clock = Clock()
    acct = dataclasses.replace(ACCOUNT, tps=1, burst=2)
    cfg = Config(accounts=(acct,), policy=PolicyConfig(filters_dir=str(FILTERS)))
    gate = Gate(cfg, Policy(cfg, clock=clock.seconds), FreeLedger(), Router(Link()),
                MemoryReceipts(lambda: cfg, Registry(), clock), Metrics(), clock,
                MessageIds("t"))
    lines: list = []

    def observer(event):
        if event.get("log_namespace") == "proxyd.gate":
            lines.append(event)
    globalLogPublisher.addObserver(observer)
    try:
        statuses = []
        for i in range(10):
            gate.send(acct, Message("acme", "999", "13800138000", text="x"),
                      lambda status, ids, refusal, ok: statuses.append(status))
        clock.advance(1.0)
        for i in range(2):
            gate.send(acct, Message("acme", "999", "13800138000", text="x"),
                      lambda status, ids, refusal, ok: statuses.append(status))
    finally:
        globalLogPublisher.removeObserver(observer)
    assert statuses[:2] == [S["ESME_RINVSRCADR"]] * 2
    assert statuses[2:10] == [S["ESME_RTHROTTLED"]] * 8
    assert statuses[10:] == [S["ESME_RINVSRCADR"], S["ESME_RTHROTTLED"]]   # one token back
    rate_lines = [e for e in lines if e.get("reason") == "rate"]
    assert len(rate_lines) == 2                            # not nine
    assert [e["n"] for e in lines if "n" in e] == [7]      # the seven not logged, told


def test_throttled_refusals_are_journaled_once_a_second_per_account():
    """Eight refusals over the rate: one "rejected rate" record of eight parts, written a
    second later (the counters add up the same), not eight records."""
    import dataclasses

    from proxyd.message import Message

    counted: list = []

    class Ledger(FreeLedger):
        def count_rejected(self, account, reason, msg_id="", parts=1):
            counted.append((account, reason, parts))
            return defer.succeed(0)

    clock = Clock()
    acct = dataclasses.replace(ACCOUNT, tps=1, burst=2)
    cfg = Config(accounts=(acct,), policy=PolicyConfig(filters_dir=str(FILTERS)))
    gate = Gate(cfg, Policy(cfg, clock=clock.seconds), Ledger(), Router(Link()),
                MemoryReceipts(lambda: cfg, Registry(), clock), Metrics(), clock,
                MessageIds("t"))
    for i in range(10):
        gate.send(acct, Message("acme", "999", "13800138000", text="x"),
                  lambda *a: None)
    assert counted == [("acme", "sender", 1)] * 2
    clock.advance(1.0)
    assert counted[2:] == [("acme", "rate", 8)]
    gate.send(acct, Message("acme", "999", "13800138000", text="x", parts=1),
              lambda *a: None)                       # a token back: refused by the sender
    gate.send(acct, Message("acme", "999", "13800138000", text="x"), lambda *a: None)
    gate.flush_throttled()                           # (at shutdown) written at once
    assert counted[3:] == [("acme", "sender", 1), ("acme", "rate", 1)]
