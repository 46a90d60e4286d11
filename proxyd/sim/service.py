"""`twistd proxyd-smsc` (via the plugin) and `python -m proxyd.sim`: options and service tree."""
from __future__ import annotations

import importlib
import json
import os
from typing import Any

from twisted.application import service, strports
from twisted.internet import protocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python import usage

from proxyd.sim.smsc import SmscConfig, SmscFactory, parse_receipt_stat, parse_status

DEFAULT_LISTEN = "tcp:2776:interface=127.0.0.1"

# --protocol -> the factory class playing that operator gateway ("module:Class"), built as
# ``cls(config, reactor=reactor)``; one line per protocol
SIM_FACTORIES: dict[str, str] = {
    "smpp": "proxyd.sim.smsc:SmscFactory",
    "cmpp3": "proxyd.sim.cmpp:Cmpp3Factory",
    "cmpp2": "proxyd.sim.cmpp:Cmpp2Factory",
    "smgp": "proxyd.sim.smgp:SmgpFactory",
    "sgip": "proxyd.sim.sgip:SgipFactory",
}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("An operator gateway simulator (SMPP 3.4 SMSC, or with --protocol CMPP 3.0/2.0 "
                "ISMG, ...): accepts binds, answers submit_sm/data_sm with "
                "message ids, sends delivery receipts and injected MO messages, and fails, "
                "delays, throttles or drops on demand.")
    optFlags = [
        ["receipts", None, "send delivery receipts when registered_delivery asks (default)"],
        ["no-receipts", None, "never send delivery receipts"],
    ]
    optParameters = [
        ["protocol", "p", "smpp", "the gateway to play: " + " | ".join(SIM_FACTORIES)],
        ["listen", "l", DEFAULT_LISTEN, "listener (Twisted endpoint string)"],
        ["control", None, None, "optional control listener (endpoint string): a line "
         "protocol, 'MO <source> <dest> <hex text> [data_coding] [system_id]' and 'STATS'"],
        ["system-id", None, None, "only this system_id may bind (default: any)"],
        ["password", None, None, "only this password is accepted (default: any)"],
        ["receipt-delay", None, 0.0, "seconds between a submit and its receipt", float],
        ["receipt-stat", None, "DELIVRD",
         "receipt stat, or a weighted cycle like DELIVRD:8,UNDELIV:1,EXPIRED:1"],
        ["fail-every", None, 0, "answer every Nth submit with --fail-status (0: never)", int],
        ["fail-status", None, "0x08", "status for --fail-every (0x58, 88 or ESME_RTHROTTLED)"],
        ["latency-ms", None, 0.0, "delay submit answers by this many milliseconds", float],
        ["drop-after", None, 0, "close a connection at its Nth submit, unanswered (0: never)",
         int],
        ["throttle-tps", None, 0, "answer ESME_RTHROTTLED over this many submits per second "
         "(0: no limit)", int],
        ["record", None, None, "append each accepted submit as a JSON line to this file"],
        ["stats", None, None, "append per-second submit counts as JSON lines to this file"],
        ["id-format", None, "hex", "message ids: hex or dec"],
        ["id-start", None, None, "first message id (default: from the start time)", int],
        ["sp-connect", None, None, "sgip: the SP's listener (endpoint string) to connect back "
         "to with Reports and MO"],
        ["sp-login", None, None, "sgip: the login presented there (default: --system-id)"],
        ["sp-password", None, None, "sgip: its password (default: --password)"],
    ]

    def postOptions(self) -> None:
        if self["protocol"] not in SIM_FACTORIES:
            raise usage.UsageError("--protocol: one of %s, not %r"
                                   % (", ".join(SIM_FACTORIES), self["protocol"]))
        if self["receipts"] and self["no-receipts"]:
            raise usage.UsageError("--receipts and --no-receipts are exclusive")
        try:
            self["fail-status"] = parse_status(self["fail-status"])
            self.config = SmscConfig(
                system_id=self["system-id"],
                password=self["password"],
                receipts=not self["no-receipts"],
                receipt_delay_s=self["receipt-delay"],
                receipt_stat=parse_receipt_stat(self["receipt-stat"]),
                fail_every=self["fail-every"],
                fail_status=self["fail-status"],
                latency_ms=self["latency-ms"],
                drop_after=self["drop-after"],
                throttle_tps=self["throttle-tps"],
                record=os.path.abspath(self["record"]) if self["record"] else None,
                stats=os.path.abspath(self["stats"]) if self["stats"] else None,
                id_format=self["id-format"],
                id_start=self["id-start"],
                sp_connect=self["sp-connect"],
                sp_login=self["sp-login"],
                sp_password=self["sp-password"],
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


class ControlProtocol(LineOnlyReceiver):
    """Tiny line protocol to drive a running simulator from tests and demos."""

    delimiter = b"\n"

    def __init__(self, smsc: SmscFactory) -> None:
        self.smsc = smsc

    def lineReceived(self, line: bytes) -> None:
        parts = line.strip().split()
        if not parts:
            return
        cmd = parts[0].upper()
        try:
            if cmd == b"MO" and 4 <= len(parts) <= 6:
                text = bytes.fromhex(parts[3].decode("ascii"))
                dc = int(parts[4], 0) if len(parts) > 4 else 0
                sid = parts[5].decode("latin-1") if len(parts) > 5 else None
                sent = self.smsc.send_mo(parts[1], parts[2], text, dc, system_id=sid)
                self.sendLine(b"OK sent" if sent else b"OK queued")
            elif cmd == b"STATS":
                self.sendLine(json.dumps(self.smsc.counters, sort_keys=True).encode())
            else:
                self.sendLine(b"ERR usage: MO <source> <dest> <hex text> [data_coding] "
                              b"[system_id] | STATS")
        except ValueError as e:
            self.sendLine(b"ERR " + str(e).encode("utf-8", "replace"))


class ControlFactory(protocol.ServerFactory):
    def __init__(self, smsc: SmscFactory) -> None:
        self.smsc = smsc

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        p = ControlProtocol(self.smsc)
        p.factory = self
        return p


def factory_class(protocol_name: str) -> type:
    module, _, name = SIM_FACTORIES[protocol_name].partition(":")
    return getattr(importlib.import_module(module), name)


def make_factory(options: Options, reactor: Any = None) -> SmscFactory:
    """The simulated gateway of `--protocol` (every mode shares SmscFactory's counters,
    receipt queue, receivers, error injection and control commands)."""
    return factory_class(options["protocol"])(options.config, reactor=reactor)


def makeService(options: Options) -> service.IService:
    """The SMPP listener (and the control listener if asked) around one SmscFactory."""
    smsc = make_factory(options)
    top = service.MultiService()
    strports.service(options["listen"], smsc).setServiceParent(top)
    if options["control"]:
        strports.service(options["control"], ControlFactory(smsc)).setServiceParent(top)
    return top
