# The README's commands. Everything installs into .venv from nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build on this machine's disk; a GPU user overrides it (make install TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
# Triton for the tests of the GPU kernels, which run in Triton's interpreter on CPU (a CUDA torch
# brings its own: make install TORCH_SPEC=torch TRITON_SPEC=).
TRITON_SPEC ?= triton==3.8.0
PYTEST_ARGS ?=

.PHONY: install chromium test demo bench gpu-wheels lint clean

install: $(VENV)/.installed chromium

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TRITON_SPEC),"$(TRITON_SPEC)")
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Headless Chromium for the browser tests (offline /docs, the /ui pages; Debian's package, driven by Playwright's
# Python client; `playwright install` is never run). Installed only when missing and only as
# root; otherwise those tests skip locally (and fails under CI=true).
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: no Chromium and not root: the browser tests will skip (apt-get install chromium)"; fi

test: install
	$(VENV)/bin/ruff check --select F,E9 .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

# Table 3 on Iris with the paper's protocol at demo size (5 seeds x 2 splits, 100 epochs);
# `rnnhpo reproduce table3 --dataset iris` runs the full 10 seeds x 5 splits x 300 epochs.
demo: install
	$(VENV)/bin/rnnhpo reproduce table3 --dataset iris --quick

# The wheels a lent GPU machine's image lacks (it has torch, triton, numpy, pytest; the trainer also needs
# pydantic), for benchmarks/gpu_session.sh: downloaded into .whl/, which git ignores.
gpu-wheels:
	grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0

bench: install
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
