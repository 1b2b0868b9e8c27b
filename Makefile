# Everything a newcomer runs. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Compose v2 plugin if present, else Debian's docker-compose 1.29.
COMPOSE_BIN := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo "docker-compose")
PROJECT ?= pubsub-rpc
# CLUSTER=1: Redis as a three-master Redis Cluster, the services in cluster mode (sharded
# pub/sub): deploy/cluster/compose.cluster.yaml on top of compose.yaml (`make cluster`).
# HA=1: the `ha` profile (a replica and three sentinels) with deploy/ha/compose.ha.yaml, which
# switches the services to Sentinel mode (`make ha`).
CLUSTER ?=
CLUSTER_FILE := deploy/cluster/compose.cluster.yaml
HA ?=
HA_FILE := deploy/ha/compose.ha.yaml
COMPOSE := $(COMPOSE_BIN) -p $(PROJECT) -f compose.yaml $(if $(CLUSTER),-f $(CLUSTER_FILE)) $(if $(HA),-f $(HA_FILE))
# down / logs / ps see every topology's containers, whichever was started.
COMPOSE_ALL := $(COMPOSE_BIN) -p $(PROJECT) -f compose.yaml -f $(CLUSTER_FILE) -f $(HA_FILE)
# Written by scripts/bootstrap.sh only where the official images cannot be pulled.
-include .images.env
-include .images.peers.env
-include .images.observability.env
export PYTHON_IMAGE REDIS_IMAGE NODE_IMAGE PHP_IMAGE PROMETHEUS_IMAGE
# PEERS=1: also the `peers` profile (Node.js and PHP containers speaking the seed's protocol),
# and node_like_caller calls the PHP one now and then.
PEERS ?=
ifneq ($(PEERS),)
export RPC_PEER_CHANNEL ?= laravel_database_php
endif
# OBSERVABILITY=1: also the `observability` profile (Prometheus with the rules in
# deploy/prometheus/, its UI on 127.0.0.1:$(PROMETHEUS_PORT)).
OBSERVABILITY ?=
PROMETHEUS_PORT ?= 9090
export PROMETHEUS_PORT
comma := ,
PROFILES := $(strip $(if $(PEERS),peers) $(if $(OBSERVABILITY),observability) $(if $(HA),ha))
ifneq ($(PROFILES),)
export COMPOSE_PROFILES := $(subst $() ,$(comma),$(PROFILES))
endif
# down / logs / ps see every profile's containers, whichever ones were started.
ALL_PROFILES := --profile peers --profile observability --profile ha
GATEWAY_PORT ?= 8080
export GATEWAY_PORT
# REPLICAS=3: that many laravel_like_responder containers on one channel; they claim each
# request so it runs once (docs/scale-out.md). scripts/wait_healthy.sh waits for all of them.
REPLICAS ?= 1
ACTION ?= actions
DATA ?= null
CHANNEL ?=
PYTEST_ARGS ?=

.PHONY: help setup dev test lint lock lock-upgrade lock-check up peers observability cluster ha down logs ps call e2e chaos check bench bench-quick bootstrap bootstrap-peers bootstrap-observability secrets new-service

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-23s %s\n", $$1, $$2}'

setup: ## install what host runs need (apt packages as root, .venv, Node interop peer)
	@bash scripts/setup.sh

dev: setup ## run the whole system as host processes (no Docker); Ctrl-C stops it
	@.venv/bin/python -m scripts.dev

test: setup ## unit, integration, interop and browser tests against a real redis-server
	@.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: setup ## ruff, mypy (strict for the library), and the lock files match their inputs
	@.venv/bin/ruff check lib services tests e2e scripts $(wildcard bench)
	@.venv/bin/ruff format --check lib services tests e2e scripts $(wildcard bench)
	@.venv/bin/mypy
	@$(MAKE) --no-print-directory lock-check

# The locks: requirements.txt / requirements-dev.txt are generated (exact versions, hashes for
# every platform and Python >= 3.11) from the human-edited requirements.in / requirements-dev.in,
# by the uv pinned in requirements-dev.in.
UV_COMPILE = $(CURDIR)/.venv/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock"
lock: setup ## regenerate requirements*.txt from requirements*.in (keeps locked versions that still fit)
	@$(UV_COMPILE) $(LOCK_ARGS) requirements.in -o requirements.txt
	@$(UV_COMPILE) $(LOCK_ARGS) requirements-dev.in -o requirements-dev.txt

lock-upgrade: ## regenerate the locks with the newest versions the inputs allow
	@$(MAKE) --no-print-directory lock LOCK_ARGS=--upgrade

