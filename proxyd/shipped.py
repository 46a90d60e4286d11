"""The files proxyd ships besides its code: `conf/` of the source tree (the example config,
the filter word lists, the systemd unit, `monitoring/` with the Grafana dashboard and the
Prometheus alert rules).

An installed wheel carries them as ``proxyd/_conf`` (copied there by setup.py's build);
a checkout (editable install) uses ``conf/`` beside the package. `conf_dir()` finds either;
`init(dir)` writes them out for an operator to edit (``proxyd-admin init DIR``), with the
example config's `[policy] filters_dir` pointing at the written word lists.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["conf_dir", "init", "InitError", "scan_plugins", "PLUGINS"]

PLUGINS = ("proxyd", "proxyd-smsc")        # the twistd plugins of the distribution

_EXAMPLE = "proxyd.toml"
_FILTERS_LINE = 'filters_dir = "conf/filters"'


class InitError(Exception):
    """The directory cannot be written (exists and not empty, or an OS error)."""


def conf_dir() -> Path:
    """The shipped conf directory: ``proxyd/_conf`` when installed, else the checkout's
    ``conf/``. Raises FileNotFoundError when neither is there (a broken install)."""
    here = Path(__file__).resolve().parent
    for d in (here / "_conf", here.parent / "conf"):
        if (d / _EXAMPLE).is_file() and (d / "filters").is_dir():
            return d
    raise FileNotFoundError("proxyd's conf files are missing: neither %s nor %s"
                            % (here / "_conf", here.parent / "conf"))


def init(target: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write the shipped files into `target` (created if missing): proxyd.toml, filters/,
    proxyd.service, monitoring/. A file that exists is kept, and an InitError raised
    before anything is written, unless `force`. Returns the files written."""
    src = conf_dir()
    dst = Path(target)
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    if not force:
        clash = [dst / p.relative_to(src) for p in files if (dst / p.relative_to(src)).exists()]
        if clash:
            raise InitError("%s exists (use --force to overwrite)%s" % (
                clash[0], "" if len(clash) == 1 else ", and %d more" % (len(clash) - 1)))
    written = []
    try:
        for p in files:
            out = dst / p.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            if p.name == _EXAMPLE and p.parent == src:
                text = p.read_text(encoding="utf-8")
                filters = (dst / "filters").resolve()
                text = text.replace(_FILTERS_LINE, "filters_dir = %s" % json.dumps(
                    filters.as_posix(), ensure_ascii=False))
                out.write_text(text, encoding="utf-8")
            else:
                shutil.copyfile(p, out)
            written.append(out)
    except OSError as e:
        raise InitError("cannot write %s: %s" % (dst, e)) from None
    return written


def scan_plugins() -> tuple[list[str], list[str], list[str]]:
    """Load every twistd plugin of the ``twisted.plugins`` directories, which rewrites each
    stale ``dropin.cache`` that may be written (``proxyd-admin plugin-cache``). Returns
    (the plugins' names, the lines Twisted logged about caches it could not write or
    plugins it could not load, the directories searched)."""
    from twisted import plugins
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins
    from twisted.python import log as tlog

    failures: list[str] = []

    def watch(event: dict) -> None:
        text = tlog.textFromEventDict(event) or ""
        if "plugin cache" in text or event.get("isError"):
            failures.append(text.strip())

    tlog.addObserver(watch)
    try:
        names = sorted(p.tapname for p in getPlugins(IServiceMaker, plugins))
    finally:
        tlog.removeObserver(watch)
    return names, failures, list(plugins.__path__)
