"""Entry point of one local-cluster server process (used by ``LocalCluster``).

``python -m curvefs._serve mds --dir DIR [--index I]`` or ``... chunkserver --id N --dir
DIR`` serves until SIGTERM or SIGINT. ``--listen-fd FD`` hands the server its listening
socket, bound by the starter; without it the server binds its port itself. ``--lifeline-fd
FD`` is the read end of a pipe only the starter writes to: the server stops when it closes,
that is when the starter is gone, however it ended. The server
prints its state on stdout (``serving``, or ``standby`` for an MDS while another is
active, then ``serving`` once it takes over; ``deposed`` for an MDS that lost its lease)
and runs in the Rust core with the GIL released.
"""

from __future__ import annotations

import argparse
import sys

from curvefs import _core


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m curvefs._serve")
    sub = parser.add_subparsers(dest="server", required=True)
    mds = sub.add_parser("mds", help="serve an MDS of the cluster in DIR")
    mds.add_argument("--dir", required=True)
    mds.add_argument("--index", type=int, default=0, help="which MDS (0: the first)")
    cs = sub.add_parser("chunkserver", help="serve chunkserver ID of the cluster in DIR")
    cs.add_argument("--id", type=int, required=True)
    cs.add_argument("--dir", required=True)
    sc = sub.add_parser("snapshotclone", help="serve the snapshot/clone service of DIR")
    sc.add_argument("--dir", required=True)
    sc.add_argument("--index", type=int, default=0, help="which instance (0: the first)")
    for p in (mds, cs, sc):
        p.add_argument("--listen-fd", type=int, default=None, help="an inherited bound socket")
        p.add_argument(
            "--lifeline-fd", type=int, default=None, help="stop when this inherited pipe closes"
        )
    args = parser.parse_args(argv)
    try:
        if args.server == "mds":
            _core.serve_mds(args.dir, args.index, args.listen_fd, args.lifeline_fd)
        elif args.server == "snapshotclone":
            _core.serve_snapshot_clone(args.dir, args.index, args.listen_fd, args.lifeline_fd)
        else:
            _core.serve_chunkserver(args.dir, args.id, args.listen_fd, args.lifeline_fd)
    except (OSError, ValueError, OverflowError) as e:
        print(f"curvefs {args.server}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
