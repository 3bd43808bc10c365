"""KubeApiDouble — a TEST DOUBLE of the Kubernetes API server (not a cluster, no kubelet, no controllers).

Built on kmock's ``KubernetesEmulator`` (PyPI ``kmock``): a real aiohttp HTTP server on 127.0.0.1 that the official
``kubernetes`` client talks to, with kmock's in-memory object store and its bundled discovery documents (so
``/api``, ``/apis/<group>/<version>`` answer like a k3s server). On top of kmock this double adds what the bpmigrate
adapters rely on and kmock leaves out:

* server-side apply (``PATCH`` with ``application/apply-patch+yaml``): upsert; fields the same field manager applied
  before and no longer applies are removed (the part of SSA that bites: one manager applying a partial object drops
  the rest); ``?dryRun=All`` computes the result without storing it;
* JSON merge patches (``application/merge-patch+json``; ``null`` removes a key) and strategic-merge patches (treated
  as merge patches: lists are replaced, not merged by key — a documented simplification);
* ``metadata``: uid, resourceVersion (global counter), generation (bumped when ``spec`` changes), creationTimestamp;
* ``labelSelector`` on lists (``a=b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``) and
  ``fieldSelector=metadata.name=...``;
* the ``scale`` and ``status`` subresources of Deployments/StatefulSets/ReplicaSets;
* readiness, since there are no controllers: in ``auto_ready`` mode (default) every Deployment / DaemonSet /
  StatefulSet gets a ready status on each write (observedGeneration = generation, all replicas updated and
  available); ``never_ready(kind, ns, name, reason=...)`` makes one workload stay unavailable and adds a Pod whose
  container waits with that reason (to test rollout timeouts); ``set_ready(...)`` marks one ready by hand;
* ``/version`` answering a configurable version (default v1.30.4);
* ``set_ingress_hostname(...)``: Ingresses get an ALB address in their status, as the Load Balancer Controller writes;
* ``add_node(name, labels, allocatable)``, ``set_status(...)``, ``inject_error(...)`` (next N matching requests
  fail with a given HTTP status), and ``requests`` (method, path, query, content-type of each request, for asserting
  e.g. the field manager used).

The double runs its event loop in a background thread; helper methods are thread-safe (they hop onto that loop).
Use the ``kube_api`` pytest fixture (function scoped: a fresh, empty API server per test)::

    def test_x(kube_api, tmp_path):
        kube_api.add_node("gpu-1", labels={"node_group": "gpu"}, allocatable={"nvidia.com/gpu": "1"})
        env = EnvConfig(kind="sandbox", kube={"kubeconfig": str(kube_api.kubeconfig_path)})
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import pytest
import yaml
from kmock._internal import rendering
from kmock._internal.k8s import KubernetesError

JsonDict = dict[str, Any]

#: kinds whose readiness the double fills in (no controllers exist)
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet")

#: resources not in kmock's bundled (k3s builtin) discovery that bpmigrate manifests use
EXTRA_RESOURCES: list[tuple[str, str, str, bool]] = [
    # (group/version, plural, kind, namespaced)
    ("elbv2.k8s.aws/v1beta1", "targetgroupbindings", "TargetGroupBinding", True),
    ("elbv2.k8s.aws/v1beta1", "ingressclassparams", "IngressClassParams", False),
    ("autoscaling.k8s.io/v1", "verticalpodautoscalers", "VerticalPodAutoscaler", True),
]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``None`` deletes; lists and scalars replace)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _leaf_paths(doc: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Paths of the leaves of a document (lists are atomic leaves, as SSA treats 'atomic' lists)."""
    if isinstance(doc, dict) and doc:
        out: set[tuple[str, ...]] = set()
        for key, value in doc.items():
            out |= _leaf_paths(value, (*prefix, str(key)))
        return out
    return {prefix}


def _remove_path(doc: JsonDict, path: tuple[str, ...]) -> None:
    node: Any = doc
    parents: list[tuple[dict[str, Any], str]] = []
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        parents.append((node, key))
        node = node[key]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    # prune dicts left empty by the removal
    for parent, key in reversed(parents):
        if parent.get(key) == {}:
            parent.pop(key)
        else:
            break


