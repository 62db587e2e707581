"""Schedule: which models a wake-up reconciles (pure, virtual time)."""

from __future__ import annotations

from controller.standalone.schedule import Schedule, Wake


def schedule(**due: float | None) -> Schedule:
    s = Schedule(interval=30.0, next_drift=30.0)
    for name, when in due.items():
        if when is None:
            s.on_drift(name)
        else:
            s.due_at(name, when)
    return s


def test_a_drift_pass_takes_every_waiting_model_at_once_and_moves_the_next_pass() -> None:
    s = schedule(a=None, b=None, c=None)
    assert s.take(29.9) == Wake((), False)
    assert s.take(30.0) == Wake(("a", "b", "c"), True)
    assert s.next_drift == 60.0
    assert s.take(30.1) == Wake((), False)  # taken models wait for their result


def test_explicit_due_times_come_before_the_drift_pass() -> None:
    s = schedule(changed=0.0, backoff=4.0, idle=None)
    assert s.next_wake() == 0.0
    assert s.take(0.0) == Wake(("changed",), False)
    assert s.next_wake() == 4.0
    assert s.take(4.0) == Wake(("backoff",), False)
    assert s.next_wake() == 30.0


def test_a_backoff_beyond_the_drift_pass_is_not_cut_short_by_it() -> None:
    s = schedule(backing_off=100.0, idle=None)
    assert s.take(30.0) == Wake(("idle",), True)
    assert s.when("backing_off") == 100.0
    assert s.take(59.0) == Wake((), False)
    assert s.take(100.0) == Wake(("backing_off", "idle"), True)


def test_busy_models_are_never_handed_out_twice_nor_wake_the_loop() -> None:
    s = schedule(busy=0.0, other=5.0)
    assert s.next_wake(busy={"busy"}) == 5.0
    assert s.take(10.0, busy={"busy"}).names == ("other",)
    assert s.when("busy") == 0.0  # still due: taken once its work finishes
    assert s.take(10.0).names == ("busy",)


def test_removed_models_are_not_taken() -> None:
    s = schedule(gone=0.0, kept=0.0)
    s.remove("gone")
    assert "gone" not in s
    assert s.take(0.0).names == ("kept",)


def test_a_wake_with_nothing_to_do_is_false() -> None:
    assert not Wake((), False)
    assert Wake((), True)
    assert Wake(("a",), False)
