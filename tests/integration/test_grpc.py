"""etcd's gRPC API served by etcdfs-server (src/gateway/h2.c, grpc_*.c).

Differential: the same etcdctl commands against a real etcd 3.4 and against
etcdfs-server, outputs equal apart from cluster, member and raft-term ids.
Limits: oversized requests, too many streams, a connection that sends more
than it may, and a watch whose reader stalls, through a small raw HTTP/2
client written here (frames and HPACK literals by hand, no library).
"""
import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import Etcd, StoreServer


# ---- fixtures ----

ID_FIELDS = {"cluster_id", "member_id", "raft_term", "ClusterID", "MemberID", "RaftTerm"}


def norm(o):
    """o without the ids that differ between two servers by nature."""
    if isinstance(o, dict):
        return {k: norm(v) for k, v in o.items() if k not in ID_FIELDS}
    if isinstance(o, list):
        return [norm(v) for v in o]
    return o


def run_ctl(server, args, input=None):
    """(exit code, parsed JSON output or raw text, the "Error:" line) of etcdctl -w json."""
    r = subprocess.run(server.ctl_args() + ["-w", "json"] + list(args), capture_output=True,
                       env=server.ctl_env(), timeout=60, input=input)
    out = r.stdout.decode(errors="replace").strip()
    try:
        out = norm(json.loads(out)) if out else None
    except ValueError:
        pass
    err = [ln for ln in r.stderr.decode(errors="replace").splitlines()
           if ln.startswith("Error")]
    return r.returncode, out, err


def same(pair, args, input=None):
    e, s = pair
    a, b = run_ctl(e, args, input), run_ctl(s, args, input)
    assert a == b, f"etcdctl {args}:\netcd:  {a}\nstore: {b}"
    return a


# ---- differential: KV, txn, compaction ----

TXNS = [
    'value("a") = "4"\n\nput t 1\n\nput t 2\n',
    'value("a") != "4"\n\nput t 3\n\nget a\n',
    'mod("a") > "3"\ncreate("b") < "10"\n\nget a --prefix\nput u 1\n\ndel b\n',
    'version("a") = "2"\nlease("a") = "0"\n\ndel t --prev-kv\n\n',
    'create("nope") = "0"\n\nput nope x\nget nope\n\n',
    'value("nope") = "x"\nversion("zz") < "1"\n\nput v 1\n\nput v 2\n',
    'mod("a") < "1"\n\n\nget a b\nget "" --from-key --keys-only\n',
]


