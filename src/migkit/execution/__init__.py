"""The apply layer (named ``execution`` so that ``migkit.apply`` can be the public function).

Making a node match a config: actions, the per-GPU transaction and rollback, reports,
host work (lock file, resets) and the orchestration across GPUs.

Imports the pure layers, ``nvml`` and ``hooks``; the simulator never.
"""
