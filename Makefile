# The two commands a new user needs: `make demo` and `make test` (see README.md).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-unit test-integration hil lint bootstrap clean image image-if-root

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@$(PY) -m cloud.demo

test: bootstrap lint image-if-root
	@$(PY) -m pytest tests -q -n 3

test-unit: bootstrap
	@$(PY) -m pytest tests/unit -q

test-integration: bootstrap image-if-root
	@$(PY) -m pytest tests/integration tests/hil tests/image -q

# the whole HIL suite, with the scenarios `make test` leaves out on the vm target (slow_vm: minutes each
# under emulation; tests/hil/README.md)
hil: bootstrap image-if-root
	@HIL_SLOW_VM=1 $(PY) -m pytest tests/hil -v

# The Box image (image/README.md): build/image/box.img. Cached: a rebuild does only what changed.
image: bootstrap
	@image/build.sh

# `make test` boots the image under QEMU (tests/image) when it can be built here (as root).
image-if-root: bootstrap
	@if [ "$$(id -u)" = 0 ]; then image/build.sh; \
	else echo "make: not root: the Box image is not built and its VM tests are skipped"; fi

# ruff, mypy --strict (the packages, tests/ and bench/: pyproject.toml), and the layering contract
# (.importlinter, docs/architecture.md "Layers")
lint: bootstrap
	@$(VENV)/bin/ruff check proto boxkit trust drivers boxconfig boxd ota provisioning cloud tests bench image
	@$(VENV)/bin/mypy
	@$(VENV)/bin/mypy --strict image/scripts
	@$(VENV)/bin/lint-imports --no-cache --no-logo .importlinter

clean:
	rm -rf run demo-data build .pytest_cache .mypy_cache .ruff_cache
