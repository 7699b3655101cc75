#!/usr/bin/env bash
# Sets this project up and runs it. One role per subcommand:
#   ./setup.sh local                 install into .venv, run the whole service on this machine (moto)
#   ./setup.sh test                  install into .venv, run the test suite
#   ./setup.sh provision [--with-web]  create the AWS resources (and the web host); again: updates the host
#   ./setup.sh teardown              remove everything provision made
#   ./setup.sh bake-ami INSTANCE_ID  make the app-tier image from an instance set up with 'app'
#   ./setup.sh admin-key             print the gallery's admin key (kept in SSM by provision)
#   sudo ./setup.sh web              on a fresh Amazon Linux 2023 host: web tier + autoscaler
#   sudo ./setup.sh app              on a fresh Amazon Linux 2023 host: worker, model weights
# Every role takes --dry-run: print what it would do, change nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
FIXTURES="$ROOT/../shared/fixtures"
STAND_IN_DIR="$ROOT/var/stand-in"
# On the AWS hosts.
PREFIX_DIR=/opt/face-rec
SERVICE_USER=face-rec
ENV_FILE=/etc/face-recognition.env
MODEL_DIR="$PREFIX_DIR/models"
WEIGHTS_NAME=20180402-114759-vggface2.pt
WEIGHTS_URL="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/$WEIGHTS_NAME"
# The release asset's size; its sha256 is in checksums.sha256 (docs/aws.md: where both come from).
WEIGHTS_BYTES=111898327
GALLERY_URL=https://raw.githubusercontent.com/visa-lab/CSE546-Cloud-Computing/main/model/data.pt
# PyTorch's own index of CPU-only builds: a much smaller app image than PyPI's CUDA build.
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
CODE=(web.py worker.py autoscaler.py common.py core webtier scaling deploy model tools systemd README.md
      requirements.txt requirements-web.txt requirements-nodeps.txt checksums.sha256)
DRY_RUN=0
PYTHON=python3
# The hibernation agent's sleep-button action (acpid runs it), and the pm-utils hook of ours.
SLEEP_ACTION=/etc/acpi/actions/sleep.sh
PM_HOOK=/etc/pm/sleep.d/50-face-worker
# The CloudWatch agent (deploy/logs.py): its paths, as a member's user data has them (scaling/launching.py
# AGENT_*, held equal by tests/unit/test_logs.py), and the first release that reads the journal.
LOG_AGENT_CONFIG=/opt/aws/amazon-cloudwatch-agent/etc/face-rec.json
LOG_AGENT_CTL=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
LOG_AGENT_MIN=1.300070.0

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
# retry CMD...: run, and again after 10, 20, 30, 40 s while it fails (dnf, pip and downloads meet
# passing network failures; on a fresh host nobody is there to run this again).
retry() {
    local attempt
    for attempt in 1 2 3 4 5; do
        run "$@" && return 0
        [ "$attempt" = 5 ] && break
        say "failed (attempt $attempt of 5), again in $((attempt * 10)) s: $*"
        sleep $((attempt * 10))
    done
    err "failed 5 times: $*"
}

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "$0"
}

# check_python: set PYTHON to the first of python3, python3.13, python3.12, python3.11 that is 3.11 or
# newer (Amazon Linux 2023 and CloudShell ship 3.9 as python3, 3.11 as python3.11).
check_python() {
    local candidate
    PYTHON=""
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON="$candidate"
            break
        fi
    done
    if [ -z "$PYTHON" ]; then
        command -v python3 >/dev/null 2>&1 && say "python3 is $(python3 -V 2>&1)"
        err "need Python 3.11 or newer (on Amazon Linux 2023 or CloudShell: sudo dnf install -y python3.11)"
    fi
    [ "$PYTHON" = python3 ] || say "python3 is older than 3.11: using $PYTHON"
    if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        need_cmd apt-get
        # Debian splits venv out per version: python3-venv is python3's, python3.11-venv python3.11's.
        say "installing ${PYTHON##*/}-venv"
        run apt-get update -q
        run apt-get install -y -q "${PYTHON##*/}-venv"
    fi
}

