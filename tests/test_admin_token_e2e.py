"""The admin listener's bearer token ([admin] token), over a real socket of a real proxyd."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from proxyd import config

from .conftemplate import config_text, listen
from .procs import free_port, start_proxyd, write_config

TOKEN = "t0ken-of-the-admin-listener"


def get(port: int, path: str, auth: str | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path))
    if auth is not None:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_admin_token_401_then_200(tmp_path):
    port, admin_port = free_port(), free_port()
    cfg = write_config(tmp_path, config_text(
        port, admin={"listen": listen(admin_port), "token": TOKEN}))
    proxyd = start_proxyd(tmp_path, cfg, admin_port)
    try:
        for path in ("/metrics", "/health", "/nothing"):
            code, body, headers = get(admin_port, path)
            assert code == 401, (path, code, body)
            assert headers.get("WWW-Authenticate", "").startswith("Bearer")
            assert "proxyd_" not in body
            assert get(admin_port, path, "Bearer " + TOKEN[:-1] + "X")[0] == 401
            assert get(admin_port, path, "Basic " + TOKEN)[0] == 401
            assert get(admin_port, path, TOKEN)[0] == 401
        code, body, _ = get(admin_port, "/metrics", "Bearer " + TOKEN)
        assert code == 200 and "proxyd_" in body
        assert get(admin_port, "/metrics", "bearer  " + TOKEN)[0] == 200
        # no upstream in this config: /health answers (503), past the token
        code, body, _ = get(admin_port, "/health", "Bearer " + TOKEN)
        assert (code, body) == (503, "no upstream bound\n")
        assert get(admin_port, "/nothing", "Bearer " + TOKEN)[0] == 404
    finally:
        proxyd.stop()


def test_no_token_on_loopback_is_open(tmp_path):
    port, admin_port = free_port(), free_port()
    cfg = write_config(tmp_path, config_text(port, admin={"listen": listen(admin_port)}))
    proxyd = start_proxyd(tmp_path, cfg, admin_port)
    try:
        assert get(admin_port, "/metrics")[0] == 200
    finally:
        proxyd.stop()


@pytest.mark.parametrize("endpoint", ["tcp:8080", "tcp:8080:interface=0.0.0.0",
                                      "tcp:8080:interface=10.1.2.3", "8080",
                                      "systemd:domain=INET:index=0"])
def test_token_required_off_loopback(endpoint):
    with pytest.raises(config.ConfigError, match="admin.token: required when the admin "
                                                  "listener is not on loopback"):
        config.parse({"admin": {"listen": [endpoint]}})
    cfg = config.parse({"admin": {"listen": [endpoint], "token": TOKEN}})
    assert cfg.admin.token == TOKEN


@pytest.mark.parametrize("endpoint", ["tcp:8080:interface=127.0.0.1",
                                      "tcp:8080:interface=127.0.0.2",
                                      r"tcp6:8080:interface=\:\:1",
                                      "tcp:8080:interface=localhost", "unix:/run/a.sock"])
def test_loopback_needs_no_token(endpoint):
    assert config.parse({"admin": {"listen": [endpoint]}}).admin.token == ""


def test_token_and_report_days_are_checked():
    with pytest.raises(config.ConfigError, match="admin.token: at least 16"):
        config.parse({"admin": {"token": "short"}})
    with pytest.raises(config.ConfigError, match="admin.token: must not contain spaces"):
        config.parse({"admin": {"token": "a long token with spaces"}})
    with pytest.raises(config.ConfigError, match="admin.report_max_days"):
        config.parse({"admin": {"report_max_days": 0}})
    assert config.parse({}).admin.report_max_days == 31
