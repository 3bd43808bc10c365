"""Phase 4 — ML/GPU: GPU nodes, NVIDIA device plugin, TorchServe, model archives, intent-classifier switch, and the
inference latency gate (the migration guide's weeks 7–8).

Serving is chosen per environment with the ``serving`` setting (``"torchserve"`` — default — or ``"sagemaker"``),
set in every phase-4 step table (``[steps.<id>] serving``). With ``sagemaker`` the GPU-node, device-plugin and
TorchServe steps are skipped with that reason and ``models`` creates a SageMaker model, endpoint config and endpoint.

Kubernetes steps are skipped — with the reason and the command to provide a cluster — when no Kubernetes API is
reachable (the local sandbox has none; it is never simulated inside the product). Steps talk to adapters only:
``kube``, ``manifests``, ``torchserve``, ``aws_ml`` and ``http``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from migrate.errors import AdapterError, ConfigError, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, RetryPolicy, Reversibility, Step, StepContext

if TYPE_CHECKING:
    from migrate.adapters.aws_ml import AwsMl
    from migrate.adapters.kube import KubeAdapter
    from migrate.adapters.torchserve import TorchServeClient

SERVING_MODES = ("torchserve", "sagemaker")
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_SELECTOR = "node_group=gpu"
DEFAULT_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.15.0"
DEFAULT_TORCHSERVE_IMAGE = "pytorch/torchserve:0.11.1-gpu"
RESTART_ANNOTATION = "bpmigrate.io/ml-config"


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def serving(ctx: StepContext) -> str:
    value = str(ctx.setting("serving", "torchserve"))
    if value not in SERVING_MODES:
        raise ConfigError(
            f"[steps.{ctx.step_id}] serving = {value!r} is not one of {', '.join(SERVING_MODES)}",
            "phase 4 serves the intent model either with TorchServe on EKS GPU nodes or with a SageMaker endpoint",
            f'set serving = "torchserve" or "sagemaker" in [steps.{ctx.step_id}] of migrate.toml',
        )
    return value


def _kube(ctx: StepContext) -> KubeAdapter:
    return ctx.adapters.kube()


def _ml(ctx: StepContext) -> AwsMl:
    return ctx.adapters.get("aws_ml")  # type: ignore[no-any-return]


def _namespace(ctx: StepContext) -> str:
    return str(ctx.setting("namespace", ctx.env.kube.namespace))


def _gpu_count(node: dict[str, Any]) -> int:
    raw = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(str(raw))
    except ValueError:
        return 0


def _node_ready(node: dict[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")) == "True"
    return False


def _gpu_nodes(ctx: StepContext) -> dict[str, int]:
    selector = str(ctx.setting("gpu_node_selector", DEFAULT_GPU_SELECTOR))
    return {str(n["metadata"]["name"]): _gpu_count(n) for n in _kube(ctx).nodes(selector)}


def _ref(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{ns}/{meta.get('name')}" if ns else f"{doc.get('kind')}/{meta.get('name')}"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plan_docs(ctx: StepContext, docs: list[dict[str, Any]], result: PlanResult) -> None:
    """Create/update/in-place per document (server-side dry-run apply compared with the live object)."""
    for action, ref in _kube(ctx).diff(docs):
        if action == "unchanged":
            result.in_place.append(ref)
        else:
            result.changes.append(Change(action, ref, "server-side apply"))


class _Ml(Step):
    """Phase-4 step base: skipped without a reachable Kubernetes API, or when the serving mode does not use it."""

    phase = 4
    retry = RetryPolicy(attempts=3, wait_initial=2.0)  # TransientError only (API blips); apply is idempotent
    uses_kube: ClassVar[bool] = True
    torchserve_only: ClassVar[bool] = False

    def skip_reason(self, ctx: StepContext) -> str | None:
        if self.torchserve_only and serving(ctx) != "torchserve":
            return (
                f'serving = "{serving(ctx)}" ([steps.{self.id}] serving): the model is served by SageMaker, '
                "so TorchServe on EKS GPU nodes is not used"
            )
        if self.uses_kube:
            return _kube(ctx).unreachable_reason()
        return None

    def _skip_plan(self, ctx: StepContext) -> PlanResult | None:
        reason = self.skip_reason(ctx)
        return PlanResult(skip_reason=reason) if reason else None


# ---------------------------------------------------------------------------------------------------------------
# gpu-nodes
# ---------------------------------------------------------------------------------------------------------------
class GpuNodes(_Ml):
    """GPU nodes: nodes labelled node_group=gpu exist, are Ready, and (once the device plugin runs) report
    allocatable nvidia.com/gpu.

    Read-only: apply records what it found (node names and GPU counts) and fails when no labelled node exists
    (the EKS GPU node group is missing or scaled to zero). Allocatable GPUs appear only after the NVIDIA device
    plugin runs (next step); the ``nvidia-plugin`` step verifies them.
    """

    id = "gpu-nodes"
    depends_on = ("cluster-addons",)
    reversibility = Reversibility.REVERSIBLE
    torchserve_only = True
    retry = RetryPolicy(attempts=3, wait_initial=2.0)
    timeout = 120.0

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        selector = str(ctx.setting("gpu_node_selector", DEFAULT_GPU_SELECTOR))
        nodes = _kube(ctx).nodes(selector)
        result = PlanResult(data={"selector": selector})
        for node in nodes:
            name = node["metadata"]["name"]
            state = "Ready" if _node_ready(node) else "NotReady"
            result.in_place.append(f"node {name} ({state}): allocatable {GPU_RESOURCE}={_gpu_count(node)}")
        result.changes.append(Change("noop", f"nodes {selector}", f"read-only check: found {len(nodes)} node(s)"))
        minimum = int(ctx.setting("min_nodes", 1))
        if len(nodes) < minimum:
            result.findings.append(
                Finding(
                    "block",
                    f"found {len(nodes)} node(s) labelled {selector}, need at least {minimum}",
                    "apply the eks step (GPU node group with label node_group=gpu) or scale the GPU node group up: "
                    f"bpmigrate apply --step eks --env {ctx.env_name}",
                )
            )
        elif not any(_gpu_count(n) for n in nodes):
            result.findings.append(
                Finding(
                    "info",
                    f"the {len(nodes)} GPU node(s) report no allocatable {GPU_RESOURCE} yet",
                    "expected before the NVIDIA device plugin runs: the nvidia-plugin step installs it",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        selector = str(ctx.setting("gpu_node_selector", DEFAULT_GPU_SELECTOR))
        nodes = _kube(ctx).nodes(selector)
        minimum = int(ctx.setting("min_nodes", 1))
        if len(nodes) < minimum:
            raise StepFailed(
                f"found {len(nodes)} node(s) labelled {selector}, need at least {minimum}",
                "the EKS GPU node group is missing, unlabelled or scaled to zero",
                f"kubectl get nodes -l {selector}; then bpmigrate apply --step eks --env {ctx.env_name}",
            )
        gpus = {str(n["metadata"]["name"]): _gpu_count(n) for n in nodes}
        ready = [str(n["metadata"]["name"]) for n in nodes if _node_ready(n)]
        ctx.log(f"GPU nodes ({selector}): " + ", ".join(f"{k}={v} GPU" for k, v in sorted(gpus.items())))
        return {
            "selector": selector,
            "nodes": sorted(gpus),
            "ready": sorted(ready),
            "gpus": gpus,
            "total_gpus": sum(gpus.values()),
        }

    def verify(self, ctx: StepContext) -> list[Check]:
        selector = str(ctx.setting("gpu_node_selector", DEFAULT_GPU_SELECTOR))
        nodes = _kube(ctx).nodes(selector)
        minimum = int(ctx.setting("min_nodes", 1))
        ready = [n["metadata"]["name"] for n in nodes if _node_ready(n)]
        return [
            Check(f"at least {minimum} node(s) labelled {selector}", len(nodes) >= minimum, len(nodes), minimum),
            Check("GPU nodes Ready", len(ready) == len(nodes) and bool(nodes), sorted(ready), "all"),
        ]

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("gpu-nodes is a read-only check: nothing to roll back")


# ---------------------------------------------------------------------------------------------------------------
# nvidia-plugin
# ---------------------------------------------------------------------------------------------------------------
class NvidiaPlugin(_Ml):
    """NVIDIA device plugin DaemonSet (templates/k8s/ml/nvidia-device-plugin.yaml) on the GPU nodes.

    Server-side apply, wait for the DaemonSet rollout, then wait until every GPU node advertises allocatable
    nvidia.com/gpu. Rollback deletes the DaemonSet unless it existed before this step first applied it.
    """

    id = "nvidia-plugin"
    depends_on = ("gpu-nodes",)
    reversibility = Reversibility.COMPENSABLE
    torchserve_only = True
    timeout = 900.0

    def _docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        from migrate.adapters.manifests import render

        path = ctx.templates_dir / str(ctx.setting("template", "k8s/ml/nvidia-device-plugin.yaml"))
        return render(path, {"nvidia_plugin_image": ctx.setting("image", DEFAULT_PLUGIN_IMAGE)})

    def _daemonset(self, ctx: StepContext) -> dict[str, Any]:
        return next(d for d in self._docs(ctx) if d["kind"] == "DaemonSet")

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        docs = self._docs(ctx)
        result = PlanResult(data={"manifests": _digest(docs)})
        _plan_docs(ctx, docs, result)
        nodes = _gpu_nodes(ctx)
        result.in_place.append(f"{len(nodes)} GPU node(s); allocatable GPUs now: {sum(nodes.values())}")
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        kube = _kube(ctx)
        docs = self._docs(ctx)
        ds = self._daemonset(ctx)
        name, namespace = ds["metadata"]["name"], ds["metadata"].get("namespace", "kube-system")
        if ctx.checkpoints.get("pre_existing") is None:
            live = kube.get("apps/v1", "DaemonSet", name, namespace)
            managed = ((live or {}).get("metadata") or {}).get("labels", {}).get("app.kubernetes.io/managed-by")
            ctx.checkpoints.put("pre_existing", {"value": live is not None and managed != "bpmigrate"})
        ctx.intent("kube-apply", objects=[_ref(d) for d in docs])
        refs = kube.apply(docs)
        kube.wait_rollout("DaemonSet", name, namespace, float(ctx.setting("rollout_timeout", 300)))
        gpus = self._wait_allocatable(ctx, float(ctx.setting("allocatable_timeout", 120)))
        pre = bool((ctx.checkpoints.get("pre_existing") or {}).get("value"))
        return {
            "applied": refs,
            "daemonset": f"{namespace}/{name}",
            "pre_existing": pre,
            "gpus": gpus,
            "total_gpus": sum(gpus.values()),
        }

    def _wait_allocatable(self, ctx: StepContext, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            gpus = _gpu_nodes(ctx)
            missing = sorted(n for n, c in gpus.items() if c < 1)
            if gpus and not missing:
                return gpus
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"the device plugin runs but GPU node(s) {', '.join(missing) or '(none)'} report no allocatable "
                    f"{GPU_RESOURCE} after {timeout:g}s",
                    "the NVIDIA driver is missing on the node AMI, or the plugin pod on that node is failing",
                    "kubectl -n kube-system logs ds/nvidia-device-plugin-daemonset; use an EKS GPU AMI, then re-run",
                )
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        ds = self._daemonset(ctx)
        name, namespace = ds["metadata"]["name"], ds["metadata"].get("namespace", "kube-system")
        live = _kube(ctx).get("apps/v1", "DaemonSet", name, namespace)
        ok, why = rollout_status(live) if live else (False, "absent")
        gpus = _gpu_nodes(ctx)
        image = (((live or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", [{}])[0]
        return [
            Check(f"DaemonSet {namespace}/{name} rolled out", ok, why, "all pods updated and available"),
            Check(
                "device plugin image",
                image.get("image") == ds["spec"]["template"]["spec"]["containers"][0]["image"],
                image.get("image"),
                ds["spec"]["template"]["spec"]["containers"][0]["image"],
            ),
            Check(
                f"every GPU node reports allocatable {GPU_RESOURCE}",
                bool(gpus) and all(gpus.values()),
                gpus,
                ">= 1 per node",
            ),
        ]

    def rollback(self, ctx: StepContext) -> None:
        pre = (ctx.checkpoints.get("pre_existing") or {}).get("value")
        if pre is None:
            pre = ctx.upstream.get(self.id, {}).get("pre_existing", False)
        if pre:
            ctx.log("the device plugin DaemonSet existed before this step: left in place")
            return
        kube = _kube(ctx)
        for doc in reversed(self._docs(ctx)):
            meta = doc["metadata"]
            ctx.intent("kube-delete", ref=_ref(doc))
            kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))


# ---------------------------------------------------------------------------------------------------------------
# torchserve
# ---------------------------------------------------------------------------------------------------------------
def _ts_client(
    ctx: StepContext, management_url: str | None = None, inference_url: str | None = None
) -> TorchServeClient:
    adapter = ctx.adapters.get("torchserve")
    mgmt = management_url or ctx.setting("management_url") or ctx.upstream.get("torchserve", {}).get("management_url")
    infer = inference_url or ctx.setting("inference_url") or ctx.upstream.get("torchserve", {}).get("inference_url")
    if not mgmt:
        raise ConfigError(
            f"[steps.{ctx.step_id}] management_url is not set",
            "the TorchServe management API is reached over HTTP (no port-forward is made by bpmigrate)",
            "run `kubectl -n <ns> port-forward svc/torchserve 8080 8081` and set management_url = "
            '"http://127.0.0.1:8081" (and inference_url) in [steps.torchserve] of migrate.toml',
        )
    return adapter.client(str(mgmt), str(infer) if infer else None)  # type: ignore[no-any-return]


class TorchServe(_Ml):
    """TorchServe Deployment/Service on the GPU nodes (templates/k8s/ml/torchserve.yaml); its management API answers.

    Server-side apply, rollout wait (observedGeneration, updated and available replicas; a timeout names the pod
    reason), then the management API (``management_url``; bpmigrate makes no port-forward) must answer
    ``GET /models``. Rollback deletes what this step created.
    """

    id = "torchserve"
    depends_on = ("nvidia-plugin",)
    reversibility = Reversibility.COMPENSABLE
    torchserve_only = True
    timeout = 1800.0

    def _values(self, ctx: StepContext) -> dict[str, Any]:
        return {
            "namespace": _namespace(ctx),
            "torchserve_image": ctx.setting("image", DEFAULT_TORCHSERVE_IMAGE),
            "torchserve_replicas": int(ctx.setting("replicas", 1)),
            "gpus_per_pod": int(ctx.setting("gpus_per_pod", 1)),
        }

    def _docs(self, ctx: StepContext) -> list[dict[str, Any]]:
        from migrate.adapters.manifests import render

        path = ctx.templates_dir / str(ctx.setting("template", "k8s/ml/torchserve.yaml"))
        return render(path, self._values(ctx))

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        docs = self._docs(ctx)
        values = self._values(ctx)
        result = PlanResult(data={"manifests": _digest(docs)})
        _plan_docs(ctx, docs, result)
        need = values["torchserve_replicas"] * values["gpus_per_pod"]
        have = sum(_gpu_nodes(ctx).values())
        if have < need:
            result.findings.append(
                Finding(
                    "block",
                    f"TorchServe needs {need} {GPU_RESOURCE} but the GPU nodes advertise {have}: its pods would stay "
                    "Pending",
                    f"apply nvidia-plugin (bpmigrate apply --step nvidia-plugin --env {ctx.env_name}) or scale the GPU "
                    "node group",
                )
            )
        if ctx.setting("management_url"):
            try:
                _ts_client(ctx).list_models()
                result.in_place.append(f"management API answers at {ctx.setting('management_url')}")
            except AdapterError:
                result.findings.append(
                    Finding(
                        "info",
                        f"the TorchServe management API does not answer at {ctx.setting('management_url')} yet",
                        f"after the rollout apply waits up to {float(ctx.setting('api_timeout', 120)):g}s for it: start "
                        f"`kubectl -n {_namespace(ctx)} port-forward svc/torchserve 8080 8081` once the pods run",
                    )
                )
        else:
            result.findings.append(
                Finding(
                    "block",
                    "[steps.torchserve] management_url is not set",
                    "port-forward svc/torchserve 8081 and set management_url in migrate.toml",
                )
            )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        kube = _kube(ctx)
        docs = self._docs(ctx)
        ns = _namespace(ctx)
        ctx.intent("kube-apply", objects=[_ref(d) for d in docs])
        refs = kube.apply(docs)
        kube.wait_rollout("Deployment", "torchserve", ns, float(ctx.setting("rollout_timeout", 900)))
        client = _ts_client(ctx)
        models = self._wait_api(client, float(ctx.setting("api_timeout", 120)))
        out: Outputs = {
            "applied": refs,
            "namespace": ns,
            "image": self._values(ctx)["torchserve_image"],
            "management_url": client.management_url,
            "inference_url": client.inference_url,
            "service_url": f"http://torchserve.{ns}.svc.cluster.local:8080",
            "models_at_apply": sorted(m.get("modelName", "") for m in models),
        }
        if client.inference_url:
            out["ping"] = client.ping().get("status")
        return out

    @staticmethod
    def _wait_api(client: TorchServeClient, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return client.list_models()
            except AdapterError as exc:
                if time.monotonic() >= deadline:
                    raise StepFailed(
                        f"TorchServe is rolled out but its management API at {client.management_url} does not answer",
                        f"{exc.what}: {exc.why}",
                        "check the port-forward / management_url and `kubectl logs deploy/torchserve`, then re-run",
                    ) from None
                time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        ns = _namespace(ctx)
        kube = _kube(ctx)
        live = kube.get("apps/v1", "Deployment", "torchserve", ns)
        ok, why = rollout_status(live) if live else (False, "absent")
        pod = ((live or {}).get("spec") or {}).get("template", {}).get("spec", {})
        checks = [
            Check(f"Deployment {ns}/torchserve available", ok, why, "available"),
            Check(
                "scheduled on GPU nodes",
                (pod.get("nodeSelector") or {}).get("node_group") == "gpu",
                pod.get("nodeSelector"),
                {"node_group": "gpu"},
            ),
            Check("Service torchserve exists", kube.get("v1", "Service", "torchserve", ns) is not None),
        ]
        client = _ts_client(ctx)
        try:
            models = client.list_models()
            checks.append(Check("management API answers GET /models", True, f"{len(models)} model(s)"))
        except AdapterError as exc:
            checks.append(Check("management API answers GET /models", False, exc.what, "HTTP 200"))
        if client.inference_url:
            try:
                status = client.ping().get("status")
                checks.append(Check("inference API /ping", status == "Healthy", status, "Healthy"))
            except AdapterError as exc:
                checks.append(Check("inference API /ping", False, exc.what, "Healthy"))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        kube = _kube(ctx)
        for doc in reversed(self._docs(ctx)):
            meta = doc["metadata"]
            ctx.intent("kube-delete", ref=_ref(doc))
            kube.delete(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------
def sample_archive_bytes(model_name: str) -> bytes:
    """A tiny, deterministic TorchServe-shaped archive (zip with MAR-INF/MANIFEST.json) for rehearsals and tests."""
    import io
    import zipfile

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


class Models(_Ml):
    """Model archives: upload the .mar files to S3 with SHA-256 checksums, then register them with TorchServe
    (``POST /models?url=<presigned S3 URL>``) and check ``GET /models`` — or, with serving = "sagemaker", create
    the SageMaker model, endpoint config and endpoint and wait for InService.

    Archives come from ``archives`` (paths relative to the project); when none are configured in a sandbox (or with
    ``sample_archive = true``) a tiny generated archive stands in. An object already in S3 with the same SHA-256 is
    not uploaded again; a model already registered is not registered again. Rollback unregisters the models (or
    deletes the SageMaker endpoint, config and model) and deletes the uploaded objects.
    """

    id = "models"
    depends_on = ("torchserve",)
    reversibility = Reversibility.COMPENSABLE
    retry = RetryPolicy(attempts=2, wait_initial=5.0)
    timeout = 3600.0

    def skip_reason(self, ctx: StepContext) -> str | None:
        if serving(ctx) == "sagemaker":
            return None  # S3 + SageMaker only: no cluster needed
        return _kube(ctx).unreachable_reason()

    def _bucket(self, ctx: StepContext) -> str:
        return str(ctx.setting("bucket") or f"betterprompts-{ctx.env_name}-ml-models")

    def _sample(self, ctx: StepContext) -> tuple[str, bytes] | None:
        if ctx.setting("archives") or not (ctx.is_sandbox or ctx.setting("sample_archive", False)):
            return None
        name = str(ctx.setting("sample_model_name", "intent-classifier"))
        return name, sample_archive_bytes(name)

    def _archives(self, ctx: StepContext, *, write_sample: bool) -> list[Path]:
        configured = [Path(str(p)) for p in ctx.setting("archives", []) or []]
        paths = [p if p.is_absolute() else ctx.project_root / p for p in configured]
        sample = self._sample(ctx)
        if sample is not None:
            target = ctx.state_dir / ctx.env_name / "artifacts" / self.id / f"{sample[0]}.mar"
            if write_sample and (not target.is_file() or target.read_bytes() != sample[1]):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(sample[1])
            return [target]
        if not paths:
            raise ConfigError(
                "[steps.models] archives is empty",
                "the step uploads TorchServe model archives (.mar files) built from the models you serve",
                'set archives = ["models/intent-classifier.mar"] in [steps.models] of migrate.toml',
            )
        missing = [str(p) for p in paths if not p.is_file()]  # (a sample archive returned above)
        if missing:
            raise ConfigError(
                f"model archive(s) not found: {', '.join(missing)}",
                "every path in [steps.models] archives must be an existing .mar file",
                "build them with torch-model-archiver, or fix the paths in migrate.toml",
            )
        return paths

    def _items(self, ctx: StepContext, *, write_sample: bool = False) -> list[dict[str, Any]]:
        """The archives with their checksums and S3 keys (plan computes a sample archive in memory, never writes)."""
        from migrate.adapters.aws_ml import file_sha256
        from migrate.adapters.torchserve import archive_name

        prefix = str(ctx.setting("prefix", "models/")).strip("/")
        sample = self._sample(ctx)
        items = []
        for path in self._archives(ctx, write_sample=write_sample):
            if sample is not None and not path.is_file():
                sha, size = hashlib.sha256(sample[1]).hexdigest(), len(sample[1])
            else:
                sha, size = file_sha256(path), path.stat().st_size
            name = archive_name(path)
            key = f"{prefix}/{name}/{sha[:12]}/{path.name}" if prefix else f"{name}/{sha[:12]}/{path.name}"
            items.append({"name": name, "path": path, "sha256": sha, "size": size, "key": key})
        return items

    def _item_names(self, ctx: StepContext) -> set[str]:
        try:
            return {i["name"] for i in self._items(ctx)}
        except ConfigError:
            return set()

    def _sm_names(self, ctx: StepContext, model: str) -> dict[str, str]:
        base = str(ctx.setting("sagemaker_name", f"betterprompts-{ctx.env_name}-{model}"))
        return {"model": f"{base}-model", "config": f"{base}-config", "endpoint": base}

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        mode = serving(ctx)
        ml = _ml(ctx)
        bucket = self._bucket(ctx)
        items = self._items(ctx)
        result = PlanResult(
            data={"serving": mode, "bucket": bucket, "archives": {i["name"]: i["sha256"] for i in items}}
        )
        bucket_exists = ml.bucket_exists(bucket)
        if not bucket_exists:
            result.changes.append(Change("create", f"s3://{bucket}", "private, AES256, versioned"))
        for item in items:
            info = ml.object_info(bucket, item["key"]) if bucket_exists else None
            if info and info.get("sha256") == item["sha256"]:
                result.in_place.append(f"s3://{bucket}/{item['key']} (sha256 {item['sha256'][:12]})")
            else:
                result.changes.append(
                    Change(
                        "create", f"s3://{bucket}/{item['key']}", f"{item['size']} bytes, sha256 {item['sha256'][:12]}"
                    )
                )
        if mode == "torchserve":
            try:
                registered = {m.get("modelName") for m in _ts_client(ctx).list_models()}
                for item in items:
                    if item["name"] in registered:
                        result.in_place.append(f"TorchServe model {item['name']} registered")
                    else:
                        result.changes.append(Change("create", f"TorchServe model {item['name']}", "POST /models"))
            except AdapterError as exc:
                result.unknown.append(f"TorchServe registrations ({exc.what})")
        else:
            names = self._sm_names(ctx, items[0]["name"])
            instance = str(ctx.setting("instance_type", "ml.g4dn.xlarge"))
            for what, key in (("model", "model"), ("endpoint_config", "config"), ("endpoint", "endpoint")):
                if ml.describe(what, names[key]) is None:
                    result.changes.append(Change("create", f"SageMaker {what} {names[key]}", instance))
                else:
                    result.in_place.append(f"SageMaker {what} {names[key]}")
            if not ctx.setting("sagemaker_role_arn"):
                result.findings.append(
                    Finding(
                        "block",
                        "[steps.models] sagemaker_role_arn is not set",
                        "set the SageMaker execution role ARN in migrate.toml",
                    )
                )
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        mode = serving(ctx)
        ml = _ml(ctx)
        bucket = self._bucket(ctx)
        items = self._items(ctx, write_sample=True)
        ctx.intent("s3-ensure-bucket", bucket=bucket)
        if ml.ensure_bucket(bucket):
            ctx.checkpoints.put("bucket_created", {"bucket": bucket})
        uploaded: list[dict[str, Any]] = []
        with ctx.progress("uploading model archives", total=sum(i["size"] for i in items), unit="bytes") as bar:
            for item in items:
                ctx.intent("s3-upload", bucket=bucket, key=item["key"], sha256=item["sha256"])
                info = ml.upload_archive(item["path"], bucket, item["key"], sha256=item["sha256"])
                ctx.checkpoints.put(f"uploaded:{item['key']}", {"sha256": item["sha256"]})
                ctx.artifact("model-archive", item["path"], item["sha256"], item["size"])
                bar.advance(item["size"])
                uploaded.append(
                    {
                        "name": item["name"],
                        "uri": f"s3://{bucket}/{item['key']}",
                        "key": item["key"],
                        "sha256": item["sha256"],
                        "size": item["size"],
                        "version_id": info.get("version_id"),
                        "uploaded": bool(info.get("uploaded")),
                    }
                )
        ctx.metrics(bytes=float(sum(i["size"] for i in items if i)), archives=float(len(items)))
        out: Outputs = {"serving": mode, "bucket": bucket, "models": uploaded}
        if mode == "torchserve":
            out["registered"] = self._register(ctx, bucket, uploaded)
        else:
            out["sagemaker"] = self._sagemaker(ctx, bucket, uploaded[0])
        return out

    def _register(self, ctx: StepContext, bucket: str, models: list[dict[str, Any]]) -> list[str]:
        client = _ts_client(ctx)
        ml = _ml(ctx)
        registered = {m.get("modelName") for m in client.list_models()}
        for model in models:
            if model["name"] in registered:
                ctx.log(f"TorchServe model {model['name']} already registered")
                continue
            ctx.intent("torchserve-register", model=model["name"], uri=model["uri"])
            url = ml.presign_get(bucket, model["key"], int(ctx.setting("url_expiry_s", 3600)))
            client.register(
                url,
                model_name=model["name"],
                initial_workers=int(ctx.setting("initial_workers", 1)),
                timeout=float(ctx.setting("register_timeout", 600)),
            )
            ctx.checkpoints.put(f"registered:{model['name']}", {"uri": model["uri"]})
        now = {m.get("modelName") for m in client.list_models()}
        missing = [m["name"] for m in models if m["name"] not in now]
        if missing:
            raise StepFailed(
                f"TorchServe does not list model(s) {', '.join(missing)} after registration",
                "GET /models on the management API does not show them",
                "check `kubectl logs deploy/torchserve` (download or load errors), then re-run",
            )
        return sorted(m["name"] for m in models)

    def _sagemaker(self, ctx: StepContext, bucket: str, model: dict[str, Any]) -> dict[str, Any]:
        ml = _ml(ctx)
        names = self._sm_names(ctx, model["name"])
        role = ctx.setting("sagemaker_role_arn")
        if not role:
            raise ConfigError(
                "[steps.models] sagemaker_role_arn is not set",
                "SageMaker models need an execution role",
                "set sagemaker_role_arn in [steps.models] of migrate.toml",
            )
        image = str(
            ctx.setting(
                "sagemaker_image", "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.3.0-gpu-py311"
            )
        )
        instance = str(ctx.setting("instance_type", "ml.g4dn.xlarge"))
        ctx.intent("sagemaker-create-model", name=names["model"])
        ml.ensure_model(
            names["model"],
            image=image,
            model_data_url=model["uri"],
            role_arn=str(role),
            env={"SAGEMAKER_PROGRAM": "inference.py", "MODEL_NAME": model["name"]},
        )
        ctx.intent("sagemaker-create-endpoint-config", name=names["config"], instance_type=instance)
        ml.ensure_endpoint_config(
            names["config"],
            model_name=names["model"],
            instance_type=instance,
            instance_count=int(ctx.setting("instance_count", 1)),
        )
        ctx.intent("sagemaker-create-endpoint", name=names["endpoint"])
        ml.ensure_endpoint(names["endpoint"], config_name=names["config"])
        status = ml.wait_endpoint(
            names["endpoint"], float(ctx.setting("endpoint_timeout", 1800)), poll=float(ctx.setting("poll_s", 15))
        )
        return {**names, "status": status, "instance_type": instance}

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.aws_ml import b64_of_hex

        ml = _ml(ctx)
        recorded = ctx.upstream.get(self.id, {})
        bucket = str(recorded.get("bucket") or self._bucket(ctx))
        models = recorded.get("models") or [
            {"name": i["name"], "key": i["key"], "sha256": i["sha256"], "size": i["size"]} for i in self._items(ctx)
        ]
        checks: list[Check] = []
        for m in models:
            info = ml.object_info(bucket, m["key"])
            checks.append(
                Check(
                    f"s3://{bucket}/{m['key']} size",
                    info is not None and info["size"] == m["size"],
                    (info or {}).get("size"),
                    m["size"],
                )
            )
            s3_sum = (info or {}).get("checksum_sha256")
            if s3_sum and "-" not in str(s3_sum):  # single-part: S3's own SHA-256 of the whole object
                checks.append(
                    Check(
                        f"{m['name']} S3-computed SHA-256",
                        s3_sum == b64_of_hex(m["sha256"]),
                        s3_sum,
                        b64_of_hex(m["sha256"]),
                    )
                )
            else:
                checks.append(
                    Check(
                        f"{m['name']} recorded SHA-256",
                        (info or {}).get("sha256") == m["sha256"],
                        (info or {}).get("sha256"),
                        m["sha256"],
                    )
                )
        if serving(ctx) == "torchserve":
            client = _ts_client(ctx)
            listed = {x.get("modelName") for x in client.list_models()}
            for m in models:
                checks.append(Check(f"TorchServe lists {m['name']}", m["name"] in listed, sorted(filter(None, listed))))
                desc = client.describe(m["name"]) or []
                workers = [w for v in desc for w in (v.get("workers") or [])]
                if workers:
                    ready = [w for w in workers if w.get("status") == "READY"]
                    checks.append(Check(f"{m['name']} workers READY", bool(ready), len(ready), ">= 1"))
        else:
            names = self._sm_names(ctx, models[0]["name"])
            endpoint = ml.describe("endpoint", names["endpoint"])
            status = (endpoint or {}).get("EndpointStatus")
            checks.append(
                Check(f"SageMaker endpoint {names['endpoint']} InService", status == "InService", status, "InService")
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        recorded = ctx.upstream.get(self.id, {})
        bucket = str(recorded.get("bucket") or self._bucket(ctx))
        models = list(recorded.get("models") or [])
        ckpt = ctx.checkpoints.all()
        keys = {m["key"] for m in models} | {k.split(":", 1)[1] for k in ckpt if k.startswith("uploaded:")}
        names = {m["name"] for m in models} | {k.split(":", 1)[1] for k in ckpt if k.startswith("registered:")}
        ml = _ml(ctx)
        if serving(ctx) == "torchserve":
            if names:
                client = _ts_client(ctx)
                for name in sorted(names):
                    ctx.intent("torchserve-unregister", model=name)
                    client.unregister(name)
        else:
            for name in sorted({m["name"] for m in models} or names or self._item_names(ctx)):
                sm = self._sm_names(ctx, name)
                ctx.intent("sagemaker-delete", **sm)
                ml.delete_sagemaker(endpoint=sm["endpoint"], config=sm["config"], model=sm["model"])
        for key in sorted(keys):
            ctx.intent("s3-delete", bucket=bucket, key=key)
            ml.delete_object(bucket, key)


# ---------------------------------------------------------------------------------------------------------------
# ml-config
# ---------------------------------------------------------------------------------------------------------------
class MlConfig(_Ml):
    """Point the intent classifier at the model server: USE_TORCHSERVE / TORCHSERVE_URL in its ConfigMap, then
    restart its Deployment so the pods read them. Rollback restores the values recorded before the first apply.

    The ConfigMap (``configmap``, default intent-classifier-config) is edited with a JSON merge patch of exactly
    these keys (the rest belongs to k8s-config). The previous values are written ahead to the ledger before the
    patch, so a crash mid-way still rolls back to the original values. Note: re-applying k8s-config afterwards
    resets these keys to the template's values; re-apply ml-config after it.
    """

    id = "ml-config"
    depends_on = ("models", "k8s-deploy")
    reversibility = Reversibility.REVERSIBLE
    timeout = 1200.0

    def _target(self, ctx: StepContext) -> tuple[str, str, str]:
        return (
            _namespace(ctx),
            str(ctx.setting("configmap", "intent-classifier-config")),
            str(ctx.setting("deployment", "intent-classifier")),
        )

    def _desired(self, ctx: StepContext) -> dict[str, str]:
        ns = _namespace(ctx)
        if serving(ctx) == "sagemaker":
            endpoint = ctx.upstream.get("models", {}).get("sagemaker", {}).get("endpoint") or ctx.setting(
                "sagemaker_endpoint", ""
            )
            return {
                "USE_TORCHSERVE": "false",
                "TORCHSERVE_URL": "",
                "SAGEMAKER_ENDPOINT": str(endpoint),
                "SAGEMAKER_REGION": ctx.env.aws.region,
            }
        url = (
            ctx.setting("torchserve_url")
            or ctx.upstream.get("torchserve", {}).get("service_url")
            or f"http://torchserve.{ns}.svc.cluster.local:8080"
        )
        return {"USE_TORCHSERVE": "true", "TORCHSERVE_URL": str(url)}

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        ns, cm_name, deploy = self._target(ctx)
        desired = self._desired(ctx)
        result = PlanResult(data={"desired": desired})
        kube = _kube(ctx)
        cm = kube.get("v1", "ConfigMap", cm_name, ns)
        if cm is None:
            result.findings.append(
                Finding(
                    "block",
                    f"ConfigMap {ns}/{cm_name} does not exist",
                    f"apply the app config first: bpmigrate apply --step k8s-config --env {ctx.env_name}",
                )
            )
            return result
        if kube.get("apps/v1", "Deployment", deploy, ns) is None:
            result.findings.append(
                Finding(
                    "block",
                    f"Deployment {ns}/{deploy} does not exist",
                    f"bpmigrate apply --step k8s-deploy --env {ctx.env_name}",
                )
            )
        data = cm.get("data") or {}
        for key, value in desired.items():
            if data.get(key) == value:
                result.in_place.append(f"{cm_name}.{key} = {value!r}")
            else:
                result.changes.append(
                    Change("update", f"ConfigMap {ns}/{cm_name} {key}", f"{data.get(key)!r} -> {value!r}")
                )
        if result.changes:
            result.changes.append(Change("run", f"Deployment {ns}/{deploy}", "rolling restart to read the new values"))
        return result

    def apply(self, ctx: StepContext) -> Outputs:
        ns, cm_name, deploy = self._target(ctx)
        desired = self._desired(ctx)
        kube = _kube(ctx)
        cm = kube.get("v1", "ConfigMap", cm_name, ns)
        if cm is None:
            raise StepFailed(
                f"ConfigMap {ns}/{cm_name} does not exist",
                "the app configuration is not deployed",
                f"bpmigrate apply --step k8s-config --env {ctx.env_name}",
            )
        previous = (ctx.checkpoints.get("previous") or {}).get("values")
        if previous is None:
            previous = ctx.upstream.get(self.id, {}).get("previous")
        if previous is None:  # first apply: remember what was there (None = key absent)
            data = cm.get("data") or {}
            previous = {k: data.get(k) for k in desired}
            live = kube.get("apps/v1", "Deployment", deploy, ns) or {}
            stamp = ((live.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations", {}) or {}
            ctx.checkpoints.put("previous", {"values": previous, "stamp": stamp.get(RESTART_ANNOTATION)})
        ctx.intent("configmap-patch", configmap=f"{ns}/{cm_name}", keys=sorted(desired))
        kube.patch("v1", "ConfigMap", cm_name, ns, {"data": desired})
        self._restart(ctx, _digest(desired))
        prev_stamp = (ctx.checkpoints.get("previous") or {}).get("stamp")
        return {
            "configmap": f"{ns}/{cm_name}",
            "deployment": f"{ns}/{deploy}",
            "applied": desired,
            "previous": previous,
            "previous_stamp": prev_stamp,
        }

    def _restart(self, ctx: StepContext, stamp: str | None) -> None:
        """Roll the Deployment by stamping a digest on its pod template (same stamp: no new rollout; None: remove)."""
        ns, _, deploy = self._target(ctx)
        kube = _kube(ctx)
        live = kube.get("apps/v1", "Deployment", deploy, ns)
        if live is None:
            raise StepFailed(
                f"Deployment {ns}/{deploy} does not exist",
                "the intent classifier is not deployed",
                f"bpmigrate apply --step k8s-deploy --env {ctx.env_name}",
            )
        annotations = ((live.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
        if annotations.get(RESTART_ANNOTATION) != stamp:
            ctx.intent("deployment-restart", deployment=f"{ns}/{deploy}", stamp=stamp)
            kube.patch(
                "apps/v1",
                "Deployment",
                deploy,
                ns,
                {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: stamp}}}}},
            )
        kube.wait_rollout("Deployment", deploy, ns, float(ctx.setting("rollout_timeout", 600)))

    def verify(self, ctx: StepContext) -> list[Check]:
        from migrate.adapters.kube import rollout_status

        ns, cm_name, deploy = self._target(ctx)
        desired = self._desired(ctx)
        kube = _kube(ctx)
        data = (kube.get("v1", "ConfigMap", cm_name, ns) or {}).get("data") or {}
        checks = [Check(f"{cm_name}.{k}", data.get(k) == v, data.get(k), v) for k, v in desired.items()]
        live = kube.get("apps/v1", "Deployment", deploy, ns)
        stamp = ((live or {}).get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations", {}) or {}
        checks.append(
            Check(
                f"{deploy} pods restarted with these values",
                stamp.get(RESTART_ANNOTATION) == _digest(desired),
                stamp.get(RESTART_ANNOTATION),
                _digest(desired),
            )
        )
        ok, why = rollout_status(live) if live else (False, "absent")
        checks.append(Check(f"Deployment {ns}/{deploy} available", ok, why, "available"))
        if serving(ctx) == "torchserve":
            checks.append(Check("Service torchserve exists", kube.get("v1", "Service", "torchserve", ns) is not None))
        return checks

    def rollback(self, ctx: StepContext) -> None:
        previous = (ctx.checkpoints.get("previous") or {}).get("values")
        if previous is None:
            previous = ctx.upstream.get(self.id, {}).get("previous")
        if previous is None:
            ctx.log("ml-config never changed the ConfigMap: nothing to restore")
            return
        ns, cm_name, _ = self._target(ctx)
        kube = _kube(ctx)
        if kube.get("v1", "ConfigMap", cm_name, ns) is None:
            ctx.log(f"ConfigMap {ns}/{cm_name} is gone: nothing to restore")
            return
        ckpt = ctx.checkpoints.get("previous") or {}
        stamp = ckpt.get("stamp") if "values" in ckpt else ctx.upstream.get(self.id, {}).get("previous_stamp")
        ctx.intent("configmap-restore", configmap=f"{ns}/{cm_name}", previous=previous)
        kube.patch("v1", "ConfigMap", cm_name, ns, {"data": dict(previous)})  # None removes keys that were absent
        self._restart(ctx, stamp)  # back to the previous pod template: pods restart and read the restored values


# ---------------------------------------------------------------------------------------------------------------
# ml-perf
# ---------------------------------------------------------------------------------------------------------------
def stats_table(stats: dict[str, Any], gate_ms: float, max_error_rate: float) -> str:
    rows = [
        ("requests", f"{stats['count']}", ""),
        ("errors", f"{stats['errors']} ({stats['error_rate'] * 100:.2f} %)", f"< {max_error_rate * 100:.2f} %"),
        ("p50", f"{stats['p50_ms']:.1f} ms", ""),
        ("p95", f"{stats['p95_ms']:.1f} ms", f"< {gate_ms:g} ms"),
        ("p99", f"{stats['p99_ms']:.1f} ms", ""),
        ("max", f"{stats['max_ms']:.1f} ms", ""),
    ]
    width = max(len(r[1]) for r in rows)
    lines = [f"{'metric':<9}{'observed':<{width + 2}}gate", "-" * (width + 24)]
    lines += [f"{name:<9}{value:<{width + 2}}{gate}" for name, value, gate in rows]
    return "\n".join(lines)


class MlPerf(_Ml):
    """Inference latency gate: p95 < 500 ms and errors < 1 % at the configured concurrency.

    Thresholds: ``p95_ms`` (default 500) and ``max_error_rate`` (default 0.01). Measured by a closed-loop probe of
    the inference endpoint: TorchServe's POST /predictions/<model> (or ``url``), or with serving = "sagemaker" the
    endpoint's InvokeEndpoint API (SigV4-signed by boto3).

    The results are recorded as the step's outputs, as metrics and as a JSON report artifact, and shown as a table;
    a miss fails the step with the numbers (they are recorded even then).
    """

    id = "ml-perf"
    depends_on = ("ml-config",)
    reversibility = Reversibility.REVERSIBLE
    timeout = 900.0

    def skip_reason(self, ctx: StepContext) -> str | None:
        if ctx.setting("url") or serving(ctx) == "sagemaker":
            return None  # an explicit URL, or SageMaker's runtime API: no cluster needed
        return _kube(ctx).unreachable_reason()

    def _endpoint(self, ctx: StepContext) -> str | None:
        """The SageMaker endpoint to measure (serving = "sagemaker" without an explicit url), else None."""
        if ctx.setting("url") or serving(ctx) != "sagemaker":
            return None
        name = ctx.setting("endpoint") or ctx.upstream.get("models", {}).get("sagemaker", {}).get("endpoint")
        if not name:
            raise ConfigError(
                "[steps.ml-perf] cannot tell which SageMaker endpoint to measure",
                "the models step has recorded no endpoint and no endpoint setting is given",
                f'bpmigrate apply --step models --env {ctx.env_name} (serving = "sagemaker"), or set endpoint',
            )
        return str(name)

    def _target(self, ctx: StepContext) -> str:
        if ctx.setting("url"):
            return str(ctx.setting("url"))
        endpoint = self._endpoint(ctx)
        if endpoint:
            return f"sagemaker://{endpoint}"
        inference = ctx.setting("inference_url") or ctx.upstream.get("torchserve", {}).get("inference_url")
        model = ctx.setting("model") or next(iter(ctx.upstream.get("models", {}).get("registered") or []), None)
        if not inference or not model:
            raise ConfigError(
                "[steps.ml-perf] cannot tell which endpoint to measure",
                "neither url nor (inference_url + model, or the torchserve/models outputs) are available",
                'set url = "http://127.0.0.1:8080/predictions/intent-classifier" in [steps.ml-perf]',
            )
        return f"{str(inference).rstrip('/')}/predictions/{model}"

    def _gate(self, ctx: StepContext) -> tuple[float, float]:
        return float(ctx.setting("p95_ms", 500)), float(ctx.setting("max_error_rate", 0.01))

    def plan(self, ctx: StepContext) -> PlanResult:
        if skipped := self._skip_plan(ctx):
            return skipped
        gate_ms, max_err = self._gate(ctx)
        requests, conc = int(ctx.setting("requests", 200)), int(ctx.setting("concurrency", 8))
        result = PlanResult(
            data={"p95_ms": gate_ms, "max_error_rate": max_err, "requests": requests, "concurrency": conc}
        )
        try:
            target = self._target(ctx)
            result.changes.append(
                Change(
                    "run",
                    target,
                    f"{requests} requests at concurrency {conc}; gate p95 < "
                    f"{gate_ms:g} ms, errors < {max_err * 100:g} %",
                )
            )
        except ConfigError as exc:
            result.unknown.append(f"endpoint to measure ({exc.what})")
        return result

    def _measure(self, ctx: StepContext, requests: int) -> dict[str, Any]:
        url = self._target(ctx)
        payload = ctx.setting("payload", {"text": "Summarise the quarterly report in three bullet points."})
        endpoint = self._endpoint(ctx)
        if endpoint:
            sm = _ml(ctx).probe_endpoint(
                endpoint,
                json.dumps(payload).encode(),
                requests=requests,
                concurrency=int(ctx.setting("concurrency", 8)),
            )
            return {"url": url, **sm}
        stats = ctx.adapters.http().probe(
            url,
            requests=requests,
            concurrency=int(ctx.setting("concurrency", 8)),
            timeout=float(ctx.setting("request_timeout", 5.0)),
            method="POST",
            json_body=payload,
        )
        return {
            "url": url,
            **{k: getattr(stats, k) for k in ("count", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms")},
        }

    def apply(self, ctx: StepContext) -> Outputs:
        gate_ms, max_err = self._gate(ctx)
        ctx.intent("inference-probe", requests=int(ctx.setting("requests", 200)))
        stats = self._measure(ctx, int(ctx.setting("requests", 200)))
        passed = stats["p95_ms"] < gate_ms and stats["error_rate"] < max_err and stats["count"] > 0
        out: Outputs = {
            **stats,
            "concurrency": int(ctx.setting("concurrency", 8)),
            "gate_p95_ms": gate_ms,
            "gate_max_error_rate": max_err,
            "passed": passed,
        }
        ctx.metrics(**{k: float(stats[k]) for k in ("count", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms")})
        report = ctx.artifacts_dir() / "ml-perf.json"
        report.write_text(json.dumps(out, indent=2, sort_keys=True))
        ctx.artifact("latency-report", report, hashlib.sha256(report.read_bytes()).hexdigest(), report.stat().st_size)
        ctx.log("inference latency (" + stats["url"] + ")\n" + stats_table(stats, gate_ms, max_err))
        if not passed:
            raise StepFailed(
                f"inference latency gate missed: p95 {stats['p95_ms']:.1f} ms (gate < {gate_ms:g} ms), errors "
                f"{stats['error_rate'] * 100:.2f} % (gate < {max_err * 100:g} %)",
                f"{stats['count']} requests at concurrency {out['concurrency']} to {stats['url']}; report: {report}",
                "scale TorchServe (replicas/workers) or fix the slow path, then "
                f"bpmigrate apply --step ml-perf --env {ctx.env_name}",
            )
        return out

    def verify(self, ctx: StepContext) -> list[Check]:
        gate_ms, max_err = self._gate(ctx)
        recorded = ctx.upstream.get(self.id, {})
        checks = [
            Check(
                "recorded p95 under the gate",
                float(recorded.get("p95_ms", 1e9)) < gate_ms,
                recorded.get("p95_ms"),
                f"< {gate_ms:g} ms",
            ),
        ]
        n = int(ctx.setting("verify_requests", 20))
        if n > 0:
            fresh = self._measure(ctx, n)
            checks.append(
                Check(
                    f"fresh probe ({n} requests) p95 under the gate",
                    fresh["p95_ms"] < gate_ms,
                    fresh["p95_ms"],
                    f"< {gate_ms:g} ms",
                )
            )
            checks.append(
                Check("fresh probe error rate", fresh["error_rate"] < max_err, fresh["error_rate"], f"< {max_err:g}")
            )
        return checks

    def rollback(self, ctx: StepContext) -> None:
        ctx.log("ml-perf only measures: nothing to roll back")
