# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test proto clean

install: $(STAMP)

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
