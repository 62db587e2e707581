"""Loading LocalModel and docker-agent files: documents, line numbers, notes, directories, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest

from controller.cli import main
from controller.documents import (
    LoadResult,
    ModelSource,
    load_file,
    load_paths,
    load_text,
    name_for_ref,
    split_runtime_flags,
)
from controller.refs import canonical_ref

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def text(source: str) -> str:
    return dedent(source).lstrip("\n")


def localmodel(name: str, model: str = "ai/smollm2", extra: str = "") -> str:
    return (
        text(
            f"""
        apiVersion: localmodel.io/v1alpha1
        kind: LocalModel
        metadata:
          name: {name}
        spec:
          model: {model}
        """
        )
        + extra
    )


def errors(result: LoadResult) -> list[tuple[int | None, str]]:
    return [(e.line, e.path) for e in result.errors]


# --- LocalModel documents --------------------------------------------------------------------


def test_multi_document_file_with_lines_per_document() -> None:
    result = load_text(localmodel("a") + "---\n" + localmodel("b", "ai/qwen3:14B"), "m.yaml")
    assert result.errors == []
    assert [m.name for m in result.models] == ["a", "b"]
    assert [result.source_of(m) for m in result.models] == [ModelSource("m.yaml", 1), ModelSource("m.yaml", 8)]
    assert result.files == ["m.yaml"]


def test_empty_documents_are_skipped() -> None:
    result = load_text("---\n---\n# only a comment\n---\n" + localmodel("a"), "m.yaml")
    assert [m.name for m in result.models] == ["a"]
    assert result.notes == []
    assert result.errors == []


def test_empty_file() -> None:
    result = load_text("", "empty.yaml")
    assert (result.models, result.errors, result.notes) == ([], [], [])


def test_errors_point_at_the_offending_field_line() -> None:
    source = localmodel(
        "a",
        extra=(
            "  contextSize: 0\n  runtimeFlags:\n    - --threads\n    - 4\n"
            "  vllm:\n    hfOverrides:\n      rope_scaling:\n        rope-type: yarn\n"
        ),
    )
    result = load_text(source, "m.yaml")
    assert errors(result) == [
        (7, "spec.contextSize"),
        (10, "spec.runtimeFlags[1]"),
        (14, "spec.vllm.hfOverrides.rope_scaling.rope-type"),
    ]
    assert str(result.errors[0]).startswith("m.yaml:7: a: spec.contextSize: ")


def test_unknown_field_line_is_the_key_line() -> None:
    result = load_text(localmodel("a", extra="  contextsize: 4096\n"), "m.yaml")
    assert [(e.line, e.message) for e in result.errors] == [
        (7, "unknown field 'contextsize'; did you mean contextSize?")
    ]


def test_error_lines_in_later_documents() -> None:
    result = load_text(localmodel("a") + "---\n" + localmodel("b", extra="  keepAlive: 300\n"), "m.yaml")
    assert errors(result) == [(14, "spec.keepAlive")]
    assert [m.name for m in result.models] == ["a"]


def test_yaml_syntax_error_has_a_line_and_earlier_documents_still_load() -> None:
    result = load_text(localmodel("a") + "---\nspec: [unclosed\nother: 1\n", "m.yaml")
    assert [m.name for m in result.models] == ["a"]
    assert len(result.errors) == 1
    assert result.errors[0].message.startswith("YAML syntax error")
    assert result.errors[0].line == 9


@pytest.mark.parametrize(
    ("source", "line"),
    [
        (localmodel("a", extra="  model: ai/qwen3\n"), 7),
        ("metadata: {name: a, name: b}\n", 1),
        ("a:\n  b: 1\n  c: 2\n  b: 3\n", 4),
    ],
)
def test_duplicate_keys_are_errors(source: str, line: int) -> None:
    result = load_text(source, "m.yaml")
    assert result.models == []
    assert [(e.line, "duplicate key" in e.message) for e in result.errors] == [(line, True)]


def test_merge_keys_with_overrides_are_not_duplicates() -> None:
    source = text(
        """
        base: &base {contextSize: 4096, keepAlive: 5m}
        ---
        apiVersion: localmodel.io/v1alpha1
        kind: LocalModel
        metadata: {name: a}
        spec:
          <<: {model: ai/smollm2, contextSize: 4096}
          contextSize: 8192
        """
    )
    result = load_text(source, "m.yaml")
    assert result.errors == []
    assert result.models[0].spec.context_size == 8192


@pytest.mark.parametrize(
    "source",
    [
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        "apiVersion: apps/v1\nkind: Deployment\n",
        "just a string\n",
        "- a\n- b\n",
        "foo: bar\n",
    ],
)
def test_other_documents_are_skipped_with_a_note(source: str) -> None:
    result = load_text(source, "m.yaml")
    assert (result.models, result.errors) == ([], [])
    assert len(result.notes) == 1
    assert "skipped" in result.notes[0]
    assert result.notes[0].startswith("m.yaml:1: ")


@pytest.mark.parametrize(
    ("header", "path"),
    [
        ("apiVersion: localmodel.io/v1\nkind: LocalModel\n", "apiVersion"),
        ("apiVersion: v1\nkind: LocalModel\n", "apiVersion"),
        ("apiVersion: localmodel.io/v1alpha1\nkind: LocalModels\n", "kind"),
        ("kind: LocalModel\n", "apiVersion"),
    ],
)
def test_localmodel_with_wrong_identity_is_an_error(header: str, path: str) -> None:
    result = load_text(header + "metadata: {name: a}\nspec: {model: ai/smollm2}\n", "m.yaml")
    assert [e.path for e in result.errors] == [path]
    assert result.notes == []


def test_kubectl_list_output() -> None:
    source = text(
        """
        apiVersion: v1
        kind: List
        items:
          - apiVersion: localmodel.io/v1alpha1
            kind: LocalModel
            metadata: {name: a}
            spec: {model: ai/smollm2}
          - {apiVersion: v1, kind: ConfigMap}
        """
    )
    result = load_text(source, "list.yaml")
    assert [m.name for m in result.models] == ["a"]
    assert result.source_of(result.models[0]) == ModelSource("list.yaml", 4)
    assert len(result.notes) == 1
    assert "items[1]" in result.notes[0]


def test_duplicate_names_within_a_file_keep_the_first() -> None:
    result = load_text(localmodel("a") + "---\n" + localmodel("a", "ai/qwen3"), "m.yaml")
    assert [m.spec.model for m in result.models] == ["ai/smollm2"]
    assert len(result.errors) == 1
    assert "already declared at m.yaml:1" in result.errors[0].message
    assert result.errors[0].line == 8


def test_same_name_in_different_namespaces_is_fine() -> None:
    a = localmodel("a").replace("  name: a\n", "  name: a\n  namespace: one\n")
    b = localmodel("a").replace("  name: a\n", "  name: a\n  namespace: two\n")
    assert len(load_text(a + "---\n" + b).models) == 2


def test_sourced_equality_ignores_the_source() -> None:
    first = load_text(localmodel("a"), "one.yaml").sourced[0]
    second = load_text("\n\n" + localmodel("a"), "two.yaml").sourced[0]
    assert first == second
    assert first.source != second.source


# --- docker-agent files ----------------------------------------------------------------------

AGENT = text(
    """
    models:
      big:
        provider: dmr
        model: ai/qwen3:14B
        max_tokens: 2048
        temperature: 0.2
        thinking_budget: high
        base_url: http://localhost:12434/engines/v1
        provider_opts:
          context_size: 16384
          runtime_flags: "--threads 8, --batch-size 512"
          keep_alive: 30m
          supports_images: true
      vision:
        provider: dmr
        model: ai/smollm2-vllm
        provider_opts:
          gpu_memory_utilization: 0.6
          hf_overrides: {rope_scaling: {factor: 2.0}}
          raw_runtime_flags: --max-num-seqs 4
          mode: completion
          speculative_draft_model: ai/smollm2:135M-Q4_0
          speculative_num_tokens: 4
          speculative_acceptance_rate: 0.5
          base_url: http://elsewhere
      gpt:
        provider: openai
        model: gpt-4o
    agents:
      root:
        model: big
        sub_agents: [helper]
      helper:
        model: dmr/ai/smollm2:135M-Q4_0,dmr/ai/qwen3:14B
        fallback:
          models: [anthropic/claude-sonnet-4-5, dmr/docker.io/ai/smollm2:135M-Q4_0, dmr/ai/llama3.2]
    """
)


def test_docker_agent_models_and_agents() -> None:
    result = load_text(AGENT, "agent.yaml")
    assert result.errors == []
    by_name = {m.name: m.spec for m in result.models}
    assert list(by_name) == ["big", "vision", "smollm2-135m-q4-0", "llama3.2"]
    big, vision = by_name["big"], by_name["vision"]
    assert (big.model, big.context_size, big.keep_alive, big.reasoning_budget) == ("ai/qwen3:14B", 16384, "30m", 16384)
    assert big.runtime_flags == ["--threads", "8", "--batch-size", "512"]
    assert vision.vllm is not None
    assert vision.speculative is not None
    assert (vision.vllm.gpu_memory_utilization, vision.vllm.hf_overrides) == (0.6, {"rope_scaling": {"factor": 2.0}})
    assert (vision.raw_runtime_flags, vision.mode) == ("--max-num-seqs 4", "completion")
    assert (vision.speculative.draft_model, vision.speculative.num_tokens, vision.speculative.acceptance_rate) == (
        "ai/smollm2:135M-Q4_0",
        4,
        0.5,
    )
    assert by_name["smollm2-135m-q4-0"].model == "ai/smollm2:135M-Q4_0"
    assert [result.source_of(m).line for m in result.models] == [2, 14, 34, 36]  # type: ignore[union-attr]


def test_docker_agent_notes() -> None:
    notes = load_text(AGENT, "agent.yaml").notes
    expected = [
        "agent.yaml:5: models.big.max_tokens: max_tokens is a per-request limit; not an engine setting",
        "agent.yaml:8: models.big.base_url: base_url ignored: use --engine",
        "agent.yaml:2: models.big: temperature: applied by docker-agent per request; not engine settings",
        "agent.yaml:13: models.big.provider_opts.supports_images: supports_images is a docker-agent client setting",
        "agent.yaml:25: models.vision.provider_opts.base_url: base_url ignored: use --engine",
        "agent.yaml:26: models.gpt: skipped: provider 'openai' is not dmr",
        "agent.yaml:36: agents.helper.fallback.models[0]: skipped: provider 'anthropic' is not dmr",
    ]
    assert len(notes) == len(expected), notes
    for note, start in zip(notes, expected, strict=True):
        assert note.startswith(start), (note, start)


@pytest.mark.parametrize(
    ("opts", "path", "fragment"),
    [
        ("context_size: 0", "models.m.provider_opts.context_size", "omit contextSize"),
        ("context_size: 3000000000", "models.m.provider_opts.context_size", "at most 2147483647"),
        ("keep_alive: 300", "models.m.provider_opts.keep_alive", "300s or 5m"),
        ("gpu_memory_utilization: 1.01", "models.m.provider_opts.gpu_memory_utilization", "between 0.0 and 1.0"),
        ("hf_overrides: {a: {b-c: 1}}", "models.m.provider_opts.hf_overrides.a.b-c", "invalid key"),
        ("mode: chat", "models.m.provider_opts.mode", "unknown mode"),
        ("speculative_num_tokens: 0", "models.m.provider_opts.speculative_num_tokens", "positive"),
        ("speculative_acceptance_rate: 2", "models.m.provider_opts.speculative_acceptance_rate", "between 0.0 and 1.0"),
        ("{runtime_flags: [-t, '4'], raw_runtime_flags: -t 4}", "models.m.provider_opts.raw_runtime_flags", "both set"),
        ("runtime_flags: [--threads, 4]", "models.m.provider_opts.runtime_flags[1]", 'quote it: "4"'),
    ],
)
def test_docker_agent_provider_opts_errors(opts: str, path: str, fragment: str) -> None:
    block = f"    provider_opts: {opts}\n" if opts.startswith("{") else f"    provider_opts:\n      {opts}\n"
    source = "models:\n  m:\n    provider: dmr\n    model: ai/smollm2\n" + block
    result = load_text(source, "agent.yaml")
    assert [e.path for e in result.errors] == [path]
    assert fragment in result.errors[0].message
    assert result.errors[0].object == "m"
    assert result.errors[0].line == 6 if not opts.startswith("{") else 5


@pytest.mark.parametrize(
    ("entry", "path", "fragment"),
    [
        ("provider: dmr\n    model: ai/x\n    thinking_budget: extreme", "models.m.thinking_budget", "unknown effort"),
        ("provider: dmr\n    model: ai/x\n    provider_opts: [a]", "models.m.provider_opts", "must be a mapping"),
        ("provider: dmr", "models.m.model", "required"),
        ("model: ai/x", "models.m", "add provider: dmr"),
    ],
)
def test_docker_agent_entry_errors(entry: str, path: str, fragment: str) -> None:
    result = load_text(f"models:\n  m:\n    {entry}\n", "agent.yaml")
    assert path in [e.path for e in result.errors]
    assert any(fragment in e.message for e in result.errors)


def test_docker_agent_shorthand_entry_and_name_normalisation() -> None:
    result = load_text("models:\n  Fast_Model: dmr/ai/smollm2\n  Other: openai/gpt-4o\n", "agent.yaml")
    assert [(m.name, m.spec.model) for m in result.models] == [("fast-model", "ai/smollm2")]


def test_inline_ref_equal_to_an_entry_reuses_it() -> None:
    source = (
        "models:\n  chat: {provider: dmr, model: ai/qwen3}\n"
        "agents:\n  root: {model: dmr/ai/qwen3:latest}\n  two: {model: dmr/docker.io/ai/qwen3}\n"
    )
    assert [m.name for m in load_text(source).models] == ["chat"]


def test_inline_ref_to_an_invalid_entry_is_not_a_second_model() -> None:
    source = (
        "models:\n  chat: {provider: dmr, model: ai/qwen3, provider_opts: {context_size: 0}}\n"
        "agents:\n  root: {model: dmr/ai/qwen3}\n"
    )
    result = load_text(source)
    assert result.models == []
    assert len(result.errors) == 1


def test_derived_names_do_not_collide() -> None:
    source = "models:\n  qwen3: {provider: dmr, model: ai/qwen3:8B}\nagents:\n  root: {model: dmr/ai/qwen3}\n"
    result = load_text(source, "agent.yaml")
    assert [m.name for m in result.models] == ["qwen3", "qwen3-2"]
    assert any("'qwen3-2'" in note for note in result.notes)


def test_agent_model_names_that_are_not_refs_are_noted() -> None:
    result = load_text("agents:\n  root: {model: missing}\n", "agent.yaml")
    assert result.models == []
    assert "neither an entry of models" in result.notes[0]


def test_docker_agent_sections_must_be_mappings() -> None:
    result = load_text("models: [a]\nagents: {}\n", "agent.yaml")
    assert [e.path for e in result.errors] == ["models"]


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("ai/qwen3:14B", "qwen3-14b"),
        ("ai/qwen3", "qwen3"),
        ("ai/qwen3:latest", "qwen3"),
        ("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M", "llama-3.2-1b-gguf-q4-k-m"),
        ("ai/x@sha256:abc", "x"),
    ],
)
def test_name_for_ref(ref: str, name: str) -> None:
    assert name_for_ref(ref) == name


@pytest.mark.parametrize(
    ("flags", "split"), [("--threads 8", ["--threads", "8"]), ("-t,4,, --mlock", ["-t", "4", "--mlock"]), ("  ", [])]
)
def test_split_runtime_flags_like_docker_agent(flags: str, split: list[str]) -> None:
    assert split_runtime_flags(flags) == split


# --- files and directories -------------------------------------------------------------------


def test_load_paths_walks_directories_in_order_and_skips_hidden_and_editor_files(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "b" / "two.yml").write_text(localmodel("two"))
    (tmp_path / "a.yaml").write_text(localmodel("one"))
    (tmp_path / "c.yaml").write_text(localmodel("three"))
    for junk in (".hidden.yaml", ".#a.yaml", "a.yaml~", ".a.yaml.swp", "notes.txt", "#a.yaml#"):
        (tmp_path / junk).write_text("broken: [")
    (tmp_path / ".git" / "x.yaml").write_text("broken: [")
    result = load_paths([tmp_path])
    assert result.errors == []
    assert [m.name for m in result.models] == ["one", "two", "three"]
    assert result.files == [str(tmp_path / "a.yaml"), str(tmp_path / "b" / "two.yml"), str(tmp_path / "c.yaml")]


def test_helm_charts_are_not_read(tmp_path: Path) -> None:
    """A chart's templates are not manifests (`{{ ... }}` is not even YAML) until helm renders them."""
    chart = tmp_path / "models-chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: models\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("models: {broken: [}\n")
    (chart / "templates" / "lm.yaml").write_text("{{- range .Values.models }}\nkind: LocalModel\n{{- end }}\n")
    (tmp_path / "a.yaml").write_text(localmodel("one"))
    result = load_paths([tmp_path])
    assert result.errors == []
    assert [m.name for m in result.models] == ["one"]
    assert result.notes == [f"{chart}: a Helm chart, not read (validate what `helm template` renders from it)"]
    alone = load_paths([chart])  # named on the command line, as `localmodel validate examples/*` does
    assert (alone.errors, alone.models) == ([], [])
    assert alone.notes == [f"{chart}: a Helm chart, not read (validate what `helm template` renders from it)"]


def test_duplicate_names_across_files_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(localmodel("chat"))
    (tmp_path / "b.yaml").write_text("\n" + localmodel("chat", "ai/qwen3"))
    result = load_paths([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert [m.spec.model for m in result.models] == ["ai/smollm2"]
    [error] = result.errors
    assert (error.file, error.line) == (str(tmp_path / "b.yaml"), 2)
    assert f"{tmp_path / 'a.yaml'}:1" in error.message


def test_a_file_given_twice_is_loaded_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(localmodel("chat"))
    result = load_paths([tmp_path, tmp_path / "a.yaml"])
    assert (len(result.models), result.errors) == (1, [])


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    result = load_paths([tmp_path / "nope.yaml", tmp_path / "latin1.yaml"])
    assert [(e.file, e.message) for e in result.errors] == [
        (str(tmp_path / "nope.yaml"), "no such file or directory"),
        (str(tmp_path / "latin1.yaml"), "not UTF-8 text: save the file as UTF-8"),
    ]


def test_empty_directory_is_noted(tmp_path: Path) -> None:
    result = load_paths([tmp_path])
    assert result.notes == [f"{tmp_path}: no .yaml or .yml files"]


def test_load_file_labels_with_the_given_path(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(localmodel("chat", extra="  mode: chat\n"))
    assert str(load_file(tmp_path / "a.yaml").errors[0]).startswith(f"{tmp_path / 'a.yaml'}:7: chat: spec.mode: ")


# --- examples and the CLI ----------------------------------------------------------------------


def test_examples_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "12 LocalModels valid in 8 files" in err


def test_examples_have_no_conflicting_model_and_mode() -> None:
    """Two LocalModels for one (model, mode) would fight over one engine config. A tag and `:latest`
    may be the same digest (ai/qwen3:latest is the 8B), so `:latest` must be alone in its repository."""
    groups: dict[tuple[str, str], list[str]] = {}
    for model in load_paths([EXAMPLES]).models:
        repo, _, tag = canonical_ref(model.spec.model).rpartition(":")
        groups.setdefault((repo, model.spec.mode or "completion"), []).append(tag)
    for key, tags in groups.items():
        assert len(tags) == len(set(tags)), key
        assert "latest" not in tags or len(tags) == 1, key


def test_examples_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(EXAMPLES)]) == 0
    out, _ = capsys.readouterr()
    rendered = json.loads(out)
    assert {r["name"]: r["path"] for r in rendered}["smollm2-vllm"] == "/engines/vllm/_configure"
    assert all(set(r) == {"name", "backend", "path", "body", "notes"} for r in rendered)


def test_validate_reports_problems_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text(
        localmodel("chat", extra="  contextsize: 4096\n  keepAlive: 300\n") + "---\napiVersion: v1\nkind: ConfigMap\n"
    )
    assert main(["validate", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{tmp_path / 'bad.yaml'}:7: chat: spec.contextsize: unknown field 'contextsize'; did you mean contextSize?",
        f"{tmp_path / 'bad.yaml'}:8: chat: spec.keepAlive: "
        "a bare number is not a duration: write 300s or 5m (Go duration syntax)",
    ]
    assert "note: " in err
    assert "2 problems found in 1 file" in err


def test_validate_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/nonexistent/x.yaml"]) == 1
    assert "/nonexistent/x.yaml: no such file or directory" in capsys.readouterr().out


def test_validate_without_arguments_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2


def test_render_invalid_input_prints_nothing_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text(localmodel("chat", extra="  contextSize: 0\n"))
    assert main(["render", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "spec.contextSize" in err


def test_render_with_a_learned_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text(localmodel("chat", extra="  thinkingBudget: high\n"))
    assert main(["render", str(tmp_path), "--backend", "vllm"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert (entry["path"], entry["body"]) == ("/engines/vllm/_configure", {"model": "ai/smollm2"})
    assert entry["notes"] == [
        "vLLM takes the thinking budget per request (thinking_token_budget), not in _configure; not sent"
    ]


def test_render_flags_for_a_flagless_backend_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text(localmodel("chat", extra="  runtimeFlags: [-t, '4']\n"))
    assert main(["render", str(tmp_path), "--backend", "mlx"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("chat: spec.runtimeFlags: ")
