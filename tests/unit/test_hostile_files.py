"""Hostile and unlucky files (issue 10, cases 1-7): what the loaders and the daemon's file model do.

Tests here run as root in CI containers, and root ignores permission bits: `chmod 644` on a
directory would not make it unsearchable. Permission errors are therefore injected by
monkeypatching `os.stat`, `os.lstat` and `os.scandir` for the paths concerned, which is what the
kernel answers a non-root daemon.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.documents import MAX_ALIAS_NODES, load_file, load_paths, load_text
from controller.inputs import ReadError, read_text
from controller.standalone.files import ModelFiles
from tests.support.denials import denied
from tests.support.util import localmodel_yaml


def doc(name: str, model: str = "ai/smollm2", context: object = 4096, **extra: object) -> str:
    return localmodel_yaml(name, model, **{"contextSize": context, **extra})


AGENT = """\
models:
  chat:
    provider: dmr
    model: ai/qwen3
    provider_opts:
      context_size: 8192
  coder:
    provider: dmr
    model: ai/smollm2
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---- YAML: cases 4 and 6, number forms, control characters -----------------------------------


def test_an_integer_of_4301_digits_is_a_file_error_not_a_crash() -> None:
    result = load_text(doc("a", context="1" * 4301), "big.yaml")
    [error] = result.errors
    assert (error.file, error.line) == ("big.yaml", 6)
    assert "an integer of 4301 digits is too large" in error.message
    assert result.models == []


def test_a_huge_integer_as_a_mapping_key_is_a_file_error() -> None:
    [error] = load_text("a:\n  ? " + "9" * 5000 + "\n  : x\n").errors
    assert "too large" in error.message


ALIAS_BOMB = (
    doc("bomb")
    + "  vllm:\n    hfOverrides:\n"
    + '      a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"      a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
)


def test_an_alias_bomb_under_hf_overrides_is_refused_before_it_is_built() -> None:
    assert len(ALIAS_BOMB.encode()) < 1024
    result = load_text(ALIAS_BOMB, "bomb.yaml")  # 9**9 strings once expanded
    [error] = result.errors
    assert f"YAML aliases expand to more than {MAX_ALIAS_NODES} values" in error.message
    assert error.line is not None
    assert error.line > 7
    assert result.models == []


def test_ordinary_anchors_and_merge_keys_still_work() -> None:
    text = "base: &base {model: ai/smollm2, contextSize: 4096}\n---\n" + "".join(
        f"---\napiVersion: localmodel.io/v1alpha1\nkind: LocalModel\nmetadata: {{name: m{i}}}\n"
        "spec:\n  <<: &spec {model: ai/smollm2, contextSize: 4096}\n  keepAlive: 5m\n"
        for i in range(50)
    )
    result = load_text(text)
    assert result.errors == []
    assert len(result.models) == 50


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "recursive YAML alias *a"),
        ("a: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels deep"),
        ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)), "nested more than 64 levels deep"),
    ],
)
def test_recursion_and_depth_are_file_errors(text: str, message: str) -> None:
    [error] = load_text(text, "x.yaml").errors
    assert message in error.message


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("2:16:32", "write 8192"),  # PyYAML: 8192 (base 60); Kubernetes and docker-agent: the text '2:16:32'
        ("0x2000", "write 8192"),
        ("8_192", "write 8192"),
        ("020000", "write 8192"),  # octal in YAML 1.1, 20000 in YAML 1.2
        ("0b10000000000000", "write 8192"),
        ("0x_", "write the number out in decimal"),  # an int to YAML 1.1 without a digit (found by hypothesis)
        ("0b_", "write the number out in decimal"),
        ("-0x_", "write the number out in decimal"),
    ],
)
def test_yaml_1_1_number_forms_are_refused_with_a_hint(written: str, hint: str) -> None:
    result = load_text(doc("a", context=written), "n.yaml")
    [error] = result.errors
    assert error.line == 6
    assert f"quote it ('{written}') if it is text, or {hint}" in error.message
    assert result.models == []


def test_decimal_numbers_are_read_as_they_are() -> None:
    result = load_text(doc("a", context=8192, keepAlive="'-1'") + "  vllm: {gpuMemoryUtilization: 0.9}\n")
    assert result.errors == []
    [model] = result.models
    assert model.spec.context_size == 8192


