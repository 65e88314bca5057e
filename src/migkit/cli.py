"""The ``migkit`` command: a drop-in for ``nvidia-mig-parted`` plus planning commands.

Exit codes: 0 success; 1 apply failed or the assertion does not hold; 2 usage or
configuration error (nothing was changed). Upstream's flag spellings and ``MIG_PARTED_*``
environment variables are accepted. Heavy modules are imported inside the commands so that
``migkit --version`` and ``migkit assert`` start quickly.
"""

from __future__ import annotations

import argparse
import sys

from migkit.commands import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    cmd_apply,
    cmd_assert,
    cmd_checkpoint,
    cmd_configs,
    cmd_export,
    cmd_generate,
    cmd_labels,
    cmd_plan,
    cmd_profiles,
    cmd_restore,
    cmd_status,
)

TYPE_CHECKING = False  # importing typing would slow down every start
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageError", "build_parser", "main"]


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

    sub.add_parser("agent", help="Kubernetes node agent (needs migkit[k8s]); see migkit agent --help", add_help=False)
    sub.add_parser("rollout", help="change the MIG config of many nodes in waves (needs migkit[k8s])", add_help=False)
    sub.add_parser("cluster", help="cluster status: every MIG node (needs migkit[k8s])", add_help=False)
    p = command("apply", "make the selected config true, changing only what differs", cmd_apply)
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

    p = command("assert", "exit 0 iff the node already matches the selected config", cmd_assert)
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

    p = command("export", "print the current state as a mig-parted v1 config", cmd_export)
    p.add_argument(
        "-o", "--output-format", help="yaml (default) or json (env MIG_PARTED_OUTPUT_FORMAT)"
    )
    p.add_argument(
        "-l", "--config-label", help="name of the exported config (env MIG_PARTED_CONFIG_LABEL)"
    )

    p = command(
        "generate-config", "print the generated config for this node's hardware", cmd_generate
    )
    p.add_argument(
        "-f", "--output-file", help="write here instead of stdout (env MIG_PARTED_OUTPUT_FILE)"
    )
    p.add_argument("-o", "--output-format", help="yaml (default) or json")
    p.add_argument(
        "--gpu", action="append", metavar="MODEL", help="generate for these bundled models instead"
    )

    p = command("plan", "offline feasibility and exact placements; no hardware needed", cmd_plan)
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
        cmd_profiles,
    )
    p.add_argument(
        "--gpu", action="append", metavar="MODEL", help="a bundled model instead of the node"
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = command(
        "status",
        "the current layout: GPU and compute instances, placements, MIG device UUIDs, PIDs",
        cmd_status,
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = command("configs", "the configs of a file, and whether each fits this node", cmd_configs)
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

    p = command("labels", "GPU-feature-discovery node labels for the current state", cmd_labels)
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

    p = command("checkpoint", "save the exact MIG state (placements included)", cmd_checkpoint)
    p.add_argument("-f", "--checkpoint-file", help="output file (env MIG_PARTED_CHECKPOINT_FILE)")
    p.add_argument(
        "--format",
        choices=("migkit", "mig-parted"),
        default="migkit",
        help="file format: migkit's (default) or nvidia-mig-parted's; restore reads both",
    )

    p = command("restore", "restore a checkpoint at its exact placements", cmd_restore)
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
    if args_list[:1] == ["agent"]:
        # The node agent parses its own flags; it lives in an optional extra (migkit[k8s]).
        from migkit.agent import main as agent_main

        return agent_main(args_list[1:])
    if args_list[:1] in (["rollout"], ["cluster"]):
        # Fleet commands talk to the API server; they live in the same extra (migkit/fleet/).
        from migkit.fleet import main as fleet_main

        return fleet_main(args_list[0], args_list[1:])
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
