"""`python -m service --host H --port P`: run the inspection service (settings from DCPSFR_* variables)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from pydantic import ValidationError

from model import ConfigError, load_config, tcp_port
from service.keys import KeysFileError, configured_keys
from service.settings import GROUPS, Settings, settings_by_group, unknown_variables, variable_name

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# third-party loggers whose INFO lines are noise at every start: faiss's loader tries its AVX2 build first and logs
# the ModuleNotFoundError of a wheel without one before loading the generic build
QUIET_LOGGERS = ("faiss.loader",)
log = logging.getLogger("service")
GIL_SWITCH_INTERVAL_S = 0.001


def settings_help() -> str:
    """The --help epilog: every DCPSFR_* variable with its description and default, the essential ones first, the
    rest grouped by what they tune."""
    lines = ["settings (environment variables):"]
    for group, names in settings_by_group().items():
        lines.append(f"  {group}: {GROUPS[group]}")
        for name in names:
            field = Settings.model_fields[name]
            shown = "" if field.default in (None, "") or "default" in (field.description or "") else field.default
            default = f" (default: {shown})" if shown != "" else ""
            lines.append(f"    {variable_name(name):<32} {field.description}{default}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line of `python -m service` (--host, --port, --fetch-weights)."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="DCP-SFR inspection service: few-shot anomaly detection over HTTP. One process holds the "
        "model; /healthz answers at once, /readyz turns 200 once the model is loaded and warmed.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default: 127.0.0.1); another than loopback needs DCPSFR_KEYS_FILE or "
        "DCPSFR_ALLOW_ANONYMOUS=true",
    )
    parser.add_argument("--port", type=tcp_port, default=8000, help="TCP port, 0..65535 (default: 8000)")
    parser.add_argument(
        "--fetch-weights",
        action="store_true",
        help="fetch the configured config's missing backbone weights (what its mode needs; needs internet) in the "
        "background before the model loads: the service listens at once and /readyz shows the download's progress; "
        "a failure is one line, then model routes answer 503 with it. `make serve` sets it",
    )
    return parser.parse_args(argv)


def load_settings() -> Settings:
    """Settings from the DCPSFR_* environment, with the model config checked to load; exits with a one-line error when
    either is invalid."""
    try:
        settings = Settings()
    except ValidationError as err:
        problems = "; ".join(f"DCPSFR_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in err.errors())
        sys.exit(f"error: invalid settings: {problems}")
    try:
        load_config(settings.model_config_name)
    except ConfigError as err:
        sys.exit(f"error: DCPSFR_MODEL_CONFIG: {err}")
    return settings


def is_loopback(host: str) -> bool:
    """Whether `host` is `localhost` or a loopback IP address
    (IPv6 in brackets allowed); other host names count as not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_keys(settings: Settings) -> bool:
    """Whether API keys are configured; exits with a one-line error when the keys file is bad."""
    try:
        return bool(configured_keys(settings.keys_file, settings.api_key_list))
    except KeysFileError as err:
        sys.exit(f"error: DCPSFR_KEYS_FILE: {err}")


def check_exposure(host: str, settings: Settings) -> None:
    """Secure by default: without API keys, only loopback, unless DCPSFR_ALLOW_ANONYMOUS=true (then warn). Exits
    with a one-line error when the keys file is bad."""
    if check_keys(settings) or is_loopback(host):
        return
    if not settings.allow_anonymous:
        sys.exit(
            f"error: refusing to serve on {host} without API keys: set DCPSFR_KEYS_FILE, or "
            "DCPSFR_ALLOW_ANONYMOUS=true to accept unauthenticated requests from the network, or --host 127.0.0.1"
        )
    log.warning(
        "DCPSFR_ALLOW_ANONYMOUS=true: serving on %s WITHOUT authentication; anyone who reaches it can use it", host
    )


def configure_logging(level: str) -> None:
    """Log to stderr at `level` (a logging level name), with QUIET_LOGGERS at WARNING whatever the level."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def check_records_schema(settings: Settings) -> None:
    """Exit with a one-line error when the records database's schema is newer than this code; a database that does not
    answer yet is retried after the start (records wait in the spool)."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.records.database import SchemaTooNew, database_url, migrate, open_database

    engine = open_database(database_url(settings.database_url, settings.data_dir))
    try:
        settings.records_dir.mkdir(parents=True, exist_ok=True)  # SQLite's folder
        migrate(engine)
    except SchemaTooNew as err:
        sys.exit(f"error: {err}")
    except SQLAlchemyError as err:
        log.warning(
            "the records database does not answer yet (%s); records wait in the spool", str(err).splitlines()[0]
        )
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, load and check the settings, then serve until shut down (fetching missing weights in
    the background first with --fetch-weights)."""
    args = parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    for warning in unknown_variables(os.environ):
        log.warning("%s", warning)
    check_exposure(args.host, settings)
    # the event loop (health probes, admission) shares the GIL with decoding, encoding and model threads: a
    # shorter switch interval than the default 5 ms hands it the GIL sooner when it wakes up
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    from service.api.lifecycle import serve  # the app's stack (torch, the model) loads only to serve, not for --help
    from service.app import create_app
    from service.engine.download import WeightsDownload

    check_records_schema(settings)
    download = WeightsDownload() if args.fetch_weights else None
    serve(create_app(settings, download=download), args.host, args.port, settings.shutdown_grace_s, settings.log_level)


if __name__ == "__main__":
    main()
