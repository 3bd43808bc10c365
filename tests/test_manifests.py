"""Every manifest under templates/k8s/** renders with sample values and validates offline against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict mode: unknown fields are errors) for the target EKS versions.

Kinds the library has no schema for (CRDs such as VerticalPodAutoscaler or TargetGroupBinding) are checked
structurally and then skipped with the reason stated. Also unit tests of migrate/adapters/manifests.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters import manifests
from migrate.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "templates" / "k8s"
#: the Kubernetes versions bpmigrate supports: the rows of the add-on version table (templates/k8s/versions.toml)
TARGET_VERSIONS = tuple(sorted(manifests.version_table(ROOT / "templates")))

#: sample values for placeholders used by the templates (names not listed fall back to _sample_for)
SAMPLES: dict[str, str] = {
    "namespace": "betterprompts",
    "cluster_name": "betterprompts-sandbox",
    "region": "us-west-2",
    "vpc_id": "vpc-0123456789abcdef0",
    "account_id": "123456789012",
    "domain": "betterprompts.example.com",
    "environment": "staging",
    "nvidia_plugin_image": "nvcr.io/nvidia/k8s-device-plugin:v0.15.0",
    "torchserve_image": "pytorch/torchserve:0.11.1-gpu",
    "torchserve_replicas": "1",
    "gpus_per_pod": "1",
    "certificate_arn": "arn:aws:acm:us-west-2:123456789012:certificate/00000000-0000-0000-0000-000000000000",
}

_SAMPLE_COMMENT = re.compile(r"^#\s*bpmigrate-sample:\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.MULTILINE)


def _sample_for(name: str) -> str:
    """A plausible value by naming convention, for placeholders of templates written by other engineers."""
    lname = name.lower()
    if lname.endswith("_arn"):
        return "arn:aws:iam::123456789012:role/sample"
    if lname.endswith(("_image", "image")):
        return "123456789012.dkr.ecr.us-west-2.amazonaws.com/sample:1.0.0"
    if lname.endswith(("_tag", "_version")):
        return "1.0.0"
    if re.search(r"(replicas|port|count|_min|_max|min_|max_|percent|utilization|target|seconds|_s$|threshold|gpus|workers)", lname):
        return "2"
    if re.search(r"(tls|enabled|^use_|_enable)", lname):
        return "true"
    if lname.endswith(("_host", "_endpoint", "hostname")):
        return "sample.internal.example.com"
    if lname.endswith("_url"):
        return "https://sample.example.com"
    return "sample"


def _values_for(path: Path, version: str = TARGET_VERSIONS[0]) -> dict[str, str]:
    row = manifests.version_table(ROOT / "templates")[version]  # the add-on versions for this Kubernetes version
    values = {name: row.get(name, SAMPLES.get(name, _sample_for(name))) for name in manifests.placeholders(path)}
    # a template may pin its own sample values: `# bpmigrate-sample: name=value`
    for name, value in _SAMPLE_COMMENT.findall(path.read_text()):
        values[name] = value
    return values


def _template_files() -> list[Path]:
    if not K8S.is_dir():
        return []
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _documents() -> list[Any]:
    params: list[Any] = []
    for version in TARGET_VERSIONS:
        for file in _template_files():
            rel = file.relative_to(K8S)
            try:
                docs = manifests.render(file, _values_for(file, version))
            except ConfigError as exc:  # reported by test_every_template_renders
                params.append(pytest.param(file, None, exc, version, id=f"{rel}#render-error-{version}"))
                continue
            for i, doc in enumerate(docs):
                ident = f"{rel}#{i}-{doc.get('kind')}-{(doc.get('metadata') or {}).get('name')}-{version}"
                params.append(pytest.param(file, doc, None, version, id=ident))
    return params


def test_template_tree_is_not_empty() -> None:
    files = {str(p.relative_to(K8S)) for p in _template_files()}
    for expected in (
        "addons/metrics-server.yaml",
        "addons/cluster-autoscaler.yaml",
        "addons/aws-load-balancer-controller.yaml",
        "ml/nvidia-device-plugin.yaml",
        "ml/torchserve.yaml",
    ):
        assert expected in files


@pytest.mark.parametrize("path", _template_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_template_renders(path: Path) -> None:
    docs = manifests.render(path, _values_for(path))
    assert docs, f"{path} renders to no documents"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: a document lacks apiVersion/kind"
        assert (doc.get("metadata") or {}).get("name"), f"{path}: a {doc.get('kind')} lacks metadata.name"
        for name in manifests.placeholders(path):  # ($${X} is a literal ${X} for shells: not a placeholder)
            assert "${" + name + "}" not in repr(doc), f"{path}: placeholder {name} left unrendered"


@pytest.mark.parametrize(("path", "doc", "error", "version"), _documents())
def test_manifest_validates_against_openapi_schema(
    path: Path, doc: dict[str, Any] | None, error: Exception | None, version: str
) -> None:
    import kubernetes_validate

    if error is not None:
        pytest.fail(f"{path} does not render: {error}")
    assert doc is not None
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        pytest.skip(
            f"kubernetes-validate has no schema for {doc['kind']} ({doc['apiVersion']}) in {version}: a CRD kind, "
            "checked structurally only (apiVersion, kind, metadata.name)"
        )
    except kubernetes_validate.ValidationError as exc:
        location = "/".join(str(p) for p in exc.path)
        pytest.fail(
            f"{path}: {doc['kind']} {doc['metadata'].get('name')} invalid for {version} at {location}: {exc.message}"
        )


# -- ML manifests: what phase 4 promises ------------------------------------------------------------------------
def _ml(name: str) -> list[dict[str, Any]]:
    path = K8S / "ml" / name
    return manifests.render(path, _values_for(path))


def test_torchserve_runs_on_gpu_nodes_as_non_root() -> None:
    docs = {d["kind"]: d for d in _ml("torchserve.yaml")}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node_group": "gpu"}
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    ports = {p["name"]: p["port"] for p in docs["Service"]["spec"]["ports"]}
    assert ports == {"inference": 8080, "management": 8081, "metrics": 8082}


def test_nvidia_plugin_targets_gpu_nodes() -> None:
    (ds,) = _ml("nvidia-device-plugin.yaml")
    pod = ds["spec"]["template"]["spec"]
    assert ds["kind"] == "DaemonSet"
    assert pod["nodeSelector"] == {"node_group": "gpu"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


# -- render() ---------------------------------------------------------------------------------------------------
def test_render_substitutes_multi_doc_and_dollar_escape(tmp_path: Path) -> None:
    tpl = tmp_path / "a.yaml"
    tpl.write_text("kind: A\nmetadata: {name: ${name}}\nn: ${count}\ncost: $$5\n---\n---\nkind: B\nok: ${flag}\n")
    docs = manifests.render(tpl, {"name": "x", "count": 3, "flag": True})
    assert docs == [{"kind": "A", "metadata": {"name": "x"}, "n": 3, "cost": "$5"}, {"kind": "B", "ok": True}]


def test_render_missing_value_names_file_and_placeholder(tmp_path: Path) -> None:
    tpl = tmp_path / "b.yaml"
    tpl.write_text("kind: A\nimage: ${image_tag}\n")
    with pytest.raises(ConfigError) as info:
        manifests.render(tpl, {"other": 1})
    assert "b.yaml" in info.value.what and "image_tag" in info.value.what


def test_render_directory_in_name_order_and_rejects_non_mappings(tmp_path: Path) -> None:
    (tmp_path / "20-b.yaml").write_text("kind: B\n")
    (tmp_path / "10-a.yml").write_text("kind: A\n")
    (tmp_path / "notes.txt").write_text("kind: ignored\n")
    assert [d["kind"] for d in manifests.render(tmp_path, {})] == ["A", "B"]
    (tmp_path / "30-c.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        manifests.render(tmp_path, {})


def test_render_missing_path_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        manifests.render(tmp_path / "nope.yaml", {})


def test_placeholders_lists_every_name(tmp_path: Path) -> None:
    tpl = tmp_path / "c.yaml"
    tpl.write_text("a: ${one}\nb: $two\nc: $${not_a_placeholder}\n")
    assert manifests.placeholders(tpl) == {"one", "two"}


def test_the_schema_check_is_strict_and_catches_typos() -> None:
    """Guard against a validator that silently accepts everything: an unknown field must fail."""
    import kubernetes_validate

    (ds,) = _ml("nvidia-device-plugin.yaml")
    ds["spec"]["template"]["spec"]["nodeSelektor"] = {"node_group": "gpu"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, TARGET_VERSIONS[0], strict=True)
    ds["spec"]["template"]["spec"].pop("nodeSelektor")
    ds["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "not-a-number"}]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, TARGET_VERSIONS[0], strict=True)


# -- the supported Kubernetes versions and the add-on version table -------------------------------------------------
def test_the_version_table_is_the_supported_versions_and_the_readme_says_so() -> None:
    table = manifests.version_table(ROOT / "templates")
    assert len(table) >= 2 and set(table) <= set(manifests.schema_versions())  # schemas exist for each
    readme = (ROOT / "README.md").read_text()
    for version, row in table.items():
        assert f"`{version}`" in readme, f"README does not list Kubernetes {version}"
        # the Cluster Autoscaler's minor version must equal the cluster's
        assert manifests.minor_of(row["cluster_autoscaler"]) == version
        assert set(row) >= {"cluster_autoscaler", "aws_load_balancer_controller", "metrics_server"}
    with pytest.raises(ConfigError, match="not in the add-on version table"):
        manifests.addon_versions(ROOT / "templates", "v1.12.0")
    assert manifests.addon_versions(ROOT / "templates", "v1.33.2-eks-1234")["cluster_autoscaler"].startswith("v1.33.")


def test_schema_problems_names_the_manifest_and_the_field() -> None:
    (ds,) = _ml("nvidia-device-plugin.yaml")
    assert manifests.schema_problems([ds], "v1.33.1") == []
    ds["spec"]["template"]["spec"]["nodeSelektor"] = {"node_group": "gpu"}
    crd_kind = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"x": 1}}
    [problem] = manifests.schema_problems([ds, crd_kind], "1.30")  # a kind without a bundled schema is skipped
    assert problem.startswith("DaemonSet/nvidia-device-plugin-daemonset: ") and "nodeSelektor" in problem


def test_user_manifests_plain_yaml_keeps_dollars_and_kustomize_needs_a_renderer(tmp_path: Path) -> None:
    (tmp_path / "10-cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {CMD: echo $HOME}\n")
    (tmp_path / "20-list.yml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n"
    )
    docs = manifests.load_user_manifests(tmp_path)
    assert [d["metadata"]["name"] for d in docs] == ["a", "b"] and docs[0]["data"]["CMD"] == "echo $HOME"
    (tmp_path / "kustomization.yaml").write_text("resources: [10-cm.yaml]\n")
    with pytest.raises(ConfigError, match="kustomize"):
        manifests.load_user_manifests(tmp_path)
    rendered = manifests.load_user_manifests(tmp_path, kustomize=lambda p: "kind: ConfigMap\nmetadata: {name: k}\n")
    assert [d["metadata"]["name"] for d in rendered] == ["k"]
