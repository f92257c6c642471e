# vexport: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export VEXPORT_HOME ?= $(CURDIR)/.vexport

.PHONY: demo test test-corpus quick lint dev dev-cluster redis bench schema clean chromium azurite

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/vexport demo

# Everything but the whole target-quality corpus matrix (every tier x codec x size), which alone would take the
# suite past 15 minutes on 2 cores; `make test-corpus` runs it (the 720p low-tier row of H.264, VP9 and AV1 stays
# in `make test`). Two workers (pytest-xdist), a test file per worker at a time.
TEST_WORKERS ?= 2
test: lint chromium azurite
	$(PY) -m pytest -q -m "not corpus_full" -n $(TEST_WORKERS) --dist loadfile

test-corpus: $(VENV)/.installed-test
	$(PY) -m pytest -q -m corpus_full

# A developer's quick subset: no browser, no PostgreSQL, none of the long encode matrices.
quick: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow and not browser and not postgres"

# ruff (pyproject.toml) must be clean and the code formatted; `make test` fails otherwise.
lint: $(VENV)/.installed-test
	$(PY) -m ruff check vexport_pipeline vexport_pipeline_tests bench
	$(PY) -m ruff format --check vexport_pipeline vexport_pipeline_tests bench

# Debian's chromium for the real-client playback checks (Playwright drives it; it downloads no browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: playback tests will be skipped (CI fails them)"; }

# Azurite, Microsoft's Azure Storage emulator (npm), for the Azure Blob tests over the wire: installed into
# .ci-tools/ (git-ignored) with the machine's Node.js; 3.35 is the last release that declares Node 20 support.
AZURITE_VERSION := 3.35.0
AZURITE_STAMP := .ci-tools/.azurite-$(AZURITE_VERSION)
azurite: $(AZURITE_STAMP)

$(AZURITE_STAMP):
	@command -v npm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null); } || true
	@mkdir -p .ci-tools
	@npm install --prefix .ci-tools --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
	  azurite@$(AZURITE_VERSION) >/dev/null && touch $@ || \
	  echo "azurite not installed: Azure tests will be skipped (CI fails them)"

dev: $(VENV)/.installed
	$(VENV)/bin/vexport dev

# A Celery cluster on this machine (docs/deployment.md, "Celery workers"): CLUSTER_WORKERS workers, each with a home
# of its own under $VEXPORT_HOME/workers/N, then the daemon and the UI; steps hand each other files through a
# folder outside every worker's home. Ctrl-C stops it all.
CLUSTER_WORKERS ?= 2
CLUSTER_ARTIFACTS ?= $(CURDIR)/.vexport-artifacts
dev-cluster: $(VENV)/.installed redis
	VEXPORT_EXECUTOR=celery VEXPORT_ARTIFACTS=file://$(CLUSTER_ARTIFACTS) \
	  $(PY) -m vexport_pipeline.defs.cluster --workers $(CLUSTER_WORKERS)

# Redis on 127.0.0.1:6379, Celery's broker: where none answers, Debian's redis-server is installed and started.
REDIS_PING := $(PY) -c "import redis; redis.Redis(socket_timeout=2).ping()"
redis: $(VENV)/.installed
	@$(REDIS_PING) 2>/dev/null || { \
	  command -v redis-server >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }; \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null; \
	  sleep 1; $(REDIS_PING) 2>/dev/null || { echo "no Redis answers on 127.0.0.1:6379"; exit 1; }; }

bench: $(VENV)/.installed-test
	$(PY) bench/run.py

# Regenerate the committed JSON Schema of the composition manifest.
schema: $(VENV)/.installed
	$(PY) -m vexport_pipeline.core.spec.loading > docs/composition.schema.json

clean:
	rm -rf $(VENV) .vexport .vexport-artifacts .ci-tools
