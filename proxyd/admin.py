"""proxyd-admin: balances and passwords from the command line.

    proxyd-admin --config conf/proxyd.toml topup ACCOUNT AMOUNT [--note TEXT]
    proxyd-admin --config conf/proxyd.toml balance ACCOUNT
    proxyd-admin --config conf/proxyd.toml ledger ACCOUNT [--limit N]
    proxyd-admin --config conf/proxyd.toml adjust ACCOUNT DELTA --note TEXT
    proxyd-admin --config conf/proxyd.toml refund-all ACCOUNT --note TEXT
    proxyd-admin --config conf/proxyd.toml optout add|remove|list ACCOUNT [NUMBER]
    proxyd-admin --config conf/proxyd.toml verify ACCOUNT [--date D]
    proxyd-admin --config conf/proxyd.toml trace MESSAGE_ID [--account A] [--date D]
    proxyd-admin --config conf/proxyd.toml trace --account A --to NUMBER [--date D]
    proxyd-admin --config conf/proxyd.toml report ACCOUNT [--date D | --from D --to D] [--json]
    proxyd-admin --config conf/proxyd.toml export [--date D] [--account A] [--output FILE]
    proxyd-admin hash-password            (password from stdin, or asked for on a terminal)
    proxyd-admin init DIR [--force]       (writes the shipped conf files into DIR)
    proxyd-admin --config conf/proxyd.toml backup FILE   (a snapshot of the store)
    proxyd-admin --config conf/proxyd.toml restore FILE  (embedded store, nodes stopped)
    proxyd-admin plugin-cache             (refreshes Twisted's plugin cache, see below)

Days are YYYYMMDD or YYYY-MM-DD, local time, default today. verify recomputes the hash chain
of an account's journal day and names the first record where it breaks; report prints the
figures of issue 8 and checks its identities (and the chain, and the daily counters against
the journal); export writes a day's journal as JSON lines (one record a line, with its d and
h so the chain can be checked from the file). verify and report exit 1 when a check fails.

Amounts are integers in minor units (fen). It talks to the store of the config with the
synchronous ``valkey`` client and the same Lua scripts as the daemon (`proxyd.store.ledger`).
For the embedded store it connects to ``<store.dir>/valkey.sock``; if no server runs there it
starts one for the duration of the command (see `proxyd.store.embedded.start_blocking`).

`init` writes the files proxyd ships (`proxyd.shipped`: proxyd.toml, filters/,
proxyd.service, monitoring/) into DIR; it refuses to overwrite a file without --force.
`plugin-cache` rewrites Twisted's ``dropin.cache`` for the plugin directories proxyd's
twistd plugin is in: run it once after installing or upgrading, as the user who owns the
installation, so that a daemon on a read-only site-packages does not rescan (and try to
write) it at every start.

Exit status: 0 done, 1 the store failed or refused (e.g. the adjustment would make the balance
negative) or a check failed (verify, report), 2 bad arguments, bad config or unknown account.
"""
from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

from proxyd.config import Config, ConfigError, load
from proxyd.passwords import hash_password
from proxyd.store import journal as J
from proxyd.store import ledger as L
from proxyd.store.embedded import EmbeddedServerError, ping_blocking, socket_path_for, \
    start_blocking

DEFAULT_CONFIG = "conf/proxyd.toml"


class UsageError(Exception):
    """Bad arguments, bad config, unknown account: exit status 2."""


class Failed(Exception):
    """The operation could not be done: exit status 1."""


def _positive_int(text: str) -> int:
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an integer amount in minor units (fen), "
                                         "got %r" % text) from None
    if n <= 0:
        raise argparse.ArgumentTypeError("must be > 0, got %d" % n)
    return n


def _signed_int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an integer (fen), got %r" % text) from None


def _day(text: str) -> str:
    t = text.replace("-", "")
    try:
        datetime.datetime.strptime(t, "%Y%m%d")
    except ValueError:
        raise argparse.ArgumentTypeError("must be a day YYYYMMDD or YYYY-MM-DD, got %r"
                                         % text) from None
    return t


def _days(first: str, last: str) -> list[str]:
    d = datetime.datetime.strptime(first, "%Y%m%d").date()
    end = datetime.datetime.strptime(last, "%Y%m%d").date()
    if end < d:
        raise UsageError("--to %s is before --from %s" % (last, first))
    out = []
    while d <= end:
        out.append(d.strftime("%Y%m%d"))
        d += datetime.timedelta(days=1)
    return out


