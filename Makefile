# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export FTOPS_HOME ?= $(CURDIR)/.ftops
export DAGSTER_HOME ?= $(FTOPS_HOME)/dagster_home
export GX_ANALYTICS_ENABLED ?= false
GGUF := $(FTOPS_HOME)/models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: install model demo test ui lint clean

# torch==2.13.0 is the CPU build on these machines; a looser pin pulls a CUDA build.
# DeepSpeed builds no ops at install time (DS_BUILD_OPS=0); it JIT-builds what it needs.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -e ".[dev,deepspeed]"
	touch $@

install: $(VENV)/.installed

$(GGUF): | $(VENV)/.installed
	$(VENV)/bin/ftops fetch-base-model --out $(GGUF)

model: $(GGUF)

demo: install model
	$(VENV)/bin/ftops demo

test: install model
	$(PY) -m pytest

ui: install model
	$(VENV)/bin/ftops init
	$(VENV)/bin/dagster dev -w workspace.yaml

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(FTOPS_HOME)/dagster_home $(FTOPS_HOME)/artifacts $(FTOPS_HOME)/drops
