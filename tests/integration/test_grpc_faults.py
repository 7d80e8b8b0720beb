"""Fault injection on etcdfs-server's gRPC API, beyond what test_grpc.py covers
(a reset after 1000 watches, a half-open connection, a stalled raw reader
against the same writes without a watch):

- a real client SIGKILLed mid-stream: etcdctl watch while events flow, and a
  raw client killed in the middle of an HTTP/2 frame and of a gRPC message;
- a real client that stops reading (etcdctl watch, SIGSTOPped) while many
  events are written: the server's RSS stays bounded, the writes and another
  client's watch go on at full pace, and once it reads again it gets every
  event in order;
- 1,000 concurrent watches on four connections, every one cancelled by a cancel
  request and answered, five rounds: RSS and threads before, during and after.

Each test prints its figures (pytest -s shows them); docs/store.md records a run.
"""
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import store_started
from test_grpc import H2, WINDOW, pb_parse, task_count, vm_rss_kb, watch_cancel, watch_create


@pytest.fixture
def bare_store(tmp, monkeypatch):
    """The server without ASan's quarantine of freed memory (32 MiB in the suite), so that
    its RSS shows the server's own memory: with the quarantine, RSS after a round of 1000
    watches grew by 10-20 MiB a round for seven rounds; without it, it levels off after two.
    Leaks are still reported at exit."""
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "")
                       + ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
    yield from store_started(tmp)


def steady_task_count(pid, timeout=10):
    """The server's thread count once two samples 0.3 s apart agree."""
    deadline = time.time() + timeout
    prev, cur = -1, task_count(pid)
    while cur != prev and time.time() < deadline:
        time.sleep(0.3)
        prev, cur = cur, task_count(pid)
    return cur


def settle(pid, limit, timeout=30):
    """Waits until the server has at most limit threads; the count it reached."""
    deadline = time.time() + timeout
    while task_count(pid) > limit and time.time() < deadline:
        time.sleep(0.1)
    return task_count(pid)


class Feed:
    """The replies of one stream, parsed as they come; the flow-control window is given
    back for every byte at once (a reader that keeps up)."""

    def __init__(self, c, sid):
        self.c, self.sid, self.buf = c, sid, b""
        self.replies, self.events = [], 0

    def pump(self, timeout=30):
        self.c.read_frame(timeout)
        data = self.c.data.pop(self.sid, b"")
        if not data:
            return
        self.c.frame(WINDOW, 0, 0, struct.pack(">I", len(data)))
        self.c.frame(WINDOW, 0, self.sid, struct.pack(">I", len(data)))
        self.buf += data
        i = 0
        while len(self.buf) - i >= 5:
            ln = struct.unpack(">I", self.buf[i + 1:i + 5])[0]
            if len(self.buf) - i - 5 < ln:
                break
            r = pb_parse(self.buf[i + 5:i + 5 + ln])
            self.events += len(r.pop(11, []))  # the events themselves are not kept
            self.replies.append(r)
            i += 5 + ln
        self.buf = self.buf[i:]


def etcdctl_watch(store, prefix, *args):
    return subprocess.Popen(store.ctl_args() + ["watch", "--prefix", prefix] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=store.ctl_env())


def read_lines(proc, out):
    for line in proc.stdout:
        out.append(line)


def test_etcdctl_watch_killed_mid_stream(store):
    """Three etcdctl watches while a writer puts without pause; one is SIGKILLed while
    events flow to it. Its watch is cancelled on the server (its connection's and its
    watch's threads end), the writer never fails, and the other two watches see every put."""
    pid = store.proc.pid
    store.put("warm", "up")
    store.ctl("endpoint", "health")
    threads0 = task_count(pid)
    procs = [etcdctl_watch(store, "kill/") for _ in range(3)]
    outs = [[] for _ in procs]
    readers = [threading.Thread(target=read_lines, args=(p, o), daemon=True)
               for p, o in zip(procs, outs)]
    for t in readers:
        t.start()
    deadline = time.time() + 20
    n = 0
    while not all(outs) and time.time() < deadline:
        store.put("kill/k", f"v{n}")
        n += 1
        time.sleep(0.05)
    assert all(outs), "an etcdctl watch saw nothing"
    stop = threading.Event()
    written = []

    def writer():
        i = 0
        while not stop.is_set() and i < 400:
            store.put(f"kill/w{i % 10}", f"x{i}")
            written.append(i)
            i += 1

    w = threading.Thread(target=writer)
    w.start()
    while len(written) < 20 and w.is_alive():
        time.sleep(0.01)
    during = task_count(pid)
    procs[0].send_signal(signal.SIGKILL)  # events flowing to it at this moment
    procs[0].wait()
    after_kill = settle(pid, during - 2, 20)
    w.join()
    time.sleep(1)
    for p in procs[1:]:
        p.terminate()
        p.wait()
    for t in readers:
        t.join(5)
    print(f"etcdctl watch SIGKILLed mid-stream: server threads {threads0} before, {during} "
          f"with 3 watches, {after_kill} after the kill; {len(written)} puts meanwhile")
    assert after_kill <= during - 2, (after_kill, during)
    for o in outs[1:]:
        seen = [ln for ln in o if ln.startswith(b"kill/w")]
        assert len(seen) == len(written), (len(seen), len(written))
    assert settle(pid, threads0 + 1, 20) <= threads0 + 1
    store.ctl("endpoint", "health")


