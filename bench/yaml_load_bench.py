"""Benchmark: the bounded YAML loader (controller/documents.py `_Loader`: libyaml events, composed in
Python with bounds) against the unbounded baseline it replaced (PyYAML's `CSafeLoader`, composed in C).

    .venv/bin/python bench/yaml_load_bench.py [--files 500] [--repeat 3]

Measured in the same run, side by side (best of --repeat, CPU seconds of this process):

- a directory's worth of typical LocalModel files (--files files of one document each), parsed
  to documents (composed and constructed; the same for both loaders);
- one file of about 1 MiB (the default size limit) of 520,000 list items;
- an alias bomb of 7 levels of 9 aliases (4.8 million values once expanded): the baseline builds
  the shared structure and then walks it as validation and the `_configure` body would; the
  bounded loader refuses it while composing. (The 9-level bomb of issue 10 takes the baseline
  minutes and gigabytes; it is not run here.)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import yaml

from controller.documents import _Loader

LOCALMODEL = """\
apiVersion: localmodel.io/v1alpha1
kind: LocalModel
metadata: {{name: m{i}}}
spec:
  model: ai/smollm2
  contextSize: 4096
  keepAlive: 10m
  runtimeFlags: [--threads, "8"]
  vllm:
    hfOverrides: {{rope_scaling: {{type: yarn, factor: 2}}}}
"""


def bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def walk(data: Any) -> int:
    """Visit every value as pydantic validation and JSON encoding would (shared references expanded)."""
    if isinstance(data, dict):
        return 1 + sum(walk(v) for v in data.values())
    if isinstance(data, list):
        return 1 + sum(walk(v) for v in data)
    return 1


def load_with(loader: type) -> Callable[[str], Any]:
    def load(text: str) -> Any:
        instance = loader(text)
        try:
            out = []
            while instance.check_node():
                out.append(instance.construct_document(instance.get_node()))
            return out
        except yaml.YAMLError as exc:
            return exc
        finally:
            instance.dispose()

    return load


def best(repeat: int, function: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.process_time()
        result = function()
        times.append(time.process_time() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    baseline, bounded = load_with(yaml.CSafeLoader), load_with(_Loader)
    files = [LOCALMODEL.format(i=i) for i in range(args.files)]
    big = "x: [" + ",".join(["1"] * 520_000) + "]\n"  # about 1 MiB, the default size limit
    cases: list[tuple[str, Callable[[Callable[[str], Any]], Any]]] = [
        (f"{args.files} LocalModel files", lambda load: [load(text) for text in files]),
        (f"one file of {len(big) // 1024} KiB", lambda load: load(big)),
        ("alias bomb, 7 levels", lambda load: (r := load(bomb(7)), walk(r) if not isinstance(r, Exception) else r)[1]),
    ]
    print(f"{'case':<28} {'baseline (CSafeLoader)':>24} {'bounded (_Loader)':>20}  bounded outcome")
    for name, run in cases:
        base_time, _ = best(args.repeat, lambda run=run: run(baseline))
        ours_time, outcome = best(args.repeat, lambda run=run: run(bounded))
        shown = f"refused: {outcome.problem}" if isinstance(outcome, yaml.YAMLError) else "read"
        print(f"{name:<28} {base_time:>22.3f} s {ours_time:>18.3f} s  {shown[:70]}")


if __name__ == "__main__":
    main()
