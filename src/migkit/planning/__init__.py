"""Offline planning: profile resolution, coverage, the placement solver and node plans.

Pure functions of their inputs: imports ``config``, ``hardware``, ``names``, ``models`` and
``errors``; never ``nvml``, ``apply`` or the simulator. Modules:

- ``profiles``: resolve a profile name against one GPU's tables;
- ``coverage``: which config entry governs which GPU;
- ``solver``: exact placement of GPU and compute instances;
- ``plan``: a plan per GPU and per node, and its text/JSON rendering;
- ``render``: profile tables like ``nvidia-smi mig -lgip`` / ``-lgipp``.
"""
