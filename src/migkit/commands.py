"""The ``migkit`` commands: each takes the parsed arguments and returns the exit code.

Shared with :mod:`migkit.cli` (which parses the arguments): the exit codes, ``UsageError`` and
the readers of upstream's ``MIG_PARTED_*`` variables. Heavy modules are imported inside each
command so that ``migkit --version`` stays quick.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

TYPE_CHECKING = False  # importing typing would slow down every start
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, TextIO

    from migkit.nvml.node import Node

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False", ""}


class UsageError(Exception):
    """Bad command-line use; exit 2."""


def env_bool(name: str, default: bool = False) -> bool:
    """Go's boolean spellings, as urfave/cli parses ``MIG_PARTED_*`` booleans."""
    value = os.environ.get(name)
    if value is None:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name}={value!r} is not a boolean (use true or false)")


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


# --------------------------------------------------------------------------- helpers


def _flag(args: argparse.Namespace, dest: str, env_name: str) -> bool:
    """A boolean option: the command line wins (``--skip-reset=false`` included), then the env."""
    value = getattr(args, dest, None)
    if value is None:
        return env_bool(env_name)
    return bool(value)


def _debug(args: argparse.Namespace) -> bool:
    return _flag(args, "debug", "MIG_PARTED_DEBUG")


def open_node_from_args(args: argparse.Namespace) -> Node:
    """The node the global options select: simulated, a state file, or the real driver."""
    from migkit import open_node

    spec = getattr(args, "simulate", None) or _env("MIGKIT_SIMULATE")
    state = getattr(args, "sim_state", None) or _env("MIGKIT_SIM_STATE")
    library = getattr(args, "nvml_library", None)
    if spec and state:
        if not os.path.exists(state):
            from migkit import simulator

            simulator.write_state(state, spec)
        return open_node(nvml_library=library, sim_state=state)
    if state:
        if not os.path.exists(state):
            raise UsageError(f"simulator state {state}: no such file (add --simulate SPEC to create it)")
        from migkit import simulator

        simulator.read_state(state)  # a file that is not a simulated node is a usage error (exit 2)
        return open_node(nvml_library=library, sim_state=state)
    if spec:
        return open_node(nvml_library=library, simulate=spec)
    return open_node(nvml_library=library)


def _load_selected(args: argparse.Namespace) -> tuple[Any, str | None]:
    from migkit.config import load_config

    path = args.config_file or _env("MIG_PARTED_CONFIG_FILE")
    if not path:
        raise UsageError(
            "a config file is required: -f/--config-file FILE (or MIG_PARTED_CONFIG_FILE)"
        )
    selected = args.selected_config or _env("MIG_PARTED_SELECTED_CONFIG")
    if path == "-":
        config = load_config(sys.stdin.read())
    else:
        if not os.path.exists(path):
            raise UsageError(f"config file {path}: no such file")
        if os.path.isdir(path):
            raise UsageError(f"config file {path}: is a directory")
        config = load_config(path)
    return config, selected


def _write(text: str, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(text if text.endswith("\n") else text + "\n")


def _progress(args: argparse.Namespace) -> Any:
    """How apply and restore show progress: nothing with ``-o json``; a live view redrawn in
    place when standard output is a terminal (and ``-d`` is not interleaving logs); plain
    lines on standard error otherwise, so that standard output holds each GPU once."""
    from migkit.execution.report import Progress

    if getattr(args, "output", "text") == "json":
        return None
    live = sys.stdout.isatty() and not _debug(args)
    return Progress(sys.stdout, sys.stdout if live else sys.stderr, live=live)


@contextlib.contextmanager
def _debug_logging(args: argparse.Namespace) -> Iterator[None]:
    """With ``-d``, the ``migkit`` logger's debug records (NVML batches, plan decisions,
    phase timings) go to standard error while the command runs."""
    if not _debug(args):
        yield
        return
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("debug: %(message)s"))
    logger = logging.getLogger("migkit")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _report(report: Any, output: str = "text") -> None:
    """An apply or restore report: JSON on stdout, or results on stdout and problems on stderr."""
    if output == "json":
        _write(report.to_json())
        return
    problems = report.problems_text()
    warnings = [line for line in problems.split("\n") if line.startswith("warning: ")]
    if warnings:
        _write("\n".join(warnings), sys.stderr)
    results = report.results_text()
    if results:
        _write(results)
    rest = problems.split("\n")[len(warnings) :]
    if problems and rest:
        sys.stdout.flush()
        _write("\n".join(rest), sys.stderr)


