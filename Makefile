# Agora: two commands matter, `make up` and `make test`. Both create .venv/ on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: up test check lint bench bench-verify clean browser

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first and pinned: unpinned, pip would fetch a CUDA build of several GB
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/agora up

# The dashboard's browser tests drive Debian's Chromium (never a downloaded browser).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) browser
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check agora tests bench
	$(VENV)/bin/ruff format --check agora tests bench
	$(VENV)/bin/mypy agora/protocol agora/crypto

check: lint test

bench: $(STAMP)
	$(PY) -m bench

# Every adversary against every verification layer: the table in the README.
bench-verify: $(STAMP)
	$(PY) -m bench verify

clean:
	rm -rf $(VENV) .agora .pytest_cache .mypy_cache .ruff_cache
