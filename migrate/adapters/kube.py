"""Kubernetes through the official ``kubernetes`` client (imported lazily): server-side apply, reads, rollouts.

Every write is a server-side apply (``PATCH`` with ``application/apply-patch+yaml``, field manager ``bpmigrate``,
``force=true``) so re-applying converges and never duplicates; small targeted edits use JSON merge patches. The
adapter speaks raw REST paths through ``ApiClient`` (resource plural and scope from a built-in table, else API
discovery), so any kind — built-in or CRD — goes through the same code. Client and HTTP errors are translated here
into ``AdapterError`` / ``TransientError`` (5xx, 429, connection failures) with secrets redacted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, StepFailed, TransientError
from migrate.redact import redact, register

if TYPE_CHECKING:
    from migrate.config import EnvConfig

StrList = list[str]
DocList = list[dict[str, Any]]

FIELD_MANAGER = "bpmigrate"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"

#: kind -> (plural, namespaced) for the kinds bpmigrate uses; anything else is found through API discovery
_KNOWN: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "Node": ("nodes", False),
    "Pod": ("pods", True),
    "Service": ("services", True),
    "ServiceAccount": ("serviceaccounts", True),
    "ConfigMap": ("configmaps", True),
    "Secret": ("secrets", True),
    "Endpoints": ("endpoints", True),
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "Deployment": ("deployments", True),
    "DaemonSet": ("daemonsets", True),
    "StatefulSet": ("statefulsets", True),
    "ReplicaSet": ("replicasets", True),
    "Job": ("jobs", True),
    "CronJob": ("cronjobs", True),
    "HorizontalPodAutoscaler": ("horizontalpodautoscalers", True),
    "Ingress": ("ingresses", True),
    "IngressClass": ("ingressclasses", False),
    "NetworkPolicy": ("networkpolicies", True),
    "PodDisruptionBudget": ("poddisruptionbudgets", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "APIService": ("apiservices", False),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
    "PriorityClass": ("priorityclasses", False),
    "StorageClass": ("storageclasses", False),
    "MutatingWebhookConfiguration": ("mutatingwebhookconfigurations", False),
    "ValidatingWebhookConfiguration": ("validatingwebhookconfigurations", False),
}

#: applied first so that later documents find their namespace / definition
_APPLY_ORDER = {"Namespace": 0, "CustomResourceDefinition": 1, "ServiceAccount": 2, "ClusterRole": 3, "Role": 3}

_WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")


def ref_of(doc: Mapping[str, Any]) -> str:
    """``Kind/namespace/name`` (``Kind/name`` for cluster-scoped objects)."""
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{ns}/{meta.get('name')}" if ns else f"{doc.get('kind')}/{meta.get('name')}"


def default_kubeconfig_path() -> Path:
    env_value = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env_value.split(os.pathsep) if p), "")
    return Path(first).expanduser() if first else Path("~/.kube/config").expanduser()


class KubeAdapter:
    """One cluster (kubeconfig + context), one default namespace."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        context: str | None = None,
        namespace: str = "default",
        env_name: str = "",
        sandbox: bool = False,
        request_timeout: float = 30.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.namespace = namespace
        self.env_name = env_name
        self.sandbox = sandbox
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self._api: Any = None
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}
        self._unreachable: str | bool | None = False  # False = not probed yet

    # -- connection --------------------------------------------------------------------------------------------
    def _next(self) -> str:
        env = f" --env {self.env_name}" if self.env_name else ""
        return f"bpmigrate status{env}  (kubeconfig {self.kubeconfig}, context {self.context or '(current)'})"

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            if not self.kubeconfig.is_file():
                raise AdapterError(
                    f"no kubeconfig at {self.kubeconfig}",
                    "the Kubernetes adapter needs a kubeconfig with a context for the cluster",
                    self._provide_hint(),
                    service="kubernetes",
                )
            cfg = client.Configuration()
            try:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(self.kubeconfig),
                    context=self.context,
                    client_configuration=cfg,
                    persist_config=False,
                )
            except Exception as exc:  # noqa: BLE001 - kubernetes.config.ConfigException and YAML errors
                raise AdapterError(
                    f"cannot load kubeconfig {self.kubeconfig} (context {self.context or '(current)'})",
                    redact(str(exc)),
                    self._provide_hint(),
                    service="kubernetes",
                ) from None
            for value in (cfg.api_key or {}).values():
                register(str(value).removeprefix("Bearer ").strip())
            if cfg.password:
                register(str(cfg.password))
            cfg.retries = 1
            self._api = client.ApiClient(cfg)
        return self._api

    def _provide_hint(self) -> str:
        env = self.env_name or "<env>"
        if self.sandbox:
            return (
                f"the local sandbox has no Kubernetes API (it is never simulated); to rehearse these steps point "
                f'[environments.{env}] kube = {{ kubeconfig = "..." }} in migrate.toml (or export KUBECONFIG) at a '
                "local cluster (e.g. `kind create cluster` or `k3d cluster create`), then re-run"
            )
        return (
            f"provide a cluster: run `bpmigrate apply --step kubeconfig --env {env}` (EKS), or point "
            f'[environments.{env}] kube = {{ kubeconfig = "...", context = "..." }} in migrate.toml (or export '
            "KUBECONFIG) at a reachable cluster (e.g. one made with `kind create cluster`), then re-run"
        )

    def unreachable_reason(self) -> str | None:
        """None when the API server answers ``/version``; otherwise why not and how to provide a cluster."""
        if self._unreachable is not False:
            return self._unreachable  # type: ignore[return-value]
        reason: str | None
        if not self.kubeconfig.is_file():
            reason = f"no Kubernetes cluster: no kubeconfig at {self.kubeconfig}; {self._provide_hint()}"
        else:
            try:
                self._request("GET", "/version", timeout=5.0)
                reason = None
            except AdapterError as exc:
                reason = f"no Kubernetes cluster reachable ({exc.what}: {exc.why}); {self._provide_hint()}"
        self._unreachable = reason
        return reason

    def close(self) -> None:
        if self._api is not None:
            try:
                self._api.close()
            except Exception:  # noqa: BLE001 - closing must never mask the outcome
                pass
            self._api = None

    # -- raw requests ------------------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
        allow_404: bool = False,
    ) -> dict[str, Any] | None:
        api = self._client()
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        what = f"Kubernetes {method} {path}"
        try:
            req = api.param_serialize(
                method,
                path,
                query_params=list(query) or None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = api.call_api(*req, _request_timeout=timeout or self.request_timeout)
            raw = resp.read()
            status = int(resp.status)
        except Exception as exc:  # noqa: BLE001 - urllib3/kubernetes errors: connection refused, TLS, timeouts
            raise TransientError(
                f"{what}: the API server did not answer",
                redact(f"{type(exc).__name__}: {exc}")[:500],
                f"check that the cluster is reachable: {self._next()}",
                service="kubernetes",
            ) from None
        data: dict[str, Any] | None = None
        if raw:
            try:
                parsed = json.loads(raw)
                data = parsed if isinstance(parsed, dict) else {"value": parsed}
            except ValueError:
                data = {"message": raw.decode("utf-8", "replace")[:500]}
        if 200 <= status < 300:
            return data
        if status == 404 and allow_404:
            return None
        message = redact(str((data or {}).get("message") or (data or {}).get("reason") or f"HTTP {status}"))[:800]
        reason = str((data or {}).get("reason") or "")
        if status in (429, 500, 502, 503, 504):
            cls: type[AdapterError] = TransientError
        else:
            cls = AdapterError
        hint = {
            401: "the kubeconfig credentials were refused: refresh them (e.g. `aws eks update-kubeconfig`) and re-run",
            403: "the identity in the kubeconfig lacks RBAC permission for this: grant it, then re-run",
            409: "another field manager owns these fields or the object changed: inspect it with kubectl and re-run",
            422: "the manifest was rejected by the API server: fix the template under templates/k8s and re-run",
        }.get(status, f"inspect with kubectl and re-run; {self._next()}")
        raise cls(f"{what} failed: HTTP {status} {reason}".rstrip(), message, hint, service="kubernetes")

    # -- resource resolution -----------------------------------------------------------------------------------
    def resource_info(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) for a kind, from the built-in table or API discovery."""
        key = (api_version, kind)
        if key in self._resources:
            return self._resources[key]
        if kind in _KNOWN:
            self._resources[key] = _KNOWN[kind]
            return _KNOWN[kind]
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        listing = self._request("GET", base, allow_404=True) or {}
        for res in listing.get("resources") or []:
            if res.get("kind") == kind and "/" not in str(res.get("name", "")):
                info = (str(res["name"]), bool(res.get("namespaced")))
                self._resources[key] = info
                return info
        raise AdapterError(
            f"the cluster does not serve {kind} ({api_version})",
            "API discovery does not list this kind: its CRD or API group is not installed",
            "install the CRD/controller that provides it (see the add-on steps), then re-run",
            service="kubernetes",
        )

    def path(
        self, api_version: str, kind: str, name: str | None = None, namespace: str | None = None, sub: str = ""
    ) -> str:
        plural, namespaced = self.resource_info(api_version, kind)
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if namespaced:
            base += f"/namespaces/{namespace or self.namespace}"
        out = f"{base}/{plural}"
        if name:
            out += f"/{name}"
        if sub:
            out += f"/{sub}"
        return out

    def _normalise(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(json.dumps(dict(doc)))  # deep copy, JSON-able
        if not out.get("apiVersion") or not out.get("kind") or not (out.get("metadata") or {}).get("name"):
            raise AdapterError(
                "a manifest lacks apiVersion, kind or metadata.name",
                f"document: {redact(json.dumps(out)[:200])}",
                "fix the template under templates/k8s and re-run",
                service="kubernetes",
            )
        _, namespaced = self.resource_info(out["apiVersion"], out["kind"])
        if namespaced:
            out["metadata"].setdefault("namespace", self.namespace)
        else:
            out["metadata"].pop("namespace", None)
        return out

    # -- the agreed API ----------------------------------------------------------------------------------------
    def server_version(self) -> str:
        data = self._request("GET", "/version") or {}
        return str(data.get("gitVersion") or f"v{data.get('major', '?')}.{data.get('minor', '?')}")

    def apply(
        self,
        docs: Iterable[Mapping[str, Any]],
        *,
        dry_run: bool = False,
        field_manager: str = FIELD_MANAGER,
        force: bool = True,
    ) -> StrList:
        """Server-side apply each document (Namespaces and CRDs first); returns ``Kind/namespace/name`` refs."""
        normalised = [self._normalise(d) for d in docs]
        ordered = sorted(enumerate(normalised), key=lambda p: (_APPLY_ORDER.get(p[1]["kind"], 9), p[0]))
        refs: StrList = []
        for _, doc in ordered:
            meta = doc["metadata"]
            query = [("fieldManager", field_manager)]
            if force:
                query.append(("force", "true"))
            if dry_run:
                query.append(("dryRun", "All"))
            path = self.path(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
            self._request("PATCH", path, query=query, body=doc, content_type=APPLY_CONTENT_TYPE)
            refs.append(ref_of(doc))
        return refs

    def diff(self, docs: Iterable[Mapping[str, Any]], *, field_manager: str = FIELD_MANAGER) -> list[tuple[str, str]]:
        """What an apply would do, per document: ("create" | "update" | "unchanged", ref) (see :meth:`plan`)."""
        return [(action, ref) for action, ref, _ in self.plan(docs, field_manager=field_manager)]

    def plan(
        self, docs: Iterable[Mapping[str, Any]], *, field_manager: str = FIELD_MANAGER
    ) -> list[tuple[str, str, str]]:
        """What an apply would do, per document: (action, ref, detail); action create | update | unchanged.

        Read-only: a server-side dry-run apply (``dryRun=All``) returns the object as it would be stored, defaults
        included, and is compared with the live object (metadata bookkeeping and status ignored); ``detail`` names
        the fields that would change (``spec.maxReplicas: 10 -> 20``)."""
        out: list[tuple[str, str, str]] = []
        for raw in docs:
            doc = self._normalise(raw)
            meta = doc["metadata"]
            live = self.get(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
            if live is None:
                out.append(("create", ref_of(doc), "server-side apply"))
                continue
            path = self.path(doc["apiVersion"], doc["kind"], meta["name"], meta.get("namespace"))
            query = [("fieldManager", field_manager), ("force", "true"), ("dryRun", "All")]
            would = self._request("PATCH", path, query=query, body=doc, content_type=APPLY_CONTENT_TYPE) or {}
            before, after = _comparable(live), _comparable(would)
            if before == after:
                out.append(("unchanged", ref_of(doc), ""))
            elif doc["kind"] == "Secret":  # never show a Secret's values, not even base64-encoded
                out.append(("update", ref_of(doc), "values differ (not shown)"))
            else:
                out.append(("update", ref_of(doc), changed_fields(after, before)))
        return out

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self._request("GET", self.path(api_version, kind, name, namespace), allow_404=True)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        *,
        all_namespaces: bool = False,
    ) -> DocList:
        plural, namespaced = self.resource_info(api_version, kind)
        if namespaced and all_namespaces:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            path = f"{base}/{plural}"
        else:
            path = self.path(api_version, kind, None, namespace)
        query = [("labelSelector", label_selector)] if label_selector else []
        data = self._request("GET", path, query=query, allow_404=True) or {}
        items: DocList = []
        for item in data.get("items") or []:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
            items.append(item)
        return items

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete (background propagation); False when it was already absent."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        path = self.path(api_version, kind, name, namespace)
        return self._request("DELETE", path, body=body, content_type="application/json", allow_404=True) is not None

    def patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch (``None`` removes a key) of an existing object."""
        path = self.path(api_version, kind, name, namespace)
        out = self._request("PATCH", path, body=dict(patch), content_type=MERGE_CONTENT_TYPE)
        return out or {}

    def scale(self, kind: str, name: str, namespace: str, replicas: int) -> None:
        path = self.path("apps/v1", kind, name, namespace, sub="scale")
        self._request("PATCH", path, body={"spec": {"replicas": int(replicas)}}, content_type=MERGE_CONTENT_TYPE)

    def nodes(self, label_selector: str | None = None) -> DocList:
        return self.list("v1", "Node", None, label_selector)

    def wait_node_count(self, done: Any, timeout: float, *, what: str) -> int:
        """Poll the node count until ``done(count)``; StepFailed naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            count = len(self.nodes())
            if done(count):
                return count
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"{what}: still {count} node(s) after {timeout:g}s",
                    "the Cluster Autoscaler did not resize the node groups: is it running (cluster-addons), can it "
                    "reach AWS (its IRSA role), do the node groups carry its auto-discovery tags and allow the size?",
                    "kubectl -n kube-system logs deploy/cluster-autoscaler; fix the cause and re-run the step",
                )
            time.sleep(min(max(self.poll_interval, 0.2) * 4, 10.0, max(0.0, deadline - time.monotonic())))

    def rollout_state(self, kind: str, name: str, namespace: str) -> tuple[bool, str]:
        """(done, what is still pending) — the same rules as ``kubectl rollout status``."""
        if kind not in _WORKLOADS:
            raise AdapterError(f"cannot wait for a rollout of {kind}", "only Deployment/DaemonSet/StatefulSet roll out")
        obj = self.get("apps/v1", kind, name, namespace)
        if obj is None:
            return False, f"{kind} {namespace}/{name} does not exist"
        return rollout_status(obj)

    def wait_rollout(self, kind: str, name: str, namespace: str, timeout: float) -> None:
        """Wait until the workload's rollout completes; StepFailed naming the pods' reasons on timeout."""
        deadline = time.monotonic() + timeout
        delay = min(self.poll_interval, 0.5)
        pending = ""
        while True:
            done, pending = self.rollout_state(kind, name, namespace)
            if done:
                return
            if "ProgressDeadlineExceeded" in pending or time.monotonic() >= deadline:
                break
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 5.0)
        reasons = self.pod_problems(kind, name, namespace)
        env = f" --env {self.env_name}" if self.env_name else ""
        raise StepFailed(
            f"{kind} {namespace}/{name} did not finish rolling out within {timeout:g}s: {pending}",
            "pods: " + ("; ".join(reasons) if reasons else "no pod reported a reason (none scheduled yet?)"),
            f"kubectl -n {namespace} describe {kind.lower()} {name}; fix the cause, then "
            f"`bpmigrate apply{env}` again (or `bpmigrate rollback --step <step>{env}`)",
        )

    def pod_problems(self, kind: str, name: str, namespace: str) -> StrList:
        """Why pods of a workload are not ready: container waiting/terminated reasons, unschedulable conditions."""
        obj = self.get("apps/v1", kind, name, namespace) or {}
        match = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not match:
            return []
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        problems: StrList = []
        for pod in self.list("v1", "Pod", namespace, selector):
            pname = (pod.get("metadata") or {}).get("name", "?")
            status = pod.get("status") or {}
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                state = cs.get("state") or {}
                for key in ("waiting", "terminated"):
                    detail = state.get(key) or {}
                    if detail.get("reason") and detail.get("reason") != "Completed":
                        msg = f"pod {pname} container {cs.get('name')}: {detail['reason']}"
                        if detail.get("message"):
                            msg += f" ({str(detail['message'])[:160]})"
                        problems.append(msg)
            for cond in status.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    problems.append(f"pod {pname}: {cond.get('reason')} ({str(cond.get('message', ''))[:160]})")
        return [redact(p) for p in problems]

    def write_kubeconfig_context(
        self,
        path: Path,
        *,
        context: str,
        cluster: str,
        server: str,
        ca_data: str,
        exec_args: StrList,
        command: str = "aws",
        namespace: str | None = None,
        set_current: bool = False,
    ) -> None:
        """Add or update one cluster/user/context in a kubeconfig, keeping every other entry (atomic write)."""
        write_kubeconfig_context(
            path,
            context=context,
            cluster=cluster,
            server=server,
            ca_data=ca_data,
            exec_args=exec_args,
            command=command,
            namespace=namespace,
            set_current=set_current,
        )


_BOOKKEEPING = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp", "selfLink")


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _BOOKKEEPING}
    out["metadata"] = meta
    return out


def cpu_millis(quantity: Any) -> int:
    """A Kubernetes CPU quantity (``2``, ``1930m``, ``0.5``) in millicores (0 when unreadable)."""
    text = str(quantity or "0").strip()
    try:
        return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)
    except ValueError:
        return 0


def overflow_request(nodes: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(replicas, millicores per pod) that the given nodes cannot all run: each pod takes 60 % of the largest node's
    allocatable CPU, so at most one fits per node, and there is one pod more than fit in total."""
    per_node = [cpu_millis(((n.get("status") or {}).get("allocatable") or {}).get("cpu")) for n in nodes]
    per_pod = max(1, max(per_node, default=0) * 6 // 10)
    return sum(c // per_pod for c in per_node) + 1, per_pod


def is_workload(doc: Mapping[str, Any]) -> bool:
    """A kind with a rollout (``kubectl rollout status``): Deployment, DaemonSet, StatefulSet."""
    return doc.get("kind") in _WORKLOADS


def subset_of(desired: Any, live: Any) -> bool:
    """True when every field of ``desired`` has the same value in ``live`` (fields the server added are ignored)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(k in live and subset_of(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(subset_of(d, v) for d, v in zip(desired, live, strict=True))
        )
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return desired == live
    return str(desired) == str(live)


def changed_fields(wanted: Any, live: Any, path: str = "", *, limit: int = 8) -> str:
    """``spec.maxReplicas: 10 -> 20; ...``: the leaves of ``wanted`` that ``live`` does not hold (first ``limit``)."""
    diffs: list[str] = []

    def walk(w: Any, lv: Any, p: str) -> None:
        if isinstance(w, Mapping) and isinstance(lv, Mapping):
            for k, v in w.items():
                walk(v, lv.get(k), f"{p}.{k}" if p else str(k))
            for k in lv:
                if k not in w:
                    diffs.append(f"{p}.{k}: removed" if p else f"{k}: removed")
        elif isinstance(w, list) and isinstance(lv, list) and len(w) == len(lv):
            for i, (a, b) in enumerate(zip(w, lv, strict=True)):
                walk(a, b, f"{p}[{i}]")
        elif not subset_of(w, lv) or not subset_of(lv, w):
            diffs.append(f"{p}: {json.dumps(lv, default=str)} -> {json.dumps(w, default=str)}")

    walk(wanted, live, path)
    more = f"; ... {len(diffs) - limit} more" if len(diffs) > limit else ""
    return redact("; ".join(diffs[:limit]) + more)


def clean_live(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A live object as a manifest that can be re-applied (no status, no server-managed metadata)."""
    out: dict[str, Any] = json.loads(json.dumps(dict(obj)))
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in _BOOKKEEPING:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    annotations.pop("deployment.kubernetes.io/revision", None)
    if not annotations:
        meta.pop("annotations", None)
    if out.get("kind") == "Service":
        spec = out.get("spec") or {}
        for key in ("clusterIP", "clusterIPs"):
            spec.pop(key, None)
    return out


def rollout_status(obj: Mapping[str, Any]) -> tuple[bool, str]:
    """``kubectl rollout status`` rules for Deployment/DaemonSet/StatefulSet objects."""
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return False, f"waiting for the controller to observe generation {generation} (observed {observed})"
    if kind == "Deployment":
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return False, "ProgressDeadlineExceeded: the Deployment exceeded its progress deadline"
        want = int(spec.get("replicas", 1))
        updated = int(status.get("updatedReplicas") or 0)
        total = int(status.get("replicas") or 0)
        available = int(status.get("availableReplicas") or 0)
        if updated < want:
            return False, f"{updated} of {want} replicas updated"
        if total > updated:
            return False, f"{total - updated} old replicas pending termination"
        if available < updated:
            return False, f"{available} of {updated} updated replicas available"
        return True, f"{available}/{want} replicas available"
    if kind == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        available = int(status.get("numberAvailable") or 0)
        if updated < desired:
            return False, f"{updated} of {desired} pods updated"
        if available < desired:
            return False, f"{available} of {desired} updated pods available"
        return True, f"{available}/{desired} pods available"
    if kind == "StatefulSet":
        want = int(spec.get("replicas", 1))
        ready = int(status.get("readyReplicas") or 0)
        updated = int(status.get("updatedReplicas") or 0)
        if ready < want:
            return False, f"{ready} of {want} pods ready"
        if updated < want and status.get("updateRevision") != status.get("currentRevision"):
            return False, f"{updated} of {want} pods updated"
        return True, f"{ready}/{want} pods ready"
    return True, f"{kind} has no rollout"


def write_kubeconfig_context(
    path: Path,
    *,
    context: str,
    cluster: str,
    server: str,
    ca_data: str,
    exec_args: list[str],
    command: str = "aws",
    namespace: str | None = None,
    set_current: bool = False,
) -> None:
    import yaml

    doc: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise AdapterError(
                f"kubeconfig {path} is not valid YAML",
                str(exc)[:300],
                f"fix or move {path} aside, then re-run",
                service="kubernetes",
            ) from None
        if not isinstance(loaded, dict):
            raise AdapterError(f"kubeconfig {path} is not a mapping", "", f"fix or move {path} aside, then re-run")
        doc = loaded
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("kind", "Config")
    doc.setdefault("preferences", {})

    def upsert(section: str, name: str, key: str, value: dict[str, Any]) -> None:
        entries = [e for e in (doc.get(section) or []) if isinstance(e, dict)]
        for entry in entries:
            if entry.get("name") == name:
                entry[key] = value
                break
        else:
            entries.append({"name": name, key: value})
        doc[section] = entries

    cluster_entry: dict[str, Any] = {"server": server}
    if ca_data:
        cluster_entry["certificate-authority-data"] = ca_data
    upsert("clusters", cluster, "cluster", cluster_entry)
    user_entry = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": command,
            "args": list(exec_args),
            "interactiveMode": "Never",
        }
    }
    upsert("users", context, "user", user_entry)
    ctx_entry: dict[str, Any] = {"cluster": cluster, "user": context}
    if namespace:
        ctx_entry["namespace"] = namespace
    upsert("contexts", context, "context", ctx_entry)
    if set_current or not doc.get("current-context"):
        doc["current-context"] = context
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".bpmigrate.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def from_config(env: EnvConfig, *, project_root: Path, state_dir: Path, **_: Any) -> KubeAdapter:
    if env.kube.kubeconfig:
        path = Path(env.kube.kubeconfig).expanduser()
        if not path.is_absolute():
            path = project_root / path
    else:
        path = default_kubeconfig_path()
    return KubeAdapter(
        path,
        context=env.kube.context,
        namespace=env.kube.namespace,
        env_name=env.name,
        sandbox=env.kind == "sandbox",
    )
