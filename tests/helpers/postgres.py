"""A real PostgreSQL server for the records tests (Debian's `postgresql`, installed by .ci/run): a fresh cluster in
a temporary folder on a free loopback port, run as the `postgres` user when the tests run as root (the server
refuses root). Stopped and started again by the outage tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.processes import free_port
from tests.helpers.waiting import wait_for

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # the newest version first


def postgres_bin() -> Path | None:
    """The folder of initdb, postgres and pg_ctl; None when PostgreSQL is not installed."""
    return next((d for d in BIN_DIRS if (d / "initdb").exists()), None)


@dataclass
class PostgresServer:
    """A throw-away cluster: `url` is its SQLAlchemy URL (database `records`, user `postgres`, no password)."""

    bin_dir: Path
    folder: Path
    port: int

    @property
    def url(self) -> str:
        """postgresql://postgres@127.0.0.1:<port>/records"""
        return f"postgresql://postgres@127.0.0.1:{self.port}/records"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, cwd=self.folder)

    def init(self) -> None:
        """Create the cluster (trust authentication on loopback) and the `records` database."""
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres", "--auth=trust")
        self.start()
        self._run(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "records")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "server.log")
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-o", options, "-l", log, "-w", "start"
        )
        wait_for(self.accepts, f"PostgreSQL on port {self.port}", timeout_s=60)

    def accepts(self) -> bool:
        """Whether the server answers a connection now."""
        import psycopg

        try:
            with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def new_database(self, name: str) -> str:
        """Create an empty database `name` (dropped first when it exists); returns its URL."""
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")


def start_postgres() -> PostgresServer:
    """A started server in a new temporary folder (the caller stops it and removes the folder); raises
    FileNotFoundError when PostgreSQL is not installed."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="dcpsfr-pg-"))
    server = PostgresServer(bin_dir, folder, free_port())
    server.init()
    return server
