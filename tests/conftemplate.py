"""The one proxyd config template of the tests: `config_text` renders the common TOML (an
[smpp] listener on 127.0.0.1, one simulator upstream "sim", one account "acme") with each
test's overrides given as small dicts.

    config_text(port, sim_port, relay={"queue_wait_s": 0.2},
                upstream={"binds": 2}, account={"max_binds": 2})

A key set to None in an override drops that key of the default (`upstream={"password": None}`:
no password line). Tables are rendered in this order: [smpp], the other sections in the order
given, the [[upstream]] tables, the [[account]] tables, then `extra` verbatim.
"""
from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any

LOCAL = "127.0.0.1"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, PurePath):
        v = str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError("no TOML form for %r" % (v,))


def merged(base: dict, over: dict | None) -> dict:
    """`base` updated with `over`; a None value in `over` drops the key."""
    out = dict(base)
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def table(header: str, keys: dict) -> str:
    return "\n".join([header] + ["%s = %s" % (k, toml_value(v)) for k, v in keys.items()])


def listen(port: int) -> list[str]:
    """The `listen` value of a local TCP listener."""
    return ["tcp:%d:interface=%s" % (port, LOCAL)]


def sim_upstream(port: int, **over: Any) -> dict:
    """The [[upstream]] of a simulator on `port` (name "sim"), with overrides."""
    return merged({"name": "sim", "connect": "tcp:host=%s:port=%d" % (LOCAL, port),
                   "system_id": "proxyd", "password": "secret"}, over)


ACME = {"system_id": "acme", "password": "s3cret", "service_codes": ["10690001"]}


def config_text(port: int | None = None, sim: int | None = None, *,
                smpp: dict | None = None,
                upstream: dict | None = None, upstreams: list[dict] = (),
                account: dict | None = None, accounts: list[dict] = (),
                extra: str = "", **sections: dict) -> str:
    """The TOML of a proxyd config.

    port       the [smpp] listener on 127.0.0.1 (None: no [smpp] section)
    sim        the port of the simulator upstream "sim" (None: no such upstream)
    smpp       overrides of [smpp] (e.g. {"window": 100}, or a "listen" of its own)
    upstream   overrides of the simulator upstream (see `sim_upstream`)
    upstreams  more [[upstream]] tables after it, whole (build them with `sim_upstream`)
    account    overrides of the account "acme" (`ACME`)
    accounts   more [[account]] tables after acme, whole
    sections   other tables by name, e.g. relay={"queue_wait_s": 0.2}, store={"dir": path}
    extra      TOML appended as is
    """
    if upstream is not None and sim is None:
        raise TypeError("upstream overrides need the simulator port `sim`")
    parts = []
    if port is not None:
        parts.append(table("[smpp]", merged({"listen": listen(port)}, smpp)))
    for name, keys in sections.items():
        parts.append(table("[%s]" % name, merged({}, keys)))
    ups = ([sim_upstream(sim, **(upstream or {}))] if sim is not None else []) + list(upstreams)
    parts += [table("[[upstream]]", u) for u in ups]
    parts += [table("[[account]]", a) for a in [merged(ACME, account), *accounts]]
    return "\n\n".join(parts) + "\n" + extra