def _strict(args: argparse.Namespace) -> bool:
    return _flag(args, "strict_coverage", "MIGKIT_STRICT_COVERAGE")


def _simulated(args: argparse.Namespace) -> bool:
    """True when the global options or their variables select a simulated node."""
    return bool(
        getattr(args, "simulate", None)
        or getattr(args, "sim_state", None)
        or _env("MIGKIT_SIMULATE", "MIGKIT_SIM_STATE")
    )


# --------------------------------------------------------------------------- commands


def cmd_apply(args: argparse.Namespace) -> int:
    from migkit.execution.orchestrate import apply

    config, selected = _load_selected(args)
    progress = None if args.dry_run else _progress(args)
    with _debug_logging(args), open_node_from_args(args) as node:
        try:
            report = apply(
                node,
                config,
                selected,
                config_file=args.config_file or _env("MIG_PARTED_CONFIG_FILE") or "",
                hooks_file=args.hooks_file or _env("MIG_PARTED_HOOKS_FILE"),
                skip_reset=_flag(args, "skip_reset", "MIG_PARTED_SKIP_RESET"),
                mode_only=_flag(args, "mode_only", "MIG_PARTED_MODE_CHANGE_ONLY"),
                dry_run=args.dry_run,
                strict_coverage=_strict(args),
                debug=_debug(args),
                inherit_env=args.inherit_env or env_bool("MIGKIT_HOOKS_INHERIT_ENV"),
                progress=progress,
            )
        finally:
            if progress is not None:
                progress.end()
    _report(report, args.output)
    return report.exit_code


def cmd_assert(args: argparse.Namespace) -> int:
    from migkit.execution.orchestrate import assert_config

    config, selected = _load_selected(args)
    valid_only = _flag(args, "valid_config", "MIG_PARTED_VALID_CONFIG")
    mode_only = _flag(args, "mode_only", "MIG_PARTED_MODE_CHANGE_ONLY")
    if valid_only:
        from migkit.config import select

        select(config, selected)
        if not _simulated(args):
            if args.output != "json":
                _write("Selected MIG configuration is valid")
            return EXIT_OK
    with _debug_logging(args), open_node_from_args(args) as node:
        result = assert_config(
            node,
            config,
            selected,
            mode_only=mode_only,
            strict_coverage=_strict(args),
            valid_only=valid_only,
        )
    if args.output == "json":
        _write(result.to_json())
    else:
        _report(result)
    return EXIT_OK if result.ok else EXIT_FAILED


def _output_format(args: argparse.Namespace, env_name: str) -> str:
    fmt = (args.output_format or _env(env_name) or "yaml").lower()
    if fmt not in ("yaml", "json"):
        raise UsageError(f"unsupported output format {fmt!r} (use yaml or json)")
    return fmt


