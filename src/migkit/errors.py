"""The migkit exception hierarchy.

Everything migkit raises on purpose derives from :class:`MigkitError`, so callers can
catch one type. The subclasses are the cases a caller branches on.
"""

from __future__ import annotations

from collections.abc import Sequence


class MigkitError(Exception):
    """Base class of every error migkit raises on purpose."""


class ConfigError(MigkitError, ValueError):
    """A configuration file (or text) is not valid.

    ``file``, ``line`` and ``column`` locate the problem (1-based; ``None`` when unknown).
    ``str(err)`` is ``file:line:column: reason``.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        self.column = column
        super().__init__(self._format())

    def _format(self) -> str:
        where = [str(part) for part in (self.file, self.line, self.column) if part is not None]
        return f"{':'.join(where)}: {self.reason}" if where else self.reason


class SimulatorStateError(ConfigError):
    """The simulator's state file cannot be used: unparsable (``file`` and ``line`` say
    where) or not a regular file."""


class InfeasibleError(MigkitError):
    """The requested instances cannot be placed on the GPU; the message says why."""


class UnknownProfileError(MigkitError, KeyError):
    """A profile name or ID does not exist on the GPU model in question."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownModelError(MigkitError, KeyError):
    """No bundled hardware table has this name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NvmlLibraryNotFound(MigkitError):
    """libnvidia-ml could not be opened; ``paths`` lists every path tried."""

    def __init__(self, message: str, paths: Sequence[str] = ()) -> None:
        self.paths = tuple(paths)
        super().__init__(message)


class ReadOnlyError(MigkitError):
    """A mutating NVML call was refused because ``MIGKIT_READ_ONLY`` is set."""


class ApplyError(MigkitError):
    """Applying a configuration failed; the node report says what state each GPU is in."""


class ResetFailed(ApplyError):
    """A GPU reset (to make a pending MIG mode take effect) failed; the message says why."""


class NvmlError(MigkitError):
    """An NVML call returned an error code.

    ``code`` is the NVML return code, ``name`` its NVML name (``"INSUFFICIENT_RESOURCES"``),
    ``call`` the NVML function when known.
    """

    code: int = -1
    name: str = "UNKNOWN_CODE"

    def __init__(self, code: int, message: str = "", *, call: str | None = None) -> None:
        self.code = code
        name, default_text = _nvml_return_codes().get(code, (f"UNKNOWN_CODE_{code}", ""))
        self.name = name
        self.call = call
        text = message or default_text or name
        prefix = f"{call}: " if call else ""
        super().__init__(f"{prefix}{text} (NVML_ERROR_{self.name}, code {code})")

    @staticmethod
    def from_code(code: int, message: str = "", *, call: str | None = None) -> NvmlError:
        """Build the most specific subclass for ``code``."""
        cls = _NVML_ERROR_CLASSES.get(code, NvmlError)
        return cls(code, message, call=call)


class Uninitialized(NvmlError):
    """NVML was not initialised (code 1)."""


class InvalidArgument(NvmlError):
    """NVML rejected an argument (code 2)."""


class NotSupported(NvmlError):
    """The GPU or its current MIG mode does not support the call (code 3)."""


class NoPermission(NvmlError):
    """The caller lacks the privilege the call needs (code 4)."""


class NotFound(NvmlError):
    """The GPU instance, compute instance or device does not exist (code 6)."""


class InsufficientSize(NvmlError):
    """A buffer passed to NVML was too small (code 7)."""


class DriverNotLoaded(NvmlError):
    """The NVIDIA kernel driver is not loaded (code 9)."""


class GpuIsLost(NvmlError):
    """The GPU fell off the bus or stopped answering (code 15)."""


class ResetRequired(NvmlError):
    """The GPU needs a reset (or the node a reboot) before the change takes effect (code 16)."""


class InUse(NvmlError):
    """The GPU, instance or compute instance is in use by another client (code 19)."""


class InsufficientResources(NvmlError):
    """The instance does not fit: overlap, instance cap or engine conflict (code 23)."""


class FunctionNotFound(NvmlError):
    """The loaded libnvidia-ml does not export the function (code 13)."""


def _nvml_return_codes() -> dict[int, tuple[str, str]]:
    """NVML's return codes -> (name, text), read from the compiled shim, which names them once."""
    global _RETURN_CODES
    if _RETURN_CODES is None:
        from migkit._nvml_shim_cffi import ffi, lib

        table: dict[int, tuple[str, str]] = {}
        i = 0
        while (code := int(lib.shim_return_code_at(i))) >= 0:
            name = ffi.string(lib.shim_error_name(code)).decode()
            table[code] = (name, ffi.string(lib.shim_error_text(code)).decode())
            i += 1
        _RETURN_CODES = table
    return _RETURN_CODES


_RETURN_CODES: dict[int, tuple[str, str]] | None = None


def __getattr__(name: str) -> dict[int, str] | dict[str, int]:
    """``NVML_ERROR_NAMES`` (code -> name) and ``NVML_ERROR_CODES`` (name -> code)."""
    if name == "NVML_ERROR_NAMES":
        return {code: row[0] for code, row in _nvml_return_codes().items()}
    if name == "NVML_ERROR_CODES":
        return {row[0]: code for code, row in _nvml_return_codes().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NVML_ERROR_CLASSES: dict[int, type[NvmlError]] = {
    1: Uninitialized,
    2: InvalidArgument,
    3: NotSupported,
    4: NoPermission,
    6: NotFound,
    7: InsufficientSize,
    9: DriverNotLoaded,
    13: FunctionNotFound,
    15: GpuIsLost,
    16: ResetRequired,
    19: InUse,
    23: InsufficientResources,
}


class SimulatorError(MigkitError):
    """A bad simulator spec or state file."""


class HookError(MigkitError):
    """A hook could not be started or exited unsuccessfully.

    ``hook`` is the hook name, ``argv`` the command line, ``returncode`` the exit status
    (negative: killed by that signal; ``None``: it never ran) and ``stderr_tail`` the end of
    what it wrote to stderr (stdout when stderr was empty).
    """

    def __init__(
        self,
        message: str,
        *,
        hook: str,
        argv: Sequence[str],
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        self.hook = hook
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        super().__init__(message)


class GenerateError(MigkitError):
    """No config can be generated for these GPUs."""


class NoMigCapableGpuError(GenerateError):
    """None of the GPUs supports MIG."""


class NoProfilesDiscoveredError(GenerateError):
    """GPUs are MIG-capable but list no profiles (older drivers with MIG mode off).

    The caller should fall back to a static config, as the MIG manager does.
    """


class LabelError(MigkitError, ValueError):
    """Labels were asked for with an unknown strategy."""
