"""Model-based test: a seeded random sequence of file-system calls runs both
through the mount and on a tmpfs directory (the oracle). Every call must give
the same result (or the same errno); after each call the touched paths must
stat alike (mode, size, nlink, uid, gid; mtime/ctime move in etcdfs when
they move in tmpfs, and not on a failed call; explicit utimensat values read back equal); the two
trees must end identical, and etcd must hold exactly the mount's files.

The generator covers create (O_CREAT with modes, O_EXCL, O_TRUNC), write,
pwrite, append, reads of the whole content (by path, and through a held
handle), handles held open across calls (write, ftruncate, fstat, pread,
lseek SEEK_END, close through several handles of one file), a new empty
file renamed right after its close (its save lands at RELEASE), truncate, chmod
(files and dirs, incl. setuid/setgid), chown, utimensat, mkdir with modes,
rmdir, rename, unlink, and calls made as a second user (uid/gid 1000 on an
allow_other mount) that succeed where modes allow and get EACCES elsewhere.

Left out by design (docs/writes.md): symlink, link, mknod, renaming a
non-empty directory (EXDEV), a directory that is also a key, shadow names
(none of the names below match a --shadow pattern), sizes over the request
limit (EFBIG; test_huge_truncate_is_efbig covers it)."""
import errno
import os
import random
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

# Ten seeds per back end in CI (20 s of the suite each); 11 and 14 found bugs
# (docs/reliability.md). Seeds 1-20 all passed on both back ends when 14 was fixed.
SEEDS = (1, 2, 3, 4, 5, 6, 7, 10, 11, 14, 30)
OPS = 1000
USER = 1000
# ETCDFS_MODEL_KEEP_GOING=1 lists every mismatch of a seed instead of the
# first (later ones may follow from the first: the trees have diverged)
KEEP_GOING = os.environ.get("ETCDFS_MODEL_KEEP_GOING") == "1"
DIRS = ["d0", "d1", "d0/e", "d1/e"]
NAMES = ["f0", "f1", "f2", "f3"]


def tree(root):
    files, dirs = {}, set()
    for d, dns, fns in os.walk(root):
        rel = os.path.relpath(d, root)
        for n in dns:
            dirs.add(os.path.normpath(os.path.join(rel, n)))
        for n in fns:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                files[os.path.normpath(os.path.join(rel, n))] = f.read()
    return files, dirs


def check_end_state(etcd, mnt, model):
    """After a run: the mount's tree equals the model's, still after the
    deferred unlinks' grace period, and etcd holds exactly the mount's files
    under /model/."""
    assert tree(mnt) == tree(model)
    # deferred unlinks land within their grace period, and change
    # nothing that can be seen
    time.sleep(0.3)
    assert tree(mnt) == tree(model)
    files, _ = tree(mnt)
    stored = {}
    for k in etcd.keys(b"/model/"):
        stored[k[len(b"/model/"):].decode()] = etcd.get(k)[0]
    assert stored == files


