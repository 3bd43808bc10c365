"""Model archives (TorchServe ``.mar`` files): the sample archive for rehearsals, checksums and S3 keys.

``sample_archive_bytes`` builds a tiny, deterministic TorchServe-shaped archive (a zip holding MAR-INF/MANIFEST.json,
no weights); ``describe`` gives, for each archive, its model name, SHA-256, size and the content-addressed S3 key
``<prefix>/<model>/<sha[:12]>/<file>`` (so a changed archive never overwrites the one a running server loaded).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any


def sample_archive_bytes(model_name: str) -> bytes:
    """A tiny, deterministic TorchServe-shaped archive (zip with MAR-INF/MANIFEST.json) for rehearsals and tests."""
    manifest = {
        "createdOn": "01/01/2026 00:00:00",
        "runtime": "python",
        "model": {"modelName": model_name, "handler": "text_classifier", "modelVersion": "1.0"},
        "archiverVersion": "0.11.1",
        "note": "bpmigrate sample archive (no weights): generated for a sandbox rehearsal",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("MAR-INF/MANIFEST.json", date_time=(2026, 1, 1, 0, 0, 0))
        zf.writestr(info, json.dumps(manifest, indent=2, sort_keys=True))
    return buf.getvalue()


def write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def describe(path: Path, prefix: str, data: bytes | None = None) -> dict[str, Any]:
    """name, path, sha256, size and S3 key of one archive (``data``: its bytes when not written to ``path`` yet)."""
    from migrate.adapters.aws_ml import file_sha256
    from migrate.adapters.torchserve import archive_name

    if data is not None and not path.is_file():
        sha, size = hashlib.sha256(data).hexdigest(), len(data)
    else:
        sha, size = file_sha256(path), path.stat().st_size
    name = archive_name(path)
    prefix = prefix.strip("/")
    key = f"{prefix}/{name}/{sha[:12]}/{path.name}" if prefix else f"{name}/{sha[:12]}/{path.name}"
    return {"name": name, "path": path, "sha256": sha, "size": size, "key": key}


def from_config(env: Any, **_: Any) -> Any:
    """Module-level functions only: ``ctx.adapters.get("model_archive")`` returns this module."""
    import sys

    return sys.modules[__name__]
