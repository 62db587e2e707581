"""Property tests for issue 10: hostile YAML never crashes the loader, and no sequence of file-system
events removes a LocalModel while its file holds it in final form (virtual time, real files).

Permission errors are injected (os.stat/lstat/scandir/open raise EACCES for chosen paths) because
the tests run as root, which ignores permission bits.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.documents import MAX_ALIAS_NODES, load_text
from controller.standalone.files import ModelFiles
from tests.support.denials import Denials

GRACE = 30.0

# ---- hostile YAML -------------------------------------------------------------------------------

YAML_ALPHABET = st.sampled_from(
    list("abc019:-_&*![]{},'\"#|>?%@` \n\t.x") + ["\x00", "\x01", "\ufeff", "<<", "---", "...", "0x", "&a ", "*a"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(YAML_ALPHABET, max_size=200).map("".join))
def test_any_text_is_a_result_never_an_exception(text: str) -> None:
    result = load_text(text, "x.yaml")
    for error in result.errors:
        assert error.file == "x.yaml"
        assert error.message


@st.composite
def alias_documents(draw: st.DrawFn) -> tuple[str, int]:
    """A document of anchors, each a list of aliases of earlier anchors (a random alias DAG), and the
    number of values it stands for once expanded."""
    levels = draw(st.integers(1, 8))
    lines = ["a0: &a0 [x, y]"]
    sizes = [3]
    for i in range(1, levels + 1):
        refs = draw(st.lists(st.just(i - 1) | st.integers(0, i - 1), min_size=1, max_size=12))  # deep chains: bombs
        lines.append(f"a{i}: &a{i} [{', '.join(f'*a{r}' for r in refs)}]")
        sizes.append(1 + sum(sizes[r] for r in refs))
    return "\n".join(lines) + "\n", sum(sizes)


@settings(max_examples=200, deadline=None)
@given(alias_documents())
def test_aliases_are_refused_exactly_when_they_expand_past_the_budget(case: tuple[str, int]) -> None:
    text, expanded = case
    result = load_text(text)
    if result.errors:
        assert "YAML aliases expand to more than" in result.errors[0].message
        assert expanded > MAX_ALIAS_NODES
    else:
        assert expanded <= 2 * MAX_ALIAS_NODES  # what is read stays within the budget (plus the text's own nodes)


NUMBER_FORMS: list[Callable[[int], str]] = [
    lambda n: hex(n),
    lambda n: f"{n:_}",
    lambda n: "0" + oct(n)[2:],
    lambda n: bin(n),
    lambda n: f"{n // 3600}:{n // 60 % 60:02d}:{n % 60:02d}",
]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**7), st.sampled_from(NUMBER_FORMS))
def test_a_number_is_read_as_written_in_decimal_or_refused_with_its_decimal(n: int, form: Callable[[int], str]) -> None:
    written = form(n)
    text = doc("a") + f"  contextSize: {written}\n"
    result = load_text(text)
    if written.isdigit() and not written.startswith("0"):  # a plain decimal after all (e.g. 8:... never)
        assert [m.spec.context_size for m in result.models] == [n]
        return
    if result.models:  # YAML itself took it as text (e.g. 0:00:05 is not a base-60 number): never as a number
        raise AssertionError(f"{written!r} was read as {result.models[0].spec.context_size}")
    assert result.errors
    message = result.errors[0].message
    if "quote it" in message:
        assert f"write {n}" in message or "write the number out" in message


# ---- file-system event sequences ------------------------------------------------------------------


def doc(name: str) -> str:
    return (
        f"apiVersion: localmodel.io/v1alpha1\nkind: LocalModel\nmetadata: {{name: {name}}}\nspec:\n  model: ai/{name}\n"
    )


FINAL = {
    "a.yaml": doc("m1") + "---\n" + doc("m2"),
    "sub/b.yaml": doc("m3"),
    "sub/deep/c.yml": doc("m4"),
}
DECLARES = {"a.yaml": {"m1", "m2"}, "sub/b.yaml": {"m3"}, "sub/deep/c.yml": {"m4"}}
PATHS = ["", "sub", "sub/deep", *FINAL]

operations = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(list(FINAL))),
    st.tuples(st.just("write_part"), st.sampled_from(list(FINAL)), st.floats(0, 1)),
    st.tuples(st.just("truncate"), st.sampled_from(list(FINAL))),
    st.tuples(st.just("rm"), st.sampled_from(list(FINAL))),
    st.tuples(st.just("rename_away"), st.sampled_from(list(FINAL))),
    st.tuples(st.just("rename_back"), st.sampled_from(list(FINAL))),
    st.tuples(st.just("rmtree"), st.sampled_from(["", "sub"])),
    st.tuples(st.just("deny"), st.sampled_from(PATHS)),
    st.tuples(st.just("allow"), st.sampled_from(PATHS)),
    st.tuples(st.just("advance"), st.floats(0, GRACE * 0.7)),
)


class World:
    """The directory on disk, a shadow of what each watched path holds, and the virtual clock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = 0.0
        self.denials = Denials()
        self.last_final: dict[str, float] = {}  # model -> last time its final form was on disk
        for rel, text in FINAL.items():
            self.put(rel, text)
        self.files = ModelFiles(root, grace=GRACE)

    def put(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def final_models(self) -> set[str]:
        """Models whose file holds its final text right now, at its own watched path."""
        found: set[str] = set()
        for rel, text in FINAL.items():
            path = self.root / rel
            try:
                if path.is_file() and path.read_text() == text:
                    found |= DECLARES[rel]
            except OSError:
                pass
        return found

    def apply(self, op: tuple[Any, ...]) -> None:
        kind, target = op[0], op[1]
        if kind == "write":
            self.put(target, FINAL[target])
        elif kind == "write_part":
            text = FINAL[target]
            self.put(target, text[: int(len(text) * op[2])])
        elif kind == "truncate":
            self.put(target, "")
        elif kind == "rm":
            (self.root / target).unlink(missing_ok=True)
        elif kind == "rename_away":
            if (self.root / target).exists():
                (self.root / target).rename(self.root / (target + ".tmp"))
        elif kind == "rename_back":
            if (self.root / (target + ".tmp")).exists():
                (self.root / (target + ".tmp")).rename(self.root / target)
        elif kind == "rmtree":
            shutil.rmtree(self.root / target, ignore_errors=True)
            if target == "":
                self.root.mkdir()
        elif kind == "deny":
            self.denials.paths.add(self.root / target)
        elif kind == "allow":
            self.denials.paths.discard(self.root / target)
        elif kind == "advance":
            self.now += target

    def note_final(self) -> None:
        with_real_os = self.final_models()
        for model in with_real_os:
            self.last_final[model] = self.now


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=25))
def test_no_model_is_removed_while_its_file_holds_it_or_before_the_grace_period(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp) / "models")
        world.files.refresh(world.now)
        assert set(world.files.desired) == {"m1", "m2", "m3", "m4"}
        world.note_final()
        for op in ops:
            world.apply(op)  # done by the user, who has the permissions the daemon lacks
            world.note_final()  # bookkeeping reads the real disk, without the injected errors
            before = set(world.files.desired)
            with world.denials.installed():
                world.files.refresh(world.now)
            after = set(world.files.desired)
            final = world.final_models()
            for model in before - after:
                assert model not in final, f"{model} removed while its file holds it ({op})"
                assert world.now - world.last_final.get(model, 0.0) >= GRACE, f"{model} removed within the grace ({op})"
        # Liveness: once every file is back in final form and readable, everything is declared, and
        # a file removed for good is removed once the grace period is over.
        world.denials.paths.clear()
        for rel, text in FINAL.items():
            world.put(rel, text)
        world.files.refresh(world.now)
        assert set(world.files.desired) >= {"m1", "m2", "m3", "m4"}
        (world.root / "sub" / "b.yaml").unlink()
        world.files.refresh(world.now + 1)
        assert "m3" in world.files.desired
        world.files.refresh(world.now + 1 + GRACE)
        world.files.refresh(world.now + 2 + 2 * GRACE)
        assert "m3" not in world.files.desired
        assert {"m1", "m2", "m4"} <= set(world.files.desired)
