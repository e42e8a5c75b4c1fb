# CloudMart: the two commands that matter are `make run` and `make test`.
# `make help` lists everything.

CARGO ?= cargo
# Not --quiet: cargo's progress (on stderr) is all there is to see during
# the first build, which takes minutes. Once built, cargo prints two lines
# and the command's own output follows.
CLI := $(CARGO) run -p cloudmart-cli --bin cloudmart --
# Where `make install` puts `cloudmart`: $(PREFIX)/bin. PROFILE=release for
# an optimised build (a second full compile, much longer than dev's).
PREFIX ?= $(HOME)/.cargo
PROFILE ?= dev
# The embedded store's directory, as database-service reads it (DATA_DIR).
DATA_DIR ?= data
CLUSTER ?= brokenprod
# Compose v2 where it exists (`docker compose`), else v1 (`docker-compose`).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.DEFAULT_GOAL := help
.PHONY: help run install clean-data test test-containers lint manifests bench smoke infra-up infra-down engine-up images k3d-up import break fix reset compose-up compose-down doctor

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-16s %s\n", $$1, $$2}'

run: ## Build and start all six services with embedded defaults (gateway on :8080)
	$(CLI) up

install: ## Put `cloudmart` on PATH: ~/.cargo/bin (PREFIX=dir for dir/bin; PROFILE=release to optimise)
	$(CARGO) install --path crates/cli --bin cloudmart --locked --profile $(PROFILE) --root "$(PREFIX)"

clean-data: ## Delete the orders `make run` stored (data/*.jsonl, or DATA_DIR's); stop `make run` first
	rm -f -- "$(DATA_DIR)"/*.jsonl

test: lint manifests ## fmt check, clippy -D warnings, manifest checks, every test against real servers, then containers
	scripts/test.sh
	scripts/test-containers.sh

test-containers: ## Images, the compose stack and the incident's faults in real containers (starts an engine if needed)
	scripts/test-containers.sh

lint: ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

manifests: ## Render and schema-check k8s/, k8s-broken/, observability; parse compose; shellcheck
	scripts/check-manifests.sh

bench: ## Release build; export off/on at 1000 orders/s, then the goals table (CPU/order, wrk, RabbitMQ+Redis p99, gateway vs nginx, RSS, cold builds, spans); fault 7; images; the soak (BENCH_SOAK=0 skips it)
	scripts/bench.sh

.PHONY: profile
profile: ## perf on one service under the bench's closed loop (PROFILE_SERVICE=api-service, PROFILE_SECONDS=10); prints the top symbols
	scripts/profile.sh

.PHONY: bench-cold
bench-cold: ## Time a cold `make run` to its first answer (WHAT=test: all of `make test`) and record it in docs/bench/builds.txt
	scripts/bench-cold.sh $(or $(WHAT),run)

.PHONY: soak
soak: ## 100 orders/s for 10 min against MongoDB, RabbitMQ, Redis; RSS per service each minute, slope, flat or not (SOAK_SECS, SOAK_RATE)
	scripts/soak.sh

smoke: ## Place 20 orders through the gateway (CLOUDMART_URL, default :8080)
	$(CLI) smoke

doctor: ## Static analysis of k8s-broken/ (DIR=... for another directory)
	$(CLI) doctor manifests $(or $(DIR),k8s-broken)

infra-up: ## Start MongoDB (nx-27017), RabbitMQ and Redis; prints the exports
	@scripts/infra.sh up

infra-down: ## Stop what infra-up started (never a Redis or RabbitMQ that was already running)
	@scripts/infra.sh down

engine-up: ## Make sure a Docker engine answers (starts one on Debian if none does); prints DOCKER_HOST
	@scripts/engine.sh up

images: ## Build the seven images from the Dockerfile; prints build time and sizes
	scripts/images.sh

k3d-up: ## Create the workshop cluster (CLUSTER=brokenprod; host :8080 -> ingress)
	scripts/k3d-up.sh $(CLUSTER)

import: ## Build every image and import it into the k3d cluster
	scripts/build-and-import.sh $(CLUSTER)

break: ## Apply the incident (k8s-broken/) to the current cluster
	kubectl apply -f k8s-broken/

fix: ## Apply the healthy manifests and restart pods so ConfigMap changes take effect
	kubectl apply -f k8s/ && kubectl rollout restart deployment -n production

reset: ## Delete the production namespace and apply k8s-broken/ again (DIR=k8s for healthy)
	scripts/reset.sh $(DIR)

compose-up: ## Everything in Docker Compose; shop on :8080 (profile load adds traffic)
	$(COMPOSE) up --build -d

compose-down: ## Stop Compose and delete its volumes
	$(COMPOSE) down -v
