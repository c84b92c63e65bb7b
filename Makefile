# The two commands a new user needs: `make demo` and `make test` (see README.md).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-unit test-integration lint bootstrap clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@$(PY) -m cloud.demo

test: bootstrap lint
	@$(PY) -m pytest tests -q

test-unit: bootstrap
	@$(PY) -m pytest tests/unit -q

test-integration: bootstrap
	@$(PY) -m pytest tests/integration tests/hil -q

lint: bootstrap
	@$(VENV)/bin/ruff check boxd drivers provisioning cloud ota tests bench
	@$(VENV)/bin/mypy

clean:
	rm -rf run demo-data .pytest_cache .mypy_cache .ruff_cache