RAW_CLIENT = r"""
import struct, sys, time
sys.path.insert(0, sys.argv[1])
from test_grpc import H2, DATA, pb_field, watch_create, replies, grpc_frame
c = H2(int(sys.argv[2]))
sid = c.open("/etcdserverpb.Watch/Watch")
for i in range(50):
    c.send(sid, watch_create(b"raw/", b"raw0"))
while len(replies(c, sid)[0]) < 50:
    c.read_frame()
put = c.open("/etcdserverpb.KV/Put")
if sys.argv[3] == "frame":
    # a DATA frame header announcing 16384 bytes, then 100 of them
    c.sock.sendall(struct.pack(">I", 16384)[1:] + bytes([DATA, 0]) + struct.pack(">I", put)
                   + b"y" * 100)
else:
    # whole frames holding the start of a gRPC message announced as 1 MiB
    c.send(put, struct.pack(">BI", 0, 1 << 20) + b"y" * 200000)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("where", ["frame", "message"])
def test_raw_client_killed_mid_frame(store, where):
    """A raw client with 50 watches SIGKILLed in the middle of an HTTP/2 frame (a frame
    header announcing 16 KiB, 100 bytes of it sent) or of a gRPC message (200 KB of one
    announced as 1 MiB): the server drops the connection, its 50 watches and the partial
    request (ASan checks the memory at exit), and serves on."""
    pid = store.proc.pid
    store.ctl("endpoint", "health")
    # etcdctl's connection thread may still be ending: count once it has
    threads0, rss0 = steady_task_count(pid), vm_rss_kb(pid)
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen([sys.executable, "-c", RAW_CLIENT, here, str(store.port), where],
                         stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        during = task_count(pid)
        assert during >= threads0 + 50
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    after = settle(pid, threads0 + 1, 20)
    print(f"raw client killed mid-{where}: threads {threads0} -> {during} -> {after}, "
          f"RSS {rss0 / 1024:.1f} -> {vm_rss_kb(pid) / 1024:.1f} MiB")
    assert after <= threads0 + 1, (after, threads0)
    store.put("raw/after", "1")
    assert store.get("raw/after")[0] == b"1"


def test_stopped_etcdctl_watch_is_bounded(store):
    """etcdctl watch stops reading (SIGSTOP) while 64 MiB of events are written for it.
    The server's RSS grows no more than for the same writes with no watch (+32 MiB); the
    writes go on, and a second watch on the same keys gets every event as it happens. After
    SIGCONT the stopped etcdctl prints every event, in order."""
    pid = store.proc.pid
    store.put("slow/first", "0")
    slow = etcdctl_watch(store, "slow/", "--rev", str(store.revision()))
    assert [slow.stdout.readline() for _ in range(3)] == [b"PUT\n", b"slow/first\n", b"0\n"]
    c = H2(store.port)
    fast = Feed(c, c.open("/etcdserverpb.Watch/Watch"))
    c.send(fast.sid, watch_create(b"o", b"t"))  # other/... and slow/...
    while not fast.replies:
        fast.pump()
    val = "v" * (64 << 10)
    n = 1024

    def write(prefix):
        """The same writes, read live by the other watch: RSS growth, puts/s, worst lag."""
        rss0, t0, lag, base = vm_rss_kb(pid), time.time(), 0.0, fast.events
        for i in range(n):
            store.put(f"{prefix}/{i % 8}", f"{i:06d}" + val)
            if i % 8 == 7 or i == n - 1:  # the other watch has it at once
                t = time.time()
                while fast.events < base + i + 1:
                    fast.pump(timeout=10)
                lag = max(lag, time.time() - t)
        return (vm_rss_kb(pid) - rss0) / 1024, n / (time.time() - t0), lag

    alone, rate_alone, lag_alone = write("other")  # keys the stopped watch does not see
    store.compact(store.revision())  # not past the watch: it has had everything so far
    slow.send_signal(signal.SIGSTOP)
    try:
        grown, rate, lag = write("slow")
    finally:
        slow.send_signal(signal.SIGCONT)
    print(f"stopped etcdctl watch, {n} x 64 KiB events: server RSS +{grown:.1f} MiB "
          f"(+{alone:.1f} MiB for the same writes not watched by it); {rate:.0f} puts/s "
          f"({rate_alone:.0f}); the live watch's lag at most {lag * 1000:.0f} ms "
          f"({lag_alone * 1000:.0f} ms)")
    assert grown < alone + 32, (grown, alone)
    assert lag < 5
    # reading again: every event, in order from the first
    seq = []
    deadline = time.time() + 120
    while len(seq) < n and time.time() < deadline:
        line = slow.stdout.readline()
        if not line:
            break
        if line.startswith(b"slow/"):
            seq.append(int(slow.stdout.readline()[:6]))
    slow.terminate()
    slow.wait()
    assert seq == list(range(n)), (len(seq), seq[:3], seq[-3:])
    c.close()


def thousand_watches(store, threads0):
    """One round: 1,000 watches, 250 on each of four connections, one event each, a
    cancel request for each (every one answered canceled), the connections closed.
    Returns the RSS (MiB) created, after the event, after closing; and figures."""
    pid = store.proc.pid
    feeds = []
    for _ in range(4):
        c = H2(store.port)
        feeds.append(Feed(c, c.open("/etcdserverpb.Watch/Watch")))
    for f in feeds:
        for _ in range(250):
            f.c.send(f.sid, watch_create(b"k/", b"k0"))
    deadline = time.time() + 60
    for f in feeds:
        while len(f.replies) < 250 and time.time() < deadline:
            f.pump()
        assert len(f.replies) == 250 and all(r.get(3) == [1] for r in f.replies)
    threads1, rss1 = task_count(pid), vm_rss_kb(pid)
    assert threads1 >= threads0 + 1000
    store.put("k/x", "1")
    for f in feeds:
        while f.events < 250 and time.time() < deadline:
            f.pump()
        assert f.events == 250
    rss2 = vm_rss_kb(pid)
    t0 = time.time()
    for f in feeds:
        for wid in range(250):
            f.c.send(f.sid, watch_cancel(wid))
    for f in feeds:
        while True:
            canceled = {r.get(2, [0])[0] for r in f.replies if r.get(4) == [1]}
            if len(canceled) == 250 or time.time() > deadline:
                break
            f.pump()
        assert canceled == set(range(250)), len(canceled)
    took = time.time() - t0
    threads2 = settle(pid, threads0 + 4, 30)  # the four connection threads remain
    assert threads2 <= threads0 + 4, (threads2, threads0)
    for f in feeds:
        f.c.send(f.sid, b"", end=True)
        f.c.close()
    threads3 = settle(pid, threads0 + 1, 30)
    assert threads3 <= threads0 + 1, (threads3, threads0)
    rss3 = vm_rss_kb(pid)
    return [x / 1024 for x in (rss1, rss2, rss3)], (threads1, threads2, threads3, took)


def test_thousand_watches_cancelled(bare_store):
    """1,000 concurrent watches, all cancelled by request and answered, five times over:
    the server's threads come back to where they were each time, and its peak RSS (after one
    event on every watch) levels off, as what a round leaves is reused: from the second round
    to the fifth it grows by less than 6 MiB, where a leak of 2 KiB per watch adds 5.9 MiB
    and 4 KiB adds 11.7. The peak is the measure because it is steady (146.0-147.1 MiB in
    ten rounds here); RSS after the close swung between 57 and 80 MiB from round to round,
    as ASan's allocator returned freed pages to the kernel or not, and once failed CI."""
    store = bare_store
    pid = store.proc.pid
    store.put("warm", "up")
    store.ctl("endpoint", "health")
    threads0, rss0 = task_count(pid), vm_rss_kb(pid) / 1024
    peaks = []
    for i in range(5):
        (rss1, rss2, rss3), (t1, t2, t3, took) = thousand_watches(store, threads0)
        peaks.append(rss2)
        print(f"round {i + 1}: 1000 watches on 4 connections: RSS {rss0:.1f} MiB before, "
              f"{rss1:.1f} created, {rss2:.1f} after one event each, {rss3:.1f} after all "
              f"cancelled and closed; threads {threads0} -> {t1} -> {t2} (cancelled) -> "
              f"{t3} (closed); 1000 cancels answered in {took:.1f} s")
    assert peaks[4] < peaks[1] + 6, peaks
    store.ctl("endpoint", "health")
