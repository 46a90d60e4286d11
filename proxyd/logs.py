"""Privacy in log lines: numbers are masked unless `[log] mask_numbers = false`; secrets in
URLs are always masked (`mask_url`)."""
from __future__ import annotations

import re
from typing import Any

_PRIVACY = {"mask": True}     # [log] mask_numbers, set by configure_logging at (re)load


def configure_logging(log_cfg: Any) -> None:
    """Apply `[log] mask_numbers` to every log line that shows a number."""
    _PRIVACY["mask"] = bool(log_cfg.mask_numbers)


def mask(number: str) -> str:
    """138****5678: numbers in logs keep their first 3 and last 4 digits (unless
    `[log] mask_numbers = false`)."""
    if not _PRIVACY["mask"]:
        return number
    if len(number) <= 7:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


# query parameters whose value is a secret, in any URL that reaches a log line
SECRET_PARAMS = frozenset({"password", "pass", "passwd", "pwd", "pw", "secret", "token"})
_QUERY_PAIR = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def mask_url(url: str) -> str:
    """`url` fit for a log line: the password of its userinfo and the values of its
    password-like query parameters (`SECRET_PARAMS`, any case) become ``***``.

        redis://:s3cret@db:6379/0            -> redis://:***@db:6379/0
        http://u:p@h/dlr?user=a&password=b   -> http://u:***@h/dlr?user=a&password=***

    Never raises: a string that is not a URL comes back with the same rules applied as far
    as they go. Everything else (scheme, user, host, path) is kept as it was written."""
    if not isinstance(url, str):
        url = str(url)
    scheme, sep, rest = url.partition("://")
    if sep:
        end = len(rest)
        for c in "/?#":
            i = rest.find(c)
            if i != -1:
                end = min(end, i)
        authority, tail = rest[:end], rest[end:]
        at = authority.rfind("@")
        if at != -1:
            userinfo, host = authority[:at], authority[at + 1:]
            user, colon, _ = userinfo.partition(":")
            if colon:
                userinfo = user + ":***"
            authority = userinfo + "@" + host
        url = scheme + sep + authority + tail
    if "?" not in url:
        return url
    head, q, query = url.partition("?")

    def hide(m: re.Match) -> str:
        if m.group(2).lower() in SECRET_PARAMS:
            return "%s%s=***" % (m.group(1), m.group(2))
        return m.group(0)
    return head + _QUERY_PAIR.sub(hide, q + query)
