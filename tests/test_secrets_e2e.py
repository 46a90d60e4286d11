"""The store password never reaches proxyd's log: at start, and in store errors."""
from __future__ import annotations

import valkey

from .conftemplate import config_text
from .procs import BIN, Proc, free_port, start_proxyd, wait_until, write_config
from .valkey_fixture import ValkeyProcess

SECRET = "s3cret-Pa55"


def test_store_password_is_masked_in_the_log(tmp_path):
    server = ValkeyProcess()
    sock = server.start()
    try:
        valkey.Valkey(unix_socket_path=sock).config_set("requirepass", SECRET)
        port = free_port()
        url = "unix://%s?password=%s" % (sock, SECRET)
        cfg = write_config(tmp_path, config_text(port, store={"url": url}))
        proxyd = start_proxyd(tmp_path, cfg, port)
        try:
            wait_until(lambda: "proxyd ready" in proxyd.text(), "start", 20)
        finally:
            proxyd.stop()
        log = proxyd.text()
        assert "store unix://%s?password=***" % sock in log
        assert SECRET not in log

        # a wrong password: every store error names the store, masked
        wrong = "unix://%s?password=%s" % (sock, "Wr0ng-" + SECRET)
        cfg = write_config(tmp_path, config_text(port, store={"url": wrong}), "wrong.toml")
        bad = Proc([str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "proxyd",
                    "--config", str(cfg)], tmp_path / "wrong.log", cwd=tmp_path)
        try:
            wait_until(lambda: "store not reachable yet" in bad.text(), "store error", 20)
        finally:
            bad.stop()
        text = bad.text()
        assert "password=***" in text
        assert SECRET not in text
    finally:
        server.cleanup()
