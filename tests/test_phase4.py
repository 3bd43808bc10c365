"""Phase 4 (ML/GPU) steps: Kubernetes parts against the API test double (tests/kube_double.py), TorchServe's
management/inference APIs against a small local HTTP server started here, S3/SageMaker against the moto server."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from migrate.adapters.model_archive import sample_archive_bytes
from migrate.adapters.torchserve import TorchServeClient
from migrate.config import EnvConfig
from migrate.errors import AdapterError, ConfigError, StepFailed
from migrate.step import Step
from migrate.testing import RecordingContext, make_context
from phases.p4_ml.gpu_nodes import GpuNodes
from phases.p4_ml.ml_config import MlConfig
from phases.p4_ml.ml_perf import MlPerf
from phases.p4_ml.models import Models
from phases.p4_ml.nvidia_plugin import NvidiaPlugin
from phases.p4_ml.torchserve import TorchServe
from tests import kube_double
from tests.kube_double import KubeApiDouble

kube_api = kube_double.kube_api  # the fixture (a no-op duplicate once conftest registers tests.kube_double)

NS = "betterprompts"


# -- a small TorchServe stand-in (real HTTP on 127.0.0.1) ----------------------------------------------------------
class FakeTorchServe:
    """Management + inference API shapes of TorchServe 0.11; downloads the archive it is asked to register."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.register_calls: list[dict[str, str]] = []
        self.latency_s = 0.0
        self.fail_register = False
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/ping":
                    return self._send(200, {"status": "Healthy"})
                if parts.path == "/models":
                    with outer.lock:
                        items = [{"modelName": n, "modelUrl": m["url_shown"]} for n, m in sorted(outer.models.items())]
                    return self._send(200, {"models": items})
                if parts.path.startswith("/models/"):
                    name = unquote(parts.path.split("/")[2])
                    if name not in outer.models:
                        return self._send(404, {"code": 404, "type": "ModelNotFoundException", "message": name})
                    workers = [{"id": "9000", "status": "READY", "gpu": True}]
                    return self._send(200, [{"modelName": name, "modelVersion": "1.0", "workers": workers}])
                return self._send(404, {"code": 404, "message": "not found"})

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if parts.path == "/models":
                    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    outer.register_calls.append(q)
                    name = q.get("model_name", "")
                    if outer.fail_register:
                        return self._send(500, {"code": 500, "message": "worker died while loading the model"})
                    if name in outer.models:
                        return self._send(409, {"code": 409, "message": f"Model {name} is already registered."})
                    try:
                        with urllib.request.urlopen(q["url"], timeout=5) as resp:  # loopback moto
                            blob = resp.read()
                    except Exception as exc:  # noqa: BLE001 - reported like TorchServe does
                        return self._send(400, {"code": 400, "message": f"download failed: {exc}"})
                    with outer.lock:
                        outer.models[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "url_shown": name + ".mar"}
                    return self._send(200, {"status": f'Model "{name}" Version: 1.0 registered with 1 initial workers'})
                if parts.path.startswith("/predictions/"):
                    name = unquote(parts.path.split("/")[2])
                    if name not in outer.models:
                        return self._send(404, {"code": 404, "message": f"Model not found: {name}"})
                    time.sleep(outer.latency_s)
                    json.loads(body or b"{}")
                    return self._send(200, {"intent": "summarization", "confidence": 0.93})
                return self._send(404, {"code": 404, "message": "not found"})

            def do_DELETE(self) -> None:
                name = unquote(urlsplit(self.path).path.split("/")[2])
                with outer.lock:
                    if outer.models.pop(name, None) is None:
                        return self._send(404, {"code": 404, "message": name})
                return self._send(200, {"status": f'Model "{name}" unregistered'})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def torchserve_api() -> Iterator[FakeTorchServe]:
    fake = FakeTorchServe()
    yield fake
    fake.stop()