def _next_day(day: str) -> str:
    return (datetime.datetime.strptime(day, "%Y%m%d").date()
            + datetime.timedelta(days=1)).strftime("%Y%m%d")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit status 2, as argparse does, but raised
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="proxyd-admin", description="proxyd balances and passwords")
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH",
                   help="config file (default: %(default)s)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    s = sub.add_parser("topup", help="add to an account's balance")
    s.add_argument("account")
    s.add_argument("amount", type=_positive_int, help="minor units (fen), > 0")
    s.add_argument("--note", default="")
    s = sub.add_parser("balance", help="print an account's balance in minor units")
    s.add_argument("account")
    s = sub.add_parser("ledger", help="print an account's last ledger entries")
    s.add_argument("account")
    s.add_argument("--limit", type=_positive_int, default=20)
    s = sub.add_parser("adjust", help="add a signed correction to a balance")
    s.add_argument("account")
    s.add_argument("delta", type=_signed_int)
    s.add_argument("--note", required=True)
    s = sub.add_parser("refund-all", help="take an account's whole balance out (to 0)")
    s.add_argument("account")
    s.add_argument("--note", required=True)
    s = sub.add_parser("optout", help="an account's opt-out list: add, remove, list")
    s.add_argument("action", choices=("add", "remove", "list"))
    s.add_argument("account")
    s.add_argument("number", nargs="?", default=None)
    s = sub.add_parser("verify", help="recompute an account's journal hash chain for a day")
    s.add_argument("account")
    s.add_argument("--date", type=_day, default=None)
    s = sub.add_parser("trace", help="every journal event of a message, in time order")
    s.add_argument("message_id", nargs="?", default=None)
    s.add_argument("--account", default=None)
    s.add_argument("--to", dest="number", default=None, metavar="NUMBER")
    s.add_argument("--date", type=_day, default=None)
    s = sub.add_parser("report", help="an account's reconciliation for a day or days")
    s.add_argument("account")
    s.add_argument("--date", type=_day, default=None)
    s.add_argument("--from", dest="first", type=_day, default=None)
    s.add_argument("--to", dest="last", type=_day, default=None)
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("export", help="a day's journal as JSON lines")
    s.add_argument("--date", type=_day, default=None)
    s.add_argument("--account", default=None)
    s.add_argument("--output", default="-", metavar="FILE")
    sub.add_parser("hash-password", help="print the scrypt hash of a password")
    s = sub.add_parser("init", help="write the shipped config, filters, systemd unit and "
                                    "monitoring files into DIR")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--force", action="store_true", help="overwrite files that exist")
    sub.add_parser("plugin-cache", help="refresh Twisted's plugin cache (after an install)")
    s = sub.add_parser("backup", help="a consistent snapshot of the store into FILE")
    s.add_argument("file", metavar="FILE")
    s = sub.add_parser("restore", help="replace the embedded store's data with a backup "
                                       "(every node stopped)")
    s.add_argument("file", metavar="FILE")
    s = sub.add_parser("reload", help="make a running proxyd re-read its config (SIGHUP)")
    s.add_argument("--pidfile", default="var/proxyd.pid", metavar="PATH",
                   help="twistd pid file of the node (default: var/proxyd.pid)")
    return p


def _reload(pidfile: str, out: Any) -> int:
    """SIGHUP to the node named by its twistd pid file."""
    import signal
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        raise UsageError("cannot read a pid from %s: %s" % (pidfile, e)) from None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        raise Failed("cannot signal proxyd (pid %d): %s" % (pid, e)) from None
    print("sent SIGHUP to proxyd (pid %d); the log says whether the reload applied" % pid,
          file=out)
    return 0


# --- the store ------------------------------------------------------------------------------

def open_store(cfg: Config) -> tuple[Any, Callable[[], None]]:
    """(a valkey client for the config's store, a function closing it)."""
    import valkey

    st = cfg.store
    stop: Callable[[], None] = lambda: None
    try:
        if st.url == "embedded":
            path = socket_path_for(st.dir)
            if not ping_blocking(path):
                path, stop = start_blocking(st.dir, st.appendfsync, maxmemory=st.maxmemory)
            client = valkey.Valkey(unix_socket_path=path, socket_timeout=st.timeout_s,
                                   socket_connect_timeout=st.timeout_s,
                                   decode_responses=True)
        else:
            tls: dict[str, Any] = {}
            if st.url.startswith("rediss://"):
                # as the daemon does (proxyd.store.tls): chain and host name verified
                tls = dict(ssl_cert_reqs="required", ssl_check_hostname=True,
                           ssl_ca_certs=st.ca_file or None)
            client = valkey.Valkey.from_url(st.url, socket_timeout=st.timeout_s,
                                            socket_connect_timeout=st.timeout_s,
                                            decode_responses=True, **tls)
    except EmbeddedServerError as e:
        raise Failed(str(e)) from None

    def close() -> None:
        try:
            client.close()
        finally:
            stop()
    return client, close


