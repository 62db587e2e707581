"""deploy/argocd/health.lua, run as Argo CD runs it, against the cases in Argo's own layout.

Argo CD runs health scripts in gopher-lua with the object as the global `obj` and only the package,
base and table libraries open; tests/peers/argocd-lua does the same with the same VM (the tests that
run it are marked `peers`). The expected results live in deploy/argocd/health_test.yaml, the file
Argo CD's own test harness reads, so the cases can be upstreamed as they are. Live objects at every
stage go through the same program in tests/e2e/test_gitops.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gitops import argocd_health
from tests.support.peers import PeerBinaries

ARGOCD = Path(__file__).resolve().parents[2] / "deploy" / "argocd"
SCRIPT = (ARGOCD / "health.lua").read_text()
CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def run_health(binaries: PeerBinaries, obj: dict[str, Any]) -> dict[str, str]:
    result = argocd_health(binaries, obj)[0]
    assert "error" not in result, result
    return {key: result[key] for key in ("status", "message") if result.get(key)}


@pytest.mark.peers
@pytest.mark.parametrize("case", CASES, ids=lambda c: Path(c["inputPath"]).stem)
def test_health(peer_binaries: PeerBinaries, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert run_health(peer_binaries, obj) == case["healthStatus"]


def test_every_testdata_file_is_a_case() -> None:
    listed = {Path(c["inputPath"]).name for c in CASES}
    assert listed == {p.name for p in (ARGOCD / "testdata").glob("*.yaml")}


def test_cases_cover_every_outcome() -> None:
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded"}
    assert all(c["healthStatus"]["status"] in STATUSES for c in CASES)


def test_argocd_cm_snippet_embeds_the_script_verbatim() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"]["resource.customizations.health.localmodel.io_LocalModel"] == SCRIPT


@pytest.mark.peers
def test_a_spec_change_hides_a_previous_ready(peer_binaries: PeerBinaries) -> None:
    """Ready from generation 1 must not make generation 2 Healthy before the controller looks."""
    obj = yaml.safe_load((ARGOCD / "testdata" / "ready.yaml").read_text())
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    assert run_health(peer_binaries, obj)["status"] == "Progressing"