def test_a_control_character_error_has_its_line() -> None:
    [error] = load_text(doc("a") + "  keepAlive: 5m\x01\n", "c.yaml").errors
    assert error.line == 7
    assert "control character (#x0001)" in error.message


def test_a_negative_keep_alive_in_a_docker_agent_file_is_a_note_and_applied_as_never() -> None:
    text = AGENT.replace("      context_size: 8192\n", "      context_size: 8192\n      keep_alive: -5m\n")
    result = load_text(text, "agent.yaml")
    assert result.errors == []
    [note] = [n for n in result.notes if "keep_alive" in n]
    assert "agent.yaml:7: models.chat.provider_opts.keep_alive: -5m is negative" in note
    assert "write -1" in note
    assert {m.name: m.spec.keep_alive for m in result.models} == {"chat": "-1", "coder": None}


# ---- reading files: cases 5 and 7 -------------------------------------------------------------


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    [error] = load_file(fifo).errors
    assert "a FIFO (named pipe), not a regular file" in error.message


def test_a_link_to_dev_zero_is_refused(tmp_path: Path) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    [error] = load_file(tmp_path / "zero.yaml").errors
    assert "a character device, not a regular file" in error.message


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "big.yaml", doc("a") + "#" * 2000 + "\n")
    [error] = load_file(path, limit=1000).errors
    assert "too large" in error.message
    assert "--max-file-size" in error.message
    assert load_file(path).errors == []  # the default limit is 1 MiB


def test_a_file_that_grows_while_it_is_read_stops_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "a.yaml", "a: b\n")
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, n) or b"x" * n)  # never ends, like /dev/zero
    with pytest.raises(ReadError, match="grew while it was read"):
        read_text(path, limit=10_000)


def test_a_symlink_loop_is_a_file_error_in_every_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "ok.yaml", doc("ok"))
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    result = load_paths([tmp_path])
    [error] = result.errors
    assert (error.file, error.message) == (
        str(tmp_path / "loop.yaml"),
        "a symbolic link loop: fix the link or remove it",
    )
    assert [m.name for m in result.models] == ["ok"]
    unreachable = ["--engine", "http://127.0.0.1:1"]  # never contacted: the files are refused first
    for command in (["validate"], ["render"], ["plan", *unreachable], ["apply", *unreachable]):
        assert main([*command, str(tmp_path)]) == 1
        out, err = capsys.readouterr()
        assert "loop.yaml: a symbolic link loop" in out + err
        assert "Traceback" not in out + err


def test_validate_reports_an_unreadable_subdirectory_as_the_daemon_does(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", doc("a"))
    write(tmp_path / "sub" / "b.yaml", doc("b"))
    with denied(tmp_path / "sub", calls=("scandir",)):
        result = load_paths([tmp_path])
        files = ModelFiles(tmp_path)
        files.refresh(0.0)
    assert [m.name for m in result.models] == ["a"]
    [error] = result.errors
    assert error.file == str(tmp_path / "sub")
    assert "cannot read the directory (Permission denied)" in error.message
    assert [e.file for e in files.errors] == [error.file]


# ---- the daemon's file model: cases 1-3 ---------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    write(path / "a.yaml", doc("a"))
    write(path / "sub" / "b.yaml", doc("b", model="ai/qwen3"))
    return path


def test_a_subdirectory_readable_but_not_searchable_deletes_nothing(root: Path) -> None:
    files = ModelFiles(root)  # the default grace period
    files.refresh(0.0)
    # chmod 644 sub: its names can be listed, but nothing in it can be stat'ed or opened.
    with denied(root / "sub" / "b.yaml"):
        for now in (1.0, 60.0, 3600.0):
            files.refresh(now)
            assert set(files.desired) == {"a", "b"}
        [error] = files.errors
    assert error.file == str(root / "sub" / "b.yaml")
    assert "cannot read (Permission denied)" in error.message
    assert "nothing is deleted" in error.message
    files.refresh(3601.0)
    assert files.errors == []
    assert set(files.desired) == {"a", "b"}


def test_the_watched_directory_readable_but_not_searchable_deletes_nothing(root: Path) -> None:
    files = ModelFiles(root)
    files.refresh(0.0)
    with denied(root / "a.yaml", root / "sub"):  # chmod 644 on the watched directory
        for now in (1.0, 60.0, 3600.0):
            files.refresh(now)
            assert set(files.desired) == {"a", "b"}
        assert sorted(e.file or "" for e in files.errors) == [str(root / "a.yaml"), str(root / "sub")]
    files.refresh(3601.0)
    assert files.errors == []
    assert set(files.desired) == {"a", "b"}


def test_too_many_open_files_deletes_nothing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = ModelFiles(root)
    files.refresh(0.0)

    def emfile(*_: object, **__: object) -> object:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "scandir", emfile)
    monkeypatch.setattr(os, "open", emfile)
    for now in (1.0, 100.0):
        files.refresh(now, hinted=[root / "a.yaml"])
        assert set(files.desired) == {"a", "b"}
    assert "LimitNOFILE" in files.errors[0].message


