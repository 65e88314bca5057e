"""migkit's NVML simulator: simulated nodes for tests, demos and tool builders.

The simulator itself is C (``src/_nvml_sim/``), compiled into the package as a shared
library that exports the NVML symbols, so the shim — or NVIDIA's own ``nvidia-ml-py`` —
drives it exactly as it would drive ``libnvidia-ml.so.1``. The simulated node lives in a
human-readable state file (``MIGKIT_SIM_STATE``; format in ``docs/simulator-state-format.md``) that this
module creates from a *spec*: a comma list of ``[N x]MODEL`` such as ``8xh100-80gb`` or
``2xa100-80gb,1xl40s``.

>>> with simulate("2xh100-80gb") as sim:          # doctest: +SKIP
...     node = migkit.open_node(sim_state=sim.state_file)

Command line: ``python -m migkit.simulator create SPEC FILE``, ``stats FILE``,
``reset FILE [GPU ...]``, ``busy FILE GPU GI [CI] [--pid PID]``, ``show FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import attrs

from migkit.errors import MigkitError, SimulatorStateError, UnknownModelError
from migkit.errors import SimulatorError as SimulatorError  # re-exported: simulator.SimulatorError
from migkit.models import GpuModel
from migkit.simulator.records import Record, parse_state, render_state, state_records

STATE_ENV = "MIGKIT_SIM_STATE"
FAULTS_ENV = "MIGKIT_SIM_FAULTS"
LATENCY_ENV = "MIGKIT_SIM_LATENCY_MS"
LATENCY_PROFILE_ENV = "MIGKIT_SIM_LATENCY"
LATENCY_PROFILES = ("hopper-580",)
DEFAULT_DRIVER = "580.105.08"
DEFAULT_CUDA = "13.0"

MAX_STATE_BYTES = 64 * 1024 * 1024  # the C reader's limit too

# PCI buses of an 8-GPU HGX board, then a simple continuation.
_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_UUID_NAMESPACE = uuid.UUID("6d1b2f9c-4e8a-5b3d-9f0e-2a7c1e5d8b40")
_SPEC_ITEM = re.compile(r"^\s*(?:(\d+)\s*[xX*]\s*)?([A-Za-z0-9][A-Za-z0-9.+_-]*)\s*$")




def library_path() -> str:
    """Path of the compiled simulator library (load it like ``libnvidia-ml.so.1``)."""
    package = resources.files("migkit")
    for entry in package.iterdir():
        if entry.name.startswith("_nvml_sim.") and entry.name.endswith(".so"):
            return str(entry)
    raise SimulatorError(
        "the compiled simulator (migkit/_nvml_sim*.so) is missing; reinstall migkit"
    )


@functools.lru_cache(maxsize=4)
def _last_error_entry(library: str) -> Any:
    """``int migkitSimLastError(char *reason, unsigned int cap, unsigned int *line)`` of the
    simulator library loaded from ``library`` (loading the path again finds the same copy);
    ``None`` for a library without it (not migkit's simulator)."""
    import ctypes

    entry = getattr(ctypes.CDLL(library), "migkitSimLastError", None)
    if entry is None:
        return None
    entry.restype = ctypes.c_int
    entry.argtypes = (ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint))
    return entry


def state_error(state_file: str | os.PathLike[str], library: str | None = None) -> SimulatorStateError | None:
    """Why the simulator library in this process could not use its state file at its last
    try (at init, or at a later freshness check), as an error naming ``state_file`` and the
    line; ``None`` when the state in use is the file's current content.

    ``library`` is the path the library was loaded from (default: :func:`library_path`).
    """
    import ctypes

    entry = _last_error_entry(library or library_path())
    reason = ctypes.create_string_buffer(512)
    line = ctypes.c_uint(0)
    if entry is None or not entry(reason, len(reason), ctypes.byref(line)):
        return None
    text = reason.value.decode("utf-8", "replace")
    return SimulatorStateError(f"simulator state file: {text}", file=os.fspath(state_file), line=line.value or None)


