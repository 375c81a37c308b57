"""A throwaway PostgreSQL server for the tests: its own data folder and a loopback port, started
once per test session from the system's binaries (`.ci/run` installs them), never a mock.

`initdb` refuses to run as root, so as root the server runs as the system's `postgres` user.
Authentication is by password (scram-sha-256), so tests can prove the password never leaks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "stackai"
PASSWORD = "pg-s3cret-never-printed"
REQUIRE_ENV = "STACKAI_TEST_REQUIRE_POSTGRES"
"""Set (by `.ci/run`) to fail, not skip, the PostgreSQL tests when no server can be started."""
START_ATTEMPTS = 3
"""A port found free can be taken before the server binds it (parallel test processes each
start a server): then it starts again on another."""


class PostgresUnavailable(RuntimeError):
    pass


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if candidates:
        return Path(candidates[-1]).parent
    raise PostgresUnavailable(
        "PostgreSQL's server binaries (pg_ctl, initdb) are not installed; .ci/run installs"
        " them (Debian: apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    host: str
    port: int
    folder: Path
    bindir: Path
    owner: str | None

    def url(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its connection URL."""
        import psycopg2

        con = psycopg2.connect(self.url("postgres"))
        try:
            con.autocommit = True
            with con.cursor() as cursor:
                cursor.execute(f'create database "{name}"')
        finally:
            con.close()
        return self.url(name)

    def stop(self) -> None:
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-m",
                "immediate",
                "stop",
            ]
        )
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, command: list[str]) -> None:
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True)


def start() -> PostgresServer:
    """Start a server in a new temporary folder; raise PostgresUnavailable when impossible."""
    bindir = _bindir()
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root and no `postgres` user to run the server as"
            ) from None
        owner = "postgres"
    folder = Path(tempfile.mkdtemp(prefix="stackai-runs-pg-"))
    folder.chmod(0o755)
    (folder / "pw").write_text(PASSWORD + "\n")
    if owner:
        shutil.chown(folder, owner)
        shutil.chown(folder / "pw", owner)
    server = PostgresServer("127.0.0.1", _free_port(), folder, bindir, owner)
    try:
        server._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(folder / "data"),
                "-U",
                USER,
                f"--pwfile={folder / 'pw'}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        for attempt in range(START_ATTEMPTS):
            if attempt:  # the free port was taken meanwhile (another test process's server)
                server.port = _free_port()
            options = (
                f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                server._run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(folder / "data"),
                        "-o",
                        options,
                        "-l",
                        str(folder / "log"),
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                )
                break
            except subprocess.CalledProcessError:
                log = (folder / "log").read_text() if (folder / "log").exists() else ""
                if attempt + 1 == START_ATTEMPTS or "could not bind" not in log:
                    raise
    except subprocess.CalledProcessError as exc:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        with contextlib.suppress(Exception):
            shutil.rmtree(folder, ignore_errors=True)
        raise PostgresUnavailable(
            f"could not start PostgreSQL: {exc.stderr or exc.stdout}{log[-2000:]}"
        ) from None
    return server
