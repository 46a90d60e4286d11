"""conf/*.toml -> frozen dataclasses, validated at start.

One schema (the dataclasses below, their defaults and `_check_*` rules) is the single place
where config keys are defined. `load(path)` raises `ConfigError` with one line naming the key
and the problem, e.g. ``upstream[0].window: must be an integer >= 1, got 0``.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .http.targets import BadUrl, parse_url
from .logs import mask_url
from .passwords import PREFIX, hash_problem


MAX_REQUEST_BYTES = 1 << 20


class ConfigError(ValueError):
    """An invalid configuration; str() is one line naming the key and the problem."""


@dataclass(frozen=True)
class SmppConfig:
    listen: tuple[str, ...] = ("tcp:2775:interface=127.0.0.1",)
    window: int = 100
    enquire_link_s: float = 30.0
    inactivity_s: float = 300.0
    max_pdu_bytes: int = 65536
    bind_timeout_s: float = 30.0
    max_connections: int = 1000            # client connections of this node, all listeners
    max_connections_per_address: int = 50  # from one source address
    max_unbound: int = 200                 # connected but not bound (yet)
    max_unbound_pdu_bytes: int = 512      # the largest PDU before the bind is accepted


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    connect: str
    system_id: str
    password: str = ""
    system_type: str = ""
    bind: str = "transceiver"
    binds: int = 1
    window: int = 100
    response_timeout_s: float = 10.0
    reconnect_max_s: float = 30.0
    enquire_link_s: float = 30.0
    source_addr_ton: int = -1     # TON/NPI set on relayed source addresses; -1 = keep the client's
    source_addr_npi: int = -1
    tps: float = 0.0              # 0 = no limit besides the window
    carriers: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    priority: int = 0
    weight: int = 1
    # operator protocols (issue 18; docs: README "Operator protocols"). `window` defaults
    # to 16 (the gateways' W) when protocol is not "smpp" and the key is not given.
    protocol: str = "smpp"        # smpp | cmpp2 | cmpp3 | sgip | smgp
    sp_id: str = ""               # CMPP Msg_src / SGIP corp id / SMGP: the SP's enterprise code
    service_id: str = ""          # CMPP Service_Id, SGIP ServiceType, SMGP ServiceID
    fee_type: str = ""            # CMPP FeeType "01".."03", SGIP FeeType, SMGP FeeType
    fee_code: str = ""            # fee in fen (CMPP FeeCode, SGIP FeeValue, SMGP FeeCode)
    fee_user_type: int = 2        # CMPP/SGIP/SMGP: who pays (2: the SP)
    msg_src: str = ""             # CMPP Msg_src (default: system_id)
    node_id: int = 0              # SGIP: the SP's node number (1..4294967295)
    sp_listen: str = ""           # SGIP: endpoint where the gateway connects back
    sp_login: str = ""            # SGIP: login the gateway presents there (default system_id)
    sp_password: str = ""         # SGIP: its password (default: password)
    keepalive_tries: int = 3      # non-SMPP: unanswered keepalives (N) before reconnecting


PROTOCOLS = ("smpp", "cmpp2", "cmpp3", "sgip", "smgp")
PROTOCOL_WINDOW = 16              # default `window` of the operator gateways (CMPP's W)
# defaults of keys not given, per operator protocol: the specifications' W and C timers
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "cmpp2": {"window": PROTOCOL_WINDOW, "enquire_link_s": 180.0},
    "cmpp3": {"window": PROTOCOL_WINDOW, "enquire_link_s": 180.0},
    "sgip": {"window": PROTOCOL_WINDOW},
    "smgp": {"window": PROTOCOL_WINDOW, "enquire_link_s": 180.0},
}
# field widths of the wire formats (octets), for the one-line refusals at start
_OPERATOR_WIDTHS = {
    "cmpp2": {"system_id": 6, "sp_id": 6, "msg_src": 6, "service_id": 10, "fee_type": 2,
              "fee_code": 6},
    "cmpp3": {"system_id": 6, "sp_id": 6, "msg_src": 6, "service_id": 10, "fee_type": 2,
              "fee_code": 6},
    "sgip": {"system_id": 16, "password": 16, "sp_id": 5, "service_id": 10, "fee_type": 1,
             "fee_code": 6, "sp_login": 16, "sp_password": 16},
    "smgp": {"system_id": 8, "sp_id": 8, "service_id": 10, "fee_type": 2, "fee_code": 6},
}
_SGIP_ONLY = ("node_id", "sp_listen", "sp_login", "sp_password")
_CMPP_ONLY = ("msg_src",)
_OPERATOR_ONLY = ("sp_id", "service_id", "fee_type", "fee_code")


@dataclass(frozen=True)
class AccountConfig:
    system_id: str
    password: str
    service_codes: tuple[str, ...] = ()
    max_binds: int = 4
    price: int = 5                 # minor units (fen) per part
    tps: float = 0.0               # 0 = unlimited
    burst: int = 0                 # token bucket size; 0 = max(1, tps)
    sender_mode: str = "reject"    # or "prefix"
    sender_max_len: int = 20
    allow_binary: bool = False
    max_parts: int = 10
    filters: tuple[str, ...] = ()  # extra word-list files for this account
    signature: str = ""            # "", "start", "end" or "either": require 【...】 there
    marketing: bool = False        # marketing accounts must carry an unsubscribe text
    upstreams: tuple[str, ...] = ()  # pinned upstream names (empty: any eligible)
    mo_url: str = ""
    low_balance: int = 0           # fen: notice when a charge takes the balance below (0 = off)
    notify_url: str = ""           # URL template of that notice (proxyd.lowbalance)
    max_pending_parts: int = 0     # parts of long messages kept, incomplete (0: [policy]'s)
    max_pending_bytes: int = 0     # octets of those parts kept (0: [policy]'s)

    @property
    def password_is_hashed(self) -> bool:
        return self.password.startswith("scrypt$")


@dataclass(frozen=True)
class StoreConfig:
    url: str = "embedded"
    ca_file: str = ""              # rediss://: PEM CA certificates to verify the server with
    dir: str = "var/store"
    appendfsync: str = "everysec"
    maxmemory: str = "1gb"         # embedded store: memory cap (noeviction: writes fail when full)
    timeout_s: float = 2.0
    pool_size: int = 4
    reservation_max_age_s: float = 120.0
    sweep_interval_s: float = 10.0
    retention_days: int = 90       # journal and daily counters kept this long
    receipt_ttl_s: float = 259200.0  # receipt map and undelivered receipts: 72 h
    lease_parts: int = 1000        # balance taken per lease, in parts (0: no leases)
    lease_ttl_s: float = 30.0      # a lease not renewed for this long goes back (sweeper)
    lease_idle_s: float = 0.5      # a lease unused for this long is given back
    record_delay_s: float = 0.005  # reservations of leased admits are written within this
    optout_cache: bool = True      # opt-out sets kept in memory, current through pub/sub
    outcome_log: str = "var/outcomes"  # node-local write-ahead log of outcomes ("" = none)
    outcome_fsync_s: float = 1.0   # the outcome log is fsynced this often (in a thread)
    replicas_ack: int = 0          # money/journal writes wait for WAIT N replicas (0: none)


@dataclass(frozen=True)
class RelayConfig:
    deadline_s: float = 15.0       # whole budget of one submit, failover included
    queue_wait_s: float = 0.5      # wait for a free upstream window before ESME_RMSGQFUL
    node_id: str = ""              # prefix of message ids; default: derived from host and pid


@dataclass(frozen=True)
class DeliveryConfig:
    window: int = 10               # unanswered deliver_sm per client session
    resp_timeout_s: float = 30.0   # a client that does not answer a deliver_sm: retried
    claim_idle_s: float = 60.0     # deliveries held by a dead node are taken over after this
    max_attempts: int = 50         # then dropped with an error log line
    backoff_max_s: float = 60.0
    dlr_concurrency: int = 20      # HTTP receipt callbacks in flight per node
    dlr_timeout_s: float = 10.0
    dlr_max_attempts: int = 12
    dlr_backoff_s: float = 1.0
    # > 0: a part relayed with registered_delivery whose operator receipt has not come after
    # this many seconds gets proxyd's own receipt, stat EXPIRED err 409 (its state becomes
    # EXPIRED; a late real receipt is still relayed). 0 (the default): wait for ever (TTL).
    expire_after_s: float = 0.0


MAX_GAP = 8     # policy.max_gap: more would let noise bridge unrelated characters


@dataclass(frozen=True)
class PolicyConfig:
    enabled: bool = True           # false: no inline checks at all (benchmarks only)
    filters_dir: str = "conf/filters"
    reassembly_timeout_s: float = 60.0
    max_pending_parts: int = 200   # per account: parts of incomplete long messages kept
    max_pending_bytes: int = 262144  # per account: octets of those parts kept
    unsubscribe_words: tuple[str, ...] = ("T", "TD", "N", "退订", "取消")
    max_gap: int = 2               # content filter: non-Han characters between a term's characters


@dataclass(frozen=True)
class HttpConfig:
    listen: tuple[str, ...] = ()
    max_request_bytes: int = 16384
    # callbacks (dlr-url, mo_url): URL prefixes that may reach loopback, private, link-local
    # and other non-global addresses (e.g. "http://127.0.0.1:8000/"); nothing else may
    callback_allow: tuple[str, ...] = ()
    callback_per_account: int = 5  # callbacks of one account in flight (of dlr_concurrency)
    callback_max_body: int = 65536  # octets of an answer read; more: the call failed
    max_receivers: int = 100       # Kannel `to`: receivers per request, beyond: 400
    header_timeout_s: float = 10.0         # a request (line, headers, body) arrives whole within
    max_connections: int = 1000
    max_connections_per_address: int = 100  # HTTP clients open more, shorter connections


@dataclass(frozen=True)
class AdminConfig:
    listen: tuple[str, ...] = ()
    token: str = ""                # bearer token of the admin listener; required off loopback
    report_max_days: int = 31      # widest range GET /report answers


@dataclass(frozen=True)
class AuthConfig:
    max_failures: int = 5              # per (source address, account): then locked out
    max_failures_per_address: int = 20  # per source address, whatever the account
    lockout_s: float = 300.0           # from the failure that reached a limit
    window_s: float = 900.0            # failures are forgotten this long after the last one
    delay_s: float = 0.25              # delay after the first failure, doubled after each
    max_delay_s: float = 4.0           # the longest delay (also how long a locked one waits)
    hash_threads: int = 2              # threads of the password-verification pool
    max_verifying: int = 16            # verifications queued or running; beyond: refused
    max_verifying_per_address: int = 2  # at a time per source address (max_verifying wait)


@dataclass(frozen=True)
class LogConfig:
    log_content: bool = False
    mask_numbers: bool = True
    refusal_interval_s: float = 60.0       # lines about unauthenticated peers: 1 per address


@dataclass(frozen=True)
class Config:
    smpp: SmppConfig = field(default_factory=SmppConfig)
    upstreams: tuple[UpstreamConfig, ...] = ()
    accounts: tuple[AccountConfig, ...] = ()
    store: StoreConfig = field(default_factory=StoreConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    path: str = ""

    def account(self, system_id: str) -> AccountConfig | None:
        for a in self.accounts:
            if a.system_id == system_id:
                return a
        return None


# --- loading -----------------------------------------------------------------------------

def _coerce(where: str, f: dataclasses.Field, value: Any) -> Any:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if t == "bool":
        if not isinstance(value, bool):
            raise ConfigError("%s: must be true or false, got %r" % (where, value))
        return value
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("%s: must be an integer, got %r" % (where, value))
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("%s: must be a number, got %r" % (where, value))
        return float(value)
    if t == "str":
        if not isinstance(value, str):
            raise ConfigError("%s: must be a string, got %r" % (where, value))
        return value
    if t.startswith("tuple[str"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("%s: must be a list of strings, got %r" % (where, value))
        return tuple(value)
    raise ConfigError("%s: unsupported type %s" % (where, t))  # pragma: no cover


def _build(cls: type, where: str, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError("%s: must be a table, got %r" % (where, table))
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError("%s.%s: unknown key (known: %s)"
                              % (where, key, ", ".join(sorted(fields))))
        kwargs[key] = _coerce("%s.%s" % (where, key), fields[key], value)
    for name, f in fields.items():
        if (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                and name not in kwargs):
            raise ConfigError("%s.%s: required key missing" % (where, name))
    return cls(**kwargs)


def _positive(where: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError("%s: must be >= %s, got %r" % (where, minimum, value))


def _check_caps(section: str, total: int, per_address: int) -> None:
    _positive(section + ".max_connections", total)
    _positive(section + ".max_connections_per_address", per_address)
    if per_address > total:
        raise ConfigError("%s.max_connections_per_address: must be <= %s.max_connections "
                          "(%d), got %d" % (section, section, total, per_address))


def _check_protocol(w: str, u: UpstreamConfig) -> None:
    """The keys of an upstream's wire protocol: widths, and keys of another protocol."""
    p = u.protocol
    if p not in PROTOCOLS:
        raise ConfigError("%s.protocol: must be one of %s, got %r"
                          % (w, ", ".join('"%s"' % x for x in PROTOCOLS), p))
    from .links.factory import available
    if not available(p):
        raise ConfigError("%s.protocol: %r is not built into this version of proxyd" % (w, p))
    _positive(w + ".keepalive_tries", u.keepalive_tries)
    if p == "smpp":
        if len(u.system_id) > 15:
            raise ConfigError("%s.system_id: at most 15 characters" % w)
        if len(u.password) > 8:
            raise ConfigError("%s.password: SMPP 3.4 allows at most 8 characters" % w)
        for key in _OPERATOR_ONLY + _CMPP_ONLY + _SGIP_ONLY:
            if getattr(u, key):
                raise ConfigError("%s.%s: only for the operator protocols (cmpp2, cmpp3, "
                                  "sgip, smgp), not \"smpp\"" % (w, key))
        return
    if u.bind != "transceiver":
        raise ConfigError("%s.bind: SMPP only; %s links always send and receive" % (w, p))
    if u.source_addr_ton >= 0 or u.source_addr_npi >= 0 or u.system_type:
        key = ("source_addr_ton" if u.source_addr_ton >= 0 else "source_addr_npi"
               if u.source_addr_npi >= 0 else "system_type")
        raise ConfigError("%s.%s: SMPP only, not for %r" % (w, key, p))
    if not u.system_id:
        raise ConfigError("%s.system_id: required for %r" % (w, p))
    for key, width in _OPERATOR_WIDTHS[p].items():
        v = getattr(u, key)
        if len(v.encode("utf-8")) > width:
            raise ConfigError("%s.%s: at most %d octets for %r, got %r"
                              % (w, key, width, p, v if key not in ("password", "sp_password")
                                 else "***"))
    for key in ("fee_type", "fee_code"):
        v = getattr(u, key)
        if v and not v.isdigit():
            raise ConfigError("%s.%s: must be digits, got %r" % (w, key, v))
    if not 0 <= u.fee_user_type <= 3:
        raise ConfigError("%s.fee_user_type: must be 0 to 3, got %r" % (w, u.fee_user_type))
    if p.startswith("cmpp") and not u.system_id.isdigit():
        raise ConfigError("%s.system_id: the CMPP SP_Id is 6 digits, got %r" % (w, u.system_id))
    if not p.startswith("cmpp"):
        for key in _CMPP_ONLY:
            if getattr(u, key):
                raise ConfigError("%s.%s: only for protocol \"cmpp2\" or \"cmpp3\"" % (w, key))
    if p == "sgip":
        if not 1 <= u.node_id <= 0xFFFFFFFF:
            raise ConfigError("%s.node_id: required for \"sgip\": the SP's node number, "
                              "1 to 4294967295, got %r" % (w, u.node_id))
        if not u.sp_listen or ":" not in u.sp_listen:
            raise ConfigError("%s.sp_listen: required for \"sgip\": the endpoint string where "
                              "the gateway connects back, e.g. \"tcp:8801\", got %r"
                              % (w, u.sp_listen))
    else:
        for key in _SGIP_ONLY:
            if getattr(u, key):
                raise ConfigError("%s.%s: only for protocol \"sgip\"" % (w, key))