def as_user(fn):
    """Runs fn() in a forked child as uid/gid USER; returns its errno (0)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setresgid(USER, USER, USER)
            os.setresuid(USER, USER, USER)
            fn()
        except OSError as e:
            code = e.errno
        except BaseException:
            code = 250
        os._exit(code)
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st)


class Side:
    """One of the two trees, with its open handles (slot -> fd)."""

    def __init__(self, root):
        self.root = root
        self.fds = {}
        self.user_calls = 0  # the second user's calls actually made

    def p(self, x):
        return os.path.join(self.root, x)

    def run(self, op):
        kind, a = op[0], op[1:]
        p = self.p
        try:
            if kind == "create":  # path, flags, mode, data
                fd = os.open(p(a[0]), os.O_WRONLY | os.O_CREAT | a[1], a[2])
                try:
                    os.write(fd, a[3])
                finally:
                    os.close(fd)
            elif kind == "pwrite":
                fd = os.open(p(a[0]), os.O_WRONLY)
                try:
                    os.pwrite(fd, a[2], a[1])
                finally:
                    os.close(fd)
            elif kind == "append":
                with open(p(a[0]), "ab") as f:
                    f.write(a[1])
            elif kind == "touch_unlink":  # create + close + unlink an empty file
                os.close(os.open(p(a[0]), os.O_WRONLY | os.O_CREAT, 0o644))
                os.unlink(p(a[0]))
            elif kind == "touch_rename":  # create + close + rename: the save lands at RELEASE
                os.close(os.open(p(a[0]), os.O_WRONLY | os.O_CREAT, 0o644))
                os.rename(p(a[0]), p(a[1]))
            elif kind == "truncate":
                os.truncate(p(a[0]), a[1])
            elif kind == "read":  # by path, in the process that holds the handles
                with open(p(a[0]), "rb") as f:
                    return ("data", f.read())
            elif kind == "rename":
                os.rename(p(a[0]), p(a[1]))
            elif kind == "unlink":
                os.unlink(p(a[0]))
            elif kind == "mkdir":
                os.mkdir(p(a[0]), a[1])
            elif kind == "rmdir":
                os.rmdir(p(a[0]))
            elif kind == "chmod":
                os.chmod(p(a[0]), a[1])
            elif kind == "chown":
                os.chown(p(a[0]), a[1], a[2])
            elif kind == "utime":
                os.utime(p(a[0]), ns=(a[1], a[2]))
            elif kind == "hopen":  # slot, path, flags
                if a[0] in self.fds:
                    return "busy"
                self.fds[a[0]] = os.open(p(a[1]), a[2], 0o644)
            elif kind == "hclose":
                fd = self.fds.pop(a[0], None)
                if fd is None:
                    return "none"
                os.close(fd)
            elif kind.startswith("h") and a[0] not in self.fds:
                return "none"
            elif kind == "hwrite":  # slot, offset, data
                os.pwrite(self.fds[a[0]], a[2], a[1])
            elif kind == "hftruncate":
                os.ftruncate(self.fds[a[0]], a[1])
            elif kind == "hfstat":
                return ("size", os.fstat(self.fds[a[0]]).st_size)
            elif kind == "hread":  # the whole content through the handle (EBADF if O_WRONLY)
                return ("data", os.pread(self.fds[a[0]], 1 << 16, 0))
            elif kind == "hseekend":
                return ("pos", os.lseek(self.fds[a[0]], 0, os.SEEK_END))
            elif kind.startswith("u"):
                self.user_calls += 1
            if kind == "ucreate":  # as USER: create and write
                def f():
                    fd = os.open(p(a[0]), os.O_WRONLY | os.O_CREAT, 0o664)
                    os.write(fd, a[1])
                    os.close(fd)
                return as_user(f)
            elif kind == "uwrite":  # as USER: write into an existing file
                def f():
                    fd = os.open(p(a[0]), os.O_WRONLY)
                    os.pwrite(fd, a[1], 0)
                    os.close(fd)
                return as_user(f)
            elif kind == "umkdir":
                return as_user(lambda: os.mkdir(p(a[0]), 0o755))
            return 0
        except OSError as e:
            return e.errno

    def close_all(self):
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def random_op(rng):
    name = lambda: os.path.join(rng.choice([""] + DIRS), rng.choice(NAMES))
    data = lambda: bytes(rng.choice(b"abc\n\x00\xff") for _ in range(rng.randrange(0, 40)))
    fmode = lambda: rng.choice([0o644, 0o600, 0o666, 0o444, 0o000, 0o755, 0o4755, 0o2775])
    dmode = lambda: rng.choice([0o755, 0o700, 0o777, 0o555, 0o733, 0o1777])
    slot = lambda: rng.randrange(3)
    k = rng.random()
    if k < 0.12:
        flags = rng.choice([0, 0, os.O_TRUNC, os.O_EXCL])
        return ("create", name(), flags, rng.choice([0o644, 0o600, 0o000, 0o755, 0o640]), data())
    if k < 0.17:
        return ("pwrite", name(), rng.randrange(0, 60), data())
    if k < 0.21:
        return ("append", name(), data())
    if k < 0.22:
        return ("touch_unlink", name())
    if k < 0.23:
        return ("touch_rename", name(), name())
    if k < 0.26:
        return ("truncate", name(), rng.randrange(0, 50))
    if k < 0.27:
        return ("read", name())
    if k < 0.34:
        return ("rename", name(), name())
    if k < 0.36:
        return ("rename", rng.choice(DIRS), rng.choice(DIRS + ["d2", "d0/g"]))
    if k < 0.42:
        return ("unlink", name())
    if k < 0.48:
        return ("mkdir", rng.choice(DIRS), dmode())
    if k < 0.52:
        return ("rmdir", rng.choice(DIRS))
    if k < 0.56:
        return ("chmod", name(), fmode())
    if k < 0.59:
        return ("chmod", rng.choice(DIRS), dmode())
    if k < 0.61:
        return ("chown", rng.choice([name(), rng.choice(DIRS)]), USER, USER)
    if k < 0.64:
        t = 1_600_000_000_000_000_000 + rng.randrange(10**15)
        return ("utime", name(), t + rng.randrange(10**9), t)
    if k < 0.70:
        flags = rng.choice([os.O_RDWR, os.O_WRONLY, os.O_RDWR | os.O_CREAT,
                            os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_TRUNC])
        return ("hopen", slot(), name(), flags)
    if k < 0.75:
        return ("hwrite", slot(), rng.randrange(0, 60), data())
    if k < 0.78:
        return ("hftruncate", slot(), rng.randrange(0, 50))
    if k < 0.80:
        return ("hfstat", slot())
    if k < 0.81:
        return ("hread", slot())
    if k < 0.84:
        return ("hseekend", slot())
    if k < 0.89:
        return ("hclose", slot())
    if k < 0.94:
        return ("ucreate", name(), data())
    if k < 0.97:
        return ("uwrite", name(), data())
    return ("umkdir", rng.choice(DIRS))


def held_open(side, rel):
    """Whether one of side's handles is open on the file at rel."""
    try:
        ino = os.stat(side.p(rel)).st_ino
    except OSError:
        return False
    return any(os.fstat(fd).st_ino == ino for fd in side.fds.values())


