"""The security check of rendered manifests catches a bad manifest of each kind, naming manifest, file and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.manifests import placeholders, render
from phases._security import blocking, check_manifest, check_manifests

ROOT = Path(__file__).resolve().parent.parent


def good_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api-gateway", "namespace": "bp"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "api",
                            "image": "x",
                            "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
                            "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            }
        },
    }


def test_a_good_manifest_passes() -> None:
    assert check_manifest(good_deployment(), "good.yaml") == []


def _bad(mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(good_deployment())
    mutate(doc)
    return doc


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


CASES = [
    (
        "privileged",
        lambda d: _pod(d)["containers"][0]["securityContext"].update(privileged=True),
        "spec.template.spec.containers[0].securityContext.privileged",
    ),
    (
        "hostPath",
        lambda d: _pod(d)["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}),
        "spec.template.spec.volumes[1].hostPath",
    ),
    (
        "limits",
        lambda d: _pod(d)["containers"][0]["resources"]["limits"].pop("memory"),
        "spec.template.spec.containers[0].resources.limits.memory",
    ),
    (
        "readOnlyRootFilesystem",
        lambda d: _pod(d)["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
        "spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem",
    ),
    (
        "runAsNonRoot",
        lambda d: _pod(d)["securityContext"].pop("runAsNonRoot"),
        "spec.template.spec.containers[0].securityContext.runAsNonRoot",
    ),
    (
        "runAsNonRoot",
        lambda d: _pod(d)["containers"][0]["securityContext"].update(runAsUser=0),
        "spec.template.spec.containers[0].securityContext.runAsUser",
    ),
]


@pytest.mark.parametrize(("rule", "mutate", "path"), CASES, ids=[f"{c[0]}:{c[2].rsplit('.', 1)[-1]}" for c in CASES])
def test_each_bad_kind_is_caught_with_manifest_and_field(rule: str, mutate: Any, path: str) -> None:
    findings = check_manifest(_bad(mutate), "templates/k8s/app/21-api-gateway.yaml")
    assert [f.rule for f in findings] == [rule]
    [f] = findings
    assert f.path == path
    text = str(f)
    assert text.startswith("Deployment/api-gateway (templates/k8s/app/21-api-gateway.yaml): " + path)
    assert f.fix


def test_init_containers_cronjobs_and_pods_are_checked() -> None:
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}},
    }
    rules = {f.rule for f in check_manifest(cron, "c.yaml")}
    assert rules == {"limits", "readOnlyRootFilesystem", "runAsNonRoot"}
    assert all(f.path.startswith("spec.jobTemplate.spec.template.spec.containers[0]") for f in check_manifest(cron))
    dep = good_deployment()
    _pod(dep)["initContainers"] = [{"name": "init", "securityContext": {"privileged": True}}]
    paths = [f.path for f in check_manifest(dep)]
    assert "spec.template.spec.initContainers[0].securityContext.privileged" in paths
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "x"}], "hostNetwork": False}}
    assert {f.path.split(".")[0] for f in check_manifest(pod)} == {"spec"}
    assert check_manifest({"kind": "ConfigMap", "metadata": {"name": "x"}}) == []


def test_exceptions_need_a_reason_and_stay_visible() -> None:
    doc = good_deployment()
    _pod(doc)["volumes"].append({"name": "dp", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}})
    doc["metadata"]["annotations"] = {"bpmigrate.io/security-exceptions": "hostPath"}
    assert [f.rule for f in blocking(check_manifest(doc))] == ["hostPath"]  # no reason: not exempted
    doc["metadata"]["annotations"]["bpmigrate.io/security-exceptions-reason"] = "device plugin socket"
    findings = check_manifest(doc)
    assert blocking(findings) == [] and findings[0].exempted == "device plugin socket"
    assert "[exempted: device plugin socket]" in str(findings[0])


def test_shipped_cutover_templates_are_clean() -> None:
    """The manifests this phase applies (spot handler, quotas, cost monitoring, network policies, VPAs) pass."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted((ROOT / "templates/k8s/cutover").glob("*.yaml")):
        values = {name: "x" for name in placeholders(path)}
        values.update(vpc_cidr="10.0.0.0/16", namespace="betterprompts")
        docs.extend((path.name, d) for d in render(path, values))
    assert len(docs) >= 20
    assert blocking(check_manifests(docs)) == []
    kinds = {d["kind"] for _, d in docs}
    assert {"DaemonSet", "ResourceQuota", "NetworkPolicy", "VerticalPodAutoscaler", "CronJob"} <= kinds
    assert all(
        d["spec"]["updatePolicy"]["updateMode"] == "Off" for _, d in docs if d["kind"] == "VerticalPodAutoscaler"
    )
    deny = next(d for _, d in docs if d["metadata"]["name"] == "default-deny-all")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_cutover_templates_validate_against_the_kubernetes_schema() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for path in sorted((ROOT / "templates/k8s/cutover").glob("*.yaml")):
        values = {name: "x" for name in placeholders(path)}
        values.update(vpc_cidr="10.0.0.0/16", namespace="betterprompts", monthly_target_usd="5000")
        values.update(quota_requests_cpu="32", quota_limits_cpu="64", quota_gpus="4", quota_pods="200")
        values.update(quota_requests_memory="128Gi", quota_limits_memory="256Gi")
        for doc in render(path, values):
            if doc["kind"] == "VerticalPodAutoscaler":
                continue  # a CRD: no schema in kubernetes-validate
            kubernetes_validate.validate(doc, "1.30", strict=True)


def test_every_shipped_template_passes_the_security_check() -> None:
    """What security-hardening enforces on a real cluster holds for the manifests we ship (exceptions carry reasons)."""
    import re

    import yaml

    from phases._security import blocking, check_manifests

    root = Path(__file__).resolve().parent.parent / "templates" / "k8s"
    docs = []
    for path in sorted(root.rglob("*.yaml")):
        text = re.sub(r"\$\{[a-z_0-9]+\}", "1", path.read_text())
        docs += [(str(path), d) for d in yaml.safe_load_all(text) if d]
    findings = check_manifests(docs)
    assert docs and not blocking(findings), [str(f) for f in blocking(findings)]
    assert all(f.exempted for f in findings)