lock-check: setup ## fail if requirements*.txt are not what `make lock` would write
	@tmp=$$(mktemp -d); cp requirements*.in requirements*.txt "$$tmp"/; \
	(cd "$$tmp" && $(UV_COMPILE) requirements.in -o requirements.txt && $(UV_COMPILE) requirements-dev.in -o requirements-dev.txt) \
	  && diff -u requirements.txt "$$tmp/requirements.txt" && diff -u requirements-dev.txt "$$tmp/requirements-dev.txt"; \
	status=$$?; rm -rf "$$tmp"; \
	[ $$status = 0 ] || echo "The lock files do not match requirements*.in: run 'make lock' and commit both." >&2; exit $$status

bootstrap: ## Docker engine and base images (only what is missing)
	@bash scripts/bootstrap.sh

secrets: ## create the git-ignored .secrets/ (Redis ACL passwords and file, JWT key) where missing
	@python3 scripts/make_secrets.py

bootstrap-peers: ## base images of the peers profile (node, php; only what is missing)
	@bash scripts/bootstrap_peers.sh

bootstrap-observability: ## base image of the observability profile (prometheus; only if missing)
	@bash scripts/bootstrap_observability.sh

up: bootstrap secrets $(if $(PEERS),bootstrap-peers) $(if $(OBSERVABILITY),bootstrap-observability) ## build and start the stack in Docker (demo mode), wait until healthy, print the URL (PEERS=1: with the peers; OBSERVABILITY=1: with Prometheus; REPLICAS=3: three responders; HA=1: Sentinel; CLUSTER=1: Redis Cluster)
	@$(MAKE) --no-print-directory _up

peers: ## make up PEERS=1: the stack plus the Node.js and PHP seed-protocol peers
	@$(MAKE) --no-print-directory up PEERS=1

observability: ## make up OBSERVABILITY=1: the stack plus Prometheus scraping it, with alert rules
	@$(MAKE) --no-print-directory up OBSERVABILITY=1

cluster: ## make up CLUSTER=1: the stack on a three-master Redis Cluster (sharded pub/sub for v1 traffic)
	@$(MAKE) --no-print-directory up CLUSTER=1
ha: ## make up HA=1: Redis master + replica + 3 sentinels, the services in Sentinel mode (stop `redis` to see a failover)
	@$(MAKE) --no-print-directory up HA=1

# Demo mode (tokens minted for the page) only here: compose.yaml defaults to off.
# `GATEWAY_DEMO_MODE=false make up` runs the gateway with .secrets/gateway-jwt.secret alone.
_up:
	@GATEWAY_DEMO_MODE=$(or $(GATEWAY_DEMO_MODE),true) $(COMPOSE) up -d --build --remove-orphans --scale laravel_like_responder=$(REPLICAS)
	@bash scripts/wait_healthy.sh "$(COMPOSE)" 120 laravel_like_responder=$(REPLICAS)
	@echo
	@echo "  Demo page:    http://127.0.0.1:$(GATEWAY_PORT)/"
	@$(if $(OBSERVABILITY),echo "  Prometheus:   http://127.0.0.1:$(PROMETHEUS_PORT)/  (targets: /targets, alerts: /alerts)")
	@echo "  A call:       make call ACTION=sum DATA='[1, 2, 3]'"
	@echo "  Logs / stop:  make logs / make down"

down: ## stop and remove containers, networks and volumes
	@$(COMPOSE_ALL) $(ALL_PROFILES) down -v --remove-orphans

logs: ## follow the services' logs
	@$(COMPOSE_ALL) $(ALL_PROFILES) logs -f --tail=50

ps: ## show the containers and their health
	@$(COMPOSE_ALL) $(ALL_PROFILES) ps

call: ## one call through the caller container: make call ACTION=sum DATA='[1,2]' [CHANNEL=laravel_database_php]
	@$(COMPOSE) exec -T $(if $(CHANNEL),-e RPC_CHANNEL=$(CHANNEL)) node_like_caller python -m node_like_caller call "$(ACTION)" '$(DATA)'

new-service: ## copy the template service as NAME, with the library, into DEST: make new-service NAME=orders DEST=~/shop
	@bash scripts/new_service.sh "$(NAME)" "$(DEST)"

e2e: setup bootstrap bootstrap-peers bootstrap-observability secrets ## end-to-end tests against the real containers (own project, own port)
	@.venv/bin/python -m pytest e2e -p no:cacheprovider -o timeout=300 $(PYTEST_ARGS)

chaos: setup bootstrap secrets ## only the e2e chaos suite: faults under load on 3 responders and 2 gateways (about 3 minutes)
	@.venv/bin/python -m pytest e2e -m chaos -p no:cacheprovider -o timeout=300 $(PYTEST_ARGS)

check: test e2e ## both suites

bench: setup ## benchmarks on the host (about 10 minutes); results in bench/results/
	@.venv/bin/python -m bench

bench-quick: setup ## the benchmark's smoke mode (under a minute)
	@.venv/bin/python -m bench --quick
