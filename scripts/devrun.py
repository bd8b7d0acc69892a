"""`make run`: start the provider stub, api, scheduler and one sender; Ctrl-C stops them all.

Creates a git-ignored `.env` with a random admin token on first run and prints it.
Also starts the SMSC simulator and Kannel in front of it, and writes `run/providers.yaml`
routing some operator codes through each kind (docs/PROVIDERS.md); `DEV_PROVIDERS=0` leaves
them out, a PROVIDERS_FILE of your own wins.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = ROOT / ".env"
COLORS = {
    "idp": "34",
    "stub": "35",
    "api": "36",
    "scheduler": "33",
    "sender": "32",
    "reporter": "34",
    "smtp": "37",
    "smsc": "31",
    "kannel": "35",
}
# The dev SMSC's accounts: our smpp provider's and Kannel's own (SMPP passwords: <= 8 chars).
DEV_SMPP = ("mailing", "dev-smpp")
DEV_KANNEL_SMPP = ("kannel", "k-smpp")


def dev_providers(
    stub_url: str, smsc_port: int, kannel_port: int | None, api_url: str, stub_token: str
) -> str:
    """A providers file for `make run`: codes 900-904 over SMPP (failing over to the stub),
    905-909 through Kannel when it is installed, every other code to the stub."""
    lines = [
        "# Written by scripts/devrun.py for `make run` (development secrets inline).",
        "providers:",
        "  - name: stub",
        "    kind: fabrique",
        f"    url: {stub_url}",
        f"    token: {stub_token}",
        "  - name: aggregator",
        "    kind: smpp",
        "    host: 127.0.0.1",
        f"    port: {smsc_port}",
        f"    system_id: {DEV_SMPP[0]}",
        f"    password: {DEV_SMPP[1]}",
        "    source_addr: MAILING",
        "    max_tps: 100",
    ]
    if kannel_port is not None:
        lines += [
            "  - name: gateway",
            "    kind: kannel",
            f"    url: http://127.0.0.1:{kannel_port}/cgi-bin/sendsms",
            "    username: mailing",
            "    password: kannel-dev",
            "    callback_secret: kannel-dev-callback",
            "    source_addr: MAILING",
            f"    callback_base_url: {api_url}",
        ]
    lines += [
        "routes:",
        '  - operators: ["900", "901", "902", "903", "904"]',
        "    via: [aggregator, stub]",
    ]
    if kannel_port is not None:
        lines += ['  - operators: ["905", "906", "907", "908", "909"]', "    via: [gateway, stub]"]
    lines += ['  - operators: ["*"]', "    via: [stub]"]
    return "\n".join(lines) + "\n"


def ensure_env_file() -> dict[str, str]:
    values: dict[str, str] = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    if not values.get("API_TOKENS"):
        values["API_TOKENS"] = secrets.token_hex(32)  # the api refuses anything much weaker
        values.setdefault("PROVIDER_TOKEN", "stub-token")
        ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        ENV_FILE.chmod(0o600)
    return values


def pump(name: str, stream: object) -> None:
    prefix = f"\033[{COLORS[name]}m{name:>9}\033[0m | " if sys.stdout.isatty() else f"{name:>9} | "
    for line in stream:  # type: ignore[attr-defined]
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def main() -> None:
    values = ensure_env_file()
    env = os.environ | values
    env.setdefault("LOG_FORMAT", "console")
    stub_port = env.get("STUB_PORT", "8090")
    env.setdefault("PROVIDER_URL", f"http://127.0.0.1:{stub_port}")
    env.setdefault("STUB_TOKEN", env.get("PROVIDER_TOKEN", "stub-token"))
    # The daily report goes to a local SMTP sink that prints each mail into this log.
    smtp_port = env.get("DEV_SMTP_PORT", "1025")
    env.setdefault("SMTP_PORT", smtp_port)
    env.setdefault("REPORT_RECIPIENTS", "admin@localhost")
    # The console signs in through the dev identity provider (scripts/dev-idp), on loopback.
    idp_port = env.get("DEV_IDP_PORT", "8180")
    api_port = env.get("API_PORT", "8000")
    env.setdefault("UI_BASE_URL", f"http://127.0.0.1:{api_port}")
    env.setdefault("OIDC_ISSUER", f"http://127.0.0.1:{idp_port}")
    env.setdefault("OIDC_CLIENT_ID", "console")
    env.setdefault("OIDC_CLIENT_SECRET", "console-dev-secret")
    env.setdefault("OIDC_ADMIN_GROUPS", "mailing-admins")
    env.setdefault("OIDC_VIEWER_GROUPS", "mailing-viewers")
    idp_dir = ROOT / "scripts" / "dev-idp"
    if not (idp_dir / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=idp_dir, check=True)  # noqa: S607
    env.update(
        IDP_PORT=idp_port,
        IDP_UI_BASE_URL=env["UI_BASE_URL"],
        IDP_CLIENT_ID=env["OIDC_CLIENT_ID"],
        IDP_CLIENT_SECRET=env["OIDC_CLIENT_SECRET"],
    )
    services: dict[str, list[str]] = {}
    extra_lines: list[str] = []
    if env.get("DEV_PROVIDERS", "1") != "0":
        smsc_dir = ROOT / "scripts" / "smsc-sim"
        if not (smsc_dir / "node_modules" / "smpp").exists():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=smsc_dir, check=True)  # noqa: S607
        smsc_port = int(env.get("DEV_SMSC_PORT", "2775"))
        smsc_control = int(env.get("DEV_SMSC_CONTROL_PORT", "2776"))
        kannel_port: int | None = int(env.get("DEV_KANNEL_PORT", "13113"))
        env.update(
            SMSC_PORT=str(smsc_port),
            SMSC_CONTROL_PORT=str(smsc_control),
            SMSC_USERS=",".join(f"{u}:{p}" for u, p in (DEV_SMPP, DEV_KANNEL_SMPP)),
            SMSC_RECEIPT_DELAY_MS=env.get("SMSC_RECEIPT_DELAY_MS", "1000"),
        )
        services["smsc"] = ["node", str(smsc_dir / "server.mjs")]
        if Path("/usr/sbin/bearerbox").exists():
            services["kannel"] = [
                sys.executable, "-m", "scripts.kannel",
                "--smsc-port", str(smsc_port),
                "--smsc-system-id", DEV_KANNEL_SMPP[0],
                "--smsc-password", DEV_KANNEL_SMPP[1],
                "--username", "mailing",
                "--password", "kannel-dev",
                "--sendsms-port", str(kannel_port),
                "--log-dir", str(ROOT / "run" / "kannel"),
            ]  # fmt: skip
        else:
            print("kannel is not installed (scripts/ensure-services.sh): no gateway", flush=True)
            kannel_port = None
        if "PROVIDERS_FILE" not in env:
            providers_file = ROOT / "run" / "providers.yaml"
            providers_file.parent.mkdir(exist_ok=True)
            providers_file.write_text(
                dev_providers(
                    env["PROVIDER_URL"],
                    smsc_port,
                    kannel_port,
                    env["UI_BASE_URL"],
                    env.get("PROVIDER_TOKEN", env["STUB_TOKEN"]),
                )
            )
            env["PROVIDERS_FILE"] = str(providers_file)
        extra_lines.append(
            f"    smsc         smpp 127.0.0.1:{smsc_port}, http://127.0.0.1:{smsc_control}/stats"
            + (f"; kannel sendsms :{kannel_port}" if kannel_port else "")
        )
        extra_lines.append(f"    providers    {env['PROVIDERS_FILE']} (docs/PROVIDERS.md)")
    services |= {
        "idp": ["node", str(idp_dir / "server.mjs")],
        "stub": [sys.executable, "-m", "services.provider_stub"],
        "api": [sys.executable, "-m", "services.api"],
        "scheduler": [sys.executable, "-m", "services.scheduler"],
        "sender": [sys.executable, "-m", "services.sender"],
        "smtp": [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{smtp_port}"],
        "reporter": [sys.executable, "-m", "services.reporter"],
    }
    processes: dict[str, subprocess.Popen[str]] = {}
    for name, command in services.items():
        processes[name] = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=pump, args=(name, processes[name].stdout), daemon=True).start()
    # The first entry's token: a bare token, or the last part of `name:role:token`.
    token = values["API_TOKENS"].split(",")[0].split(":", 2)[-1]
    print(
        f"""
  Mailing service is starting:
    API          http://127.0.0.1:{api_port}/api/v1   docs: http://127.0.0.1:{api_port}/docs
    admin token  {token}
    try          curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{api_port}/api/v1/clients
    console      {env["UI_BASE_URL"]}/ui/   sign in as admin, viewer or nobody (any password;
                 nobody is in no group and is refused)
    stub         http://127.0.0.1:{stub_port}/_control/stats
{chr(10).join(extra_lines)}
    metrics      :{api_port}/metrics (api), :9101 (scheduler), :9102 (sender), :9103 (reporter)
    daily report at {env.get("REPORT_AT", "06:00")} UTC, printed by the local SMTP sink below
  Ctrl-C stops everything.
""",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        dead = [n for n, p in processes.items() if p.poll() is not None]
        if dead:
            print(f"{', '.join(dead)} exited; stopping the rest", flush=True)
            break
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
