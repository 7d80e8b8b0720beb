"""Watch-driven cache: external changes show up fast; unchanged reads stay
in the kernel; faults resynchronize to exactly etcd's state."""
import mmap
import os
import threading
import time

import pytest

from conftest import read, read_tree, wait_for
from naming import expected_files


def test_external_changes_visible(etcd, mnt):
    etcd.put("/w/dir/a", "1")
    d = os.path.join(mnt.path, "w/dir")
    assert wait_for(lambda: os.listdir(d) == ["a"])
    p = os.path.join(d, "a")
    assert read(p) == b"1"
    st1 = os.stat(p)
    etcd.put("/w/dir/a", "22")
    assert wait_for(lambda: read(p) == b"22")
    assert os.stat(p).st_size == 2
    # a new key in a directory already listed
    etcd.put("/w/dir/b", "new")
    assert wait_for(lambda: sorted(os.listdir(d)) == ["a", "b"])
    assert read(os.path.join(d, "b")) == b"new"
    # delete: once the mount has applied it, a listing leaves the name out and stat fails
    # (polling the listing instead raced the notifier under load, once in CI:
    # test_names_gone_from_a_listing_are_gone_for_stat)
    rev = int(etcd.delete("/w/dir/a")["header"]["revision"])
    assert wait_for(lambda: int(mnt.xattr("", "user.etcdfs.revision")) >= rev)
    assert os.listdir(d) == ["b"]
    assert not os.path.exists(p)
    assert st1.st_ino != 0


def test_names_gone_from_a_listing_are_gone_for_stat(etcd, mnt):
    """Once the mount has applied a delete (its revision xattr reached it), a listing leaves
    the names out and stat of them fails too, though the notifier may still be working
    through the invalidations: each listing's OPENDIR waits for those queued before it.
    3,000 cached entries go in one delete, so the queue is long when the listing comes.
    Without that wait, 1,273 of the 3,000 names still answered stat after an empty listing,
    in one of three runs of three rounds; and when the delete took the directory too, its
    OPENDIR answered ENOENT before that wait, so 208 to 1,538 of the names still answered stat
    on every run of a fresh machine. (A delete applied between a listing's OPENDIR and
    its READDIR can still show in it a moment before the kernel forgets the name:
    docs/consistency.md.)"""
    for _ in range(6):
        names_gone_round(etcd, mnt, 3000)


def names_gone_round(etcd, mnt, n):
    etcd.put_many([(f"/gone/d/k{i:04d}", b"v") for i in range(n)])
    d = os.path.join(mnt.path, "gone/d")
    assert wait_for(lambda: os.path.isdir(d) and len(os.listdir(d)) == n, timeout=20)
    names = [os.path.join(d, f"k{i:04d}") for i in range(n)]
    for p in names:  # the kernel caches every entry
        os.stat(p)
    rev = int(etcd.delete("/gone/d/", prefix=True)["header"]["revision"])
    assert wait_for(lambda: int(mnt.xattr("", "user.etcdfs.revision")) >= rev, timeout=20)
    try:
        listed = os.listdir(d)
    except FileNotFoundError:  # the last key's delete took the directory
        listed = []
    assert listed == []
    stale = [p for p in names if os.path.exists(p)]
    assert not stale, f"{len(stale)} of {n} deleted names still stat after the listing"


def test_new_keys_listed_while_listing(etcd, mnt):
    """Each new key shows in a directory that is listed over and over. A key
    that arrived between the kernel's OPENDIR and its READDIR once stayed
    out of the kernel's cached listing for good."""
    etcd.put("/w/l/k0", "0")
    d = os.path.join(mnt.path, "w/l")
    assert wait_for(lambda: os.listdir(d) == ["k0"])
    stop = threading.Event()

    def lister():
        while not stop.is_set():
            os.listdir(d)
    t = threading.Thread(target=lister)
    t.start()
    try:
        for i in range(1, 41):
            etcd.put("/w/l/k%d" % i, str(i))
            want = sorted("k%d" % j for j in range(i + 1))
            assert wait_for(lambda: sorted(os.listdir(d)) == want, timeout=5), \
                (i, sorted(os.listdir(d)))
    finally:
        stop.set()
        t.join()


def test_open_file_rereads(etcd, mnt):
    etcd.put("/w/k", "first")
    p = os.path.join(mnt.path, "w/k")
    assert wait_for(lambda: os.path.exists(p))
    with open(p, "rb") as f:
        assert f.read() == b"first"
        etcd.put("/w/k", "second!")
        def reread():
            f.seek(0)
            return f.read() == b"second!"
        assert wait_for(reread)


