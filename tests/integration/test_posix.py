"""POSIX behaviour of the calls users rely on: open, create, unlink,
rename, mkdir, rmdir, truncate, ftruncate, xattrs, stat sizes, open-unlinked
files. Each call is checked for its result and its errno on success and on
every documented error; where etcdfs differs from POSIX on purpose
(docs/writes.md) the documented behaviour is asserted. The differences are
listed in docs/reliability.md."""
import ctypes
import errno
import os
import subprocess
import time

import pytest

from conftest import read, wait_for

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


@pytest.fixture
def pm(etcd, mount_factory):
    etcd.put("/p/a", "hello")
    etcd.put("/p/b", "bee")
    etcd.put("/p/d/x", "1")
    m = mount_factory(["--endpoints", etcd.endpoint, "--command-timeout=2s"])
    m.allowed_errors += ["conflict:"]
    m.p = lambda rel: os.path.join(m.path, rel)
    return m


def err_of(fn, *args):
    """The errno fn(*args) failed with, or None if it succeeded."""
    try:
        r = fn(*args)
        if isinstance(r, int) and fn is os.open:
            os.close(r)
        return None
    except OSError as e:
        return e.errno


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags) == 0:
        return None
    return ctypes.get_errno()


# ---------------------------------------------------------------- open / create

def test_open_errors(pm):
    p = pm.p
    assert err_of(os.open, p("p/missing"), os.O_RDONLY) == errno.ENOENT
    assert err_of(os.open, p("p/missing"), os.O_WRONLY) == errno.ENOENT
    assert err_of(os.open, p("p/nodir/x"), os.O_CREAT | os.O_WRONLY, 0o644) == errno.ENOENT
    assert err_of(os.open, p("p/d"), os.O_WRONLY) == errno.EISDIR
    assert err_of(os.open, p("p/d"), os.O_RDWR) == errno.EISDIR
    assert err_of(os.open, p("p/b/x"), os.O_RDONLY) == errno.ENOTDIR
    assert err_of(os.open, p("p/b"), os.O_RDONLY | os.O_DIRECTORY) == errno.ENOTDIR
    assert err_of(os.open, p("p/d"), os.O_RDONLY | os.O_DIRECTORY) is None
    assert err_of(os.open, p("p/a"), os.O_RDONLY) is None


def test_create_excl(pm, etcd):
    p = pm.p("p/new")
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    assert os.write(fd, b"fresh") == 5
    # commit at close: not in etcd yet; visible to this mount with its size
    assert etcd.get("/p/new")[1] is None
    assert os.stat(p).st_size == 5
    os.close(fd)
    assert etcd.get("/p/new")[0] == b"fresh"
    assert err_of(os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644) == errno.EEXIST
    assert err_of(os.open, pm.p("p/a"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644) == errno.EEXIST
    assert err_of(os.open, pm.p("p/d"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644) == errno.EEXIST
    # O_CREAT without O_EXCL opens the existing key
    fd = os.open(pm.p("p/a"), os.O_CREAT | os.O_RDONLY, 0o644)
    assert os.read(fd, 100) == b"hello"
    os.close(fd)
    # mknod of a regular file creates an empty key; other types are refused
    os.mknod(pm.p("p/nod"), 0o644 | 0o100000)
    assert etcd.get("/p/nod")[0] == b""
    assert err_of(os.mkfifo, pm.p("p/fifo")) == errno.EPERM
    assert etcd.get("/p/fifo")[1] is None


def test_create_key_created_meanwhile_is_estale(pm, etcd):
    """A new name created elsewhere between open(O_CREAT) and close: the
    create compare (create_revision == 0) fails; etcd keeps the other value."""
    fd = os.open(pm.p("p/race"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b"mine")
    etcd.put("/p/race", "theirs")
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.ESTALE
    assert etcd.get("/p/race")[0] == b"theirs"


def test_commit_at_close_and_fsync(pm, etcd):
    p = pm.p("p/b")
    rev = etcd.revision()
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"longer content")
    # not saved yet: etcd holds the committed value, while every handle
    # and stat in this mount see the file as written (as on tmpfs)
    assert etcd.get("/p/b")[0] == b"bee"
    assert read(p) == b"longer content"
    assert os.stat(p).st_size == 14
    # fsync commits, as one put
    os.fsync(fd)
    assert etcd.get("/p/b")[0] == b"longer content"
    assert etcd.revision() == rev + 1
    assert read(p) == b"longer content"
    # close after fsync has nothing left to write
    os.close(fd)
    assert etcd.revision() == rev + 1
    # an unchanged save writes nothing
    with open(p, "r+b") as f:
        data = f.read()
        f.seek(0)
        f.write(data)
    assert etcd.revision() == rev + 1


def test_conflict_is_estale_and_handle_stays_failed(pm, etcd):
    p = pm.p("p/a")
    fd = os.open(p, os.O_RDWR)
    assert os.read(fd, 100) == b"hello"
    etcd.put("/p/a", "changed elsewhere")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"HELLO")
    assert err_of(os.fsync, fd) == errno.ESTALE
    assert etcd.get("/p/a")[0] == b"changed elsewhere"
    # the handle stays failed: another fsync and the close report it too
    assert err_of(os.fsync, fd) == errno.ESTALE
    assert err_of(os.close, fd) == errno.ESTALE
    assert etcd.get("/p/a")[0] == b"changed elsewhere"
    # a new open sees the current value
    assert wait_for(lambda: read(p) == b"changed elsewhere", timeout=3)


def test_append(pm, etcd):
    p = pm.p("p/b")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"1")
    os.stat(p)  # a getattr between writes must not move the append point
    os.write(fd, b"2")
    os.close(fd)
    assert etcd.get("/p/b")[0] == b"bee12"
    # the writer's own fstat, and stat by path, show the size as written
    # (one state per inode, as on tmpfs), before the save
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"345")
    assert os.fstat(fd).st_size == 8
    assert os.stat(p).st_size == 8
    assert etcd.get("/p/b")[0] == b"bee12"
    os.close(fd)
    assert os.stat(p).st_size == 8
    assert etcd.get("/p/b")[0] == b"bee12345"


