"""ModelFiles: how a directory of LocalModel files becomes one set by name, safely (virtual time)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from controller.standalone.files import ModelFiles, is_watched, yaml_files
from tests.support.util import localmodel_yaml

SETTLE = 0.5


def doc(name: str, model: str = "ai/smollm2", context: int = 4096, **extra: str) -> str:
    return localmodel_yaml(name, model, **{"contextSize": context, **extra})


def write(path: Path, *docs: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(docs))
    return path


def contexts(files: ModelFiles) -> dict[str, int | None]:
    return {name: item.model.spec.context_size for name, item in files.desired.items()}


@pytest.fixture
def files(tmp_path: Path) -> ModelFiles:
    return ModelFiles(tmp_path, grace=SETTLE)


def test_the_first_scan_reads_every_yaml_file_below_the_directory(tmp_path: Path, files: ModelFiles) -> None:
    write(tmp_path / "a.yaml", doc("a"), doc("b", model="ai/qwen3"))
    write(tmp_path / "sub" / "c.yml", doc("c", model="ai/llama3.2"))
    assert files.refresh(0.0)
    assert contexts(files) == {"a": 4096, "b": 4096, "c": 4096}
    assert str(files.source_of("c")) == f"{tmp_path / 'sub' / 'c.yml'}:1"
    assert not files.refresh(1.0)  # nothing changed on disk


@pytest.mark.parametrize(
    ("name", "watched"),
    [
        ("a.yaml", True),
        ("sub/a.yml", True),
        (".a.yaml.swp", False),
        ("a.yaml~", False),
        (".#a.yaml", False),
        ("#a.yaml#", False),
        ("4913", False),
        ("a.json", False),
        (".git/x.yaml", False),
        ("a.yaml.tmp", False),
    ],
)
def test_editor_leftovers_and_hidden_directories_are_not_watched(tmp_path: Path, name: str, watched: bool) -> None:
    assert is_watched(tmp_path / name, tmp_path) is watched


def test_an_edit_is_applied_at_once(tmp_path: Path, files: ModelFiles) -> None:
    path = write(tmp_path / "a.yaml", doc("a"))
    files.refresh(0.0)
    write(path, doc("a", context=8192))
    assert files.refresh(0.1, hinted=[path])
    assert contexts(files) == {"a": 8192}


def test_renaming_a_file_is_not_a_delete(tmp_path: Path, files: ModelFiles) -> None:
    write(tmp_path / "a.yaml", doc("a"))
    files.refresh(0.0)
    (tmp_path / "a.yaml").rename(tmp_path / "b.yaml")
    files.refresh(0.1)
    assert contexts(files) == {"a": 4096}
    assert files.errors == []  # the old file only still holds the name: no duplicate reported
    assert str(files.source_of("a")).startswith(str(tmp_path / "b.yaml"))
    files.refresh(0.1 + SETTLE)
    assert contexts(files) == {"a": 4096}
    assert files.next_due() is None


def test_moving_a_model_between_files_in_two_steps_never_drops_it(tmp_path: Path, files: ModelFiles) -> None:
    write(tmp_path / "a.yaml", doc("a"), doc("b", model="ai/qwen3"))
    files.refresh(0.0)
    write(tmp_path / "z.yaml", doc("b", model="ai/qwen3"))  # added to the new file first
    files.refresh(0.1)
    assert set(files.desired) == {"a", "b"}
    assert str(files.source_of("b")).startswith(str(tmp_path / "a.yaml"))  # the incumbent keeps it meanwhile
    [duplicate] = files.errors
    assert duplicate.file == str(tmp_path / "z.yaml")
    assert duplicate.line == 1
    assert "a.yaml:8" in duplicate.message
    write(tmp_path / "a.yaml", doc("a"))  # then removed from the old one
    files.refresh(0.2)
    assert set(files.desired) == {"a", "b"}
    assert files.errors == []
    assert str(files.source_of("b")).startswith(str(tmp_path / "z.yaml"))


def test_a_deleted_file_is_believed_only_after_the_settle_time(tmp_path: Path, files: ModelFiles) -> None:
    path = write(tmp_path / "a.yaml", doc("a"))
    write(tmp_path / "b.yaml", doc("b", model="ai/qwen3"))
    files.refresh(0.0)
    path.unlink()
    files.refresh(1.0)
    assert set(files.desired) == {"a", "b"}
    assert files.next_due() == pytest.approx(1.0 + SETTLE)
    files.refresh(1.0 + SETTLE / 2)
    assert set(files.desired) == {"a", "b"}
    files.refresh(1.0 + SETTLE)
    assert set(files.desired) == {"b"}
    assert files.next_due() is None


def test_a_file_emptied_and_rewritten_within_the_settle_time_loses_nothing(tmp_path: Path, files: ModelFiles) -> None:
    path = write(tmp_path / "a.yaml", doc("a"), doc("b", model="ai/qwen3"))
    files.refresh(0.0)
    path.write_text("")  # an editor truncating before it writes
    files.refresh(1.0)
    assert set(files.desired) == {"a", "b"}
    write(path, doc("a", context=8192), doc("b", model="ai/qwen3"))
    files.refresh(1.2)
    assert contexts(files) == {"a": 8192, "b": 4096}
    assert files.next_due() is None
    files.refresh(5.0)
    assert set(files.desired) == {"a", "b"}


def test_a_yaml_error_keeps_the_last_good_version_and_reports_file_and_line(tmp_path: Path, files: ModelFiles) -> None:
    path = write(tmp_path / "a.yaml", doc("a"))
    write(tmp_path / "b.yaml", doc("b", model="ai/qwen3"))
    files.refresh(0.0)
    path.write_text(doc("a", context=8192) + "  runtimeFlags: [--threads\n")
    files.refresh(1.0)
    files.refresh(10.0)  # no settle makes a broken file lose anything
    assert contexts(files) == {"a": 4096, "b": 4096}
    [error] = files.errors
    assert error.file == str(path)
    assert error.line == 8
    assert "YAML syntax error" in error.message
    [report] = [f for f in files.report() if f["path"] == str(path)]
    assert report["models"] == ["a"]
    assert report["errors"][0]["line"] == 8


def test_an_invalid_document_keeps_its_last_good_version_while_the_valid_ones_apply(
    tmp_path: Path, files: ModelFiles
) -> None:
    path = write(tmp_path / "a.yaml", doc("a"), doc("b", model="ai/qwen3"))
    files.refresh(0.0)
    write(path, doc("a", context=8192), doc("b", model="ai/qwen3", keepAlive="soon"))
    files.refresh(1.0)
    assert contexts(files) == {"a": 8192, "b": 4096}
    [error] = files.errors
    assert (error.file, error.line, error.object, error.path) == (str(path), 14, "b", "spec.keepAlive")


def test_a_new_broken_file_contributes_its_valid_models(tmp_path: Path, files: ModelFiles) -> None:
    write(tmp_path / "a.yaml", doc("a"), doc("b", model="ai/qwen3", contextSize="big"))
    files.refresh(0.0)
    assert set(files.desired) == {"a"}
    assert len(files.errors) >= 1


def test_duplicate_names_across_files_keep_the_first_and_report_the_other(tmp_path: Path, files: ModelFiles) -> None:
    write(tmp_path / "a.yaml", doc("same"))
    write(tmp_path / "b.yaml", doc("other", model="ai/qwen3"), doc("same", context=8192))
    files.refresh(0.0)
    assert contexts(files) == {"same": 4096, "other": 4096}
    [error] = files.errors
    assert (error.file, error.line, error.object) == (str(tmp_path / "b.yaml"), 8, "same")
    assert "rename one of them" in error.message


def test_the_incumbent_keeps_a_name_that_an_earlier_file_starts_declaring(tmp_path: Path, files: ModelFiles) -> None:
    write(tmp_path / "m.yaml", doc("same"))
    files.refresh(0.0)
    write(tmp_path / "a.yaml", doc("same", context=8192))  # sorts first, but came later
    files.refresh(1.0)
    assert contexts(files) == {"same": 4096}
    assert [e.file for e in files.errors] == [str(tmp_path / "a.yaml")]


def test_yaml_files_skips_hidden_directories(tmp_path: Path) -> None:
    write(tmp_path / ".git" / "x.yaml", doc("x"))
    write(tmp_path / "ok.yaml", doc("ok"))
    assert yaml_files(tmp_path) == [tmp_path / "ok.yaml"]


def test_a_missing_root_directory_is_an_error_that_removes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write(root / "a.yaml", doc("a"))
    write(root / "sub" / "b.yaml", doc("b", model="ai/qwen3"))
    files = ModelFiles(root, grace=SETTLE)
    files.refresh(0.0)
    shutil.rmtree(root)  # unmounted, or removed for a re-clone
    assert files.refresh(1.0)  # the error is news
    for now in (1.0 + SETTLE, 10.0, 100.0):
        files.refresh(now, hinted=[root / "a.yaml"])
        assert contexts(files) == {"a": 4096, "b": 4096}
    [error] = files.errors
    assert error.file == str(root)
    assert "cannot read the directory" in error.message
    assert [f["path"] for f in files.report()][0] == str(root)
    write(root / "a.yaml", doc("a"))  # back (the re-clone): b is gone for real now, after the settle time
    write(root / "sub" / "c.yaml", doc("c", model="ai/llama3.2"))
    files.refresh(101.0)
    assert files.errors == []
    assert set(files.desired) == {"a", "b", "c"}
    files.refresh(101.0 + SETTLE)
    assert set(files.desired) == {"a", "c"}


def test_an_unreadable_subdirectory_keeps_its_models(
    tmp_path: Path, files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "a.yaml", doc("a"))
    write(tmp_path / "sub" / "b.yaml", doc("b", model="ai/qwen3"))
    files.refresh(0.0)
    real_scandir = os.scandir

    def scandir(path: object) -> object:
        if Path(str(path)) == tmp_path / "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    assert files.refresh(1.0)
    files.refresh(1.0 + SETTLE)
    assert set(files.desired) == {"a", "b"}
    [error] = files.errors
    assert error.file == str(tmp_path / "sub")
    assert "Permission denied" in error.message
    monkeypatch.undo()
    assert files.refresh(5.0)
    assert files.errors == []
    assert set(files.desired) == {"a", "b"}