def test_mmap_reader_sees_change(etcd, mnt):
    etcd.put("/w/m", "aaaa")
    p = os.path.join(mnt.path, "w/m")
    assert wait_for(lambda: os.path.exists(p))
    time.sleep(1.1)  # mmap needs the page cache: not within a second of a change
    with open(p, "rb") as f:
        m = mmap.mmap(f.fileno(), 4, prot=mmap.PROT_READ)
        assert m[:4] == b"aaaa"
        etcd.put("/w/m", "bbbb")
        assert wait_for(lambda: m[:4] == b"bbbb")
        m.close()


def test_rapid_updates_final_value(etcd, mnt):
    p = os.path.join(mnt.path, "w/fast")
    etcd.put("/w/fast", "0")
    assert wait_for(lambda: os.path.exists(p))
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                read(p)
            except OSError:
                pass
    t = threading.Thread(target=reader)
    t.start()
    for i in range(1, 1001):
        etcd.put("/w/fast", str(i))
    stop.set()
    t.join()
    assert wait_for(lambda: read(p) == b"1000")


def test_unchanged_reads_stay_in_kernel(etcd, mnt):
    etcd.put("/w/cached", "x" * 10000)
    p = os.path.join(mnt.path, "w/cached")
    assert wait_for(lambda: os.path.exists(p))
    # a file created or changed within the last second is read with direct
    # I/O (docs/consistency.md); steady state is what this test measures
    time.sleep(1.1)
    read(p)
    read(p)
    before = int(mnt.xattr("", "user.etcdfs.reads"))
    for _ in range(50):
        assert read(p) == b"x" * 10000
    after = int(mnt.xattr("", "user.etcdfs.reads"))
    assert after == before, f"{after - before} reads reached the daemon"
    # and a change still gets through
    etcd.put("/w/cached", "y")
    assert wait_for(lambda: read(p) == b"y")


def test_status_xattrs(etcd, mnt):
    rev = etcd.put("/w/s", "1")
    assert wait_for(lambda: int(mnt.xattr("", "user.etcdfs.revision")) >= rev)
    assert mnt.xattr("", "user.etcdfs.watch") == "healthy"
    for name in ("user.etcdfs.keys", "user.etcdfs.cache_hits", "user.etcdfs.requests",
                 "user.etcdfs.errors", "user.etcdfs.events"):
        assert int(mnt.xattr("", name)) >= 0
    assert int(mnt.xattr("", "user.etcdfs.keys")) == 1
    read(os.path.join(mnt.path, "w/s"))
    assert mnt.xattr("", "user.etcdfs.cache_hit_rate").endswith("%")
    assert 0 <= int(mnt.xattr("", "user.etcdfs.watch_age_ms")) < 5000
    names = os.listxattr(mnt.path)
    assert "user.etcdfs.watch_age_ms" in names and "user.etcdfs.revision" in names


def test_sync_progress_xattr(etcd, mount_factory):
    """The mount root's user.etcdfs.sync tells how the initial sync (or a
    running resync) went: here all 30 keys, done."""
    for i in range(30):
        etcd.put(f"/sp/k{i:02d}", "v")
    m = mount_factory(["--endpoints", etcd.endpoint, "--prefix", "/sp"])
    assert m.xattr("", "user.etcdfs.sync") == "30 keys"
    assert "user.etcdfs.sync" in os.listxattr(m.path)
    assert "sync: 30 keys at revision" in m.log()


def test_paced_sync(etcd, mount_factory):
    """--sync-pace=N lists the prefix at a pace (cache.c, sync_pace; the pauses
    themselves are timed in test_cache's test_paced_pages): the mount says so
    in its log and still shows every key of its three pages; -o sync_pace=0
    lists at full speed."""
    etcd.put_many([(f"/pace/k{i:05d}", f"v{i}") for i in range(2500)])
    m = mount_factory(["--endpoints", etcd.endpoint, "--prefix", "/pace", "--sync-pace=4"])
    assert "sync: 2500 keys: paced" in m.log()
    assert m.xattr("", "user.etcdfs.sync") == "2500 keys"
    assert len(os.listdir(m.path)) == 2500
    assert read(os.path.join(m.path, "k02499")) == b"v2499"
    m2 = mount_factory(["--endpoints", etcd.endpoint, "--prefix", "/pace", "-o", "sync_pace=0"])
    assert "paced" not in m2.log()
    assert len(os.listdir(m2.path)) == 2500


def test_resync_after_outage_and_compaction(etcd, mnt):
    mnt.allowed_errors += ["watch", "etcd", "unreachable", "refused", "compacted"]
    for i in range(20):
        etcd.put(f"/rs/k{i}", f"v{i}")
    assert wait_for(lambda: len(os.listdir(os.path.join(mnt.path, "rs"))) == 20)
    etcd.stop()
    time.sleep(1.5)
    etcd.start()
    # changes the watch will never see: written and compacted away
    etcd.delete("/rs/k0")
    etcd.put("/rs/k1", "changed")
    etcd.put("/rs/new", "added")
    etcd.put("/rs/k2", "a")
    etcd.delete("/rs/k2")
    rev = etcd.put("/other/x", "y")
    etcd.compact(rev)

    def same():
        want = {}
        keys = etcd.keys()
        files, _ = expected_files(keys)
        for k in keys:
            v, _ = etcd.get(k)
            want[k.lstrip(b"/")] = v
        return read_tree(mnt.path) == want
    assert wait_for(same, timeout=20)