def parse_spec(spec: str) -> tuple[GpuModel, ...]:
    """``"2xa100-80gb,1xl40s"`` -> the GPU models in PCI order."""
    from migkit.hardware import gpu_model

    models: list[GpuModel] = []
    for item in spec.split(","):
        match = _SPEC_ITEM.match(item)
        if match is None:
            raise SimulatorError(
                f"bad simulator spec item {item!r} in {spec!r} (expected like '8xh100-80gb')"
            )
        count = int(match.group(1) or 1)
        if count < 1:
            raise SimulatorError(f"bad GPU count in {item!r}: must be at least 1")
        try:
            model = gpu_model(match.group(2).lower())
        except UnknownModelError as err:
            raise SimulatorError(str(err)) from None
        models.extend([model] * count)
    if not models:
        raise SimulatorError("empty simulator spec")
    if len(models) > 64:
        raise SimulatorError(f"{len(models)} GPUs in {spec!r}; the simulator supports at most 64")
    return tuple(models)


def shape_mismatch(state_file: str | os.PathLike[str], spec: str) -> str | None:
    """Why the simulated node in ``state_file`` is not the node ``spec`` describes (GPU count,
    PCI ids or memory, in order), or None when it is.

    An existing state file is used as it is; giving a spec of another shape with it is a
    mistake worth saying, not one to pass over silently.
    """
    wanted = parse_spec(spec)
    gpus = sorted((r for r in read_state(state_file) if r.keyword == "gpu"), key=lambda r: r.int("index"))
    have = [(r.int("pci"), r.int("subsys"), r.int("memory")) for r in gpus]
    want = [(m.pci_device_id, m.pci_subsystem_id, m.memory_mib) for m in wanted]
    if have == want:
        return None
    names = [r.fields.get("name", "?") for r in gpus]
    held = ", ".join(f"{names.count(n)}x {n}" for n in dict.fromkeys(names)) or "no GPUs"
    return f"it holds {held}, not the node {spec!r} describes"


# --------------------------------------------------------------------------- file access


def _open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, which must be a regular file of at most 64 MiB.

    Opened non-blocking, so that a FIFO in its place is refused rather than waited on; a
    device or a directory is refused before anything is read from it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise SimulatorStateError(f"cannot open: {err.strerror}", file=path) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_STATE_BYTES:
        os.close(fd)
        what = "larger than 64 MiB" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise SimulatorStateError(f"simulator state file: {what}", file=path)
    return fd


def check_state_file(state_file: str | os.PathLike[str]) -> None:
    """Raise :class:`~migkit.errors.SimulatorStateError` unless ``state_file`` is a regular
    file of at most 64 MiB (a FIFO, a device or a directory is refused at once)."""
    os.close(_open_regular(os.fspath(state_file)))


def _read_text(path: str) -> str:
    fd = _open_regular(path)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_STATE_BYTES:
                raise SimulatorStateError("simulator state file: larger than 64 MiB", file=path)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


