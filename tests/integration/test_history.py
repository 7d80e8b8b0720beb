"""NAME%history/: every retained version of a key as a read-only file
(docs/naming.md, "History"), over etcd and the embedded store."""
import base64
import errno
import os
import subprocess
import time

import pytest

from conftest import StoreServer, b64, read, wait_for


def walk(etcd, key):
    """The key's versions by etcd's own answers (the JSON API both back ends
    serve, as `etcdctl get --rev` asks): a range at the current revision,
    then at each version's mod_revision - 1, until the key is absent, was
    created by another incarnation, or the revision is compacted."""
    out = []
    rev = 0
    create = None
    while True:
        body = {"key": b64(key)}
        if rev:
            body["revision"] = rev
        try:
            r = etcd.api("/v3/kv/range", body)
        except Exception as e:  # compacted: the gateway answers an HTTP error
            assert "compact" in getattr(e, "read", lambda: b"")().decode().lower() or rev
            break
        kvs = r.get("kvs") or []
        if not kvs:
            break
        kv = kvs[0]
        if create is None:
            create = kv["create_revision"]
        if kv["create_revision"] != create:
            break
        out.append((int(kv["mod_revision"]), base64.b64decode(kv.get("value", "")), kv))
        if int(kv.get("version", 1)) <= 1:
            break
        rev = int(kv["mod_revision"]) - 1
    return out


def put(etcd, m, key, value):
    """A put, once the mount has seen it (its watch is asynchronous)."""
    r = etcd.put(key, value)
    p = os.path.join(m.path, key.lstrip("/"))

    def seen():
        for q in (p, os.path.join(p, "%value")):
            try:
                if os.getxattr(q, "user.etcd.mod_revision") == str(r).encode():
                    return True
            except OSError:
                pass
        return False
    assert wait_for(seen)
    return r


def etcd_ranges(etcd):
    """Range calls etcd itself answered (its /metrics), for a check of the
    daemon's own counter independent of it; None on the embedded store."""
    if type(etcd).__name__ != "Etcd":
        return None
    import urllib.request
    with urllib.request.urlopen(etcd.endpoint + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("grpc_server_handled_total{")
               and 'grpc_method="Range"' in line)


def hist(m, rel):
    return os.path.join(m.path, rel + "%history")


def listing(m, rel):
    return sorted(int(n) for n in os.listdir(hist(m, rel)))


def ranges(m):
    return int(m.xattr("", "user.etcdfs.backend_ranges"))


def test_history_equals_the_walk_and_reads_each_version(etcd, mnt):
    for v in (b"one\n", b"two\n", b"three\n"):
        put(etcd, mnt, "/app/color", v)
    put(etcd, mnt, "/app/other", b"x")
    want = walk(etcd, "/app/color")
    assert len(want) == 3
    assert listing(mnt, "app/color") == sorted(r for r, _, _ in want)
    for rev, val, kv in want:
        p = os.path.join(hist(mnt, "app/color"), str(rev))
        assert read(p) == val
        assert os.getxattr(p, "user.etcd.mod_revision").decode() == str(rev)
        assert os.getxattr(p, "user.etcd.version").decode() == str(kv["version"])
        assert os.getxattr(p, "user.etcd.create_revision").decode() == str(kv["create_revision"])
        assert os.getxattr(p, "user.etcd.lease").decode() == "0"
        assert os.getxattr(p, "user.etcd.key") == b"/app/color"
        st = os.stat(p)
        assert st.st_mode & 0o777 == 0o444 and st.st_size == len(val)
    d = os.stat(hist(mnt, "app/color"))
    assert d.st_mode & 0o777 == 0o555
    # inodes (docs/naming.md): the directory is the file's 4*id+3, versions 2^62 and up
    assert d.st_ino == os.stat(os.path.join(mnt.path, "app/color")).st_ino + 3
    inos = {os.stat(os.path.join(hist(mnt, "app/color"), str(r))).st_ino for r, _, _ in want}
    assert len(inos) == 3 and min(inos) >= 1 << 62
    # a key with one version has a history of one
    assert listing(mnt, "app/other") == [walk(etcd, "/app/other")[0][0]]
    # no such key, or a name that is not a version: ENOENT
    assert not os.path.exists(hist(mnt, "app/nothing"))
    assert not os.path.exists(os.path.join(hist(mnt, "app/color"), "0"))
    assert not os.path.exists(os.path.join(hist(mnt, "app/color"), "0" + str(want[0][0])))


def test_history_is_read_only(etcd, mnt):
    put(etcd, mnt, "/k", b"a")
    put(etcd, mnt, "/k", b"b")
    rev = listing(mnt, "k")[0]
    p = os.path.join(hist(mnt, "k"), str(rev))
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        with pytest.raises(PermissionError):
            os.open(p, flags)
    with pytest.raises(PermissionError):
        os.open(os.path.join(hist(mnt, "k"), "new"), os.O_CREAT | os.O_WRONLY, 0o644)
    with pytest.raises(PermissionError):
        os.unlink(p)
    with pytest.raises(PermissionError):
        os.mkdir(os.path.join(hist(mnt, "k"), "d"))
    with pytest.raises(PermissionError):
        os.chmod(p, 0o644)
    assert read(p) == b"a"


