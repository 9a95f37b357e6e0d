"""`python -m service --host H --port P`: run the inspection service (settings from DCPSFR_* variables)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from pydantic import ValidationError

from model import ConfigError, load_config
from service.app import create_app
from service.lifecycle import serve
from service.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("service")


def settings_help() -> str:
    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        env = field.validation_alias if isinstance(field.validation_alias, str) else f"DCPSFR_{name.upper()}"
        lines.append(f"  {env:<32} {field.description} (default: {field.default})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
        help="interface to listen on (default: 127.0.0.1); another than loopback needs DCPSFR_API_KEYS or "
        "DCPSFR_ALLOW_ANONYMOUS=true",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    return parser.parse_args(argv)


def load_settings() -> Settings:
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
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_exposure(host: str, settings: Settings) -> None:
    """Secure by default: without API keys, only loopback, unless DCPSFR_ALLOW_ANONYMOUS=true (then warn)."""
    if settings.api_key_list or is_loopback(host):
        return
    if not settings.allow_anonymous:
        sys.exit(
            f"error: refusing to serve on {host} without API keys: set DCPSFR_API_KEYS, or "
            "DCPSFR_ALLOW_ANONYMOUS=true to accept unauthenticated requests from the network, or --host 127.0.0.1"
        )
    log.warning(
        "DCPSFR_ALLOW_ANONYMOUS=true: serving on %s WITHOUT authentication; anyone who reaches it can use it", host
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    check_exposure(args.host, settings)
    serve(create_app(settings), args.host, args.port, settings.shutdown_grace_s, settings.log_level)


if __name__ == "__main__":
    main()