@contextlib.contextmanager
def locked(state_file: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the state file's lock (the C simulator takes the same one); a symlink in the lock
    file's place is not followed."""
    fd = os.open(os.fspath(state_file) + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _create_temp(tmp: str, mode: int | None) -> int:
    """``tmp`` created afresh (never through a symlink); a leftover is removed first (the link
    itself, never its target). ``mode``: the permission bits to give it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o666)
    if mode is not None:
        os.fchmod(fd, mode)
    return fd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(state_file: str) -> None:
    """Remove ``<state>.tmp.<pid>`` files left by writers that died (``kill -9``) mid-write.

    Called under the state's lock, so no live writer of this node is between creating its
    temporary file and renaming it; a file of a live process is left alone all the same.
    """
    directory, base = os.path.split(os.path.abspath(state_file))
    prefix = base + ".tmp."
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            suffix = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
            if suffix.isdigit() and int(suffix) != os.getpid() and not _pid_alive(int(suffix)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)  # the entry itself (a symlink's target is untouched)


def _write_unlocked(state_file: str, records: Sequence[Record]) -> None:
    _remove_stale_temps(state_file)
    tmp = f"{state_file}.tmp.{os.getpid()}"
    try:
        mode: int | None = stat.S_IMODE(os.stat(state_file).st_mode)
    except FileNotFoundError:
        mode = None
    fd = _create_temp(tmp, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_state(records))
        # Readers notice a new state by (inode, size, mtime); timestamps tick coarsely and
        # inodes are reused, so make the mtime strictly larger than the replaced file's (the C
        # side too).
        try:
            previous = os.stat(state_file).st_mtime_ns
        except FileNotFoundError:
            previous = 0
        stamp = max(time.time_ns(), previous + 1)
        os.utime(tmp, ns=(stamp, stamp))
        os.replace(tmp, state_file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_state(state_file: str | os.PathLike[str], spec: str | Sequence[GpuModel]) -> str:
    """Create (or overwrite) a simulated node at ``state_file``; returns its path."""
    path = os.fspath(state_file)
    models = parse_spec(spec) if isinstance(spec, str) else tuple(spec)
    label = spec if isinstance(spec, str) else ",".join(m.name for m in models)
    with locked(path):
        _write_unlocked(path, state_records(models, spec=label))
    return path


def read_state(state_file: str | os.PathLike[str]) -> list[Record]:
    path = os.fspath(state_file)
    check_state_file(path)  # before the lock file beside it is created
    with locked(path):
        return parse_state(_read_text(path))


@contextlib.contextmanager
def edit_state(state_file: str | os.PathLike[str]) -> Iterator[list[Record]]:
    """Read, let the caller change the records in place, write back — all under the lock."""
    path = os.fspath(state_file)
    check_state_file(path)
    with locked(path):
        records = parse_state(_read_text(path))
        yield records
        _write_unlocked(path, records)


def _totals(state_file: str | os.PathLike[str], keyword: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for record in read_state(state_file):
        if record.keyword == keyword:
            for key, value in record.fields.items():
                totals[key] = totals.get(key, 0) + int(value)
    return dict(sorted(totals.items()))


def stats(state_file: str | os.PathLike[str]) -> dict[str, int]:
    """``{nvml_function: call_count}`` over every process that used this node."""
    return _totals(state_file, "calls")


def charged(state_file: str | os.PathLike[str]) -> dict[str, int]:
    """``{nvml_function: nanoseconds}`` a latency profile (``MIGKIT_SIM_LATENCY``) charged,
    over every process that used this node; counted like the calls (a process's reads reach
    the file at its next mutating call or at shutdown)."""
    return _totals(state_file, "charged")


def reset_gpus(state_file: str | os.PathLike[str], gpus: Sequence[int] | None = None) -> list[int]:
    """Simulate ``nvidia-smi -r``: pending MIG modes take effect, instances are lost.

    Returns the indices reset. A GPU with a busy instance is not reset (IN_USE on real
    hardware); :class:`SimulatorError` names it.
    """
    with edit_state(state_file) as records:
        indices = [r.int("index") for r in records if r.keyword == "gpu"]
        targets = indices if gpus is None else list(gpus)
        unknown = sorted(set(targets) - set(indices))
        if unknown:
            raise SimulatorError(f"no GPU {unknown[0]} in {state_file}")
        busy = sorted(
            {
                r.int("gpu")
                for r in records
                if r.keyword in ("gi", "ci") and r.int("busy") and r.int("gpu") in targets
            }
        )
        if busy:
            raise SimulatorError(
                f"GPU {busy[0]} cannot be reset: a process is using one of its instances"
            )
        for r in records:
            if r.keyword == "gpu" and r.int("index") in targets:
                r.fields["mode"] = r.fields.get("pending", "0")
        records[:] = [
            r for r in records if not (r.keyword in ("gi", "ci") and r.int("gpu") in targets)
        ]
        _count(records, "migkitSimResetGpu", len(targets))
    return targets


def _count(records: list[Record], name: str, n: int) -> None:
    for r in records:
        if r.keyword == "calls" and name in r.fields:
            r.fields[name] = str(int(r.fields[name]) + n)
            return
    calls = next((r for r in records if r.keyword == "calls"), None)
    if calls is None:
        calls = Record("calls")
        records.append(calls)
    calls.fields[name] = str(n)


def mark_busy(
    state_file: str | os.PathLike[str],
    gpu: int,
    gi: int,
    ci: int | None = None,
    pid: int | None = None,
) -> None:
    """Mark a GPU instance (or one of its compute instances) as used by process ``pid``.

    ``pid=0`` clears the mark. NVML then answers IN_USE when it is destroyed.
    """
    value = str(os.getpid() if pid is None else pid)
    with edit_state(state_file) as records:
        for r in records:
            if r.keyword == "gi" and ci is None and r.int("gpu") == gpu and r.int("id") == gi:
                r.fields["busy"] = value
                return
            if (
                r.keyword == "ci"
                and ci is not None
                and (r.int("gpu"), r.int("gi"), r.int("id")) == (gpu, gi, ci)
            ):
                r.fields["busy"] = value
                return
    what = f"GPU {gpu} GI {gi}" + (f" CI {ci}" if ci is not None else "")
    raise SimulatorError(f"no {what} in {state_file}")


@attrs.frozen
class SimulatedNode:
    """A simulated node made by :func:`simulate`."""

    spec: str
    state_file: str
    library_path: str

    def stats(self) -> dict[str, int]:
        return stats(self.state_file)

    def charged(self) -> dict[str, int]:
        return charged(self.state_file)

    def reset_gpus(self, gpus: Sequence[int] | None = None) -> list[int]:
        return reset_gpus(self.state_file, gpus)

    def mark_busy(self, gpu: int, gi: int, ci: int | None = None, pid: int | None = None) -> None:
        mark_busy(self.state_file, gpu, gi, ci, pid)


@contextlib.contextmanager
def simulate(
    spec: str, state_file: str | os.PathLike[str] | None = None
) -> Iterator[SimulatedNode]:
    """A simulated node for the duration of the ``with`` block.

    Sets ``MIGKIT_SIM_STATE`` so that NVML clients loading the simulator library see the
    node. With ``state_file`` the node is written there and outlives the block, so other
    processes (``MIGKIT_SIM_STATE=FILE``, ``migkit.open_node(sim_state=FILE)``) share it;
    without one it lives in a temporary directory removed on exit.
    """
    tmpdir = None
    if state_file is None:
        tmpdir = tempfile.mkdtemp(prefix="migkit-sim-")
        path = os.path.join(tmpdir, "node.state")
    else:
        path = os.fspath(state_file)
    write_state(path, spec)
    previous = os.environ.get(STATE_ENV)
    os.environ[STATE_ENV] = path
    try:
        yield SimulatedNode(spec=spec, state_file=path, library_path=library_path())
    finally:
        if previous is None:
            os.environ.pop(STATE_ENV, None)
        else:
            os.environ[STATE_ENV] = previous
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m migkit.simulator", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create", help="write a fresh simulated node")
    p.add_argument("spec")
    p.add_argument("state_file")
    p = sub.add_parser("stats", help="print {nvml_function: call_count} as JSON")
    p.add_argument("state_file")
    p = sub.add_parser("show", help="print the state file")
    p.add_argument("state_file")
    p = sub.add_parser("reset", help="simulate a GPU reset (pending MIG mode takes effect)")
    p.add_argument("state_file")
    p.add_argument("gpus", nargs="*", type=int)
    p = sub.add_parser("busy", help="mark an instance as used by a process (--pid 0 clears)")
    p.add_argument("state_file")
    p.add_argument("gpu", type=int)
    p.add_argument("gi", type=int)
    p.add_argument("ci", type=int, nargs="?")
    p.add_argument("--pid", type=int)
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            print(write_state(args.state_file, args.spec))
        elif args.command == "stats":
            print(json.dumps(stats(args.state_file), indent=2))
        elif args.command == "show":
            print(render_state(read_state(args.state_file)), end="")
        elif args.command == "reset":
            reset_gpus(args.state_file, args.gpus or None)
        elif args.command == "busy":
            mark_busy(args.state_file, args.gpu, args.gi, args.ci, args.pid)
    except (MigkitError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

