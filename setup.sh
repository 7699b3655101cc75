#!/usr/bin/env bash
# Sets this project up and runs it. One role per subcommand:
#   ./setup.sh local   install into .venv, make stand-in model files, run the whole service locally on moto
#   ./setup.sh test    install into .venv, make stand-in model files, run the test suite
# Options: --dry-run prints what would be done without doing it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
FIXTURES="$ROOT/../shared/fixtures"
STAND_IN_DIR="$ROOT/var/stand-in"
REQUIREMENTS=(requirements.txt requirements-dev.txt requirements-nodeps.txt)
DRY_RUN=0

say() { printf 'setup: %s\n' "$*"; }
err() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || err "need '$1' (not found)"; }
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf 'would run: %s\n' "$*"
    else
        "$@"
    fi
}

usage() {
    sed -n '2,5s/^# \{0,1\}//p' "$0"
}

check_python() {
    need_cmd python3
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || err "need Python 3.11 or newer"
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        need_cmd apt-get
        say "installing python3-venv"
        run apt-get update -q
        run apt-get install -y -q python3-venv
    fi
}

# The venv is (re)installed when a requirements file changed since the last install.
ensure_venv() {
    check_python
    local stamp="$VENV/.requirements.sha256" want
    want="$(cd "$ROOT" && cat "${REQUIREMENTS[@]}" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "venv up to date: $VENV"
        return
    fi
    say "installing packages into $VENV (torch is large: several GB on a fresh machine)"
    run python3 -m venv "$VENV"
    run "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt"
    # facenet-pytorch's metadata pins torch<2.3 and numpy<2; its code works with ours.
    run "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$ROOT/requirements-nodeps.txt"
    if [ "$DRY_RUN" = 0 ]; then
        printf '%s\n' "$want" > "$stamp"
    fi
}

# Seeded stand-in weights and a gallery enrolled with them, for when the VGGFace2 weights are absent.
ensure_stand_in() {
    if [ -n "${FR_WEIGHTS:-}" ]; then
        say "using weights $FR_WEIGHTS and gallery ${FR_GALLERY:-(default)}"
        return
    fi
    [ -d "$FIXTURES" ] || err "fixtures not found at $FIXTURES (the project expects ../shared beside it)"
    run "$VENV/bin/python" -m model stand-in "$STAND_IN_DIR" "$FIXTURES/face_images_100" "$FIXTURES/face_images_100.csv" >/dev/null
    say "using STAND-IN weights (seeded random, not VGGFace2) from $STAND_IN_DIR"
}

role_local() {
    ensure_venv
    ensure_stand_in
    say "starting the local stack; Ctrl-C stops all of it"
    cd "$ROOT"
    run exec "$VENV/bin/python" tools/localstack.py
}

role_test() {
    ensure_venv
    ensure_stand_in
    cd "$ROOT"
    run exec "$VENV/bin/python" -m tests
}

main() {
    local role=""
    for arg in "$@"; do
        case "$arg" in
            --dry-run) DRY_RUN=1 ;;
            -h|--help) usage; return 0 ;;
            local|test) role="$arg" ;;
            *) usage >&2; err "unknown argument: $arg" ;;
        esac
    done
    case "$role" in
        local) role_local ;;
        test) role_test ;;
        *) usage >&2; err "name a role" ;;
    esac
}

main "$@"
