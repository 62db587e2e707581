"""Compose files: the top-level models: element as LocalModels, with Compose's variable interpolation."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.cli import main
from controller.compose import InterpolationError, Interpolator, is_compose_file, parse_env_file
from controller.documents import LoadResult, load_file, load_paths

FIXTURES = Path(__file__).parent / "fixtures" / "compose"
VARIABLES = ("LLM_MODEL", "LLM_CONTEXT", "LLM_THREADS", "LLM_THINKING", "CODER_CONTEXT", "APP_PORT", "MUST_BE_SET")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def specs(result: LoadResult) -> dict[str, dict[str, Any]]:
    return {m.name: m.spec.model_dump(by_alias=True, exclude_defaults=True) for m in result.models}


def write(tmp_path: Path, text: str, name: str = "compose.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_realistic_compose_file_yields_one_localmodel_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_THREADS", "4")  # the environment; .env gives LLM_CONTEXT and LLM_THINKING
    result = load_file(FIXTURES / "compose.yaml")
    assert result.errors == []
    assert result.notes == []  # services, volumes and x-docker-desktop are ignored without a word
    assert result.warnings == []
    assert specs(result) == {
        "llm": {
            "model": "ai/qwen3:14B-Q6_K",
            "contextSize": 32768,
            "runtimeFlags": ["--threads", "4", "--temp=0.7"],
            "keepAlive": "30m",
            "thinkingBudget": "high",
            "preload": True,
        },
        "embedder": {
            "model": "ai/embeddinggemma",
            "mode": "embedding",
            "contextSize": 2048,
            "runtimeFlags": ["-ub", "1024"],
            "keepAlive": "-1",
        },
        "coder": {"model": "ai/devstral-small", "contextSize": 32768},
    }
    assert [str(result.source_of(m)) for m in result.models] == [
        f"{FIXTURES / 'compose.yaml'}:{line}" for line in (23, 34, 41)
    ]


def test_the_environment_wins_over_the_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CONTEXT", "8192")
    monkeypatch.setenv("LLM_THREADS", "2")
    llm = specs(load_file(FIXTURES / "compose.yaml"))["llm"]
    assert llm["contextSize"] == 8192
    assert llm["runtimeFlags"] == ["--threads", "2", "--temp=0.7"]
    assert llm["thinkingBudget"] == "high"  # from .env: the environment does not set it


def test_the_env_file_is_read_from_beside_the_compose_file(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "compose.yaml", tmp_path / "docker-compose.yml")
    assert specs(load_file(tmp_path / "docker-compose.yml"))["llm"]["contextSize"] == 16384  # no .env: the default
    (tmp_path / ".env").write_text("LLM_CONTEXT=4096\n")
    assert specs(load_file(tmp_path / "docker-compose.yml"))["llm"]["contextSize"] == 4096


@pytest.mark.parametrize("name", ["compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"])
def test_every_compose_file_name_is_read_as_compose(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "models:\n  llm:\n    model: ai/smollm2\n    context_size: 4096\n", name)
    assert is_compose_file(str(path))
    assert specs(load_file(path)) == {"llm": {"model": "ai/smollm2", "contextSize": 4096}}


def test_a_compose_file_without_models_is_silent(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  web:\n    image: nginx\n    command: echo ${UNSET_VARIABLE:?never read}\n")
    result = load_file(path)
    assert (result.models, result.errors, result.notes, result.warnings) == ([], [], [], [])


def test_an_unset_variable_is_a_warning_and_an_empty_string(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  llm:\n    model: ai/smollm2\n    runtime_flags: [--threads, '${NO_SUCH_VAR}']\n")
    result = load_file(path)
    assert result.warnings == [
        f"{path}:2: models.llm: variable NO_SUCH_VAR is not set; it is replaced by an empty string (as Compose does)"
    ]
    assert [str(e) for e in result.errors] == [f"{path}:4: llm: models.llm.runtime_flags[1]: empty flag: remove it"]


def test_validate_strict_fails_on_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "models:\n  llm:\n    model: ai/smollm2${TAG}\n")
    assert main(["validate", str(path)]) == 0
    assert "warning: " in capsys.readouterr().err
    assert main(["validate", "--strict", str(path)]) == 1
    assert "variable TAG is not set" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "line", "path", "message"),
    [
        (
            "context_size: ${CTX:?set CTX to the context size}",
            4,
            "models.llm.context_size",
            "required variable CTX is missing a value: set CTX to the context size",
        ),
        ("context_size: ${CTX/4/8}", 4, "models.llm.context_size", "${CTX/4/8} is not a Compose interpolation"),
        ("context_size: ${CTX:-4096", 4, "models.llm.context_size", "unclosed ${"),
        ("context_size: abc", 4, "models.llm.context_size", "must be an integer token count"),
        ("context_sise: 4096", 4, "models.llm.context_sise", "did you mean context_size?"),
        ("x-localmodel: {keepAlive: 300}", 4, "models.llm.x-localmodel.keepAlive", "a bare number is not a duration"),
        ("x-localmodel: {model: ai/other}", 4, "models.llm.x-localmodel.model", "model is already set by model"),
        ("x-localmodel: {keepAlvie: 5m}", 4, "models.llm.x-localmodel.keepAlvie", "did you mean keepAlive?"),
    ],
)
def test_errors_name_the_compose_key_and_line(tmp_path: Path, value: str, line: int, path: str, message: str) -> None:
    file = write(tmp_path, f"services: {{}}\nmodels:\n  llm:\n    {value}\n    model: ai/smollm2\n")
    result = load_file(file)
    assert len(result.errors) == 1, result.errors
    [error] = result.errors
    assert (error.line, error.path) == (line, path)
    assert message in error.message


def test_interpolated_numbers_and_booleans_take_the_field_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU", "0.5")
    file = write(
        tmp_path,
        "models:\n  llm:\n    model: ai/qwen3-vllm\n    context_size: '${CTX:-4096}'\n"
        "    x-localmodel:\n      preload: ${PRELOAD:-true}\n      keepAlive: ${KEEP:-10m}\n"
        "      vllm: {gpuMemoryUtilization: '${GPU}'}\n      speculative: {numTokens: '${N:-8}'}\n",
    )
    assert specs(load_file(file)) == {
        "llm": {
            "model": "ai/qwen3-vllm",
            "contextSize": 4096,
            "keepAlive": "10m",
            "preload": True,
            "vllm": {"gpuMemoryUtilization": 0.5},
            "speculative": {"numTokens": 8},
        }
    }


def test_the_same_models_key_in_two_compose_files_is_a_duplicate(tmp_path: Path) -> None:
    for project in ("a", "b"):
        (tmp_path / project).mkdir()
        write(tmp_path / project, "models:\n  llm:\n    model: ai/smollm2\n")
    result = load_paths([tmp_path])
    assert [m.name for m in result.models] == ["llm"]
    assert "duplicate LocalModel name" in result.errors[0].message


def test_a_compose_shaped_file_with_another_name_is_not_compose(tmp_path: Path) -> None:
    # models: with model entries but no provider: read as a docker-agent file, which needs a provider
    result = load_file(write(tmp_path, "models:\n  llm:\n    model: ai/smollm2\n", "my-models.yaml"))
    assert result.models == []
    assert "provider is required" in result.errors[0].message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("$A and ${A}", "a and a"),
        ("${UNSET:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${UNSET-default}", "default"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${A?never}", "a"),
        ("${UNSET:-${A}}", "a"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("$$A costs $$5", "$A costs $5"),
        ("$5 and $-", "$5 and $-"),  # not variables: kept as written
        ("${A}${A}", "aa"),
    ],
)
def test_interpolation_forms(text: str, expected: str) -> None:
    assert Interpolator({"A": "a", "EMPTY": ""})(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET:?must be set}", "required variable UNSET is missing a value: must be set"),
        ("${EMPTY:?}", "required variable EMPTY is missing a value: is empty"),
        ("${UNSET?}", "required variable UNSET is missing a value: is not set"),
        ("${A/a/b}", "${A/a/b} is not a Compose interpolation"),
        ("${A:1:2}", "${A:1:2} is not a Compose interpolation"),
        ("${}", "${} is not a Compose interpolation"),
        ("${A", "unclosed ${"),
        ("${A:-x", "unclosed ${"),
    ],
)
def test_interpolation_errors(text: str, message: str) -> None:
    with pytest.raises(InterpolationError) as caught:
        Interpolator({"A": "a", "EMPTY": ""})(text)
    assert message in str(caught.value)


def test_env_file_syntax() -> None:
    text = (
        '# comment\n\nA=1\nexport B=two words # comment\nC=\'single $X # kept\'\nD="dq \\"x\\"\\tz" # c\n'
        "E=\nnot a line\n1BAD=x\n"
    )
    assert parse_env_file(text) == {"A": "1", "B": "two words", "C": "single $X # kept", "D": 'dq "x"\tz', "E": ""}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_dollar_dollar_escapes_any_text(text: str) -> None:
    assert Interpolator({})(text.replace("$", "$$")) == text


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="${}:-?+_AZaz09 /", max_size=40))
def test_interpolation_never_fails_but_with_a_clear_error(text: str) -> None:
    try:
        result = Interpolator({"A": "a", "EMPTY": ""})(text)
    except InterpolationError as exc:
        message = str(exc)
        assert "$" in message or "required variable" in message  # noqa: PT017 (hypothesis: either outcome is fine)
    else:
        assert isinstance(result, str)
