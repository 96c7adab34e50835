# PicFilter: the same short command list as the README and CI.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000
export PORT

.PHONY: install run test test-fast test-embedded test-postgres test-fuzz lint format migrate bench bench-load clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install PicFilter with its dev tools

run: install ## migrate and serve http://127.0.0.1:$(PORT) (embedded default: SQLite, local storage, a worker)
	$(VENV)/bin/picfilter serve

test: install ## every test: embedded stack (and the doctests of app/ml), then PostgreSQL + Redis + S3 (moto)
	PICFILTER_TEST_BACKEND=embedded $(VENV)/bin/pytest --doctest-modules app/ml tests
	PICFILTER_TEST_BACKEND=postgres $(VENV)/bin/pytest --ignore=tests/test_ml

test-fast: install ## the inner loop: embedded stack without the slow tests (worker, browser, proxy)
	PICFILTER_TEST_BACKEND=embedded $(VENV)/bin/pytest -m "not slow" --doctest-modules app/ml tests $(ARGS)

test-embedded: install
	PICFILTER_TEST_BACKEND=embedded $(VENV)/bin/pytest $(ARGS)

test-postgres: install
	PICFILTER_TEST_BACKEND=postgres $(VENV)/bin/pytest --ignore=tests/test_ml $(ARGS)

FUZZ_BACKEND ?= postgres
FUZZ_MAX_EXAMPLES ?= 50
FUZZ_SEED ?= random
test-fuzz: install ## schemathesis over every operation (all phases) against a served API and a real worker
	PICFILTER_TEST_BACKEND=$(FUZZ_BACKEND) FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) \
		FUZZ_PHASES=examples,coverage,fuzzing,stateful FUZZ_SEED=$(FUZZ_SEED) \
		$(VENV)/bin/pytest tests/test_fuzz.py -s -p no:cacheprovider $(ARGS)

lint: install ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check app tests
	$(VENV)/bin/mypy app

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format app tests

migrate: install ## apply database migrations
	$(VENV)/bin/picfilter migrate

bench: install ## benchmarks (python -m bench NAME to run one); gallery wants wrk, PostgreSQL, Redis
	@command -v wrk >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null 2>&1)) || \
		echo "wrk not installed: the gallery benchmark uses its httpx load generator"
	$(PY) -m bench

bench-load: install ## 60 s of mixed traffic (locust) on PostgreSQL + Redis + moto S3, uvicorn x2, a worker
	$(PY) -m bench load

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
