"""The ledger's Lua scripts, read from the ``.lua`` files of this package.

Every script is ``prelude.lua`` (keys, arguments, and the helpers that read each value once
and write it once: balance, leases, counters, journal, reservations, `finish()`, `settle()`)
followed by its own body:

    batch.lua        the per-turn operations of one account (see `proxyd.store.ledger.ops`)
    topup.lua, adjust.lua, refund_all.lua    account operations
    sweep.lua        refunds of reservations whose outcome never came; expired leases back
    balance.lua      the balance: free + leases
    hold.lua         a part of a client's long message kept, the first one reserving the
                     whole message (`proxyd.gate.reassembly`; its own three KEYS come
                     after the account's)

KEYS (`keys.account_keys`): bal, res, stats(day), journal(day), jhead, optout, lease, calls.
ARGV (`keys.script_call`): account, now (ms), day, retention (s, 0 = keep), then the
script's own from ARGV[5].
"""
from __future__ import annotations

import hashlib
from importlib import resources

NAMES = ("batch", "topup", "adjust", "refund_all", "sweep", "balance", "hold")


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name + ".lua").read_text(encoding="utf-8")


def load() -> dict[str, str]:
    """name -> the script's source (the newlines before each part keep the source, and so
    the SHA1 a server caches it by, what it was when the scripts were Python strings)."""
    prelude = _read("prelude")
    return {name: "\n%s\n%s" % (prelude, _read(name)) for name in NAMES}


SCRIPTS: dict[str, str] = load()
SHAS: dict[str, str] = {name: hashlib.sha1(src.encode("utf-8")).hexdigest()
                        for name, src in SCRIPTS.items()}