# -- helpers -----------------------------------------------------------------------------------------------------
def make_env(kube_api: KubeApiDouble | None, moto_url: str | None = None) -> EnvConfig:
    kube = {"namespace": NS, "kubeconfig": str(kube_api.kubeconfig_path) if kube_api else "/nonexistent/kubeconfig"}
    aws: dict[str, Any] = {"region": "us-east-1"}
    if moto_url:
        aws["endpoint_url"] = moto_url
    return EnvConfig(name="sandbox", kind="sandbox", kube=kube, aws=aws)


def ctx_for(
    tmp_path: Path,
    env: EnvConfig,
    step: type[Step],
    settings: dict[str, Any] | None = None,
    upstream: dict[str, dict[str, Any]] | None = None,
) -> RecordingContext:
    return make_context(tmp_path, env, step.id, settings=settings or {}, upstream=upstream or {})


def gpu_cluster(kube_api: KubeApiDouble, gpus: str = "1") -> None:
    kube_api.add_node(
        "gpu-1",
        {"node_group": "gpu"},
        {"nvidia.com/gpu": gpus},
        taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
    )
    kube_api.add_node("app-1", {"node_group": "application"})


def ts_settings(ts: FakeTorchServe, **extra: Any) -> dict[str, Any]:
    return {"management_url": ts.url, "inference_url": ts.url, "rollout_timeout": 3, "api_timeout": 1, **extra}


# -- skipping ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [GpuNodes, NvidiaPlugin, TorchServe, Models, MlConfig, MlPerf])
def test_without_a_cluster_kube_steps_are_skipped_with_the_reason(tmp_path: Path, step: type[Step]) -> None:
    ctx = ctx_for(tmp_path, make_env(None), step)
    reason = step().skip_reason(ctx)
    assert reason is not None and "/nonexistent/kubeconfig" in reason and "kind create cluster" in reason


@pytest.mark.parametrize("step", [GpuNodes, NvidiaPlugin, TorchServe])
def test_sagemaker_serving_skips_the_torchserve_steps(
    tmp_path: Path, kube_api: KubeApiDouble, step: type[Step]
) -> None:
    ctx = ctx_for(tmp_path, make_env(kube_api), step, {"serving": "sagemaker"})
    reason = step().skip_reason(ctx)
    assert reason is not None and "sagemaker" in reason


def test_unknown_serving_mode_is_rejected_by_the_settings_model() -> None:
    """Typed settings: migrate.toml with serving = "triton" fails at load (exit 2), before any step runs."""
    from pydantic import ValidationError

    for step in (GpuNodes, NvidiaPlugin, TorchServe, Models, MlConfig):
        with pytest.raises(ValidationError, match="serving"):
            step.Settings.model_validate({"serving": "triton"})