# install_requirements PYTHON VENV FILE...: each requirements file (in this tree) is installed when it
# changed since its last install (a sha256 stamp per file); requirements-nodeps.txt with --no-deps.
install_requirements() {
    local python="$1" venv="$2" file stamp want
    shift 2
    [ -x "$venv/bin/python" ] || run "$python" -m venv "$venv"
    for file in "$@"; do
        stamp="$venv/.installed-$file.sha256"
        want="$(cat "$ROOT/$file" "$ROOT/requirements-web.txt" | sha256sum | cut -d' ' -f1)"
        if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
            continue
        fi
        say "installing $file into $venv"
        case "$file" in
            *nodeps*) retry "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$ROOT/$file" ;;
            *) retry "$venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/$file" ;;
        esac
        if [ "$DRY_RUN" = 0 ]; then
            printf '%s\n' "$want" > "$stamp"
        fi
    done
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

dev_venv() {
    check_python
    install_requirements "$PYTHON" "$VENV" requirements.txt requirements-dev.txt requirements-nodeps.txt
}

role_local() {
    dev_venv
    ensure_stand_in
    say "starting the local stack; Ctrl-C stops all of it"
    cd "$ROOT"
    run exec "$VENV/bin/python" -m simulation
}

# Some tests use shellcheck, systemd-analyze and headless Chromium; install them where apt-get can.
ensure_test_tools() {
    local tool missing=0
    for tool in shellcheck systemd-analyze chromium chromedriver; do
        command -v "$tool" >/dev/null 2>&1 || missing=1
    done
    [ "$missing" = 1 ] || return 0
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing shellcheck, systemd, chromium and chromium-driver from Debian for the tests"
        run apt-get update -q >/dev/null
        run apt-get install -y -q shellcheck systemd chromium chromium-driver >/dev/null \
            || say "could not install them: the tests that need them will skip"
    else
        say "shellcheck, systemd-analyze, chromium or chromedriver missing: the tests that need them will skip"
    fi
}

role_test() {
    dev_venv
    ensure_stand_in
    ensure_test_tools
    cd "$ROOT"
    run exec "$VENV/bin/python" -m tests
}

# provision, teardown, bake-ami, admin-key: from any machine with AWS credentials; boto3 is all they need.
role_aws() {
    check_python
    install_requirements "$PYTHON" "$VENV" requirements-web.txt
    if [ "$1" = provision ]; then ensure_seed_gallery; fi
    local flags=()
    [ "$DRY_RUN" = 1 ] && flags+=(--dry-run)
    if [ "$DRY_RUN" = 1 ] && [ ! -x "$VENV/bin/python" ]; then
        printf 'would run: %s\n' "$VENV/bin/python -m deploy $*"
        return
    fi
    cd "$ROOT"
    "$VENV/bin/python" -m deploy "$@" "${flags[@]}"
}

# The gallery file provision seeds the gallery bucket with: FR_GALLERY, or the course's data.pt
# (checked against its pinned sha256), fetched once into var/model/.
ensure_seed_gallery() {
    [ -n "${FR_GALLERY:-}" ] && return
    run install -d -m 0755 "$ROOT/var/model"
    download "$GALLERY_URL" "$ROOT/var/model/data.pt"
    export FR_GALLERY="$ROOT/var/model/data.pt"
}

check_amazon_linux() {
    local os_id="" os_version=""
    if [ -r /etc/os-release ]; then
        # shellcheck source=/dev/null
        os_id="$(. /etc/os-release && echo "${ID:-}")"
        # shellcheck source=/dev/null
        os_version="$(. /etc/os-release && echo "${VERSION_ID:-}")"
    fi
    if [ "$os_id" != amzn ] || [ "$os_version" != 2023 ]; then
        [ "$DRY_RUN" = 1 ] || err "the web and app roles are for Amazon Linux 2023 (this is '$os_id $os_version')"
        say "not Amazon Linux 2023 ('$os_id $os_version'): showing the steps only"
    fi
    if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
        err "run as root (sudo ./setup.sh $1)"
    fi
}