def _protocol_defaults(u: UpstreamConfig, table: dict) -> UpstreamConfig:
    """The operator protocols' own defaults (`PROTOCOL_DEFAULTS`) for keys not given."""
    changes = {k: v for k, v in PROTOCOL_DEFAULTS.get(u.protocol, {}).items()
               if k not in table}
    return dataclasses.replace(u, **changes) if changes else u


def _check(cfg: Config) -> None:
    s = cfg.smpp
    _positive("smpp.window", s.window)
    _positive("smpp.max_pdu_bytes", s.max_pdu_bytes, 64)
    _positive("smpp.enquire_link_s", s.enquire_link_s, 0.01)
    _positive("smpp.inactivity_s", s.inactivity_s, 0.01)
    _positive("smpp.bind_timeout_s", s.bind_timeout_s, 0.01)
    _positive("http.max_request_bytes", cfg.http.max_request_bytes, 256)
    if cfg.http.max_request_bytes > MAX_REQUEST_BYTES:
        raise ConfigError("http.max_request_bytes: must be <= %d (1 MiB), got %r"
                          % (MAX_REQUEST_BYTES, cfg.http.max_request_bytes))
    _positive("http.max_receivers", cfg.http.max_receivers)
    if not 0 <= cfg.policy.max_gap <= MAX_GAP:
        raise ConfigError("policy.max_gap: must be 0 to %d, got %r" % (MAX_GAP, cfg.policy.max_gap))
    _check_caps("smpp", s.max_connections, s.max_connections_per_address)
    _positive("smpp.max_unbound", s.max_unbound)
    if s.max_unbound > s.max_connections:
        raise ConfigError("smpp.max_unbound: must be <= smpp.max_connections (%d), got %d"
                          % (s.max_connections, s.max_unbound))
    _positive("smpp.max_unbound_pdu_bytes", s.max_unbound_pdu_bytes, 64)
    if s.max_unbound_pdu_bytes > s.max_pdu_bytes:
        raise ConfigError("smpp.max_unbound_pdu_bytes: must be <= smpp.max_pdu_bytes (%d), "
                          "got %d" % (s.max_pdu_bytes, s.max_unbound_pdu_bytes))
    h = cfg.http
    _positive("http.header_timeout_s", h.header_timeout_s, 0.01)
    _check_caps("http", h.max_connections, h.max_connections_per_address)
    _positive("log.refusal_interval_s", cfg.log.refusal_interval_s, 0.01)
    names = set()
    for i, u in enumerate(cfg.upstreams):
        w = "upstream[%d]" % i
        if not u.name:
            raise ConfigError("%s.name: must not be empty" % w)
        if u.name in names:
            raise ConfigError("%s.name: duplicate upstream name %r" % (w, u.name))
        names.add(u.name)
        if u.bind not in ("transceiver", "transmitter"):
            raise ConfigError("%s.bind: must be \"transceiver\" or \"transmitter\", got %r"
                              % (w, u.bind))
        _positive(w + ".binds", u.binds)
        _positive(w + ".window", u.window)
        _positive(w + ".response_timeout_s", u.response_timeout_s, 0.01)
        _positive(w + ".reconnect_max_s", u.reconnect_max_s, 0.01)
        _positive(w + ".weight", u.weight, 0)
        _positive(w + ".tps", u.tps, 0)
        for c in u.carriers:
            from .links.routing import known_carrier
            if not known_carrier(c):
                raise ConfigError("%s.carriers: unknown carrier %r (e.g. \"China Mobile\", "
                                  "\"中国联通\", \"telecom\")" % (w, c))
        _check_protocol(w, u)
        if ":" not in u.connect:
            raise ConfigError("%s.connect: must be a Twisted endpoint string such as "
                              "\"tcp:host=127.0.0.1:port=2776\", got %r" % (w, u.connect))
        if u.connect.split(":", 1)[0].strip().lower() == "ssl":
            raise ConfigError("%s.connect: \"ssl:\" client endpoints do not verify the "
                              "operator's certificate; use the verified form "
                              "\"tls:host=HOST:port=PORT\" (with \"trustRoots=DIR\" of CA "
                              "certificates in PEM, else the system's), got %r"
                              % (w, u.connect))
    ids = set()
    code_of: dict[str, str] = {}        # service code -> the account holding it
    for i, a in enumerate(cfg.accounts):
        w = "account[%d]" % i
        if not a.system_id or len(a.system_id) > 15:
            raise ConfigError("%s.system_id: must be 1 to 15 characters" % w)
        if a.system_id in ids:
            raise ConfigError("%s.system_id: duplicate account %r" % (w, a.system_id))
        ids.add(a.system_id)
        if not a.password:
            raise ConfigError("%s.password: must not be empty" % w)
        if a.password.startswith(PREFIX):
            problem = hash_problem(a.password)
            if problem:
                raise ConfigError("%s.password: %s (make one with proxyd-admin "
                                  "hash-password)" % (w, problem))
        if not 1 <= a.sender_max_len <= 20:
            raise ConfigError("%s.sender_max_len: must be 1 to 20 (an SMPP source_addr "
                              "holds at most 20 digits), got %r" % (w, a.sender_max_len))
        for code in a.service_codes:
            if not code.isdigit():
                raise ConfigError("%s.service_codes: %r is not all digits" % (w, code))
            if len(code) > a.sender_max_len:
                raise ConfigError("%s.service_codes: %r is longer than sender_max_len %d"
                                  % (w, code, a.sender_max_len))
            other = code_of.get(code)
            if other is not None and other != a.system_id:
                raise ConfigError("%s.service_codes: %r is also a service code of account "
                                  "%r; accounts %r and %r cannot share it (an MO is "
                                  "routed to its account by it)" % (w, code, other, other, a.system_id))
            code_of[code] = a.system_id
        _positive(w + ".max_binds", a.max_binds)
        _positive(w + ".price", a.price, 0)
        _positive(w + ".tps", a.tps, 0)
        _positive(w + ".burst", a.burst, 0)
        _positive(w + ".max_parts", a.max_parts)
        _positive(w + ".low_balance", a.low_balance, 0)
        _positive(w + ".max_pending_parts", a.max_pending_parts, 0)
        _positive(w + ".max_pending_bytes", a.max_pending_bytes, 0)
        if a.sender_mode not in ("reject", "prefix"):
            raise ConfigError("%s.sender_mode: must be \"reject\" or \"prefix\", got %r"
                              % (w, a.sender_mode))
        if a.sender_mode == "prefix" and not a.service_codes:
            raise ConfigError("%s.sender_mode: \"prefix\" needs at least one service code" % w)
        if a.signature not in ("", "start", "end", "either"):
            raise ConfigError("%s.signature: must be \"\", \"start\", \"end\" or \"either\"" % w)
        for name in a.upstreams:
            if name not in names:
                raise ConfigError("%s.upstreams: no upstream named %r" % (w, name))
    if cfg.store.appendfsync not in ("everysec", "always", "no"):
        raise ConfigError("store.appendfsync: must be \"everysec\", \"always\" or \"no\"")
    _positive("store.timeout_s", cfg.store.timeout_s, 0.01)
    if not re.fullmatch(r"[1-9][0-9]*(kb|mb|gb)?", cfg.store.maxmemory.lower()):
        raise ConfigError("store.maxmemory: must be a size such as \"512mb\" or \"2gb\", "
                          "got %r" % cfg.store.maxmemory)
    _positive("store.pool_size", cfg.store.pool_size)
    _positive("store.outcome_fsync_s", cfg.store.outcome_fsync_s, 0.01)
    _positive("store.replicas_ack", cfg.store.replicas_ack, 0)
    if cfg.store.replicas_ack and cfg.store.url in ("embedded", "none"):
        raise ConfigError("store.replicas_ack: needs a store with replicas (a redis:// or "
                          "sentinel:// url), not %r" % cfg.store.url)
    _positive("store.retention_days", cfg.store.retention_days)
    _positive("store.receipt_ttl_s", cfg.store.receipt_ttl_s, 60)
    if not (cfg.store.url in ("embedded", "none") or cfg.store.url.startswith(
            ("redis://", "rediss://", "unix://", "sentinel://"))):
        raise ConfigError("store.url: must be \"embedded\", \"none\", redis://, rediss://, "
                          "unix:// or sentinel://, got %r" % mask_url(cfg.store.url))
    if cfg.store.ca_file:
        if not cfg.store.url.startswith("rediss://"):
            raise ConfigError("store.ca_file: only used with a rediss:// url")
        if not os.path.isfile(cfg.store.ca_file):
            raise ConfigError("store.ca_file: no such file %r" % cfg.store.ca_file)
    _check_admin(cfg.admin)
    _positive("relay.deadline_s", cfg.relay.deadline_s, 0.01)
    _positive("policy.max_pending_parts", cfg.policy.max_pending_parts)
    _positive("policy.max_pending_bytes", cfg.policy.max_pending_bytes)
    d = cfg.delivery
    _positive("delivery.window", d.window)
    _positive("delivery.resp_timeout_s", d.resp_timeout_s, 0.01)
    _positive("delivery.claim_idle_s", d.claim_idle_s, 0.01)
    _positive("delivery.max_attempts", d.max_attempts)
    _positive("delivery.dlr_concurrency", d.dlr_concurrency)
    _positive("delivery.dlr_timeout_s", d.dlr_timeout_s, 0.01)
    _positive("delivery.dlr_max_attempts", d.dlr_max_attempts)
    _positive("delivery.expire_after_s", d.expire_after_s, 0)
    h = cfg.http
    _positive("http.callback_per_account", h.callback_per_account)
    _positive("http.callback_max_body", h.callback_max_body)
    for i, p in enumerate(h.callback_allow):
        scheme, sep, rest = p.partition("://")
        if scheme.lower() not in ("http", "https") or not sep or not rest.strip("/"):
            raise ConfigError("http.callback_allow[%d]: %r is not an http(s) URL prefix with "
                              "a host, e.g. \"http://127.0.0.1:8000/\"" % (i, p))
    for i, a in enumerate(cfg.accounts):
        if a.mo_url:
            try:
                parse_url(a.mo_url)
            except BadUrl as e:
                raise ConfigError("account[%d].mo_url: not a callable URL (%s): %r"
                                  % (i, e, a.mo_url)) from None
        if a.notify_url:
            try:
                parse_url(a.notify_url)
            except BadUrl as e:
                raise ConfigError("account[%d].notify_url: not a callable URL (%s): %r"
                                  % (i, e, mask_url(a.notify_url))) from None
    _positive("relay.queue_wait_s", cfg.relay.queue_wait_s, 0)
    a = cfg.auth
    _positive("auth.max_failures", a.max_failures)
    _positive("auth.max_failures_per_address", a.max_failures_per_address)
    _positive("auth.lockout_s", a.lockout_s, 0.01)
    _positive("auth.window_s", a.window_s, 0.01)
    _positive("auth.delay_s", a.delay_s, 0)
    _positive("auth.max_delay_s", a.max_delay_s, a.delay_s)
    _positive("auth.hash_threads", a.hash_threads)
    _positive("auth.max_verifying", a.max_verifying)
    _positive("auth.max_verifying_per_address", a.max_verifying_per_address)


