"""Invariants of the deploy manifests, the Helm chart and the Dockerfile.

No kustomize, helm or Docker engine is needed: the manifests are parsed as YAML and checked for
least-privilege RBAC, the restricted pod security profile, the operator's command-line contract
and references that resolve (kustomization resources, overlay patch targets, ConfigMap keys).
Where `kubectl` (built-in kustomize) is on PATH, the rendered output is checked against the same
invariants as well; the chart is linted and rendered by the real Helm 4 (tests/peers/helm, marked
`peers`), and installed with it against the real kube-apiserver in tests/e2e/test_helm.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.gitops import helm
from tests.support.peers import PeerBinaries

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kustomize"
BASE = KUSTOMIZE / "base"
NODE_AGENT = KUSTOMIZE / "overlays" / "node-agent"
CHART = ROOT / "deploy" / "helm" / "localmodel"
UID = 65532

#: Everything the operator may ever do. Anything else in a (Cluster)Role is a finding.
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("localmodel.io", "localmodels"): {"get", "list", "watch", "patch"},
    ("localmodel.io", "localmodels/status"): {"patch"},  # server-side apply and JSON patch, never update
    ("", "events"): {"create"},  # kopf posts core/v1 Events and never patches them
    ("", "nodes"): {"get", "list", "watch"},  # node-agent mode only
    # node-agent mode only: each agent's LocalModelNode (server-side apply creates it), the aggregator's watch
    ("localmodel.io", "localmodelnodes"): {"get", "list", "watch", "create", "patch"},
    ("", "configmaps"): {"get", "patch"},  # localmodel-cleanups only (resourceNames), in its own namespace
    # Leader election (central) and agent presence (node-agent, which also lists), in its own namespace only.
    ("coordination.k8s.io", "leases"): {"get", "create", "update", "list"},
}
#: What it cannot work without.
REQUIRED = {
    ("localmodel.io", "localmodels", "watch"),
    ("localmodel.io", "localmodels", "patch"),
    ("localmodel.io", "localmodels/status", "patch"),
    ("", "events", "create"),
}
#: `localmodel operator` flags (controller/commands/operator.py).
OPERATOR_FLAGS = {"--mode", "--engine", "--node-name", "--health-addr", "--namespace", "--drift-interval"}


def load_docs(*paths: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def resource_docs(folder: Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists (recursing into bases), without applying its patches."""
    docs: list[dict[str, Any]] = []
    for entry in kustomization(folder).get("resources", []):
        target = (folder / entry).resolve()
        docs += resource_docs(target) if target.is_dir() else load_docs(target)
    return docs


def of_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


# --------------------------------------------------------------------------------------------
# Invariants, applied to raw and (where a renderer exists) rendered manifests


def check_rbac(docs: list[dict[str, Any]], *, nodes: bool) -> None:
    roles = of_kind(docs, "ClusterRole") + of_kind(docs, "Role")
    assert roles, "no RBAC role found"
    granted: set[tuple[str, str, str]] = set()
    for role in roles:
        for rule in role["rules"]:
            assert "resourceNames" not in rule or rule["resourceNames"]
            if "configmaps" in rule["resources"]:
                assert role["kind"] == "Role", rule
                assert rule["resourceNames"] == ["localmodel-cleanups"], rule
            if "leases" in rule["resources"]:
                assert role["kind"] == "Role", f"Leases only in the operator's namespace, not cluster-wide: {rule}"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"wildcard in {role['metadata']['name']}: {rule}"
                        assert verb in ALLOWED.get((group, resource), set()), f"{verb} {group}/{resource} is not needed"
                        granted.add((group, resource, verb))
    assert granted >= REQUIRED
    assert (("", "nodes", "get") in granted) == nodes
    assert {("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update")} <= granted
    assert (("coordination.k8s.io", "leases", "list") in granted) == nodes, "only agents list each other's Leases"
    names = {r["metadata"]["name"] for r in roles}
    service_accounts = {sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")}
    for binding in of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] != "cluster-admin"
        assert binding["roleRef"]["name"] in names
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert subject["name"] in service_accounts


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def check_workload(workload: dict[str, Any], *, mode: str) -> None:
    spec = pod_spec(workload)
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == UID
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork")
    assert not spec.get("hostPID")
    [container] = spec["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not sc.get("privileged")
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]

    args = container["args"]
    assert args[0] == "operator"
    flags = [a for a in args[1:] if a.startswith("--")]
    assert {_flag_name(f) for f in flags} <= OPERATOR_FLAGS
    assert f"--mode={mode}" in args
    assert "--health-addr=:8080" in args
    env = {e["name"]: e for e in container.get("env", [])}
    for reference in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert reference in env, f"$({reference}) in args is not a declared env var"
    if mode == "node-agent":
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
        assert "--engine=http://$(NODE_IP):12434" in args
        assert "--node-name=$(NODE_NAME)" in args
    else:
        assert "LOCALMODEL_ENGINES" in env or any(_flag_name(a) == "--engine" for a in args)

    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == 8080
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"