def cmd_export(args: argparse.Namespace) -> int:
    from migkit import export

    fmt = _output_format(args, "MIG_PARTED_OUTPUT_FORMAT")
    label = args.config_label or _env("MIG_PARTED_CONFIG_LABEL") or "current"
    with open_node_from_args(args) as node:
        gpus = node.snapshot()
    _write(export.render(export.export_config(gpus, label), fmt))
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from migkit import generate

    fmt = _output_format(args, "MIG_PARTED_OUTPUT_FORMAT")
    if args.gpu:
        from migkit.hardware import gpu_model

        doc = generate.generate_config([gpu_model(name) for name in args.gpu])
    else:
        with open_node_from_args(args) as node:
            doc = generate.generate_config(node.snapshot())
    text = generate.render(doc, fmt)
    target = args.output_file or _env("MIG_PARTED_OUTPUT_FILE")
    if target:
        with open(target, "w", encoding="utf-8") as out:
            _write(text, out)
    else:
        _write(text)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from migkit.planning import plan as planning

    config, selected = _load_selected(args)
    if args.gpu:
        from migkit.hardware import gpu_model

        models = [gpu_model(name) for name in args.gpu]
        node_plan = planning.plan_offline(config, selected, models, strict_coverage=_strict(args))
    else:
        with open_node_from_args(args) as node:
            node_plan = planning.plan_node(
                config, selected, node.snapshot(), strict_coverage=_strict(args)
            )
    _write(planning.render_plan(node_plan, args.output))
    return EXIT_OK if node_plan.feasible else EXIT_FAILED


def cmd_profiles(args: argparse.Namespace) -> int:
    from migkit.planning import render as report

    if args.gpu:
        from migkit.hardware import gpu_model

        text = report.profiles_table([gpu_model(name) for name in args.gpu], args.output)
    else:
        with open_node_from_args(args) as node:
            text = report.profiles_table(node.snapshot(), args.output)
    _write(text)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from migkit import status

    with open_node_from_args(args) as node:
        _write(status.render_status(node.snapshot(), args.output))
    return EXIT_OK


def cmd_configs(args: argparse.Namespace) -> int:
    from migkit import configs

    args.selected_config = None
    config, _ = _load_selected(args)
    if args.no_check:
        _write(configs.render_configs(config, fmt=args.output))
        return EXIT_OK
    if args.gpu:
        from migkit.hardware import gpu_model

        models = [gpu_model(name) for name in args.gpu]
        _write(configs.render_configs(config, models=models, fmt=args.output))
        return EXIT_OK
    with open_node_from_args(args) as node:
        _write(configs.render_configs(config, gpus=node.snapshot(), fmt=args.output))
    return EXIT_OK


def cmd_labels(args: argparse.Namespace) -> int:
    import json

    from migkit import labels

    with open_node_from_args(args) as node:
        values = labels.node_labels(
            node.snapshot(), args.strategy, config_name=args.config_name, present=args.gpu_present
        )
    if args.output == "json":
        _write(json.dumps(values, indent=2, sort_keys=True))
    else:
        _write("\n".join(f"{key}={value}" for key, value in sorted(values.items())))
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from migkit import checkpoint

    path = args.checkpoint_file or _env("MIG_PARTED_CHECKPOINT_FILE")
    if not path:
        raise UsageError("a checkpoint file is required: -f/--checkpoint-file FILE")
    with open_node_from_args(args) as node:
        gpus = node.snapshot()
        text = checkpoint.dump(checkpoint.capture(gpus), args.format, gpus)
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from migkit import checkpoint

    path = args.checkpoint_file or _env("MIG_PARTED_CHECKPOINT_FILE")
    if not path:
        raise UsageError("a checkpoint file is required: -f/--checkpoint-file FILE")
    saved = checkpoint.read(path)  # validated before the node is opened
    progress = _progress(args)
    with _debug_logging(args), open_node_from_args(args) as node:
        saved = checkpoint.for_node(saved, node.snapshot(), file=path)
        try:
            report = checkpoint.restore(
                node,
                saved,
                mode_only=_flag(args, "mode_only", "MIG_PARTED_MODE_CHANGE_ONLY"),
                skip_reset=_flag(args, "skip_reset", "MIG_PARTED_SKIP_RESET"),
                hooks_file=args.hooks_file or _env("MIG_PARTED_HOOKS_FILE"),
                checkpoint_file=path,
                progress=progress,
                debug=_debug(args),
            )
        finally:
            if progress is not None:
                progress.end()
    _report(report)
    return report.exit_code
