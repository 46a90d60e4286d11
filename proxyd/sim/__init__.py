"""SMSC simulator: `proxyd.sim.smsc` (protocol, factory), `proxyd.sim.service` (Options,
makeService for `twistd proxyd-smsc`), `python -m proxyd.sim` (standalone runner)."""
