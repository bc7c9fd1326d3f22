# Two commands on a fresh machine:
#   make run   - set everything up, fetch MNIST, open the app
#   make test  - set everything up, run the whole test suite
# Both are idempotent: .venv is (re)built only when missing or when
# requirements.txt / pyproject.toml changed.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
# `make run` is for one learner on this machine: only it can reach the app.
ADDRESS ?= 127.0.0.1

.PHONY: run test data browser weights bench clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m digitrec data

# Debian's Chromium for the browser tests (playwright cannot download one here).
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || scripts/install-chromium

run: $(STAMP) data
	$(PY) -m streamlit run streamlit_app/app.py --server.address=$(ADDRESS) --server.port=$(PORT) --browser.gatherUsageStats=false

test: $(STAMP) data browser
	$(PY) -m pytest

# Reproduce the committed pretrained weights (fixed seeds; see weights/README.md).
weights: $(STAMP) data
	$(PY) -m digitrec train --model fc --epochs 15 --lr 0.003 --schedule cosine --seed 0 --out weights/fc.safetensors
	$(PY) -m digitrec train --model cnn --epochs 8 --lr 0.005 --schedule cosine --seed 0 --out weights/cnn.safetensors

bench: $(STAMP) data
	$(PY) -m digitrec bench

clean:
	rm -rf $(VENV) .pytest_cache tests/screenshots
