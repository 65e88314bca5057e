"""``migkit agent``: the Kubernetes node agent (the GPU Operator's MIG Manager, done by migkit).

Needs the ``k8s`` extra (``pip install 'migkit[k8s]'``): the official ``kubernetes`` client and
``prometheus-client``. Neither is imported until the agent runs.
"""

from __future__ import annotations

from collections.abc import Sequence

EXTRA_HINT = "pip install 'migkit[k8s]'"


def missing_extra() -> str | None:
    """The name of a missing extra's package, or None when the agent can run."""
    import importlib.util

    for module in ("kubernetes", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            return module
    return None


def main(argv: Sequence[str]) -> int:
    """Run the agent with these arguments; 2 when the extra is not installed."""
    import sys

    missing = missing_extra()
    if missing is not None:
        print(f"migkit agent: error: the agent needs the k8s extra ({missing} is missing): {EXTRA_HINT}",
              file=sys.stderr)
        return 2
    from migkit.agent.runtime import main as run

    return run(argv)


__all__ = ["EXTRA_HINT", "main", "missing_extra"]
