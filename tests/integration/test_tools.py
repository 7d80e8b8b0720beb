"""Real tools on a read-write mount behave as on any file system: tar -x,
cp -a, rsync -a (incremental), git, sqlite3 in WAL mode and make. Each tree
the tools write is checked with diff -r against its source, and with the
modes, owners and mtimes stat -c reports."""
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import wait_for, read

PAST = 1_500_000_000  # 2017: well before anything the mount creates


def need(*tools):
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"needs {t} (not installed)")


def run(*cmd, cwd=None, check=True):
    r = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=60)
    if check:
        shown = " ".join(c if len(c) < 200 else c[:200] + "..." for c in cmd)
        assert r.returncode == 0, f"{shown}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture
def rw(etcd, mount_factory):
    return mount_factory(["--endpoints", etcd.endpoint, "--prefix", "/tools", "-o", "rw"])


def make_source(root):
    """A small tree: files of several modes and owners, subdirectories,
    mtimes in the past (directories' last, since filling them moves them)."""
    files = {"README": (0o644, b"hello\n"), "run.sh": (0o755, b"#!/bin/sh\necho hi\n"),
             "private": (0o600, b"secret\n"), "ro": (0o444, b"read only\n"),
             "empty": (0o644, b""), "a/b/deep": (0o640, b"deep\n" * 100),
             "a/data": (0o664, bytes(range(256)) * 4), "a/user": (0o644, b"owned\n")}
    for i, (rel, (mode, data)) in enumerate(sorted(files.items())):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        os.utime(p, (PAST + i * 1000, PAST + i * 1000))
    os.chown(os.path.join(root, "a/user"), 1000, 1000)
    os.chmod(os.path.join(root, "a/b"), 0o750)
    for i, rel in enumerate(["a/b", "a", "."]):
        os.utime(os.path.join(root, rel), (PAST + 77 + i, PAST + 77 + i))


def listing(root, dirs=True):
    """[(path, mode, uid, gid, mtime)] for everything below root, via stat -c."""
    r = run("find", ".", "-mindepth", "1", *([] if dirs else ["-type", "f"]),
            "-exec", "stat", "-c", "%n %a %u %g %Y", "{}", "+", cwd=root)
    return sorted(r.stdout.splitlines())


def same_tree(src, dst, dirs=True):
    r = run("diff", "-r", src, dst, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert listing(dst, dirs) == listing(src, dirs)


def test_tar_extract(rw, tmp):
    need("tar")
    src = os.path.join(tmp, "src")
    make_source(src)
    run("tar", "-cf", os.path.join(tmp, "src.tar"), "-C", src, ".")
    dst = os.path.join(rw.path, "tar")
    os.mkdir(dst)
    run("tar", "-xf", os.path.join(tmp, "src.tar"), "-C", dst)
    same_tree(src, dst)


def test_cp_archive(rw, tmp):
    src = os.path.join(tmp, "src")
    make_source(src)
    dst = os.path.join(rw.path, "cp")
    run("cp", "-a", src, dst)
    same_tree(src, dst)


def test_rsync_incremental(rw, tmp):
    need("rsync")
    src = os.path.join(tmp, "src")
    make_source(src)
    dst = os.path.join(rw.path, "rsync")
    run("rsync", "-a", src + "/", dst + "/")
    same_tree(src, dst)
    again = run("rsync", "-a", "--stats", "--itemize-changes", src + "/", dst + "/")
    assert "Number of regular files transferred: 0" in again.stdout, again.stdout
    # itemized lines are YXcstpoguax NAME (Y: < > c h . *; X: f d L D S)
    changes = [l for l in again.stdout.splitlines() if re.match(r"[<>ch.*][fdLDS]\S{9} ", l)]
    assert changes == [], again.stdout
    # same size, different content, newer mtime: quick check sees the mtime
    p = os.path.join(src, "a/data")
    with open(p, "r+b") as f:
        f.write(b"CHANGED!")
    os.utime(p, (PAST + 999_999, PAST + 999_999))
    third = run("rsync", "-a", "--itemize-changes", src + "/", dst + "/")
    sent = [l.split(None, 1)[1] for l in third.stdout.splitlines() if l.startswith(">f")]
    assert sent == ["a/data"], third.stdout
    assert read(os.path.join(dst, "a/data")) == read(p)
    same_tree(src, dst)


def test_git_repository(rw):
    need("git")
    repo = os.path.join(rw.path, "repo")
    os.mkdir(repo)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
           "-c", "init.defaultBranch=main"]
    run(*git, "init", "-q", cwd=repo)
    for i in range(5):
        with open(os.path.join(repo, f"file{i}.txt"), "w") as f:
            f.write(f"line {i}\n" * (i + 1))
    os.mkdir(os.path.join(repo, "sub"))
    with open(os.path.join(repo, "sub/x.c"), "w") as f:
        f.write("int main(void) { return 0; }\n")
    run(*git, "add", ".", cwd=repo)
    run(*git, "commit", "-q", "-m", "first", cwd=repo)
    with open(os.path.join(repo, "file0.txt"), "a") as f:
        f.write("more\n")
    run(*git, "commit", "-q", "-a", "-m", "second", cwd=repo)
    run(*git, "fsck", "--strict", cwd=repo)
    log = run(*git, "log", "--format=%s", cwd=repo).stdout.split()
    assert log == ["second", "first"]
    assert run(*git, "status", "--porcelain", cwd=repo).stdout == ""


