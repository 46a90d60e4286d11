"""proxyd-admin init: the shipped files written out (from the checkout's conf/ here; the
wheel's copy is tested by test_wheel_e2e), and a config that loads as it is."""
from __future__ import annotations

from pathlib import Path

import pytest

from proxyd import shipped
from proxyd.admin import main
from proxyd.config import load

ROOT = Path(__file__).resolve().parent.parent


def test_init_writes_a_config_that_loads(tmp_path, capsys, monkeypatch):
    assert shipped.conf_dir() == ROOT / "conf"
    target = tmp_path / "etc proxyd"            # a space: the path is quoted in TOML
    assert main(["init", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    want = sorted(p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*")
                  if p.is_file())
    got = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert got == want and len(got) >= 13
    monkeypatch.chdir(tmp_path)                 # not the checkout: filters_dir is absolute
    cfg = load(str(target / "proxyd.toml"))
    assert Path(cfg.policy.filters_dir) == (target / "filters").resolve()
    assert (target / "monitoring" / "alerts.yml").read_bytes() == (
        ROOT / "conf" / "monitoring" / "alerts.yml").read_bytes()


def test_init_keeps_what_exists(tmp_path, capsys):
    (tmp_path / "proxyd.toml").write_text("# mine\n")
    assert main(["init", str(tmp_path)]) == 2
    assert "proxyd.toml exists (use --force" in capsys.readouterr().err
    assert (tmp_path / "proxyd.toml").read_text() == "# mine\n"
    assert not (tmp_path / "filters").exists()          # nothing written at all
    assert main(["init", str(tmp_path), "--force"]) == 0
    assert "[[upstream]]" in (tmp_path / "proxyd.toml").read_text()


def test_missing_conf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "__file__", str(tmp_path / "pkg" / "shipped.py"))
    with pytest.raises(FileNotFoundError, match="conf files are missing"):
        shipped.conf_dir()
