"""The ``migkit`` command: a drop-in for ``nvidia-mig-parted`` plus planning commands.

Exit codes: 0 success; 1 apply failed or the assertion does not hold; 2 usage or
configuration error (nothing was changed). Upstream's flag spellings and ``MIG_PARTED_*``
environment variables are accepted. Heavy modules are imported inside the commands so that
``migkit --version`` and ``migkit assert`` start quickly.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # importing typing would slow down every start
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn, TextIO

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_global(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "-d",
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else None,
        help="verbose output (env MIG_PARTED_DEBUG)",
    )
    parser.add_argument(
        "--simulate",
        metavar="SPEC",
        default=default,
        help="use a simulated node, e.g. 8xh100-80gb (env MIGKIT_SIMULATE)",
    )
    parser.add_argument(
        "--sim-state",
        metavar="FILE",
        default=default,
        help="simulated node state file; created from --simulate if missing (env MIGKIT_SIM_STATE)",
    )
    parser.add_argument(
        "--nvml-library",
        metavar="PATH",
        default=default,
        help="libnvidia-ml to load (env MIGKIT_NVML_LIBRARY)",
    )


def build_parser() -> argparse.ArgumentParser:
    from migkit import __version__

    parser = _Parser(
        prog="migkit",
        description="Plan, apply and verify NVIDIA MIG layouts (a drop-in for nvidia-mig-parted).",
    )
    parser.add_argument("-v", "--version", action="version", version=f"migkit {__version__}")
    _add_global(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_global(p, suppress=True)
        p.set_defaults(func=func)
        return p

    def config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-f",
            "--config-file",
            help="mig-parted config file, '-' for stdin (env MIG_PARTED_CONFIG_FILE)",
        )
        p.add_argument(
            "-c", "--selected-config", help="config to use (env MIG_PARTED_SELECTED_CONFIG)"
        )

    p = command("apply", "make the selected config true, changing only what differs", _cmd_apply)
    config_args(p)
    p.add_argument("-k", "--hooks-file", help="hooks file (env MIG_PARTED_HOOKS_FILE)")
    p.add_argument(
        "-s",
        "--skip-reset",
        action="store_true",
        default=None,
        help="do not reset GPUs after a mode change (env MIG_PARTED_SKIP_RESET)",
    )
    p.add_argument(
        "-m",
        "--mode-only",
        action="store_true",
        default=None,
        help="apply the MIG mode only (env MIG_PARTED_MODE_CHANGE_ONLY)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument(
        "--strict-coverage",
        action="store_true",
        default=None,
        help="every GPU must be covered by the config (env MIGKIT_STRICT_COVERAGE)",
    )
    p.add_argument(
        "--inherit-env", action="store_true", help="hooks inherit this process's environment"
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="report format")

    p = command("assert", "exit 0 iff the node already matches the selected config", _cmd_assert)
    config_args(p)
    p.add_argument(
        "-m", "--mode-only", action="store_true", default=None, help="check the MIG mode only"
    )
    p.add_argument(
        "-a",
        "--valid-config",
        action="store_true",
        default=None,
        help="only check that the file and selection are valid (env MIG_PARTED_VALID_CONFIG)",
    )
    p.add_argument(
        "--strict-coverage",
        action="store_true",
        default=None,
        help="every GPU must be covered by the config (env MIGKIT_STRICT_COVERAGE)",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="report format")

    p = command("export", "print the current state as a mig-parted v1 config", _cmd_export)
    p.add_argument(
        "-o", "--output-format", help="yaml (default) or json (env MIG_PARTED_OUTPUT_FORMAT)"
    )
    p.add_argument(
        "-l", "--config-label", help="name of the exported config (env MIG_PARTED_CONFIG_LABEL)"
    )

    p = command(
        "generate-config", "print the generated config for this node's hardware", _cmd_generate
    )
    p.add_argument(
        "-f", "--output-file", help="write here instead of stdout (env MIG_PARTED_OUTPUT_FILE)"
    )
    p.add_argument("-o", "--output-format", help="yaml (default) or json")
    p.add_argument(
        "--gpu", action="append", metavar="MODEL", help="generate for these bundled models instead"
    )

    p = command("plan", "offline feasibility and exact placements; no hardware needed", _cmd_plan)
    config_args(p)
    p.add_argument(
        "--gpu",
        action="append",
        metavar="MODEL",
        help="GPU model at the next index (repeatable); default: the node's GPUs",
    )
    p.add_argument(
        "--strict-coverage",
        action="store_true",
        default=None,
        help="every GPU must be covered by the config (env MIGKIT_STRICT_COVERAGE)",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = command(
        "profiles",
        "profiles and possible placements, like nvidia-smi mig -lgip/-lgipp",
        _cmd_profiles,
    )
    p.add_argument(
        "--gpu", action="append", metavar="MODEL", help="a bundled model instead of the node"
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = command(
        "status",
        "the current layout: GPU and compute instances, placements, MIG device UUIDs, PIDs",
        _cmd_status,
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = command("configs", "the configs of a file, and whether each fits this node", _cmd_configs)
    p.add_argument(
        "-f", "--config-file", help="mig-parted config file, '-' for stdin (env MIG_PARTED_CONFIG_FILE)"
    )
    p.add_argument(
        "--gpu",
        action="append",
        metavar="MODEL",
        help="check against these bundled models (repeatable) instead of the node",
    )
    p.add_argument(
        "--no-check", action="store_true", help="list only; do not check against any hardware"
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = command("labels", "GPU-feature-discovery node labels for the current state", _cmd_labels)
    p.add_argument(
        "--strategy",
        choices=("none", "single", "mixed"),
        default="single",
        help="GFD's MIG strategy (default: single)",
    )
    p.add_argument(
        "--gpu-present",
        action="store_true",
        help="add nvidia.com/gpu.present=true, which the GPU Operator (not GFD) sets",
    )
    p.add_argument("--config-name", help="value for nvidia.com/mig.config")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = command("checkpoint", "save the exact MIG state (placements included)", _cmd_checkpoint)
    p.add_argument("-f", "--checkpoint-file", help="output file (env MIG_PARTED_CHECKPOINT_FILE)")
    p.add_argument(
        "--format",
        choices=("migkit", "mig-parted"),
        default="migkit",
        help="file format: migkit's (default) or nvidia-mig-parted's; restore reads both",
    )

    p = command("restore", "restore a checkpoint at its exact placements", _cmd_restore)
    p.add_argument(
        "-f", "--checkpoint-file", help="checkpoint to restore (env MIG_PARTED_CHECKPOINT_FILE)"
    )
    p.add_argument("-k", "--hooks-file", help="hooks file (env MIG_PARTED_HOOKS_FILE)")
    p.add_argument(
        "-m", "--mode-only", action="store_true", default=None, help="restore the MIG mode only"
    )
    p.add_argument(
        "-s", "--skip-reset", action="store_true", default=None, help="do not reset GPUs"
    )
    return parser


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


def _cmd_apply(args: argparse.Namespace) -> int:
    from migkit.execution.orchestrate import apply

    config, selected = _load_selected(args)
    with open_node_from_args(args) as node:
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
            progress=None if args.output == "json" else sys.stdout,
        )
    _write(report.to_json() if args.output == "json" else report.summary())
    return report.exit_code


def _cmd_assert(args: argparse.Namespace) -> int:
    from migkit.execution.orchestrate import assert_config

    config, selected = _load_selected(args)
    valid_only = _flag(args, "valid_config", "MIG_PARTED_VALID_CONFIG")
    mode_only = _flag(args, "mode_only", "MIG_PARTED_MODE_CHANGE_ONLY")
    if valid_only:
        from migkit.config import select

        select(config, selected)
        if not _simulated(args):
            return EXIT_OK
    with open_node_from_args(args) as node:
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
    elif result.ok:
        _write(result.summary())
    else:
        _write(result.summary(), sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def _output_format(args: argparse.Namespace, env_name: str) -> str:
    fmt = (args.output_format or _env(env_name) or "yaml").lower()
    if fmt not in ("yaml", "json"):
        raise UsageError(f"unsupported output format {fmt!r} (use yaml or json)")
    return fmt


def _cmd_export(args: argparse.Namespace) -> int:
    from migkit import export

    fmt = _output_format(args, "MIG_PARTED_OUTPUT_FORMAT")
    label = args.config_label or _env("MIG_PARTED_CONFIG_LABEL") or "current"
    with open_node_from_args(args) as node:
        gpus = node.snapshot()
    _write(export.render(export.export_config(gpus, label), fmt))
    return EXIT_OK


def _cmd_generate(args: argparse.Namespace) -> int:
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


def _cmd_plan(args: argparse.Namespace) -> int:
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


def _cmd_profiles(args: argparse.Namespace) -> int:
    from migkit.planning import render as report

    if args.gpu:
        from migkit.hardware import gpu_model

        text = report.profiles_table([gpu_model(name) for name in args.gpu], args.output)
    else:
        with open_node_from_args(args) as node:
            text = report.profiles_table(node.snapshot(), args.output)
    _write(text)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from migkit import status

    with open_node_from_args(args) as node:
        _write(status.render_status(node.snapshot(), args.output))
    return EXIT_OK


def _cmd_configs(args: argparse.Namespace) -> int:
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


def _cmd_labels(args: argparse.Namespace) -> int:
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


def _cmd_checkpoint(args: argparse.Namespace) -> int:
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


def _cmd_restore(args: argparse.Namespace) -> int:
    from migkit import checkpoint

    path = args.checkpoint_file or _env("MIG_PARTED_CHECKPOINT_FILE")
    if not path:
        raise UsageError("a checkpoint file is required: -f/--checkpoint-file FILE")
    saved = checkpoint.read(path)  # validated before the node is opened
    with open_node_from_args(args) as node:
        saved = checkpoint.for_node(saved, node.snapshot(), file=path)
        report = checkpoint.restore(
            node,
            saved,
            mode_only=_flag(args, "mode_only", "MIG_PARTED_MODE_CHANGE_ONLY"),
            skip_reset=_flag(args, "skip_reset", "MIG_PARTED_SKIP_RESET"),
            hooks_file=args.hooks_file or _env("MIG_PARTED_HOOKS_FILE"),
            checkpoint_file=path,
            progress=sys.stdout,
            debug=_debug(args),
        )
    _write(report.summary())
    return report.exit_code


# --------------------------------------------------------------------------- entry point


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _upstream_forms(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[list[str], dict[str, bool]]:
    """Rewrite the spellings of Go's flag packages that argparse does not know.

    nvidia-mig-parted accepts single-dash long flags (``-config-file X``) and boolean flags
    with a value (``--skip-reset=false``, ``-a=1``; Go's ``strconv.ParseBool`` spellings).
    Returns the rewritten arguments and the booleans explicitly set, which win over both the
    defaults and the environment (``--skip-reset=false`` beats ``MIG_PARTED_SKIP_RESET=true``).
    """
    subcommands: dict[str, argparse.ArgumentParser] = {}
    for parser_action in parser._actions:
        if isinstance(parser_action, argparse._SubParsersAction):
            subcommands = dict(parser_action.choices)
    current = parser
    out: list[str] = []
    explicit: dict[str, bool] = {}
    position = 0
    while position < len(argv):
        token = argv[position]
        position += 1
        if token == "--":
            out.extend(argv[position - 1 :])
            break
        if not token.startswith("-") or token == "-":
            if current is parser and token in subcommands:
                current = subcommands[token]
            out.append(token)
            continue
        name, equals, value = token.partition("=")
        options = current._option_string_actions
        if not name.startswith("--") and len(name) > 2 and "-" + name in options:
            name = "-" + name  # Go style: -config-file means --config-file
        action = options.get(name)
        if action is not None and action.nargs == 0 and equals:
            if not isinstance(action, argparse._StoreTrueAction):
                out.append(token)  # e.g. --help=x: let argparse report it
                continue
            if value in _GO_TRUE:
                explicit[action.dest] = True
            elif value in _GO_FALSE:
                explicit[action.dest] = False
            else:
                current.error(f"invalid boolean value {value!r} for {name} (use true or false)")
            continue
        out.append(name + equals + value)
        if action is not None and action.nargs is None and not equals and position < len(argv):
            out.append(argv[position])  # the option's value, never itself an option
            position += 1
    return out, explicit


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args_list, explicit = _upstream_forms(parser, args_list)
    args = parser.parse_args(args_list)
    for dest, value in explicit.items():
        setattr(args, dest, value)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from migkit.errors import (
        ApplyError,
        ConfigError,
        InfeasibleError,
        MigkitError,
        UnknownModelError,
        UnknownProfileError,
    )

    try:
        code: int = args.func(args)
        return code
    except UsageError as err:
        print(f"migkit {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, InfeasibleError, UnknownProfileError, UnknownModelError) as err:
        print(f"migkit {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ApplyError as err:
        print(f"migkit {args.command}: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except MigkitError as err:
        from migkit.simulator import SimulatorError

        print(f"migkit {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, SimulatorError) else EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK
    except UnicodeDecodeError as err:
        print(f"migkit {args.command}: error: a file given is not UTF-8 text ({err.reason})", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        # A file named on the command line (config, checkpoint, output, state) that cannot be
        # read or written: nothing was changed.
        where = f" {err.filename}" if err.filename else ""
        print(f"migkit {args.command}: error:{where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("migkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
