"""mig-parted hooks files and the runner that executes them.

A hooks file (``-k/--hooks-file``) names lists of commands to run around ``apply`` and
``restore``::

    version: v1                       # informational, never checked
    hooks:
      pre-apply-config:
        - command: /usr/local/bin/stop-gpu-clients
          args: ["--timeout", "30"]
          envs: {REASON: mig-change}
          workdir: /var/lib/migkit

Compatibility with ``nvidia-mig-parted``: unknown top-level keys and unknown keys inside a
hook are ignored, and a name the file does not define is skipped silently. Unlike upstream, a
hook name other than :data:`HOOK_ORDER` is a load error (file, line and the closest known
name): a misspelled ``pre-apply-config`` would otherwise never run, and the apply would go
ahead without stopping the GPU clients it was meant to stop. migkit checks the types when
loading too (a hook without a ``command`` string is an error there, not when it would run).

:class:`HookRunner` runs each command as an argument vector, never through a shell. Its
environment is the hook's ``envs`` plus the flag variables (:func:`apply_flag_env`), the
flag values winning; the parent environment is not inherited (no ``PATH``, no ``HOME``)
unless ``inherit_env`` is set, exactly as upstream. A command name without a ``/`` is looked
up on the invoking process's ``PATH``. Output is always captured; a failing hook raises
:class:`HookError` with its exit status and the tail of its stderr.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import IO, Any

import attrs
import yaml

from migkit.errors import ConfigError, HookError
from migkit.files import MAX_HOOKS_BYTES, read_text

__all__ = [
    "HOOK_ORDER",
    "HookError",
    "HookRunner",
    "HookSpec",
    "Hooks",
    "apply_flag_env",
    "load_hooks",
    "parse_hooks",
    "restore_flag_env",
]

HOOK_ORDER: tuple[str, ...] = ("apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit")
"""The hook names apply and restore run, in the order they can run."""

_TAIL_LINES = 20
_TAIL_CHARS = 4000




@attrs.frozen
class HookSpec:
    """One command of a hook: program, arguments, extra environment and working directory."""

    command: str
    args: tuple[str, ...] = ()
    envs: tuple[tuple[str, str], ...] = ()  # sorted (name, value) pairs
    workdir: str = ""

    @property
    def env(self) -> dict[str, str]:
        """``envs`` as a dict."""
        return dict(self.envs)

    @property
    def argv(self) -> tuple[str, ...]:
        """The command line as written: ``(command, *args)``."""
        return (self.command, *self.args)


@attrs.frozen
class Hooks:
    """A parsed hooks file: hook name -> the commands to run, in file order."""

    hooks: tuple[tuple[str, tuple[HookSpec, ...]], ...] = ()
    version: str = ""
    file: str | None = None

    def get(self, name: str) -> tuple[HookSpec, ...]:
        """The commands of hook ``name`` (empty when the file does not define it)."""
        for hook_name, specs in self.hooks:
            if hook_name == name:
                return specs
        return ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.hooks)

    def unknown_names(self) -> tuple[str, ...]:
        """Names apply never runs; :func:`parse_hooks` refuses a file with any, so this is
        empty for a loaded file and non-empty only for a ``Hooks`` built by hand."""
        return tuple(name for name in self.names if name not in HOOK_ORDER)


# --------------------------------------------------------------------------- loading


def load_hooks(path: str | os.PathLike[str]) -> Hooks:
    """Read and parse the hooks file at ``path``; errors are :class:`ConfigError` naming it."""
    file = os.fspath(path)
    return parse_hooks(read_text(file, limit=MAX_HOOKS_BYTES, what="hooks file"), file=file)


def parse_hooks(text: str, *, file: str | None = None) -> Hooks:
    """Parse hooks-file text (YAML or JSON, loaded with ``yaml.safe_load``)."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {getattr(err, 'problem', None) or err}",
            file=file,
            line=mark.line + 1 if mark is not None else None,
            column=mark.column + 1 if mark is not None else None,
        ) from None
    return _Parser(file, root).hooks_file(data)


