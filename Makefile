# Portal: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
AXE_VERSION := 4.11.4
TEST_TOOLS := $(CURDIR)/var/test-tools
DEMO_ADDR ?= 127.0.0.1:8000
export DEMO_PASSWORD ?= portal-demo-2026

.PHONY: demo demo-traffic test test-tools lint bench bench-load clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed-run

## demo: install, migrate, load demo data, start web + Celery worker + beat (Ctrl-C stops all three)
demo: export DEBUG ?= 1
demo: $(VENV)/.installed-run
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	$(PY) manage.py load_demo_models
	$(PY) manage.py load_demo_approvals
	$(PY) manage.py load_demo_deployments
	@echo
	@echo "Portal is starting at http://$(DEMO_ADDR)/  (sign in with a demo login above; Ctrl-C stops everything)"
	@echo
	@trap 'kill 0' INT TERM EXIT; \
	  $(VENV)/bin/celery -A portal worker --loglevel=INFO --concurrency=2 & \
	  $(VENV)/bin/celery -A portal beat --loglevel=INFO & \
	  $(PY) manage.py runserver --noreload $(DEMO_ADDR)

## demo-traffic: a week of demo traffic with a drift mid-week, outcomes, rollups, the drift alert and the retraining
## it starts (run after `make demo` has loaded the demo data; `DEMO_TRAFFIC_ARGS=--reset` replaces an earlier week)
demo-traffic: export DEBUG ?= 1
demo-traffic: $(VENV)/.installed-run
	$(PY) manage.py demo_traffic $(DEMO_TRAFFIC_ARGS)

## test-tools: Debian's chromium for browser tests, bubblewrap for the pickle sandbox, axe-core for accessibility checks
test-tools:
	@# Only what is missing: a machine's own Node.js (e.g. NodeSource's, which bundles npm) must not be replaced.
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@test -f $(TEST_TOOLS)/node_modules/axe-core/axe.min.js || \
	  npm install --silent --no-save --no-audit --no-fund --prefix $(TEST_TOOLS) axe-core@$(AXE_VERSION)

## test: install what the tests need and run the whole suite (embedded defaults unless DATABASE_URL etc. are set)
test: export DEBUG ?= 1
test: export PORTAL_VAR_DIR ?= $(CURDIR)/var/test
test: export AXE_CORE_JS ?= $(TEST_TOOLS)/node_modules/axe-core/axe.min.js
test: $(VENV)/.installed-dev test-tools
	$(PY) -m pytest $(PYTEST_ARGS)

## bench: the benchmarks whose numbers are in docs/benchmarks.md (each on throwaway data of its own);
## `make bench BENCHES=grid BENCH_ARGS="--repeat 20"` runs one with its own options
BENCHES ?= audit grid profiling registry serving monitoring
bench: export DEBUG ?= 1
bench: $(VENV)/.installed-run
	@for name in $(BENCHES); do echo "== bench/bench_$$name.py"; $(PY) bench/bench_$$name.py $(BENCH_ARGS) || exit 1; done

## bench-load: the load test, 50 people browsing and 20 prediction clients for 5 minutes against gunicorn, PostgreSQL,
## Redis and Celery on loopback (a fresh portal_load database; Redis databases 12 and 13 must be empty);
## `make bench-load LOAD_ARGS="--duration 60 --ui-users 10"` for a short one (`--help` lists the options)
bench-load: $(VENV)/.installed-dev
	$(PY) bench/bench_load.py $(LOAD_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf var/test var/test-tools .pytest_cache