# ---------------------------------------------------------------- unlink

def test_unlink(pm, etcd):
    assert err_of(os.unlink, pm.p("p/missing")) == errno.ENOENT
    assert err_of(os.unlink, pm.p("p/d")) == errno.EISDIR
    assert err_of(os.unlink, pm.p("p/b/x")) == errno.ENOTDIR
    assert os.unlink(pm.p("p/a")) is None
    # gone from the mount at once, from etcd after the grace period
    assert err_of(os.stat, pm.p("p/a")) == errno.ENOENT
    assert "a" not in os.listdir(pm.p("p"))
    assert err_of(os.unlink, pm.p("p/a")) == errno.ENOENT
    assert wait_for(lambda: etcd.get("/p/a")[1] is None, timeout=2)


def test_unlink_committed_by_fsync_on_directory(pm, etcd):
    os.unlink(pm.p("p/b"))
    dfd = os.open(pm.p("p"), os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    assert etcd.get("/p/b")[1] is None  # no waiting: fsync committed it
    os.close(dfd)


def test_unlink_then_create_is_one_put(pm, etcd):
    """install / cp --remove-destination: unlink and re-create within the
    grace period become one put (the key is never absent in etcd)."""
    _, kv = etcd.get("/p/b")
    os.unlink(pm.p("p/b"))
    with open(pm.p("p/b"), "wb") as f:
        f.write(b"replaced")
    v, kv2 = etcd.get("/p/b")
    assert v == b"replaced"
    assert kv2["create_revision"] == kv["create_revision"]  # never deleted
    assert int(kv2["version"]) == int(kv["version"]) + 1
    time.sleep(0.3)
    assert etcd.get("/p/b")[0] == b"replaced"


def test_unlink_conflict_keeps_the_key(pm, etcd):
    """The deferred delete compares the revision the key had: a change
    made meanwhile wins and the key stays."""
    pm.allowed_errors += ["not deleted"]
    os.unlink(pm.p("p/b"))
    etcd.put("/p/b", "rewritten meanwhile")
    time.sleep(0.5)
    assert etcd.get("/p/b")[0] == b"rewritten meanwhile"
    assert wait_for(lambda: os.path.exists(pm.p("p/b")), timeout=3)


def test_open_file_survives_unlink(pm, etcd):
    p = pm.p("p/a")
    f = open(p, "rb")
    os.unlink(p)
    assert not os.path.exists(p)
    assert f.read() == b"hello"
    assert wait_for(lambda: etcd.get("/p/a")[1] is None, timeout=3)
    st = os.fstat(f.fileno())
    assert st.st_size == 5 and st.st_nlink == 0
    f.seek(1)
    assert f.read(3) == b"ell"
    f.close()
    assert etcd.get("/p/a")[1] is None


def test_writer_open_across_unlink_does_not_resurrect(pm, etcd):
    p = pm.p("p/a")
    fd = os.open(p, os.O_RDWR)
    os.write(fd, b"HELLO")
    os.unlink(p)
    assert os.write(fd, b"!") == 1
    os.close(fd)
    time.sleep(0.3)
    assert etcd.get("/p/a")[1] is None
    assert not os.path.exists(p)


# ---------------------------------------------------------------- rename

def test_rename_files(pm, etcd):
    p = pm.p
    assert err_of(os.rename, p("p/missing"), p("p/z")) == errno.ENOENT
    assert err_of(os.rename, p("p/a"), p("p/nodir/a")) == errno.ENOENT
    # a real rename is one transaction: delete + put in one revision
    rev = etcd.revision()
    assert os.rename(p("p/a"), p("p/a2")) is None
    assert etcd.revision() == rev + 1
    assert etcd.get("/p/a")[1] is None and etcd.get("/p/a2")[0] == b"hello"
    assert read(p("p/a2")) == b"hello" and not os.path.exists(p("p/a"))
    # over an existing file: replaced
    assert os.rename(p("p/a2"), p("p/b")) is None
    assert etcd.get("/p/b")[0] == b"hello" and etcd.get("/p/a2")[1] is None
    # into another directory
    assert os.rename(p("p/b"), p("p/d/b")) is None
    assert etcd.get("/p/d/b")[0] == b"hello"
    # onto itself: nothing happens
    rev = etcd.revision()
    assert os.rename(p("p/d/b"), p("p/d/b")) is None
    assert etcd.revision() == rev
    # a file onto a directory, and a directory onto a file
    os.mkdir(p("p/e"))
    with open(p("p/e/k"), "w") as f:
        f.write("k")
    assert err_of(os.rename, p("p/d/b"), p("p/e")) == errno.EISDIR
    os.mkdir(p("p/emptydir"))
    assert err_of(os.rename, p("p/emptydir"), p("p/d/b")) == errno.ENOTDIR


def test_rename_noreplace_and_exchange(pm, etcd):
    p = pm.p
    assert renameat2(p("p/a"), p("p/b"), RENAME_NOREPLACE) == errno.EEXIST
    assert etcd.get("/p/a")[0] == b"hello" and etcd.get("/p/b")[0] == b"bee"
    assert renameat2(p("p/a"), p("p/c"), RENAME_NOREPLACE) is None
    assert etcd.get("/p/c")[0] == b"hello" and etcd.get("/p/a")[1] is None
    # mv -n leaves an existing target alone
    subprocess.run(["mv", "-n", p("p/c"), p("p/b")])
    assert etcd.get("/p/b")[0] == b"bee" and etcd.get("/p/c")[0] == b"hello"
    # RENAME_EXCHANGE is not supported (documented): EINVAL, nothing moves
    assert renameat2(p("p/c"), p("p/b"), RENAME_EXCHANGE) == errno.EINVAL
    assert etcd.get("/p/b")[0] == b"bee" and etcd.get("/p/c")[0] == b"hello"


def test_rename_directories(pm, etcd):
    p = pm.p
    # a directory with keys below it: EXDEV (documented), mv copies instead
    assert err_of(os.rename, p("p/d"), p("p/d2")) == errno.EXDEV
    assert etcd.get("/p/d/x")[0] == b"1"
    etcd.put("/p/d2/x", "1")
    # (the watch delivers it within milliseconds: as long as a mkdir and a
    # rename take on the embedded store)
    assert wait_for(lambda: os.path.exists(p("p/d2/x")), timeout=3)
    # an empty (local) directory renames locally
    os.mkdir(p("p/e1"))
    assert os.rename(p("p/e1"), p("p/e2")) is None
    assert os.path.isdir(p("p/e2")) and not os.path.exists(p("p/e1"))
    # onto a non-empty directory
    assert err_of(os.rename, p("p/e2"), p("p/d2")) == errno.ENOTEMPTY
    # onto an empty directory: replaces it
    os.mkdir(p("p/e3"))
    assert os.rename(p("p/e2"), p("p/e3")) is None
    assert os.path.isdir(p("p/e3")) and not os.path.exists(p("p/e2"))


def test_rename_shadow_onto_changed_key_is_estale(pm, etcd):
    """sed -i's save: a temp (shadow) file renamed onto the key commits one
    compare-and-swap put against the revision the key had when the shadow
    was created. A change made since then fails the rename: ESTALE, and
    etcd keeps the other writer's value."""
    tmpname = pm.p("p/sedAbC123")
    with open(tmpname, "wb") as f:
        f.write(b"sed output")
    etcd.put("/p/b", "changed elsewhere")
    assert wait_for(lambda: read(pm.p("p/b")) == b"changed elsewhere", timeout=3)
    assert err_of(os.rename, tmpname, pm.p("p/b")) == errno.ESTALE
    assert etcd.get("/p/b")[0] == b"changed elsewhere"
    # the shadow keeps its base revision; a fresh one saves as one put
    os.unlink(tmpname)
    with open(tmpname, "wb") as f:
        f.write(b"sed output")
    rev = etcd.revision()
    assert os.rename(tmpname, pm.p("p/b")) is None
    assert etcd.get("/p/b")[0] == b"sed output" and etcd.revision() == rev + 1
    assert etcd.get("/p/sedAbC123")[1] is None


def test_rename_onto_a_key_created_after_the_source(pm, etcd):
    """The ESTALE above protects an edit: the key changed after the file that replaces it was
    made. A key that did not exist then cannot have been read for it, so the rename replaces
    it, as tmpfs does. It was ESTALE ("changed while it was being edited") for a new file still
    open (its save pending) renamed onto a key created meanwhile: the model test's seed 14,
    shrunk to mkdir, open(O_CREAT), an append to the other name, rename. Shadow or not."""
    p = pm.p
    for src in ("p/new", "p/sedXy12Z"):
        fd = os.open(p(src), os.O_RDWR | os.O_CREAT, 0o644)
        etcd.put("/p/later", "made after " + src)
        assert wait_for(lambda: os.path.exists(p("p/later")), timeout=3)
        assert err_of(os.rename, p(src), p("p/later")) is None
        assert os.fstat(fd).st_size == 0 and os.path.getsize(p("p/later")) == 0
        os.write(fd, b"written after the rename")
        os.close(fd)
        assert etcd.get("/p/later")[0] == b"written after the rename"
        assert etcd.get("/" + src)[1] is None
        etcd.delete("/p/later")
        assert wait_for(lambda: not os.path.exists(p("p/later")), timeout=3)


def test_rename_onto_a_key_this_mount_changed_after_the_source(pm, etcd):
    """The ESTALE protects an edit from another writer's change. A change made through this
    mount after the file was made (any process here: tmpfs would just replace the file) does
    not fail the rename. It did, "changed while it was being edited", for a new file held
    open and renamed onto a key this mount had truncated meanwhile: the model test's seed 30
    (its op 668). Shadow or not; the content written before the rename lands."""
    p = pm.p
    for src in ("p/new", "p/sedQw34E"):
        etcd.put("/p/mine", "0123456789")
        assert wait_for(lambda: os.path.exists(p("p/mine")), timeout=3)
        fd = os.open(p(src), os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"the new content")
        os.truncate(p("p/mine"), 4)  # through this mount, after src was made
        assert etcd.get("/p/mine")[0] == b"0123"
        assert err_of(os.rename, p(src), p("p/mine")) is None
        os.close(fd)
        assert wait_for(lambda: etcd.get("/p/mine")[0] == b"the new content", timeout=3)
        assert etcd.get("/" + src)[1] is None
        with open(p("p/mine"), "rb") as f:
            assert f.read() == b"the new content"
        etcd.delete("/p/mine")
        assert wait_for(lambda: not os.path.exists(p("p/mine")), timeout=3)


# ---------------------------------------------------------------- mkdir / rmdir

def test_mkdir(pm, etcd, mount_factory):
    p = pm.p
    assert os.mkdir(p("p/new")) is None
    assert os.path.isdir(p("p/new"))
    assert "new" in os.listdir(p("p"))
    assert etcd.keys(b"/p/new") == []  # local only: etcd has no directories
    assert err_of(os.mkdir, p("p/new")) == errno.EEXIST
    assert err_of(os.mkdir, p("p/d")) == errno.EEXIST
    assert err_of(os.mkdir, p("p/a")) == errno.EEXIST
    assert err_of(os.mkdir, p("p/nodir/x")) == errno.ENOENT
    assert err_of(os.mkdir, p("p/a/x")) == errno.ENOTDIR
    # another mount of the same etcd does not see it
    other = mount_factory(["--endpoints", etcd.endpoint])
    assert os.path.isdir(os.path.join(other.path, "p/d"))
    assert not os.path.exists(os.path.join(other.path, "p/new"))
    # a key below it makes it real
    with open(p("p/new/k"), "w") as f:
        f.write("v")
    assert etcd.get("/p/new/k")[0] == b"v"
    assert wait_for(lambda: os.path.isdir(os.path.join(other.path, "p/new")), timeout=3)


def test_rmdir(pm, etcd):
    p = pm.p
    assert err_of(os.rmdir, p("p/d")) == errno.ENOTEMPTY
    assert err_of(os.rmdir, p("p/a")) == errno.ENOTDIR
    assert err_of(os.rmdir, p("p/missing")) == errno.ENOENT
    os.mkdir(p("p/empty"))
    assert os.rmdir(p("p/empty")) is None
    assert not os.path.exists(p("p/empty"))
    assert err_of(os.rmdir, p("p/empty")) == errno.ENOENT


# ---------------------------------------------------------------- truncate

def test_truncate_path(pm, etcd):
    p = pm.p("p/a")
    rev = etcd.revision()
    assert os.truncate(p, 2) is None  # no open handle: one immediate put
    assert etcd.get("/p/a")[0] == b"he" and etcd.revision() == rev + 1
    assert os.stat(p).st_size == 2 and read(p) == b"he"
    assert os.truncate(p, 6) is None  # grow: zero-filled
    assert etcd.get("/p/a")[0] == b"he\0\0\0\0"
    assert os.stat(p).st_size == 6 and read(p) == b"he\0\0\0\0"
    assert os.truncate(p, 0) is None
    assert etcd.get("/p/a")[0] == b"" and os.stat(p).st_size == 0
    assert err_of(os.truncate, pm.p("p/missing"), 0) == errno.ENOENT
    assert err_of(os.truncate, pm.p("p/d"), 0) == errno.EISDIR
    assert err_of(os.truncate, p, -1) == errno.EINVAL


def test_ftruncate_grow_and_shrink(pm, etcd):
    p = pm.p("p/a")
    rev = etcd.revision()
    fd = os.open(p, os.O_RDWR)
    os.ftruncate(fd, 10)
    assert os.pread(fd, 20, 0) == b"hello\0\0\0\0\0"
    os.ftruncate(fd, 3)
    assert os.pread(fd, 20, 0) == b"hel"
    os.pwrite(fd, b"p!", 3)
    assert etcd.get("/p/a")[0] == b"hello"  # nothing saved before close
    os.close(fd)
    assert etcd.get("/p/a")[0] == b"help!" and etcd.revision() == rev + 1
    assert os.stat(p).st_size == 5
    # a truncate-only handle is saved at release
    with open(p, "r+b") as f:
        f.truncate(1)
    assert wait_for(lambda: etcd.get("/p/a")[0] == b"h", timeout=3)
    assert os.stat(p).st_size == 1
    # O_TRUNC + write is one put of the new content, never an empty value
    rev = etcd.revision()
    with open(p, "wb") as f:
        f.write(b"whole new")
    assert etcd.get("/p/a")[0] == b"whole new" and etcd.revision() == rev + 1
    fd = os.open(pm.p("p/b"), os.O_RDONLY)
    assert err_of(os.ftruncate, fd, 0) in (errno.EBADF, errno.EINVAL)
    os.close(fd)


# ---------------------------------------------------------------- xattrs

FILE_XATTRS = ["user.etcd.key", "user.etcd.create_revision", "user.etcd.mod_revision",
               "user.etcd.version", "user.etcd.lease"]


def test_xattrs(pm, etcd):
    p = pm.p("p/b")
    _, kv = etcd.get("/p/b")
    assert sorted(os.listxattr(p)) == sorted(FILE_XATTRS)
    assert os.getxattr(p, "user.etcd.key") == b"/p/b"
    assert int(os.getxattr(p, "user.etcd.mod_revision")) == int(kv["mod_revision"])
    assert int(os.getxattr(p, "user.etcd.create_revision")) == int(kv["create_revision"])
    assert int(os.getxattr(p, "user.etcd.version")) == int(kv["version"])
    assert int(os.getxattr(p, "user.etcd.lease")) == 0
    for name in ("user.nope", "user.etcd.nope"):
        assert err_of(os.getxattr, p, name) == errno.ENODATA, name
    # Only the user namespace exists: no ACLs, no security labels. ENOTSUP
    # (not ENODATA) lets ls -l stop asking after the first file.
    for name in ("trusted.x", "security.selinux", "system.posix_acl_access"):
        assert err_of(os.getxattr, p, name) == errno.ENOTSUP, name
        assert err_of(os.getxattr, pm.p("p/d"), name) == errno.ENOTSUP, name
    # directories have none
    assert os.listxattr(pm.p("p/d")) == []
    assert err_of(os.getxattr, pm.p("p/d"), "user.etcd.key") == errno.ENODATA
    assert err_of(os.getxattr, pm.p("p/missing"), "user.etcd.key") == errno.ENOENT
    # a buffer too small: ERANGE
    buf = ctypes.create_string_buffer(2)
    assert libc.getxattr(p.encode(), b"user.etcd.key", buf, 2) == -1
    assert ctypes.get_errno() == errno.ERANGE
    assert libc.getxattr(p.encode(), b"user.etcd.key", None, 0) == len(b"/p/b")
    # they follow changes
    rev = etcd.put("/p/b", "new")
    assert wait_for(lambda: int(os.getxattr(p, "user.etcd.mod_revision")) == rev, timeout=3)
    assert int(os.getxattr(p, "user.etcd.version")) == int(kv["version"]) + 1
    # xattrs are read-only (documented difference): ENOTSUP
    assert err_of(os.setxattr, p, "user.test", b"1") == errno.ENOTSUP
    assert err_of(os.removexattr, p, "user.etcd.key") == errno.ENOTSUP


# ---------------------------------------------------------------- stat

SIZES = [0, 1, 100, 4095, 4096, 4097, 65536, 300000, 1000000]


def test_stat_sizes_exact(pm, etcd):
    items = [(f"/p/s/{n}", os.urandom(n)) for n in SIZES]
    items += [("/p/s/utf8", "grüße, 世界\n".encode()), ("/p/s/nul", b"a\0b\0\0")]
    etcd.put_many(items)
    assert wait_for(lambda: len(os.listdir(pm.p("p/s"))) == len(items), timeout=3)
    for k, v in items:
        p = pm.p(k[1:])
        st = os.stat(p)
        assert st.st_size == len(v), k
        assert st.st_blocks == (len(v) + 511) // 512, k
        assert read(p) == v, k
    # readdir-plus attributes agree with stat
    out = subprocess.run(["ls", "-ln", pm.p("p/s")], capture_output=True, check=True).stdout
    for line in out.decode().splitlines()[1:]:
        f = line.split()
        want = dict((k.rsplit("/", 1)[1], len(v)) for k, v in items)[f[-1]]
        assert int(f[4]) == want, line
    # sizes follow external changes and saves through the mount
    etcd.put("/p/s/1", "twelve bytes")
    assert wait_for(lambda: os.stat(pm.p("p/s/1")).st_size == 12, timeout=3)
    with open(pm.p("p/s/0"), "wb") as f:
        f.write(b"x" * 7777)
    assert os.stat(pm.p("p/s/0")).st_size == 7777
    st = os.stat(pm.p("p/d"))
    assert st.st_size == 4096 and st.st_nlink == 2


# ---------------------------------------------------------------- other calls

def test_chmod_chown_utime_symlink_link(pm, etcd):
    p = pm.p("p/b")
    rev = etcd.revision()
    os.chmod(p, 0o640)
    assert os.stat(p).st_mode & 0o7777 == 0o640  # kept in memory
    os.chown(p, os.getuid(), os.getgid())
    # root may give a file away, as on tmpfs (tar -x, cp -a)
    os.chown(p, 65534, 65533)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (65534, 65533)
    os.utime(p, (1000000000, 1100000000))
    st = os.stat(p)
    assert (int(st.st_atime), int(st.st_mtime)) == (1000000000, 1100000000)
    assert st.st_ctime > 1700000000  # utimensat moves ctime to now
    assert etcd.revision() == rev  # none of this reaches etcd
    # symlinks only for shadow names (emacs' lock link); no hard links
    assert err_of(os.symlink, "target", pm.p("p/link")) == errno.EPERM
    os.symlink("user@host.1234", pm.p("p/.#b"))
    assert os.readlink(pm.p("p/.#b")) == "user@host.1234"
    assert etcd.get("/p/.#b")[1] is None
    os.unlink(pm.p("p/.#b"))
    assert err_of(os.link, p, pm.p("p/hard")) == errno.EPERM


def test_shadow_names_stay_local(pm, etcd, mount_factory):
    for name in (".b.swp", "b~", "b.bak", "4913", "sedAbC123"):
        with open(pm.p(f"p/{name}"), "wb") as f:
            f.write(b"local")
        assert read(pm.p(f"p/{name}")) == b"local"
        assert name in os.listdir(pm.p("p"))
        assert etcd.get(f"/p/{name}")[1] is None, name
    other = mount_factory(["--endpoints", etcd.endpoint])
    assert sorted(os.listdir(os.path.join(other.path, "p"))) == ["a", "b", "d"]


# ---- regression tests for bugs found by this suite (fixed)
# docs/reliability.md, "Known bugs"); they are kept out of commits until then.

def test_rmdir_after_unlinking_the_last_key(pm, etcd):
    """rm -r DIR: unlink every key, then rmdir. rmdir first commits the
    pending deletes, which must not make the directory itself vanish."""
    os.unlink(pm.p("p/d/x"))
    assert os.path.isdir(pm.p("p/d"))
    assert err_of(os.rmdir, pm.p("p/d")) is None
    assert etcd.get("/p/d/x")[1] is None
    assert not os.path.exists(pm.p("p/d"))
    etcd.put("/p/r/x", "1")
    etcd.put("/p/r/y", "2")
    assert wait_for(lambda: os.path.exists(pm.p("p/r/y")), timeout=3)
    r = subprocess.run(["rm", "-r", pm.p("p/r")], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert etcd.keys(b"/p/r/") == []


def test_mv_directory_falls_back_to_copy(pm, etcd):
    """docs/writes.md: a directory rename returns EXDEV and mv falls back to
    copy and delete."""
    r = subprocess.run(["mv", pm.p("p/d"), pm.p("p/d2")], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert etcd.get("/p/d2/x")[0] == b"1"
    assert etcd.get("/p/d/x")[1] is None
    assert not os.path.exists(pm.p("p/d"))


def test_fstat_of_open_file_right_after_unlink(pm):
    f = open(pm.p("p/a"), "rb")
    os.unlink(pm.p("p/a"))
    st = os.fstat(f.fileno())  # within the 50 ms deferred-delete window
    assert st.st_size == 5 and st.st_nlink == 0
    f.close()


def test_name_too_long(pm):
    long = pm.p("p/" + "x" * 256)
    assert err_of(os.open, long, os.O_CREAT | os.O_WRONLY, 0o644) == errno.ENAMETOOLONG
    assert err_of(os.stat, long) == errno.ENAMETOOLONG
    assert err_of(os.mkdir, long) == errno.ENAMETOOLONG
    ok = pm.p("p/" + "x" * 255)
    with open(ok, "w") as f:
        f.write("max")
    assert os.stat(ok).st_size == 3


def test_touch_then_rm_stays_gone(pm, etcd):
    """Issue #14 bug 1: the RELEASE that saves a new empty file arrives after
    close() returns, and raced the unlink that followed: the file came back
    (3 times in 30 with "touch f; rm f", 19 in 20 with open/close/unlink)."""
    back = []
    for i in range(30):
        p = pm.p(f"p/e{i}")
        subprocess.run(["sh", "-c", f"touch {p}; rm {p}"], check=True)
        fd = os.open(pm.p(f"p/o{i}"), os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
        os.unlink(pm.p(f"p/o{i}"))
    time.sleep(0.5)
    for i in range(30):
        for name in (f"e{i}", f"o{i}"):
            if os.path.exists(pm.p(f"p/{name}")) or etcd.get(f"/p/{name}")[1] is not None:
                back.append(name)
    assert back == []


def test_cwd_in_a_new_directory_stays_valid(pm):
    """A directory made here is the kernel's from the mkdir reply: no later
    invalidation may unhash it, or a process that chdir'd into it gets
    ENOENT from getcwd (git init failed so: "unable to get current working
    directory", 1 run in 4 over the store)."""
    here = os.getcwd()
    bad = []
    try:
        for i in range(40):
            d = pm.p(f"p/cwd{i}")
            os.mkdir(d)
            os.chdir(d)
            time.sleep(0.02)
            try:
                os.getcwd()
            except OSError as e:
                bad.append((i, errno.errorcode[e.errno]))
            fd = os.open(os.path.join(d, "f"), os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
    finally:
        os.chdir(here)
    assert bad == []


def test_unlinked_name_is_free_at_once(pm, etcd):
    """Issue #14 bug 2: while its delete waited for the grace period, an
    unlinked key kept its name: mkdir of the name gave EEXIST, and its
    directory was not empty for rename and rmdir although ls showed it
    empty. The grace period must be invisible to every syscall."""
    p = pm.p
    os.unlink(p("p/a"))
    assert os.mkdir(p("p/a")) is None  # was EEXIST
    assert os.path.isdir(p("p/a"))
    os.unlink(p("p/d/x"))
    assert os.listdir(p("p/d")) == []
    os.mkdir(p("p/e"))
    assert os.rename(p("p/e"), p("p/d")) is None  # was ENOTEMPTY
    assert os.rename(p("p/d"), p("p/d2")) is None  # was EXDEV
    assert os.rmdir(p("p/d2")) is None
    time.sleep(0.3)  # the deletes land and change nothing that can be seen
    assert os.path.isdir(p("p/a")) and os.listdir(p("p/a")) == []
    assert not os.path.exists(p("p/d")) and not os.path.exists(p("p/d2"))
    assert etcd.get("/p/a")[1] is None and etcd.get("/p/d/x")[1] is None


def test_rmdir_right_after_unlink(pm, etcd):
    """Issue #14 bug 2: rmdir right after unlinking the last entry gave
    ENOTEMPTY when the deferred delete was in flight (17 times in 50)."""
    fails = []
    for i in range(50):
        d = pm.p(f"p/r{i}")
        os.mkdir(d)
        with open(os.path.join(d, "x"), "w") as f:
            f.write("x")
        os.unlink(os.path.join(d, "x"))
        # meet the delete at every phase: pending, in flight, landed
        time.sleep(0.045 + 0.001 * (i % 30))
        e = err_of(os.rmdir, d)
        if e is not None:
            fails.append((i, errno.errorcode[e]))
    assert fails == []
    assert etcd.keys(b"/p/r") == []


def test_unlink_leaves_directory_times_alone(pm, etcd):
    """Directory times move when the entry vanishes (the unlink), not when
    its deferred delete reaches etcd."""
    d = pm.p("p/d")
    os.unlink(os.path.join(d, "x"))
    before = os.stat(d)
    time.sleep(0.3)
    after = os.stat(d)
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)


def test_truncate_path_moves_mtime(pm, etcd):
    """truncate(2) sends no MTIME_NOW to FUSE (ftruncate does): the
    filesystem moves mtime and ctime itself when the size changes, as tmpfs
    does. Found by test_model (seeds 2, 3, 5, 6, 7, 9, 10)."""
    p = pm.p("p/a")
    os.truncate(p, 4)  # the first local change sets every time
    before = os.stat(p)
    time.sleep(0.01)
    os.truncate(p, 3)
    after = os.stat(p)
    assert after.st_size == 3
    assert after.st_mtime_ns > before.st_mtime_ns
    assert after.st_ctime_ns > before.st_ctime_ns


def test_rename_of_open_file_keeps_its_writer(pm, etcd):
    """A file renamed while a handle writes it: the handle's save goes to
    the new name, as on any filesystem. It compared against the revision
    the old name had and failed with ESTALE (test_model seeds 1, 7, 10)."""
    p = pm.p
    fd = os.open(p("p/a"), os.O_RDWR)
    os.pwrite(fd, b"HE", 0)
    os.rename(p("p/a"), p("p/a2"))
    os.rename(p("p/a2"), p("p/d/a3"))
    os.pwrite(fd, b"LL", 2)
    os.close(fd)  # was ESTALE
    assert etcd.get("/p/d/a3")[0] == b"HELLo"
    assert etcd.get("/p/a")[1] is None and etcd.get("/p/a2")[1] is None
    # a new file, renamed before its first save
    fd = os.open(p("p/n"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"new")
    os.rename(p("p/n"), p("p/n2"))
    os.close(fd)  # was ESTALE: "created by someone else"
    assert etcd.get("/p/n2")[0] == b"new" and etcd.get("/p/n")[1] is None
    assert read(p("p/n2")) == b"new"


def test_create_over_pending_unlink_then_move_or_unlink(pm, etcd):
    """The unlink/create/rename state machine (docs/writes.md): a file
    created within an unlink's grace period replaces the key with one put;
    renamed or unlinked before that put, the key still goes."""
    p = pm.p
    os.unlink(p("p/a"))
    fd = os.open(p("p/a"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"again")
    os.rename(p("p/a"), p("p/c"))
    os.close(fd)
    os.unlink(p("p/b"))
    fd = os.open(p("p/b"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"gone")
    os.unlink(p("p/b"))
    os.close(fd)
    time.sleep(0.3)
    assert etcd.get("/p/c")[0] == b"again"
    assert etcd.get("/p/a")[1] is None and etcd.get("/p/b")[1] is None
    assert sorted(os.listdir(p("p"))) == ["c", "d"]
    # a rename onto a name whose unlink is pending replaces the key
    _, kv = etcd.get("/p/d/x")
    os.unlink(p("p/d/x"))
    os.rename(p("p/c"), p("p/d/x"))
    time.sleep(0.3)
    v, kv2 = etcd.get("/p/d/x")
    assert v == b"again" and kv2["create_revision"] == kv["create_revision"]


def test_key_renamed_to_shadow_name_frees_its_name(pm, etcd):
    """rename(key -> shadow name) (vim's backup, sed -i.bak) keeps the key in
    etcd until the shadow goes or the name is created again, but the name is
    free at once: mkdir of it gave EEXIST and rmdir of its directory
    ENOTEMPTY although ls showed it empty."""
    p = pm.p
    os.mkdir(p("p/s"))
    with open(p("p/s/f"), "w") as f:
        f.write("v")
    os.rename(p("p/s/f"), p("p/f~"))
    assert os.listdir(p("p/s")) == []
    assert os.mkdir(p("p/s/f")) is None  # was EEXIST
    assert os.rmdir(p("p/s/f")) is None
    assert os.rmdir(p("p/s")) is None  # was ENOTEMPTY
    dfd = os.open(p("p"), os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)  # commits pending deletes; a hidden key is not one
    os.close(dfd)
    assert etcd.get("/p/s/f")[0] == b"v"  # kept while the shadow lives
    assert read(p("p/f~")) == b"v"
    os.unlink(p("p/f~"))  # rename + unlink: the key goes
    assert wait_for(lambda: etcd.get("/p/s/f")[1] is None, timeout=3)
    assert not os.path.exists(p("p/s"))
