"""The installed distribution, used as a sysadmin would: build the wheel, install it into a
fresh venv, write the shipped files out with `proxyd-admin init`, and from a directory that
is not the checkout run `twistd proxyd-smsc` and `twistd proxyd --config <dir>/proxyd.toml`
through to a first message relayed.

The fresh venv gets the wheel installed by pip (`--no-deps`); its dependencies are not
downloaded again: a `.pth` line puts the test venv's site-packages after the new venv's own
(a plain path line, so the test venv's `.pth` files, among them the editable install of the
checkout, are not run: proxyd comes from the wheel, which the test checks). Twisted's
`twistd` console script is written into the new venv as pip would write it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
from pathlib import Path

import pytest

from .procs import Proc, free_port, read_record, wait_until

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def run(args: list, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], cwd=str(cwd), env=env, capture_output=True,
                       text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(map(str, args)),
                                                           r.returncode, r.stdout, r.stderr))
    return r


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def source_copy(dest: Path) -> Path:
    """The checkout's files as a clean clone has them (no venv, no build leftovers, which a
    build in place could carry into the wheel)."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__", "*.pyc",
        "dropin.cache", ".pytest_cache", ".hypothesis", "_trial_temp"))
    return dest


def site_packages(venv: Path) -> Path:
    found = list((venv / "lib").glob("python3*/site-packages"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, env): a fresh venv with the wheel of this checkout installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = clean_env()
    wheels = tmp / "dist"
    run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels,
         source_copy(tmp / "src")], tmp, env)
    (wheel,) = wheels.glob("proxyd-*.whl")
    venv = tmp / "venv"
    run([PY, "-m", "venv", "--without-pip", venv], tmp, env)
    vpy = venv / "bin" / "python"
    run([PY, "-m", "pip", "--python", vpy, "install", "-q", "--no-deps", "--no-index",
         wheel], tmp, env)
    site = site_packages(venv)
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    twistd = venv / "bin" / "twistd"
    twistd.write_text("#!%s\nimport sys\nfrom twisted.scripts.twistd import run\n"
                      "sys.exit(run())\n" % vpy)
    twistd.chmod(0o755)
    return venv, env


def test_sdist_carries_the_plugin_conf_and_docs(tmp_path):
    src = source_copy(tmp_path / "src")
    r = run([PY, "setup.py", "-q", "sdist", "-d", tmp_path], src, clean_env())
    (sdist,) = tmp_path.glob("proxyd-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for name in ("twisted/plugins/proxyd_plugin.py", "setup.py", "conf/proxyd.toml",
                 "conf/proxyd.service", "conf/filters/rumours.txt",
                 "conf/monitoring/alerts.yml", "conf/monitoring/grafana-dashboard.json",
                 "docs/OPERATIONS.md", "docs/ARCHITECTURE.md", "README.md",
                 "proxyd/store/ledger/prelude.lua"):
        assert name in names, (name, r.stderr)
    assert not any(n.endswith("dropin.cache") for n in names)


def test_wheel_installs_and_relays(installed, tmp_path):
    venv, env = installed
    bindir = venv / "bin"
    site = site_packages(venv)
    elsewhere = tmp_path / "run"           # not the checkout: twistd puts the cwd on sys.path
    elsewhere.mkdir()

    # proxyd and its plugin come from the wheel, not from the checkout
    r = run([bindir / "python", "-c",
             "import proxyd, twisted.plugins.proxyd_plugin as p, proxyd.shipped as s; "
             "print(proxyd.__file__); print(p.__file__); print(s.conf_dir())"], elsewhere, env)
    lines = r.stdout.split()
    assert all(line.startswith(str(site)) for line in lines), lines
    assert lines[2] == str(site / "proxyd" / "_conf")

    # the shipped files, written out
    conf = tmp_path / "conf"
    r = run([bindir / "proxyd-admin", "init", conf], elsewhere, env)
    assert "wrote" in r.stdout
    for name in ("proxyd.toml", "proxyd.service", "filters/rumours.txt",
                 "monitoring/grafana-dashboard.json", "monitoring/alerts.yml"):
        assert (conf / name).is_file(), name
    again = run([bindir / "proxyd-admin", "init", conf], elsewhere, env, check=False)
    assert again.returncode == 2 and "exists (use --force" in again.stderr

    # Twisted's plugin cache: written by plugin-cache; an unwritable one does not hide
    # the plugin (a directory in its place cannot be replaced, even by root)
    plugins = site / "twisted" / "plugins"
    r = run([bindir / "proxyd-admin", "plugin-cache"], elsewhere, env)
    assert "proxyd, proxyd-smsc" in r.stdout and "up to date" in r.stdout
    assert b"proxyd_plugin" in (plugins / "dropin.cache").read_bytes()
    (plugins / "dropin.cache").unlink()
    (plugins / "dropin.cache").mkdir()
    r = run([bindir / "proxyd-admin", "plugin-cache"], elsewhere, env, check=False)
    assert r.returncode == 1 and "Unable to write to plugin cache" in r.stdout, r.stdout

    # the example config, on free ports, the simulator as its upstream
    sim_port, smpp_port, http_port, admin_port = (free_port() for _ in range(4))
    text = (conf / "proxyd.toml").read_text()
    for old, new in (("2775", smpp_port), ("2776", sim_port), ("13013", http_port),
                     ("8080", admin_port)):
        text, n = re.subn(r"\b%s\b" % old, str(new), text)
        assert n == 1, old
    cfg = conf / "proxyd.toml"
    cfg.write_text(text)
    assert 'filters_dir = "%s"' % (conf / "filters").resolve().as_posix() in text

    record = tmp_path / "record.jsonl"
    sim = Proc([bindir / "twistd", "-n", "--pidfile=", "--logfile=-", "proxyd-smsc",
                "--listen", "tcp:%d:interface=127.0.0.1" % sim_port, "--record", record],
               tmp_path / "sim.log", cwd=elsewhere, env=env)
    node = None
    try:
        sim.wait_port(sim_port, 60)
        node = Proc([bindir / "twistd", "-n", "--pidfile=", "--logfile=-", "proxyd",
                     "--config", cfg], tmp_path / "proxyd.log", cwd=elsewhere, env=env)
        node.wait_port(http_port, 60)
        wait_until(lambda: "upstream sim bound" in node.text(), "the upstream bind", 30)
        r = run([bindir / "proxyd-admin", "--config", cfg, "topup", "demo", "100"],
                elsewhere, env)
        url = ("http://127.0.0.1:%d/cgi-bin/sendsms?username=demo&password=demo"
               "&from=10690001&to=13800138000&text=hello" % http_port)
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 202
            assert resp.read().decode() == "0: Accepted for delivery"
        got = wait_until(lambda: read_record(record), "the relayed message", 10)
        assert len(got) == 1
        assert (elsewhere / "var" / "store").is_dir()       # relative to the cwd
        assert "Unable to write to plugin cache" in node.text()   # and it started anyway
    finally:
        if node is not None:
            node.stop()
        sim.stop()
    shutil.rmtree(plugins / "dropin.cache")
