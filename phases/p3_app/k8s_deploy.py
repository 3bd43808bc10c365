"""Step ``k8s-deploy``: Deployments and Services for every service, rolled out with a timeout; rollback = the quick rollback."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrate.errors import DependencyNotReady, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, Reversibility, Step, StepContext

from ._common import (
    AWS_RETRY,
    PHASE,
    WORKLOAD_FILES,
    base_values,
    clean_live,
    container_images,
    image_key,
    kube_unreachable,
    live_object,
    namespace,
    plan_docs,
    record_artifact,
    ref,
    render,
    security_findings,
    services,
    write_json_atomic,
)


class K8sDeploy(Step):
    """Deployments and Services for every service, rolled out with a timeout; rollback = the quick rollback.

    Renders templates/k8s/app/2*.yaml with the image references recorded by `images` and the namespace, applies
    them server-side, and waits for every Deployment to roll out (observedGeneration, updated and available
    replicas) within `rollout_timeout` seconds — a timeout names the pods' reasons (e.g. ImagePullBackOff).
    Before applying, the live manifests (and so the images) are recorded in
    state/<env>/artifacts/k8s-deploy/; rollback re-applies exactly those and deletes what did not exist before.
    """

    id = "k8s-deploy"
    retry = AWS_RETRY
    phase = PHASE
    depends_on = ("images", "k8s-config")
    reversibility = Reversibility.REVERSIBLE

    def skip_reason(self, ctx: StepContext) -> str | None:
        return kube_unreachable(ctx)

    def images(self, ctx: StepContext) -> dict[str, str] | None:
        recorded = ctx.output("images", "images", None)
        if not isinstance(recorded, Mapping):
            return None
        missing = [svc for svc in services(ctx) if svc not in recorded]
        if missing:
            return None
        return {svc: str(recorded[svc]["image"]) for svc in services(ctx)}

    def docs(self, ctx: StepContext, images: Mapping[str, str]) -> list[dict[str, Any]]:
        values = base_values(ctx)
        values.update({image_key(svc): image for svc, image in images.items()})
        files = tuple(str(f) for f in ctx.setting("templates", WORKLOAD_FILES))
        return render(ctx, files, values)

    def plan(self, ctx: StepContext) -> PlanResult:
        reason = self.skip_reason(ctx)
        if reason:
            return PlanResult(skip_reason=reason)
        images = self.images(ctx)
        if images is None:
            return PlanResult(
                changes=[Change("update", f"Deployments/Services in {namespace(ctx)}", "images from step images")],
                unknown=["image references (outputs of step images)"],
            )
        result = PlanResult(data={"images": images, "namespace": namespace(ctx)})
        kube = ctx.adapters.kube()
        docs = self.docs(ctx, images)
        result.findings.extend(security_findings(docs))
        plan_docs(kube, docs, result)
        for doc in docs:
            if doc["kind"] != "Deployment":
                continue
            live = kube.get("apps/v1", "Deployment", doc["metadata"]["name"], doc["metadata"]["namespace"])
            if live is not None and container_images(live) != container_images(doc):
                result.findings.append(
                    Finding("info", f"{ref(doc)}: {container_images(live)} -> {container_images(doc)}")
                )
        return result

    # the rollback point: what was live before this deployment, kept across crashes and re-runs
    def point_path(self, ctx: StepContext) -> Path:
        return ctx.artifacts_dir() / "rollback-point.json"

    def load_point(self, ctx: StepContext) -> dict[str, Any] | None:
        path = self.point_path(ctx)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None

    def snapshot(self, ctx: StepContext, docs: list[dict[str, Any]]) -> dict[str, Any]:
        """Record the previously-live objects before applying (reused when a run is retried)."""
        fingerprint = hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()[:16]
        refs = [ref(d) for d in docs]
        point = self.load_point(ctx)
        if point is not None and (point.get("fingerprint") == fingerprint or not point.get("completed")):
            # same deployment re-run, or the last one never finished: the state before it is still the way back
            point["fingerprint"] = fingerprint
            point["refs"] = sorted(set(point.get("refs", [])) | set(refs))
            point["completed"] = False
        else:
            kube = ctx.adapters.kube()
            previous: dict[str, dict[str, Any]] = {}
            for doc in docs:
                meta = doc["metadata"]
                live = live_object(kube, doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
                if live is not None:
                    live.setdefault("apiVersion", doc["apiVersion"])
                    live.setdefault("kind", doc["kind"])
                    previous[ref(doc)] = clean_live(live)
            snap = ctx.artifacts_dir() / f"previous-{fingerprint}.json"
            ctx.intent("record-previous-manifests", file=str(snap), objects=sorted(previous))
            write_json_atomic(snap, previous)
            record_artifact(ctx, "k8s-previous-manifests", snap)
            point = {"fingerprint": fingerprint, "snapshot": snap.name, "refs": sorted(refs), "completed": False}
        point["recorded_at"] = time.time()
        write_json_atomic(self.point_path(ctx), point)
        ctx.checkpoints.put("rollback-point", {k: v for k, v in point.items() if k != "recorded_at"})
        return point

    def previous_objects(self, ctx: StepContext, point: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        path = ctx.artifacts_dir() / str(point["snapshot"])
        if not path.is_file():
            raise StepFailed(
                f"the recorded previous manifests {path} are missing",
                "the rollback point names a snapshot file that is no longer there",
                "restore it from a backup of the state directory, or redeploy a known-good version with "
                f"`bpmigrate apply --step k8s-deploy --env {ctx.env_name}`",
            )
        data = json.loads(path.read_text())
        return dict(data) if isinstance(data, dict) else {}

    def wait(self, ctx: StepContext, deployments: list[tuple[str, str]], timeout: float) -> None:
        kube = ctx.adapters.kube()
        deadline = time.monotonic() + timeout
        for ns, name in deployments:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                kube.wait_rollout("Deployment", name, ns, remaining)
            except StepFailed as exc:
                raise StepFailed(
                    exc.what,
                    exc.why,
                    f"kubectl -n {ns} describe deployment {name}; restore the previous version with "
                    f"`bpmigrate rollback --step {self.id} --env {ctx.env_name}` (quick rollback), or fix the cause "
                    f"and re-run `bpmigrate apply --step {self.id} --env {ctx.env_name}`",
                ) from None

    def apply(self, ctx: StepContext) -> Outputs:
        images = self.images(ctx)
        if images is None:
            raise DependencyNotReady(
                "k8s-deploy needs the image references recorded by step images",
                "the images step has not been applied in this environment",
                f"bpmigrate apply --step images --env {ctx.env_name}",
            )
        kube = ctx.adapters.kube()
        docs = self.docs(ctx, images)
        point = self.snapshot(ctx, docs)
        previous = self.previous_objects(ctx, point)
        refs = [ref(d) for d in docs]
        ctx.intent("kube-apply", refs=refs, images=images)
        kube.apply(docs)
        deployments = [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Deployment"]
        self.wait(ctx, deployments, float(ctx.setting("rollout_timeout", 600)))
        point["completed"] = True
        write_json_atomic(self.point_path(ctx), point)
        return {
            "namespace": namespace(ctx),
            "deployments": [ref(d) for d in docs if d["kind"] == "Deployment"],
            "services": [ref(d) for d in docs if d["kind"] == "Service"],
            "images": images,
            "previous_images": {
                r.split("/")[-1]: next(iter(container_images(previous[r])), None) if r in previous else None
                for r in refs
                if r.startswith("Deployment/")
            },
            "rollback_point": str(self.point_path(ctx)),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        images = self.images(ctx)
        if images is None:
            return [Check("image references recorded by step images", False, None, "recorded")]
        kube = ctx.adapters.kube()
        checks: list[Check] = []
        for doc in self.docs(ctx, images):
            meta = doc["metadata"]
            live = kube.get(doc["apiVersion"], doc["kind"], meta["name"], meta["namespace"])
            if live is None:
                checks.append(Check(ref(doc), False, "missing", "exists"))
                continue
            if doc["kind"] == "Deployment":
                live.setdefault("kind", "Deployment")
                want = container_images(doc)
                have = container_images(live)
                checks.append(Check(f"{ref(doc)} image", have == want, have, want))
                done, detail = rollout_status(live)
                checks.append(Check(f"{ref(doc)} rolled out", done, detail, "all replicas updated and available"))
            elif doc["kind"] == "Service":
                selector = (live.get("spec") or {}).get("selector")
                want_sel = (doc.get("spec") or {}).get("selector")
                checks.append(Check(f"{ref(doc)} selector", selector == want_sel, selector, want_sel))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        point = self.load_point(ctx)
        if point is None:
            ctx.log("k8s-deploy rollback: no rollback point recorded (nothing was applied): nothing to do")
            return
        kube = ctx.adapters.kube()
        previous = self.previous_objects(ctx, point)
        restore = [previous[r] for r in point.get("refs", []) if r in previous]
        absent = [r for r in point.get("refs", []) if r not in previous]
        if restore:
            ctx.intent("kube-restore-previous", refs=[ref(d) for d in restore])
            kube.apply(restore)
        for r in absent:
            kind, ns, name = r.split("/", 2)
            api = "apps/v1" if kind == "Deployment" else "v1"
            ctx.intent("kube-delete", ref=r)
            kube.delete(api, kind, name, ns)
        deployments = [
            (d["metadata"]["namespace"], d["metadata"]["name"]) for d in restore if d["kind"] == "Deployment"
        ]
        self.wait(ctx, deployments, float(ctx.setting("rollout_timeout", 600)))
        point["rolled_back_at"] = time.time()
        point["completed"] = True
        write_json_atomic(self.point_path(ctx), point)
        ctx.log(f"k8s-deploy rollback: restored {len(restore)} object(s), deleted {len(absent)} new one(s)")