def test_kv_differential(pair):
    for k, v in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "4"), ("d/x", "5"), ("d/y", "6")]:
        same(pair, ["put", k, v])
    for args in (["get", "a"], ["get", "", "--prefix"], ["get", "a", "c"],
                 ["get", "", "--prefix", "--limit", "2"], ["get", "b", "--from-key"],
                 ["get", "", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND"],
                 ["get", "", "--prefix", "--sort-by", "VALUE", "--order", "ASCEND", "--limit", "3"],
                 ["get", "", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND"],
                 ["get", "", "--prefix", "--sort-by", "CREATE", "--limit", "4"],
                 ["get", "", "--prefix", "--sort-by", "KEY", "--order", "DESCEND"],
                 ["get", "d/", "--prefix", "--count-only"], ["get", "", "--prefix", "--keys-only"],
                 ["get", "", "--prefix", "--consistency", "s"],
                 ["get", "a", "--rev", "2"], ["get", "", "--prefix", "--rev", "3"],
                 ["get", "missing"]):
        same(pair, args)
    for args in (["put", "a", "5", "--prev-kv"], ["put", "a", "--ignore-value", "--prev-kv"],
                 ["put", "missing", "--ignore-value"], ["put", "a", "6", "--ignore-value"],
                 ["del", "b", "--prev-kv"], ["del", "zz"],
                 ["del", "d/", "--prefix", "--prev-kv"], ["put", "d/z", "7", "--prev-kv"]):
        same(pair, args)
    for t in TXNS:
        same(pair, ["txn"], input=t.encode())
    # compaction and its errors
    same(pair, ["compaction", "5"])
    for args in (["get", "a", "--rev", "4"], ["get", "a", "--rev", "5"], ["get", "a", "--rev", "999"],
                 ["compaction", "5"], ["compaction", "3"], ["compaction", "999"]):
        code, out, err = same(pair, args)
    assert code != 0 and err == ["Error: etcdserver: mvcc: required revision is a future revision"]


def test_limits_differential(pair):
    # above etcd's 1.5 MiB request limit: the server refuses it
    code, _, err = same(pair, ["put", "big"], input=b"x" * (1600 << 10))
    assert code != 0 and err == ["Error: etcdserver: request is too large"], err
    # above 1.5 MiB + 512 KiB etcdctl refuses to send it; a client that sends it anyway
    # gets gRPC's own refusal, code 8 (etcd's grpc-go then resets the stream, which curl
    # reports as a framing error, so only the store's trailers are read here)
    code, _, err = same(pair, ["put", "big"], input=b"x" * (2200 << 10))
    assert code != 0 and "larger than max" in err[0], err
    msg = pb_field(1, 2, b"big") + pb_field(2, 2, b"x" * 2200000)
    # The server refuses on the message's length prefix, answering at once. Only the first
    # KiB is sent: with the whole 2.2 MB, the answer can arrive while curl is uploading,
    # and Debian's curl 7.88 may then stall (curl issue 11157, fixed in later curl): 11
    # of 40 such calls hung on the loaded VM, 0 of 40 with the first KiB (2026-12-05).
    trailers = curl_grpc(pair[1], "/etcdserverpb.KV/Put", grpc_frame(msg)[:1024])
    assert trailers["grpc-status"] == "8", trailers
    assert trailers["grpc-message"] == \
        f"grpc: received message larger than max ({len(msg)} vs. 2097152)", trailers
    # too many operations, duplicate key
    ops = "".join(f"put k{i} v\n" for i in range(129))
    code, _, err = same(pair, ["txn"], input=("\n" + ops + "\n\n").encode())
    assert err == ["Error: etcdserver: too many operations in txn request"], err
    code, _, err = same(pair, ["txn"], input=b"\nput k 1\nput k 2\n\n\n")
    assert err == ["Error: etcdserver: duplicate key given in txn request"], err
    code, _, err = same(pair, ["txn"], input=b"\nput k 1\ndel k\n\n\n")
    assert err == ["Error: etcdserver: duplicate key given in txn request"], err


def curl_grpc(server, path, body):
    """The response headers and trailers of one gRPC call made by curl (HTTP/2 cleartext)."""
    r = subprocess.run(["curl", "-sS", "-v", "--http2-prior-knowledge", "-o", "/dev/null",
                        "-H", "content-type: application/grpc", "-H", "te: trailers",
                        "--data-binary", "@-", server.endpoint + path],
                       input=body, capture_output=True, timeout=30)
    out = {}
    for ln in r.stderr.decode(errors="replace").splitlines():
        m = re.match(r"< ([a-z0-9-]+): (.*)", ln.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


# ---- differential: watch ----

def watch_lines(server, args, n, stdin=None, timeout=10):
    """The first n JSON lines etcdctl watch prints (then it is stopped)."""
    p = subprocess.Popen(server.ctl_args() + ["-w", "json", "watch"] + args,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                         env=server.ctl_env())
    out = []
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        if stdin:
            for line in stdin:
                p.stdin.write(line.encode())
                p.stdin.flush()
                time.sleep(0.5)
        while len(out) < n:
            line = p.stdout.readline()
            if not line:
                break
            line = line.decode().strip()
            if line.startswith("{"):
                out.append(norm(json.loads(line)))
    finally:
        timer.cancel()
        try:
            p.wait(timeout=2)  # a canceled watch makes etcdctl exit, saying so
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        err = p.stderr.read().decode(errors="replace")
    return out, [ln for ln in err.splitlines() if ln.startswith("watch was canceled")
                 or ln.startswith("Error")]


def test_watch_differential(pair):
    for k, v in [("w/a", "1"), ("w/b", "2"), ("w/a", "3"), ("x", "4"), ("w/c", "5")]:
        same(pair, ["put", k, v])
    same(pair, ["del", "w/b"])
    same(pair, ["txn"], input=b"\nput w/d 1\nput w/e 2\ndel w/a\n\n\n")
    # history with prev_kv: one reply holding the 8 events
    res = [watch_lines(s, ["--prefix", "w/", "--rev", "2", "--prev-kv"], 1) for s in pair]
    assert res[0] == res[1] and len(res[0][0][0]["Events"]) == 8, res
    # one key from the past, from its creation on
    res = [watch_lines(s, ["w/a", "--rev", "1"], 1) for s in pair]
    assert res[0] == res[1] and len(res[0][0][0]["Events"]) == 3, res
    # a progress request on an interactive watch, after the history was sent
    res = [watch_lines(s, ["--interactive"], 2,
                       stdin=["watch w/ --prefix --rev 6\n", "progress\n"]) for s in pair]
    assert res[0] == res[1] and len(res[0][0]) == 2, res
    assert res[0][0][-1]["Events"] == [] and res[0][0][-1]["Header"]["revision"] == 8
    # a watch from a compacted revision is canceled with the compaction point
    same(pair, ["compaction", "6"])
    res = [watch_lines(s, ["w/", "--prefix", "--rev", "3"], 1) for s in pair]
    assert res[0] == res[1], res
    assert res[0][1] == ["watch was canceled (etcdserver: mvcc: required revision has been "
                         "compacted)", "Error: watch is canceled by the server"], res


def test_maintenance_and_cluster(store):
    store.put("first", "x")
    out = json.loads(store.ctl("endpoint", "status", "-w", "json"))
    st = out[0]["Status"]
    assert st["version"] == "3.4.0" and st["leader"] == st["header"]["member_id"]
    assert st["header"]["revision"] == 2 and st["raftIndex"] >= 1
    store.ctl("endpoint", "health")  # raises unless etcdctl says healthy
    members = json.loads(store.ctl("member", "list", "-w", "json"))["members"]
    assert len(members) == 1 and members[0]["name"] == "etcdfs-1"
    assert members[0]["clientURLs"] == [store.endpoint]
    assert json.loads(store.ctl("alarm", "list", "-w", "json")).get("alarms") is None
    # HashKV: equal for equal content at one revision, different after a change
    h1 = json.loads(store.ctl("endpoint", "hashkv", "-w", "json"))[0]["HashKV"]
    h2 = json.loads(store.ctl("endpoint", "hashkv", "-w", "json"))[0]["HashKV"]
    store.put("k", "v")
    h3 = json.loads(store.ctl("endpoint", "hashkv", "-w", "json"))[0]["HashKV"]
    assert h1["hash"] == h2["hash"] != h3["hash"]


def test_etcdfs_client_uses_grpc(store, mount_factory, monkeypatch):
    """etcdfs's own client works against the store over gRPC alone: a mount forced to gRPC
    (ETCDFS_ETCD_TRANSPORT=grpc: no JSON fallback at all) lists, reads, saves (a txn) and
    sees an outside change (the watch); a mount on the default transport never falls back
    to the JSON gateway (it logs when it does)."""
    store.put("/g/k", "v1")
    monkeypatch.setenv("ETCDFS_ETCD_TRANSPORT", "grpc")
    m = mount_factory(["--endpoints", store.endpoint, "-o", "rw"])
    monkeypatch.delenv("ETCDFS_ETCD_TRANSPORT")
    path = os.path.join(m.path, "g/k")
    assert open(path, "rb").read() == b"v1"
    with open(path, "wb") as f:
        f.write(b"saved")
    assert store.get("/g/k")[0] == b"saved"
    store.ctl("put", "/g/k", "v2")
    deadline = time.time() + 5
    while open(path, "rb").read() != b"v2":
        assert time.time() < deadline
        time.sleep(0.05)
    auto = mount_factory(["--endpoints", store.endpoint, "-d"])
    assert open(os.path.join(auto.path, "g/k"), "rb").read() == b"v2"
    store.ctl("put", "/g/k", "v3")
    deadline = time.time() + 5
    while open(os.path.join(auto.path, "g/k"), "rb").read() != b"v3":
        assert time.time() < deadline
        time.sleep(0.05)
    assert "using the JSON gateway" not in auto.log(), auto.log()[-3000:]


# ---- a raw HTTP/2 client ----

DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 1, 1, 4


def hpack_literal(name, value):
    """A header as an HPACK literal without indexing, new name, no Huffman."""
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name.encode()) + s(value.encode())


def pb_varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_field(num, wire, payload):
    if wire == 0:
        return pb_varint(num << 3) + pb_varint(payload)
    return pb_varint(num << 3 | 2) + pb_varint(len(payload)) + payload


def pb_parse(b):
    """{field: [values]} of one protobuf message (varints as ints, the rest as bytes)."""
    out, i = {}, 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        else:
            v, i = b[i:i + 4], i + 4
        out.setdefault(num, []).append(v)
    return out


def _varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def grpc_frame(msg, announced=None):
    return struct.pack(">BI", 0, len(msg) if announced is None else announced) + msg


class H2:
    """Just enough HTTP/2 to open gRPC calls and watch what the server does."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        # as gRPC clients do: with Nagle, a WINDOW_UPDATE sent right after another
        # waits for the server's delayed ACK (40 ms), stalling a stream at every window
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.frame(SETTINGS, 0, 0, b"")
        self.settings = {}
        self.buf = b""
        self.conn_window = 65535
        self.stream_window = {}
        self.initial_window = 65535
        self.ended = set()      # streams the server ended (END_STREAM or RST)
        self.rst = {}
        self.data = {}          # stream -> bytes received
        self.next_id = 1

    def frame(self, ftype, flags, sid, payload):
        self.sock.sendall(struct.pack(">I", len(payload))[1:] + bytes([ftype, flags])
                          + struct.pack(">I", sid) + payload)

    def read_frame(self, timeout=30):
        self.sock.settimeout(timeout)
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
        payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
        self.handle(ftype, flags, sid, payload)
        return ftype, flags, sid, payload

    def handle(self, ftype, flags, sid, payload):
        if ftype == SETTINGS and not flags & ACK:
            for i in range(0, len(payload), 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                self.settings[k] = v
                if k == 4:
                    for s in self.stream_window:
                        self.stream_window[s] += v - self.initial_window
                    self.initial_window = v
            self.frame(SETTINGS, ACK, 0, b"")
        elif ftype == WINDOW:
            inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
            if sid:
                self.stream_window[sid] = self.stream_window.get(sid, 0) + inc
            else:
                self.conn_window += inc
        elif ftype == PING and not flags & ACK:
            self.frame(PING, ACK, 0, payload)
        elif ftype == RST:
            self.rst[sid] = struct.unpack(">I", payload)[0]
            self.ended.add(sid)
        elif ftype in (HEADERS, DATA):
            if ftype == DATA:
                self.data[sid] = self.data.get(sid, b"") + payload
            if flags & END_STREAM:
                self.ended.add(sid)

    def open(self, path):
        sid = self.next_id
        self.next_id += 2
        block = b"".join(hpack_literal(k, v) for k, v in [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "127.0.0.1"), ("content-type", "application/grpc"),
            ("te", "trailers")])
        self.frame(HEADERS, END_HEADERS, sid, block)
        self.stream_window[sid] = self.initial_window
        return sid

    def send(self, sid, data, end=False):
        """Sends data within flow control, reading frames while the window is closed."""
        while data:
            n = min(len(data), 16384, self.conn_window, self.stream_window[sid])
            if n <= 0:
                self.read_frame()
                continue
            self.frame(DATA, 0, sid, data[:n])
            self.conn_window -= n
            self.stream_window[sid] -= n
            data = data[n:]
        if end:
            self.frame(DATA, END_STREAM, sid, b"")

    def drain(self, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                self.read_frame(timeout=max(0.01, deadline - time.time()))
            except socket.timeout:
                return

    def close(self):
        self.sock.close()


def test_raw_unary_and_trailers(store):
    """A hand-built Put and Range; an unknown method is UNIMPLEMENTED (trailers-only)."""
    c = H2(store.port)
    sid = c.open("/etcdserverpb.KV/Put")
    c.send(sid, grpc_frame(pb_field(1, 2, b"raw") + pb_field(2, 2, b"val")), end=True)
    while sid not in c.ended:  # calls of one connection run concurrently, as on etcd
        c.read_frame()
    sid2 = c.open("/etcdserverpb.KV/Range")
    c.send(sid2, grpc_frame(pb_field(1, 2, b"raw")), end=True)
    sid3 = c.open("/etcdserverpb.KV/NoSuchMethod")
    c.send(sid3, grpc_frame(b""), end=True)
    while not {sid, sid2, sid3} <= c.ended:
        c.read_frame()
    msg = c.data[sid2]
    assert msg[0] == 0 and struct.unpack(">I", msg[1:5])[0] == len(msg) - 5
    r = pb_parse(msg[5:])
    kv = pb_parse(r[2][0])
    assert kv[1] == [b"raw"] and kv[5] == [b"val"] and r[4] == [1]
    assert sid3 not in c.data  # no message, just the status
    c.close()


def curl_call(server, path, body, ctype="application/grpc"):
    """The response headers and trailers of one POST by curl over h2c. A server answer that
    comes before the request body ends with RST_STREAM(NO_ERROR) after it (RFC 9113 8.1);
    curl 7.88 then sometimes drops the answer it had read and fails ("stream error", exit
    92 or 16): such a call is made again, up to 5 times."""
    for _ in range(5):
        r = subprocess.run(["curl", "-sS", "-v", "--http2-prior-knowledge", "-o", "/dev/null",
                            "-X", "POST", "-H", f"content-type: {ctype}"]
                           + (["--data-binary", "@-"] if body is not None else [])
                           + [server.endpoint + path],
                           input=body, capture_output=True, timeout=10)
        got = dict(re.findall(r"< ([a-z0-9:-]+): ?(.*?)\r?\n", r.stderr.decode()))
        if r.returncode == 0 or got:
            return got
    return {"curl exit": str(r.returncode), "curl said": r.stderr.decode()[-300:]}


def test_malformed_calls(store):
    """Calls no real client makes are refused with a status, and the server lives on: no
    message at all (END_STREAM on the headers), a compressed message, a message that does
    not decode, an unknown method, a body that is not gRPC."""
    def call(path, body, ctype="application/grpc"):
        return curl_call(store, path, body, ctype)
    assert call("/etcdserverpb.KV/Range", None)["grpc-status"] == "13"
    assert call("/etcdserverpb.KV/Range", b"\x01\x00\x00\x00\x01x")["grpc-status"] == "12"
    assert call("/etcdserverpb.KV/Range", grpc_frame(b"\xff\xff"))["grpc-status"] == "13"
    assert call("/etcdserverpb.Auth/Authenticate", grpc_frame(b""))["grpc-status"] == "12"
    assert call("/etcdserverpb.KV/Range", b"{}", "application/json").get("grpc-status") is None
    # every unary method decodes its request first, as gRPC does for etcd: the ones whose
    # request has no fields too (an empty message is one)
    for path in UNARY_METHODS:
        assert call(path, grpc_frame(b"\xff\xff"))["grpc-status"] == "13", path
    for path in ("/etcdserverpb.Maintenance/Status", "/etcdserverpb.Lease/LeaseLeases",
                 "/etcdserverpb.Maintenance/Hash", "/etcdserverpb.Cluster/MemberList"):
        assert call(path, grpc_frame(b""))["grpc-status"] == "0", path
    store.ctl("put", "still", "alive")


def test_early_answers_end_the_stream(store):
    """An answer sent before the client has sent its body (an unknown method: trailers-only;
    not gRPC: 415) ends the stream for the client too. curl read such an answer, then sent
    its body and waited on the stream for good, 1 call in 3 on a release build, until the
    server reset the stream with NO_ERROR once its answer was out, as grpc-go does."""
    for _ in range(100):  # a call that hangs raises TimeoutExpired after 10 s
        assert curl_call(store, "/etcdserverpb.Auth/Authenticate",
                         grpc_frame(b""))["grpc-status"] == "12"
        got = curl_call(store, "/etcdserverpb.KV/Range", b"{}", "application/json")
        assert got.get("content-type") == "text/plain" and "grpc-status" not in got, got
    store.ctl("put", "still", "alive")


UNARY_METHODS = ["/etcdserverpb.KV/" + m for m in ("Range", "Put", "DeleteRange", "Txn", "Compact")] \
    + ["/etcdserverpb.Lease/" + m for m in ("LeaseGrant", "LeaseRevoke", "LeaseTimeToLive",
                                              "LeaseLeases")] \
    + ["/etcdserverpb.Maintenance/" + m for m in ("Status", "Alarm", "HashKV", "Hash")] \
    + ["/etcdserverpb.Cluster/MemberList"]


def test_max_concurrent_streams(store):
    """SETTINGS_MAX_CONCURRENT_STREAMS is 1000: 1000 streams are served; a client that opens
    one more than it was told loses the connection (nghttp2 answers GOAWAY PROTOCOL_ERROR,
    naming the last stream it took), and the server goes on serving others."""
    c = H2(store.port)
    while 3 not in c.settings:
        c.read_frame()
    limit = c.settings[3]
    assert limit == 1000
    sids = [c.open("/etcdserverpb.Watch/Watch") for _ in range(limit)]
    # the last of them is alive: a watch created on it answers
    c.send(sids[-1], grpc_frame(pb_field(1, 2, pb_field(1, 2, b"k"))))
    while sids[-1] not in c.data:
        c.read_frame()
    assert pb_parse(c.data[sids[-1]][5:])[3] == [1]  # created
    c.open("/etcdserverpb.Watch/Watch")
    goaway = None
    try:
        while goaway is None:
            f = c.read_frame()
            if f[0] == GOAWAY:
                goaway = f[3]
    except EOFError:
        pass
    assert goaway is not None
    last, code = struct.unpack(">II", goaway[:8])
    assert code == 1 and last == sids[-1], (code, last)
    c.close()
    store.ctl("endpoint", "health")  # raises unless etcdctl says healthy


def test_connection_memory_bound(store):
    """Many streams each holding part of a large message: past the per-connection bound
    (16 MiB of unhandled request bytes) the streams that would exceed it are ended with an
    error, and the ones within it stay open."""
    c = H2(store.port)
    part = b"x" * (512 << 10)
    sids = []
    for _ in range(48):
        sid = c.open("/etcdserverpb.KV/Put")
        sids.append(sid)
        c.send(sid, grpc_frame(b"", announced=2_000_000) + part)
        c.drain(0.02)
    c.drain(1)
    ended = [s for s in sids if s in c.ended]
    # the first 16 MiB are held (32 streams of 512 KiB), the rest refused
    assert 28 <= sids.index(ended[0]) <= 33, (ended, sids)
    assert all(s in c.ended for s in sids[sids.index(ended[0]):])
    assert not [s for s in sids[:sids.index(ended[0])] if s in c.ended]
    c.close()
    assert store.revision() >= 1  # the server is fine


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_watch_reader_is_bounded(tmp):
    """A watch whose client stops reading: the store goes on, the server's memory does not
    grow with the events it cannot send (64 MiB of them), and once the client reads again
    the events come in order from the first one, with no gap: the watch stalled, nothing was
    dropped. History compacted meanwhile then ends the watch as etcd ends a slow watcher
    that fell behind a compaction: canceled, with the compaction revision."""
    store = StoreServer(tmp, extra_args=["--snapshot-threshold", "64"])
    store.start()
    try:
        c = H2(store.port)
        sid = c.open("/etcdserverpb.Watch/Watch")
        create = pb_field(1, 2, b"slow/") + pb_field(2, 2, b"slow0")
        c.send(sid, grpc_frame(pb_field(1, 2, create)))
        while sid not in c.data:
            c.read_frame()
        # stop reading; compact as we go so that the store itself keeps little. First the
        # same writes with no watch, to see what the store alone grows by.
        # 64 MiB of events: a server that queued them all would grow by twice the
        # tolerance below; one that holds its bound (16 MiB a connection) stays within it
        # (the same writes with no watch, on a warmed-up heap, are the baseline)
        val = "v" * (64 << 10)
        n = 1024

        def write(prefix):
            rss0 = vm_rss_kb(store.proc.pid)
            for i in range(n):
                store.put(f"{prefix}/{i % 8}", f"{i:06d}" + val)
                if i % 64 == 63:
                    store.compact(store.revision())
            return (vm_rss_kb(store.proc.pid) - rss0) / 1024

        # the first writes also grow the heap (+69 MiB measured): warm it up first, so
        # that the baseline is what the same writes cost once the heap has grown
        write("warm")
        alone = write("other")
        grown = write("slow")
        print(f"stalled watch, {n} x 64 KiB events: server RSS +{grown:.1f} MiB "
              f"(+{alone:.1f} MiB for the same writes not watched)")
        assert grown < alone + 32, \
            f"server grew {grown:.0f} MiB with a stalled watch of 64 MiB, {alone:.0f} without"
        # read again
        got, compacted, consumed = [], 0, 0
        deadline = time.time() + 60
        while len(got) < n and not compacted and time.time() < deadline:
            try:
                c.read_frame(timeout=2)
            except socket.timeout:
                break
            data = c.data.get(sid, b"")
            if len(data) > consumed:
                inc = len(data) - consumed
                consumed = len(data)
                c.frame(WINDOW, 0, 0, struct.pack(">I", inc))
                c.frame(WINDOW, 0, sid, struct.pack(">I", inc))
            got, compacted, i = [], 0, 0
            while len(data) - i >= 5:
                ln = struct.unpack(">I", data[i + 1:i + 5])[0]
                if len(data) - i - 5 < ln:
                    break
                r = pb_parse(data[i + 5:i + 5 + ln])
                for ev in r.get(11, []):
                    kv = pb_parse(pb_parse(ev)[2][0])
                    got.append(int(kv[5][0][:6]))
                if r.get(5):
                    compacted = r[5][0]
                    assert r.get(4) == [1]  # canceled
                i += 5 + ln
        assert got and got == list(range(len(got))), (len(got), got[:5], got[-5:])
        assert len(got) == n or compacted, (len(got), compacted)
        c.close()
    finally:
        store.stop()


def test_snapshot_restores_into_etcd(store, tmp):
    """etcdctl snapshot save from etcdfs-server gives a file etcdctl restores into a real
    etcd 3.4, which then serves the same keys at the same revision (and refuses older
    revisions as compacted: the file has no history)."""
    # 1 KiB values: the key bucket spans several leaves under a branch page
    for i in range(300):
        store.put(f"/s/k{i % 120:03d}", f"value {i} " + "x" * 1024)
    store.delete("/s/k007")
    store.ctl("txn", input=b"\nput /s/t1 a\nput /s/t2 b\n\n\n")
    snap = os.path.join(tmp, "store.db")
    store.ctl("snapshot", "save", snap)
    status = json.loads(subprocess.run(["etcdctl", "snapshot", "status", snap, "-w", "json"],
                                       capture_output=True, check=True).stdout)
    assert status["revision"] == store.revision()
    e = Etcd(tmp)
    subprocess.run(["etcdctl", "snapshot", "restore", snap, "--data-dir",
                    os.path.join(e.dir, "data"), "--name", "t", "--initial-cluster",
                    f"t=http://127.0.0.1:{e.peer_port}", "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{e.peer_port}"], capture_output=True, check=True,
                   env=e.ctl_env())
    e._start()
    try:
        a = run_ctl(store, ["get", "/s/", "--prefix"])
        b = run_ctl(e, ["get", "/s/", "--prefix"])
        assert a == b and len(a[1]["kvs"]) == 121
        code, _, err = run_ctl(e, ["get", "/s/k001", "--rev", "3"])
        assert err == ["Error: etcdserver: mvcc: required revision has been compacted"]
        e.ctl("put", "/s/after", "x")
        assert e.revision() == store.revision() + 1
    finally:
        e.stop()


def test_revoke_lease_without_keys(store):
    """Revoking a lease no key is attached to (UBSan aborted the store on it once)."""
    lease = store.ctl("lease", "grant", "30").split()[1].decode()
    store.ctl("lease", "revoke", lease)
    store.ctl("put", "still", "alive")


def test_lease_differential(pair):
    """Leases through etcdctl on both servers: grant, attach, time-to-live with keys, list,
    keep-alive, revoke deleting the keys, an unknown lease, and expiry deleting the keys in
    one revision. Lease ids differ by nature (each server picks its own): they are replaced
    by their order of appearance; remaining TTLs may differ by the second they straddle."""
    ids = [{}, {}]

    def grant(i, s, ttl):
        code, out, err = run_ctl(s, ["lease", "grant", str(ttl)])
        assert code == 0, err
        ids[i][out["ID"]] = f"L{len(ids[i])}"
        return out["ID"]

    def hexid(i, name):
        return next(f"{k:x}" for k, v in ids[i].items() if v == name)

    def canon(i, o):
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                if k in ("ID", "lease", "id") and isinstance(v, int) and v in ids[i]:
                    v = ids[i][v]
                if k == "TTL" and isinstance(v, int) and v > 30:
                    v = "ttl"  # seconds left: depends on when each call ran
                if k == "keys" and isinstance(v, list):
                    v = sorted(v)  # etcd lists a lease's keys in map order (random)
                out[k] = canon(i, v)
            return out
        if isinstance(o, list):
            return [canon(i, v) for v in o]
        return o

    def both(args_of, input=None):
        res = []
        for i, s in enumerate(pair):
            code, out, err = run_ctl(s, args_of(i), input)
            res.append((code, canon(i, out), err))
        assert res[0] == res[1], f"{args_of(0)}:\netcd:  {res[0]}\nstore: {res[1]}"
        return res[0]

    for i, s in enumerate(pair):
        grant(i, s, 60)
    both(lambda i: ["put", "a", "1", "--lease", hexid(i, "L0")])
    both(lambda i: ["put", "b", "2", "--lease", hexid(i, "L0")])
    both(lambda i: ["get", "", "--prefix"])
    both(lambda i: ["lease", "timetolive", hexid(i, "L0"), "--keys"])
    both(lambda i: ["lease", "list"])
    both(lambda i: ["lease", "keep-alive", "--once", hexid(i, "L0")])
    both(lambda i: ["put", "b", "3", "--ignore-lease"])
    both(lambda i: ["lease", "revoke", hexid(i, "L0")])
    both(lambda i: ["get", "", "--prefix"])
    both(lambda i: ["lease", "timetolive", hexid(i, "L0")])
    code, _, err = both(lambda i: ["put", "c", "1", "--lease", "1234"])
    assert err == ["Error: etcdserver: requested lease not found"]
    code, _, err = both(lambda i: ["lease", "revoke", "1234"])
    assert code != 0
    # expiry: the keys go in one revision on both (5 s: time for the puts on a busy machine)
    for i, s in enumerate(pair):
        grant(i, s, 5)
    both(lambda i: ["put", "e1", "x", "--lease", hexid(i, "L1")])
    both(lambda i: ["put", "e2", "y", "--lease", hexid(i, "L1")])
    deadline = time.time() + 30
    while any(run_ctl(s, ["get", "e1"])[1].get("kvs") for s in pair):
        assert time.time() < deadline, "the lease did not expire"
        time.sleep(0.2)
    both(lambda i: ["get", "", "--prefix"])
    both(lambda i: ["lease", "list"])


def watch_create(key, range_end=b"", start=0, watch_id=0, prev_kv=False, fragment=False,
                 filters=()):
    c = pb_field(1, 2, key)
    if range_end:
        c += pb_field(2, 2, range_end)
    if start:
        c += pb_field(3, 0, start)
    for f in filters:
        c += pb_field(5, 0, f)
    if prev_kv:
        c += pb_field(6, 0, 1)
    if watch_id:
        c += pb_field(7, 0, watch_id)
    if fragment:
        c += pb_field(8, 0, 1)
    return grpc_frame(pb_field(1, 2, c))


def watch_cancel(watch_id):
    return grpc_frame(pb_field(2, 2, pb_field(1, 0, watch_id)))


def watch_progress():
    return grpc_frame(pb_field(3, 2, b""))


def replies(c, sid, start=0):
    """The WatchResponses received on sid from byte offset start: (list, next offset)."""
    data, out, i = c.data.get(sid, b""), [], start
    while len(data) - i >= 5:
        ln = struct.unpack(">I", data[i + 1:i + 5])[0]
        if len(data) - i - 5 < ln:
            break
        out.append(pb_parse(data[i + 5:i + 5 + ln]))
        i += 5 + ln
    return out, i


def readable(r):
    """A WatchResponse with its header reduced to the revision and events decoded."""
    out = {k: v for k, v in r.items() if k not in (1, 11)}
    out["rev"] = pb_parse(r[1][0]).get(3, [0])[0] if 1 in r else None
    out["events"] = [{k: (pb_parse(v[0]) if k in (2, 3) else v) for k, v in pb_parse(e).items()}
                     for e in r.get(11, [])]
    return out


def test_raw_watch_differential(pair):
    """Watch requests etcdctl cannot send, by hand on both servers: a client's own watch id,
    a duplicate id, a NOPUT filter, prev_kv, cancel (known and unknown id), a progress
    request. The replies are equal apart from header ids."""
    for s in pair:
        for k, v in [("k", "1"), ("k", "2"), ("j", "3")]:
            s.put(k, v)
        s.delete("j")
    steps = [watch_create(b"k", start=2, prev_kv=True),
             watch_create(b"a", b"z", start=2, watch_id=7, filters=[0]),
             watch_create(b"k", watch_id=7),
             watch_progress(),
             watch_cancel(0),
             watch_cancel(99),
             watch_create(b"j", start=4)]
    got = []
    for s in pair:
        c = H2(s.port)
        sid = c.open("/etcdserverpb.Watch/Watch")
        seq, off = [], 0
        for step in steps:
            c.send(sid, step)
            c.drain(0.5)
            r, off = replies(c, sid, off)
            seq.append([readable(x) for x in r])
        c.close()
        got.append(seq)
    assert got[0] == got[1], "\n".join(f"{a}\n{b}\n" for a, b in zip(*got) if a != b)
    flat = [r for step in got[0] for r in step]
    assert any(r.get(6) for r in flat)  # the duplicate id's refusal carries a reason
    assert sum(len(r["events"]) for r in flat) == 5  # k@2, k@3; delete j@5; j@4, j@5


def test_watch_fragments(store):
    """fragment: a reply above the 1.5 MiB request limit comes in pieces, each but the last
    marked fragment, together holding every event once."""
    for i in range(4):
        store.put(f"f/{i}", "x" * (1 << 20))
    c = H2(store.port)
    sid = c.open("/etcdserverpb.Watch/Watch")
    c.send(sid, watch_create(b"f/", b"f0", start=1, fragment=True))
    deadline = time.time() + 20
    events, frags = [], []
    while len(events) < 4 and time.time() < deadline:
        c.read_frame()
        if c.data.get(sid):  # give the window back as we read
            n = len(c.data[sid]) - getattr(c, "acked", 0)
            if n > 0:
                c.frame(WINDOW, 0, 0, struct.pack(">I", n))
                c.frame(WINDOW, 0, sid, struct.pack(">I", n))
                c.acked = len(c.data[sid])
        r, _ = replies(c, sid)
        events = [e for x in r for e in x.get(11, [])]
        frags = [x.get(7, [0])[0] for x in r if x.get(11)]
    assert len(events) == 4
    assert len(frags) >= 2 and all(frags[:-1]) and not frags[-1], frags
    c.close()


def task_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def test_thousand_watches_then_client_killed(store):
    """1000 watches on one stream all see a change; the server's memory for them is
    measured; when the client is killed mid-stream every watch is cancelled (the store's
    watch threads end) and memory goes back down."""
    pid = store.proc.pid
    store.put("t0", "warm-up")
    store.ctl("endpoint", "health")
    threads0, rss0 = task_count(pid), vm_rss_kb(pid)
    c = H2(store.port)
    sid = c.open("/etcdserverpb.Watch/Watch")
    for i in range(1000):
        c.send(sid, watch_create(b"t/", b"t0"))
    deadline = time.time() + 30
    while len(replies(c, sid)[0]) < 1000 and time.time() < deadline:
        c.read_frame()
    assert len(replies(c, sid)[0]) == 1000
    store.put("t/x", "1")
    while len(replies(c, sid)[0]) < 2000 and time.time() < deadline:
        c.read_frame()
        n = len(c.data[sid]) - getattr(c, "acked", 0)
        if n > 0:
            c.frame(WINDOW, 0, 0, struct.pack(">I", n))
            c.frame(WINDOW, 0, sid, struct.pack(">I", n))
            c.acked = len(c.data[sid])
    r, _ = replies(c, sid)
    ids = {x.get(2, [0])[0] for x in r if x.get(11)}
    assert len(ids) == 1000  # every watch got the event
    rss1 = vm_rss_kb(pid)
    print(f"1000 watches: +{(rss1 - rss0) / 1024:.1f} MiB RSS, "
          f"{task_count(pid) - threads0} more threads")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # a reset, as a killed client leaves it
    deadline = time.time() + 20
    while task_count(pid) > threads0 + 4 and time.time() < deadline:
        time.sleep(0.1)
    took = 20 - (deadline - time.time())
    print(f"1000 watches cancelled after the reset in {took:.1f} s")
    assert task_count(pid) <= threads0 + 4, (task_count(pid), threads0)
    store.ctl("endpoint", "health")


def test_half_open_client_is_dropped(tmp):
    """A client that vanished without closing (nothing more comes from it, not even the
    answer to a PING) loses its connection after --grpc-keepalive-interval plus
    --grpc-keepalive-timeout, and its watches with it; a client that answers the pings
    keeps its connection and its watch."""
    store = StoreServer(tmp, extra_args=["--grpc-keepalive-interval", "2s",
                                         "--grpc-keepalive-timeout", "2s"])
    store.start()
    try:
        pid = store.proc.pid
        store.ctl("endpoint", "health")
        threads0 = task_count(pid)
        live, dead = H2(store.port), H2(store.port)
        sids = {}
        for c in (live, dead):
            sids[c] = c.open("/etcdserverpb.Watch/Watch")
            for _ in range(20):
                c.send(sids[c], watch_create(b"h/", b"h0"))
            while len(replies(c, sids[c])[0]) < 20:
                c.read_frame()
        assert task_count(pid) >= threads0 + 40
        # dead reads nothing from now on; live keeps reading (and answering pings)
        deadline = time.time() + 20
        while task_count(pid) > threads0 + 20 + 2 and time.time() < deadline:
            live.drain(0.5)
        assert task_count(pid) <= threads0 + 20 + 2, (task_count(pid), threads0)
        with open(store.log.name, "rb") as f:
            assert b"answered no keep-alive ping" in f.read()
        store.put("h/x", "1")
        deadline = time.time() + 10
        while len(replies(live, sids[live])[0]) < 40 and time.time() < deadline:
            live.read_frame()
        assert len(replies(live, sids[live])[0]) == 40  # 20 events: the live one stayed
        live.close()
        dead.close()
    finally:
        store.stop()


def test_three_node_store_with_etcdctl(tmp):
    """Three etcdfs-server nodes forming one store: etcdctl writes through any node (a
    follower forwards to the leader), reads and watches through any other, every node
    names the same leader, and a lease granted through one node and revoked through
    another takes its keys on all."""
    from conftest import BUILD, free_port
    server = os.path.join(BUILD, "src/gateway/etcdfs-server")
    raft = [free_port() for _ in range(3)]
    peers = ",".join(f"{i + 1}=127.0.0.1:{raft[i]}:{free_port()}" for i in range(3))
    clients = [free_port() for _ in range(3)]
    procs, logs = [], []
    for i in range(3):
        logs.append(open(os.path.join(tmp, f"node{i + 1}.log"), "ab"))
        procs.append(subprocess.Popen(
            [server, "--data-dir", os.path.join(tmp, f"d{i + 1}"), "--node-id", str(i + 1),
             "--peers", peers, "--listen-client", f"127.0.0.1:{clients[i]}"],
            stdout=logs[-1], stderr=logs[-1]))
    eps = [f"http://127.0.0.1:{p}" for p in clients]

    def ctl(i, *args, input=None):
        r = subprocess.run(["etcdctl", "--endpoints", eps[i]] + list(args), input=input,
                           capture_output=True, timeout=30, env=dict(os.environ, ETCDCTL_API="3"))
        assert r.returncode == 0, (i, args, r.stderr.decode(errors="replace"))
        return r.stdout

    def until(fn, what, timeout=20):
        deadline = time.time() + timeout
        while True:
            try:
                v = fn()
                if v:
                    return v
            except (AssertionError, subprocess.TimeoutExpired):
                pass
            assert time.time() < deadline, what
            time.sleep(0.2)

    try:
        for i in range(3):
            until(lambda: ctl(i, "endpoint", "health") is not None, f"node {i + 1} healthy", 40)
        leaders = {json.loads(ctl(i, "endpoint", "status", "-w", "json"))[0]["Status"]["leader"]
                   for i in range(3)}
        assert len(leaders) == 1 and leaders <= {1, 2, 3}, leaders
        members = json.loads(ctl(1, "member", "list", "-w", "json"))["members"]
        assert [(m["ID"], m["name"], m["peerURLs"]) for m in members] == \
            [(i + 1, f"etcdfs-{i + 1}", [f"http://127.0.0.1:{raft[i]}"]) for i in range(3)]
        assert [m.get("clientURLs") for m in members] == [None, [eps[1]], None]
        w = subprocess.Popen(["etcdctl", "--endpoints", eps[0], "watch", "c/", "--prefix"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(1)
        for i in range(3):
            ctl(i, "put", f"c/from{i + 1}", f"node {i + 1}")
        for i in range(3):
            until(lambda: ctl(i, "get", "c/", "--prefix", "--keys-only").split() ==
                  [b"c/from1", b"c/from2", b"c/from3"], f"node {i + 1} sees every put")
        lease = ctl(1, "lease", "grant", "60").split()[1].decode()
        ctl(2, "put", "c/leased", "x", "--lease", lease)
        ctl(0, "lease", "revoke", lease)
        for i in range(3):
            until(lambda: not ctl(i, "get", "c/leased").strip(), f"node {i + 1}: lease keys gone")
        w.terminate()
        out = w.communicate(timeout=10)[0].decode().split()
        assert out.count("PUT") == 4 and out.count("DELETE") == 1, out
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


METHODS = ["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange",
           "/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Compact", "/etcdserverpb.Watch/Watch",
           "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Lease/LeaseRevoke",
           "/etcdserverpb.Lease/LeaseKeepAlive", "/etcdserverpb.Lease/LeaseTimeToLive",
           "/etcdserverpb.Lease/LeaseLeases", "/etcdserverpb.Maintenance/Status",
           "/etcdserverpb.Maintenance/Alarm", "/etcdserverpb.Maintenance/HashKV",
           "/etcdserverpb.Maintenance/Hash", "/etcdserverpb.Cluster/MemberList"]


def random_message(r):
    """Bytes that are often a protobuf message with plausible fields, sometimes garbage."""
    if r.random() < 0.2:
        return bytes(r.randrange(256) for _ in range(r.randrange(40)))
    out = b""
    for _ in range(r.randrange(6)):
        num = r.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 64])
        if r.random() < 0.5:
            out += pb_field(num, 0, r.choice([0, 1, 2, 3, 4, 5, 2**31, 2**63 - 1, 2**64 - 1]))
        else:
            inner = random_message(r) if r.random() < 0.3 else \
                r.choice([b"k", b"\0", b"a", b"z", b"", b"\xff" * 3])
            out += pb_field(num, 2, inner)
    return out


def test_random_requests(store):
    """600 random requests over every method (plausible protobuf fields, nested messages,
    garbage): every call ends with a status, and the server (ASan, UBSan) lives on."""
    import random
    r = random.Random(19)
    for k in range(6):
        store.put(f"k{k}", "v")
    c = H2(store.port)
    sids = []
    for i in range(600):
        path = r.choice(METHODS)
        sid = c.open(path)
        sids.append((sid, path))
        c.send(sid, grpc_frame(random_message(r)), end="Watch" not in path and
               "KeepAlive" not in path)
        if i % 50 == 49:
            c.drain(0.2)
    deadline = time.time() + 60
    unary = [s for s, p in sids if "Watch" not in p and "KeepAlive" not in p]
    while not set(unary) <= c.ended and time.time() < deadline:
        c.read_frame()
    assert set(unary) <= c.ended
    c.close()
    store.ctl("put", "still", "alive")
    store.ctl("endpoint", "status")


def test_slow_call_does_not_block_the_connection(tmp):
    """Unary calls of one connection run concurrently: a write stuck waiting for a Raft
    quorum that is gone does not hold up a read sent after it on the same connection."""
    from conftest import BUILD, free_port
    server = os.path.join(BUILD, "src/gateway/etcdfs-server")
    raft = [free_port() for _ in range(2)]
    peers = ",".join(f"{i + 1}=127.0.0.1:{raft[i]}:{free_port()}" for i in range(2))
    port = free_port()
    log = open(os.path.join(tmp, "n.log"), "ab")
    procs = [subprocess.Popen([server, "--data-dir", os.path.join(tmp, f"d{i + 1}"),
                               "--node-id", str(i + 1), "--peers", peers,
                               "--listen-client", f"127.0.0.1:{port if i == 0 else free_port()}"],
                              stdout=log, stderr=log) for i in range(2)]
    try:
        class S:
            endpoint = f"http://127.0.0.1:{port}"
        deadline = time.time() + 40
        while True:
            r = subprocess.run(["etcdctl", "--endpoints", S.endpoint, "put", "k", "v"],
                               capture_output=True, timeout=30)
            if r.returncode == 0:
                break
            assert time.time() < deadline, r.stderr
            time.sleep(0.3)
        procs[1].kill()  # no quorum any more: writes wait (5 s), local reads do not
        procs[1].wait()
        c = H2(port)
        put = c.open("/etcdserverpb.KV/Put")
        c.send(put, grpc_frame(pb_field(1, 2, b"k") + pb_field(2, 2, b"w")), end=True)
        time.sleep(0.2)
        t0 = time.time()
        get = c.open("/etcdserverpb.KV/Range")
        c.send(get, grpc_frame(pb_field(1, 2, b"k") + pb_field(7, 0, 1)), end=True)
        while get not in c.ended:
            c.read_frame()
        took = time.time() - t0
        assert put not in c.ended and took < 2, took  # the read did not wait for the write
        c.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        log.close()


def _json_call(server, path, body):
    """(HTTP status, reply) from a server's JSON gateway, errors included."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(server.endpoint + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _lease_view(reply):
    """A reply without its header's ids, remaining TTLs as 'kept' or their value."""
    out = dict(reply)
    inner = out.get("result", out)
    if "header" in inner:
        inner["header"] = {"revision": inner["header"].get("revision")}
    if "TTL" in inner and int(inner["TTL"]) > 30:
        inner["TTL"] = "kept"
    if "keys" in inner:
        inner["keys"] = sorted(inner["keys"])
    if "error" in out:
        out.pop("message", None)  # grpc-gateway 3.4 sends both; compare error and code
    return out


def test_json_lease_endpoints_differential(pair):
    """The Lease service on the JSON gateway (/v3/lease/*, /v3/kv/lease/* aliases): the same
    calls to etcd 3.4 and to etcdfs-server give the same replies, header ids and remaining
    TTLs aside; unknown leases as etcd answers them."""
    b = lambda s: base64.b64encode(s.encode()).decode()
    lid = 7340
    steps = [("/v3/lease/grant", {"ID": lid, "TTL": 60}),
             ("/v3/kv/put", {"key": b("/l/a"), "value": b("1"), "lease": lid}),
             ("/v3/kv/put", {"key": b("/l/b"), "value": b("2"), "lease": lid}),
             ("/v3/lease/timetolive", {"ID": lid, "keys": True}),
             ("/v3/kv/lease/timetolive", {"ID": lid}),
             ("/v3/lease/leases", {}),
             ("/v3/kv/lease/leases", {}),
             ("/v3/lease/keepalive", {"ID": lid}),
             ("/v3/lease/revoke", {"ID": lid}),
             ("/v3/kv/range", {"key": b("/l/"), "range_end": b("/l0"), "count_only": True}),
             ("/v3/lease/timetolive", {"ID": lid}),
             ("/v3/kv/lease/revoke", {"ID": lid}),
             ("/v3/lease/grant", {"ID": 99, "TTL": 60}),
             ("/v3/lease/grant", {"ID": 99, "TTL": 60})]
    got = []
    for s in pair:
        got.append([(path, *(lambda r: (r[0], _lease_view(r[1])))(_json_call(s, path, body)))
                    for path, body in steps])
    for e, s in zip(*got):
        assert e == s, (e, s)
    revoked = got[1][9][2]
    assert revoked.get("count") in (None, "0"), revoked  # the lease's keys went with it
    assert got[1][10][2]["TTL"] == "-1" and got[1][11][1] == 404, got[1][10:12]
