"""Entry point of one local-cluster server process (used by ``LocalCluster``).

``python -m curvefs._serve mds --dir DIR`` or ``... chunkserver --id N --dir DIR`` serves
until SIGTERM or SIGINT. The server runs in the Rust core with the GIL released.
"""

from __future__ import annotations

import argparse
import sys

from curvefs import _core


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m curvefs._serve")
    sub = parser.add_subparsers(dest="server", required=True)
    mds = sub.add_parser("mds", help="serve the MDS of the cluster in DIR")
    mds.add_argument("--dir", required=True)
    cs = sub.add_parser("chunkserver", help="serve chunkserver ID of the cluster in DIR")
    cs.add_argument("--id", type=int, required=True)
    cs.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.server == "mds":
            _core.serve_mds(args.dir)
        else:
            _core.serve_chunkserver(args.dir, args.id)
    except OSError as e:
        print(f"curvefs {args.server}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
