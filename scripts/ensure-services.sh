#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ run on this machine: install what is missing (Debian),
# start what is stopped, and wait until both accept connections. Idempotent and quiet when
# everything is already up.
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
AMQP_PORT=${AMQP_PORT:-5672}

say() { echo "ensure-services: $*" >&2; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_for() { # what, seconds, command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 $((seconds * 5))); do "$@" && return 0; sleep 0.2; done
  say "$what did not come up within ${seconds}s"; return 1
}

apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { sudo_if_needed apt-get update -qq; apt_updated=1; }
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL
if ! port_open "$PG_HOST" "$PG_PORT"; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  say "starting PostgreSQL $version"
  sudo_if_needed pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL 60 port_open "$PG_HOST" "$PG_PORT"
fi
if ! psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  # A fresh Debian install asks for passwords over TCP; a development machine trusts loopback.
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  say "allowing trust auth on loopback in $hba (development machine)"
  sudo_if_needed sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  sudo_if_needed pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  wait_for "PostgreSQL login" 30 psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -Atqc 'select 1'
fi

# RabbitMQ
if ! port_open 127.0.0.1 "$AMQP_PORT"; then
  command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
  say "starting RabbitMQ"
  sudo_if_needed rabbitmq-server -detached || true
  wait_for RabbitMQ 120 port_open 127.0.0.1 "$AMQP_PORT"
  # The port opens before the broker accepts logins; wait for the app to be fully booted.
  wait_for "RabbitMQ boot" 120 sudo_if_needed rabbitmqctl -q await_startup
fi

# The console's browser tests drive Debian's chromium (Playwright downloads nothing here).
if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi

# The console's dev identity provider (scripts/dev-idp) runs on node with npm's packages.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
