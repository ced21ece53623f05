# Shared by scripts/bootstrap, scripts/run and scripts/test (sourced, not executed).
# Sets REPO, DELTAVAULT_HOME and PY (the Python interpreter the project is installed into).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DELTAVAULT_HOME="${DELTAVAULT_HOME:-$REPO/var}"
export PYTHONUNBUFFERED=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() {
    if [[ -t 2 ]]; then printf '\033[1m[deltavault]\033[0m %s\n' "$*" >&2; else printf '[deltavault] %s\n' "$*" >&2; fi
}
die() { log "error: $*"; exit 1; }

# Pick the interpreter: $PYTHON if given, an existing ./.venv, else python3 unless it is a distribution Python
# that refuses pip installs (PEP 668), in which case a ./.venv is made by bootstrap.
_pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"; return; fi
    if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; return; fi
    local cand
    cand="$(command -v python3 || command -v python || true)"
    [[ -n "$cand" ]] || { PY=""; return; }
    if "$cand" - <<'PYEOF' 2>/dev/null; then PY="$cand"; else PY=""; fi
import sys, sysconfig, pathlib
in_venv = sys.prefix != sys.base_prefix
managed = (pathlib.Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists()
sys.exit(0 if (in_venv or not managed) else 1)
PYEOF
}
_pick_python

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
