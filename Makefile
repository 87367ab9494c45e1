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

.PHONY: all venv proto proto-check lint buf-lint gateway-check typecheck importcheck frontend node-client test test-fast test-postgres bench demo clean

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

# The one definition of the Python code generation: stubs and .pyi types of every contract in
# proto/, into the folder $(1), each package a typed Python package.
define generate_python
	$(PY) -m grpc_tools.protoc -I proto -I $(GRPC_TOOLS_INCLUDE) \
		--python_out=$(1) --grpc_python_out=$(1) --mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTOS)
	find $(1)/flnet/api -type d -exec sh -c 'touch "$$0/__init__.py" "$$0/py.typed"' {} \;
endef

# Regenerate generated/ from proto/.
proto: venv
	rm -rf generated/flnet
	mkdir -p generated
	$(call generate_python,generated)

# Fails when generated/ is not what `make proto` produces from proto/.
proto-check: venv
	rm -rf .proto-check && mkdir -p .proto-check
	$(call generate_python,.proto-check)
	diff -r -x __pycache__ .proto-check/flnet generated/flnet && rm -rf .proto-check

# The contracts: buf's STANDARD lint, its formatting, and no breaking change against the
# previous commit (when there is one: a shallow clone has none to compare with).
buf-lint: node_modules/.installed
	npx buf lint
	npx buf format --diff --exit-code
	if git rev-parse -q --verify HEAD~1 >/dev/null; then \
		npx buf breaking --against '.git#ref=HEAD~1'; fi

# The gateway's template, rendered with two replicas and the embedded issuer, checked by Envoy.
gateway-check: venv
	rm -rf .gateway-check && mkdir -p .gateway-check
	FLNET_OIDC_ISSUER=http://127.0.0.1:8080/oidc $(PY) -m flnet.gateway --validate \
		--data-dir .gateway-check --control 127.0.0.1:50051,127.0.0.1:50061 \
		--issuer-upstream 127.0.0.1:8081 --access-log .gateway-check/access.log
	rm -rf .gateway-check

# The web UI (frontend/): TypeScript client generated from proto/, built into frontend/dist,
# which `flnet up` serves through the gateway.
FRONTEND_SOURCES := $(shell find frontend/src frontend/index.html frontend/*.json frontend/*.ts frontend/*.yaml proto -type f -not -path 'frontend/src/gen/*' 2>/dev/null)
frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	npm --prefix frontend ci --no-audit --no-fund --silent
	touch $@

frontend/dist/index.html: frontend/node_modules/.installed $(FRONTEND_SOURCES)
	npm --prefix frontend run --silent build
	touch $@

frontend: frontend/dist/index.html

# The example Node.js client (examples/clients/node): its stubs generated from proto/.
NODE_CLIENT := examples/clients/node
$(NODE_CLIENT)/gen/.generated: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json $(NODE_CLIENT)/buf.gen.yaml $(shell find proto -type f)
	npm --prefix $(NODE_CLIENT) ci --no-audit --no-fund --silent
	cd $(NODE_CLIENT) && npx buf generate
	touch $@

node-client: $(NODE_CLIENT)/gen/.generated

lint: venv buf-lint gateway-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees the installed layout (flnet.control -> control/, ...) through a symlink view.
typecheck: venv
	rm -rf .typecheck && mkdir -p .typecheck/flnet
	for f in flnet/*; do ln -s "$(CURDIR)/$$f" .typecheck/flnet/; done
	ln -s $(CURDIR)/generated/flnet/api .typecheck/flnet/api
	for d in control orchestrator runtime gateway issuer; do ln -s "$(CURDIR)/$$d" ".typecheck/flnet/$$d"; done
	cd .typecheck && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --config-file ../pyproject.toml flnet
	MYPYPATH=.typecheck $(BIN)/mypy $$(ls -d examples bench tests 2>/dev/null)

importcheck: typecheck
	cd .typecheck && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports ../pyproject.toml

# The whole suite: static checks first, the web UI's unit tests, then every test on the
# embedded defaults (SQLite, local files), then again on a deployment's components
# (PostgreSQL, S3 on SeaweedFS) but for the browser and gateway tests, whose `flnet up`
# stacks choose their own database (the browser's replica test, a private PostgreSQL).
test: venv node_modules/.installed frontend node-client proto-check lint typecheck importcheck
	npm --prefix frontend test --silent
	$(BIN)/pytest -q -p no:cacheprovider
	$(BIN)/pytest -q -p no:cacheprovider --database postgresql --artifacts s3 -m 'not browser' \
		--ignore tests/gateway

test-fast: venv node_modules/.installed
	$(BIN)/pytest -q -x -m 'not slow'

# The suite with PostgreSQL as the control plane's database: the tests start a private cluster
# (tests/postgres.py; needs `apt-get install -y postgresql`). POSTGRES_TESTS narrows it, e.g.
# `make test-postgres POSTGRES_TESTS="tests/control tests/access tests/integration"`.
POSTGRES_TESTS ?=
test-postgres: venv node_modules/.installed
	$(BIN)/pytest -q -p no:cacheprovider --database postgresql $(POSTGRES_TESTS)

bench: venv
	$(PY) -m bench

# Starts the embedded stack, registers an example tool, runs it and shows the
# provenance. Data lives in ./.demo-data unless FLNET_DATA_DIR says otherwise.
demo: venv frontend
	$(BIN)/flnet --data-dir $${FLNET_DATA_DIR:-$(CURDIR)/.demo-data} demo

clean:
	rm -rf $(VENV) .typecheck .proto-check .gateway-check .demo-data build *.egg-info node_modules \
		frontend/node_modules frontend/dist frontend/src/gen
