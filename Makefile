# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Debian packages the tests use as real peers: a Mosquitto broker and its
# clients, and promtool (in `prometheus`) to lint the metrics exposition.
SYSTEM_TOOLS := mosquitto mosquitto_sub promtool
SYSTEM_PKGS  := mosquitto mosquitto-clients prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test proto clean

install: system-deps $(STAMP)

system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || \
	  [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PKGS) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# A skewed 8-node cluster of real agent processes balancing itself for 60 s.
demo: install
	$(BIN)/shoal cluster up --nodes 8 --domains 48 --placement skewed --duration 60

test: install
	$(BIN)/python -m pytest -q

# Regenerate the protobuf/gRPC code from proto/ (never edit shoal/v1 by hand).
proto: install
	$(BIN)/python -m shoal.protogen

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
