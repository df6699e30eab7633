# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export FTOPS_HOME ?= $(CURDIR)/.ftops
export DAGSTER_HOME ?= $(FTOPS_HOME)/dagster_home
export GX_ANALYTICS_ENABLED ?= false
GGUF := $(FTOPS_HOME)/models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: install model browser postgres demo test ui lint clean

# torch==2.13.0 is the CPU build on these machines; a looser pin pulls a CUDA build.
# DeepSpeed builds no ops at install time (DS_BUILD_OPS=0); it JIT-builds what it needs.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -e ".[dev,deepspeed]"
	# dvc -> hydra-core pins antlr4 4.9, whose runtime breaks Dagster's asset-selection parser (`--select`);
	# ftops uses no hydra feature of DVC (add/push/checkout), so Dagster's antlr4 wins (tests/test_dagster_cli.py).
	$(PY) -m pip install --quiet "antlr4-python3-runtime==4.13.2"
	touch $@

install: $(VENV)/.installed

$(GGUF): | $(VENV)/.installed
	$(VENV)/bin/ftops fetch-base-model --out $(GGUF)

model: $(GGUF)

# tests/test_ui.py drives Debian's chromium through Playwright (never `playwright install`: no browser download).
# As root on a fresh Debian machine (CI) this installs it; elsewhere the UI test skips unless FTOPS_REQUIRE_BROWSER.
browser:
	@test -x /usr/bin/chromium || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "make browser: /usr/bin/chromium missing and not root: apt-get install chromium for the UI test"; fi

# tests/test_production_topology.py runs a real PostgreSQL server (initdb into a temporary folder). As root on a
# fresh Debian machine (CI) this installs Debian's postgresql; elsewhere that test skips unless FTOPS_REQUIRE_POSTGRES.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else echo "make postgres: no /usr/lib/postgresql/*/bin/initdb and not root: apt-get install postgresql for the topology test"; fi

demo: install model
	$(VENV)/bin/ftops demo

test: install model browser postgres
	$(PY) -m pytest

ui: install model
	$(VENV)/bin/ftops init
	$(VENV)/bin/dagster dev -w workspace.yaml

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(FTOPS_HOME)/dagster_home $(FTOPS_HOME)/artifacts $(FTOPS_HOME)/drops $(FTOPS_HOME)/registry.sqlite \
	  $(FTOPS_HOME)/mlflow $(FTOPS_HOME)/drops_cache
