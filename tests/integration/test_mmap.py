"""mmap through the mount (issue #14): a shared writable mapping of an
ordinary file is saved as exactly one put, a read-only mapping works on a
file that just changed through the watch, and the commit model's
guarantees (one process's unsaved bytes are its own; read-modify-write by
two processes is a conflict, not a lost update) hold with the page cache.
docs/writes.md, "Commit model"."""
import contextlib
import errno
import mmap
import os
import subprocess
import sys
import time

import pytest

from conftest import wait_for, read
from test_write import Watch, assert_one_put


@pytest.fixture
def m(etcd, mount_factory):
    m = mount_factory(["--endpoints", etcd.endpoint, "--command-timeout=3s"])
    m.allowed_errors += ["conflict:"]
    return m


def put_shown(etcd, m, key, content):
    """Puts key = content (bytes) and waits until the mount shows it; the
    file's path."""
    etcd.put(key, content)
    p = os.path.join(m.path, key.lstrip("/"))
    assert wait_for(lambda: read(p) == content)
    return p


@contextlib.contextmanager
def refused_at_close(fd, err):
    """The block works on fd; then its close, which saves, must fail with
    err. fd is closed either way."""
    try:
        yield
    except BaseException:
        os.close(fd)
        raise
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == err


def test_shared_writable_mmap_msync_is_one_put(etcd, m):
    orig = b"a" * 5000 + b"\n"
    p = put_shown(etcd, m, "/mm/f", orig)
    w = Watch(etcd, "/mm/")
    fd = os.open(p, os.O_RDWR)
    try:
        mp = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        assert mp[:3] == b"aaa"
        mp[0:5] = b"HELLO"
        mp[4096:4101] = b"WORLD"
        # the process's own reads see what it wrote through the mapping
        assert os.pread(fd, 5, 4096) == b"WORLD"
        mp.flush()  # msync(MS_SYNC): the save
        mp.close()  # munmap
    finally:
        os.close(fd)
    want = b"HELLO" + b"a" * 4091 + b"WORLD" + b"a" * 899 + b"\n"
    assert_one_put(w.stop(), "/mm/f", want)
    assert etcd.get("/mm/f")[0] == want
    assert read(p) == want


def test_shared_writable_mmap_saved_at_close(etcd, m):
    """No msync: munmap leaves dirty pages, close writes them and saves
    once. The file grows with ftruncate first, as SQLite's -shm does."""
    p = os.path.join(m.path, "mm/g")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    w = Watch(etcd, "/mm/")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 8192)
        assert os.fstat(fd).st_size == 8192
        mp = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        mp[8000:8004] = b"tail"
        mp[0:4] = b"head"
        mp.close()
    finally:
        os.close(fd)
    want = b"head" + b"\0" * 7996 + b"tail" + b"\0" * 188
    assert_one_put(w.stop(), "/mm/g", want)
    assert etcd.get("/mm/g")[0] == want


def test_read_only_mmap_of_a_file_just_changed(etcd, m):
    """A file an external put changed an instant ago maps (read-only,
    MAP_SHARED: its reader has direct I/O, FUSE_DIRECT_IO_ALLOW_MMAP) and
    shows the new version, then the next one."""
    etcd.put("/mm/h", "v1 " + "x" * 6000)
    p = os.path.join(m.path, "mm/h")
    assert wait_for(lambda: read(p).startswith(b"v1 "))
    new = b"v2 " + b"y" * 7000
    etcd.put("/mm/h", new)
    t0 = time.monotonic()
    assert wait_for(lambda: read(p) == new)
    with open(p, "rb") as f:
        mp = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        # within the second after the change: what "hot" means (file.c)
        assert time.monotonic() - t0 < 1.0
        try:
            assert mp[:] == new
            # the mapping follows the next change too
            newer = b"v3 " + b"z" * 7000
            etcd.put("/mm/h", newer)
            assert wait_for(lambda: mp[:] == newer)
        finally:
            mp.close()


@contextlib.contextmanager
def other_process(etcd, m, key, content, script):
    """Puts key = content, waits until the mount shows it, then starts
    script (a Python program given the file's path) as another process that
    reads a line from its stdin before each of its reads. Gives the path and
    a function that lets it read once and returns the line it printed. The
    process starts before the caller opens the file: a child started while
    the file is open would close its copy of the descriptor at exec, and
    every close saves."""
    p = put_shown(etcd, m, key, content)
    other = subprocess.Popen([sys.executable, "-c", script, p], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)

    def ask():
        other.stdin.write("\n")
        other.stdin.flush()
        return other.stdout.readline()

    try:
        yield p, ask
    finally:
        other.stdin.close()
        other.wait(10)


OTHER = r'''
import sys
for line in sys.stdin:
    with open(sys.argv[1], "rb") as f:
        sys.stdout.write(repr(f.read()) + "\n")
    sys.stdout.flush()
'''


