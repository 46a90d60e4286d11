"""Salted password hashes for account passwords in the config.

Format: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` (standard base64, 16-byte random salt,
32-byte derived key). `proxyd-admin hash-password` prints one; paste it as an account's
``password``. A stored value that does not start with ``scrypt$`` is a plain-text password
(allowed for demos) and is compared as such, in constant time.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

PREFIX = "scrypt$"
N, R, P = 2 ** 14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
# hashlib.scrypt's default maxmem (32 MiB) is enough for n=2**14, r=8 (16 MiB), but allow
# stored hashes made with somewhat larger parameters.
_MAXMEM = 256 * 1024 * 1024
# A fixed hash of a password nobody is given: verified against for an unknown user (and for an
# account with a plain-text password), so that every refusal costs the same scrypt.
DUMMY_HASH = ("scrypt$16384$8$1$doBts3HcvYqDncqeCS02cw==$"
              "7xC+8baPUkJLvF1vf73A5OXBtkCkJaXe07rybJUB8JE=")


def hash_password(pw: str) -> str:
    """Return ``scrypt$n$r$p$salt$hash`` for `pw` with a fresh random salt."""
    salt = os.urandom(SALT_BYTES)
    key = hashlib.scrypt(pw.encode("utf-8"), salt=salt, n=N, r=R, p=P, dklen=KEY_BYTES,
                         maxmem=_MAXMEM)
    return "scrypt$%d$%d$%d$%s$%s" % (N, R, P, base64.b64encode(salt).decode("ascii"),
                                      base64.b64encode(key).decode("ascii"))


def hash_problem(stored: str) -> str | None:
    """Why a stored ``scrypt$...`` value can never verify (None when it is well formed):
    the config refuses it at load with this text, rather than every bind failing."""
    parts = stored.split("$")
    if len(parts) != 6:
        return "a scrypt hash is scrypt$n$r$p$salt$hash (6 fields separated by $)"
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        return "scrypt n, r and p must be integers"
    if n < 2 or n & (n - 1):
        return "scrypt n must be a power of 2 >= 2, got %d" % n
    if not 1 <= r <= 64:
        return "scrypt r must be 1 to 64, got %d" % r
    if not 1 <= p <= 16:
        return "scrypt p must be 1 to 16, got %d" % p
    if 128 * n * r > _MAXMEM // 2:
        return "scrypt n*r needs %d MiB, more than the %d MiB allowed" % (
            128 * n * r >> 20, _MAXMEM >> 21)
    try:
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return "scrypt salt and hash must be standard base64"
    if not salt or not key:
        return "scrypt salt and hash must not be empty"
    return None


def verify_password(stored: str, given: str) -> bool:
    """True if `given` matches `stored` (a scrypt string, or plain text). Constant time."""
    given_b = given.encode("utf-8")
    if not stored.startswith(PREFIX):
        return hmac.compare_digest(stored.encode("utf-8"), given_b)
    try:
        _, n_s, r_s, p_s, salt_s, key_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_s, validate=True)
        key = base64.b64decode(key_s, validate=True)
        if n < 2 or n & (n - 1) or not (1 <= r <= 64 and 1 <= p <= 16) or not key:
            return False
        derived = hashlib.scrypt(given_b, salt=salt, n=n, r=r, p=p, dklen=len(key),
                                 maxmem=_MAXMEM)
    except (ValueError, TypeError):  # malformed stored hash: never matches
        return False
    return hmac.compare_digest(derived, key)
