# Crogia — `just run` starts the server, `just test` runs the tests.
# Every recipe installs what it needs first, so each works on a fresh machine.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Install what this machine lacks: Docker engine, plugin toolchain, sandbox image (and a minimal one the tests use). Idempotent.
setup: rust docker sandbox-agent
    @bash plugins/build.sh --toolchain-only
    @bash sandbox/build-image.sh
    @bash sandbox/build-minimal-image.sh

# Check the Rust toolchain (rustup's stable, 1.95 or newer).
rust:
    @command -v cargo >/dev/null || { echo "rust: cargo not found; install Rust with rustup (https://rustup.rs)"; exit 1; }
    @echo "rust: $(rustc --version)"

# Make sure a Docker engine answers (installs and starts Debian's where none does).
docker:
    @bash sandbox/ensure-docker.sh

# Start a second Docker engine on this machine (own socket and data root, the
# sandbox images loaded); the tests run sessions on it as on a remote engine.
engine2: docker
    @bash sandbox/ensure-second-engine.sh

# Build the tool plugins (wasm32-wasip2 components) into plugins/dist/.
build-plugins:
    @bash plugins/build.sh

# Build the sandbox agent: one static binary, target/crogia-agent, mounted into every container.
sandbox-agent: rust
    @bash sandbox/agent/build.sh

# Build the sandbox image offline (skipped when present).
sandbox-image: docker
    @bash sandbox/build-image.sh

# Start the server (release build) on 127.0.0.1:8000; extra args go to `crogia serve`.
run *ARGS: rust docker build-plugins sandbox-image sandbox-agent
    cargo run --release -p crogia-host --bin crogia -- serve {{ARGS}}

# What the client tests need: the contract examples' Python packages, Node, headless Chromium.
test-clients:
    @python3 -c "import aiohttp, websockets" 2>/dev/null || { echo "test-clients: pip install aiohttp websockets"; python3 -m pip install --quiet --disable-pip-version-check aiohttp websockets; }
    @python3 -c "import importlib.metadata as m; assert m.version('mcp') == '2.3.0'" 2>/dev/null || { echo "test-clients: pip install mcp==2.3.0 (the official MCP SDK, a real peer for the MCP tests)"; python3 -m pip install --quiet --disable-pip-version-check mcp==2.3.0; }
    @command -v node >/dev/null || echo "test-clients: node not found; the JavaScript example test will fail"
    @command -v chromedriver >/dev/null || { echo "test-clients: installing Debian's chromium and chromium-driver"; \
        { [ "$(id -u)" = 0 ] && SUDO= || SUDO=sudo; }; \
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Run every test against the real Docker engine, real plugins and a real server,
# then a short fuzz pass of the API against its own document (all checks).
test: setup build-plugins test-clients
    #!/usr/bin/env bash
    set -euo pipefail
    engine2=unix://${CROGIA_ENGINE2_DIR:-/var/lib/crogia-engine2}/docker.sock
    engine2_was_up=no
    docker -H "$engine2" info >/dev/null 2>&1 && engine2_was_up=yes
    postgres_was_up=no
    pg_isready -q -h 127.0.0.1 -p "${CROGIA_POSTGRES_PORT:-54329}" 2>/dev/null && postgres_was_up=yes
    # Containers and volumes the tests made are removed even when a test
    # process dies; a second engine this run started is stopped.
    cleanup() {
      for host in "" "$engine2"; do
        docker ${host:+-H "$host"} ps -aq --filter label=crogia.test 2>/dev/null | xargs -r docker ${host:+-H "$host"} rm -f -v >/dev/null || true
        docker ${host:+-H "$host"} volume ls -q --filter label=crogia.test 2>/dev/null | xargs -r docker ${host:+-H "$host"} volume rm -f >/dev/null || true
      done
      if [ "$engine2_was_up" = no ]; then bash sandbox/ensure-second-engine.sh --stop; fi
      bash tests/ensure-postgres.sh --sweep || true
      if [ "$postgres_was_up" = no ]; then bash tests/ensure-postgres.sh --stop; fi
    }
    trap cleanup EXIT
    bash sandbox/ensure-second-engine.sh
    # A PostgreSQL cluster (Debian's, installed when missing); each test that
    # uses it makes a database of its own and drops it.
    bash tests/ensure-postgres.sh
    cargo test --workspace --locked
    bash tests/fuzz/api.sh 5

# The performance suite: one table of ratios against baselines measured in the same run (bench/RESULTS.md).
# Name groups to run only those (start create shell files agent egress grep checkpoint fanout crossserver engines throughput pool plugin); the table is then only printed.
bench *GROUPS: setup build-plugins
    @command -v wrk >/dev/null || { echo "bench: installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }
    @command -v rg >/dev/null || { echo "bench: installing ripgrep (Debian package), the grep baseline"; apt-get install -y -qq ripgrep >/dev/null || { apt-get update -qq && apt-get install -y -qq ripgrep >/dev/null; }; }
    cargo build --release --locked -p crogia-host --bin crogia
    @bash tests/ensure-postgres.sh
    @bash sandbox/ensure-second-engine.sh
    {{ if GROUPS == "" { "cargo bench --locked -p crogia-tests --bench micro" } else { "true" } }}
    cargo bench --locked -p crogia-tests --bench suite -- {{GROUPS}}

# Fuzz the API from its own OpenAPI document (schemathesis, all checks): the
# server does exactly what the document says. A random seed unless one is given.
fuzz examples="40" seed="": setup build-plugins
    cargo build --locked -p crogia-host --bin crogia
    bash tests/fuzz/api.sh {{examples}} {{seed}}

# Format check and clippy with warnings as errors (host workspace and plugins).
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cd plugins && cargo fmt --all -- --check

# Scaffold a new plugin crate: just new-plugin my_tool
new-plugin NAME:
    @bash plugins/new-plugin.sh {{NAME}}