def nonempty_dir(path):
    return os.path.isdir(path) and bool(os.listdir(path))


def paths_of(op):
    """The paths an op may change: its path arguments and their parents."""
    out = []
    for x in op[1:]:
        if isinstance(x, str):
            out += [x, os.path.dirname(x)]
    return [x for x in out if x]


def stat_of(root, rel):
    try:
        return os.lstat(os.path.join(root, rel))
    except OSError as e:
        return e.errno


def compare_stat(i, op, rel, a, b, prev, explicit, failed):
    """a: tmpfs's stat, b: etcdfs's; prev: their previous (mtime, ctime)."""
    where = f"op {i} {op}: {rel}"
    if not isinstance(a, os.stat_result) or not isinstance(b, os.stat_result):
        assert a == b if not isinstance(a, os.stat_result) else False, \
            f"{where}: tmpfs {a if isinstance(a, int) else 'exists'}, " \
            f"etcdfs {b if isinstance(b, int) else 'exists'}"
        return
    assert oct(b.st_mode) == oct(a.st_mode), f"{where}: mode"
    assert (b.st_uid, b.st_gid) == (a.st_uid, a.st_gid), f"{where}: uid/gid"
    if stat.S_ISREG(a.st_mode):
        # a directory's size and link count are each file system's own
        # bookkeeping; a file's are not
        assert b.st_size == a.st_size, f"{where}: size"
        assert b.st_nlink == a.st_nlink, f"{where}: nlink"
    if explicit:
        assert (b.st_atime_ns, b.st_mtime_ns) == (a.st_atime_ns, a.st_mtime_ns), \
            f"{where}: utimensat values"
    if prev is not None:
        # tmpfs's clock is coarse (a jiffy): two changes within one tick
        # leave its times equal. So: a time that moved in tmpfs must move in
        # etcdfs, and a call that failed must move nothing. (etcdfs stamps
        # with a fine clock; a stamp coarser than the time between two calls
        # would hide a change from make and rsync, so it fails here too.)
        for field in ("st_mtime_ns", "st_ctime_ns"):
            moved_a = getattr(a, field) != prev[0][field]
            moved_b = getattr(b, field) != prev[1][field]
            assert moved_b if moved_a else not (failed and moved_b), \
                f"{where}: {field} moved in tmpfs: {moved_a}, in etcdfs: {moved_b}"