# -- gpu-nodes ---------------------------------------------------------------------------------------------------
def test_gpu_nodes_blocks_without_labelled_nodes(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    kube_api.add_node("app-1", {"node_group": "application"})
    ctx = ctx_for(tmp_path, make_env(kube_api), GpuNodes)
    plan = GpuNodes().plan(ctx)
    assert plan.skip_reason is None and plan.blocking and "node_group=gpu" in plan.blocking[0].message
    with pytest.raises(StepFailed, match="found 0 node"):
        GpuNodes().apply(ctx)


def test_gpu_nodes_reports_what_it_found(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    gpu_cluster(kube_api, gpus="4")
    ctx = ctx_for(tmp_path, make_env(kube_api), GpuNodes)
    plan = GpuNodes().plan(ctx)
    assert not plan.blocking and any("gpu-1" in line and "nvidia.com/gpu=4" in line for line in plan.in_place)
    out = GpuNodes().apply(ctx)
    assert out["nodes"] == ["gpu-1"] and out["total_gpus"] == 4
    assert all(c.ok for c in GpuNodes().verify(ctx))
    assert kube_api.apply_requests() == []  # read-only


# -- nvidia-plugin -----------------------------------------------------------------------------------------------
def test_nvidia_plugin_apply_verify_rollback(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    gpu_cluster(kube_api)
    ctx = ctx_for(tmp_path, make_env(kube_api), NvidiaPlugin, {"rollout_timeout": 3})
    plan = NvidiaPlugin().plan(ctx)
    assert [c.action for c in plan.changes] == ["create"]
    out = NvidiaPlugin().apply(ctx)
    assert out["gpus"] == {"gpu-1": 1} and out["pre_existing"] is False
    ds = kube_api.get_object("apps/v1", "DaemonSet", "nvidia-device-plugin-daemonset", "kube-system")
    assert ds is not None and ds["spec"]["template"]["spec"]["nodeSelector"] == {"node_group": "gpu"}
    assert [a for a, _ in ctx.recorded_intents] == ["record-previous-manifests", "kube-apply"]
    assert all(c.ok for c in NvidiaPlugin().verify(ctx))
    assert NvidiaPlugin().plan(ctx).is_noop  # applied: nothing left to change
    NvidiaPlugin().rollback(ctx)
    assert kube_api.get_object("apps/v1", "DaemonSet", "nvidia-device-plugin-daemonset", "kube-system") is None
    NvidiaPlugin().rollback(ctx)  # absent: no-op


def test_nvidia_plugin_fails_when_nodes_never_advertise_gpus(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    kube_api.add_node("gpu-1", {"node_group": "gpu"})  # no nvidia.com/gpu: driver missing
    ctx = ctx_for(tmp_path, make_env(kube_api), NvidiaPlugin, {"rollout_timeout": 3, "allocatable_timeout": 0.2})
    with pytest.raises(StepFailed, match=r"report no allocatable nvidia\.com/gpu"):
        NvidiaPlugin().apply(ctx)
    assert not all(c.ok for c in NvidiaPlugin().verify(ctx))


def test_nvidia_plugin_leaves_a_pre_existing_daemonset(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    gpu_cluster(kube_api)
    kube_api.put_object(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"name": "x"}},
                "template": {"metadata": {"labels": {"name": "x"}}, "spec": {"containers": [{"name": "c"}]}},
            },
        }
    )
    ctx = ctx_for(tmp_path, make_env(kube_api), NvidiaPlugin, {"rollout_timeout": 3})
    assert NvidiaPlugin().apply(ctx)["pre_existing"] is True
    NvidiaPlugin().rollback(ctx)
    assert kube_api.get_object("apps/v1", "DaemonSet", "nvidia-device-plugin-daemonset", "kube-system") is not None


# -- torchserve --------------------------------------------------------------------------------------------------
def test_torchserve_apply_verify_rollback(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe
) -> None:
    gpu_cluster(kube_api)
    ctx = ctx_for(tmp_path, make_env(kube_api), TorchServe, ts_settings(torchserve_api, image="ts:test"))
    plan = TorchServe().plan(ctx)
    assert not plan.blocking
    assert {c.target for c in plan.changes} >= {
        "Deployment/betterprompts/torchserve",
        "Service/betterprompts/torchserve",
    }
    out = TorchServe().apply(ctx)
    assert out["management_url"] == torchserve_api.url and out["ping"] == "Healthy"
    assert out["service_url"] == "http://torchserve.betterprompts.svc.cluster.local:8080"
    dep = kube_api.get_object("apps/v1", "Deployment", "torchserve", NS)
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node_group": "gpu"} and pod["containers"][0]["image"] == "ts:test"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    checks = TorchServe().verify(ctx)
    assert all(c.ok for c in checks), checks
    TorchServe().rollback(ctx)
    assert kube_api.get_object("apps/v1", "Deployment", "torchserve", NS) is None
    assert kube_api.get_object("v1", "Service", "torchserve", NS) is None


def test_torchserve_plan_blocks_without_allocatable_gpus(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe
) -> None:
    kube_api.add_node("gpu-1", {"node_group": "gpu"})
    plan = TorchServe().plan(ctx_for(tmp_path, make_env(kube_api), TorchServe, ts_settings(torchserve_api)))
    assert any("would stay Pending" in f.message for f in plan.blocking)


def test_torchserve_rollout_timeout_names_the_pod_reason(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe
) -> None:
    gpu_cluster(kube_api)
    ctx = ctx_for(tmp_path, make_env(kube_api), TorchServe, ts_settings(torchserve_api, rollout_timeout=0.5))
    TorchServe().apply(ctx)
    kube_api.never_ready("Deployment", NS, "torchserve", reason="ErrImagePull")  # e.g. a bad image tag
    with pytest.raises(StepFailed) as info:
        TorchServe().apply(ctx)
    assert "torchserve did not finish rolling out" in info.value.what and "ErrImagePull" in info.value.why
    assert not all(c.ok for c in TorchServe().verify(ctx))


def test_torchserve_fails_when_management_api_does_not_answer(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    gpu_cluster(kube_api)
    settings = {"management_url": "http://127.0.0.1:9", "rollout_timeout": 3, "api_timeout": 0.3}
    with pytest.raises(StepFailed, match="management API"):
        TorchServe().apply(ctx_for(tmp_path, make_env(kube_api), TorchServe, settings))


# -- models: S3 + TorchServe ----------------------------------------------------------------------------------------
def test_models_upload_register_verify_idempotent_rollback(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe, moto_reset: Any
) -> None:
    env = make_env(kube_api, moto_reset.endpoint_url)
    settings = {"management_url": torchserve_api.url, "bucket": "bp-models"}
    ctx = ctx_for(tmp_path, env, Models, settings)
    plan = Models().plan(ctx)
    assert [c.target for c in plan.changes][:1] == ["s3://bp-models"]
    assert any(c.target == "TorchServe model intent-classifier" for c in plan.changes)
    assert not (tmp_path / "state" / "sandbox" / "artifacts" / "models").exists()  # plan wrote nothing

    out = Models().apply(ctx)
    expected_sha = hashlib.sha256(sample_archive_bytes("intent-classifier")).hexdigest()
    (model,) = out["models"]
    assert model["sha256"] == expected_sha and model["uploaded"] is True and model["uri"].startswith("s3://bp-models/")
    assert torchserve_api.models["intent-classifier"]["sha256"] == expected_sha  # TorchServe fetched the same bytes
    assert out["registered"] == ["intent-classifier"]
    assert ctx.recorded_artifacts[0][2] == expected_sha
    assert "X-Amz-Signature" not in json.dumps(out)  # presigned URL never recorded
    actions = [a for a, _ in ctx.recorded_intents]
    assert actions == ["s3-ensure-bucket", "s3-upload", "torchserve-register"]

    again = ctx_for(tmp_path, env, Models, settings, upstream={"models": out})
    out2 = Models().apply(again)
    assert out2["models"][0]["uploaded"] is False and len(torchserve_api.register_calls) == 1
    checks = Models().verify(again)
    assert all(c.ok for c in checks), checks
    assert Models().plan(again).is_noop

    # a corrupted object is caught by verify (S3's own checksum / size no longer match)
    ml = again.adapters.get("aws_ml")
    ml.aws.call("s3", "put_object", Bucket="bp-models", Key=model["key"], Body=b"corrupt")
    assert not all(c.ok for c in Models().verify(again))

    Models().rollback(again)
    assert torchserve_api.models == {}
    assert ml.object_info("bp-models", model["key"]) is None
    Models().rollback(again)  # idempotent


def test_models_failed_registration_rolls_back_from_checkpoints(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe, moto_reset: Any
) -> None:
    """Upload done, registration failed, no outputs recorded: rollback still finds and removes the upload."""
    torchserve_api.fail_register = True
    ctx = ctx_for(
        tmp_path,
        make_env(kube_api, moto_reset.endpoint_url),
        Models,
        {"management_url": torchserve_api.url, "bucket": "bp-half"},
    )
    with pytest.raises(AdapterError, match="HTTP 500") as info:
        Models().apply(ctx)
    assert "worker died" in info.value.why
    (key,) = [k.split(":", 1)[1] for k in ctx.checkpoints.all() if k.startswith("uploaded:")]
    ml = ctx.adapters.get("aws_ml")
    assert ml.object_info("bp-half", key) is not None
    Models().rollback(ctx)
    assert ml.object_info("bp-half", key) is None


def test_models_with_configured_archives(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe, moto_reset: Any
) -> None:
    archive = tmp_path / "models" / "technique-ranker.mar"
    archive.parent.mkdir()
    archive.write_bytes(b"PK-not-really-a-zip" * 100)
    settings = {"management_url": torchserve_api.url, "archives": [str(archive)], "prefix": "mars"}
    out = Models().apply(ctx_for(tmp_path, make_env(kube_api, moto_reset.endpoint_url), Models, settings))
    assert out["models"][0]["key"].startswith("mars/technique-ranker/")
    assert out["models"][0]["size"] == 1900 and "technique-ranker" in torchserve_api.models
    with pytest.raises(ConfigError, match="not found"):
        Models().plan(
            ctx_for(
                tmp_path, make_env(kube_api, moto_reset.endpoint_url), Models, {**settings, "archives": ["missing.mar"]}
            )
        )


# -- models: SageMaker --------------------------------------------------------------------------------------------
def test_models_sagemaker_endpoint_on_moto(tmp_path: Path, moto_reset: Any) -> None:
    env = make_env(None, moto_reset.endpoint_url)  # no cluster needed for SageMaker serving
    settings = {
        "serving": "sagemaker",
        "bucket": "bp-sm",
        "sagemaker_role_arn": "arn:aws:iam::123456789012:role/sm-exec",
        "instance_type": "ml.g4dn.xlarge",  # moto rejects ml.g5.*: the instance type is a setting
        "poll_s": 0.1,
    }
    ctx = ctx_for(tmp_path, env, Models, settings)
    assert Models().skip_reason(ctx) is None
    plan = Models().plan(ctx)
    assert any(c.target.startswith("SageMaker endpoint ") for c in plan.changes) and not plan.blocking
    out = Models().apply(ctx)
    sm = out["sagemaker"]
    assert sm["status"] == "InService" and sm["endpoint"] == "betterprompts-sandbox-intent-classifier"
    after = ctx_for(tmp_path, env, Models, settings, upstream={"models": out})
    assert all(c.ok for c in Models().verify(after))
    Models().apply(after)  # converges: nothing created twice
    Models().rollback(after)
    ml = after.adapters.get("aws_ml")
    assert ml.describe("endpoint", sm["endpoint"]) is None and ml.describe("model", sm["model"]) is None


def test_ml_perf_measures_a_sagemaker_endpoint_without_a_cluster(tmp_path: Path, moto_reset: Any) -> None:
    env = make_env(None, moto_reset.endpoint_url)
    settings = {
        "serving": "sagemaker",
        "bucket": "bp-sm2",
        "sagemaker_role_arn": "arn:aws:iam::1:role/x",
        "poll_s": 0.1,
    }
    models_out = Models().apply(ctx_for(tmp_path, env, Models, settings))
    perf = ctx_for(tmp_path, env, MlPerf, {"serving": "sagemaker"}, {"models": models_out})
    # users never call InvokeEndpoint: ml-perf measures the classifier endpoint users reach (url), as they use it
    reason = MlPerf().skip_reason(perf)
    assert reason and "url" in reason and "/api/v1/classify" in reason


def test_ml_perf_default_gate_is_500_ms(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe
) -> None:
    ctx = ctx_for(
        tmp_path,
        make_env(kube_api),
        MlPerf,
        {},
        {"torchserve": {"inference_url": torchserve_api.url}, "models": {"registered": ["m"]}},
    )
    plan = MlPerf().plan(ctx)
    assert plan.data["p95_ms"] == 500 and "p95 < 500 ms" in plan.changes[0].detail


def test_sagemaker_requires_a_role(tmp_path: Path, moto_reset: Any) -> None:
    ctx = ctx_for(tmp_path, make_env(None, moto_reset.endpoint_url), Models, {"serving": "sagemaker"})
    assert any("sagemaker_role_arn" in f.message for f in Models().plan(ctx).blocking)


# -- ml-config ---------------------------------------------------------------------------------------------------
def _app(kube_api: KubeApiDouble) -> None:
    kube_api.put_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "intent-classifier-config", "namespace": NS},
            "data": {"PORT": "8001", "USE_TORCHSERVE": "false"},
        }
    )
    kube_api.put_object(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "intent-classifier", "namespace": NS},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "ic"}},
                "template": {
                    "metadata": {"labels": {"app": "ic"}},
                    "spec": {"containers": [{"name": "ic", "image": "ic:1"}]},
                },
            },
        }
    )