def test_a_reclone_that_takes_3_seconds_deletes_nothing(root: Path) -> None:
    files = ModelFiles(root)  # the default grace period
    files.refresh(0.0)
    shutil.rmtree(root)  # rm -rf models && git clone ... models
    root.mkdir()
    steps = [
        (0.5, lambda: None),
        (1.5, lambda: None),
        (2.0, lambda: write(root / "a.yaml", doc("a"))),
        (3.0, lambda: None),
        (3.1, lambda: write(root / "sub" / "b.yaml", doc("b", model="ai/qwen3"))),  # the clone ends
        (1000.0, lambda: None),
    ]
    for now, step in steps:
        step()
        files.refresh(now)
        assert set(files.desired) == {"a", "b"}, now
    assert files.next_due() is None


@pytest.mark.parametrize("gap", [0.6, 1.0, 2.5, 10.0])
def test_truncate_then_write_after_a_gap_deletes_nothing(root: Path, gap: float) -> None:
    files = ModelFiles(root)
    files.refresh(0.0)
    (root / "a.yaml").write_text("")
    files.refresh(0.1)
    files.refresh(0.1 + gap)
    assert set(files.desired) == {"a", "b"}
    write(root / "a.yaml", doc("a", context=8192))
    files.refresh(0.2 + gap)
    assert {n: i.model.spec.context_size for n, i in files.desired.items()} == {"a": 8192, "b": 4096}
    assert files.errors == []


def test_a_half_written_file_waits_for_the_grace_period(root: Path) -> None:
    files = ModelFiles(root, grace=30.0)
    write(root / "two.yaml", doc("c") + "---\n" + doc("d"))
    files.refresh(0.0)
    write(root / "two.yaml", doc("c"))  # the second document not written yet
    files.refresh(1.0)
    assert files.pending_removal(11.0) == {"d": 20.0}
    assert set(files.desired) >= {"c", "d"}
    write(root / "two.yaml", doc("c") + "---\n" + doc("d"))
    files.refresh(25.0)
    assert files.pending_removal(25.0) == {}
    files.refresh(100.0)
    assert set(files.desired) == {"a", "b", "c", "d"}


def test_a_removed_file_is_believed_after_the_grace_period_and_shown_as_pending(root: Path) -> None:
    files = ModelFiles(root, grace=30.0)
    files.refresh(0.0)
    (root / "a.yaml").unlink()
    files.refresh(1.0)
    assert set(files.desired) == {"a", "b"}
    assert files.next_due() == 31.0
    [report] = [f for f in files.report(11.0) if f["path"] == str(root / "a.yaml")]
    assert report["pendingRemoval"] == {"a": 20.0}
    assert report["gone"] is True
    files.refresh(30.9)
    assert set(files.desired) == {"a", "b"}
    files.refresh(31.0)
    assert set(files.desired) == {"b"}
    assert files.report(31.0)[0]["path"] == str(root / "sub" / "b.yaml")


