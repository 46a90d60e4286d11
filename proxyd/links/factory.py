"""Building the operator link of an `[[upstream]]` by its `protocol`.

`REGISTRY` maps each protocol name to the class implementing it, as "module:Class" (imported
when first used, so config checking stays light). A new wire protocol plugs in with one line
here; the class is constructed as ``cls(cfg, reactor, on_deliver, queue_wait_s=...)`` and is a
Twisted service that implements `proxyd.links.OperatorLink` (see `proxyd.links.link.Link`).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

REGISTRY: dict[str, str] = {
    "smpp": "proxyd.links.smpp:Upstream",
    "cmpp3": "proxyd.links.cmpp.link:Cmpp3Link",
    "cmpp2": "proxyd.links.cmpp.link:Cmpp2Link",
    "smgp": "proxyd.links.smgp.link:SmgpLink",
    "sgip": "proxyd.links.sgip.link:SgipLink",
}


def available(protocol: str) -> bool:
    """True if this build has a link for `protocol`."""
    return protocol in REGISTRY


def link_class(protocol: str) -> type:
    module, _, name = REGISTRY[protocol].partition(":")
    return getattr(importlib.import_module(module), name)


def build_link(cfg: Any, reactor: Any, on_deliver: Callable[..., None],
               queue_wait_s: float = 0.5) -> Any:
    """The link service of one `UpstreamConfig` (not yet started)."""
    return link_class(cfg.protocol)(cfg, reactor, on_deliver, queue_wait_s=queue_wait_s)
