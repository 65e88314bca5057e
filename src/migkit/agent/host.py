"""Side effects on the host: systemd services, the override drop-in, reboot, the CDI step.

Every host command goes through a :class:`Runner`, an argv prefix (``chroot /host`` by
default), so tests swap the host without touching the agent's logic.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from typing import Protocol

import attrs
import yaml

log = logging.getLogger("migkit.agent")


class HostError(Exception):
    """A host command failed or the host's files could not be read or written."""


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, timeout: float = ...) -> subprocess.CompletedProcess[str]: ...


@attrs.frozen
class PrefixRunner:
    """Runs ``[*prefix, *argv]``; the prefix is how a command reaches the host."""

    prefix: tuple[str, ...]

    def __call__(self, argv: Sequence[str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        full = [*self.prefix, *argv]
        try:
            return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise HostError(f"{' '.join(full)}: {err}") from None


def load_gpu_clients(path: str | None) -> tuple[str, ...]:
    """The systemd services of a ``{version: v1, systemd-services: [...]}`` file; () when unset."""
    if not path:
        return ()
    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise HostError(f"GPU clients file {path}: {err}") from None
    if doc is None:
        return ()
    if not isinstance(doc, dict) or doc.get("version") != "v1":
        raise HostError(f"GPU clients file {path}: expected a mapping with version: v1")
    services = doc.get("systemd-services") or []
    if not isinstance(services, list) or not all(isinstance(s, str) and s for s in services):
        raise HostError(f"GPU clients file {path}: systemd-services must be a list of unit names")
    return tuple(services)


@attrs.define
class Host:
    """The host's systemd and reboot, reached through ``runner``."""

    runner: Runner
    root: str
    reboot_command: tuple[str, ...] = ("reboot",)

    def _run(self, argv: Sequence[str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        proc = self.runner(argv, timeout=timeout)
        log.debug("host: %s -> exit %s", " ".join(argv), proc.returncode)
        return proc

    def is_active(self, service: str) -> bool:
        return self._run(["systemctl", "is-active", "--quiet", service]).returncode == 0

    def stop_active(self, services: Sequence[str]) -> list[str]:
        """Stop each active service, in order; the ones stopped (restart those later).

        Raises :class:`HostError` on the first stop that fails, with ``stopped`` so far attached.
        """
        stopped: list[str] = []
        for service in services:
            if not self.is_active(service):
                continue
            proc = self._run(["systemctl", "stop", service])
            if proc.returncode != 0:
                err = HostError(f"systemctl stop {service}: exit {proc.returncode}: {proc.stderr.strip()}")
                err.stopped = stopped  # type: ignore[attr-defined]
                raise err
            stopped.append(service)
        return stopped

    def start(self, services: Sequence[str]) -> list[str]:
        """Start services (in reverse stop order); the problems, empty when all started."""
        problems = []
        for service in reversed(list(services)):
            try:
                proc = self._run(["systemctl", "start", service])
            except HostError as err:
                problems.append(str(err))
                continue
            if proc.returncode != 0:
                problems.append(f"systemctl start {service}: exit {proc.returncode}: {proc.stderr.strip()}")
        return problems

    def write_selected_config(self, state_file: str, selected: str) -> bool:
        """Write the host drop-in selecting ``selected`` if the host has one; True when written.

        systemd reads the file when it reloads, so the file is written first; a failed reload puts
        the previous content back, so the file never names a config the host did not take.
        """
        path = os.path.join(self.root, state_file.lstrip("/"))
        if not os.path.exists(path):
            return False
        try:
            with open(path, encoding="utf-8") as handle:
                before = handle.read()
            text = f'[Service]\nEnvironment="MIG_PARTED_SELECTED_CONFIG={selected}"\n'
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as err:
            raise HostError(f"host state file {path}: {err}") from None
        proc = self._run(["systemctl", "daemon-reload"])
        if proc.returncode != 0:
            try:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(before)
            except OSError:
                pass
            raise HostError(f"systemctl daemon-reload: exit {proc.returncode}: {proc.stderr.strip()}")
        return True

    def reboot(self) -> None:
        proc = self._run(self.reboot_command, timeout=60.0)
        if proc.returncode != 0:
            raise HostError(f"{' '.join(self.reboot_command)}: exit {proc.returncode}: {proc.stderr.strip()}")


def run_local(argv: Sequence[str], timeout: float = 300.0) -> None:
    """Run a command in the agent's own container (the CDI step); HostError on failure."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise HostError(f"{' '.join(argv)}: {err}") from None
    if proc.returncode != 0:
        raise HostError(f"{' '.join(argv)}: exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-500:]}")