def test_history_names_are_never_listed(etcd, mnt):
    put(etcd, mnt, "/d/k", b"v1 needle")
    put(etcd, mnt, "/d/k", b"v2 needle")
    put(etcd, mnt, "/d", b"dir value")
    put(etcd, mnt, "/d", b"dir value 2")
    assert len(listing(mnt, "d/k")) == 2
    assert len(listing(mnt, "d/%value")) == 2
    assert "%history" not in " ".join(os.listdir(os.path.join(mnt.path, "d")))
    find = subprocess.run(["find", mnt.path], capture_output=True, check=True).stdout.decode()
    assert "%history" not in find
    grep = subprocess.run(["grep", "-r", "needle", mnt.path], capture_output=True).stdout.decode()
    assert grep.count("needle") == 1 and "%history" not in grep


def test_key_that_is_also_a_directory(etcd, mnt):
    put(etcd, mnt, "/a", b"first")
    put(etcd, mnt, "/a", b"second")
    put(etcd, mnt, "/a/b", b"child")
    want = walk(etcd, "/a")
    assert listing(mnt, "a/%value") == sorted(r for r, _, _ in want)
    for rev, val, _ in want:
        assert read(os.path.join(hist(mnt, "a/%value"), str(rev))) == val
    # the directory itself is no key
    assert not os.path.exists(os.path.join(mnt.path, "a%history"))


def test_deleted_and_recreated_key_starts_again(etcd, mnt):
    put(etcd, mnt, "/k", b"old 1")
    put(etcd, mnt, "/k", b"old 2")
    old = listing(mnt, "k")
    assert len(old) == 2
    etcd.delete("/k")
    # a deleted key has no history directory (once the kernel's entry,
    # kept for --stale-timeout, expired)
    assert wait_for(lambda: not os.path.exists(os.path.join(mnt.path, "k")))
    assert wait_for(lambda: not os.path.exists(hist(mnt, "k")))
    put(etcd, mnt, "/k", b"new 1")
    r = put(etcd, mnt, "/k", b"new 2")
    # the mount's watch brings the change; then the history is the new key's
    want = [rev for rev, _, _ in walk(etcd, "/k")]
    assert len(want) == 2 and max(want) == r

    def seen():
        try:
            return listing(mnt, "k") == sorted(want)
        except FileNotFoundError:
            return False
    assert wait_for(seen)
    for rev in old:
        assert not os.path.exists(os.path.join(hist(mnt, "k"), str(rev)))
    assert read(os.path.join(hist(mnt, "k"), str(r))) == b"new 2"


def test_history_follows_new_versions(etcd, mnt):
    put(etcd, mnt, "/k", b"1")
    assert len(listing(mnt, "k")) == 1
    r = put(etcd, mnt, "/k", b"2")
    assert wait_for(lambda: r in listing(mnt, "k"))
    assert len(listing(mnt, "k")) == 2
    assert read(os.path.join(hist(mnt, "k"), str(r))) == b"2"


def test_compaction_while_a_listing_is_open(etcd, mnt):
    revs = [put(etcd, mnt, "/k", b"v%d" % i) for i in range(5)]
    d = hist(mnt, "k")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert sorted(int(n) for n in os.listdir(fd)) == revs
        # etcd keeps, at revision revs[2], the version current then
        etcd.compact(revs[2])
        time.sleep(1.2)  # HISTORY_CHECK_MS: a history in use is checked once a second
        # revs[0] and revs[1] were fetched at revisions below the compaction point
        for r in revs[:2]:
            with pytest.raises(FileNotFoundError):
                open(os.path.join(d, str(r)), "rb")
        for i, r in enumerate(revs[2:], 2):
            assert read(os.path.join(d, str(r))) == b"v%d" % i
        assert sorted(int(n) for n in os.listdir(fd)) == revs[2:]
    finally:
        os.close(fd)
    assert "compacted" in mnt.log()


