#!/usr/bin/env bash
# Install from Debian's packages what `make run` and `make test` need and the machine lacks.
# Idempotent and quiet when everything is there.
#
# It never starts, stops or reconfigures the machine's own servers: scripts/devservers.py uses
# the system's PostgreSQL and RabbitMQ when they let us in and starts private ones (under
# .data/, on ports of their own) when they are missing or refuse us.
set -euo pipefail

say() { echo "ensure-services: $*" >&2; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() { # [--no-install-recommends] package...
  if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get here: install $* yourself"; return 1
  fi
  [ -n "$apt_updated" ] || { sudo_if_needed apt-get update -qq; apt_updated=1; }
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL and RabbitMQ: the server binaries a private server needs (initdb, pg_ctl,
# rabbitmq-server, rabbitmqctl). Installing the packages may start Debian's own clusters;
# those are then the system's, used only if they let us in.
ensure_database_servers() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_install postgresql; fi
  if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then apt_install rabbitmq-server; fi
}

# Prometheus and promtool: the monitoring tests run a real Prometheus (tests/monitoring).
# Without recommends: no node exporter.
ensure_monitoring_tools() {
  if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    apt_install --no-install-recommends prometheus
  fi
}

# The console: its browser tests drive Debian's chromium (Playwright downloads nothing here),
# and its dev identity provider (scripts/dev-idp) runs on node with npm's packages.
ensure_console_tools() {
  if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
}

# Real SMS delivery (docs/PROVIDERS.md): Kannel's bearerbox and smsbox from Debian's package,
# started by the tests and `make run` in front of the SMSC simulator (scripts/smsc-sim, node).
ensure_sms_gateway() {
  if [ ! -x /usr/sbin/bearerbox ] || [ ! -x /usr/sbin/smsbox ]; then
    apt_install --no-install-recommends kannel
  fi
}

ensure_database_servers
ensure_monitoring_tools
ensure_console_tools
ensure_sms_gateway
