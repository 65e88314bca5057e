"""The compiled shim's module, loading libnvidia-ml, and NVML return codes as exceptions.

The library is opened at first use, once per process. The paths tried are the explicit
argument, else ``MIGKIT_NVML_LIBRARY``, else ``libnvidia-ml.so.1`` (the dynamic loader's
search) and then the usual absolute locations. The cffi module is typed ``Any`` at this
boundary only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from migkit._nvml_shim_cffi import ffi as _cffi_ffi
from migkit._nvml_shim_cffi import lib as _cffi_lib
from migkit.errors import NvmlError, NvmlLibraryNotFound

ffi: Any = _cffi_ffi
lib: Any = _cffi_lib

LIBRARY_ENV = "MIGKIT_NVML_LIBRARY"
READ_ONLY_ENV = "MIGKIT_READ_ONLY"
SONAME = "libnvidia-ml.so.1"

# Where distributions and container runtimes put the driver's user-space library, tried after
# the dynamic loader's own search (LD_LIBRARY_PATH, ld.so.cache) has failed.
LIBRARY_DIRS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/wsl/lib",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/sbsa-linux-gnu",
    "/usr/local/nvidia/lib64/aarch64",
)

STATUS_READ_ONLY: int = lib.SHIM_STATUS_READ_ONLY  # refused: MIGKIT_READ_ONLY is set
STATUS_NOT_ATTEMPTED: int = lib.SHIM_STATUS_NOT_ATTEMPTED  # an earlier item failed
UNKNOWN_MODE = 0xFFFFFFFF
SIMULATOR_SYMBOL = "PyInit__nvml_sim"

_load_lock = threading.Lock()


def candidate_paths(explicit: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """The paths :func:`load` tries, in order."""
    if explicit is not None:
        return (os.fspath(explicit),)
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return (override,)
    return (SONAME, *(os.path.join(d, SONAME) for d in LIBRARY_DIRS))


def loaded_library_path() -> str:
    """Where the loaded libnvidia-ml lives; ``""`` when none is loaded."""
    buf = ffi.new("char[]", 4096)
    if lib.shim_library_path(buf, 4096) != 0:
        return ""
    return str(ffi.string(buf).decode("utf-8", "replace"))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def load(explicit: str | os.PathLike[str] | None = None) -> str:
    """Open libnvidia-ml (once per process) and return the path of the library in use.

    Raises :class:`NvmlLibraryNotFound` naming every path tried with the loader's reason,
    and how to point migkit at the library.
    """
    paths = candidate_paths(explicit)
    with _load_lock:
        if lib.shim_is_loaded():
            loaded = loaded_library_path()
            _check_compatible(loaded, explicit, paths)
            return loaded
        c_paths = [ffi.new("char[]", os.fsencode(p)) for p in paths]
        array = ffi.new("const char *[]", c_paths)
        errbuf = ffi.new("char[]", 8192)
        index = lib.shim_load(array, len(paths), errbuf, 8192)
        if index == lib.SHIM_LOAD_ALREADY:  # another thread of C code got there first
            loaded = loaded_library_path()
            _check_compatible(loaded, explicit, paths)
            return loaded
        if index < 0:
            reasons = ffi.string(errbuf).decode("utf-8", "replace").rstrip("\n")
            tried = "\n".join(f"  {line}" for line in reasons.splitlines())
            raise NvmlLibraryNotFound(
                "cannot load the NVIDIA management library (libnvidia-ml); is the NVIDIA "
                f"driver installed?\ntried:\n{tried}\n"
                f"point migkit at it with {LIBRARY_ENV}=/path/to/{SONAME} "
                "(or nvml_library= / --nvml-library), or use a simulated node (--simulate)",
                paths,
            )
        return loaded_library_path() or paths[index]


def _check_compatible(loaded: str, explicit: str | os.PathLike[str] | None, paths: Sequence[str]) -> None:
    """A process has one libnvidia-ml: refuse to silently use another than the one asked for."""
    wanted = paths[0] if (explicit is not None or os.environ.get(LIBRARY_ENV)) else None
    if wanted is not None:
        # a bare soname is what the dynamic loader matches against the library already loaded
        same = wanted == SONAME if "/" not in wanted else (os.path.exists(wanted) and _same_file(wanted, loaded))
        if not same:
            raise NvmlLibraryNotFound(
                f"cannot load {wanted}: this process already uses the NVML library {loaded} "
                "(one libnvidia-ml per process)",
                [wanted],
            )
        return
    # migkit's simulator is a cffi extension module, so it exports its module init function
    if has_symbol(SIMULATOR_SYMBOL):
        raise NvmlLibraryNotFound(
            "cannot load the real libnvidia-ml: this process already loaded migkit's NVML "
            f"simulator ({loaded}), which answers to the same soname (one libnvidia-ml per "
            "process); use a separate process",
            list(paths),
        )


def has_symbol(name: str) -> bool:
    """Whether the loaded library exports ``name``."""
    return bool(lib.shim_has_symbol(name.encode()))




def error_string(code: int) -> str:
    """``nvmlErrorString(code)``, or the shim's own text for its statuses."""
    return str(ffi.string(lib.shim_error_string(code)).decode("utf-8", "replace"))


def nvml_error(code: int, call: str | None, context: str = "") -> NvmlError:
    """The :class:`NvmlError` subclass for ``code``, naming the call and what it was for."""
    text = error_string(code) if code >= 0 else ""
    if context:
        text = f"{context}: {text}" if text else context
    return NvmlError.from_code(code, text, call=call)


def check(code: int, call: str) -> None:
    if code != 0:
        raise nvml_error(code, call)


def init() -> None:
    """``nvmlInitWithFlags(0)`` (each call adds one to NVML's reference count)."""
    check(lib.shim_init(), "nvmlInitWithFlags")


def shutdown() -> None:
    """``nvmlShutdown`` (releases one reference)."""
    check(lib.shim_shutdown(), "nvmlShutdown")


def read_only() -> bool:
    """Whether ``MIGKIT_READ_ONLY`` forbids mutating NVML calls (the shim checks it too)."""
    value = os.environ.get(READ_ONLY_ENV, "")
    return value not in ("", "0")


def device_count() -> int:
    count = ffi.new("unsigned int *")
    check(lib.shim_device_count(count), "nvmlDeviceGetCount_v2")
    return int(count[0])
