"""Callback targets (dlr-url, mo_url): is a URL well formed, and may proxyd call it? Pure.

Every callback target is untrusted: a client names its dlr-url, an account's mo_url is a
template filled with an MO's text. `parse_url` refuses what cannot be called (a scheme other
than http/https, no host, a bad port, spaces or control characters, non-ASCII); `allowed_by`
says whether the URL starts with one of the `[http] callback_allow` prefixes; `public`
says whether an address may be called without such a prefix: only global unicast addresses
(never loopback, RFC 1918 private, IPv6 ULA, link-local, multicast, unspecified, shared
100.64/10, documentation, reserved, or an IPv4-mapped form of any of those).

The prefix is compared with the URL as proxyd will call it, rebuilt without user info
(``http://127.0.0.1:8000@169.254.169.254/`` is a call to 169.254.169.254, not to
127.0.0.1:8000), with the scheme and the host in lower case.
"""
from __future__ import annotations

import ipaddress
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["BadUrl", "Target", "parse_url", "allowed_by", "public", "literal_address",
           "private_literal", "shown"]


class BadUrl(ValueError):
    """A callback URL that cannot be called; the message says why."""


class Target(NamedTuple):
    """A parsed callback URL: what to connect to and what to ask for."""
    scheme: str          # "http" or "https"
    host: str            # a name, or an address (IPv6 without brackets)
    port: int
    url: str             # the URL to call, without user info (what the prefixes match)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_url(url: str) -> Target:
    """The target of a callback URL, or BadUrl."""
    if not isinstance(url, str) or not url:
        raise BadUrl("empty URL")
    if not url.isascii():
        raise BadUrl("not ASCII")
    if any(c <= " " or c == "\x7f" for c in url):
        raise BadUrl("spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as e:                    # a bad port, unbalanced brackets
        raise BadUrl(str(e) or "malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BadUrl("scheme must be http or https, got %r" % (parts.scheme or ""))
    if not host:
        raise BadUrl("no host")
    netloc = parts.netloc.rpartition("@")[2]
    hostport = netloc.lower()
    if ":" in netloc.rsplit("]", 1)[-1] and port is None:
        raise BadUrl("empty port")             # "http://h:/"
    if port == 0:
        raise BadUrl("port 0")
    if "[" in netloc:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise BadUrl("bad IPv6 address %r" % host) from None
    elif not _hostname_ok(host):
        raise BadUrl("bad host %r" % host)
    rest = url[url.index(parts.netloc) + len(parts.netloc):] if parts.netloc else ""
    clean = "%s://%s%s" % (scheme, hostport, rest)
    return Target(scheme, host, port or _DEFAULT_PORTS[scheme], clean)


def _hostname_ok(host: str) -> bool:
    if len(host) > 253:
        return False
    for label in host.rstrip(".").split("."):
        if not label or len(label) > 63:
            return False
        if not all(c.isalnum() or c in "-_" for c in label):
            return False
    return True


def allowed_by(target: Target, prefixes: tuple[str, ...]) -> bool:
    """Does the URL (as called: no user info, scheme and host in lower case) start with one
    of the `callback_allow` prefixes?"""
    url = target.url
    for p in prefixes:
        scheme, sep, rest = p.partition("://")
        norm = scheme.lower() + sep + rest if sep else p
        if sep:
            host_end = len(norm)
            for ch in "/?#":
                i = norm.find(ch, len(scheme) + 3)
                if i != -1:
                    host_end = min(host_end, i)
            norm = norm[:host_end].lower() + norm[host_end:]
        if norm and url.startswith(norm):
            return True
    return False


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The host as an address when it is written as one (IPv6 zone dropped), else None.
    Only the canonical forms count: ``2130706433`` or ``127.1`` are names here, resolved
    and then checked like any other name (the resolver turns them into 127.0.0.1)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def private_literal(target: Target, allow: tuple[str, ...]) -> bool:
    """Is the URL's host written as an address that may not be called (not `public`), with
    no `callback_allow` prefix naming the URL? Known without resolving anything: refused at
    submit. (A name is checked once resolved, when it is called.)"""
    if allowed_by(target, allow):
        return False
    a = literal_address(target.host)
    return a is not None and not public(a)


def public(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """May this address be called without a `callback_allow` prefix? Only global unicast."""
    try:
        a = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) \
            else address
    except ValueError:
        return False
    if isinstance(a, ipaddress.IPv6Address):
        mapped = a.ipv4_mapped or a.sixtofour
        if mapped is not None and not public(mapped):
            return False
        if a.teredo is not None:
            return False
        if a in _NAT64 and not public(ipaddress.IPv4Address(int(a) & 0xFFFFFFFF)):
            return False
    if a.is_multicast or a.is_unspecified or a.is_loopback or a.is_link_local:
        return False
    if a.is_private or a.is_reserved or not a.is_global:
        return False
    return True


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def shown(url: str) -> str:
    """A callback URL as it may be logged: no user info (a password), no query or fragment
    (numbers, texts, tokens); at most 200 characters."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.split("?", 1)[0][:200]
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    netloc = rest[:end].rpartition("@")[2]
    path = rest[end:].split("?", 1)[0].split("#", 1)[0]
    return (scheme + sep + netloc + path)[:200]
