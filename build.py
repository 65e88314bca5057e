"""cffi build script: the NVML shim (API mode, out of line) and the NVML simulator.

The shim's declarations are read from ``src/_nvml_shim.h`` so that its C helpers stay
``static`` in ``src/_nvml_shim.c``. The simulator (every ``.c`` file of ``src/_nvml_sim/``,
sharing the internal header ``sim.h``) is built as a second extension whose only purpose is
to be a shared library exporting the NVML symbols; its soname is ``libnvidia-ml.so.1`` so
that any NVML client in the same process finds it, and everything but those symbols is
hidden.
"""

from __future__ import annotations

import pathlib
import re

import cffi

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE / "src"
SIM_DIR = SRC / "_nvml_sim"
STRICT = ["-Wall", "-Wextra", "-Werror", "-O2", "-std=gnu11"]


def _cdef_from_header(path: pathlib.Path) -> str:
    """Keep only the declarations between the CDEF markers of the header."""
    text = path.read_text()
    match = re.search(r"/\* CDEF-BEGIN \*/(.*)/\* CDEF-END \*/", text, re.S)
    if match is None:
        raise RuntimeError(f"{path}: CDEF-BEGIN/CDEF-END markers not found")
    return match.group(1)


shim_ffibuilder = cffi.FFI()
shim_ffibuilder.cdef(_cdef_from_header(SRC / "_nvml_shim.h"))
shim_ffibuilder.set_source(
    "migkit._nvml_shim_cffi",
    '#include "_nvml_shim.h"',
    sources=[str((SRC / "_nvml_shim.c").relative_to(HERE))],
    include_dirs=[str(SRC.relative_to(HERE))],
    extra_compile_args=STRICT,
    libraries=["dl", "pthread"],
)

sim_ffibuilder = cffi.FFI()
sim_ffibuilder.cdef("")
sim_ffibuilder.set_source(
    "migkit._nvml_sim",
    "",
    sources=[str(path.relative_to(HERE)) for path in sorted(SIM_DIR.glob("*.c"))],
    include_dirs=[str(SIM_DIR.relative_to(HERE))],
    depends=[str((SIM_DIR / "sim.h").relative_to(HERE))],
    extra_compile_args=[*STRICT, "-fvisibility=hidden"],
    extra_link_args=["-Wl,-soname,libnvidia-ml.so.1"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    shim_ffibuilder.compile(verbose=True)
    sim_ffibuilder.compile(verbose=True)
