"""Fleet operations above the node agent: ``migkit rollout`` and ``migkit cluster status``.

Needs the ``k8s`` extra (``pip install 'migkit[k8s]'``) for the official ``kubernetes`` client;
nothing of it is imported until a command runs. The offline parts (:mod:`migkit.fleet.fit`,
:mod:`migkit.fleet.progress`) are pure and need no cluster.
"""

from __future__ import annotations

from collections.abc import Sequence

EXTRA_HINT = "pip install 'migkit[k8s]'"


def main(command: str, argv: Sequence[str]) -> int:
    """Run ``migkit rollout`` (``command="rollout"``) or ``migkit cluster`` (``"cluster"``); 2 when
    the extra is not installed."""
    import importlib.util
    import sys

    if importlib.util.find_spec("kubernetes") is None:
        print(f"migkit {command}: error: this command needs the k8s extra (kubernetes is missing): {EXTRA_HINT}",
              file=sys.stderr)
        return 2
    from migkit.fleet.commands import main as run

    return run(command, argv)


__all__ = ["EXTRA_HINT", "main"]
