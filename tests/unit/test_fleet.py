"""controller/fleet.py: the fleet logic the daemon and the operator share (pure, virtual time)."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pytest

from controller import fleet
from controller.backoff import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, Retries, backoff_delay
from controller.fleet import Claims, Event, Readiness, RepairCauses, conflict_status, event_level
from controller.spec import LocalModelSpec, validate_spec
from controller.status import Phase, Reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_drift_repaired_event_says_what_the_watch_noticed_and_how_long_the_config_was_gone() -> None:
    clock = Clock()
    causes = RepairCauses[str](clock)
    causes.noticed("m", "the engine restarted", at=100.0)
    clock.now = 102.25
    message = causes.explain("m", Reason.DRIFT_REPAIRED.value, "re-applied the config of ai/smollm2")
    assert message == "the engine restarted; config back after 2.2 s (re-applied the config of ai/smollm2)"
    assert "m" not in causes  # said once


def test_other_events_and_other_keys_leave_the_message_and_the_cause_alone() -> None:
    causes = RepairCauses[tuple[str, str]](Clock())
    causes.noticed(("gpu", "ns/m"), "overwritten by another client", at=100.0)
    assert causes.explain(("gpu", "ns/m"), "Preloaded", "loaded") == "loaded"
    assert causes.explain(("cpu", "ns/m"), Reason.DRIFT_REPAIRED.value, "re-applied") == "re-applied"
    assert ("gpu", "ns/m") in causes


def test_a_forgotten_cause_is_not_told() -> None:
    causes = RepairCauses[str](Clock())
    causes.noticed("m", "unloaded", at=100.0)
    causes.forget("m")
    causes.forget("never noticed")
    assert causes.explain("m", Reason.DRIFT_REPAIRED.value, "re-applied") == "re-applied"


@pytest.mark.parametrize(("kind", "level"), [("Warning", logging.WARNING), ("Normal", logging.INFO)])
def test_event_level(kind: str, level: int) -> None:
    assert event_level(kind) == level


def test_readiness_counts_ready_models_and_says_when_one_becomes_ready() -> None:
    ready = Readiness[str]()
    assert ready.update("a", True) is True  # became Ready: the daemon logs "Ready" once
    assert ready.update("a", True) is False  # still Ready: no second line
    assert ready.update("b", False) is False
    assert len(ready) == 1
    assert ready.update("a", False) is False
    assert len(ready) == 0
    assert ready.update("a", True) is True  # Ready again after a failure: said again
    ready.forget("a")
    ready.forget("never seen")
    assert len(ready) == 0


def spec(model: str = "ai/smollm2", **fields: object) -> LocalModelSpec:
    return validate_spec({"model": model, **fields}, "test")


def test_the_first_claim_owns_a_model_and_mode_when_no_rank_is_given() -> None:
    claims = Claims()
    claims.claim("zeta", spec())
    claims.claim("alpha", spec())  # declared later, though its name sorts first
    claims.claim("embed", spec(mode="embedding"))
    assert claims.ordered() == ["zeta", "alpha", "embed"]
    assert list(claims.conflicts()) == ["alpha"]
    assert "zeta already declares model ai/smollm2 in mode completion" in claims.conflicts()["alpha"]
    claims.claim("zeta", spec())  # claimed again on the next pass: keeps its place
    assert list(claims.conflicts()) == ["alpha"]
    claims.release("zeta")
    assert claims.conflicts() == {}
    claims.claim("zeta", spec())  # back after a release: now the newest claim
    assert list(claims.conflicts()) == ["zeta"]


def test_a_rank_orders_claims_then_the_key_breaks_ties() -> None:
    claims = Claims()
    claims.claim("ns/b", spec(), rank="2026-01-02T00:00:00Z")
    claims.claim("ns/c", spec(), rank="2026-01-01T00:00:00Z")
    claims.claim("ns/a", spec(), rank="2026-01-01T00:00:00Z")
    assert claims.ordered() == ["ns/a", "ns/c", "ns/b"]
    assert sorted(claims.conflicts()) == ["ns/b", "ns/c"]
    assert "ns/c" in claims
    claims.release("ns/a")
    assert "ns/a" not in claims
    assert sorted(claims.conflicts()) == ["ns/b"]


def test_conflicts_are_computed_once_per_change_of_the_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pass of every LocalModel claims and asks for the conflicts: 20 objects cost 20 x 20 mode
    lookups a round when each question recomputes; unchanged claims reuse the last answer."""
    computed = []
    real = fleet.find_conflicts
    monkeypatch.setattr(fleet, "find_conflicts", lambda specs: computed.append(len(specs)) or real(specs))
    claims = Claims()
    claims.claim("a", spec())
    claims.claim("b", spec())
    for _ in range(5):  # the next passes: the same claims
        claims.claim("a", spec())
        claims.claim("b", spec())
        assert list(claims.conflicts()) == ["b"]
    assert computed == [2]
    claims.claim("b", spec(mode="embedding"))  # b changes its mode: no conflict any more
    assert claims.conflicts() == {}
    claims.release("a")
    claims.claim("c", spec(mode="embedding"))
    assert list(claims.conflicts()) == ["c"]
    assert computed == [2, 2, 2]