def times(s):
    return {"st_mtime_ns": s.st_mtime_ns, "st_ctime_ns": s.st_ctime_ns}


@pytest.fixture
def public_dir():
    """Both trees below a directory every user may traverse, so the second
    user's refusals come from the trees' modes."""
    d = tempfile.mkdtemp(prefix="etcdfs-model-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_model_against_tmpfs(etcd, mount_factory, public_dir, seed):
    model = os.path.join(public_dir, "model")
    os.mkdir(model)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", model], check=True)
    old_umask = os.umask(0o022)
    sides = []
    try:
        m = mount_factory(["--endpoints", etcd.endpoint, "--prefix", "/model",
                           "-o", "rw,allow_other"], start=False)
        m.path = tempfile.mkdtemp(prefix="mnt-", dir=public_dir)
        os.chmod(m.path, 0o755)
        m.start()
        a, b = Side(model), Side(m.path)
        sides = [a, b]
        rng = random.Random(seed)
        prev = {}
        mismatches = []
        for i in range(OPS):
            op = random_op(rng)
            if op[0] == "rename" and nonempty_dir(a.p(op[1])):
                continue  # EXDEV by design
            if op[0] in ("ucreate", "uwrite") and held_open(a, op[1]):
                # by design (docs/writes.md, Commit model): each process
                # writes its own copy, so the holder's handles do not see
                # the second user's save, and its own later save is ESTALE
                continue
            try:
                check_op(i, op, a, b, prev)
            except AssertionError as e:
                if not KEEP_GOING:
                    raise
                mismatches.append(str(e).splitlines()[0])
        assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches)
        # the second user's calls ran (they were once all skipped unseen)
        assert a.user_calls > 10 and b.user_calls == a.user_calls, a.user_calls
        for s in sides:
            s.close_all()
        check_end_state(etcd, m.path, model)
    finally:
        for s in sides:
            s.close_all()
        os.umask(old_umask)
        subprocess.run(["umount", model])


def check_op(i, op, a, b, prev):
    """Runs op on tmpfs (a) and etcdfs (b); compares results, then the stats
    of the paths the op names (prev: their times after the last op)."""
    want = a.run(op)
    got = b.run(op)
    show = lambda r: errno.errorcode.get(r, r) if isinstance(r, int) else r
    assert got == want, f"op {i} {op}: tmpfs {show(want)}, etcdfs {show(got)}"
    explicit = op[0] == "utime" and want == 0
    failed = isinstance(want, str) or (isinstance(want, int) and want != 0)
    stats = [(rel, stat_of(a.root, rel), stat_of(b.root, rel)) for rel in paths_of(op)]
    before = dict(prev)
    # a path the op does not name may still have moved (a handle's write,
    # a rename into it): forget what such an op could change
    if op[0].startswith("h") or op[0] == "rename":
        prev.clear()
    for rel, sa, sb in stats:
        if isinstance(sa, os.stat_result) and isinstance(sb, os.stat_result):
            prev[rel] = (times(sa), times(sb))
        else:
            prev.pop(rel, None)
    for rel, sa, sb in stats:
        compare_stat(i, op, rel, sa, sb, before.get(rel), explicit and rel == op[1], failed)


def test_huge_truncate_is_efbig(etcd, mount_factory):
    """A size no etcd value can hold is EFBIG (docs/writes.md, Limits), not
    ENOMEM, and changes nothing."""
    etcd.put("/big/f", "keep\n")
    m = mount_factory(["--endpoints", etcd.endpoint, "-o", "rw"])
    p = os.path.join(m.path, "big/f")
    with pytest.raises(OSError) as e:
        os.truncate(p, 999999999999999)
    assert e.value.errno == errno.EFBIG
    with pytest.raises(OSError) as e:
        fd = os.open(p, os.O_WRONLY)
        try:
            os.ftruncate(fd, 999999999999999)
        finally:
            os.close(fd)
    assert e.value.errno == errno.EFBIG
    assert os.stat(p).st_size == 5
    assert etcd.get("/big/f")[0] == b"keep\n"