def check_central(docs: list[dict[str, Any]]) -> None:
    [deployment] = of_kind(docs, "Deployment")
    assert not of_kind(docs, "DaemonSet")
    # Two replicas, one leader (a Lease): a rolling update starts the new standby before the old leader stops.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert "--no-leader-election" not in pod_spec(deployment)["containers"][0]["args"]
    anti = pod_spec(deployment)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    check_workload(deployment, mode="central")
    check_rbac(docs, nodes=False)


def check_node_agent(docs: list[dict[str, Any]]) -> None:
    [daemonset] = of_kind(docs, "DaemonSet")
    assert not of_kind(docs, "Deployment")
    check_workload(daemonset, mode="node-agent")
    rolling = daemonset["spec"]["updateStrategy"]["rollingUpdate"]
    assert rolling.get("maxSurge", 0) == 0, "two agents on one node must never overlap"
    tolerated = {t["key"] for t in pod_spec(daemonset)["tolerations"]}
    assert {"nvidia.com/gpu", "amd.com/gpu"} <= tolerated
    check_rbac(docs, nodes=True)


# --------------------------------------------------------------------------------------------
# Kustomize, as written


@pytest.mark.parametrize("folder", [BASE, NODE_AGENT, ROOT / "crds"], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_kustomization_resources_exist(folder: Path) -> None:
    for entry in kustomization(folder).get("resources", []):
        target = (folder / entry).resolve()
        assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{folder}: {entry} does not exist"


def test_base_is_central_mode() -> None:
    docs = resource_docs(BASE)
    check_central(docs)
    [namespace] = of_kind(docs, "Namespace")
    assert kustomization(BASE)["namespace"] == namespace["metadata"]["name"] == "localmodel-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    [binding] = of_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "localmodel-system"


def test_base_engine_list_comes_from_the_generated_configmap() -> None:
    [generator] = kustomization(BASE)["configMapGenerator"]
    literals = dict(item.split("=", 1) for item in generator["literals"])
    [deployment] = of_kind(resource_docs(BASE), "Deployment")
    [container] = pod_spec(deployment)["containers"]
    ref = {e["name"]: e for e in container["env"]}["LOCALMODEL_ENGINES"]["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == generator["name"]
    assert ref["key"] in literals
    assert all(re.match(r"^https?://[^\s,]+$", url) for url in literals[ref["key"]].split(","))


def test_base_includes_the_crds() -> None:
    crds = of_kind(resource_docs(BASE), "CustomResourceDefinition")
    assert sorted(crd["metadata"]["name"] for crd in crds) == [
        "localmodelnodes.localmodel.io",
        "localmodels.localmodel.io",
    ]


def _apply_overlay(folder: Path) -> list[dict[str, Any]]:
    """The overlay's objects with its delete and JSON6902 patches applied: just enough of
    kustomize to check that every patch targets a real object."""
    docs = resource_docs(folder)
    for entry in kustomization(folder).get("patches", []):
        patch = yaml.safe_load(entry["patch"])
        if isinstance(patch, dict) and patch.get("$patch") == "delete":
            match = [
                d for d in docs if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
            ]
            generated = [g["name"] for g in kustomization(BASE).get("configMapGenerator", [])]
            if patch["kind"] == "ConfigMap" and patch["metadata"]["name"] in generated:
                continue  # a generated ConfigMap: not among the resource files
            assert match, f"patch deletes {patch['kind']}/{patch['metadata']['name']}, which the base lacks"
            docs = [d for d in docs if d not in match]
            continue
        target = entry["target"]
        [doc] = [d for d in docs if (d["kind"], d["metadata"]["name"]) == (target["kind"], target["name"])]
        for op in patch:
            assert op["op"] == "add"
            assert op["path"] == "/rules/-"
            doc["rules"].append(op["value"])
    return docs


def test_node_agent_overlay_replaces_the_deployment() -> None:
    check_node_agent(_apply_overlay(NODE_AGENT))
    # A base's namespace does not reach the overlay's own resources (the DaemonSet).
    assert kustomization(NODE_AGENT)["namespace"] == kustomization(BASE)["namespace"]


def test_overlay_deletes_only_what_the_base_generates_or_declares() -> None:
    generated = {g["name"] for g in kustomization(BASE)["configMapGenerator"]}
    for entry in kustomization(NODE_AGENT)["patches"]:
        patch = yaml.safe_load(entry["patch"])
        if isinstance(patch, dict) and patch.get("$patch") == "delete" and patch["kind"] == "ConfigMap":
            assert patch["metadata"]["name"] in generated


def test_every_kustomization_sets_the_same_image() -> None:
    images = [kustomization(f)["images"] for f in (BASE, NODE_AGENT)]
    assert images[0] == images[1]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert images[0] == [{"name": "localmodel", "newTag": chart["appVersion"]}]


# --------------------------------------------------------------------------------------------
# Rendered by the real tools, when they are installed


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize_command() is None, reason="needs kustomize or kubectl on PATH")
@pytest.mark.parametrize(
    ("folder", "check"), [(BASE, check_central), (NODE_AGENT, check_node_agent)], ids=["base", "node-agent"]
)
def test_kustomize_build(folder: Path, check: Any) -> None:
    command = _kustomize_command()
    assert command is not None
    out = subprocess.run([*command, str(folder)], check=True, capture_output=True, text=True, timeout=60).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    check(docs)
    assert all(
        d["metadata"].get("namespace") == "localmodel-system"
        for d in docs
        if d["kind"] in ("ServiceAccount", "Deployment", "DaemonSet", "ConfigMap")
    )


@pytest.mark.peers
@pytest.mark.parametrize("mode", ["central", "node-agent"])
def test_helm_lint(peer_binaries: PeerBinaries, mode: str) -> None:
    lint = helm(peer_binaries, "lint", "--strict", str(CHART), "--set", f"mode={mode}")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout


@pytest.mark.peers
@pytest.mark.parametrize(("mode", "check"), [("central", check_central), ("node-agent", check_node_agent)])
def test_helm_template(peer_binaries: PeerBinaries, mode: str, check: Any) -> None:
    rendered = helm(
        peer_binaries, "template", "lm", str(CHART), "--namespace", "localmodel-system", "--set", f"mode={mode}"
    )
    assert rendered.returncode == 0, rendered.stderr
    out = rendered.stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    check(docs)
    if mode == "central":
        [cm] = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] != "localmodel-cleanups"]
        assert cm["data"]["LOCALMODEL_ENGINES"] == ",".join(
            yaml.safe_load((CHART / "values.yaml").read_text())["engines"]
        )