# Code, user, venv, config file: what both AWS roles share.
install_host() {
    local role="$1"
    retry dnf install -y -q python3.11 python3.11-pip
    if ! id "$SERVICE_USER" >/dev/null 2>&1; then
        run useradd --system --home-dir "$PREFIX_DIR" --no-create-home --shell /sbin/nologin "$SERVICE_USER"
    fi
    run install -d -m 0755 "$PREFIX_DIR" "$PREFIX_DIR/app"
    (cd "$ROOT" && run cp -r "${CODE[@]}" "$PREFIX_DIR/app/")
    # journald keeps the services' logs on disk, across restarts and reboots, once this exists:
    # the evidence of a failure is still there when someone looks.
    run install -d -m 2755 -g systemd-journal /var/log/journal
    run journalctl --flush
    if [ "$role" = app ]; then
        install_requirements python3.11 "$PREFIX_DIR/venv" requirements-web.txt
        # torch and torchvision from the CPU index first (the versions requirements.txt pins; a
        # "+cpu" build satisfies them, so PyPI's CUDA build is not installed after it).
        retry "$PREFIX_DIR/venv/bin/pip" install -q --disable-pip-version-check --index-url "$TORCH_CPU_INDEX" \
            "$(grep '^torch==' "$ROOT/requirements.txt")" "$(grep '^torchvision==' "$ROOT/requirements.txt")"
        install_requirements python3.11 "$PREFIX_DIR/venv" requirements.txt requirements-nodeps.txt
    else
        install_requirements python3.11 "$PREFIX_DIR/venv" requirements-web.txt
    fi
    if [ ! -f "$ENV_FILE" ]; then
        # The FR_* variables this script runs with (e.g. sudo FR_PREFIX=... FR_REGION=... ./setup.sh app).
        say "writing $ENV_FILE with FR_HOST=0.0.0.0 and $(env | grep -c '^FR_' || true) FR_* variables of this run"
        if [ "$DRY_RUN" = 0 ]; then
            { printf 'FR_HOST=0.0.0.0\n'; env | grep '^FR_' || true; } > "$ENV_FILE"
        fi
    fi
    run chown root:"$SERVICE_USER" "$ENV_FILE"
    run chmod 0640 "$ENV_FILE"
}

# download URL DEST [BYTES]: fetch, then check against the sha256 pinned in checksums.sha256 (and
# the size, when given: a wrong file of the wrong size is refused before it is hashed).
download() {
    local url="$1" dest="$2" bytes="${3:-}" name want
    name="$(basename "$dest")"
    want="$(awk -v n="$name" '$2 == n { print $1 }' "$ROOT/checksums.sha256")"
    [ -n "$want" ] || err "no sha256 pinned for $name in checksums.sha256: fetch it on a trusted machine, check it, pin it"
    if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
        say "$name present, sha256 matches"
        return
    fi
    say "fetching $url to $dest, checked against${bytes:+ size $bytes bytes and} sha256 $want"
    retry curl -fsSL ${bytes:+--max-filesize "$bytes"} -o "$dest.part" "$url"
    if [ "$DRY_RUN" = 0 ]; then
        local got
        if [ -n "$bytes" ] && [ "$(stat -c %s "$dest.part")" != "$bytes" ]; then
            got="$(stat -c %s "$dest.part")"
            rm -f "$dest.part"
            err "$name: $got bytes, expected $bytes"
        fi
        got="$(sha256sum "$dest.part" | cut -d' ' -f1)"
        [ "$got" = "$want" ] || { rm -f "$dest.part"; err "$name: sha256 $got, expected $want"; }
        mv "$dest.part" "$dest"
    fi
}

