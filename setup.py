"""cffi wiring only; all other metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["build.py:shim_ffibuilder", "build.py:sim_ffibuilder"])
