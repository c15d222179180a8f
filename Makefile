# genpipe — everyday commands. `make run` and `make test` install on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOB    ?= jobs/digits-dcgan.yaml

.PHONY: install run test test-fast bench bench-quick lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

run: install  ## train, evaluate, sample and publish the default job on an embedded local Ray
	$(VENV)/bin/genpipe run $(JOB)

test: install  ## the whole suite: unit, integration (real local Ray), end to end (ray head, S3 server)
	$(PY) -m pytest -q -ra --durations=15

test-fast: install  ## everything but the slow end-to-end tests
	$(PY) -m pytest -q -m "not e2e"

bench: install  ## benchmarks: pipeline vs naive loop vs plain Ray Data peer vs machine ceilings
	$(PY) bench/sampling.py
	$(PY) bench/ray_startup.py
	$(PY) bench/ddp_step.py
	$(PY) bench/png_deflate.py

bench-quick: install
	$(PY) bench/sampling.py --quick
	$(PY) bench/ray_startup.py --quick
	$(PY) bench/ddp_step.py --quick
	$(PY) bench/png_deflate.py --quick

lint: install
	$(VENV)/bin/ruff check pipeline tests bench

clean:
	rm -rf outputs .pytest_cache
