"""ManifestStep: the one way a step puts Kubernetes manifests into a cluster.

* **plan** — a server-side dry-run apply per manifest, compared with the live object (``KubeAdapter.plan``): create /
  update (naming the changed fields) / in place; a kind the cluster does not serve (missing CRD) is a blocking
  finding; every manifest is validated offline against the OpenAPI schema of the cluster's Kubernetes version
  (kubernetes-validate, strict) — an invalid one is a blocking finding.
* **apply** — the rollback point first (what was live before, written to ``state/<env>/artifacts/<step>/``), then
  server-side apply (field manager ``bpmigrate``) and a rollout wait for every Deployment/DaemonSet/StatefulSet.
* **verify** — reads every object back: present, holding every field of the manifest, workloads rolled out.
* **rollback** — ``rollback_mode = "restore"``: re-apply what was live before and delete what the step created;
  ``"delete"``: only delete what the step created (no object contents are kept on disk, e.g. Secrets).
  Namespaces are never deleted (other steps' objects live in them).

A subclass supplies its manifests (``manifests(ctx)``, usually rendered templates) and its decisions; it may extend
plan/apply/verify and call the module's functions directly.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from migrate.errors import BpmError, ConfigError, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Step, StepContext

Doc = dict[str, Any]

PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "default"})
MANAGED_LABEL = "app.kubernetes.io/managed-by"


def kube_unreachable(ctx: StepContext) -> str | None:
    """Why no Kubernetes cluster can be used here (None = reachable)."""
    try:
        return ctx.adapters.kube().unreachable_reason()
    except BpmError as exc:
        return f"no Kubernetes cluster: {exc.what} ({exc.next_cmd})"


def ref(doc: Mapping[str, Any]) -> str:
    """``Kind/namespace/name`` (``Kind/name`` for cluster-scoped objects)."""
    from migrate.adapters.kube import ref_of

    return ref_of(doc)


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def render_templates(ctx: StepContext, path: str | Path, values: Mapping[str, Any]) -> list[Doc]:
    """Render a template file or directory (relative to the project's templates dir, or absolute)."""
    from migrate.adapters.manifests import render

    return render(ctx.templates_dir / path, values)


def user_manifests(ctx: StepContext, directory: str) -> list[Doc]:
    """A team's own manifests (``manifests_dir`` setting): plain YAML, or a kustomize layout via ``kubectl``."""
    import shutil

    from migrate.adapters.manifests import load_user_manifests

    path = Path(directory).expanduser()
    path = path if path.is_absolute() else ctx.project_root / path
    kubectl = shutil.which("kubectl")

    def kustomize(target: Path) -> str:
        result = ctx.adapters.proc().run([str(kubectl), "kustomize", str(target)], timeout=120)
        return str(result.stdout)

    return load_user_manifests(path, kustomize=kustomize if kubectl else None)


def cluster_version(ctx: StepContext) -> str:
    """The cluster's Kubernetes minor version (``1.33``), from its ``/version``."""
    from migrate.adapters.manifests import minor_of

    return minor_of(ctx.adapters.kube().server_version())


def schema_findings(ctx: StepContext, docs: list[Doc]) -> list[Finding]:
    """Offline OpenAPI validation of the manifests for the cluster's version: each invalid one is a blocking finding."""
    from migrate.adapters.manifests import schema_problems, schema_versions

    version = cluster_version(ctx)
    if version not in schema_versions():
        return [Finding("warn", f"no OpenAPI schemas for Kubernetes {version}: manifests not schema-checked")]
    return [
        Finding(
            "block",
            f"schema (Kubernetes {version}): {problem}",
            "fix the manifest (an unknown or mistyped field is rejected by the API server), then re-plan",
        )
        for problem in schema_problems(docs, version)
    ]


def plan_manifests(ctx: StepContext, docs: list[Doc], result: PlanResult, *, schema: bool = True) -> None:
    """Add one Change (create/update) or in_place entry per manifest from a server-side dry-run diff."""
    kube = ctx.adapters.kube()
    for doc in docs:
        try:
            ((action, target, detail),) = kube.plan([doc])
        except BpmError as exc:  # e.g. the kind's CRD is not installed (VerticalPodAutoscaler)
            result.findings.append(
                Finding(
                    "block",
                    f"cannot plan {ref(doc)} ({doc.get('apiVersion')}): {exc.what}",
                    f"install the {doc.get('kind')} API (CRD/controller) in the cluster, or leave it out (see the "
                    "step's settings)",
                )
            )
            continue
        if action == "unchanged":
            result.in_place.append(target)
        else:
            result.changes.append(Change(action, target, detail))
    if schema:
        result.findings.extend(schema_findings(ctx, docs))


def verify_manifests(ctx: StepContext, docs: list[Doc]) -> list[Check]:
    """Read every object back: present, holding every field of its manifest; workloads rolled out."""
    from migrate.adapters.kube import changed_fields, is_workload, rollout_status, subset_of

    kube = ctx.adapters.kube()
    checks: list[Check] = []
    for doc in docs:
        meta = doc["metadata"]
        live = kube.get(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
        if live is None:
            checks.append(Check(f"{ref(doc)} exists", False, "absent", "present"))
            continue
        wanted = {k: v for k, v in doc.items() if k != "status"}
        same = subset_of(wanted, live)
        detail = "" if same or doc["kind"] == "Secret" else changed_fields(wanted, _shape_of(wanted, live))
        checks.append(
            Check(f"{ref(doc)} matches the manifest", same, "matches" if same else "differs", "matches", detail)
        )
        if is_workload(doc):
            live.setdefault("kind", doc["kind"])
            done, why = rollout_status(live)
            checks.append(Check(f"{ref(doc)} rolled out", done, why, "all replicas updated and available"))
    return checks


def _shape_of(wanted: Any, live: Any) -> Any:
    """``live`` cut down to the keys ``wanted`` has (so a diff lists only the fields the manifest sets)."""
    if isinstance(wanted, Mapping) and isinstance(live, Mapping):
        return {k: _shape_of(v, live.get(k)) for k, v in wanted.items()}
    return live


def wait_rollouts(ctx: StepContext, docs: list[Doc], timeout: float, *, step_id: str) -> None:
    """Wait for every workload among ``docs`` to roll out within ``timeout`` seconds in total."""
    from migrate.adapters.kube import is_workload

    kube = ctx.adapters.kube()
    deadline = time.monotonic() + timeout
    for doc in docs:
        if not is_workload(doc):
            continue
        meta = doc["metadata"]
        ns = str(meta.get("namespace") or kube.namespace)
        try:
            kube.wait_rollout(str(doc["kind"]), str(meta["name"]), ns, max(1.0, deadline - time.monotonic()))
        except StepFailed as exc:
            raise StepFailed(
                exc.what,
                exc.why,
                f"kubectl -n {ns} describe {str(doc['kind']).lower()} {meta['name']}; restore the previous version "
                f"with `bpmigrate rollback --step {step_id} --env {ctx.env_name}`, or fix the cause and re-run "
                f"`bpmigrate apply --step {step_id} --env {ctx.env_name}`",
            ) from None


# -- the rollback point ----------------------------------------------------------------------------------------------
def _write_json(ctx: StepContext, path: Path, data: Any) -> tuple[str, int]:
    """Atomically, through the files adapter: (sha256, size)."""
    return ctx.adapters.get("archive").write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))  # type: ignore[no-any-return]


