# The two commands of the README: `make demo` and `make test`. Both install what they need
# (a virtualenv in .venv with mig and its test extras, the shim, Kafka's jars) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install criu lint clean

demo: install
	$(BIN)/mig demo

test: install criu
	$(BIN)/ruff check mig tests bench setup.py
	$(BIN)/mypy
	$(BIN)/pytest -q

install: $(VENV)/.installed
	$(BIN)/mig --log-format json broker classpath > /dev/null

$(VENV)/.installed: pyproject.toml setup.py $(wildcard shim/src/*) shim/Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# CRIU 4.x for checkpoints: the host's when it is good, else a private copy (scripts/).
# A machine where it cannot be installed still runs the other tests; tests/checkpoint/test_criu.py
# then fails, naming the install command.
criu:
	bash scripts/install-criu.sh || echo "warning: CRIU not installed (tests/checkpoint/test_criu.py will fail)"

lint: install
	$(BIN)/ruff check mig tests

clean:
	rm -rf $(VENV) shim/build build *.egg-info
