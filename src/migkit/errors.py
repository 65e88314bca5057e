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
        self.name = NVML_ERROR_NAMES.get(code, f"UNKNOWN_CODE_{code}")
        self.call = call
        text = message or NVML_ERROR_TEXT.get(code, self.name)
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


NVML_ERROR_NAMES: dict[int, str] = {
    0: "SUCCESS",
    1: "UNINITIALIZED",
    2: "INVALID_ARGUMENT",
    3: "NOT_SUPPORTED",
    4: "NO_PERMISSION",
    5: "ALREADY_INITIALIZED",
    6: "NOT_FOUND",
    7: "INSUFFICIENT_SIZE",
    8: "INSUFFICIENT_POWER",
    9: "DRIVER_NOT_LOADED",
    10: "TIMEOUT",
    11: "IRQ_ISSUE",
    12: "LIBRARY_NOT_FOUND",
    13: "FUNCTION_NOT_FOUND",
    14: "CORRUPTED_INFOROM",
    15: "GPU_IS_LOST",
    16: "RESET_REQUIRED",
    17: "OPERATING_SYSTEM",
    18: "LIB_RM_VERSION_MISMATCH",
    19: "IN_USE",
    20: "MEMORY",
    21: "NO_DATA",
    22: "VGPU_ECC_NOT_SUPPORTED",
    23: "INSUFFICIENT_RESOURCES",
    24: "FREQ_NOT_SUPPORTED",
    25: "ARGUMENT_VERSION_MISMATCH",
    26: "DEPRECATED",
    27: "NOT_READY",
    28: "GPU_NOT_FOUND",
    29: "INVALID_STATE",
    30: "RESET_TYPE_NOT_SUPPORTED",
    999: "UNKNOWN",
}

NVML_ERROR_CODES: dict[str, int] = {name: code for code, name in NVML_ERROR_NAMES.items()}

NVML_ERROR_TEXT: dict[int, str] = {
    1: "Uninitialized",
    2: "Invalid Argument",
    3: "Not Supported",
    4: "Insufficient Permissions",
    6: "Not Found",
    7: "Insufficient Size",
    9: "Driver Not Loaded",
    13: "Function Not Found",
    15: "GPU is lost",
    16: "GPU requires restart",
    19: "In use by another client",
    23: "Insufficient Resources",
    999: "Unknown Error",
}

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
