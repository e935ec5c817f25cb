"""The curvefs demo: Curve's Python SDK examples, run against a local cluster.

    python examples/demo.py              # a throwaway cluster in a temporary folder
    python examples/demo.py --dir DIR    # a cluster persisted in DIR (reused if present)
    python examples/demo.py --conf PATH  # an existing cluster's client.conf

Every call below is the original SDK's call, as its documentation shows it, in Python 3.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import uuid

import curvefs
from curvefs.testing import LocalCluster

GiB = 1024 * 1024 * 1024


def run(conf_path: str) -> int:
    cbd = curvefs.CBDClient()
    assert cbd.Init(conf_path) == 0, "Init failed"
    print("cluster id:", cbd.GetClusterId())

    user = curvefs.UserInfo_t()
    user.owner = "curve"
    user.password = ""
    tag = uuid.uuid4().hex[:8]
    vol = f"/demo-{tag}"
    folder = f"/demodir-{tag}"

    print("Create", vol, "->", cbd.Create(vol, user, 10 * GiB))
    finfo = curvefs.FileInfo_t()
    print("StatFile ->", cbd.StatFile(vol, user, finfo))
    print("  filetype", finfo.filetype, "length", finfo.length, "ctime", finfo.ctime)
    print("Extend to 20 GiB ->", cbd.Extend(vol, user, 20 * GiB))
    cbd.StatFile(vol, user, finfo)
    print("  length", finfo.length)

    fd = cbd.Open(vol, user)
    print("Open ->", fd)
    print("Write ->", cbd.Write(fd, "aaaaaaaa" * 512, 0, 4096))
    print("Write ->", cbd.Write(fd, "bbbbbbbb" * 512, 4096, 4096))
    data = cbd.Read(fd, "", 0, 8192)
    assert isinstance(data, bytes)
    print("Read ->", data[:8], "...", data[4096:4104], f"({len(data)} bytes)")
    print("Close ->", cbd.Close(fd))

    print("Mkdir", folder, "->", cbd.Mkdir(folder, user))
    moved = f"{folder}/volume"
    print("Rename ->", cbd.Rename(user, vol, moved))
    print("Listdir ->", cbd.Listdir(folder, user))
    print("Unlink ->", cbd.Unlink(moved, user))
    print("Recover ->", cbd.Recover(moved, user, 0))
    cbd.StatFile(moved, user, finfo)
    print("  recovered", finfo.filename, "id", finfo.id)
    fd = cbd.Open(moved, user)
    again = cbd.Read(fd, "", 0, 4096)
    print("  data kept:", again == b"a" * 4096)
    cbd.Close(fd)
    print("Rmdir of a non-empty folder ->", cbd.Rmdir(folder, user), "(NOT_EMPTY is -12)")
    print("Unlink ->", cbd.Unlink(moved, user))
    print("Rmdir ->", cbd.Rmdir(folder, user))
    cbd.UnInit()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dir", help="data folder of the local cluster")
    parser.add_argument("--conf", help="client.conf of a running cluster")
    args = parser.parse_args()
    if args.conf:
        return run(args.conf)
    with LocalCluster(args.dir) as cluster:
        print("local cluster:", cluster.mds_addr, "conf:", cluster.conf_path)
        with contextlib.suppress(KeyboardInterrupt):
            return run(cluster.conf_path)
    return 1


if __name__ == "__main__":
    sys.exit(main())
