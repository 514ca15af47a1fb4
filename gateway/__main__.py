"""The ``gateway`` command line (also ``python -m gateway``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
from typing import Sequence

from aiohttp import web

from .config import ConfigError, HomeserverConfig, load_config

log = logging.getLogger("gateway")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _load(path: str | list[str]) -> HomeserverConfig:
    config = load_config(path)
    where = path if isinstance(path, str) else " + ".join(path)
    for w in config.warnings:
        log.warning("%s: %s", where, w)
    return config


# --- generate-config ------------------------------------------------------------------


def cmd_generate_config(args: argparse.Namespace) -> int:
    from .config.generate import PostgresSettings, render_config
    from .signing_keys import write_new_signing_key

    from .config import parse_config

    data_dir = os.path.abspath(args.data_dir or os.path.dirname(os.path.abspath(args.config_path)))
    postgres = None
    if args.postgres_host:
        postgres = PostgresSettings(args.postgres_host, args.postgres_port, args.postgres_user,
                                    args.postgres_password, args.postgres_database)
    text = render_config(
        server_name=args.server_name,
        data_dir=data_dir,
        port=args.port,
        public_baseurl=args.public_baseurl,
        bind_address=args.bind_address,
        postgres=postgres,
    )
    import yaml

    try:
        config = parse_config(yaml.safe_load(text), config_path=args.config_path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in (args.config_path, config.signing_key_path):
        if os.path.exists(path):
            print(f"error: {path} already exists; not overwriting it", file=sys.stderr)
            return 1
    os.makedirs(data_dir, exist_ok=True)
    write_new_signing_key(config.signing_key_path)
    fd = os.open(args.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.config_path} and {config.signing_key_path}")
    return 0


# --- check-config ---------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config_path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for w in config.warnings:
        print(f"warning: {w}")
    role = f", worker {config.workers.instance_name}" if config.workers.is_worker else ""
    print(f"{' + '.join(args.config_path)}: OK (server_name {config.server_name}, "
          f"{len(config.listeners)} listener(s), database {config.database.engine}{role})")
    return 0


# --- config-reference -----------------------------------------------------------------


def cmd_config_reference(args: argparse.Namespace) -> int:
    """Print (or write) docs/config.md, generated from the config parsers."""
    from .config.reference import render_reference

    try:
        text = render_reference()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


# --- admin-api-reference --------------------------------------------------------------


def cmd_admin_api_reference(args: argparse.Namespace) -> int:
    """Print the admin routes table, or rewrite it in place in a document (docs/admin-api.md)."""
    from .admin_api.reference import admin_routes, render_table, update_document

    table = render_table(admin_routes())
    if not args.output:
        print(table)
        return 0
    with open(args.output, encoding="utf-8") as f:
        text = f.read()
    try:
        text = update_document(text, table)
    except ValueError as e:
        print(f"error: {args.output}: {e}", file=sys.stderr)
        return 1
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


# --- check-templates ------------------------------------------------------------------


def cmd_check_templates(args: argparse.Namespace) -> int:
    """Render every page template (custom directory first, then ours) with sample data."""
    from sso.pages import SAMPLE_CONTEXTS, build_environment, check_templates

    try:
        config = load_config(args.config_path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    env = build_environment(config.custom_template_directory, public_baseurl=config.public_baseurl)
    errors = check_templates(env)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    where = config.custom_template_directory or "the default templates"
    if errors:
        print(f"{len(errors)} of {len(SAMPLE_CONTEXTS)} templates failed ({where})", file=sys.stderr)
        return 1
    print(f"{len(SAMPLE_CONTEXTS)} templates render (custom directory: {where})")
    return 0


# --- run ------------------------------------------------------------------------------


def _ssl_context(config: HomeserverConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(config.tls_certificate_path, config.tls_private_key_path)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError("tls_certificate_path", f"cannot load TLS certificate/key: {e}") from None
    return ctx


async def serve(config: HomeserverConfig, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
    """Run every listener until ``stop`` is set, then shut down cleanly."""
    from . import wiring
    from .app import build_listener_app
    from .server import HomeServer

    hs = await HomeServer.open(config)
    if config.workers.is_worker:
        roles = [name for name, held in vars(hs.roles).items() if held is True and name != "is_main"]
        log.info("worker %s (%s)", hs.roles.instance_name, ", ".join(roles) or "no background roles")
    runners: list[web.AppRunner] = []
    try:
        tls = _ssl_context(config) if any(li.tls for li in config.listeners) else None
        for listener in config.listeners:
            if listener.type == "manhole":
                log.warning("listener on port %d: manhole listeners are not supported", listener.port)
                continue
            app = build_listener_app(hs, listener)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
            await runner.setup()
            runners.append(runner)
            for addr in listener.bind_addresses:
                site = web.TCPSite(
                    runner, addr, listener.port, ssl_context=tls if listener.tls else None
                )
                await site.start()
                log.info("listening on %s:%d (%s)", addr, listener.port, ", ".join(sorted(listener.resources)))
        await wiring.start(hs)  # background work: federation sender, resyncs, profiles, application services
        if started is not None:
            started.set()
        await stop.wait()
        log.info("shutting down")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()  # stops accepting, lets in-flight requests finish
        await hs.close()
        log.info("stopped")


def cmd_run(args: argparse.Namespace) -> int:
    from .allocator import tune_malloc

    tune_malloc()  # big buffers in mappings of their own (gateway/allocator.py)
    try:
        config = _load(args.config_path)
    except ConfigError as e:
        log.error("configuration error: %s", e)
        return 1

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve(config, stop)
        except ConfigError as e:
            log.error("configuration error: %s", e)
            return 1
        except OSError as e:
            log.error("cannot start: %s", e)
            return 1
        return 0

    from .storage import SchemaTooNewError

    try:
        return asyncio.run(main())
    except SchemaTooNewError as e:
        log.error("%s", e)
        return 1


# --- send-notice ----------------------------------------------------------------------


def cmd_send_notice(args: argparse.Namespace) -> int:
    """Send a server notice through the database (the server may be running or not)."""
    from .http import MatrixError
    from .server import HomeServer

    try:
        config = _load(args.config_path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if config.server_notices is None:
        print("error: server notices are not enabled (set server_notices.system_mxid_localpart)", file=sys.stderr)
        return 1

    async def main() -> int:
        hs = await HomeServer.open(config)
        try:
            sent = await hs.server_notices.send_notice(args.user, {"msgtype": "m.server_notice", "body": args.text})
        except MatrixError as e:
            print(f"error: {e.error}", file=sys.stderr)
            return 1
        finally:
            await hs.close()
        print(sent.pdu.event_id)
        return 0

    return asyncio.run(main())


# --- register-user --------------------------------------------------------------------


def cmd_register_user(args: argparse.Namespace) -> int:
    from federation.ids import is_valid_localpart

    from .passwords import hash_password
    from .server import HomeServer, wall_clock_ms
    from .storage.users import UserExistsError, UserStore

    try:
        config = _load(args.config_path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    localpart = args.user
    if localpart.startswith("@"):
        localpart, _, server = localpart[1:].partition(":")
        if server != config.server_name:
            print(f"error: {args.user} is not a user of {config.server_name}", file=sys.stderr)
            return 1
    if not is_valid_localpart(localpart):
        print(f"error: {localpart!r} is not a valid user name (allowed: a-z 0-9 . _ = - /)", file=sys.stderr)
        return 1
    user_id = f"@{localpart}:{config.server_name}"

    async def main() -> int:
        hs = await HomeServer.open(config)
        try:
            await UserStore(hs.db).create_user(
                user_id,
                password_hash=hash_password(args.password, config.bcrypt_rounds, config.password_pepper),
                created_ts=wall_clock_ms(),
                admin=args.admin,
            )
        except UserExistsError:
            print(f"error: {user_id} already exists", file=sys.stderr)
            return 1
        finally:
            await hs.close()
        print(f"registered {user_id}{' (admin)' if args.admin else ''}")
        return 0

    return asyncio.run(main())


# --- federation-test ------------------------------------------------------------------


def _print_report(report: dict) -> None:
    ok = report["FederationOK"]
    print(f"Federation: {'OK' if ok else 'FAILED'}")
    marks = {True: "ok", False: "!!", None: "--"}
    for area in report.get("Diagnosis", []):
        print(f"  [{marks[area['OK']]}] {area['Area']}: {area['Words']}")
    wk = report["WellKnownResult"]
    if wk.get("m.server"):
        print(f"  .well-known delegates to {wk['m.server']}")
    elif wk.get("error"):
        print(f"  no usable .well-known ({wk['error']['Error']})")
    for addr, entry in report.get("WellKnownPerAddress", {}).items():
        said = f"delegates to {entry['m.server']}" if entry["m.server"] else f"{entry['Code']}: {entry['Error']}"
        differs = "" if entry.get("Agrees") is not False else "  <- differs"
        print(f"  .well-known at {addr}: {said} ({entry['Seconds']} s){differs}")
    print(f"  addresses: {', '.join(report['DNSResult']['Addrs']) or 'none'}")
    tls = report.get("TLSDiagnosis", {})
    for addr, conn in report["ConnectionReports"].items():
        checks = conn["Checks"]
        print(f"  {addr}: {conn['Cipher']['Version']} {conn['Cipher']['CipherSuite']}, TLS: {tls[addr]['Code']}")
        for name in ("MatchingServerName", "FutureValidUntilTS", "HasEd25519Key", "AllEd25519ChecksOK",
                     "ValidCertificates"):
            print(f"    [{'x' if checks[name] else ' '}] {name}")
    for addr, err in report["ConnectionErrors"].items():
        took = f", {err['Seconds']} s" if err.get("Seconds") is not None else ""
        print(f"  {addr}: cannot connect ({err.get('Code', 'error')}{took}): {err['Message']}")
    version = report.get("Version", {})
    if version.get("name"):
        print(f"  server software: {version['name']} {version.get('version', '')}")
    client = report.get("ClientWellKnown")
    if client:
        checks = [f"{name}: {'ok' if (client.get(key) or {}).get('OK') else 'no'}"
                  for name, key in (("CORS", "CORS"), ("versions", "Versions"), ("preflight", "Preflight"))]
        print(f"  .well-known/matrix/client: {client['Result']}, base URL {client.get('BaseURL') or 'none'} "
              f"({', '.join(checks)})")
        for problem in client["Problems"]:
            print(f"    - {problem}")
    login = report.get("Login")
    if login:
        print(f"  login: legacy {', '.join(login['legacy']) or 'none'}; OAuth 2.0 API: {'yes' if login['oauth'] else 'no'}")
    support = report.get("SupportWellKnown")
    if support:
        print(f"  .well-known/matrix/support: {support['Result']}")
    outbound = report.get("Outbound") or {}
    for fetch in outbound.get("KeyFetches") or []:
        print(f"  it fetched our keys from {fetch['From']} ({fetch['UserAgent']})")
    for text in report.get("Explanations", []):
        print(f"  - {text}")


def cmd_federation_test(args: argparse.Namespace) -> int:
    if args.self_check and not args.via:
        print("--self-check needs --via URL (a running Gateway with federation_tester.self_check_interval)",
              file=sys.stderr)
        return 1
    if not args.self_check and not args.server_name:
        print("a server name is needed (or --via URL --self-check)", file=sys.stderr)
        return 1
    import json
    import ssl as ssl_mod

    from federation.net.ip_ranges import DEFAULT_IP_RANGE_BLACKLIST, IPRangePolicy
    from federation.net.resolver import ServerResolver
    from federation.net.tester import FederationTester

    policy = IPRangePolicy(blacklist=DEFAULT_IP_RANGE_BLACKLIST, whitelist=args.allow_ip_range or ())
    ctx = ssl_mod.create_default_context(cafile=args.ca_file) if args.ca_file else None

    async def via(url: str) -> dict:
        """The report of a running Gateway's tester (which can also check the way back)."""
        import aiohttp

        base = f"{url.rstrip('/')}/_gateway/federation-tester/api"
        api, params = (f"{base}/self", {}) if args.self_check else (f"{base}/report", {"server_name": args.server_name})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
            async with session.get(api, params=params) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise SystemExit(f"{api}: HTTP {resp.status}: {body.get('error') if isinstance(body, dict) else body}")
        if args.self_check:  # the last scheduled test of that server's own name
            print(f"Last self-check of {body['ServerName']}, {body['AgeSeconds']:.0f} s ago:")
            return body["Report"]
        return body

    async def main() -> dict:
        if args.via:
            return await via(args.via)
        async with ServerResolver(nameservers=args.dns_nameserver or None, ip_policy=policy, ssl_context=ctx,
                                  well_known_port=args.well_known_port) as resolver:
            return await FederationTester(resolver=resolver, ssl_context=ctx, ip_policy=policy).run(args.server_name)

    try:
        report = asyncio.run(main())
    except OSError as e:  # aiohttp's connection errors are OSErrors too
        print(f"cannot reach {args.via}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report)
    return 0 if report["FederationOK"] else 2


# --- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description="Gateway Matrix homeserver")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate-config", help="write a new homeserver.yaml and signing key")
    g.add_argument("--server-name", required=True, help="the server name, e.g. example.com")
    g.add_argument("--config-path", "-c", required=True, help="where to write homeserver.yaml")
    g.add_argument("--data-dir", help="where the database and key go (default: next to the config)")
    g.add_argument("--port", type=int, default=8008, help="HTTP listener port (default 8008)")
    g.add_argument("--public-baseurl", help="public URL of the server (default http://localhost:PORT/)")
    g.add_argument("--bind-address", default="127.0.0.1", help="address the listener binds (default 127.0.0.1)")
    g.add_argument("--postgres-host", help="use PostgreSQL on this host instead of SQLite")
    g.add_argument("--postgres-port", type=int, default=5432)
    g.add_argument("--postgres-user", default="gateway")
    g.add_argument("--postgres-password", default="")
    g.add_argument("--postgres-database", default="gateway")
    g.set_defaults(func=cmd_generate_config)

    r = sub.add_parser("run", help="run the server until SIGTERM/SIGINT")
    r.add_argument("--config-path", "-c", required=True, action="append",
                   help="a config file; repeat it for a worker (homeserver.yaml, then worker.yaml): "
                        "later files replace earlier files' keys")
    r.set_defaults(func=cmd_run)

    u = sub.add_parser("register-user", help="create a local user (offline)")
    u.add_argument("--config-path", "-c", required=True)
    u.add_argument("--user", "-u", required=True, help="localpart or full user ID")
    u.add_argument("--password", "-p", required=True)
    u.add_argument("--admin", action="store_true", help="make the user a server admin")
    u.set_defaults(func=cmd_register_user)

    n = sub.add_parser("send-notice", help="send a server notice to a local user")
    n.add_argument("--config-path", "-c", required=True)
    n.add_argument("--user", required=True, help="the user's full ID, e.g. @alice:example.com")
    n.add_argument("text", help="the notice's text")
    n.set_defaults(func=cmd_send_notice)

    c = sub.add_parser("check-config", help="validate a config file and print problems")
    c.add_argument("--config-path", "-c", required=True, action="append",
                   help="a config file; repeat it to check a worker's files together")
    c.set_defaults(func=cmd_check_config)

    cr = sub.add_parser("config-reference", help="print the reference of every config key (docs/config.md)")
    cr.add_argument("--output", "-o", help="write it to this file instead")
    cr.set_defaults(func=cmd_config_reference)

    ar = sub.add_parser("admin-api-reference", help="print the table of admin API routes (docs/admin-api.md)")
    ar.add_argument("--output", "-o", help="rewrite the table inside this document instead")
    ar.set_defaults(func=cmd_admin_api_reference)

    t = sub.add_parser("check-templates", help="render every SSO page template with sample data")
    t.add_argument("-c", "--config-path", required=True)
    t.set_defaults(func=cmd_check_templates)

    from .porting.commands import add_commands as add_porting_commands

    add_porting_commands(sub)

    f = sub.add_parser("federation-test", help="check a server's federation setup (no config needed)")
    f.add_argument("server_name", nargs="?")
    f.add_argument("--json", action="store_true", help="print the full JSON report")
    f.add_argument("--dns-nameserver", action="append", metavar="IP[:PORT]", help="DNS server to ask")
    f.add_argument("--ca-file", help="trust this CA bundle instead of the system's")
    f.add_argument("--allow-ip-range", action="append", metavar="CIDR",
                   help="probe this range even though it is private/blocked by default")
    f.add_argument("--via", metavar="URL",
                   help="ask the tester of this running Gateway (its client listener URL) instead: its report "
                        "also says whether the server can reach that Gateway back (Outbound)")
    f.add_argument("--self-check", action="store_true",
                   help="with --via: show that Gateway's last scheduled test of its own name and its age")
    f.add_argument("--well-known-port", type=int, default=443, help=argparse.SUPPRESS)
    f.set_defaults(func=cmd_federation_test)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