def test_other_process_reads_saved_content_while_mapped(etcd, m):
    """One process writing through a shared mapping: another process reads
    the saved version until the save, then the new one. (The reader starts
    first: a child forked while the file is open would close its copy of
    the descriptor at exec, and every close saves.)"""
    with other_process(etcd, m, "/mm/k", b"saved\n", OTHER) as (p, other_reads):
        fd = os.open(p, os.O_RDWR)
        try:
            mp = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            mp[0:5] = b"SAVED"
            assert os.pread(fd, 6, 0) == b"SAVED\n"
            assert other_reads() == repr(b"saved\n") + "\n"
            mp.flush()
            assert other_reads() == repr(b"SAVED\n") + "\n"
            mp.close()
        finally:
            os.close(fd)
    assert etcd.get("/mm/k")[0] == b"SAVED\n"


def test_read_modify_write_by_two_processes_conflicts(etcd, m):
    """The first writer goes through the page cache (alone), the second
    (another process) with direct I/O. Both read 5; the second saves 60;
    the first still reads its own version, writes 6 and gets ESTALE:
    never a lost update, and the second's truncate and save do not move
    what the first reads."""
    p = put_shown(etcd, m, "/mm/c", b"5")
    a = os.open(p, os.O_RDWR)
    with refused_at_close(a, errno.ESTALE):
        assert os.read(a, 64) == b"5"
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                b = os.open(p, os.O_RDWR)
                if os.read(b, 64) == b"5":
                    os.lseek(b, 0, 0)
                    os.ftruncate(b, 0)
                    os.write(b, b"60")
                    code = 2
                os.close(b)
                code = 0 if code == 2 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert etcd.get("/mm/c")[0] == b"60"
        assert os.pread(a, 64, 0) == b"5"
        assert os.fstat(a).st_size == 1
        os.lseek(a, 0, 0)
        os.ftruncate(a, 0)
        os.write(a, b"6")
        assert os.pread(a, 64, 0) == b"6"
    assert etcd.get("/mm/c")[0] == b"60"
    assert wait_for(lambda: read(p) == b"60")


STEPS = r'''
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
first = os.read(fd, 1)
print(first.decode(), flush=True)
sys.stdin.readline()
rest = b""
while True:
    b = os.read(fd, 1)
    if not b:
        break
    rest += b
print((first + rest).decode(), flush=True)
'''


def test_reader_of_a_file_another_process_writes_sees_one_version(etcd, m):
    """A reader in another process than a writer that holds the file
    open reads one saved version over all its read calls, even when a save
    lands between them (it read byte by byte from whatever was saved last
    before: "ABBB")."""
    p = put_shown(etcd, m, "/mm/r", b"AAAA")
    w = os.open(p, os.O_RDWR)
    try:
        r = subprocess.Popen([sys.executable, "-c", STEPS, p], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert r.stdout.readline() == "A\n"
        os.pwrite(w, b"BBBB", 0)
        os.fsync(w)  # saved: the reader's next read calls come after it
        assert etcd.get("/mm/r")[0] == b"BBBB"
        r.stdin.write("\n")
        r.stdin.flush()
        assert r.stdout.readline() == "AAAA\n"
        assert r.wait(10) == 0
    finally:
        os.close(w)
    assert read(p) == b"BBBB"


MAPS = r'''
import mmap, os, sys
sys.stdin.readline()
fd = os.open(sys.argv[1], os.O_RDONLY)
mp = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
print(repr(mp[:]), flush=True)
mp.close()
os.close(fd)
'''


def test_other_process_mapping_keeps_the_writers_view(etcd, m):
    """While a process writes a file through the page cache, another maps
    it (its handle has direct I/O): the mapping's pages come from the page
    cache's one content, the writer's, so the writer still reads what it
    wrote (pages filled from the other process's copy showed it the saved
    bytes). docs/writes.md says the mapping may show unsaved bytes. The
    mapper starts first: a child started while the file is open would
    close its copy of the descriptor at exec, and every close saves."""
    with other_process(etcd, m, "/mm/o", b"saved-content\n", MAPS) as (p, other_maps):
        w = os.open(p, os.O_RDWR)
        try:
            os.pwrite(w, b"WRITER", 0)
            assert other_maps() == repr(b"WRITERcontent\n") + "\n"
            assert os.pread(w, 64, 0) == b"WRITERcontent\n"
            assert etcd.get("/mm/o")[0] == b"saved-content\n"
        finally:
            os.close(w)
    assert etcd.get("/mm/o")[0] == b"WRITERcontent\n"


def test_refused_save_leaves_no_size_behind(etcd, m):
    """A writer alone went through the page cache, and its save was
    refused (EFBIG: over etcd's request limit): the kernel forgets that
    content's pages and size, so stat and readers show the key's again,
    not the 2 MiB that was never saved."""
    m.allowed_errors += ["over etcd's request limit", "save at close failed"]
    p = put_shown(etcd, m, "/mm/big", b"small\n")
    fd = os.open(p, os.O_RDWR)
    with refused_at_close(fd, errno.EFBIG):
        os.write(fd, b"x" * (2 * 1024 * 1024))
        assert os.stat(p).st_size == 2 * 1024 * 1024
    assert etcd.get("/mm/big")[0] == b"small\n"
    # the release after close is asynchronous: the writer's content (and
    # size) lasts until it arrives, then never again (the kernel keeps
    # attributes for --kernel-timeout, an hour)
    assert wait_for(lambda: os.stat(p).st_size == 6)
    assert read(p) == b"small\n"


def test_append_after_an_external_change(etcd, m):
    """An append lands at the end of the version the writer opened, even
    when the kernel still holds an older size: an external put grew the
    file and nothing asked for its attributes since (appends keep direct
    I/O and their offset is the content's end)."""
    p = put_shown(etcd, m, "/mm/log", b"abc")
    assert os.stat(p).st_size == 3
    rev = etcd.put("/mm/log", "abcdef")
    assert wait_for(lambda: int(m.xattr("mm/log", "user.etcd.mod_revision")) == rev)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"X")
    finally:
        os.close(fd)
    assert etcd.get("/mm/log")[0] == b"abcdefX"


