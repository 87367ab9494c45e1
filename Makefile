# FLNet task runner. Every target works on a fresh clone: it creates the
# virtual environment it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$(PATH)
PROTOS := $(shell find proto -name '*.proto' | sort)
GRPC_TOOLS_INCLUDE = $(shell $(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

.PHONY: all venv proto proto-check lint buf-lint typecheck importcheck test test-fast test-postgres bench demo clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# buf (contracts lint) and oidc-provider (the interoperability tests' external issuer).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

# Regenerate the Python stubs (and .pyi types) of every contract in proto/.
proto: venv
	rm -rf generated/flnet
	mkdir -p generated
	$(PY) -m grpc_tools.protoc -I proto -I $(GRPC_TOOLS_INCLUDE) \
		--python_out=generated --grpc_python_out=generated \
		--mypy_out=generated --mypy_grpc_out=generated $(PROTOS)
	find generated/flnet/api -type d -exec sh -c 'touch "$$0/__init__.py" "$$0/py.typed"' {} \;

# Fails when generated/ is not what `make proto` produces from proto/.
proto-check: venv
	rm -rf .proto-check && mkdir -p .proto-check
	$(PY) -m grpc_tools.protoc -I proto -I $(GRPC_TOOLS_INCLUDE) \
		--python_out=.proto-check --grpc_python_out=.proto-check \
		--mypy_out=.proto-check --mypy_grpc_out=.proto-check $(PROTOS)
	find .proto-check/flnet/api -type d -exec sh -c 'touch "$$0/__init__.py" "$$0/py.typed"' {} \;
	diff -r -x __pycache__ .proto-check/flnet generated/flnet && rm -rf .proto-check

buf-lint: node_modules/.installed
	npx buf lint

lint: venv buf-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees the installed layout (flnet.control -> control/, ...) through a symlink view.
typecheck: venv
	rm -rf .typecheck && mkdir -p .typecheck/flnet
	for f in flnet/*; do ln -s "$(CURDIR)/$$f" .typecheck/flnet/; done
	ln -s $(CURDIR)/generated/flnet/api .typecheck/flnet/api
	for d in control orchestrator runtime; do ln -s "$(CURDIR)/$$d" ".typecheck/flnet/$$d"; done
	cd .typecheck && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file ../pyproject.toml flnet
	MYPYPATH=.typecheck $(BIN)/mypy $$(ls -d examples bench tests 2>/dev/null)

importcheck: typecheck
	cd .typecheck && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports ../pyproject.toml

# The whole suite: static checks first, then every test on the embedded defaults (SQLite,
# local files), then again on a deployment's components (PostgreSQL, S3 on SeaweedFS).
test: venv node_modules/.installed proto-check lint typecheck importcheck
	$(BIN)/pytest -q -p no:cacheprovider
	$(BIN)/pytest -q -p no:cacheprovider --database postgresql --artifacts s3

test-fast: venv node_modules/.installed
	$(BIN)/pytest -q -x -m 'not slow'

# The suite with PostgreSQL as the control plane's database: the tests start a private cluster
# (tests/postgres.py; needs `apt-get install -y postgresql`). POSTGRES_TESTS narrows it, e.g.
# `make test-postgres POSTGRES_TESTS="tests/control tests/access tests/integration"`.
POSTGRES_TESTS ?=
test-postgres: venv node_modules/.installed
	$(BIN)/pytest -q -p no:cacheprovider --database postgresql $(POSTGRES_TESTS)

bench: venv
	$(PY) -m bench.telemetry
	$(PY) -m bench.dispatch
	$(PY) -m bench.auth
	$(PY) -m bench.artifacts

# Starts the embedded stack, registers an example tool, runs it and shows the
# provenance. Data lives in ./.demo-data unless FLNET_DATA_DIR says otherwise.
demo: venv
	$(BIN)/flnet --data-dir $${FLNET_DATA_DIR:-$(CURDIR)/.demo-data} demo

clean:
	rm -rf $(VENV) .typecheck .proto-check .demo-data build *.egg-info node_modules