def test_a_conflict_is_stalled_until_one_of_the_two_changes() -> None:
    status = conflict_status("local", "a already declares model ai/smollm2 in mode completion", 3)
    assert (status.phase, status.reason, status.stalled, status.ready) == (Phase.STALLED, Reason.CONFLICT, True, False)
    assert status.observed_generation == 3


@pytest.mark.parametrize("failures", range(0, 12))
@pytest.mark.parametrize("jitter", [0.0, 0.3, 0.999])
def test_jittered_retries_are_the_reconcile_backoff_until_given_up(failures: int, jitter: float) -> None:
    retries = Retries(BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, attempts=5, jittered=True)
    expected = None if failures >= 5 else backoff_delay(failures, jitter)
    assert retries.after(failures, jitter) == expected


@pytest.mark.parametrize(
    ("retries", "delays"),
    [
        (Retries(first=2.0, cap=30.0), [2.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),  # never given up
        (Retries(first=1.5, attempts=3), [1.5, 1.5, 3.0, None, None, None, None]),  # no cap, no jitter
    ],
)
def test_retries_double_up_to_the_cap(retries: Retries, delays: list[float | None]) -> None:
    assert [retries.after(failures, jitter=0.0) for failures in range(7)] == delays


def _event_names(tree: ast.AST) -> list[tuple[int, str]]:
    """The event names written as literals where an event is logged (log_event's second argument) or
    emitted (a reason given to _on_event, _post_event or _node_event)."""
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if called == "log_event" and len(node.args) >= 2:
            candidates = [node.args[1]]
        elif called in ("_on_event", "_post_event", "_node_event", "post_event"):
            candidates = list(node.args)
        else:
            continue
        literals = [a.value for a in candidates if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        names += [
            (node.lineno, name)
            for name in literals
            if name not in ("Normal", "Warning") and (called == "log_event" or re.fullmatch(r"[A-Z][A-Za-z]+", name))
        ]
    return names


def test_both_front_ends_name_their_events_from_one_vocabulary() -> None:
    """Every event name written in the sources is an Event or a condition Reason, so the daemon's log, the
    operator's log and the operator's Kubernetes Events say the same thing the same way (CamelCase)."""
    vocabulary = {e.value for e in Event} | {r.value for r in Reason}
    root = Path(__file__).resolve().parents[2] / "controller"
    strays = [
        f"{path.relative_to(root.parent)}:{line}: {name}"
        for path in sorted(root.rglob("*.py"))
        for line, name in _event_names(ast.parse(path.read_text()))
        if name not in vocabulary
    ]
    assert strays == []


def test_the_daemon_and_the_operator_share_the_names_of_the_same_happenings() -> None:
    assert Event.ENGINE_DOWN == "EngineDown"  # the operator's node Event and both front-ends' log lines
    assert Event.ENGINE_UP == "EngineUp"
    assert str(Event.DELETION_APPLIED) == "DeletionApplied"
    assert f"{Event.READY}" == "Ready"  # a StrEnum formats as its value: the text and JSON logs show the name
