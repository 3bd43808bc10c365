"""KubeAdapter (official kubernetes client) against the Kubernetes API test double (tests/kube_double.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.adapters.kube import KubeAdapter, from_config, rollout_status, write_kubeconfig_context
from migrate.config import EnvConfig
from migrate.errors import AdapterError, StepFailed, TransientError
from migrate.redact import redact
from tests import kube_double
from tests.kube_double import KubeApiDouble, match_label_selector

kube_api = kube_double.kube_api  # the fixture (a no-op duplicate once conftest registers tests.kube_double)


def deployment(name: str = "web", replicas: int = 2, image: str = "nginx:1.27", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}, **extra},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def configmap(name: str, data: dict[str, str], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


@pytest.fixture()
def kube(kube_api: KubeApiDouble) -> KubeAdapter:
    return KubeAdapter(kube_api.kubeconfig_path, namespace="bp", env_name="sandbox", poll_interval=0.05)


# -- reachability ------------------------------------------------------------------------------------------------
def test_reachable_cluster_has_no_unreachable_reason(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    kube_api.set_version("1.31.2")
    assert kube.unreachable_reason() is None
    assert kube.server_version() == "v1.31.2"


def test_missing_kubeconfig_reason_names_path_and_command(tmp_path: Path) -> None:
    adapter = KubeAdapter(tmp_path / "nope" / "config", env_name="sandbox")
    reason = adapter.unreachable_reason()
    assert reason is not None
    assert str(tmp_path / "nope" / "config") in reason
    assert "bpmigrate apply --step kubeconfig --env sandbox" in reason
    with pytest.raises(AdapterError, match="no kubeconfig"):
        adapter.get("v1", "ConfigMap", "x")


def test_dead_api_server_is_unreachable(tmp_path: Path) -> None:
    double = KubeApiDouble(tmp_path / "dead").start()
    path = double.kubeconfig_path
    double.stop()
    reason = KubeAdapter(path).unreachable_reason()
    assert reason is not None and "did not answer" in reason
    with pytest.raises(TransientError):
        KubeAdapter(path).server_version()


def test_unknown_context_is_reported(kube_api: KubeApiDouble) -> None:
    reason = KubeAdapter(kube_api.kubeconfig_path, context="no-such-context").unreachable_reason()
    assert reason is not None and "no-such-context" in reason


def test_kubeconfig_token_is_registered_for_redaction(kube: KubeAdapter) -> None:
    kube.server_version()
    assert "kube-double-token" not in redact("Authorization: kube-double-token")


# -- server-side apply -------------------------------------------------------------------------------------------
def test_apply_is_server_side_with_field_manager_and_idempotent(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    refs = kube.apply([deployment(), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bp"}}])
    assert refs == ["Namespace/bp", "Deployment/bp/web"]  # namespaces first, default namespace filled in
    applies = kube_api.apply_requests()
    assert len(applies) == 2
    assert all(r.method == "PATCH" and r.query == {"fieldManager": "bpmigrate", "force": "true"} for r in applies)
    live = kube.get("apps/v1", "Deployment", "web", "bp")
    assert live is not None and live["metadata"]["generation"] == 1
    kube.apply([deployment()])  # same again: converges, no new generation
    live = kube.get("apps/v1", "Deployment", "web", "bp")
    assert live is not None and live["metadata"]["generation"] == 1
    kube.apply([deployment(image="nginx:1.28")])
    live = kube.get("apps/v1", "Deployment", "web", "bp")
    assert live is not None and live["metadata"]["generation"] == 2
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert kube.get("v1", "Namespace", "bp") is not None


def test_apply_dry_run_stores_nothing(kube: KubeAdapter) -> None:
    assert kube.apply([configmap("cm", {"a": "1"})], dry_run=True) == ["ConfigMap/bp/cm"]
    assert kube.get("v1", "ConfigMap", "cm", "bp") is None


def test_reapply_by_same_manager_drops_fields_it_no_longer_sets(kube: KubeAdapter) -> None:
    kube.apply([configmap("cm", {"a": "1", "b": "2"})])
    kube.apply([configmap("cm", {"a": "1"})])
    live = kube.get("v1", "ConfigMap", "cm", "bp")
    assert live is not None and live["data"] == {"a": "1"}


def test_apply_rejects_manifest_without_name(kube: KubeAdapter) -> None:
    with pytest.raises(AdapterError, match=r"metadata\.name"):
        kube.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}])


def test_crd_kind_resolved_by_discovery(kube: KubeAdapter) -> None:
    tgb = {
        "apiVersion": "elbv2.k8s.aws/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": "api"},
        "spec": {"targetGroupARN": "arn:aws:elasticloadbalancing:tg/x", "serviceRef": {"name": "api", "port": 80}},
    }
    assert kube.apply([tgb]) == ["TargetGroupBinding/bp/api"]
    assert kube.path("elbv2.k8s.aws/v1beta1", "TargetGroupBinding", "api", "bp") == (
        "/apis/elbv2.k8s.aws/v1beta1/namespaces/bp/targetgroupbindings/api"
    )


def test_kind_the_cluster_does_not_serve(kube: KubeAdapter) -> None:
    with pytest.raises(AdapterError, match="does not serve"):
        kube.apply([{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}])


def test_diff_reports_create_unchanged_update(kube: KubeAdapter) -> None:
    kube.apply([configmap("same", {"a": "1"}), configmap("changed", {"a": "1"})])
    docs = [configmap("same", {"a": "1"}), configmap("changed", {"a": "2"}), configmap("new", {})]
    assert kube.diff(docs) == [
        ("unchanged", "ConfigMap/bp/same"),
        ("update", "ConfigMap/bp/changed"),
        ("create", "ConfigMap/bp/new"),
    ]
    live = kube.get("v1", "ConfigMap", "changed", "bp")
    assert live is not None and live["data"] == {"a": "1"}  # the dry run changed nothing


def test_plan_names_the_changed_fields_but_never_a_secret_value(kube: KubeAdapter) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "bp"}, "data": {"k": "b2xk"}}
    kube.apply([deployment("web", replicas=2), secret])
    changed = {**secret, "data": {"k": "bmV3LXZhbHVl"}}
    [(action, ref, detail), (s_action, _, s_detail)] = kube.plan([deployment("web", replicas=4), changed])
    assert (action, ref) == ("update", "Deployment/bp/web") and "spec.replicas: 2 -> 4" in detail
    assert s_action == "update" and "bmV3" not in s_detail and "b2xk" not in s_detail


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("db.example.com:5433", ("db.example.com", 5433)),
        ("db.example.com", ("db.example.com", 5432)),
        ("[2001:db8::1]:6380", ("2001:db8::1", 6380)),
        ("[2001:db8::1]", ("2001:db8::1", 5432)),
        ("2001:db8::1", ("2001:db8::1", 5432)),  # a bare IPv6 address is not split at its last colon
        ("fe80::1", ("fe80::1", 5432)),
        ("10.0.0.5:x", ("10.0.0.5:x", 5432)),
        ("", ("", 5432)),
    ],
)
def test_split_host_port_is_ipv6_correct(value: str, expected: tuple[str, int]) -> None:
    from migrate.adapters.hostport import join_host_port, split_host_port

    assert split_host_port(value, 5432) == expected
    for host in ("db.example.com", "10.0.0.5", "2001:db8::1"):
        assert split_host_port(join_host_port(host, 6379), 1) == (host, 6379)  # round trip


# -- reads, patch, delete, scale ----------------------------------------------------------------------------------
def test_list_with_label_selector_get_and_delete(kube: KubeAdapter) -> None:
    kube.apply([deployment("a"), deployment("b", labels={"app": "b", "tier": "web"})])
    assert [d["metadata"]["name"] for d in kube.list("apps/v1", "Deployment", "bp", "app=b")] == ["b"]
    assert len(kube.list("apps/v1", "Deployment", "bp")) == 2
    assert kube.list("apps/v1", "Deployment", "other") == []
    assert kube.delete("apps/v1", "Deployment", "a", "bp") is True
    assert kube.delete("apps/v1", "Deployment", "a", "bp") is False  # absent: a no-op
    assert kube.get("apps/v1", "Deployment", "a", "bp") is None


def test_nodes_by_label(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    kube_api.add_node("gpu-1", {"node_group": "gpu"}, {"nvidia.com/gpu": "1"})
    kube_api.add_node("app-1", {"node_group": "application"})
    gpu = kube.nodes("node_group=gpu")
    assert [n["metadata"]["name"] for n in gpu] == ["gpu-1"]
    assert gpu[0]["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert len(kube.nodes()) == 2


def test_merge_patch_sets_and_removes_keys(kube: KubeAdapter) -> None:
    kube.apply([configmap("cm", {"keep": "1", "drop": "2"})])
    kube.patch("v1", "ConfigMap", "cm", "bp", {"data": {"drop": None, "new": "3"}})
    live = kube.get("v1", "ConfigMap", "cm", "bp")
    assert live is not None and live["data"] == {"keep": "1", "new": "3"}


def test_scale_updates_replicas(kube: KubeAdapter) -> None:
    kube.apply([deployment(replicas=1)])
    kube.scale("Deployment", "web", "bp", 5)
    live = kube.get("apps/v1", "Deployment", "web", "bp")
    assert live is not None and live["spec"]["replicas"] == 5 and live["status"]["availableReplicas"] == 5


# -- rollouts ----------------------------------------------------------------------------------------------------
def test_wait_rollout_returns_when_available(kube: KubeAdapter) -> None:
    kube.apply([deployment()])
    kube.wait_rollout("Deployment", "web", "bp", timeout=5)
    assert kube.rollout_state("Deployment", "web", "bp")[0] is True


def test_wait_rollout_timeout_names_the_pod_reason(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    kube.apply([deployment()])
    kube_api.never_ready("Deployment", "bp", "web", reason="ImagePullBackOff")
    with pytest.raises(StepFailed) as info:
        kube.wait_rollout("Deployment", "web", "bp", timeout=0.6)
    text = str(info.value)
    assert "did not finish rolling out" in text and "ImagePullBackOff" in text and "kubectl -n bp describe" in text


def test_wait_rollout_becomes_ready_later(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    kube_api.set_auto_ready(False)
    kube.apply([deployment()])
    assert kube.rollout_state("Deployment", "web", "bp")[0] is False
    kube_api.set_deployment_ready("bp", "web")
    kube.wait_rollout("Deployment", "web", "bp", timeout=2)


def test_progress_deadline_exceeded_fails_at_once(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    kube_api.set_auto_ready(False)
    kube.apply([deployment()])
    kube_api.set_status(
        "apps/v1",
        "Deployment",
        "bp",
        "web",
        {
            "observedGeneration": 1,
            "replicas": 2,
            "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
        },
    )
    with pytest.raises(StepFailed, match="ProgressDeadlineExceeded"):
        kube.wait_rollout("Deployment", "web", "bp", timeout=60)


def test_daemonset_and_statefulset_rollouts(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    kube_api.add_node("n1")
    ds = deployment("agent")
    ds["kind"] = "DaemonSet"
    ds["spec"].pop("replicas")
    sts = deployment("db", replicas=3)
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    kube.apply([ds, sts])
    kube.wait_rollout("DaemonSet", "agent", "bp", timeout=5)
    kube.wait_rollout("StatefulSet", "db", "bp", timeout=5)
    kube_api.never_ready("DaemonSet", "bp", "agent", reason="CrashLoopBackOff")
    with pytest.raises(StepFailed, match="CrashLoopBackOff"):
        kube.wait_rollout("DaemonSet", "agent", "bp", timeout=0.3)


@pytest.mark.parametrize(
    ("obj", "done", "says"),
    [
        ({"kind": "Deployment", "metadata": {"generation": 2}, "status": {"observedGeneration": 1}}, False, "observe"),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 3},
                "status": {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3},
            },
            False,
            "old replicas",
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 3},
                "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2},
            },
            False,
            "2 of 3",
        ),
        (
            {
                "kind": "Deployment",
                "metadata": {"generation": 1},
                "spec": {"replicas": 3},
                "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3},
            },
            True,
            "3/3",
        ),
        (
            {
                "kind": "DaemonSet",
                "metadata": {"generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "desiredNumberScheduled": 2,
                    "updatedNumberScheduled": 2,
                    "numberAvailable": 1,
                },
            },
            False,
            "1 of 2",
        ),
    ],
)
def test_rollout_status_rules(obj: dict[str, Any], done: bool, says: str) -> None:
    ok, why = rollout_status(obj)
    assert ok is done and says in why


# -- errors are translated ---------------------------------------------------------------------------------------
def test_server_errors_are_transient_and_forbidden_is_not(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    kube_api.inject_error(503, method="GET", path_contains="/configmaps/")
    with pytest.raises(TransientError, match="HTTP 503"):
        kube.get("v1", "ConfigMap", "x", "bp")
    kube_api.inject_error(403, method="PATCH", message="forbidden: user cannot patch")
    with pytest.raises(AdapterError) as info:
        kube.apply([configmap("cm", {})])
    assert not isinstance(info.value, TransientError)
    assert "RBAC" in info.value.next_cmd and info.value.service == "kubernetes"


def test_pod_problems_reports_unschedulable(kube: KubeAdapter, kube_api: KubeApiDouble) -> None:
    kube.apply([deployment()])
    kube_api.put_object(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "bp", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "main", "image": "nginx"}]},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes: insufficient nvidia.com/gpu",
                    }
                ],
            },
        }
    )
    problems = kube.pod_problems("Deployment", "web", "bp")
    assert problems == ["pod web-1: Unschedulable (0/3 nodes: insufficient nvidia.com/gpu)"]


# -- kubeconfig writing -------------------------------------------------------------------------------------------
def test_write_kubeconfig_context_merges_and_keeps_others(tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    path.parent.mkdir()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "other", "cluster": {"server": "https://other"}}],
                "users": [{"name": "other", "user": {"token": "t"}}],
                "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
                "current-context": "other",
            }
        )
    )
    args = ["eks", "get-token", "--cluster-name", "bp-dev", "--region", "us-west-2"]
    for server in ("https://eks-1", "https://eks-2"):  # twice: updates in place, never duplicates
        write_kubeconfig_context(
            path, context="bp-dev", cluster="arn:eks:bp-dev", server=server, ca_data="Q0E=", exec_args=args
        )
    doc = yaml.safe_load(path.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["other", "bp-dev"]
    assert [c["name"] for c in doc["clusters"]] == ["other", "arn:eks:bp-dev"]
    assert doc["clusters"][1]["cluster"] == {"server": "https://eks-2", "certificate-authority-data": "Q0E="}
    assert doc["users"][1]["user"]["exec"]["args"] == args
    assert doc["current-context"] == "other"  # not switched unless asked
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    write_kubeconfig_context(
        path,
        context="bp-dev",
        cluster="arn:eks:bp-dev",
        server="https://eks-2",
        ca_data="",
        exec_args=args,
        set_current=True,
    )
    assert yaml.safe_load(path.read_text())["current-context"] == "bp-dev"


def test_from_config_resolves_relative_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = EnvConfig(name="dev", kube={"kubeconfig": "state/kubeconfig", "context": "c", "namespace": "ns"})
    adapter = from_config(env, project_root=tmp_path, state_dir=tmp_path / "state")
    assert adapter.kubeconfig == tmp_path / "state" / "kubeconfig"
    assert (adapter.context, adapter.namespace) == ("c", "ns")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    adapter = from_config(EnvConfig(name="dev"), project_root=tmp_path, state_dir=tmp_path)
    assert adapter.kubeconfig == tmp_path / "a"


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("a=1", True),
        ("a!=1", False),
        ("a", True),
        ("!a", False),
        ("a in (1,2),b", True),
        ("a notin (1)", False),
        ("c in (x)", False),
        ("a=1,b=2", True),
        ("", True),
    ],
)
def test_double_label_selector(selector: str, expected: bool) -> None:
    assert match_label_selector({"a": "1", "b": "2"}, selector) is expected


def test_double_garbage_collects_namespace_contents_and_workload_pods(
    kube: KubeAdapter, kube_api: KubeApiDouble
) -> None:
    kube.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bp"}}, deployment(), configmap("c", {})]
    )
    kube_api.never_ready("Deployment", "bp", "web")
    assert len(kube.list("v1", "Pod", "bp")) == 1
    kube.delete("apps/v1", "Deployment", "web", "bp")
    assert kube.list("v1", "Pod", "bp") == []
    kube.delete("v1", "Namespace", "bp")
    assert kube.get("v1", "ConfigMap", "c", "bp") is None
