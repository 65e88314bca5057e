"""The command lines of ``migkit rollout`` and ``migkit cluster status``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any


def _rollout_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="migkit rollout",
        description="Change the MIG config of the selected nodes in waves, checked offline first; "
                    "resumable (progress lives in node annotations).",
    )
    p.add_argument("-l", "--selector", required=True, help="label selector of the nodes, e.g. pool=gpu-a")
    p.add_argument("-c", "--config", required=True, help="the MIG config name to set (nvidia.com/mig.config)")
    p.add_argument("--max-unavailable", default="1", metavar="N|P%",
                   help="nodes changed at once: a number or a percentage of the selected nodes (default 1)")
    p.add_argument("--cordon", action="store_true", help="cordon each node first; uncordon it after success")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="per-node wait for nvidia.com/mig.config.state (default 600)")
    p.add_argument("--max-failures", type=int, default=0, metavar="N",
                   help="failed nodes tolerated before stopping (default 0: stop at the first)")
    p.add_argument("--retry-failed", action="store_true", help="label again the nodes this rollout left failed")
    p.add_argument("--dry-run", action="store_true", help="check and print the waves; change nothing")
    p.add_argument("-f", "--config-file", help="check against this file instead of each node's published config")
    p.add_argument("-n", "--namespace", default=os.environ.get("MIGKIT_AGENT_NAMESPACE", "gpu-operator"),
                   help="namespace of the agents' <node>-mig-config ConfigMaps (default gpu-operator)")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig (default $KUBECONFIG, "
                   "else in-cluster)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return p


def _cluster_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migkit cluster", description="Fleet views.")
    sub = p.add_subparsers(dest="view", required=True)
    s = sub.add_parser("status", help="every MIG node: config, state, last transition, GPUs, configs that fit")
    s.add_argument("-l", "--selector", default="", help="label selector (default: all nodes)")
    s.add_argument("-n", "--namespace", default=os.environ.get("MIGKIT_AGENT_NAMESPACE", "gpu-operator"),
                   help="namespace of the agents' ConfigMaps (default gpu-operator)")
    s.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    s.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return p


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(command: str, argv: Sequence[str]) -> int:
    from migkit.fleet.kube import Cluster, KubeError

    parser = _rollout_parser() if command == "rollout" else _cluster_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:
        return 0 if exit_.code == 0 else 2
    if command == "rollout":
        from migkit.fleet.progress import wave_size

        try:
            wave_size(args.max_unavailable, 100)
        except ValueError as err:
            print(f"migkit rollout: error: {err}", file=sys.stderr)
            return 2
        if args.max_failures < 0 or args.timeout <= 0:
            print("migkit rollout: error: --max-failures must be 0 or more and --timeout above 0", file=sys.stderr)
            return 2
    prog = "migkit rollout" if command == "rollout" else f"migkit cluster {args.view}"
    try:
        cluster = Cluster.connect(args.kubeconfig)
    except Exception as err:  # the client raises several unrelated types for a bad kubeconfig
        print(f"{prog}: error: cannot load the cluster configuration: {err}", file=sys.stderr)
        return 2
    if command == "rollout":
        from migkit.fleet import rollout

        options = rollout.RolloutOptions(
            selector=args.selector, config=args.config, max_unavailable=args.max_unavailable, cordon=args.cordon,
            timeout=args.timeout, max_failures=args.max_failures, dry_run=args.dry_run,
            namespace=args.namespace, config_file=args.config_file, retry_failed=args.retry_failed,
            output=args.output,
        )
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return rollout.run(options, cluster)
        finally:
            signal.signal(signal.SIGTERM, previous)
    from migkit.fleet import status

    try:
        rows = status.collect(cluster, args.namespace, args.selector)
    except KubeError as err:
        print(f"migkit cluster status: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(status.render_json(rows) if args.output == "json" else status.render_text(rows))
    return 0


__all__ = ["main"]