def run_script(client: Any, name: str, account: str, *extra: Any,
               retention_days: int = L.RETENTION_DAYS) -> Any:
    """Run a ledger script (EVALSHA, loading it on NOSCRIPT)."""
    import valkey

    now = time.time()
    keys, args = L.script_call(account, now, L.day_of(now), *extra,
                               retention_days=retention_days)
    try:
        return client.evalsha(L.SHAS[name], len(keys), *keys, *args)
    except valkey.exceptions.NoScriptError:
        client.script_load(L.SCRIPTS[name])
        return client.evalsha(L.SHAS[name], len(keys), *keys, *args)


def journal_days(client: Any, account: str) -> list[str]:
    """The days that have a journal for `account`, oldest first."""
    return sorted(client.hkeys(L.jhead_key(account)))


def read_day(client: Any, account: str, day: str) -> list[J.Record]:
    """One day's journal of one account, oldest first."""
    out: list[J.Record] = []
    start = "-"
    while True:
        reply = client.xrange(L.journal_key(account, day), start, "+", count=10000)
        recs = J.records_from_stream(reply, account, day)
        out += recs
        if len(reply) < 10000:          # stream entries (an entry holds one or more records)
            return out
        start = "(" + recs[-1].id


def ledger_entries(client: Any, account: str, limit: int) -> list[dict[str, str]]:
    """The last `limit` money records of the journal, newest first."""
    out: list[dict[str, str]] = []
    for day in reversed(journal_days(client, account)):
        end = "+"
        while len(out) < limit:
            reply = client.xrevrange(L.journal_key(account, day), end, "-", count=500)
            recs = J.records_from_stream(reply, account, day, reverse=True)
            out += [L.money_entry(r) for r in recs if r.event in J.MONEY_EVENTS]
            if len(reply) < 500:
                break
            end = "(" + recs[-1].id
        if len(out) >= limit:
            break
    return out[:limit]


def _fmt_time(ms: str) -> str:
    try:
        t = int(ms) / 1000.0
    except ValueError:
        return ms
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + ".%03d" % (int(ms) % 1000)


def _today() -> str:
    return L.day_of(time.time())


def verify_day(client: Any, account: str, day: str) -> J.Break | None:
    return J.verify(account, read_day(client, account, day),
                    client.hget(L.jhead_key(account), day))


def _record_line(r: J.Record) -> str:
    return "\t".join((_fmt_time(str(r.ts)), r.account, r.msg_id or "-", r.event,
                      str(r.amount), "balance=%d" % r.balance_after, r.note))


def _journal_command(args: argparse.Namespace, cfg: Config, client: Any, out: Any) -> int:
    accounts = [a.system_id for a in cfg.accounts]
    if args.command == "verify":
        day = args.date or _today()
        recs = read_day(client, args.account, day)
        brk = J.verify(args.account, recs, client.hget(L.jhead_key(args.account), day))
        n = len(recs)
        if brk is not None:
            print("%s %s: BROKEN at %s" % (args.account, day, brk), file=out)
            return 1
        print("%s %s: %d records, chain intact" % (args.account, day, n), file=out)
        return 0
    if args.command == "trace":
        if args.message_id is None and (args.number is None or args.account is None):
            raise UsageError("trace needs a MESSAGE_ID, or --account and --to NUMBER")
        accts = [args.account] if args.account else accounts
        found: list[J.Record] = []
        for acct in accts:
            days = [args.date] if args.date else journal_days(client, acct)
            if args.date:  # receipts may come on the next day
                days.append(_next_day(args.date))
            ids: set[str] | None = None
            if args.message_id is not None:
                ids = {args.message_id}
            recs_by_day = {}
            for day in days:
                recs_by_day[day] = read_day(client, acct, day)
            if args.number is not None:
                from proxyd.policy.optout import normalise_number
                want = "to=" + normalise_number(args.number)
                ids = {r.msg_id for recs in recs_by_day.values() for r in recs
                       if r.msg_id and want in r.note.split(" ")}
                if args.message_id is not None:
                    ids &= {args.message_id}
            for recs in recs_by_day.values():
                found += J.trace(recs, ids)
            if found and args.message_id is not None:
                break
        if not found:
            print("no journal records found", file=sys.stderr)
            return 1
        for r in J.trace(found):
            print(_record_line(r), file=out)
        return 0
    if args.command == "report":
        if args.date and (args.first or args.last):
            raise UsageError("give --date or --from/--to, not both")
        first = args.first or args.date or _today()
        days = _days(first, args.last or args.date or first)
        rep = report(client, cfg.account(args.account), days)
        if args.json:
            print(json.dumps(rep.as_dict(), ensure_ascii=False, indent=1), file=out)
        else:
            print(J.format_report(rep), file=out)
        return 0 if rep.ok else 1
    if args.command == "export":
        day = args.date or _today()
        accts = [args.account] if args.account else accounts
        f = out if args.output == "-" else open(args.output, "w", encoding="utf-8")
        try:
            n = 0
            for acct in accts:
                for r in read_day(client, acct, day):
                    f.write(json.dumps(r.as_dict() | {"d": r.d}, ensure_ascii=False) + "\n")
                    n += 1
        finally:
            if f is not out:
                f.close()
        if args.output != "-":
            print("%d records of %s written to %s" % (n, day, args.output), file=out)
        return 0
    raise UsageError("unknown command")  # pragma: no cover


