"""Thin typed wrapper over the compiled NVML shim (``src/_nvml_shim.c``), in three parts.

No policy lives here: NVML return codes become :class:`~migkit.errors.NvmlError` subclasses,
C structs become the frozen models of :mod:`migkit.models`, and every bulk operation is one
call into C (which releases the GIL around the NVML work).

- :mod:`migkit.nvml._library`: the compiled module, loading libnvidia-ml, return codes;
- :mod:`migkit.nvml._decode` and :mod:`migkit.nvml._snapshot`: the snapshot and its decoding;
- :mod:`migkit.nvml._bulk`: the bulk changes (their request and result types are named by
  :mod:`migkit.nvml.node`).

This module is the one name the layers above import them by.
"""

from __future__ import annotations

from migkit.nvml._bulk import (
    create_compute_instances,
    create_gpu_instances,
    destroy_compute_instances,
    destroy_gpu_instances,
    set_mig_mode,
)
from migkit.nvml._library import (
    LIBRARY_DIRS,
    LIBRARY_ENV,
    READ_ONLY_ENV,
    SONAME,
    STATUS_NOT_ATTEMPTED,
    STATUS_READ_ONLY,
    candidate_paths,
    device_count,
    error_string,
    ffi,
    has_symbol,
    init,
    lib,
    load,
    loaded_library_path,
    nvml_error,
    read_only,
    shutdown,
)
from migkit.nvml._snapshot import BundledModel, Snapshotter

__all__ = [
    "LIBRARY_DIRS",
    "LIBRARY_ENV",
    "READ_ONLY_ENV",
    "SONAME",
    "STATUS_NOT_ATTEMPTED",
    "STATUS_READ_ONLY",
    "BundledModel",
    "Snapshotter",
    "candidate_paths",
    "create_compute_instances",
    "create_gpu_instances",
    "destroy_compute_instances",
    "destroy_gpu_instances",
    "device_count",
    "error_string",
    "ffi",
    "has_symbol",
    "init",
    "lib",
    "load",
    "loaded_library_path",
    "nvml_error",
    "read_only",
    "set_mig_mode",
    "shutdown",
]