HOLD = r'''
import sys
f = open(sys.argv[1], "rb")
print("open", flush=True)
sys.stdin.read()
'''


@pytest.mark.parametrize("seed,held", [(1, False), (2, False), (3, False), (4, True), (5, True)])
def test_mapped_io_exerciser_matches_tmpfs(etcd, m, tmp_path, seed, held):
    """Random pwrite, pread, ftruncate, fstat, mapped reads and writes
    (msync or not) and close/reopen on one file, in the mount and in a
    local file side by side: sizes and bytes always agree, and each
    reopen finds the saved content in etcd. held: another process keeps
    the file open, so the writer has direct I/O (its mappings need
    FUSE_DIRECT_IO_ALLOW_MMAP)."""
    import random
    r = random.Random(seed)
    p = os.path.join(m.path, "mm/fsx")
    ref_p = str(tmp_path / "fsx")
    etcd.put("/mm/fsx", "")
    assert wait_for(lambda: os.path.exists(p))
    with open(ref_p, "wb"):
        pass
    holder = None
    if held:
        holder = subprocess.Popen([sys.executable, "-c", HOLD, p], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline() == "open\n"
    try:
        fsx_steps(etcd, p, ref_p, r, seed)
    finally:
        if holder:
            holder.stdin.close()
            holder.wait(10)


def fsx_steps(etcd, p, ref_p, r, seed):
    fd, ref = os.open(p, os.O_RDWR), os.open(ref_p, os.O_RDWR)
    maxlen = 3 * 4096 + 100
    try:
        for step in range(200):
            size = os.fstat(ref).st_size
            assert os.fstat(fd).st_size == size, (seed, step)
            op = r.choice(["write", "write", "read", "trunc", "mapw", "mapw", "mapr", "reopen"])
            if op == "write":
                off = r.randrange(maxlen)
                data = bytes(r.randrange(256) for _ in range(r.randrange(1, 3000)))
                data = data[:maxlen - off] or b"x"
                os.pwrite(fd, data, off)
                os.pwrite(ref, data, off)
            elif op == "read":
                off, n = r.randrange(maxlen), r.randrange(1, 9000)
                assert os.pread(fd, n, off) == os.pread(ref, n, off), (seed, step)
            elif op == "trunc":
                n = r.randrange(maxlen)
                os.ftruncate(fd, n)
                os.ftruncate(ref, n)
            elif op in ("mapw", "mapr") and size:
                off = r.randrange(size)
                n = r.randrange(1, size - off + 1)
                mp = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                mr = mmap.mmap(ref, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                try:
                    if op == "mapw":
                        data = bytes(r.randrange(256) for _ in range(n))
                        mp[off:off + n] = data
                        mr[off:off + n] = data
                        if r.random() < 0.5:
                            mp.flush()
                    else:
                        assert mp[off:off + n] == mr[off:off + n], (seed, step)
                finally:
                    mp.close()
                    mr.close()
            elif op == "reopen":
                os.close(fd)
                fd = os.open(p, os.O_RDWR)
                with open(ref_p, "rb") as f:
                    want = f.read()
                assert etcd.get("/mm/fsx")[0] == want, (seed, step)
        with open(ref_p, "rb") as f:
            want = f.read()
        assert os.pread(fd, maxlen + 1, 0) == want
    finally:
        os.close(fd)
        os.close(ref)
    assert etcd.get("/mm/fsx")[0] == want
    assert read(p) == want