# enable_units UNIT...: install the units and what every face-* unit shares (a prefix drop-in),
# enable them, and restart them.
enable_units() {
    local unit
    run install -d -m 0755 /etc/systemd/system/face-.service.d
    run install -m 0644 "$ROOT"/systemd/face-.service.d/*.conf /etc/systemd/system/face-.service.d/
    for unit in "$@"; do
        run install -m 0644 "$ROOT/systemd/$unit" /etc/systemd/system/
    done
    run systemctl daemon-reload
    run systemctl enable "$@"
    # restart, not start: on a second run the units run already, and must pick up the new code.
    run systemctl restart "$@"
}

# The model files, checked against their pinned sha256, and where they are in the config file.
install_model() {
    run install -d -m 0755 "$MODEL_DIR"
    download "$WEIGHTS_URL" "$MODEL_DIR/$WEIGHTS_NAME" "$WEIGHTS_BYTES"
    download "$GALLERY_URL" "$MODEL_DIR/data.pt"
    if ! grep -q '^FR_WEIGHTS=' "$ENV_FILE" 2>/dev/null; then
        if [ "$DRY_RUN" = 0 ]; then
            printf 'FR_WEIGHTS=%s\nFR_GALLERY=%s\n' "$MODEL_DIR/$WEIGHTS_NAME" "$MODEL_DIR/data.pt" >> "$ENV_FILE"
        else
            say "would add FR_WEIGHTS and FR_GALLERY to $ENV_FILE"
        fi
    fi
}

# install_log_agent ROLE: AWS's CloudWatch agent (Amazon Linux 2023's amazon-cloudwatch-agent), shipping
# this host's services' journal to its tiers' log groups (deploy/logs.py; provisioning makes them).
install_log_agent() {
    local role="$1" version
    rpm -q amazon-cloudwatch-agent >/dev/null 2>&1 || retry dnf install -y -q amazon-cloudwatch-agent
    if [ "$DRY_RUN" = 1 ]; then
        say "would check amazon-cloudwatch-agent is $LOG_AGENT_MIN or later (it reads the journal from then on)"
        say "would write $LOG_AGENT_CONFIG: python -m deploy.logs agent-config $role $ENV_FILE"
    else
        version="$(rpm -q --qf '%{VERSION}' amazon-cloudwatch-agent)"
        if [ "$(printf '%s\n%s\n' "$LOG_AGENT_MIN" "$version" | sort -V | head -n 1)" != "$LOG_AGENT_MIN" ]; then
            err "amazon-cloudwatch-agent $version reads no journal ($LOG_AGENT_MIN on does): dnf upgrade amazon-cloudwatch-agent"
        fi
        (cd "$PREFIX_DIR/app" && "$PREFIX_DIR/venv/bin/python" -m deploy.logs agent-config "$role" "$ENV_FILE") > "$LOG_AGENT_CONFIG"
    fi
    run "$LOG_AGENT_CTL" -a fetch-config -m ec2 -s -c "file:$LOG_AGENT_CONFIG"
}

role_web() {
    check_amazon_linux web
    install_host web
    # The results table's answers hold for the model that gave them: the web tier fingerprints the
    # app tier's model files (the same pinned ones).
    if [ "${FR_RESULTS_TABLE:-0}" = 1 ] || grep -qx 'FR_RESULTS_TABLE=1' "$ENV_FILE" 2>/dev/null; then
        install_model
    fi
    enable_units face-web.service face-autoscaler.service
    install_log_agent web
    say "web host ready: the web tier listens on port 8000"
}

# The hibernation agent (aws/amazon-ec2-hibinit-agent; Amazon Linux 2023's package ec2-hibinit-agent)
# makes, at a member's first boot, the swap file its RAM is written to, and hibernates the machine
# when EC2 presses the sleep button, which acpid hands it. Enabled, not started: started here, it
# would put its swap file into the image baked from this host.
ensure_hibernation_agent() {
    rpm -q ec2-hibinit-agent acpid >/dev/null 2>&1 || retry dnf install -y -q ec2-hibinit-agent acpid
    run systemctl enable hibinit-agent.service acpid.service
    if [ "$DRY_RUN" = 1 ]; then
        say "would check: hibinit-agent.service and acpid.service enabled, /etc/acpi/actions/sleep.sh in place"
        return
    fi
    systemctl is-enabled --quiet hibinit-agent.service || err "hibinit-agent.service is not enabled"
    systemctl is-enabled --quiet acpid.service || err "acpid.service is not enabled"
    [ -x "$SLEEP_ACTION" ] || err "the agent's sleep-button action $SLEEP_ACTION is missing"
    say "hibernation agent: hibinit-agent and acpid enabled, sleep-button action in place"
}

# sleep_command_of FILE: how the agent's sleep-button action FILE hibernates: "systemd"
# (`systemctl hibernate`: ec2-hibinit-agent 1.0.10-2, July 2026, on), "pm-utils" (`pm-hibernate`:
# every earlier release) or "unknown".
sleep_command_of() {
    if grep -Eq '^[^#]*systemctl[[:space:]]+hibernate' "$1" 2>/dev/null; then
        echo systemd
    elif grep -Eq '^[^#]*pm-hibernate' "$1" 2>/dev/null; then
        echo pm-utils
    else
        echo unknown
    fi
}

# The worker's hibernation hooks, where the agent's way of hibernating runs them: systemd's
# sleep.target runs face-worker-sleep.service; pm-utils runs /etc/pm/sleep.d (and not sleep.target).
install_sleep_hooks() {
    local variant
    if [ "$DRY_RUN" = 1 ] && [ ! -e "$SLEEP_ACTION" ]; then
        say "would check how $SLEEP_ACTION hibernates: 'systemctl hibernate' (agent 1.0.10-2 on): enable" \
            "face-worker-sleep.service (sleep.target runs it); 'pm-hibernate' (earlier agents): install" \
            "$PM_HOOK (pm-utils runs it); neither: refuse"
        return
    fi
    variant="$(sleep_command_of "$SLEEP_ACTION")"
    case "$variant" in
        systemd)
            # Enabled, never started here: it runs when the machine goes to sleep.
            run install -m 0644 "$ROOT/systemd/face-worker-sleep.service" /etc/systemd/system/
            run systemctl daemon-reload
            run systemctl enable face-worker-sleep.service ;;
        pm-utils)
            run install -d -m 0755 "$(dirname "$PM_HOOK")"
            run install -m 0755 "$ROOT/systemd/pm-utils/50-face-worker" "$PM_HOOK" ;;
        *) err "$SLEEP_ACTION hibernates with neither 'systemctl hibernate' nor 'pm-hibernate': the worker's" \
               "hibernation hooks would not run, and every pool launched from this image hibernates its members" \
               "(update ec2-hibinit-agent, then run ./setup.sh app again)" ;;
    esac
    say "hibernation hooks: the agent hibernates with $variant; the worker's hooks are where it runs them"
}

role_app() {
    check_amazon_linux app
    install_host app
    # This host, the image's build host, is no member: the dead man's switch is off in the image's
    # config, and a member's user data arms it (its pool's FR_IDLE_STOP, core/heartbeat.py).
    if ! grep -q '^FR_IDLE_STOP=' "$ENV_FILE" 2>/dev/null; then
        if [ "$DRY_RUN" = 0 ]; then
            printf 'FR_IDLE_STOP=0\n' >> "$ENV_FILE"
        else
            say "would add FR_IDLE_STOP=0 to $ENV_FILE (the build host is no member)"
        fi
    fi
    ensure_hibernation_agent
    install_model
    # Enabled, so that starting a stopped instance brings its worker online.
    enable_units face-worker.service
    install_sleep_hooks
    install_log_agent app
    say "app host ready: make the pool image with ./setup.sh bake-ami <this instance id>"
}

main() {
    local role="" args=()
    for arg in "$@"; do
        case "$arg" in
            --dry-run) DRY_RUN=1 ;;
            -h|--help) usage; return 0 ;;
            *) if [ -z "$role" ]; then role="$arg"; else args+=("$arg"); fi ;;
        esac
    done
    case "$role" in
        local) role_local ;;
        test) role_test ;;
        provision|teardown|bake-ami|admin-key) role_aws "$role" "${args[@]}" ;;
        web) role_web ;;
        app) role_app ;;
        *) usage >&2; err "name a role" ;;
    esac
}

main "$@"