def point_path(ctx: StepContext) -> Path:
    return ctx.artifacts_dir() / "rollback-point.json"


def load_point(ctx: StepContext) -> dict[str, Any] | None:
    path = point_path(ctx)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


def record_point(ctx: StepContext, docs: list[Doc], *, keep_contents: bool) -> dict[str, Any]:
    """Record what was live before applying ``docs`` (reused while the same apply is retried or never finished).

    ``created``: the refs that did not exist before (accumulated across applies); ``snapshot``: a file with the
    previous objects (only with ``keep_contents``, never for Secrets)."""
    from migrate.adapters.kube import clean_live

    fingerprint = digest(docs)
    refs = [ref(d) for d in docs]
    api = {ref(d): str(d["apiVersion"]) for d in docs}
    point = load_point(ctx)
    if point is not None and (point.get("fingerprint") == fingerprint or not point.get("completed")):
        # the same apply re-run, or the last one never finished: the state before it is still the way back
        point["refs"] = sorted(set(point.get("refs", [])) | set(refs))
    else:
        kube = ctx.adapters.kube()
        previous: dict[str, Doc] = {}
        created = set((point or {}).get("created", []))
        for doc in docs:
            meta = doc["metadata"]
            live = kube.get(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
            if live is None:
                created.add(ref(doc))
            elif keep_contents and doc["kind"] != "Secret":
                live.setdefault("apiVersion", doc["apiVersion"])
                live.setdefault("kind", doc["kind"])
                previous[ref(doc)] = clean_live(live)
        point = {"refs": sorted(refs), "created": sorted(created), "snapshot": None}
        if keep_contents:
            snap = ctx.artifacts_dir() / f"previous-{fingerprint}.json"
            ctx.intent("record-previous-manifests", file=str(snap), objects=sorted(previous))
            sha, size = _write_json(ctx, snap, previous)
            ctx.artifact("k8s-previous-manifests", snap, sha, size)
            point["snapshot"] = snap.name
        else:
            ctx.intent("record-created-objects", objects=sorted(created))
    point["fingerprint"] = fingerprint
    point["api"] = {**point.get("api", {}), **api}
    point["completed"] = False
    point["recorded_at"] = time.time()
    _write_json(ctx, point_path(ctx), point)
    ctx.checkpoints.put("rollback-point", {k: v for k, v in point.items() if k not in ("recorded_at", "api")})
    return point


def complete_point(ctx: StepContext, point: dict[str, Any], **extra: Any) -> None:
    point.update(extra, completed=True)
    _write_json(ctx, point_path(ctx), point)


def previous_objects(ctx: StepContext, point: Mapping[str, Any]) -> dict[str, Doc]:
    if not point.get("snapshot"):
        return {}
    path = ctx.artifacts_dir() / str(point["snapshot"])
    if not path.is_file():
        raise StepFailed(
            f"the recorded previous manifests {path} are missing",
            "the rollback point names a snapshot file that is no longer there",
            "restore it from a backup of the state directory, or redeploy a known-good version with "
            f"`bpmigrate apply --step {ctx.step_id} --env {ctx.env_name}`",
        )
    data = json.loads(path.read_text())
    return dict(data) if isinstance(data, dict) else {}


def delete_objects(ctx: StepContext, targets: list[tuple[str, str]]) -> list[str]:
    """Delete (apiVersion, ref) pairs, newest first; Namespaces are kept (other steps' objects live in them)."""
    kube = ctx.adapters.kube()
    deleted = []
    for api_version, target in reversed(targets):
        kind, _, rest = target.partition("/")
        ns, _, name = rest.rpartition("/")
        if kind == "Namespace":
            ctx.log(f"{target} kept (a namespace holds other steps' objects)")
            continue
        ctx.intent("kube-delete", ref=target)
        if kube.delete(api_version, kind, name, ns or None):
            deleted.append(target)
    return deleted


class ManifestStep(Step):
    """Base of every step that server-side applies Kubernetes manifests (see the module docstring)."""

    #: "restore": rollback re-applies what was live before; "delete": rollback deletes only what the step created
    rollback_mode: ClassVar[str] = "restore"
    #: without a recorded rollback point, rollback deletes the rendered objects (False: does nothing)
    delete_without_point: ClassVar[bool] = True
    #: rollout wait when the step's Settings have no ``rollout_timeout``
    default_rollout_timeout: ClassVar[float] = 300.0

    def manifests(self, ctx: StepContext) -> list[Doc]:
        raise NotImplementedError

    def rollout_timeout(self, ctx: StepContext) -> float:
        return float(getattr(ctx.typed(self.Settings), "rollout_timeout", self.default_rollout_timeout))

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def plan(self, ctx: StepContext) -> PlanResult:
        docs = self.manifests(ctx)
        result = PlanResult(data={"manifests": digest(docs)})
        plan_manifests(ctx, docs, result)
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        return self.apply_manifests(ctx, self.manifests(ctx))

    def apply_manifests(self, ctx: StepContext, docs: list[Doc]) -> Outputs:
        from migrate.adapters.kube import is_workload

        point = record_point(ctx, docs, keep_contents=self.rollback_mode == "restore")
        ctx.intent("kube-apply", refs=[ref(d) for d in docs])
        applied = ctx.adapters.kube().apply(docs)
        wait_rollouts(ctx, docs, self.rollout_timeout(ctx), step_id=self.id)
        complete_point(ctx, point)
        return {"applied": applied, "workloads": [ref(d) for d in docs if is_workload(d)]}

    def verify(self, ctx: StepContext) -> list[Check]:
        return verify_manifests(ctx, self.manifests(ctx))

    def rollback(self, ctx: StepContext) -> None:
        self.rollback_manifests(ctx)

    def rollback_manifests(self, ctx: StepContext) -> None:
        point = load_point(ctx)
        if point is None:
            if not self.delete_without_point:
                ctx.log(f"{self.id} rollback: no rollback point recorded (nothing was applied): nothing to do")
                return
            try:
                docs = self.manifests(ctx)
            except ConfigError as exc:
                ctx.log(f"{self.id} rollback: no rollback point and the manifests do not render ({exc.what})")
                return
            delete_objects(ctx, [(str(d["apiVersion"]), ref(d)) for d in docs])
            return
        previous = previous_objects(ctx, point)
        restore = [previous[r] for r in point.get("refs", []) if r in previous]
        created = set(point.get("created", []))
        absent = [r for r in point.get("refs", []) if r not in previous and r in created]
        if restore:
            ctx.intent("kube-restore-previous", refs=[ref(d) for d in restore])
            ctx.adapters.kube().apply(restore)
        api = point.get("api") or {}
        delete_objects(ctx, [(str(api.get(r, "v1")), r) for r in absent])
        wait_rollouts(ctx, restore, self.rollout_timeout(ctx), step_id=self.id)
        complete_point(ctx, point, rolled_back_at=time.time())
        ctx.log(f"{self.id} rollback: restored {len(restore)} object(s), deleted {len(absent)} created one(s)")

    def summary(self, outputs: Mapping[str, Any]) -> str:
        applied = outputs.get("applied") or []
        workloads = outputs.get("workloads") or []
        return f"{len(applied)} object(s) applied · {len(workloads)} workload(s) rolled out"
