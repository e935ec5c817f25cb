"""The ``curvefs`` command line: ``curvefs cluster start --dir DIR``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from curvefs.testing import LocalCluster


def _cluster_start(args: argparse.Namespace) -> int:
    cluster = LocalCluster(
        args.dir,
        chunkservers=args.chunkservers,
        copysets=args.copysets,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster.start()
    try:
        print(cluster.conf_path, flush=True)
        print(
            f"curvefs local cluster: MDS {cluster.mds_addr}, "
            f"{len(cluster.chunkserver_ids)} chunkservers, data in {cluster.data_dir}; "
            "Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        cluster.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="curvefs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cluster = sub.add_parser("cluster", help="the local Curve cluster")
    cluster_sub = cluster.add_subparsers(dest="action", required=True)
    start = cluster_sub.add_parser(
        "start", help="start a local cluster in DIR, print its client.conf path, run until Ctrl-C"
    )
    start.add_argument("--dir", required=True, help="data folder, created or reused")
    start.add_argument("--chunkservers", type=int, default=3)
    start.add_argument("--copysets", type=int, default=100)
    args = parser.parse_args(argv)
    if args.command == "cluster" and args.action == "start":
        return _cluster_start(args)
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
