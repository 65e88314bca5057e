"""Without an NVIDIA driver, migkit imports fine and says clearly why it cannot open a node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from migkit.nvml import _binding as _nvml

_SCRUBBED = ("MIGKIT_NVML_LIBRARY", "MIGKIT_SIM_STATE", "MIGKIT_SIMULATE", "LD_PRELOAD", "LD_LIBRARY_PATH")


def _run(code: str, **env: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter with no NVML hints in its environment."""
    environment = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _driver_present() -> bool:
    import ctypes.util

    if ctypes.util.find_library("nvidia-ml"):
        return True
    return any(os.path.exists(p) for p in _nvml.candidate_paths()[1:])


PROBE = """
    import json, migkit
    maps = open("/proc/self/maps").read()
    out = {"mapped_at_import": "libnvidia-ml" in maps or "_nvml_sim" in maps}
    try:
        migkit.open_node()
    except migkit.NvmlLibraryNotFound as err:
        out.update(error=str(err), paths=list(err.paths), type=type(err).__name__)
    else:
        out.update(error=None)
    print(json.dumps(out))
"""


@pytest.mark.skipif(_driver_present(), reason="a real libnvidia-ml is installed here")
def test_open_node_without_driver_names_every_path_and_the_override() -> None:
    """open_node() raises NvmlLibraryNotFound naming libnvidia-ml.so.1, each path, the override."""
    out = _run(PROBE)
    assert out["mapped_at_import"] is False
    assert out["type"] == "NvmlLibraryNotFound"
    message = str(out["error"])
    assert "libnvidia-ml.so.1" in message and "MIGKIT_NVML_LIBRARY" in message
    paths = out["paths"]
    assert isinstance(paths, list) and paths[0] == "libnvidia-ml.so.1"
    for path in paths:
        assert f"{path}: " in message  # every path with the loader's reason
    assert "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1" in paths


def test_override_path_that_does_not_exist_is_reported() -> None:
    """MIGKIT_NVML_LIBRARY pointing nowhere: the error names that path and the variable."""
    missing = "/nonexistent/driver/libnvidia-ml.so.1"
    out = _run(PROBE, MIGKIT_NVML_LIBRARY=missing)
    assert out["mapped_at_import"] is False
    message = str(out["error"])
    assert missing in message and "MIGKIT_NVML_LIBRARY" in message
    assert "No such file" in message
    assert out["paths"] == [missing]


def test_a_file_that_is_not_nvml_is_refused_with_the_reason(tmp_path: object) -> None:
    """A shared library without the NVML entry points is not accepted as libnvidia-ml."""
    import migkit._nvml_shim_cffi as shim_module

    not_nvml = shim_module.__file__
    out = _run(PROBE, MIGKIT_NVML_LIBRARY=str(not_nvml))
    assert "not an NVML library" in str(out["error"])


def test_importing_every_module_loads_no_library() -> None:
    """Importing migkit and its NVML layers does not open libnvidia-ml (only first use does)."""
    out = _run(
        """
        import json, migkit, migkit.nvml.node, migkit.nvml._binding
        maps = open("/proc/self/maps").read()
        print(json.dumps({"mapped": "libnvidia-ml" in maps or "_nvml_sim" in maps,
                          "loaded": migkit.nvml._binding.lib.shim_is_loaded()}))
        """
    )
    assert out == {"mapped": False, "loaded": 0}
