"""Step ``models``: Model archives: upload the .mar files to S3 with SHA-256 checksums, then register them with TorchServe"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from migrate.errors import AdapterError, ConfigError, StepFailed
from migrate.step import Change, Check, Finding, Outputs, PlanResult, RetryPolicy, Reversibility, StepContext

from .._kube_step import kube_unreachable
from ._common import TorchServeApiSettings, _Ml, _ml, _ts_client, serving


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

    class Settings(TorchServeApiSettings):
        bucket: str | None = Field(None, description="S3 bucket (default betterprompts-<env>-ml-models)")
        archives: list[str] = Field(default_factory=list, description=".mar files (relative to the project)")
        sample_archive: bool = Field(False, description="use a generated sample archive outside the sandbox too")
        sample_model_name: str = Field("intent-classifier", description="model name of the sample archive")
        prefix: str = Field("models/", description="S3 key prefix")
        initial_workers: int = Field(1, ge=1, description="TorchServe workers per registered model")
        url_expiry_s: int = Field(3600, gt=0, description="presigned S3 URL lifetime for registration")
        register_timeout: float = Field(600, gt=0, description="seconds for a registration to finish")
        sagemaker_name: str | None = Field(
            None, description="SageMaker base name (default betterprompts-<env>-<model>)"
        )
        sagemaker_role_arn: str | None = Field(None, description="SageMaker execution role ARN")
        sagemaker_image: str = Field(
            "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.3.0-gpu-py311",
            description="SageMaker inference image",
        )
        instance_type: str = Field("ml.g4dn.xlarge", description="SageMaker instance type")
        instance_count: int = Field(1, ge=1, description="SageMaker instances")
        endpoint_timeout: float = Field(1800, gt=0, description="seconds for the endpoint to be InService")
        poll_s: float = Field(15, gt=0, description="SageMaker status poll interval")

    def skip_reason(self, ctx: StepContext) -> str | None:
        if serving(ctx) == "sagemaker":
            return None  # S3 + SageMaker only: no cluster needed
        return kube_unreachable(ctx)

    def _bucket(self, ctx: StepContext) -> str:
        return str(ctx.typed(self.Settings).bucket or f"betterprompts-{ctx.env_name}-ml-models")

    def _sample(self, ctx: StepContext) -> tuple[str, bytes] | None:
        from migrate.adapters.model_archive import sample_archive_bytes

        s = ctx.typed(self.Settings)
        if s.archives or not (ctx.is_sandbox or s.sample_archive):
            return None
        return s.sample_model_name, sample_archive_bytes(s.sample_model_name)

    def _archives(self, ctx: StepContext, *, write_sample: bool) -> list[Path]:
        from migrate.adapters.model_archive import write_if_changed

        configured = [Path(p) for p in ctx.typed(self.Settings).archives]
        paths = [p if p.is_absolute() else ctx.project_root / p for p in configured]
        sample = self._sample(ctx)
        if sample is not None:
            target = ctx.state_dir / ctx.env_name / "artifacts" / self.id / f"{sample[0]}.mar"  # plan: no mkdir
            if write_sample:
                write_if_changed(target, sample[1])
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
        from migrate.adapters.model_archive import describe

        prefix = ctx.typed(self.Settings).prefix
        sample = self._sample(ctx)
        data = sample[1] if sample is not None else None
        return [describe(path, prefix, data) for path in self._archives(ctx, write_sample=write_sample)]

    def _item_names(self, ctx: StepContext) -> set[str]:
        try:
            return {i["name"] for i in self._items(ctx)}
        except ConfigError:
            return set()

    def _sm_names(self, ctx: StepContext, model: str) -> dict[str, str]:
        base = ctx.typed(self.Settings).sagemaker_name or f"betterprompts-{ctx.env_name}-{model}"
        return {"model": f"{base}-model", "config": f"{base}-config", "endpoint": base}

    def plan(self, ctx: StepContext) -> PlanResult:
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
            instance = ctx.typed(self.Settings).instance_type
            for what, key in (("model", "model"), ("endpoint_config", "config"), ("endpoint", "endpoint")):
                if ml.describe(what, names[key]) is None:
                    result.changes.append(Change("create", f"SageMaker {what} {names[key]}", instance))
                else:
                    result.in_place.append(f"SageMaker {what} {names[key]}")
            if not ctx.typed(self.Settings).sagemaker_role_arn:
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
            s = ctx.typed(self.Settings)
            url = ml.presign_get(bucket, model["key"], s.url_expiry_s)
            client.register(
                url, model_name=model["name"], initial_workers=s.initial_workers, timeout=s.register_timeout
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
        s = ctx.typed(self.Settings)
        role = s.sagemaker_role_arn
        if not role:
            raise ConfigError(
                "[steps.models] sagemaker_role_arn is not set",
                "SageMaker models need an execution role",
                "set sagemaker_role_arn in [steps.models] of migrate.toml",
            )
        image, instance = s.sagemaker_image, s.instance_type
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
            instance_count=s.instance_count,
        )
        ctx.intent("sagemaker-create-endpoint", name=names["endpoint"])
        ml.ensure_endpoint(names["endpoint"], config_name=names["config"])
        status = ml.wait_endpoint(names["endpoint"], s.endpoint_timeout, poll=s.poll_s)
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

    def summary(self, outputs: Mapping[str, Any]) -> str:
        models = outputs.get("models") or []
        size = sum(int(m.get("size") or 0) for m in models)
        where = "TorchServe" if outputs.get("serving") == "torchserve" else "SageMaker"
        return f"{len(models)} model archive(s) · {size:,} bytes in s3://{outputs.get('bucket')} · served by {where}"