def test_sqlite_wal(rw):
    """The -shm file is mapped MAP_SHARED writable: a writer alone with a
    file goes through the page cache (docs/writes.md, "Commit model")."""
    need("sqlite3")
    db = os.path.join(rw.path, "db/app.sqlite")
    os.mkdir(os.path.dirname(db))
    sql = ("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
           "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199)"
           " INSERT INTO t(v) SELECT 'row ' || i FROM n;"
           "INSERT INTO t(v) VALUES('one more'); DELETE FROM t WHERE v = 'one more';")
    out = run("sqlite3", db, sql).stdout
    assert out.strip() == "wal", out
    assert run("sqlite3", db, "PRAGMA integrity_check;").stdout.strip() == "ok"
    # reopen: the rows are there, from the WAL or the checkpointed database
    out = run("sqlite3", db, "SELECT count(*), max(v) FROM t;").stdout.strip()
    assert out == "200|row 99", out
    run("sqlite3", db, "PRAGMA wal_checkpoint(TRUNCATE);")
    assert run("sqlite3", db, "SELECT count(*) FROM t;").stdout.strip() == "200"


def test_make_rebuilds_after_external_change(etcd, rw):
    need("make")
    d = os.path.join(rw.path, "mk")
    os.mkdir(d)
    with open(os.path.join(d, "Makefile"), "w") as f:
        f.write("out: src\n\ttr a-z A-Z < src > out\n")
    with open(os.path.join(d, "src"), "w") as f:
        f.write("hello\n")
    run("make", "-C", d)
    assert read(os.path.join(d, "out")) == b"HELLO\n"
    second = run("make", "-C", d)
    assert "is up to date" in second.stdout or "Nothing to be done" in second.stdout, \
        second.stdout
    # an external change a second later: the watch delivers it, and its
    # mtime must be newer than out's
    time.sleep(1.1)
    etcd.put("/tools/mk/src", "world\n")
    assert wait_for(lambda: read(os.path.join(d, "src")) == b"world\n")
    third = run("make", "-C", d)
    assert "tr a-z A-Z" in third.stdout, third.stdout
    assert read(os.path.join(d, "out")) == b"WORLD\n"
    fourth = run("make", "-C", d)
    assert "is up to date" in fourth.stdout or "Nothing to be done" in fourth.stdout, \
        fourth.stdout
    # and a change through the mount
    time.sleep(1.1)
    with open(os.path.join(d, "src"), "w") as f:
        f.write("again\n")
    run("make", "-C", d)
    assert read(os.path.join(d, "out")) == b"AGAIN\n"
