"""Operator toolbox: time travel (-o revision=N) and offline backups
(--snapshot FILE), against real etcd and real backend files."""
import os
import subprocess

import pytest

from conftest import ETCDFS, read_tree, shared
from naming import expected_files


def test_time_travel_diff(etcd, mount_factory):
    etcd.put("/registry/pods/default/web", "image: nginx:1\n")
    rev = etcd.put("/registry/configmaps/default/cfg", "a: 1\n")
    etcd.put("/registry/pods/default/web", "image: nginx:2\n")
    etcd.put("/registry/events/default/web.1", "Scheduled\n")
    then = mount_factory(["--endpoints", etcd.endpoint, "-o", f"revision={rev}"])
    now = mount_factory(["--endpoints", etcd.endpoint])
    r = subprocess.run(["diff", "-r", then.path, now.path], capture_output=True)
    assert r.returncode == 1
    out = r.stdout.decode()
    assert "nginx:1" in out and "nginx:2" in out
    assert "Only in " + os.path.join(now.path, "registry") in out and "events" in out
    # the old view is read-only
    with open(os.path.join(then.path, "registry/pods/default/web")) as f:
        assert f.read() == "image: nginx:1\n"
    try:
        open(os.path.join(then.path, "registry/pods/default/web"), "w")
        assert False, "write allowed at a past revision"
    except OSError as e:
        assert e.errno == 30  # EROFS


def test_time_travel_compacted(etcd, tmp):
    etcd.put("/k", "1")
    rev = etcd.put("/k", "2")
    etcd.compact(rev)
    mp = os.path.join(tmp, "m")
    os.mkdir(mp)
    r = subprocess.run([ETCDFS, "--endpoints", etcd.endpoint, "-o", "revision=1", mp],
                       capture_output=True, timeout=30)
    assert r.returncode != 0
    assert b"compacted" in r.stderr


@pytest.mark.no_backend
def test_snapshot_of_real_cluster(mount_factory):
    db = shared("k8s-real/boltdb/db")
    with open(shared("k8s-real/boltdb/keys.txt"), "rb") as f:
        keys = [k for k in f.read().split(b"\n") if k]
    m = mount_factory(["--snapshot", db])
    files, _ = expected_files(keys)
    got = set(read_tree(m.path))
    assert got == files
    assert all(len(v) > 0 for v in read_tree(m.path).values())


def test_snapshot_saved_by_etcdctl(etcd, mount_factory, tmp):
    items = [(f"/app/k{i}", f"value {i}") for i in range(50)]
    etcd.put_many(items)
    etcd.delete("/app/k7")
    snap = os.path.join(tmp, "backup.db")
    etcd.ctl("snapshot", "save", snap)
    etcd.put("/app/after", "not in the backup")
    m = mount_factory(["--snapshot", snap])
    tree = read_tree(m.path)
    want = {f"app/k{i}".encode(): f"value {i}".encode() for i in range(50) if i != 7}
    assert tree == want


@pytest.mark.no_backend
def test_snapshot_malformed(tmp):
    mp = os.path.join(tmp, "m")
    os.mkdir(mp)
    bad = os.path.join(tmp, "bad.db")
    src = shared("k8s-real/boltdb/db")
    with open(src, "rb") as f:
        data = f.read()
    for blob in (b"", b"not a database at all" * 100, data[:5000]):
        with open(bad, "wb") as f:
            f.write(blob)
        r = subprocess.run([ETCDFS, "--snapshot", bad, mp], capture_output=True, timeout=30)
        assert r.returncode != 0
        assert b"bad.db" in r.stderr, r.stderr
        assert not os.path.ismount(mp)