class _Parser:
    """Validates loaded data, locating errors through the composed node tree."""

    def __init__(self, file: str | None, root: yaml.Node | None) -> None:
        self.file = file
        self.root = root

    def error(self, path: Sequence[str | int], reason: str) -> ConfigError:
        node = self._node(path)
        where = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(
            ".[", "["
        )
        line = node.start_mark.line + 1 if node is not None else None
        column = node.start_mark.column + 1 if node is not None else None
        prefix = f"{where}: " if where else ""
        return ConfigError(f"{prefix}{reason}", file=self.file, line=line, column=column)

    def _node(self, path: Sequence[str | int]) -> yaml.Node | None:
        node = self.root
        found = node
        for step in path:
            if isinstance(node, yaml.MappingNode) and isinstance(step, str):
                node = next((v for k, v in node.value if getattr(k, "value", None) == step), None)
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(step, int)
                and step < len(node.value)
            ):
                node = node.value[step]
            else:
                node = None
            if node is None:
                break
            found = node
        return found

    def hooks_file(self, data: Any) -> Hooks:
        if data is None:
            return Hooks(file=self.file)
        if not isinstance(data, dict):
            raise self.error(
                [], f"a hooks file must be a mapping with a 'hooks' key, not {_kind(data)}"
            )
        version = data.get("version")
        hooks = data.get("hooks")
        if hooks is None:
            return Hooks(version=_text(version), file=self.file)
        if not isinstance(hooks, dict):
            raise self.error(
                ["hooks"],
                f"expected a mapping of hook name to a list of commands, not {_kind(hooks)}",
            )
        parsed: list[tuple[str, tuple[HookSpec, ...]]] = []
        for name, specs in hooks.items():
            if not isinstance(name, str):
                raise self.error(
                    ["hooks"], f"hook names must be strings, not {_kind(name)} {name!r}"
                )
            if name not in HOOK_ORDER:
                raise self._unknown_name(name)
            if specs is None:
                specs = []
            if not isinstance(specs, list):
                raise self.error(
                    ["hooks", name], f"expected a list of commands, not {_kind(specs)}"
                )
            parsed.append(
                (name, tuple(self.spec(["hooks", name, k], s) for k, s in enumerate(specs)))
            )
        return Hooks(hooks=tuple(parsed), version=_text(version), file=self.file)

    def _unknown_name(self, name: str) -> ConfigError:
        """An error at the key itself (its line), suggesting the closest hook name."""
        import difflib

        close = difflib.get_close_matches(name, HOOK_ORDER, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        known = ", ".join(HOOK_ORDER)
        line = column = None
        hooks_node = self._node(["hooks"])
        if isinstance(hooks_node, yaml.MappingNode):
            for key, _ in hooks_node.value:
                if getattr(key, "value", None) == name:
                    line, column = key.start_mark.line + 1, key.start_mark.column + 1
        return ConfigError(
            f"hooks.{name}: unknown hook name {name!r}; {hint}migkit runs only: {known}",
            file=self.file,
            line=line,
            column=column,
        )

    def spec(self, path: list[str | int], data: Any) -> HookSpec:
        if not isinstance(data, dict):
            raise self.error(
                path,
                f"expected a mapping with 'command', 'args', 'envs', 'workdir', not {_kind(data)}",
            )
        command = data.get("command")
        if not isinstance(command, str) or not command:
            raise self.error(
                [*path, "command"] if "command" in data else path,
                f"'command' must be a non-empty string, not {_kind(command)}",
            )
        args = data.get("args")
        if args is None:
            args = []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise self.error(
                [*path, "args"], "'args' must be a list of strings (quote numbers and booleans)"
            )
        envs = data.get("envs")
        if envs is None:
            envs = {}
        if not isinstance(envs, dict):
            raise self.error(
                [*path, "envs"], f"'envs' must be a mapping of name to string, not {_kind(envs)}"
            )
        for key, value in envs.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise self.error(
                    [*path, "envs", str(key)],
                    f"environment variable {key!r} must map to a string, not {_kind(value)} "
                    "(quote numbers and booleans)",
                )
        workdir = data.get("workdir")
        if workdir is None:
            workdir = ""
        if not isinstance(workdir, str):
            raise self.error(
                [*path, "workdir"], f"'workdir' must be a string, not {_kind(workdir)}"
            )
        return HookSpec(
            command=command, args=tuple(args), envs=tuple(sorted(envs.items())), workdir=workdir
        )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- environment


def _flag(value: bool) -> str:
    return "true" if value else "false"


def apply_flag_env(
    config_file: str | None,
    selected_config: str | None,
    hooks_file: str | None,
    skip_reset: bool,
    mode_only: bool,
) -> dict[str, str]:
    """The variables apply passes to every hook (unset strings are empty)."""
    return {
        "MIG_PARTED_CONFIG_FILE": config_file or "",
        "MIG_PARTED_SELECTED_CONFIG": selected_config or "",
        "MIG_PARTED_HOOKS_FILE": hooks_file or "",
        "MIG_PARTED_SKIP_RESET": _flag(skip_reset),
        "MIG_PARTED_MODE_CHANGE_ONLY": _flag(mode_only),
    }


def restore_flag_env(
    checkpoint_file: str | None, hooks_file: str | None, mode_only: bool
) -> dict[str, str]:
    """The variables restore passes to every hook."""
    return {
        "MIG_PARTED_CHECKPOINT_FILE": checkpoint_file or "",
        "MIG_PARTED_HOOKS_FILE": hooks_file or "",
        "MIG_PARTED_MODE_CHANGE_ONLY": _flag(mode_only),
    }


# --------------------------------------------------------------------------- running


def _tail(capture: IO[bytes]) -> str:
    """The last lines (at most a few KiB) written to ``capture``."""
    size = capture.seek(0, os.SEEK_END)
    capture.seek(max(0, size - 4 * _TAIL_CHARS))
    text = capture.read().decode("utf-8", errors="replace")
    lines = text.strip("\n").splitlines()[-_TAIL_LINES:]
    return "\n".join(line.rstrip() for line in lines).strip()[-_TAIL_CHARS:]


def _echo(capture: IO[bytes], stream: IO[str]) -> None:
    capture.seek(0)
    stream.write(capture.read().decode("utf-8", errors="replace"))
    stream.flush()


class HookRunner:
    """Runs the hooks of one apply or restore.

    >>> runner = HookRunner(load_hooks("hooks.yaml"), apply_flag_env(...))   # doctest: +SKIP
    >>> runner.run("apply-start")                                             # doctest: +SKIP

    ``debug`` copies each command's output to this process's stdout/stderr when the
    command ends (it is captured either way). ``timeout`` (seconds, per command) is a
    migkit addition; upstream waits forever.
    """

    def __init__(
        self,
        hooks: Hooks,
        flag_env: Mapping[str, str],
        debug: bool = False,
        inherit_env: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.hooks = hooks
        self.flag_env = dict(flag_env)
        self.debug = debug
        self.inherit_env = inherit_env
        self.timeout = timeout

    def environment(self, spec: HookSpec) -> dict[str, str]:
        """The child's environment for ``spec``: its ``envs``, then the flag variables."""
        env = dict(os.environ) if self.inherit_env else {}
        env.update(spec.envs)
        env.update(self.flag_env)
        return env

    def run(self, name: str) -> None:
        """Run hook ``name``'s commands in order; the first failure raises :class:`HookError`."""
        for spec in self.hooks.get(name):
            self._run_one(name, spec)

    def _resolve(self, name: str, spec: HookSpec) -> str:
        if "/" in spec.command:
            return spec.command  # relative to workdir, as the child sees it
        search = os.environ.get("PATH", os.defpath)
        found = shutil.which(spec.command, path=search)
        if found is None:
            raise HookError(
                f"hook {name!r}: command {spec.command!r} not found on PATH ({search})",
                hook=name,
                argv=spec.argv,
            )
        return found

    def _run_one(self, name: str, spec: HookSpec) -> None:
        program = self._resolve(name, spec)
        shown = shlex.join(spec.argv)
        # Files, not pipes: a hook that leaves a background process holding its output open
        # (starting a service, say) must not keep migkit waiting for end-of-file.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    [program, *spec.args],
                    env=self.environment(spec),
                    cwd=spec.workdir or None,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    shell=False,
                )
            except OSError as error:
                where = f" in {spec.workdir!r}" if spec.workdir else ""
                raise HookError(
                    f"hook {name!r}: cannot run {shown}{where}: {error.strerror or error}",
                    hook=name,
                    argv=spec.argv,
                ) from None
            try:
                returncode: int | None = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                returncode = None
            if self.debug:
                _echo(out, sys.stdout)
                _echo(err, sys.stderr)
            if returncode == 0:
                return
            stderr_text, stdout_text = _tail(err), _tail(out)
        if returncode is None:
            status = f"did not finish within {self.timeout:g} s and was killed"
        elif returncode < 0:
            status = f"was killed by signal {-returncode}"
        else:
            status = f"exited with status {returncode}"
        raise HookError(
            f"hook {name!r}: {shown} {status}" + _format_tail(stderr_text, stdout_text),
            hook=name,
            argv=spec.argv,
            returncode=proc.returncode,
            stderr_tail=stderr_text or stdout_text,
        )


def _format_tail(stderr_text: str, stdout_text: str) -> str:
    stream, tail = ("stderr", stderr_text) if stderr_text else ("stdout", stdout_text)
    if not tail:
        return " (no output)"
    return f"; its {stream} ended with:\n" + "\n".join(f"  | {line}" for line in tail.splitlines())