def report(client: Any, account: Any, days: list[str]) -> J.Report:
    """The reconciliation of `days` for an AccountConfig."""
    acct = account.system_id
    records = {d: read_day(client, acct, d) for d in days}
    stats = {d: {k: int(v) for k, v in client.hgetall(L.stats_key(acct, d)).items()}
             for d in days}
    heads = {d: client.hget(L.jhead_key(acct), d) for d in days}
    opened = {k: int(v.split(":")[0]) for k, v in client.hgetall(
        L.reservations_key(acct)).items()}
    later = set()
    nxt = _next_day(days[-1])
    if nxt <= _today():
        later = {r.msg_id for r in read_day(client, acct, nxt)
                 if r.event in ("committed", "refunded")}
    return J.build_report(acct, account.price, days, records, stats, opened, later, heads)


def _store_command(args: argparse.Namespace, out: Any) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if args.command in ("trace", "export"):
        if args.account is not None and cfg.account(args.account) is None:
            raise UsageError("unknown account %r" % args.account)
        import valkey

        client, close = open_store(cfg)
        try:
            return _journal_command(args, cfg, client, out)
        except (valkey.exceptions.ConnectionError, valkey.exceptions.TimeoutError) as e:
            raise Failed("store unavailable: %s" % e) from None
        except valkey.exceptions.ResponseError as e:
            raise Failed("store error: %s" % e) from None
        finally:
            close()
    if cfg.account(args.account) is None:
        known = ", ".join(a.system_id for a in cfg.accounts) or "none"
        raise UsageError("unknown account %r (accounts in %s: %s)"
                         % (args.account, args.config, known))
    import valkey

    client, close = open_store(cfg)
    keep = getattr(cfg.store, "retention_days", L.RETENTION_DAYS)
    try:
        acct = args.account
        if args.command == "topup":
            print(int(run_script(client, "topup", acct, args.amount, args.note,
                                 retention_days=keep)), file=out)
        elif args.command == "balance":
            print(int(run_script(client, "balance", acct)), file=out)
        elif args.command == "ledger":
            for e in reversed(ledger_entries(client, acct, args.limit)):  # oldest first
                print("\t".join((_fmt_time(e["time"]), e["op"], e["amount"],
                                 "balance=" + e["balance_after"], e["msg_id"], e["note"])),
                      file=out)
        elif args.command == "adjust":
            code, bal = run_script(client, "adjust", acct, args.delta, args.note,
                                   retention_days=keep)
            if int(code) != 0:
                raise Failed("balance %d: an adjustment of %d would make it negative"
                             % (int(bal), args.delta))
            print(int(bal), file=out)
        elif args.command == "optout":
            from proxyd.policy.optout import normalise_number
            from proxyd.store.optout import CHANNEL, change_message, optout_key

            key = optout_key(acct)
            if args.action == "list":
                for n in sorted(client.smembers(key)):
                    print(n, file=out)
            else:
                if not args.number or not normalise_number(args.number):
                    raise UsageError("optout %s needs a NUMBER" % args.action)
                number = normalise_number(args.number)
                # the change and its notice to every node's in-memory copy, atomically
                pipe = client.pipeline(transaction=True)
                if args.action == "add":
                    pipe.sadd(key, number)
                else:
                    pipe.srem(key, number)
                pipe.publish(CHANNEL, change_message(acct, "+" if args.action == "add"
                                                     else "-", number))
                pipe.execute()
                print(number, file=out)
        elif args.command == "refund-all":
            print(int(run_script(client, "refund_all", acct, args.note,
                                 retention_days=keep)), file=out)
        elif args.command in ("verify", "report"):
            return _journal_command(args, cfg, client, out)
        return 0
    except (valkey.exceptions.ConnectionError, valkey.exceptions.TimeoutError) as e:
        raise Failed("store unavailable: %s" % e) from None
    except valkey.exceptions.ResponseError as e:
        raise Failed("store error: %s" % e) from None
    finally:
        close()


