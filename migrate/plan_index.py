"""A cached index of the plan for the read-only dashboard: step metadata without importing the step modules.

`bpmigrate status` needs each step's id, phase, title, dependencies, gate, reversibility, downtime flag and file
checksum, plus its one-line summary of the recorded outputs. Importing every step module (and building each step's
pydantic ``Settings``) costs more than all the rest of `status`, so the metadata is kept in
``<state_dir>/.plan-index-<tag>.json``:

* valid while every ``.py`` file under the phases directory, and the engine modules that define a step's metadata,
  have the same path, size and modification time as when it was written (and the same bpmigrate version); anything
  else — an edited step, a new helper, an upgrade — falls back to the real loader, which rewrites the file;
* summaries are kept per step with a digest of the outputs they summarise (and are dropped with the file when any
  code changes), so a step whose outputs changed since is summarised again by importing only its own module.

The file holds no secrets: summaries are stored as displayed, after redaction. A file that cannot be read or written
(read-only state directory, two `status` runs at once) only costs the fallback: it is written to a temporary name
and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from migrate.plan_nav import Steps
from migrate.states import Reversibility

if TYPE_CHECKING:
    from migrate.plan import Graph

FORMAT = 1
#: engine modules whose code decides a step's metadata as the index records it (titles, checksums, summaries)
_ENGINE_FILES = ("step.py", "states.py", "plan.py", "plan_nav.py", "plan_index.py", "redact.py")


class StepInfo(NamedTuple):
    """One step as the dashboard sees it (the attributes of a ``Step`` class that `status` reads)."""

    id: str
    phase: int
    title: str
    depends_on: tuple[str, ...]
    gate: str | None
    reversibility: Reversibility
    causes_downtime: bool
    checksum: str

    def display_title(self) -> str:
        return self.title

    def definition_checksum(self) -> str:
        return self.checksum


@dataclass(frozen=True)
class PlanIndex(Steps[StepInfo]):
    """The plan as recorded in the index file; ``summary`` imports one step module only on a cache miss."""

    phases_dir: Path = Path()
    path: Path | None = None
    fingerprint: list[list[Any]] = field(default_factory=list)
    summaries: dict[str, dict[str, str]] = field(default_factory=dict)
    dirty: bool = False  # learnt something the file does not hold yet

    def summary(self, step_id: str, outputs: dict[str, Any]) -> str:
        if not outputs:
            return ""
        digest = _digest(outputs)
        cached = self.summaries.get(step_id)
        if cached and cached.get("digest") == digest:
            return cached["text"]
        from migrate.plan import load_graph, load_step, step_summary

        # its own module only (a phase package); a single-file phase module: the plan
        step = load_step(self.phases_dir, step_id) or load_graph(self.phases_dir).get(step_id)
        text = step_summary(step, outputs)
        self.summaries[step_id] = {"digest": digest, "text": text}
        object.__setattr__(self, "dirty", True)
        return text

    def save(self) -> None:
        """Write the index (and the summaries learnt since it was read) if anything is new; errors are ignored."""
        if self.path is None or not self.dirty:
            return
        document = {
            "format": FORMAT,
            "phases_dir": str(self.phases_dir),
            "fingerprint": self.fingerprint,
            "phases": {str(k): v for k, v in self.phases.items()},
            "steps": [{**info._asdict(), "depends_on": list(info.depends_on), "reversibility": info.reversibility.value} for info in self.steps],
            "summaries": self.summaries,
        }
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
            os.replace(temporary, self.path)
            object.__setattr__(self, "dirty", False)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


def plan_index(phases_dir: Path, state_dir: Path) -> PlanIndex:
    """The plan's index from ``state_dir`` when it still describes ``phases_dir``; else built by the real loader."""
    phases_dir = phases_dir.resolve()
    tag = hashlib.sha256(str(phases_dir).encode()).hexdigest()[:10]
    path = state_dir / f".plan-index-{tag}.json"
    fingerprint = _fingerprint(phases_dir)
    document = _read(path)
    if document is not None and document.get("fingerprint") == fingerprint and document.get("format") == FORMAT:
        try:
            return _from_document(document, phases_dir, path)
        except (KeyError, TypeError, ValueError):
            pass
    from migrate.plan import load_graph

    index = from_graph(load_graph(phases_dir), phases_dir, path, fingerprint)
    index.save()
    return index


def from_graph(graph: Graph, phases_dir: Path, path: Path | None = None, fingerprint: list[list[Any]] | None = None) -> PlanIndex:
    steps = tuple(
        StepInfo(
            id=s.id,
            phase=s.phase,
            title=s.display_title(),
            depends_on=tuple(s.depends_on),
            gate=s.gate,
            reversibility=s.reversibility,
            causes_downtime=s.causes_downtime,
            checksum=s.definition_checksum(),
        )
        for s in graph.steps
    )
    return PlanIndex(steps, dict(graph.phases), phases_dir, path, fingerprint or [], {}, dirty=True)


def _from_document(document: dict[str, Any], phases_dir: Path, path: Path) -> PlanIndex:
    steps = tuple(
        StepInfo(
            id=str(row["id"]),
            phase=int(row["phase"]),
            title=str(row["title"]),
            depends_on=tuple(str(d) for d in row["depends_on"]),
            gate=None if row["gate"] is None else str(row["gate"]),
            reversibility=Reversibility(row["reversibility"]),
            causes_downtime=bool(row["causes_downtime"]),
            checksum=str(row["checksum"]),
        )
        for row in document["steps"]
    )
    phases = {int(k): str(v) for k, v in document["phases"].items()}
    summaries = {str(k): {"digest": str(v["digest"]), "text": str(v["text"])} for k, v in document.get("summaries", {}).items()}
    return PlanIndex(steps, phases, phases_dir, path, document["fingerprint"], summaries)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _fingerprint(phases_dir: Path) -> list[list[Any]]:
    """(name, size, mtime_ns) of every source file the index depends on, and the bpmigrate version."""
    from migrate import __version__

    engine = Path(__file__).parent
    files = sorted(p for p in phases_dir.rglob("*.py") if "__pycache__" not in p.parts)
    rows: list[list[Any]] = [["bpmigrate", __version__, FORMAT]]
    for path in (*files, *(engine / name for name in _ENGINE_FILES)):
        try:
            stat = path.stat()
        except OSError:
            continue
        rows.append([str(path), stat.st_size, stat.st_mtime_ns])
    return rows


def _digest(outputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(outputs, sort_keys=True, default=str).encode()).hexdigest()[:32]
