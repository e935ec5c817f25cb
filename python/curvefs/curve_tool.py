"""``curve``: upstream Curve's ``curve`` tool (``curvefs_python/curvefs_tool.py``), on curvefs.

The same subcommands, options, output lines and exit status as upstream's, so scripts that
drive it (upstream's ``curvefs_python/test.py`` among them) run unchanged::

    curve [--confpath PATH] create|delete|recover|extend|stat|rename|mkdir|rmdir|list ...

A call that fails prints ``<subcommand> fail, ret = <code>, <NAME>`` and exits 1; a conf that
``Init`` refuses prints ``init fail`` and exits 1; bad arguments exit 2 (argparse). The
default ``--confpath`` is ``$CURVEFS_CONF`` if set, else ``/etc/curve/client.conf``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import curvefs
from curvefs.exceptions import CurveError, error_name

__all__ = ["get_parser", "main"]

CONF_ENV = "CURVEFS_CONF"
DEFAULT_CONF = "/etc/curve/client.conf"
GiB = 1 << 30

# Indexed by FileInfo_t.filetype and .fileStatus, as upstream's tool prints them.
FILE_TYPES = (
    "INODE_DIRECTORY",
    "INODE_PAGEFILE",
    "INODE_APPENDFILE",
    "INODE_APPENDECFILE",
    "INODE_SNAPSHOT_PAGEFILE",
)
FILE_STATUSES = ("Created", "Deleting", "Cloning", "CloneMetaInstalled", "Cloned", "BeingCloned")

# The codes upstream's tool has a name for; any other prints "Unknown Error Code".
_NAMED_CODES = frozenset([*range(30), 100])


def code_message(ret: int) -> str:
    """The name upstream's tool prints after a failing code."""
    return error_name(ret) if -ret in _NAMED_CODES else "Unknown Error Code"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curve", description="Manage the files of a Curve cluster (upstream's curve tool)."
    )
    parser.add_argument(
        "--confpath",
        type=str,
        default=os.environ.get(CONF_ENV) or DEFAULT_CONF,
        help=f"the client.conf to use (default: ${CONF_ENV}, else {DEFAULT_CONF})",
    )
    sub = parser.add_subparsers(dest="optype", required=True, metavar="COMMAND")

    def command(name: str, help: str, target: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--user", type=str, required=True, help=f"owner of the {target}")
        if target == "file":
            p.add_argument("--filename", type=str, required=True, help="path of the file")
        else:
            p.add_argument("--dirname", type=str, required=True, help="path of the directory")
        p.add_argument("--password", type=str, help="password of the user (root needs it)")
        return p

    create = command("create", "create a file", "file")
    create.add_argument("--length", type=int, required=True, help="size in GiB")
    create.add_argument("--stripeUnit", type=int, help="stripe unit in bytes")
    create.add_argument("--stripeCount", type=int, help="stripe width")
    command("delete", "delete a file (it goes to /RecycleBin)", "file")
    recover = command("recover", "recover a file from /RecycleBin", "file")
    recover.add_argument("--id", type=int, help="inode id of the file")
    extend = command("extend", "extend a file", "file")
    extend.add_argument("--length", type=int, required=True, help="new size in GiB")
    command("stat", "print a file's attributes", "file")
    rename = command("rename", "rename a file", "file")
    rename.add_argument("--newname", type=str, required=True, help="new path of the file")
    command("mkdir", "create a directory", "dir")
    command("rmdir", "delete an empty directory", "dir")
    command("list", "print the names in a directory", "dir")
    return parser


def _name(table: tuple[str, ...], index: int) -> str:
    return table[index] if 0 <= index < len(table) else str(index)


def _stat(cbd: curvefs.CBDClient, args: argparse.Namespace, user: curvefs.UserInfo_t) -> int:
    info = curvefs.FileInfo_t()
    ret = cbd.StatFile(args.filename, user, info)
    if ret == 0:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.ctime // 1_000_000))
        print(f"id: {info.id}")
        print(f"parentid: {info.parentid}")
        print(f"filetype: {_name(FILE_TYPES, info.filetype)}")
        print(f"length(GB): {info.length // GiB}")
        print(f"createtime: {created}")
        print(f"user: {info.owner}")
        print(f"filename: {info.filename}")
        print(f"fileStatus: {_name(FILE_STATUSES, info.fileStatus)}")
        print(f"stripeUnit: {info.stripeUnit}")
        print(f"stripeCount: {info.stripeCount}")
        # curvefs's addition, only for lazy clones: other files print as upstream's tool.
        if info.cloneSource:
            print(f"cloneSource: {info.cloneSource}")
            print(f"cloneLength(GB): {info.cloneLength // GiB}")
    return ret


def _run(cbd: curvefs.CBDClient, args: argparse.Namespace, user: curvefs.UserInfo_t) -> int:
    op = args.optype
    if op == "create":
        if args.stripeUnit or args.stripeCount:
            return cbd.Create2(
                args.filename, user, args.length * GiB, args.stripeUnit or 0, args.stripeCount or 0
            )
        return cbd.Create(args.filename, user, args.length * GiB)
    if op == "delete":
        return cbd.Unlink(args.filename, user)
    if op == "recover":
        return cbd.Recover(args.filename, user, args.id or 0)
    if op == "extend":
        return cbd.Extend(args.filename, user, args.length * GiB)
    if op == "stat":
        return _stat(cbd, args, user)
    if op == "rename":
        return cbd.Rename(user, args.filename, args.newname)
    if op == "mkdir":
        return cbd.Mkdir(args.dirname, user)
    if op == "rmdir":
        return cbd.Rmdir(args.dirname, user)
    # list
    try:
        names = cbd.Listdir(args.dirname, user)
    except CurveError as err:
        return err.code
    for entry in names:
        print(entry)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    cbd = curvefs.CBDClient()
    if cbd.Init(args.confpath) != 0:
        print("init fail", flush=True)
        return 1
    try:
        user = curvefs.UserInfo_t(args.user, args.password or "")
        ret = _run(cbd, args, user)
    finally:
        cbd.UnInit()
    if ret != 0:
        print(f"{args.optype} fail, ret = {ret}, {code_message(ret)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
