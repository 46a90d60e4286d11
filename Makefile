# proxyd: `make run` (demo: simulator + proxyd), `make test` (the suite), `make bench`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg setup.py pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run stop test bench venv clean

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

run: $(STAMP) stop
	@mkdir -p var
	$(VENV)/bin/twistd --pidfile=var/smsc.pid --logfile=var/smsc.log proxyd-smsc --receipt-delay 1
	$(VENV)/bin/twistd --pidfile=var/proxyd.pid --logfile=var/proxyd.log proxyd --config conf/proxyd.toml
	@$(PY) -c "import sys; sys.path.insert(0, 'tests'); from procs import wait_port; wait_port(2775, deadline_s=60); wait_port(13013)"
	@test "$$($(VENV)/bin/proxyd-admin --config conf/proxyd.toml balance demo)" != "0" || \
	  $(VENV)/bin/proxyd-admin --config conf/proxyd.toml topup demo 10000 --note "demo funds" >/dev/null
	@echo
	@echo "proxyd is running: SMPP 127.0.0.1:2775, HTTP 127.0.0.1:13013, /metrics on 127.0.0.1:8080"
	@echo "the SMSC simulator is on 127.0.0.1:2776; logs in var/proxyd.log and var/smsc.log"
	@echo "account 'demo' (password 'demo', service code 10690001) has 10000 fen; send a first message:"
	@echo
	@echo "  curl 'http://127.0.0.1:13013/cgi-bin/sendsms?username=demo&password=demo&from=10690001&to=13800138000&text=hello'"
	@echo
	@echo "or bind any SMPP client to 127.0.0.1:2775 as demo/demo.  'make stop' stops both."

stop:
	-@test -f var/proxyd.pid && kill $$(cat var/proxyd.pid) 2>/dev/null; true
	-@test -f var/smsc.pid && kill $$(cat var/smsc.pid) 2>/dev/null; true
	@sleep 1

bench: $(STAMP)
	$(PY) bench/codec.py
	$(PY) bench/relay.py
	$(PY) bench/filter.py
	$(PY) bench/http.py

clean:
	rm -rf $(VENV) var build *.egg-info