_SELECTOR_TERM = re.compile(r"(?:[^,(]|\([^)]*\))+")


def match_label_selector(labels: Mapping[str, str], selector: str) -> bool:
    """Evaluate a Kubernetes label selector string against a label map."""
    for raw in _SELECTOR_TERM.findall(selector or ""):
        term = raw.strip()
        if not term:
            continue
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            present = key in labels and labels[key] in values
            if (op == "in" and not present) or (op == "notin" and present):
                return False
        elif "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class _InjectedError:
    status: int
    method: str | None
    path_contains: str
    times: int
    message: str


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@attrs.define(kw_only=True)
class _DoubleHandler(kmock.KubernetesEmulator):
    """kmock's emulator plus server-side apply, selectors, subresources and readiness (see the module docstring)."""

    auto_ready: bool = True
    version: str = "1.30.4"
    ingress_hostname: str | None = None
    _rv: int = 0
    _applied: dict[Any, dict[str, JsonDict]] = attrs.field(factory=dict)
    _never_ready: dict[tuple[str, str, str], str] = attrs.field(factory=dict)
    _injected: list[_InjectedError] = attrs.field(factory=list)
    recorded: list[RecordedRequest] = attrs.field(factory=list)

    # -- discovery / version ---------------------------------------------------------------------------------
    async def _serve_server_version(self, request: rendering.Request) -> rendering.Payload:
        major, minor, *_ = self.version.split(".")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{self.version}",
            "gitTreeState": "clean",
            "platform": "linux/amd64",
            "compiler": "gc",
            "goVersion": "go1.22.0",
            "buildDate": "2024-01-01T00:00:00Z",
            "gitCommit": "0" * 40,
        }

    def kind_of(self, resource: Any) -> str:
        for res in self._resources:
            if res == resource:
                return self._resources[res].kind or str(resource.plural).capitalize()
        return str(resource.plural).capitalize()

    def namespaced(self, resource: Any) -> bool:
        for res in self._resources:
            if res == resource:
                return bool(self._resources[res].namespaced)
        return True

    # -- request handling --------------------------------------------------------------------------------------
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        headers = {k.lower(): v for k, v in (request.headers or {}).items()}
        content_type = (headers.get("content-type") or "").split(";")[0].strip()
        path = request.url.path
        method = str(request.method.value if request.method is not None else "").upper()
        self.recorded.append(RecordedRequest(method, path, dict(request.params or {}), content_type, request.data))
        for injected in self._injected:
            method_ok = injected.method is None or injected.method.upper() == method
            if injected.times > 0 and method_ok and injected.path_contains in path:
                injected.times -= 1
                raise KubernetesError(status=injected.status, reason="Injected", message=injected.message)

        if path.rstrip("/") == "/version" and method == "GET":
            return self._json(await self._serve_server_version(request))
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and (
            len(parts) in (3, 4) or (len(parts) == 5 and parts[4] in ("status", "finalize"))
        ):
            # kmock reads /api/v1/namespaces/X as "namespace X" scoping; here it IS the Namespace object X
            sub = parts[4] if len(parts) == 5 else None
            request = attrs.evolve(
                request,
                resource=kmock.resource("v1/namespaces"),
                namespace=None,
                name=parts[3] if len(parts) >= 4 else None,
                subresource=sub,
            )
        res = request.resource
        if res is None or res.plural is None or res.version is None:
            return await super()._handle(request)
        if request.params and request.params.get("watch") == "true":
            return await super()._handle(request)
        if request.subresource in ("scale", "status") and request.name:
            return await self._subresource(request, method, content_type)
        if request.subresource:
            return await super()._handle(request)
        if method == "GET" and request.name is None:
            return self._json(await self._list(request))
        if method == "GET":
            key = self._key(request)
            async with self._lock:
                found = self._current(key)
            if found is None:
                raise kmock.KubernetesObjectNotFoundError()
            return self._json(found)
        if method == "POST" and request.name is None:
            return self._json(await self._create(request), status=201)
        if method == "PATCH" and request.name:
            return self._json(await self._patch(request, content_type))
        if method == "PUT" and request.name:
            return self._json(await self._put(request))
        if method == "DELETE" and request.name:
            return self._json(await self._delete(request))
        return await super()._handle(request)

    @staticmethod
    def _json(payload: Any, status: int = 200) -> aiohttp.web.StreamResponse:
        return aiohttp.web.json_response(payload, status=status)

    def _body(self, request: rendering.Request) -> Any:
        if request.data is not None and not isinstance(request.data, (str, bytes)):
            return request.data
        text = request.text or ""
        if not text.strip():
            return {}
        return yaml.safe_load(text)

    def _key(self, request: rendering.Request, body: Mapping[str, Any] | None = None) -> tuple[Any, str | None, str]:
        res = request.resource
        meta = (body or {}).get("metadata") or {}
        namespace = request.namespace or meta.get("namespace")
        if not self.namespaced(res):
            namespace = None
        elif namespace is None:
            namespace = "default"
        name = request.name or meta.get("name")
        if not name:
            raise KubernetesError(status=422, reason="Invalid", message="metadata.name: Required value")
        return (res, namespace, name)

    def _current(self, key: tuple[Any, str | None, str]) -> JsonDict | None:
        if key in self._objects and not self._objects[key].deleted:
            return copy.deepcopy(self._objects[key].raw)
        return None

    def _finish(self, key: tuple[Any, str | None, str], new: JsonDict, old: JsonDict | None) -> JsonDict:
        """Fill system metadata, bump generation/resourceVersion, fill readiness."""
        res, namespace, name = key
        meta = new.setdefault("metadata", {})
        meta["name"] = name
        if namespace is not None:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        group_version = f"{res.group}/{res.version}" if res.group else res.version
        new["apiVersion"] = group_version
        new["kind"] = self.kind_of(res)
        old_meta = (old or {}).get("metadata") or {}
        meta["uid"] = old_meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = old_meta.get("creationTimestamp") or _now()
        generation = int(old_meta.get("generation") or 0)
        if old is None or new.get("spec") != old.get("spec") or not generation:
            generation += 1
        meta["generation"] = generation
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        if old is not None and "status" in old and "status" not in new:
            new["status"] = old["status"]
        self._fill_status(key, new)
        return new

    def _fill_status(self, key: tuple[Any, str | None, str], obj: JsonDict) -> None:
        kind = obj.get("kind", "")
        if kind == "Ingress" and self.ingress_hostname and not (obj.get("status") or {}).get("loadBalancer"):
            # what the AWS Load Balancer Controller writes once the ALB exists
            obj["status"] = {"loadBalancer": {"ingress": [{"hostname": self.ingress_hostname}]}}
        if kind not in WORKLOAD_KINDS:
            return
        ident = (kind, key[1] or "", key[2])
        spec = obj.get("spec") or {}
        generation = obj["metadata"]["generation"]
        if ident in self._never_ready:
            status = dict(obj.get("status") or {})
            status.update({"observedGeneration": generation, "updatedReplicas": 0, "availableReplicas": 0})
            status.update({"readyReplicas": 0, "numberReady": 0, "numberAvailable": 0, "updatedNumberScheduled": 0})
            status["unavailableReplicas"] = spec.get("replicas", 1)
            if kind == "Deployment":
                status["conditions"] = [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                ]
            if kind == "DaemonSet":
                status["desiredNumberScheduled"] = max(1, self._node_count())
            else:
                status["replicas"] = spec.get("replicas", 1)
            obj["status"] = status
            return
        if self.auto_ready:
            obj["status"] = self.ready_status(kind, spec, generation)

    def ready_status(self, kind: str, spec: Mapping[str, Any], generation: int) -> JsonDict:
        if kind == "DaemonSet":
            n = max(1, self._node_count())
            return {
                "observedGeneration": generation,
                "desiredNumberScheduled": n,
                "currentNumberScheduled": n,
                "updatedNumberScheduled": n,
                "numberReady": n,
                "numberAvailable": n,
                "numberMisscheduled": 0,
            }
        replicas = int(spec.get("replicas", 1))
        status: JsonDict = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        if kind == "Deployment":
            status["conditions"] = [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ]
        if kind == "StatefulSet":
            status["currentRevision"] = status["updateRevision"] = f"rev-{generation}"
            status["currentReplicas"] = replicas
        return status

    def _node_count(self) -> int:
        return sum(1 for (res, _, _), obj in self._objects.items() if res.plural == "nodes" and not obj.deleted)

    def _store(self, key: tuple[Any, str | None, str], obj: JsonDict) -> None:
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj

    async def _publish(self, key: tuple[Any, str | None, str], event: str, obj: JsonDict) -> None:
        await self._buses[key[0]].put({"type": event, "object": obj})

    async def _list(self, request: rendering.Request) -> JsonDict:
        res = request.resource
        assert res is not None
        params = request.params or {}
        selector = params.get("labelSelector", "")
        field_selector = params.get("fieldSelector", "")
        items: list[JsonDict] = []
        async with self._lock:
            for (r, namespace, name), obj in list(self._objects.items()):
                if r != res or obj.deleted:
                    continue
                if request.namespace is not None and namespace != request.namespace:
                    continue
                raw = copy.deepcopy(obj.raw)
                labels = (raw.get("metadata") or {}).get("labels") or {}
                if selector and not match_label_selector(labels, selector):
                    continue
                if field_selector.startswith("metadata.name=") and name != field_selector.split("=", 1)[1]:
                    continue
                items.append(raw)
            rv = str(self._rv)
        group_version = f"{res.group}/{res.version}" if res.group else res.version
        return {
            "apiVersion": group_version,
            "kind": f"{self.kind_of(res)}List",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _create(self, request: rendering.Request) -> JsonDict:
        body = self._body(request)
        key = self._key(request, body)
        dry_run = bool((request.params or {}).get("dryRun"))
        async with self._lock:
            if self._current(key) is not None:
                raise KubernetesError(
                    status=409, reason="AlreadyExists", message=f'{key[0].plural} "{key[2]}" already exists'
                )
            obj = self._finish(key, copy.deepcopy(body), None)
            if not dry_run:
                self._store(key, obj)
                await self._publish(key, "ADDED", obj)
        return obj

    async def _put(self, request: rendering.Request) -> JsonDict:
        body = self._body(request)
        key = self._key(request, body)
        async with self._lock:
            old = self._current(key)
            if old is None:
                raise kmock.KubernetesObjectNotFoundError()
            obj = self._finish(key, copy.deepcopy(body), old)
            if not (request.params or {}).get("dryRun"):
                self._store(key, obj)
                await self._publish(key, "MODIFIED", obj)
        return obj

    async def _patch(self, request: rendering.Request, content_type: str) -> JsonDict:
        body = self._body(request)
        params = request.params or {}
        dry_run = bool(params.get("dryRun"))
        async with self._lock:
            key = self._key(request, body if isinstance(body, dict) else None)
            old = self._current(key)
            if content_type == "application/apply-patch+yaml":
                manager = params.get("fieldManager")
                if not manager:
                    raise KubernetesError(
                        status=422, reason="Invalid", message="fieldManager is required for apply requests"
                    )
                if old is not None and params.get("force") != "true":
                    others = [m for m in self._applied.get(key, {}) if m != manager]
                    if others:
                        raise KubernetesError(
                            status=409, reason="Conflict", message=f"Apply failed with conflicts: owned by {others}"
                        )
                new = copy.deepcopy(old) if old is not None else {}
                previous = self._applied.get(key, {}).get(manager)
                if previous is not None:
                    still_owned = set()
                    for other, doc in self._applied.get(key, {}).items():
                        if other != manager:
                            still_owned |= _leaf_paths(doc)
                    dropped = _leaf_paths(previous) - _leaf_paths(body) - still_owned
                    for path in sorted(dropped, key=len, reverse=True):
                        if path and path[0] not in ("apiVersion", "kind") and path[:2] != ("metadata", "name"):
                            _remove_path(new, path)
                new = _merge_patch(new, body)
                obj = self._finish(key, new, old)
                if not dry_run:
                    self._applied.setdefault(key, {})[manager] = copy.deepcopy(body)
            else:
                if old is None:
                    raise kmock.KubernetesObjectNotFoundError()
                if content_type == "application/json-patch+json":
                    import jsonpatch

                    new = jsonpatch.apply_patch(old, body, in_place=False)
                else:  # merge-patch+json and strategic-merge-patch+json (lists replaced: documented simplification)
                    new = _merge_patch(old, body)
                obj = self._finish(key, new, old)
            if not dry_run:
                self._store(key, obj)
                await self._publish(key, "ADDED" if old is None else "MODIFIED", obj)
        return obj

    async def _delete(self, request: rendering.Request) -> JsonDict:
        key = self._key(request)
        async with self._lock:
            old = self._current(key)
            if old is None:
                raise kmock.KubernetesObjectNotFoundError()
            if not (request.params or {}).get("dryRun"):
                for dependent in [key, *self._dependents(key, old)]:
                    gone = self._current(dependent)
                    if gone is None:
                        continue
                    self._objects[dependent].delete()
                    self._applied.pop(dependent, None)
                    await self._publish(dependent, "DELETED", gone)
        return {"apiVersion": "v1", "kind": "Status", "status": "Success", "details": {"name": key[2]}}

    def _dependents(self, key: tuple[Any, str | None, str], obj: JsonDict) -> list[tuple[Any, str | None, str]]:
        """What the garbage collector would remove with ``obj`` (deleted at once here, not in the background):
        every object of a deleted Namespace; the Pods of a deleted workload (by its selector's matchLabels)."""
        kind = obj.get("kind")
        out: list[tuple[Any, str | None, str]] = []
        if kind == "Namespace":
            out = [k for k, o in self._objects.items() if k[1] == key[2] and not o.deleted]
        elif kind in WORKLOAD_KINDS:
            match = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            for k, o in self._objects.items():
                if k[0].plural != "pods" or k[1] != key[1] or o.deleted or not match:
                    continue
                labels = (o.raw.get("metadata") or {}).get("labels") or {}
                if all(labels.get(lk) == lv for lk, lv in match.items()):
                    out.append(k)
        return out

    async def _subresource(self, request: rendering.Request, method: str, content_type: str) -> web_response:
        key = self._key(request)
        async with self._lock:
            old = self._current(key)
            if old is None:
                raise kmock.KubernetesObjectNotFoundError()
            if request.subresource == "scale":
                if method in ("PATCH", "PUT"):
                    body = self._body(request)
                    replicas = (body.get("spec") or {}).get("replicas")
                    if replicas is not None:
                        new = _merge_patch(old, {"spec": {"replicas": int(replicas)}})
                        old = self._finish(key, new, old)
                        self._store(key, old)
                        await self._publish(key, "MODIFIED", old)
                meta = old["metadata"]
                return self._json(
                    {
                        "apiVersion": "autoscaling/v1",
                        "kind": "Scale",
                        "metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta},
                        "spec": {"replicas": (old.get("spec") or {}).get("replicas", 1)},
                        "status": {"replicas": (old.get("status") or {}).get("replicas", 0)},
                    }
                )
            # status subresource
            if method in ("PATCH", "PUT"):
                body = self._body(request)
                new = copy.deepcopy(old)
                new["status"] = _merge_patch(old.get("status") or {}, body.get("status") or {})
                self._rv += 1
                new["metadata"]["resourceVersion"] = str(self._rv)
                self._store(key, new)
                await self._publish(key, "MODIFIED", new)
                old = new
            return self._json(old)


web_response = aiohttp.web.StreamResponse


class KubeApiDouble:
    """A running test double of the Kubernetes API server, reachable at ``.url`` through ``.kubeconfig_path``."""

    def __init__(self, workdir: Path, *, auto_ready: bool = True, version: str = "1.30.4") -> None:
        self.workdir = workdir
        self.handler = _DoubleHandler(auto_ready=auto_ready, version=version)
        self.handler.resources.load_bundled()
        for group_version, plural, kind, namespaced in EXTRA_RESOURCES:
            info = self.handler.resources[f"{group_version}/{plural}"]
            info.kind = kind
            info.namespaced = namespaced
            info.verbs = {"get", "list", "create", "update", "patch", "delete", "watch"}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kube-api-double", daemon=True)
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.kubeconfig_path = workdir / "kubeconfig"
        self.context = "kube-double"
        self.namespace = "default"

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.handler, kmock.Server(self.handler) as server:
            self.url = f"http://127.0.0.1:{server.port}"
            self._started.set()
            await self._stopping.wait()

    def start(self) -> KubeApiDouble:
        self._thread.start()
        self._started.wait(15)
        if self._error is not None or not self.url:
            raise RuntimeError(f"the Kubernetes API double did not start: {self._error!r}")
        self.write_kubeconfig(self.kubeconfig_path)
        return self

    def stop(self) -> None:
        if self._stopping is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> KubeApiDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, *, namespace: str | None = None) -> Path:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-double", "cluster": {"server": self.url}}],
            "users": [{"name": "kube-double", "user": {"token": "kube-double-token"}}],
            "contexts": [
                {
                    "name": self.context,
                    "context": {
                        "cluster": "kube-double",
                        "user": "kube-double",
                        "namespace": namespace or self.namespace,
                    },
                }
            ],
            "current-context": self.context,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc))
        return path

    def _call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            async with self.handler._lock:
                return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- helpers for tests -------------------------------------------------------------------------------------
    @staticmethod
    def _resource(api_version: str, kind: str) -> str:
        plural = {
            "Deployment": "deployments",
            "DaemonSet": "daemonsets",
            "StatefulSet": "statefulsets",
            "ReplicaSet": "replicasets",
            "Node": "nodes",
            "Pod": "pods",
            "Service": "services",
            "ConfigMap": "configmaps",
            "Secret": "secrets",
            "Namespace": "namespaces",
            "Ingress": "ingresses",
            "HorizontalPodAutoscaler": "horizontalpodautoscalers",
            "NetworkPolicy": "networkpolicies",
        }.get(kind, kind.lower() + "s")
        return f"{api_version}/{plural}"

    def put_object(self, obj: Mapping[str, Any]) -> JsonDict:
        """Store an object directly (as if another client had created it), filling system metadata."""
        body = copy.deepcopy(dict(obj))
        res = kmock.resource(self._resource(body["apiVersion"], body["kind"]))
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") if self.handler.namespaced(res) else None
        if self.handler.namespaced(res) and namespace is None:
            namespace = "default"
        key = (res, namespace, meta["name"])

        def do() -> JsonDict:
            old = self.handler._current(key)
            new = self.handler._finish(key, body, old)
            self.handler._store(key, new)
            return new

        return self._call(do)

    def get_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> JsonDict | None:
        res = kmock.resource(self._resource(api_version, kind))
        key = (res, namespace if self.handler.namespaced(res) else None, name)
        return self._call(lambda: self.handler._current(key))

    def objects(self, kind: str | None = None) -> list[JsonDict]:
        def do() -> list[JsonDict]:
            out = []
            for _key, obj in self.handler._objects.items():
                if not obj.deleted and (kind is None or obj.raw.get("kind") == kind):
                    out.append(copy.deepcopy(obj.raw))
            return out

        return self._call(do)

    def add_node(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        allocatable: Mapping[str, str] | None = None,
        *,
        taints: list[JsonDict] | None = None,
        ready: bool = True,
    ) -> JsonDict:
        alloc = {"cpu": "4", "memory": "16Gi", "pods": "110", **dict(allocatable or {})}
        node: JsonDict = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **dict(labels or {})}},
            "spec": {"taints": taints} if taints else {},
            "status": {
                "capacity": dict(alloc),
                "allocatable": alloc,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": str(uuid.uuid4()),
                    "containerRuntimeVersion": "containerd://1.7.11",
                    "kernelVersion": "6.1.0",
                    "kubeProxyVersion": f"v{self.handler.version}",
                    "kubeletVersion": f"v{self.handler.version}",
                    "machineID": uuid.uuid4().hex,
                    "operatingSystem": "linux",
                    "osImage": "Amazon Linux 2023",
                    "systemUUID": str(uuid.uuid4()),
                },
            },
        }
        return self.put_object(node)

    def set_ingress_hostname(self, hostname: str | None) -> None:
        """Stand in for the AWS Load Balancer Controller: every Ingress written from now on gets this ALB hostname
        in ``status.loadBalancer`` (None: Ingresses stay without an address, as with no controller)."""
        self.handler.ingress_hostname = hostname

    def set_version(self, version: str) -> None:
        self.handler.version = version.lstrip("v")

    def set_auto_ready(self, on: bool) -> None:
        self.handler.auto_ready = on

    def set_ready(self, kind: str, namespace: str, name: str) -> None:
        """Mark one workload ready now (its status as a controller would write it)."""
        self.handler._never_ready.pop((kind, namespace, name), None)
        api = "apps/v1"
        key = (kmock.resource(self._resource(api, kind)), namespace, name)

        def do() -> None:
            obj = self.handler._current(key)
            if obj is None:
                raise KeyError(f"{kind} {namespace}/{name} does not exist in the double")
            obj["status"] = self.handler.ready_status(kind, obj.get("spec") or {}, obj["metadata"]["generation"])
            self.handler._store(key, obj)

        self._call(do)

    def set_deployment_ready(self, namespace: str, name: str) -> None:
        self.set_ready("Deployment", namespace, name)

    def never_ready(self, kind: str, namespace: str, name: str, *, reason: str = "ImagePullBackOff") -> None:
        """Make a workload never become available; a Pod of it waits with ``reason`` (to test rollout timeouts).

        Call it before or after the workload is applied; the Pod carries the workload's pod-template labels once
        the workload exists (call again after applying if it did not exist yet)."""
        self.handler._never_ready[(kind, namespace, name)] = reason
        existing = self.get_object("apps/v1", kind, name, namespace)
        if existing is None:
            return
        existing.pop("status", None)
        self.put_object(existing)
        labels = ((existing.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        containers = ((existing.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
        first = containers[0]["name"] if containers else "main"
        self.put_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-7d4b9c-x2x1z", "namespace": namespace, "labels": dict(labels)},
                "spec": {"containers": containers},
                "status": {
                    "phase": "Pending",
                    "containerStatuses": [
                        {
                            "name": first,
                            "image": containers[0].get("image", "") if containers else "",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"waiting": {"reason": reason, "message": f"double: {reason}"}},
                        }
                    ],
                },
            }
        )

    def set_status(self, api_version: str, kind: str, namespace: str | None, name: str, status: JsonDict) -> None:
        res = kmock.resource(self._resource(api_version, kind))
        key = (res, namespace if self.handler.namespaced(res) else None, name)

        def do() -> None:
            obj = self.handler._current(key)
            if obj is None:
                raise KeyError(f"{kind} {namespace}/{name} does not exist in the double")
            obj["status"] = status
            self.handler._store(key, obj)

        self._call(do)

    def inject_error(
        self, status: int, *, method: str | None = None, path_contains: str = "", times: int = 1, message: str = ""
    ) -> None:
        """The next ``times`` requests matching method/path fail with HTTP ``status`` (a Kubernetes Status body)."""
        self.handler._injected.append(
            _InjectedError(status, method, path_contains, times, message or f"injected HTTP {status}")
        )

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self.handler.recorded)

    def apply_requests(self) -> list[RecordedRequest]:
        return [r for r in self.handler.recorded if r.content_type == "application/apply-patch+yaml"]


@pytest.fixture()
def kube_api(tmp_path: Path) -> Iterator[KubeApiDouble]:
    """A fresh test double of the Kubernetes API server (auto-ready on, version 1.30.4, no nodes)."""
    double = KubeApiDouble(tmp_path / "kube-double")
    with double:
        yield double


def _dump(obj: Any) -> str:  # debugging aid in failing tests
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