def test_history_of_a_1000_version_key(etcd, mnt):
    """Listing and reading every version costs one backend request per
    version (plus a compaction check at most once a second); listing the
    parent directory costs none. The listing stops at the documented cap."""
    for i in range(1000):
        etcd.put("/big/k", b"version %d\n" % i)
    put(etcd, mnt, "/big/other", b"x")
    r0 = ranges(mnt)
    os.listdir(os.path.join(mnt.path, "big"))
    subprocess.run(["ls", "-l", os.path.join(mnt.path, "big")], check=True, capture_output=True)
    r1 = ranges(mnt)
    assert r1 == r0, "listing the parent fetched from the backend"
    c0 = int(mnt.xattr("", "user.etcdfs.history_checks"))
    e0 = etcd_ranges(etcd)
    t0 = time.monotonic()
    d = hist(mnt, "big/k")
    names = sorted(int(n) for n in os.listdir(d))
    assert len(names) == 1000
    for i, r in enumerate(names):
        assert read(os.path.join(d, str(r))) == b"version %d\n" % i
    elapsed = time.monotonic() - t0
    r2 = ranges(mnt)
    e1 = etcd_ranges(etcd)
    if e0 is not None:
        assert e1 - e0 == r2 - r1, "etcd answered another number of ranges"
    checks = int(mnt.xattr("", "user.etcdfs.history_checks")) - c0
    print(f"1000 versions listed and read in {elapsed:.2f} s: {r2 - r1} backend ranges, "
          f"{checks} of them compaction checks")
    assert r2 - r1 - checks == 1000
    assert checks <= elapsed / 1.0 + 1
    # one more version: still the newest 1000 (the cap), the oldest gone
    r = put(etcd, mnt, "/big/k", b"version 1000\n")
    assert wait_for(lambda: r in [int(n) for n in os.listdir(d)])
    now = sorted(int(n) for n in os.listdir(d))
    assert len(now) == 1000 and now == names[1:] + [r]
    assert not os.path.exists(os.path.join(d, str(names[0])))


def test_revision_mount_history_stops_at_its_revision(etcd, mount_factory):
    revs = [etcd.put("/k", b"v%d" % i) for i in range(4)]
    m = mount_factory(["--endpoints", etcd.endpoint, "-o", f"revision={revs[1]}"])
    assert listing(m, "k") == revs[:2]
    assert read(os.path.join(hist(m, "k"), str(revs[1]))) == b"v1"
    with pytest.raises(OSError) as e:
        os.open(os.path.join(hist(m, "k"), str(revs[0])), os.O_WRONLY)
    assert e.value.errno in (errno.EROFS, errno.EACCES)


def test_kubernetes_versions_render_and_keep_their_times(etcd, mount_factory):
    """A protobuf Pod's versions show as the mount shows the Pod (YAML by
    default, JSON with --format=json), each with the time it records."""
    from test_times import pod, utc
    t1, t2 = utc("2021-01-01T00:00:00Z"), utc("2022-06-01T12:00:00Z")
    r1 = etcd.put("/registry/pods/default/web", pod("web", t1))
    r2 = etcd.put("/registry/pods/default/web", pod("web", t1, [t2]))
    for fmt, marker in (("yaml", "kind: Pod"), ("json", '"kind": "Pod"')):
        m = mount_factory(["--endpoints", etcd.endpoint, "--format", fmt])
        d = hist(m, "registry/pods/default/web")
        assert listing(m, "registry/pods/default/web") == [r1, r2]
        old = read(os.path.join(d, str(r1))).decode()
        new = read(os.path.join(d, str(r2))).decode()
        assert marker in old and "managedFields" not in old
        assert "managedFields" in new
        # the newest version is the file itself
        assert new == read(os.path.join(m.path, "registry/pods/default/web")).decode()
        assert os.stat(os.path.join(d, str(r1))).st_mtime == t1
        assert os.stat(os.path.join(d, str(r2))).st_mtime == t2
        assert os.stat(os.path.join(d, str(r1))).st_size == len(old.encode())
        m.stop()


def test_snapshot_mount_history(etcd, mount_factory, tmp):
    """A backup file keeps every revision after its compaction point: the
    history comes from it like from etcd. etcdfs-server's snapshot holds the
    latest version of each key only (docs/store.md, Maintenance.Snapshot),
    so over the store the history is that version."""
    revs = [etcd.put("/k", b"v%d" % i) for i in range(3)]
    snap = os.path.join(tmp, "snap.db")
    etcd.ctl("snapshot", "save", snap)
    m = mount_factory(["--snapshot", snap])
    kept = revs[-1:] if isinstance(etcd, StoreServer) else revs
    assert listing(m, "k") == kept
    for r in kept:
        assert read(os.path.join(hist(m, "k"), str(r))) == b"v%d" % revs.index(r)


def test_secret_versions_are_private(etcd, mount_factory):
    """Keys under /secrets/ are the owner's only (mode 0600): their history too."""
    etcd.put("/secrets/db", b"one")
    r = etcd.put("/secrets/db", b"two")
    m = mount_factory(["--endpoints", etcd.endpoint])
    assert os.stat(os.path.join(m.path, "secrets/db")).st_mode & 0o777 == 0o600
    assert os.stat(hist(m, "secrets/db")).st_mode & 0o777 == 0o500
    assert os.stat(os.path.join(hist(m, "secrets/db"), str(r))).st_mode & 0o777 == 0o400
