# Two commands on a fresh machine:
#   make run   - set everything up, fetch MNIST, open the app
#   make test  - set everything up, run the whole test suite
# Both are idempotent: .venv is (re)built only when missing or when
# requirements.txt / pyproject.toml changed.
# ENGINE=ray (make run / make serve): runs train on the Ray cluster at
# $DIGITREC_RAY_ADDRESS (see the README); the optional requirements-ray.txt is installed first.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
ENGINE ?=
# The optional Ray requirements, when the engine is Ray.
ENGINE_DEPS := $(if $(filter ray,$(ENGINE)),$(RAY_STAMP))
PORT   ?= 8501
# `make run` is for one learner on this machine: only it can reach the app.
ADDRESS ?= 127.0.0.1

.PHONY: run test data browser nginx serve load weights bench clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# The optional Ray requirements (make test runs the Ray integration test; ENGINE=ray needs them).
$(RAY_STAMP): requirements-ray.txt constraints.txt | $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-ray.txt -c constraints.txt
	touch $(RAY_STAMP)

data: $(STAMP)
	$(PY) -m digitrec data

# Debian's Chromium for the browser tests (playwright cannot download one here).
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || scripts/install-chromium

# Debian's nginx for `make serve` and its test (run as our own child process, never the service).
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || scripts/install-nginx

run: $(STAMP) $(ENGINE_DEPS) data
	$(PY) -m streamlit run streamlit_app/app.py --server.address=$(ADDRESS) --server.port=$(PORT) --browser.gatherUsageStats=false $(if $(ENGINE),-- --engine $(ENGINE))

test: $(STAMP) $(RAY_STAMP) data browser nginx
	$(PY) -m pytest

# For a class: REPLICAS app processes (default: one per core) behind nginx on
# SERVE_ADDRESS:SERVE_PORT (default every interface, port 8080). Ctrl-C stops it all.
SERVE_ADDRESS ?= 0.0.0.0
SERVE_PORT    ?= 8080
REPLICAS      ?=
serve: $(STAMP) $(ENGINE_DEPS) data nginx
	$(PY) scripts/serve --address $(SERVE_ADDRESS) --port $(SERVE_PORT) $(if $(REPLICAS),--replicas $(REPLICAS)) $(if $(ENGINE),--engine $(ENGINE))

# The load test: classes of 2, 4 and 8 learners on one server, then 8 through `make serve`.
# Prints median and p95 page times (browser and server side); results in tests/load/results/.
load: $(STAMP) data browser nginx
	DIGITREC_LOAD_N="2 4 8" $(PY) -m pytest tests/load -m "load or big_class" -s -q -p no:cacheprovider

# Reproduce the committed pretrained weights (fixed seeds; see weights/README.md).
# On the CPU, one thread: the committed files were made so, and a GPU or another thread count changes
# float rounding.
weights: $(STAMP) data
	DIGITREC_DEVICE=cpu OMP_NUM_THREADS=1 $(PY) -m digitrec train --model fc --epochs 15 --lr 0.003 --schedule cosine --seed 0 --augment-shift 1 --augment-rotation 10 --out weights/fc.safetensors
	DIGITREC_DEVICE=cpu OMP_NUM_THREADS=1 $(PY) -m digitrec train --model cnn --float32 --epochs 8 --lr 0.005 --schedule cosine --seed 0 --augment-shift 2 --augment-rotation 15 --out weights/cnn.safetensors
	DIGITREC_DEVICE=cpu $(PY) -m digitrec train --model fc --hidden none --epochs 10 --lr 0.003 --schedule cosine --seed 0 --out weights/linear.safetensors

bench: $(STAMP) data
	$(PY) -m digitrec bench --json bench.json

clean:
	rm -rf $(VENV) .pytest_cache tests/screenshots