ADMIN_TOKEN_MIN = 16


def _split_endpoint(text: str) -> list[str]:
    """The fields of a Twisted endpoint string (``\\:`` is an escaped colon)."""
    fields, cur, i = [], "", 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur += text[i + 1]
            i += 2
            continue
        if c == ":":
            fields.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    return fields + [cur]


def listens_on_loopback(endpoint: str) -> bool:
    """True if a server endpoint string only accepts local peers: a unix socket, or a
    tcp/ssl listener with ``interface=`` a loopback address (or "localhost"). A listener
    without ``interface=`` listens on every interface."""
    import ipaddress
    fields = _split_endpoint(endpoint.strip())
    kind = fields[0].lower() if len(fields) > 1 else "tcp"
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for f in fields[1:]:
        key, eq, value = f.partition("=")
        if eq and key == "interface":
            if value.lower() == "localhost":
                return True
            try:
                return ipaddress.ip_address(value).is_loopback
            except ValueError:
                return False
    return False


def _check_admin(a: AdminConfig) -> None:
    _positive("admin.report_max_days", a.report_max_days)
    if a.token and len(a.token) < ADMIN_TOKEN_MIN:
        raise ConfigError("admin.token: at least %d characters" % ADMIN_TOKEN_MIN)
    if a.token and any(c.isspace() for c in a.token):
        raise ConfigError("admin.token: must not contain spaces")
    open_to = [e for e in a.listen if not listens_on_loopback(e)]
    if open_to and not a.token:
        raise ConfigError("admin.token: required when the admin listener is not on loopback "
                          "(%s); set a token, or listen with interface=127.0.0.1"
                          % ", ".join(open_to))


