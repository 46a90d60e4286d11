"""makeService(options): the service tree of one proxyd node, built from the config.

    proxyd (ProxydService)
      store-server            embedded Valkey (url = "embedded"), supervised
      hasher                  the password-verification thread pool ([auth] hash_threads)
      upstream <name> ...     operator binds (reconnecting)
      front (started once the store answers)
        ledger-sweeper        settles reservations whose outcome never came
        smpp:<endpoint> ...   client listeners
        http:<endpoint> ...   Kannel/Jasmin HTTP API
        history               ten minutes of traffic for the status page (proxyd.monitor)
        admin:<endpoint> ...  the status page /, /metrics, /health

The listeners start only when the store is reachable, so no client is ever accepted that
could not be charged. `[store] url = "none"` runs without a store (no ledger, no opt-out,
no reassembly, receipts in memory): for benchmarks and tests of the bare relay only.
"""
from __future__ import annotations

import gc
import sys
from typing import Any

from twisted.application import service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from . import config as config_mod
from .accounts import Registry
from .auth import Authenticator, Hasher, MemoryThrottle, StoreThrottle
from .delivery import Delivery
from .gate import Gate, MessageIds, SmppIntake
from .delivery.memory import MemoryReceipts
from .gate.nulls import FreeLedger, NoChecks, NoReassembly
from .gate.reassembly import Reassembly
from .http.admin import make_admin_site
from .http.callclient import CallbackClient
from .http.api import Api, make_site
from .http.report import ReportResource
from .logs import configure_logging, mask_url
from . import lowbalance
from .metrics import Metrics
from .monitor import Monitor
from .policy import Policy
from .links.routing import Router
from .smpp.server import ClientFactory
from .links.smpp import Upstream
from .store.client import Store
from .store.embedded import EmbeddedServer
from .store.ledger import Ledger, LedgerSweeper
from .store.optout import OptOut, OptOutMirror

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
    """The node: the one builder of its parts. Everything that needs the store is built in
    `_build`, once the store answers, each part with its collaborators as constructor
    arguments; a node without a store gets null objects (`proxyd.gate.nulls`) instead."""

    def __init__(self, cfg: Any, reactor: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.reactor = reactor
        self.store: Any = None
        self.optout: Any = None
        self.optout_mirror: Any = None
        self.store_server: Any = None
        configure_logging(cfg.log)
        self.registry = Registry(cfg)
        self.hasher = Hasher(reactor, cfg.auth.hash_threads, cfg.auth.max_verifying)
        self.hasher.setServiceParent(self)
        self.upstreams: list[Upstream] = []
        self.sessions: set = set()      # the client sessions of this node (ClientFactory's)
        self.router = Router(self.upstreams)
        self.policy = self._policy(cfg)
        self.ids = MessageIds(cfg.relay.node_id)
        self.metrics = Metrics(self.config, self.registry, self.sessions, self.upstreams)
        if cfg.store.url == "embedded":
            self.store_server = EmbeddedServer(cfg.store.dir, cfg.store.appendfsync, reactor,
                                               maxmemory=cfg.store.maxmemory)
            self.store_server.setServiceParent(self)
        self.front = service.MultiService()
        # built by `_build` once the store answers
        self.ledger: Any = None
        self.receipts: Any = None
        self.gate: Any = None
        self.intake: Any = None
        self.client_factory: Any = None
        self.auth: Any = None
        self.notices: Any = None        # low-balance notices (proxyd.lowbalance)
        self.monitor: Any = None        # what the admin listener reads (proxyd.monitor)

    def config(self) -> Any:
        """The current Config: what parts that must see a reload are given (a reload
        replaces `cfg`)."""
        return self.cfg

    @staticmethod
    def _policy(cfg: Any) -> Any:
        if not cfg.policy.enabled:
            return NoChecks()
        return Policy(cfg)

    # --- start and stop --------------------------------------------------------------------
    def startService(self) -> None:
        for a in self.cfg.accounts:
            if not a.password_is_hashed:
                log.warn("account {sid}: plain-text password in the config; store a hash "
                         "(proxyd-admin hash-password)", sid=a.system_id)
        super().startService()
        self._install_sighup()
        d = self._connect_store()
        d.addCallback(self._start_front)
        d.addErrback(self._fatal)

    def _install_sighup(self) -> None:
        import signal
        try:
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
        except ValueError:  # not the main thread (tests driving the service directly)
            pass

    def _connect_store(self) -> defer.Deferred:
        url = self.cfg.store.url
        if url == "none":
            return defer.succeed(None)
        if self.store_server is not None:
            ready = self.store_server.whenReady()
        else:
            ready = defer.succeed(url)
        scfg = self.cfg.store

        def connect(target: str) -> defer.Deferred:
            return Store.connect(target, scfg.pool_size, scfg.timeout_s, self.reactor,
                                 on_latency=self.metrics.store_latency,
                                 ca_file=scfg.ca_file)

        def attempt(target: str, tries: int = 0) -> defer.Deferred:
            d = connect(target)

            def retry(f: Any) -> Any:
                if tries >= 20:
                    return f
                log.warn("store not reachable yet ({err}); retrying", err=f.getErrorMessage())
                return defer.deferLater(self.reactor, 0.5, lambda: None).addCallback(
                    lambda _: attempt(target, tries + 1))
            return d.addErrback(retry)

        return ready.addCallback(attempt)

    def _build(self, store: Any) -> None:
        """Construct the message path: charge, receipts, gate, reassembly, intake, links,
        listeners, in that order, each with what it uses."""
        cfg, reactor = self.cfg, self.reactor
        throttle: Any = MemoryThrottle(self.config, reactor)
        if store is not None:
            throttle = StoreThrottle(self.config, store, throttle)
        self.auth = Authenticator(self.config, throttle, self.hasher, reactor)
        if store is not None:
            self.store = store
            sc = cfg.store
            if sc.optout_cache:
                self.optout_mirror = OptOutMirror(store, store.target, reactor,
                                                  tls=store.tls)
                self.optout_mirror.start()
            self.ledger = Ledger(store, reactor, retention_days=sc.retention_days,
                                 lease_parts=sc.lease_parts, lease_ttl_s=sc.lease_ttl_s,
                                 lease_idle_s=sc.lease_idle_s,
                                 record_delay_s=sc.record_delay_s,
                                 optout_mirror=self.optout_mirror)
            self.optout = OptOut(store, self.optout_mirror)
            LedgerSweeper(self.ledger, sc.reservation_max_age_s, sc.sweep_interval_s,
                          reactor=reactor).setServiceParent(self.front)
            hc = cfg.http
            callbacks = CallbackClient(reactor, allow=hc.callback_allow,
                                       timeout_s=cfg.delivery.dlr_timeout_s,
                                       max_body=hc.callback_max_body)
            self.notices = lowbalance.Notices(self.config)
            lowbalance.sync(store, cfg.accounts)
            self.delivery = self.receipts = Delivery(
                self.config, store, reactor, self.optout, self.ledger, callbacks=callbacks,
                callback_per_account=hc.callback_per_account, on_notice=self.notices)
            self.receipts.setServiceParent(self.front)
            report_ledger: Any = self.ledger
            self.monitor = Monitor(self.config, self.metrics, store, reactor,
                                   dlr=self.delivery.dlr, notices=self.notices)
        else:
            self.ledger = FreeLedger()
            self.receipts = MemoryReceipts(self.config, self.registry, reactor)
            report_ledger = None        # no journal to report from: /report answers 503
            self.monitor = Monitor(self.config, self.metrics, None, reactor)
        self.monitor.history.setServiceParent(self.front)
        self.registry.on_ready.append(self.receipts.session_ready)
        self.registry.on_unbound.append(self.receipts.session_gone)
        self.gate = Gate(cfg, self.policy, self.ledger, self.router, self.receipts,
                         self.metrics, reactor, self.ids)
        if store is not None:
            reassembly: Any = Reassembly(store, self.gate, self.receipts, reactor,
                                         cfg.policy.reassembly_timeout_s)
            reassembly.sweeper.setServiceParent(self.front)
        else:
            reassembly = NoReassembly()
        self.reassembly = reassembly
        self.intake = SmppIntake(self.gate, reassembly, self.receipts.messages, self.router,
                                 reactor)
        for u in cfg.upstreams:
            self._add_upstream(u, cfg)
        self.client_factory = ClientFactory(cfg.smpp, self.registry, self.intake, reactor,
                                            refusal_interval_s=cfg.log.refusal_interval_s,
                                            sessions=self.sessions, auth=self.auth)
        self._listen("smpp", cfg.smpp.listen, self.client_factory)
        if cfg.http.listen:
            report = ReportResource(self.auth, report_ledger, reactor, self.config)
            api = Api(self.auth, self.intake, self.gate, self.receipts, self.ledger,
                      self.router, report, max_receivers=cfg.http.max_receivers)
            self._listen("http", cfg.http.listen, make_site(api, cfg.http, reactor,
                                                         cfg.log.refusal_interval_s))
        if cfg.admin.listen:
            self._listen("admin", cfg.admin.listen,
                         make_admin_site(self.config, self.metrics, self.upstreams, store,
                                         reactor, monitor=self.monitor,
                                         binds=self.registry.sessions))

    def _listen(self, kind: str, endpoints: Any, factory: Any) -> None:
        """A listener per endpoint string, started with the front (once the store answers)."""
        for listen in endpoints:
            svc = strports.service(listen, factory, reactor=self.reactor)
            svc.setName("%s:%s" % (kind, listen))
            svc.setServiceParent(self.front)

    def _add_upstream(self, ucfg: Any, cfg: Any) -> Upstream:
        up = Upstream(ucfg, self.reactor, self.receipts.on_deliver,
                      queue_wait_s=cfg.relay.queue_wait_s)
        up.setServiceParent(self)
        self.upstreams.append(up)
        return up

    def _start_front(self, store: Any) -> None:
        self._build(store)
        # everything made so far (modules, config, automata) lives as long as the process:
        # out of the collector's sight, so that its full passes only walk what traffic made
        gc.collect()
        gc.freeze()
        log.info("proxyd ready: {n} accounts, {u} upstreams, SMPP on {listen}, store {store}",
                 n=len(self.cfg.accounts), u=len(self.cfg.upstreams),
                 listen=", ".join(self.cfg.smpp.listen),
                 store=mask_url(self.cfg.store.url))
        self.front.setServiceParent(self)

    def _fatal(self, f: Any) -> None:
        log.failure("proxyd cannot start: the store is unavailable", f)
        self.reactor.callLater(0, self.reactor.stop)

    # --- reload (SIGHUP) --------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the config file: accounts, filters, routes and upstreams. Client binds stay
        up; sessions of removed accounts and of accounts whose password changed are unbound;
        changed upstreams are re-bound after their in-flight requests are answered. A bad
        config keeps the old one (logged). True if applied."""
        try:
            new = config_mod.load(self.cfg.path)
            policy = self.policy.reconfigured(new) if (
                isinstance(self.policy, Policy) and new.policy.enabled) else self._policy(new)
        except (config_mod.ConfigError, ValueError, OSError) as e:
            log.error("reload refused, keeping the running config: {err}", err=str(e))
            return False
        old = self.cfg
        self.cfg = new
        configure_logging(new.log)
        self.policy = policy
        self.registry.set_config(new)
        if self.gate is None:       # not built yet (the store has not answered)
            log.info("reload applied before start: {n} accounts", n=len(new.accounts))
            return True
        self.auth.reconfigured()
        if self.store is not None:
            lowbalance.sync(self.store, new.accounts)
        self.gate.set_config(new, policy)
        self.client_factory.set_config(new.smpp)
        for sid, sessions in list(self.registry.sessions.items()):
            account = new.account(sid)
            for sess in list(sessions):
                if account is None:
                    log.info("reload: account {sid} removed; unbinding", sid=sid)
                    sess.unbind()
                elif account.password != sess.account.password:
                    log.info("reload: password of {sid} changed; unbinding", sid=sid)
                    sess.unbind()
                else:
                    sess.set_account(account)
        old_by_name = {u.cfg.name: u for u in self.upstreams}
        new_names = {u.name for u in new.upstreams}
        for ucfg in new.upstreams:
            cur = old_by_name.get(ucfg.name)
            if cur is not None and cur.cfg == ucfg:
                continue
            self._add_upstream(ucfg, new)
            log.info("reload: upstream {name} {what}", name=ucfg.name,
                     what="changed, re-binding" if cur is not None else "added")
            if cur is not None:
                self._retire(cur)
        for name, cur in old_by_name.items():
            if name not in new_names:
                log.info("reload: upstream {name} removed", name=name)
                self._retire(cur)
        log.info("reload applied: {n} accounts, {u} upstreams", n=len(new.accounts),
                 u=len(new.upstreams))
        del old
        return True

    def _retire(self, up: Upstream) -> None:
        """Take an upstream out of routing, let its in-flight requests finish, then stop it."""
        if up in self.upstreams:
            self.upstreams.remove(up)

        def drained() -> Any:
            busy = any(b.inflight for b in up.binds) or up.waiting
            if busy and self.reactor.seconds() < deadline:
                return self.reactor.callLater(0.1, drained)
            return up.disownServiceParent()

        deadline = self.reactor.seconds() + up.cfg.response_timeout_s + 1
        drained()

    # --- stop (SIGTERM) ----------------------------------------------------------------------
    def stopService(self) -> Any:
        """Stop accepting, let in-flight requests be answered, unbind clients and upstreams,
        stop the embedded store last."""
        log.info("proxyd stopping: draining in-flight requests")
        self.running = 0
        listeners = [s for s in self.front if s.name and s.name.startswith(("smpp:", "http:"))]
        d = defer.gatherResults([defer.maybeDeferred(s.stopService) for s in listeners])

        def drain(_: Any) -> defer.Deferred:
            done: defer.Deferred = defer.Deferred()
            deadline = self.reactor.seconds() + 5.0

            def check() -> None:
                busy = sum(s.outstanding for s in self.sessions)
                if busy and self.reactor.seconds() < deadline:
                    self.reactor.callLater(0.05, check)
                else:
                    done.callback(None)
            check()
            return done

        def unbind_clients(_: Any) -> Any:
            for s in list(self.sessions):
                s.unbind()
            if self.gate is not None:       # the throttled refusals not journaled yet
                self.gate.flush_throttled()
            rest = [s for s in self.front if s not in listeners]
            return defer.gatherResults([defer.maybeDeferred(s.stopService) for s in rest])

        def stop_upstreams(_: Any) -> Any:
            return defer.gatherResults([defer.maybeDeferred(u.stopService)
                                        for u in self.upstreams])

        def release_leases(_: Any) -> Any:
            if self.ledger is not None:
                return self.ledger.release_leases()
            return None     # (stopped before the store answered)

        def stop_store(_: Any) -> Any:
            if self.hasher.running:
                self.hasher.stopService()
            if self.optout_mirror is not None:
                self.optout_mirror.stop()
            if self.store is not None:
                self.store.disconnect()
            if self.store_server is not None:
                return defer.maybeDeferred(self.store_server.stopService)
            return None

        d.addCallback(drain)
        d.addCallback(unbind_clients)
        d.addCallback(stop_upstreams)
        d.addCallback(release_leases)
        d.addErrback(lambda f: log.failure("error while returning leases", f))
        d.addCallback(stop_store)
        d.addErrback(lambda f: log.failure("error while stopping", f))
        return d


def makeService(options: Any, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as _reactor
        reactor = _reactor
    cfg = options["cfg"] if "cfg" in options else config_mod.load(options["config"])
    try:
        return ProxydService(cfg, reactor)
    except (ValueError, OSError) as e:     # word lists, store binary, endpoint strings
        sys.stderr.write("proxyd: config error: %s\n" % e)
        sys.stderr.flush()
        raise SystemExit(2)
