"""TorchServe management and inference APIs (httpx, imported lazily).

Management API (port 8081): ``GET /models`` (paginated), ``GET /models/{name}``, ``POST /models?url=...`` (register;
``synchronous=true`` waits for the workers), ``DELETE /models/{name}[/{version}]``. Inference API (port 8080):
``GET /ping``, ``POST /predictions/{name}``. Errors become AdapterError/TransientError; model URLs (which may be
presigned S3 URLs carrying a signature) are never put in messages — callers name the model instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from migrate.errors import AdapterError, TransientError
from migrate.redact import redact

if TYPE_CHECKING:
    import httpx

    from migrate.config import EnvConfig


@dataclass(frozen=True)
class TsResponse:
    status: int
    data: Any
    elapsed_ms: float


class TorchServeClient:
    """One TorchServe deployment, addressed by its management (and optionally inference) base URL."""

    def __init__(self, management_url: str, inference_url: str | None = None, *, timeout: float = 30.0) -> None:
        if not management_url.startswith(("http://", "https://")):
            raise AdapterError(
                f"TorchServe management_url {management_url!r} is not an http(s) URL",
                "the management API is reached over HTTP (e.g. http://127.0.0.1:8081 through a port-forward)",
                "set [steps.torchserve] management_url in migrate.toml",
                service="torchserve",
            )
        self.management_url = management_url.rstrip("/")
        self.inference_url = inference_url.rstrip("/") if inference_url else None
        self.timeout = timeout
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            self._client = httpx.Client(trust_env=False, follow_redirects=False, headers={"User-Agent": "bpmigrate"})
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _call(
        self,
        method: str,
        base: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        timeout: float | None = None,
        shown: str | None = None,
        ok_404: bool = False,
    ) -> TsResponse:
        import httpx

        what = f"TorchServe {method} {shown or path}"
        start = time.perf_counter()
        try:
            resp = self._http().request(
                method, base + path, params=dict(params or {}), content=content, timeout=timeout or self.timeout
            )
        except httpx.TimeoutException:
            raise TransientError(
                f"{what} timed out after {timeout or self.timeout:g}s",
                f"{base} did not answer in time",
                "check the torchserve pods (kubectl -n <ns> logs deploy/torchserve) and re-run",
                service="torchserve",
            ) from None
        except httpx.HTTPError as exc:
            raise TransientError(
                f"{what}: cannot reach {base}",
                redact(f"{type(exc).__name__}: {exc}")[:300],
                "check the URL in migrate.toml and that the API is reachable (e.g. kubectl port-forward "
                "svc/torchserve 8080 8081), then re-run",
                service="torchserve",
            ) from None
        elapsed = (time.perf_counter() - start) * 1000
        try:
            data: Any = resp.json() if resp.content else None
        except ValueError:
            data = resp.text
        if resp.status_code < 300 or (ok_404 and resp.status_code == 404):
            return TsResponse(resp.status_code, data, elapsed)
        message = data.get("message") if isinstance(data, dict) else str(data or "")
        cls = TransientError if resp.status_code in (429, 502, 503, 504) else AdapterError
        raise cls(
            f"{what} failed: HTTP {resp.status_code}",
            redact(str(message))[:500],
            "see the torchserve logs (kubectl -n <ns> logs deploy/torchserve), fix the cause and re-run",
            service="torchserve",
        )

    # -- management API ----------------------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        """Every registered model: [{"modelName": ..., "modelUrl": ...}], following pagination."""
        models: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(1000):
            params = {"limit": "100"}
            if token:
                params["next_page_token"] = token
            data = self._call("GET", self.management_url, "/models", params=params).data or {}
            models.extend(data.get("models") or [])
            token = data.get("nextPageToken")
            if not token:
                break
        return models

    def describe(self, name: str) -> list[dict[str, Any]] | None:
        """The model's versions with their workers, or None when it is not registered."""
        resp = self._call("GET", self.management_url, f"/models/{quote(name, safe='')}", ok_404=True)
        if resp.status == 404:
            return None
        return resp.data if isinstance(resp.data, list) else [resp.data]

    def register(
        self,
        url: str,
        *,
        model_name: str,
        initial_workers: int = 1,
        synchronous: bool = True,
        timeout: float = 600.0,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST /models?url=...`` (TorchServe downloads the .mar from ``url``)."""
        params = {
            "url": url,
            "model_name": model_name,
            "initial_workers": str(initial_workers),
            "synchronous": "true" if synchronous else "false",
            **dict(extra or {}),
        }
        resp = self._call(
            "POST", self.management_url, "/models", params=params, timeout=timeout, shown=f"/models ({model_name})"
        )
        return resp.data if isinstance(resp.data, dict) else {"status": resp.data}

    def unregister(self, name: str, version: str | None = None) -> bool:
        """``DELETE /models/{name}[/{version}]``; False when it was not registered."""
        path = f"/models/{quote(name, safe='')}" + (f"/{quote(version, safe='')}" if version else "")
        return self._call("DELETE", self.management_url, path, ok_404=True).status != 404

    # -- inference API -----------------------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        """``GET /ping`` on the inference API: {"status": "Healthy"}."""
        if not self.inference_url:
            raise AdapterError(
                "no TorchServe inference_url configured", "", "set [steps.torchserve] inference_url in migrate.toml"
            )
        data = self._call("GET", self.inference_url, "/ping", timeout=10).data
        return data if isinstance(data, dict) else {"status": str(data)}

    def predict(self, model_name: str, payload: Any) -> TsResponse:
        if not self.inference_url:
            raise AdapterError(
                "no TorchServe inference_url configured", "", "set [steps.ml-perf] inference_url in migrate.toml"
            )
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self._call("POST", self.inference_url, f"/predictions/{quote(model_name, safe='')}", content=body)


def archive_name(path: Path) -> str:
    """TorchServe's default model name for an archive: the file name without ``.mar``."""
    return path.name[:-4] if path.name.endswith(".mar") else path.stem


class TorchServeAdapter:
    """Factory of clients (URLs come from step settings, so one adapter serves every phase-4 step)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str | None], TorchServeClient] = {}

    def client(self, management_url: str, inference_url: str | None = None) -> TorchServeClient:
        key = (management_url, inference_url)
        if key not in self._clients:
            self._clients[key] = TorchServeClient(management_url, inference_url)
        return self._clients[key]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()


def from_config(env: EnvConfig, **_: Any) -> TorchServeAdapter:
    return TorchServeAdapter()