SECTIONS = {"smpp": SmppConfig, "store": StoreConfig, "relay": RelayConfig,
            "delivery": DeliveryConfig,
            "policy": PolicyConfig, "http": HttpConfig, "admin": AdminConfig,
            "auth": AuthConfig, "log": LogConfig}


def parse(data: dict, path: str = "") -> Config:
    """Build and validate a Config from a parsed TOML document."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            kwargs[key] = _build(SECTIONS[key], key, value)
        elif key == "upstream":
            if not isinstance(value, list):
                raise ConfigError("upstream: must be an array of tables ([[upstream]])")
            kwargs["upstreams"] = tuple(
                _protocol_defaults(_build(UpstreamConfig, "upstream[%d]" % i, t), t)
                for i, t in enumerate(value))
        elif key == "account":
            if not isinstance(value, list):
                raise ConfigError("account: must be an array of tables ([[account]])")
            kwargs["accounts"] = tuple(_build(AccountConfig, "account[%d]" % i, t)
                                       for i, t in enumerate(value))
        else:
            raise ConfigError("%s: unknown section (known: %s)" % (
                key, ", ".join(sorted(list(SECTIONS) + ["upstream", "account"]))))
    cfg = Config(path=path, **kwargs)
    _check(cfg)
    return cfg


def load(path: str) -> Config:
    """Read and validate a TOML config file; relative paths in it are taken from the cwd."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("%s: config file not found" % path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: not valid TOML: %s" % (path, e)) from None
    return parse(data, os.path.abspath(path))