def test_ml_config_switches_and_rollback_restores(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    _app(kube_api)
    upstream = {"torchserve": {"service_url": "http://torchserve.betterprompts.svc.cluster.local:8080"}}
    ctx = ctx_for(tmp_path, make_env(kube_api), MlConfig, {"rollout_timeout": 3}, upstream)
    plan = MlConfig().plan(ctx)
    assert {c.target.split()[-1] for c in plan.changes if c.action == "update"} == {"USE_TORCHSERVE", "TORCHSERVE_URL"}
    gen_before = kube_api.get_object("apps/v1", "Deployment", "intent-classifier", NS)["metadata"]["generation"]
    out = MlConfig().apply(ctx)
    assert out["previous"] == {"USE_TORCHSERVE": "false", "TORCHSERVE_URL": None}
    cm = kube_api.get_object("v1", "ConfigMap", "intent-classifier-config", NS)
    assert cm is not None and cm["data"] == {
        "PORT": "8001",
        "USE_TORCHSERVE": "true",
        "TORCHSERVE_URL": "http://torchserve.betterprompts.svc.cluster.local:8080",
    }
    dep = kube_api.get_object("apps/v1", "Deployment", "intent-classifier", NS)
    assert dep is not None and dep["metadata"]["generation"] == gen_before + 1  # pods restarted
    kube_api.put_object(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "torchserve", "namespace": NS},
            "spec": {"ports": [{"port": 8080}]},
        }
    )
    assert all(c.ok for c in MlConfig().verify(ctx))

    MlConfig().apply(ctx)  # re-apply: the ORIGINAL previous values stay recorded, no extra restart
    assert ctx.checkpoints.get("previous") == {"values": out["previous"], "stamp": None}
    assert (
        kube_api.get_object("apps/v1", "Deployment", "intent-classifier", NS)["metadata"]["generation"]
        == gen_before + 1
    )

    MlConfig().rollback(ctx)
    cm = kube_api.get_object("v1", "ConfigMap", "intent-classifier-config", NS)
    assert cm is not None and cm["data"] == {"PORT": "8001", "USE_TORCHSERVE": "false"}  # absent key removed again
    dep = kube_api.get_object("apps/v1", "Deployment", "intent-classifier", NS)
    assert dep is not None and "bpmigrate.io/ml-config" not in (
        dep["spec"]["template"]["metadata"].get("annotations") or {}
    )


