# proxyd: `make run` (demo: simulator + proxyd), `make test` (the suite), `make bench`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bench venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

run: $(STAMP)
	@mkdir -p var
	$(VENV)/bin/twistd --pidfile=var/smsc.pid --logfile=var/smsc.log proxyd-smsc
	@echo "simulator on 127.0.0.1:2776 (log var/smsc.log)"
	@echo "proxyd on SMPP 127.0.0.1:2775, HTTP 127.0.0.1:13013 -- send a first message with:"
	@echo "  curl 'http://127.0.0.1:13013/cgi-bin/sendsms?username=demo&password=demo&from=10690001&to=13800138000&text=hello'"
	@echo "  or: $(PY) -m proxyd.tools.send --to 13800138000 --text hello"
	@echo "(Ctrl-C stops proxyd; 'kill \$$(cat var/smsc.pid)' stops the simulator)"
	$(VENV)/bin/twistd -n --pidfile=var/proxyd.pid proxyd --config conf/proxyd.toml

bench: $(STAMP)
	$(PY) bench/codec.py
	$(PY) bench/relay.py
	$(PY) bench/filter.py

clean:
	rm -rf $(VENV) var build *.egg-info
