# The two commands a new user needs: `make demo` (the main job, end to end) and `make test`.
# Each installs what it needs first (cluster/setup.sh is idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test-tools test lint demo doctor clean-cache

setup:
	bash cluster/setup.sh

# Non-Python tools the tests drive for real: headless Chromium (playground test) and helm (chart checks).
test-tools: setup
	bash cluster/setup_test_tools.sh
	$(PY) -m cluster.get_helm

test: setup test-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

doctor: setup
	$(VENV)/bin/xalign doctor

demo: setup
	$(VENV)/bin/xalign demo --profile quick