def test_ml_config_rollback_from_recorded_outputs_in_a_new_run(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    _app(kube_api)
    out = MlConfig().apply(ctx_for(tmp_path, make_env(kube_api), MlConfig, {"rollout_timeout": 3}))
    later = ctx_for(tmp_path, make_env(kube_api), MlConfig, {"rollout_timeout": 3}, {"ml-config": out})
    MlConfig().rollback(later)
    cm = kube_api.get_object("v1", "ConfigMap", "intent-classifier-config", NS)
    assert cm is not None and cm["data"]["USE_TORCHSERVE"] == "false" and "TORCHSERVE_URL" not in cm["data"]


def test_ml_config_blocks_without_the_app(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    plan = MlConfig().plan(ctx_for(tmp_path, make_env(kube_api), MlConfig))
    assert plan.blocking and "k8s-config" in plan.blocking[0].fix


def test_ml_config_rollout_timeout(tmp_path: Path, kube_api: KubeApiDouble) -> None:
    _app(kube_api)
    kube_api.never_ready("Deployment", NS, "intent-classifier", reason="CrashLoopBackOff")
    with pytest.raises(StepFailed, match="CrashLoopBackOff"):
        MlConfig().apply(ctx_for(tmp_path, make_env(kube_api), MlConfig, {"rollout_timeout": 0.4}))


# -- ml-perf -----------------------------------------------------------------------------------------------------
def _perf_ctx(tmp_path: Path, kube_api: KubeApiDouble, ts: FakeTorchServe, **settings: Any) -> RecordingContext:
    ts.models["intent-classifier"] = {"sha256": "x", "url_shown": "intent-classifier.mar"}
    upstream = {"torchserve": {"inference_url": ts.url}, "models": {"registered": ["intent-classifier"]}}
    base = {"target_rps": 8, "duration_s": 3, "workers": 1, "verify_requests": 8, **settings}
    return ctx_for(tmp_path, make_env(kube_api), MlPerf, base, upstream)


def test_ml_perf_gate_passes_and_records_results(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe
) -> None:
    # a generous gate: this test is about the pass path and what is recorded, not this busy machine's latency
    ctx = _perf_ctx(tmp_path, kube_api, torchserve_api, p95_ms=60000)
    plan = MlPerf().plan(ctx)
    assert plan.changes[0].target == f"{torchserve_api.url}/predictions/intent-classifier"
    out = MlPerf().apply(ctx)  # Locust, open model: 8 req/s for 3 s
    stats = out["stats"]
    assert out["passed"] is True and stats["requests"] == 24 and stats["failures"] == 0
    assert stats["target_rps"] == 8 and stats["achieved_rps"] >= 7.6 and out["gate"]["p95_ms"] == 60000
    assert ctx.recorded_metrics["requests"] == 24 and out["p95_ms"] == stats["p95_ms"]
    assert any("gate" in line and "PASSED" in line for line in ctx.recorded_logs)
    report = json.loads((ctx.artifacts_dir() / "ml-perf-report.json").read_text())
    assert report["stats"]["p95_ms"] == out["p95_ms"] and report["failures"] == []
    assert MlPerf().summary(out).startswith("8 of 8 req/s")
    assert all(
        c.ok
        for c in MlPerf().verify(
            ctx_for(tmp_path, ctx.env, MlPerf, dict(ctx.settings), {**ctx.upstream, "ml-perf": out})
        )
    )


def test_ml_perf_gate_fails_on_slow_inference(
    tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe
) -> None:
    torchserve_api.latency_s = 0.15
    ctx = _perf_ctx(tmp_path, kube_api, torchserve_api, p95_ms=100)
    with pytest.raises(StepFailed, match="latency gate missed"):
        MlPerf().apply(ctx)
    report = json.loads((ctx.artifacts_dir() / "ml-perf-report.json").read_text())  # evidence kept on failure
    assert report["failures"] and report["stats"]["p95_ms"] >= 150


def test_ml_perf_counts_errors(tmp_path: Path, kube_api: KubeApiDouble, torchserve_api: FakeTorchServe) -> None:
    ctx = _perf_ctx(tmp_path, kube_api, torchserve_api, model="no-such-model")
    with pytest.raises(StepFailed, match=r"error rate 100\.000 %") as err:
        MlPerf().apply(ctx)
    assert "HTTP 404: 24" in err.value.why  # every failed call counted, none dropped


# -- the TorchServe client on its own -------------------------------------------------------------------------------
def test_torchserve_client_errors(torchserve_api: FakeTorchServe) -> None:
    client = TorchServeClient(torchserve_api.url, torchserve_api.url)
    assert client.describe("nope") is None and client.unregister("nope") is False
    with pytest.raises(AdapterError, match="HTTP 400") as info:
        client.register("http://127.0.0.1:9/x.mar?X-Amz-Signature=SECRET", model_name="m")
    assert "SECRET" not in str(info.value)
    with pytest.raises(AdapterError, match="not an http"):
        TorchServeClient("127.0.0.1:8081")
