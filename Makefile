# The two commands: `make demo` runs the main job, `make test` runs the tests.
# Both first run `make setup`, which is a no-op in seconds once .venv is complete.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test demo lint

setup:
	bash tools/setup.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(VENV)/bin/lrp demo

lint: setup
	$(VENV)/bin/ruff check .
