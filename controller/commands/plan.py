"""`localmodel plan FILE...`: what apply would change on the engine, without changing it."""

from __future__ import annotations

import argparse

from controller.commands.validate import INPUT_FORMS

DESCRIPTION = """\
Show what `localmodel apply` would do to the engine, without doing it: the engine is observed once
(GET /models, /engines/_configure, /engines/ps, and GET /engines/requests for a loaded runner whose
own config matters) and, for each LocalModel, the actions are printed: pull, configure with the exact
JSON body (or the differences from what the engine holds), evict a runner that runs an old config,
preload, or "up to date". Nothing is written to the engine.
"""

EPILOG = (
    INPUT_FORMS
    + """

examples:
  localmodel plan examples/
  localmodel plan my-models/ --engine http://127.0.0.1:12434
  localmodel plan my-models/ --exit-code || echo "changes pending"

exit codes:
  0  plan printed (with --exit-code: and nothing to change)
  1  invalid input (errors on stderr), the engine is unreachable or a request to it failed
  2  with --exit-code: changes pending (like terraform plan -detailed-exitcode); also a usage error
"""
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show what apply would change on the engine",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="FILE", help="files or directories to plan")
    parser.add_argument("--engine", metavar="URL", help="engine root URL (default: discovered)")
    parser.add_argument("--exit-code", action="store_true", help="exit 2 when changes are pending, 0 when none")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from controller.commands import load_or_report
    from controller.engine.errors import EngineError
    from controller.reconcile import EngineReconciler
    from controller.standalone.connect import connect
    from controller.standalone.oneshot import ModelPlan, plan_models

    loaded = load_or_report(args.paths)
    if loaded is None:
        return 1

    async def main() -> tuple[str, list[ModelPlan] | str]:
        async with connect(args.engine, quiet=True) as client:
            observation = await EngineReconciler("local", client).observe()
            if observation.error is not None:
                return client.endpoint.shown, str(observation.error)
            return client.endpoint.shown, await plan_models(client, loaded.models, observation)

    try:
        url, plans = asyncio.run(main())
    except ValueError as exc:
        print(f"localmodel plan: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:  # a request after the observation (a loaded runner's config) failed
        print(f"localmodel plan: {exc}", file=sys.stderr)
        return 1
    if isinstance(plans, str):
        print(f"localmodel plan: cannot observe the engine at {url}: {plans}", file=sys.stderr)
        return 1
    for plan in plans:
        print(
            f"{plan.name} ({plan.model}): "
            + ("blocked" if plan.blocked else "changes" if plan.changes else "up to date")
        )
        for step in plan.steps:
            print(f"  {step.text}")
            for line in step.detail:
                print(f"      {line}")
        if plan.blocked:
            print(f"  {plan.blocked}")
        for note in plan.notes:
            print(f"  note: {note}")
    changing = sum(1 for p in plans if p.changes)
    blocked = sum(1 for p in plans if p.blocked)
    print(
        f"\n{changing} to change, {len(plans) - changing - blocked} up to date, {blocked} blocked on {url}",
        file=sys.stderr,
    )
    return 2 if args.exit_code and changing else 0