def test_a_misspelt_top_level_key_in_a_docker_agent_file_is_an_error_not_a_deletion(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.yaml", AGENT)
    files = ModelFiles(tmp_path)
    files.refresh(0.0)
    assert set(files.desired) == {"chat", "coder"}
    path.write_text(AGENT.replace("models:", "modles:"))
    for now in (1.0, 100.0, 10_000.0):
        files.refresh(now)
        assert set(files.desired) == {"chat", "coder"}
    [error] = files.errors
    assert error.file == str(path)
    assert "declares no LocalModel any more, where it declared chat, coder" in error.message
    assert "misspelt top-level key" in error.message
    path.write_text(AGENT)
    files.refresh(10_001.0)
    assert files.errors == []
    path.unlink()  # removing the file is how its models go
    files.refresh(10_002.0)
    files.refresh(10_002.0 + files.grace)
    assert files.desired == {}


def test_an_emptied_file_lets_go_of_models_another_file_now_declares(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", doc("a") + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    files = ModelFiles(tmp_path)
    files.refresh(0.0)
    write(tmp_path / "b.yaml", doc("a", context=8192))  # moved to b.yaml...
    write(tmp_path / "a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")  # ...a.yaml keeps the rest
    files.refresh(1.0)
    assert files.errors == []
    assert str(files.source_of("a")).startswith(str(tmp_path / "b.yaml"))
    assert files.desired["a"].model.spec.context_size == 8192


def test_a_dangling_symlink_keeps_its_models(tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere" / "real.yml", doc("a"))
    root = tmp_path / "models"
    root.mkdir()
    (root / "a.yaml").symlink_to(target)
    files = ModelFiles(root)
    files.refresh(0.0)
    target.unlink()
    files.refresh(1000.0)
    assert set(files.desired) == {"a"}
    assert "a symbolic link to a missing file" in files.errors[0].message


def test_a_rename_is_settled_at_once_with_nothing_pending(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", doc("a"))
    files = ModelFiles(tmp_path)  # the default grace period
    files.refresh(0.0)
    (tmp_path / "a.yaml").rename(tmp_path / "b.yaml")
    files.refresh(0.1)
    assert [f["path"] for f in files.report(0.1)] == [str(tmp_path / "b.yaml")]
    assert files.pending_removal(0.1) == {}
    assert files.next_due() is None
    assert set(files.desired) == {"a"}


def test_a_file_that_could_not_be_opened_is_read_again_once_it_can_be(root: Path) -> None:
    files = ModelFiles(root)
    files.refresh(0.0)
    write(root / "a.yaml", doc("a", context=8192))
    with denied(root / "a.yaml", calls=("open",)):  # stat works, open fails (EMFILE, EACCES)
        files.refresh(1.0)
        assert "cannot read: Permission denied" in files.errors[0].message
    assert files.desired["a"].model.spec.context_size == 4096  # the last good version meanwhile
    files.refresh(2.0)  # nothing about the file changed since: it is read again all the same
    assert files.errors == []
    assert files.desired["a"].model.spec.context_size == 8192


def test_a_directory_that_becomes_a_helm_chart_is_no_longer_read(root: Path) -> None:
    files = ModelFiles(root, grace=30.0)
    files.refresh(0.0)
    write(root / "sub" / "Chart.yaml", "apiVersion: v2\nname: x\nversion: 0.1.0\n")
    write(root / "sub" / "templates" / "m.yaml", "{{ range .Values.models }}\n")
    files.refresh(1.0)
    assert files.errors == []
    assert files.pending_removal(1.0) == {"b": 30.0}
    files.refresh(31.0)
    assert set(files.desired) == {"a"}


def test_an_unexpected_error_in_one_file_is_that_files_error(root: Path) -> None:
    from controller.documents import load_file as real_load

    def load(path: Path) -> Any:
        if path.name == "a.yaml" and "8192" in path.read_text():
            raise ValueError("a bug in a parser")
        return real_load(path)

    files = ModelFiles(root, load=load)
    files.refresh(0.0)
    write(root / "a.yaml", doc("a", context=8192))
    write(root / "sub" / "b.yaml", doc("b", model="ai/qwen3", context=8192))
    files.refresh(1.0)
    [error] = files.errors
    assert error.message == "unexpected error while reading it: ValueError: a bug in a parser"
    assert {n: i.model.spec.context_size for n, i in files.desired.items()} == {"a": 4096, "b": 8192}


def test_watch_takes_the_grace_period_and_the_size_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import build_parser

    args = build_parser().parse_args(["watch", str(tmp_path)])
    assert (args.deletion_grace, args.max_file_size) == (30.0, 1024 * 1024)
    args = build_parser().parse_args(["watch", str(tmp_path), "--deletion-grace", "0", "--max-file-size", "4096"])
    assert (args.deletion_grace, args.max_file_size) == (0.0, 4096)
    for bad in (["--deletion-grace", "-1"], ["--max-file-size", "0"], ["--max-file-size", "1M"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["watch", str(tmp_path), *bad])
        assert exit_info.value.code == 2
    assert "argument --max-file-size: '1M' is not a number of bytes" in capsys.readouterr().err
