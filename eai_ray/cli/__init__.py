"""The `eai` command line: the face of eai-ray, the only place that parses arguments and prints.

One module per command group, each with `register(add)`; every group is always registered, so
`eai --help` lists them all. A command whose optional dependency is missing prints one line saying
what to install and exits 2.

Exit codes: 0 ok, 1 pipeline failure, 2 bad input or configuration. User errors print one
clear message, never a traceback. `--json` prints machine-readable output on stdout.
"""
from __future__ import annotations

import argparse
import os
import sys

from eai_ray.cli import cdc, pipeline, review, semantic, serve, tables
from eai_ray.cli.common import is_missing_dependency, missing_dependency
from eai_ray.errors import EaiError

# in the order `eai --help` lists their commands
GROUPS = (
    pipeline,  # eai run, demo, validate, sources
    tables,  # eai tables, show, history, lineage, quality, runs
    serve,  # eai serve
    cdc,  # eai cdc start|status|stop|run
    review,  # eai map, eai review list|approve|reject|fix|export
    semantic,  # eai metrics list|query, eai ask
)

__all__ = ["GROUPS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eai", description="eai-ray: AI-native data pipelines on Ray")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_, pipeline_arg="option", *, extra: str | None = None):
        """A command `name` running `fn(args)`; `extra`: the pyproject extra its optional dependencies are in."""
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn, command_name=name, extra=extra)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        if pipeline_arg == "option":
            sp.add_argument("-p", "--pipeline", help="pipeline YAML (default: $EAI_PIPELINE or the last one run here)")
        elif pipeline_arg == "positional":
            sp.add_argument("pipeline", help="pipeline YAML file")
        return sp

    for group in GROUPS:
        group.register(add)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_task_oom_retries", "3")
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except EaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.transient:
            print("hint: this looks transient; running again may succeed", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:
        if not is_missing_dependency(exc):
            raise
        print(missing_dependency(args.command_name, exc, args.extra), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`eai runs --json | head`): stop quietly, like any Unix filter
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
