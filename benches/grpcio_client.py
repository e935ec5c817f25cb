"""A pure-Python Curve block client on ``grpcio``: what a Python user without curvefs would write.

It is the yardstick of ``benches/bench_compare.py``, not part of curvefs: it does the IO a
competent developer would do with the code ``grpcio-tools`` generates from ``protos/``, and
nothing more — OpenFile, a RefreshSession thread at a quarter of the lease, CloseFile;
GetOrAllocateSegment with a segment cache; GetChunkServerListInCopySets (every copyset of a
segment in one call) and CliService2.GetLeader with a leader cache, corrected on REDIRECTED;
ReadChunk/WriteChunk with the data in field 1000 ``attachment`` (how curvefs's local
chunkservers carry data over gRPC, see protos/chunk.proto), one request per chunk piece, so
a 1 MiB IO inside a chunk is one request; pieces of an IO that spans chunks are sent
concurrently. Threads share one client: grpcio channels and stubs are thread-safe.

It talks to curvefs's local cluster only: a stock chunkserver would get its WriteChunk
without data (see the README). No retries beyond leader changes, no striping, no
snapshots, no error codes beyond an exception: the benchmark needs none of them.

The protobuf modules are generated at run time into a temporary folder (``generate()``), so
no generated code lives in the repository.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import importlib
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

PROTOS = Path(__file__).resolve().parent.parent / "protos"
_NEEDED = ("common", "nameserver2", "topology", "chunk", "cli2")
_generated: dict[str, ModuleType] = {}
_gen_lock = threading.Lock()

RPC_TIMEOUT = 8.0
MAX_MESSAGE = 128 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.enable_http_proxy", 0),
]

# curve.mds.StatusCode values used here.
K_OK = 0
K_SEGMENT_NOT_ALLOCATED = 107


def generate() -> dict[str, ModuleType]:
    """``*_pb2`` and ``*_pb2_grpc`` of the protos this client needs, generated once per process."""
    with _gen_lock:
        if _generated:
            return _generated
        from grpc_tools import protoc

        out = tempfile.mkdtemp(prefix="curvefs-grpcio-")
        files = [str(PROTOS / f"{name}.proto") for name in _NEEDED]
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTOS}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                *files,
            ]
        )
        if rc != 0:
            raise RuntimeError(f"grpc_tools.protoc failed with {rc}")
        # The generated modules import each other by their top-level names.
        sys.path.insert(0, out)
        for name in _NEEDED:
            _generated[f"{name}_pb2"] = importlib.import_module(f"{name}_pb2")
            _generated[f"{name}_pb2_grpc"] = importlib.import_module(f"{name}_pb2_grpc")
        return _generated


def signature(owner: str, password: str, date: int) -> str:
    """Only root signs: base64(HMAC-SHA256(password, "<date>:<owner>")); others send ""."""
    if owner != "root" or not password:
        return ""
    mac = hmac.new(password.encode(), f"{date}:{owner}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def now_us() -> int:
    return time.time_ns() // 1000


class CurveRpcError(RuntimeError):
    pass


@dataclass
class Segment:
    logical_pool_id: int
    chunks: list[tuple[int, int]]  # (chunkID, copysetID) in offset order; empty: a hole


@dataclass
class Copyset:
    peers: list[str]  # "ip:port"
    leader: str | None = None


class GrpcioClient:
    """One MDS channel, one channel per chunkserver, shared by every thread."""

    def __init__(self, mds_addr: str, user: str, password: str = "") -> None:
        self.pb = generate()
        self.user, self.password = user, password
        self._mds = grpc.insecure_channel(mds_addr, options=CHANNEL_OPTIONS)
        self.fs = self.pb["nameserver2_pb2_grpc"].CurveFSServiceStub(self._mds)
        self.topo = self.pb["topology_pb2_grpc"].TopologyServiceStub(self._mds)
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._chunk_stubs: dict[str, Any] = {}
        self._cli_stubs: dict[str, Any] = {}
        self._copysets: dict[tuple[int, int], Copyset] = {}

    def _auth(self) -> dict[str, Any]:
        date = now_us()
        return {
            "owner": self.user,
            "date": date,
            "signature": signature(self.user, self.password, date),
        }

    def create(self, path: str, size: int) -> None:
        ns = self.pb["nameserver2_pb2"]
        req = ns.CreateFileRequest(
            fileName=path, fileType=ns.INODE_PAGEFILE, fileLength=size, **self._auth()
        )
        code = self.fs.CreateFile(req, timeout=RPC_TIMEOUT).statusCode
        if code not in (K_OK, 101):  # kFileExists is fine
            raise CurveRpcError(f"CreateFile {path}: {code}")

    def open(self, path: str) -> GrpcioFile:
        ns = self.pb["nameserver2_pb2"]
        req = ns.OpenFileRequest(fileName=path, clientVersion="1.0.0", **self._auth())
        resp = self.fs.OpenFile(req, timeout=RPC_TIMEOUT)
        if resp.statusCode != K_OK:
            raise CurveRpcError(f"OpenFile {path}: {resp.statusCode}")
        return GrpcioFile(self, path, resp.protoSession, resp.fileInfo)

    def _stubs(self, endpoint: str) -> tuple[Any, Any]:
        with self._lock:
            stub = self._chunk_stubs.get(endpoint)
            if stub is None:
                ch = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
                self._channels[endpoint] = ch
                stub = self.pb["chunk_pb2_grpc"].ChunkServiceStub(ch)
                self._chunk_stubs[endpoint] = stub
                self._cli_stubs[endpoint] = self.pb["cli2_pb2_grpc"].CliService2Stub(ch)
            return stub, self._cli_stubs[endpoint]

    def copysets(self, pool: int, ids: list[int]) -> None:
        """Learns the peers of every copyset in ``ids`` not known yet, in one MDS call."""
        with self._lock:
            missing = sorted({i for i in ids if (pool, i) not in self._copysets})
        if not missing:
            return
        tp = self.pb["topology_pb2"]
        resp = self.topo.GetChunkServerListInCopySets(
            tp.GetChunkServerListInCopySetsRequest(logicalPoolId=pool, copysetId=missing),
            timeout=RPC_TIMEOUT,
        )
        if resp.statusCode != 0:
            raise CurveRpcError(f"GetChunkServerListInCopySets: {resp.statusCode}")
        with self._lock:
            for info in resp.csInfo:
                peers = [f"{loc.hostIp}:{loc.port}" for loc in info.csLocs]
                self._copysets.setdefault((pool, info.copysetId), Copyset(peers))

    def leader(self, pool: int, copyset: int, refresh: bool = False) -> str:
        with self._lock:
            cs = self._copysets[(pool, copyset)]
            if cs.leader is not None and not refresh:
                return cs.leader
        cli = self.pb["cli2_pb2"]
        last: Exception | None = None
        for peer in cs.peers:
            try:
                _, stub = self._stubs(peer)
                resp = stub.GetLeader(
                    cli.GetLeaderRequest2(logicPoolId=pool, copysetId=copyset),
                    timeout=RPC_TIMEOUT,
                )
            except grpc.RpcError as e:
                last = e
                continue
            # braft's PeerId text: "ip:port:index".
            leader = ":".join(resp.leader.address.split(":")[:2])
            with self._lock:
                cs.leader = leader
            return leader
        raise CurveRpcError(f"no leader for copyset ({pool}, {copyset}): {last}")

    def set_leader(self, pool: int, copyset: int, redirect: str) -> None:
        hint = ":".join(redirect.split(":")[:2])
        with self._lock:
            cs = self._copysets[(pool, copyset)]
            cs.leader = hint if hint in cs.peers else None

    def chunk_stub(self, endpoint: str) -> Any:
        return self._stubs(endpoint)[0]

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            self._chunk_stubs.clear()
            self._cli_stubs.clear()
        for ch in channels:
            ch.close()
        self._mds.close()


class GrpcioFile:
    """An open file: its session refresher, its segment cache and its chunk IO."""

    def __init__(self, client: GrpcioClient, path: str, session: Any, info: Any) -> None:
        self.c, self.pb, self.path = client, client.pb, path
        self.session_id: str = session.sessionID
        self.file_id: int = info.id
        self.chunk_size: int = info.chunkSize
        self.segment_size: int = info.segmentSize
        self.seq_num: int = info.seqNum or 1
        self.epoch: int = info.epoch
        self._segments: dict[int, Segment] = {}
        self._seg_lock = threading.Lock()
        self._stop = threading.Event()
        lease_s = max(session.leaseTime / 1e6, 0.4)
        self._refresher = threading.Thread(
            target=self._refresh_loop, args=(lease_s / 4,), daemon=True
        )
        self._refresher.start()

    def _refresh_loop(self, every: float) -> None:
        ns = self.pb["nameserver2_pb2"]
        while not self._stop.wait(every):
            req = ns.ReFreshSessionRequest(
                fileName=self.path,
                sessionID=self.session_id,
                clientVersion="1.0.0",
                **self.c._auth(),
            )
            # A failure is survivable: the next refresh may get through before the lease,
            # four refresh intervals long, runs out.
            with contextlib.suppress(grpc.RpcError):
                self.c.fs.RefreshSession(req, timeout=RPC_TIMEOUT)

    def _segment(self, index: int, allocate: bool) -> Segment:
        seg = self._segments.get(index)
        if seg is not None and (seg.chunks or not allocate):
            return seg
        # One lookup at a time, so a burst of threads on a new segment asks once.
        with self._seg_lock:
            seg = self._segments.get(index)
            if seg is not None and (seg.chunks or not allocate):
                return seg
            ns = self.pb["nameserver2_pb2"]
            req = ns.GetOrAllocateSegmentRequest(
                fileName=self.path,
                offset=index * self.segment_size,
                allocateIfNotExist=allocate,
                **self.c._auth(),
            )
            if allocate and self.epoch:
                req.epoch = self.epoch
            resp = self.c.fs.GetOrAllocateSegment(req, timeout=RPC_TIMEOUT)
            if resp.statusCode == K_SEGMENT_NOT_ALLOCATED and not allocate:
                seg = Segment(0, [])
            elif resp.statusCode != K_OK:
                raise CurveRpcError(f"GetOrAllocateSegment {index}: {resp.statusCode}")
            else:
                s = resp.pageFileSegment
                seg = Segment(s.logicalPoolID, [(c.chunkID, c.copysetID) for c in s.chunks])
                self.c.copysets(seg.logical_pool_id, [cs for _, cs in seg.chunks])
            self._segments[index] = seg
            return seg

    def _pieces(self, offset: int, length: int) -> list[tuple[int, int, int, int]]:
        """(chunk index in file, offset in chunk, length, offset in the caller's buffer)."""
        out = []
        pos = 0
        while pos < length:
            off = offset + pos
            in_chunk = off % self.chunk_size
            n = min(length - pos, self.chunk_size - in_chunk)
            out.append((off // self.chunk_size, in_chunk, n, pos))
            pos += n
        return out

    def _request(self, op: str, chunk_index: int, in_chunk: int, n: int, data: bytes) -> Any:
        """The chunk request for one piece, and where it goes: (pool, copyset, request)."""
        per_seg = self.segment_size // self.chunk_size
        seg = self._segment(chunk_index // per_seg, allocate=op == "write")
        if not seg.chunks:
            return None
        chunk_id, copyset = seg.chunks[chunk_index % per_seg]
        ck = self.pb["chunk_pb2"]
        if op == "write":
            req = ck.ChunkRequest(
                opType=ck.CHUNK_OP_WRITE,
                logicPoolId=seg.logical_pool_id,
                copysetId=copyset,
                chunkId=chunk_id,
                offset=in_chunk,
                size=n,
                sn=self.seq_num,
                fileId=self.file_id,
                attachment=data,
            )
            if self.epoch:
                req.epoch = self.epoch
        else:
            req = ck.ChunkRequest(
                opType=ck.CHUNK_OP_READ,
                logicPoolId=seg.logical_pool_id,
                copysetId=copyset,
                chunkId=chunk_id,
                offset=in_chunk,
                size=n,
            )
        return seg.logical_pool_id, copyset, req

    def _method(self, op: str, pool: int, copyset: int) -> Any:
        stub = self.c.chunk_stub(self.c.leader(pool, copyset))
        return stub.WriteChunk if op == "write" else stub.ReadChunk

    def _call(self, op: str, target: Any, resp: Any = None) -> bytes:
        """One chunk request (or the reply ``resp`` already received for it) to the end.

        Blocking unary calls: grpcio's ``.future()`` starts a polling thread per channel
        that makes every later call on it several times slower, so futures are kept for
        IO that spans chunks.
        """
        pool, copyset, req = target
        ck = self.pb["chunk_pb2"]
        for _ in range(10):
            if resp is None:
                resp = self._method(op, pool, copyset)(req, timeout=RPC_TIMEOUT)
            status = resp.status
            if status == ck.CHUNK_OP_STATUS_SUCCESS:
                return b"" if op == "write" else bytes(resp.attachment)
            if status == ck.CHUNK_OP_STATUS_CHUNK_NOTEXIST and op == "read":
                return bytes(req.size)
            if status != ck.CHUNK_OP_STATUS_REDIRECTED:
                raise CurveRpcError(f"{op} chunk {req.chunkId}: status {status}")
            if resp.redirect:
                self.c.set_leader(pool, copyset, resp.redirect)
            else:
                self.c.leader(pool, copyset, refresh=True)
            resp = None
        raise CurveRpcError(f"{op} chunk {req.chunkId}: redirected too often")

    def _concurrently(self, op: str, targets: list[Any]) -> list[bytes]:
        """Pieces of one IO that spans chunks, sent at once."""
        futs = [self._method(op, t[0], t[1]).future(t[2], timeout=RPC_TIMEOUT) for t in targets]
        return [self._call(op, t, f.result()) for t, f in zip(targets, futs, strict=True)]

    def read(self, offset: int, length: int) -> bytes:
        pieces = self._pieces(offset, length)
        targets = [self._request("read", ci, inc, n, b"") for ci, inc, n, _ in pieces]
        if len(pieces) == 1:
            return bytes(length) if targets[0] is None else self._call("read", targets[0])
        live = [t for t in targets if t is not None]
        got = iter(self._concurrently("read", live))
        return b"".join(
            bytes(n) if t is None else next(got)
            for (_, _, n, _), t in zip(pieces, targets, strict=True)
        )

    def write(self, offset: int, data: bytes) -> int:
        pieces = self._pieces(offset, len(data))
        if len(pieces) == 1:
            ci, inc, n, _ = pieces[0]
            self._call("write", self._request("write", ci, inc, n, data))
            return n
        view = memoryview(data)
        targets = [
            self._request("write", ci, inc, n, bytes(view[pos : pos + n]))
            for ci, inc, n, pos in pieces
        ]
        self._concurrently("write", targets)
        return len(data)

    def close(self) -> None:
        self._stop.set()
        self._refresher.join()
        ns = self.pb["nameserver2_pb2"]
        req = ns.CloseFileRequest(fileName=self.path, sessionID=self.session_id, **self.c._auth())
        self.c.fs.CloseFile(req, timeout=RPC_TIMEOUT)
