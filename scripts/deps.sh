#!/usr/bin/env bash
# Installs what `make run` / `make test` need and is missing, from Debian's
# packages and the npm registry only. Safe to run again: it skips what is there.
#   scripts/deps.sh run    what running Corral needs
#   scripts/deps.sh test   what the whole test suite needs
set -euo pipefail

want="${1:-run}"
say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo"
fi

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]}; install them with your package manager"
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"

case "$want" in
  run)
    # Sandboxes run under an OCI runtime; runc from Debian by default.
    command -v runc >/dev/null 2>&1 || apt_install runc
    # README's quick start talks to the API with curl and reads JSON with jq.
    apt_install curl jq
    # Each sandbox's disk is an ext4 image formatted by mkfs.ext4.
    apt_install e2fsprogs
    ;;
  test)
    # The isolation tests run real sandboxes under runc, as root.
    command -v runc >/dev/null 2>&1 || apt_install runc
    # A test runs README's quick start as written (curl, jq), and `corral
    # shell` is driven in a pseudo-terminal by util-linux's `script`.
    apt_install curl jq bsdutils
    # Each sandbox's disk is an ext4 image formatted by mkfs.ext4.
    apt_install e2fsprogs
    # Image-root tests build their own tiny image from Debian's static busybox.
    apt_install busybox-static
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    # The image-store tests push a busybox image to a real registry on loopback.
    apt_install docker-registry busybox-static
    # Interpreter contexts are tested drawing a real matplotlib figure.
    apt_install python3-matplotlib
    # `corral shell` is tested in a real terminal: a tmux session.
    apt_install tmux
    # Browser tests drive Debian's Chromium; no browser is ever downloaded.
    [ -x /usr/bin/chromium ] || apt_install chromium
    # The PostgreSQL tests need a server; CORRAL_TEST_POSTGRES_URL names it.
    pg_url="${CORRAL_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
    pg_hostport="${pg_url#*@}"; pg_hostport="${pg_hostport%%/*}"
    pg_host="${pg_hostport%%:*}"; pg_port="${pg_hostport##*:}"
    if ! (exec 3<>"/dev/tcp/$pg_host/$pg_port") 2>/dev/null; then
      if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        say "starting PostgreSQL"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
      fi
      (exec 3<>"/dev/tcp/$pg_host/$pg_port") 2>/dev/null \
        || die "no PostgreSQL at $pg_host:$pg_port; start one or set CORRAL_TEST_POSTGRES_URL"
    fi
    # The email tests receive mail with a real SMTP server: Python's aiosmtpd.
    python3 -c 'import aiosmtpd' 2>/dev/null \
      || python3 -m pip install --quiet --disable-pip-version-check 'aiosmtpd>=1.4,<2' \
      || die "cannot install aiosmtpd (pip install aiosmtpd)"
    # `make test-schemathesis` fuzzes the live API with schemathesis.
    command -v st >/dev/null 2>&1 \
      || python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4.32,<5' \
      || die "cannot install schemathesis (pip install schemathesis)"
    # The shared rate-limit tests need Redis at 127.0.0.1:6379.
    if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
      command -v redis-server >/dev/null 2>&1 || apt_install redis-server
      say "starting Redis"
      redis-server --daemonize yes --save '' --appendonly no --bind 127.0.0.1 --port 6379 >/dev/null
      sleep 1
      (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null || die "no Redis at 127.0.0.1:6379"
    fi
    ;;
  *)
    die "usage: $0 run|test"
    ;;
esac