def test_read_invalidate_race(etcd, mnt):
    """Readers and an external writer hammer one file: no hang, every read
    returns a value that was written."""
    # etcd itself is saturated here; a slow health probe is expected
    mnt.allowed_errors += ["maintenance/status"]
    etcd.put("/race/f", "v0-" + "x" * 5000)
    p = os.path.join(mnt.path, "race/f")
    assert wait_for(lambda: os.path.exists(p))
    written = {b"v0-" + b"x" * 5000}
    lock = threading.Lock()
    stop = threading.Event()
    bad = []
    reads = [0]

    def reader():
        while not stop.is_set():
            try:
                data = read(p)
            except OSError as e:
                bad.append(repr(e))
                return
            with lock:
                if data not in written:
                    # the value may have been written an instant ago
                    pass
                reads[0] += 1
            seen.append(data)

    seen = []
    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    t0 = time.time()
    i = 0
    while time.time() - t0 < 30:
        i += 1
        v = f"v{i}-" + "x" * (5000 + i % 300)
        with lock:
            written.add(v.encode())
        etcd.put("/race/f", v)
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a reader hung"
    assert not bad, bad
    assert reads[0] > 100
    for data in seen:
        # every version is "vN-" and x's: a torn read shows as a length
        # that is not N's (a cut, or another version's pages)
        n = int(data.split(b"-")[0][1:] or -1) if data[:1] == b"v" else -1
        want = 5000 + n % 300 + len(f"v{n}-") if n > 0 else 5003
        assert data in written, (data[:12], len(data), "version's length", want)
    assert wait_for(lambda: read(p) == v.encode())



@pytest.mark.xfail(strict=True, reason="known: a quiet file's reader that reads in several "
                   "calls can get the start of one version and the rest of a longer next one")
def test_quiet_file_read_in_two_calls_racing_a_change(etcd, mnt):
    """f.read() reads size + 1 bytes, then on until a read returns 0. A
    change landing between its calls, on a file opened while quiet (read
    through the page cache), adds the newer version's tail to the older
    version's start: the second call goes past the older size, the kernel
    asks for the size again and reads the newer version from there."""
    old = b"v1-" + b"x" * 5000
    new = b"v2-" + b"y" * 6000
    etcd.put("/torn/f", old)
    p = os.path.join(mnt.path, "torn/f")
    assert wait_for(lambda: os.path.exists(p))
    time.sleep(1.5)  # quiet: no change within the last second
    fd = os.open(p, os.O_RDONLY)
    try:
        got = os.read(fd, os.fstat(fd).st_size + 1)
        assert got == old
        etcd.put("/torn/f", new)
        assert wait_for(lambda: read(p) == new)  # the change reached the mount
        while True:
            more = os.read(fd, 65536)
            if not more:
                break
            got += more
    finally:
        os.close(fd)
    assert got in (old, new), (got[:12], len(got), got[-12:])

def etcd_ranges(etcd):
    import urllib.request
    from conftest import StoreServer
    if isinstance(etcd, StoreServer):
        pytest.skip("counts ranges with etcd's /metrics, which the embedded store has not")
    with urllib.request.urlopen(etcd.endpoint + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("etcd_mvcc_range_total "):
                return float(line.split()[1])
    raise AssertionError("no etcd_mvcc_range_total metric")


def test_linearizable_opens_read_etcd(etcd, mount_factory):
    """--consistency=linearizable revalidates every open with a quorum read;
    the default serves opens from the watch-fed cache."""
    etcd.put("/lin/k", "v1")
    lin = mount_factory(["--endpoints", etcd.endpoint, "--consistency=linearizable"])
    dflt = mount_factory(["--endpoints", etcd.endpoint])
    for m in (lin, dflt):
        read(os.path.join(m.path, "lin/k"))
    before = etcd_ranges(etcd)
    for _ in range(10):
        assert read(os.path.join(dflt.path, "lin/k")) == b"v1"
    mid = etcd_ranges(etcd)
    for _ in range(10):
        assert read(os.path.join(lin.path, "lin/k")) == b"v1"
    after = etcd_ranges(etcd)
    # the health probes of both mounts may add a few status calls, but
    # not ranges; 10 linearizable opens are 10 ranges
    assert mid - before < 3
    assert after - mid >= 10