def _init(target: str, force: bool, out: Any) -> int:
    from proxyd import shipped
    try:
        written = shipped.init(target, force=force)
    except shipped.InitError as e:
        raise UsageError(str(e)) from None
    except FileNotFoundError as e:
        raise Failed(str(e)) from None
    print("wrote %d files into %s (start with %s)" % (
        len(written), target, os.path.join(target, "proxyd.toml")), file=out)
    return 0


def _backup(config: str, target: str, out: Any) -> int:
    import valkey

    from proxyd.backup import BackupError, backup
    try:
        cfg = load(config)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if cfg.store.url == "none":
        raise UsageError("[store] url is \"none\": there is no store to back up")
    client, close = open_store(cfg)
    try:
        src, size = backup(client, target)
    except BackupError as e:
        raise Failed(str(e)) from None
    except (valkey.exceptions.ConnectionError, valkey.exceptions.TimeoutError) as e:
        raise Failed("store unavailable: %s" % e) from None
    except valkey.exceptions.ResponseError as e:
        raise Failed("store error: %s" % e) from None
    finally:
        close()
    print("wrote %s (%d bytes, a snapshot of %s)" % (target, size, src), file=out)
    return 0


def _restore(config: str, snapshot: str, out: Any) -> int:
    from proxyd.backup import BackupError, restore_embedded
    try:
        cfg = load(config)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    st = cfg.store
    if st.url != "embedded":
        raise UsageError("restore works on the embedded store only ([store] url = "
                         "\"embedded\"); restore a server of your own with its tools")
    try:
        keys, moved = restore_embedded(st.dir, snapshot, st.appendfsync, st.maxmemory)
    except (BackupError, EmbeddedServerError) as e:
        raise Failed(str(e)) from None
    print("restored %d keys into %s%s" % (keys, st.dir, (
        "; the data before is kept in %s" % moved) if moved else ""), file=out)
    return 0


def _plugin_cache(out: Any) -> int:
    from proxyd.shipped import PLUGINS, scan_plugins
    names, failures, searched = scan_plugins()
    missing = [n for n in PLUGINS if n not in names]
    if missing:
        raise Failed("twistd plugins not found: %s (searched %s)" % (
            ", ".join(missing), ", ".join(searched)))
    for line in failures:
        print("warning: %s" % line, file=out)
    print("twistd plugins: %s; cache %s" % (
        ", ".join(names), "not written (see above)" if failures else "up to date"), file=out)
    return 1 if failures else 0


def _hash_password(out: Any) -> int:
    if sys.stdin is not None and sys.stdin.isatty():
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != pw:
            raise UsageError("the passwords differ")
    else:
        pw = sys.stdin.readline().rstrip("\r\n") if sys.stdin is not None else ""
    if not pw:
        raise UsageError("empty password")
    print(hash_password(pw), file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the proxyd-admin console script; returns the exit status."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help
            return int(e.code or 0)
        if args.command == "hash-password":
            return _hash_password(sys.stdout)
        if args.command == "reload":
            return _reload(args.pidfile, sys.stdout)
        if args.command == "init":
            return _init(args.dir, args.force, sys.stdout)
        if args.command == "plugin-cache":
            return _plugin_cache(sys.stdout)
        if args.command == "backup":
            return _backup(args.config, args.file, sys.stdout)
        if args.command == "restore":
            return _restore(args.config, args.file, sys.stdout)
        return _store_command(args, sys.stdout)
    except UsageError as e:
        print("proxyd-admin: %s" % e, file=sys.stderr)
        return 2
    except Failed as e:
        print("proxyd-admin: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