# --------------------------------------------------------------------------------------------
# Helm chart, as written


def test_chart_values_validate_against_the_values_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    assert values["podSecurityContext"]["runAsUser"] == UID
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    assert values["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate({**values, "mode": "centralised"})


def test_chart_rbac_template_grants_what_kustomize_grants() -> None:
    """The chart's rules, read from the template text, equal the Kustomize ones (plus nodes)."""
    template = (CHART / "templates" / "rbac.yaml").read_text()
    rules = re.findall(r"- apiGroups: \[(.*?)\]\n\s+resources: \[(.*?)\]\n\s+verbs: \[(.*?)\]", template)
    chart = {(g.strip('"'), r, v) for g, r, v in rules}
    [role] = of_kind(_apply_overlay(NODE_AGENT), "ClusterRole")
    kustomize = {(r["apiGroups"][0], r["resources"][0], ", ".join(r["verbs"])) for r in role["rules"]}
    assert chart == kustomize


def test_chart_versions_match_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "(.+)"$', pyproject, re.M)
    assert version
    assert chart["appVersion"] == version.group(1)


# --------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(instruction, arguments) per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        assert stages, "instructions before the first FROM"
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def test_dockerfile_bases_are_pinned() -> None:
    for stage in dockerfile_stages():
        image = stage[0][1].split()[0]
        assert re.match(r"^[\w.\-/]+:[\w.\-]+(@sha256:[0-9a-f]{64})?$", image), f"{image}: pin a tag (and digest)"
        assert not image.split("@")[0].endswith(":latest")


def test_dockerfile_runtime_stage() -> None:
    runtime = dockerfile_stages()[-1]
    instructions = dict(runtime)
    assert instructions["USER"] == f"{UID}:{UID}", "numeric non-root user, matching the manifests' runAsUser"
    assert json.loads(instructions["ENTRYPOINT"]) == ["localmodel"]
    assert json.loads(instructions["CMD"]) == ["operator"]
    # Nothing is built or installed in the final image: it only receives the finished venv.
    assert {i for i, _ in runtime} <= {"FROM", "LABEL", "COPY", "ENV", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}
    assert all(args.startswith("--from=") for i, args in runtime if i == "COPY")


def test_dockerfile_builds_a_wheel_without_dependencies() -> None:
    build = dockerfile_stages()[0]
    assert any(i == "RUN" and "pip wheel" in a and "--no-deps" in a for i, a in build)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_dockerfile_copies_files_that_exist_and_are_sent() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in dockerfile_stages():
        for instruction, args in stage:
            if instruction != "COPY" or args.startswith("--from="):
                continue
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                assert not _dockerignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for path in ("tests", ".venv", ".git", "deploy", "controller/__pycache__"):
        assert _dockerignored(path, patterns), f"{path} should not be sent to the image build"
