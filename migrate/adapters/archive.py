"""Files written by the cleanup phase: tar.gz archives of the old configuration, checksums, reports, final backups.

The only place phases 5/6 touch the filesystem outside the ledger. Archives are written to ``<name>.part`` and
renamed when complete (a killed run never leaves a truncated archive under the final name); member order and
metadata are normalised (sorted names, mtime kept, uid/gid 0) so the same inputs give the same member list.
The final database backup reuses :class:`migrate.adapters.postgres.PostgresAdapter.dump` (pg_dump of the server's
own version) — nothing about pg_dump is duplicated here.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError

if TYPE_CHECKING:
    from migrate.adapters.postgres import PostgresAdapter
    from migrate.config import EnvConfig

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveResult:
    path: Path
    sha256: str
    size: int
    members: tuple[str, ...]


def _fail(what: str, exc: BaseException, next_cmd: str = "check the path and permissions, then re-run") -> AdapterError:
    return AdapterError(what, f"{type(exc).__name__}: {exc}", next_cmd, service="filesystem")


class ArchiveAdapter:
    def __init__(self, project_root: Path) -> None:
        self.project_root = project_root

    # -- checksums and small files -------------------------------------------------------------------------------
    def sha256(self, path: Path) -> tuple[str, int]:
        """(hex sha256, size in bytes) of a file."""
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise _fail(f"cannot read {path}", exc) from None
        return digest.hexdigest(), size

    def write_text(self, path: Path, text: str) -> tuple[str, int]:
        """Write ``text`` atomically (tmp + rename); returns (sha256, size)."""
        data = text.encode("utf-8")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise _fail(f"cannot write {path}", exc) from None
        return hashlib.sha256(data).hexdigest(), len(data)

    def restrict(self, path: Path) -> None:
        """Make a file readable by its owner only (archives of old configuration hold plaintext credentials)."""
        try:
            path.chmod(0o600)
        except OSError as exc:
            raise _fail(f"cannot chmod {path}", exc) from None

    def exists(self, path: Path) -> bool:
        return path.exists()

    def remove(self, path: Path) -> bool:
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _fail(f"cannot remove {path}", exc) from None

    # -- tar.gz --------------------------------------------------------------------------------------------------
    def resolve_inputs(self, paths: Iterable[str | Path], base: Path | None = None) -> tuple[list[Path], list[str]]:
        """(existing paths, missing ones as given), relative paths taken from ``base`` (default: the project root)."""
        root = base or self.project_root
        found: list[Path] = []
        missing: list[str] = []
        for item in paths:
            p = Path(item)
            full = p if p.is_absolute() else root / p
            (found if full.exists() else missing).append(full if full.exists() else str(item))  # type: ignore[arg-type]
        return found, missing

    def _arcname(self, path: Path, base: Path | None = None) -> str:
        try:
            return str(path.resolve().relative_to((base or self.project_root).resolve()))
        except ValueError:
            return str(path.resolve()).lstrip("/")

    def files_under(self, paths: Sequence[Path], base: Path | None = None) -> list[Path]:
        out: list[Path] = []
        for p in paths:
            if p.is_dir():
                out.extend(sorted(f for f in p.rglob("*") if f.is_file()))
            elif p.is_file():
                out.append(p)
        return sorted(set(out), key=lambda f: self._arcname(f, base))

    def make_tar_gz(self, out: Path, inputs: Sequence[Path], base: Path | None = None) -> ArchiveResult:
        """Write ``out`` (tar.gz) holding every file under ``inputs`` (member names relative to ``base``, default the
        project root); returns its sha256, size and members."""
        files = self.files_under(inputs, base)
        if not files:
            raise AdapterError(
                f"nothing to archive into {out.name}",
                "none of the configured paths exists or holds files",
                "check [steps.archive] paths in migrate.toml",
                service="filesystem",
            )
        part = out.with_name(out.name + ".part")
        members: list[str] = []

        def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            return info

        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(part, "w:gz", compresslevel=6) as tar:
                for f in files:
                    name = self._arcname(f, base)
                    tar.add(str(f), arcname=name, recursive=False, filter=normalise)
                    members.append(name)
            os.replace(part, out)
        except (OSError, tarfile.TarError) as exc:
            raise _fail(f"cannot write archive {out}", exc) from None
        sha, size = self.sha256(out)
        return ArchiveResult(out, sha, size, tuple(members))

    def list_tar(self, path: Path) -> list[str]:
        """Member names of a tar.gz (reads the whole archive: a truncated file raises)."""
        try:
            with tarfile.open(path, "r:gz") as tar:
                names = []
                for member in tar:
                    names.append(member.name)
                    if member.isfile():
                        fh = tar.extractfile(member)
                        if fh is not None:
                            while fh.read(_CHUNK):
                                pass
                return names
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise _fail(
                f"cannot read archive {path}", exc, "the archive is damaged: re-run `bpmigrate apply --step archive`"
            ) from None

    # -- final backup --------------------------------------------------------------------------------------------
    def final_backup(self, pg: PostgresAdapter, out: Path) -> ArchiveResult:
        """pg_dump (custom format) through the postgres adapter, then its checksum; idempotent by overwrite."""
        pg.dump(out, fmt="c")
        sha, size = self.sha256(out)
        return ArchiveResult(out, sha, size, ())

    def rdb_keyspace(self, rdb: Path, *, timeout: float = 60.0) -> dict[int, int]:
        """Load ``rdb`` into a scratch redis-server (loopback, its own temporary directory, no persistence) and
        return its keys per DB; the server and the directory are gone afterwards."""
        import shutil
        import tempfile

        from migrate.adapters.localservers import start_redis

        scratch = Path(tempfile.mkdtemp(prefix="bpm-rdb-"))
        try:
            shutil.copyfile(rdb, scratch / "dump.rdb")
            server = start_redis(scratch, persist=True, timeout=timeout)
        except (OSError, AdapterError) as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise _fail(f"cannot load {rdb.name} into a scratch redis-server", exc) from None
        try:
            import redis

            client = redis.Redis(host=server.host, port=server.port, socket_timeout=30)
            info = client.info("keyspace")
            client.close()
            return {int(k[2:]): int(v.get("keys", 0)) for k, v in info.items() if str(k).startswith("db")}
        finally:
            server.stop()
            shutil.rmtree(scratch, ignore_errors=True)


def from_config(env: EnvConfig, *, project_root: Path, state_dir: Path | None = None, **_: Any) -> ArchiveAdapter:
    return ArchiveAdapter(project_root)
