# airlab: `make train` and `make test` set up .venv themselves (see README).
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The stamp's name carries a hash of pyproject.toml: editing the dependencies reinstalls.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
ARGS ?=

.PHONY: install train test test-all lint format tensorboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

train: install
	$(PY) scripts/train.py $(ARGS)

test: install
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-all: install
	$(PY) -m pytest -q $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
