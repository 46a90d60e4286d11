"""makeService(options): the service tree of one proxyd node, built from the config.

    proxyd (MultiService)
      upstream:<name> ...      operator binds (reconnecting)
      smpp:<endpoint> ...      client listeners
"""
from __future__ import annotations

import sys
from typing import Any

from twisted.application import service, strports
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage

from . import config as config_mod
from .accounts import Registry
from .relay import Relay
from .routing import Router
from .smpp.server import ClientFactory
from .smpp.upstream import Upstream

log = Logger(namespace="proxyd")


class Options(usage.Options):
    synopsis = "[--config conf/proxyd.toml]"
    optParameters = [["config", "c", "conf/proxyd.toml", "path of the TOML configuration"]]

    def postOptions(self) -> None:
        try:
            self["cfg"] = config_mod.load(self["config"])
        except config_mod.ConfigError as e:
            sys.stderr.write("proxyd: config error: %s\n" % e)
            sys.stderr.flush()
            raise SystemExit(2)


class ProxydService(service.MultiService):
    """The node: owns the relay and the pieces it wires together."""

    def __init__(self, cfg: Any, reactor: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.reactor = reactor
        self.registry = Registry(cfg)
        self.upstreams: list[Upstream] = []
        self.router = Router(self.upstreams)
        self.relay = Relay(cfg, self.router, self.registry, reactor)
        for u in cfg.upstreams:
            up = Upstream(u, reactor, self.relay.on_deliver,
                          queue_wait_s=cfg.relay.queue_wait_s)
            up.setServiceParent(self)
            self.upstreams.append(up)
        self.client_factory = ClientFactory(cfg.smpp, self.registry, self.relay, reactor)
        for listen in cfg.smpp.listen:
            svc = strports.service(listen, self.client_factory, reactor=reactor)
            svc.setName("smpp:" + listen)
            svc.setServiceParent(self)

    def startService(self) -> None:
        for a in self.cfg.accounts:
            if not a.password_is_hashed:
                log.warn("account {sid}: plain-text password in the config; store a hash "
                         "(proxyd-admin hash-password)", sid=a.system_id)
        log.info("proxyd starting: {n} accounts, {u} upstreams, SMPP on {listen}",
                 n=len(self.cfg.accounts), u=len(self.cfg.upstreams),
                 listen=", ".join(self.cfg.smpp.listen))
        super().startService()

    def stopService(self) -> Any:
        for s in list(self.client_factory.sessions):
            s.unbind()
        return super().stopService()


def makeService(options: Any, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as _reactor
        reactor = _reactor
    cfg = options["cfg"] if "cfg" in options else config_mod.load(options["config"])
    return ProxydService(cfg, reactor)


__all__ = ["Options", "makeService", "ProxydService", "endpoints"]
