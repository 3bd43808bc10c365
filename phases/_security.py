"""Security check of rendered Kubernetes manifests (pure: documents in, findings out; no I/O).

Rules, for every pod-bearing object (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) and every
container in it (init containers included):

* ``privileged``        — ``securityContext.privileged: true`` is refused;
* ``hostPath``          — a ``hostPath`` volume is refused;
* ``limits``            — ``resources.limits.cpu`` and ``resources.limits.memory`` must be set;
* ``readOnlyRootFilesystem`` — must be true, unless the workload (or its pod template) is annotated
  ``bpmigrate.io/allow-writable-root: "<reason>"`` ("where possible");
* ``runAsNonRoot``      — the container or the pod must set ``runAsNonRoot: true``, and no ``runAsUser: 0``.

Exceptions are explicit and carry a reason (system add-ons such as a device plugin need a hostPath): annotate the
workload or its pod template ``bpmigrate.io/security-exceptions: "hostPath,limits"`` together with
``bpmigrate.io/security-exceptions-reason: "<why>"``. Exempted findings are still returned (``exempted`` = the
reason) so plans show them as information; an exception without a reason is ignored.

Each finding names the manifest (``kind/name``, file) and the field path, e.g.
``Deployment/api-gateway (templates/k8s/app/21-api-gateway.yaml): spec.template.spec.containers[0]
.securityContext.privileged = true``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WRITABLE_ROOT_ANNOTATION = "bpmigrate.io/allow-writable-root"
EXCEPTIONS_ANNOTATION = "bpmigrate.io/security-exceptions"
EXCEPTIONS_REASON_ANNOTATION = "bpmigrate.io/security-exceptions-reason"
RULES = ("privileged", "hostPath", "limits", "readOnlyRootFilesystem", "runAsNonRoot")
POD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")


@dataclass(frozen=True)
class SecurityFinding:
    rule: str
    file: str
    kind: str
    name: str
    path: str
    message: str
    fix: str = ""
    exempted: str | None = None  # the reason given in the exceptions annotation; None = a real finding

    @property
    def manifest(self) -> str:
        return f"{self.kind}/{self.name}"

    def __str__(self) -> str:
        text = f"{self.manifest} ({self.file}): {self.path}: {self.message}"
        return f"{text} [exempted: {self.exempted}]" if self.exempted else text


def pod_spec(doc: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None, Mapping[str, Any]]:
    """(field path of the pod spec, the pod spec, the pod template's metadata) of a pod-bearing object."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return "spec", spec, doc.get("metadata") or {}
    if kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return "spec.jobTemplate.spec.template.spec", template.get("spec"), template.get("metadata") or {}
    template = spec.get("template") or {}
    return "spec.template.spec", template.get("spec"), template.get("metadata") or {}


def _annotations(*metas: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for meta in metas:
        out.update({str(k): str(v) for k, v in (meta.get("annotations") or {}).items()})
    return out


def check_manifest(doc: Mapping[str, Any], file: str = "<memory>") -> list[SecurityFinding]:
    """Findings for one document (an empty list for kinds without pods)."""
    kind = str(doc.get("kind", ""))
    if kind not in POD_KINDS:
        return []
    meta = doc.get("metadata") or {}
    name = str(meta.get("name", "?"))
    base, spec, tmeta = pod_spec(doc)
    findings: list[SecurityFinding] = []

    def add(rule: str, path: str, message: str, fix: str) -> None:
        exempted = (reason or "exempted") if rule in exempt else None
        findings.append(SecurityFinding(rule, file, kind, name, path, message, fix, exempted))

    if not isinstance(spec, Mapping):
        add("podSpec", base, "no pod spec found", "give the workload a pod template")
        return findings
    pod_sc = spec.get("securityContext") or {}
    notes = _annotations(meta, tmeta)
    reason = notes.get(EXCEPTIONS_REASON_ANNOTATION, "").strip()
    exempt = {r.strip() for r in notes.get(EXCEPTIONS_ANNOTATION, "").split(",") if r.strip()} if reason else set()
    if WRITABLE_ROOT_ANNOTATION in notes:
        exempt.add("readOnlyRootFilesystem")
        reason = reason or notes[WRITABLE_ROOT_ANNOTATION]

    for vi, volume in enumerate(spec.get("volumes") or []):
        if isinstance(volume, Mapping) and "hostPath" in volume:
            add(
                "hostPath",
                f"{base}.volumes[{vi}].hostPath",
                f"hostPath volume {volume.get('name')!r} ({(volume.get('hostPath') or {}).get('path')}) mounts the node's filesystem",
                "use an emptyDir, a ConfigMap/Secret or a PersistentVolumeClaim instead",
            )

    pod_non_root = pod_sc.get("runAsNonRoot") is True
    if pod_sc.get("runAsUser") == 0:
        add(
            "runAsNonRoot",
            f"{base}.securityContext.runAsUser",
            "runs as user 0 (root)",
            "set runAsUser to a non-zero uid",
        )

    for group in ("initContainers", "containers"):
        for ci, container in enumerate(spec.get(group) or []):
            if not isinstance(container, Mapping):
                continue
            cpath = f"{base}.{group}[{ci}]"
            cname = container.get("name", ci)
            sc = container.get("securityContext") or {}
            if sc.get("privileged") is True:
                add(
                    "privileged",
                    f"{cpath}.securityContext.privileged",
                    f"container {cname!r} is privileged (= true)",
                    "remove privileged: true; grant only the specific capability needed",
                )
            limits = (container.get("resources") or {}).get("limits") or {}
            for res in ("cpu", "memory"):
                if not limits.get(res):
                    add(
                        "limits",
                        f"{cpath}.resources.limits.{res}",
                        f"container {cname!r} has no {res} limit",
                        f"set resources.limits.{res}",
                    )
            if sc.get("readOnlyRootFilesystem") is not True:
                add(
                    "readOnlyRootFilesystem",
                    f"{cpath}.securityContext.readOnlyRootFilesystem",
                    f"container {cname!r} has a writable root filesystem (= {sc.get('readOnlyRootFilesystem')})",
                    f"set readOnlyRootFilesystem: true (mount an emptyDir for scratch paths), or annotate "
                    f"{WRITABLE_ROOT_ANNOTATION}: <reason> when impossible",
                )
            if sc.get("runAsUser") == 0:
                add(
                    "runAsNonRoot",
                    f"{cpath}.securityContext.runAsUser",
                    f"container {cname!r} runs as user 0 (root)",
                    "set runAsUser to a non-zero uid",
                )
            non_root = sc.get("runAsNonRoot")
            if non_root is False or (non_root is None and not pod_non_root):
                add(
                    "runAsNonRoot",
                    f"{cpath}.securityContext.runAsNonRoot",
                    f"container {cname!r} may run as root (runAsNonRoot = {non_root}, pod-level = {pod_sc.get('runAsNonRoot')})",
                    "set runAsNonRoot: true on the container or in the pod's securityContext",
                )
    return findings


def blocking(findings: Iterable[SecurityFinding]) -> list[SecurityFinding]:
    """The findings that are not covered by an exception."""
    return [f for f in findings if not f.exempted]


def check_manifests(docs: Iterable[tuple[str, Mapping[str, Any]]]) -> list[SecurityFinding]:
    """Findings (exempted ones included, marked) for (file, document) pairs, in input order."""
    out: list[SecurityFinding] = []
    for file, doc in docs:
        if isinstance(doc, Mapping):
            out.extend(check_manifest(doc, file))
    return out
