# Shared by scripts/bootstrap, scripts/run and scripts/test (sourced, not executed).
# Sets REPO, DELTAVAULT_HOME, BASE_PY, VENV and PY (the interpreter of ./.venv, where the project is installed).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DELTAVAULT_HOME="${DELTAVAULT_HOME:-$REPO/var}"
export PYTHONUNBUFFERED=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() {
    if [[ -t 2 ]]; then printf '\033[1m[deltavault]\033[0m %s\n' "$*" >&2; else printf '[deltavault] %s\n' "$*" >&2; fi
}
die() { log "error: $*"; exit 1; }

# The project is installed into ./.venv, a virtual environment that sees the system's site-packages (so torch and
# friends installed there are reused, nothing is downloaded twice) while the editable install of this checkout
# (and its native extension) stays private to the checkout: two clones on one machine never re-point each other's
# `modelcodecs`. BASE_PY makes the venv: $PYTHON if given, else python3.
BASE_PY="${PYTHON:-$(command -v python3 || command -v python || true)}"
VENV="$REPO/.venv"
PY="$VENV/bin/python"

# Is a Redis server answering at REDIS_URL (default 127.0.0.1:6379)?
redis_up() {
    local url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
    redis-cli -u "$url" ping >/dev/null 2>&1
}

ensure_redis() {
    if redis_up; then return; fi
    local url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
    if [[ "$url" != redis://127.0.0.1:6379* && "$url" != redis://localhost:6379* ]]; then
        die "Redis at $url does not answer (set REDIS_URL to a running server)"
    fi
    log "starting redis-server on 127.0.0.1:6379"
    mkdir -p "$DELTAVAULT_HOME/redis"
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --dir "$DELTAVAULT_HOME/redis" \
        --logfile "$DELTAVAULT_HOME/redis/redis.log" >/dev/null
    for _ in $(seq 1 50); do redis_up && return; sleep 0.1; done
    die "redis-server did not start (see $DELTAVAULT_HOME/redis/redis.log)"
}
