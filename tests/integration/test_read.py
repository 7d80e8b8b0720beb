"""Foundation: browsing a real etcd read-only through the mount."""
import errno
import json
import os
import subprocess
import time

import pytest

from conftest import ETCDFS
from naming import expected_files, key_to_path


def walk_files(root):
    root_b = os.fsencode(root)
    files, dirs = set(), set()
    for d, dns, fns in os.walk(root_b):
        rel = os.path.relpath(d, root_b)
        for n in dns:
            dirs.add(n if rel == b"." else rel + b"/" + n)
        for n in fns:
            files.add(n if rel == b"." else rel + b"/" + n)
    return files, dirs


ODD_KEYS = [
    b"/registry/pods/default/www",
    b"/registry/pods/default/db",
    b"/registry/configmaps/kube-system/coredns",
    b"/a", b"/a/b", b"/a/b/c",          # keys that are also prefixes
    b"/dots/.", b"/dots/..", b"/dots/...",
    b"/pct/100%", b"/pct/%value",
    b"/ctl/tab\there", b"/ctl/nl\nx", b"/ctl/nul\0x", b"/ctl/del\x7f",
    b"/slash//double", b"/trail/",
    b"compact_rev_key", b"noslash/child",
    b"/utf8/\xc3\xa9t\xc3\xa9", b"/bin/\xff\xfe",
]


def test_find_matches_etcdctl(etcd, mnt):
    items = [(k, b"v:" + k) for k in ODD_KEYS]
    etcd.put_many(items)
    # the mount synced before the puts: they arrive through the watch
    keys = [k for k in etcd.ctl("get", "", "--prefix", "--keys-only").split(b"\n") if k]
    # etcdctl prints keys separated by blank lines; keys containing "\n"
    # would split, so compare against the API's key list and check etcdctl
    # agrees for the printable ones.
    api_keys = etcd.keys()
    assert set(k for k in api_keys if b"\n" not in k) <= set(keys)
    want_files, want_dirs = expected_files(api_keys)
    deadline = time.time() + 5
    while True:
        files, dirs = walk_files(mnt.path)
        if files == want_files or time.time() > deadline:
            break
        time.sleep(0.05)
    assert files == want_files
    assert want_dirs <= dirs


def test_cat_matches_values(etcd, mount_factory):
    all_bytes = bytes(range(256))
    etcd.put("/bin/all", all_bytes)
    etcd.put("/bin/empty", b"")
    for k in ODD_KEYS:
        etcd.put(k, b"value of " + k + b"\n")
    m = mount_factory(["--endpoints", etcd.endpoint])  # initial sync path
    for k in ODD_KEYS + [b"/bin/all", b"/bin/empty"]:
        files, _ = expected_files(etcd.keys())
        p = key_to_path(k)
        if p + b"/%value" in files:
            p += b"/%value"
        with open(os.path.join(os.fsencode(m.path), p), "rb") as f:
            data = f.read()
        want, _ = etcd.get(k)
        assert data == want, k
        st = os.stat(os.path.join(os.fsencode(m.path), p))
        assert st.st_size == len(want)
    # byte-for-byte against etcdctl's own output as well
    out = etcd.ctl("get", "/bin/all", "--print-value-only")
    assert out == all_bytes + b"\n"
    with open(os.path.join(m.path, "bin/all"), "rb") as f:
        assert f.read() == all_bytes


def test_ordinary_tools(etcd, mount_factory, tmp):
    for ns in ("default", "kube-system"):
        for i in range(5):
            etcd.put(f"/registry/pods/{ns}/pod-{i}", f"image: nginx:{i}\nns: {ns}\n")
    m = mount_factory(["--endpoints", etcd.endpoint])
    ls = subprocess.run(["ls", os.path.join(m.path, "registry/pods/default")],
                        capture_output=True, check=True).stdout.decode().split()
    assert ls == [f"pod-{i}" for i in range(5)]
    g = subprocess.run(["grep", "-r", "nginx:3", os.path.join(m.path, "registry")],
                       capture_output=True, check=True).stdout.decode()
    assert g.count("nginx:3") == 2
    # diff -r against a copy made with cp -r: identical
    copy = os.path.join(tmp, "copy")
    subprocess.run(["cp", "-r", os.path.join(m.path, "registry"), copy], check=True)
    d = subprocess.run(["diff", "-r", copy, os.path.join(m.path, "registry")])
    assert d.returncode == 0
    etcd.put("/registry/pods/default/pod-1", "image: nginx:changed\n")
    time.sleep(0.3)
    d = subprocess.run(["diff", "-r", copy, os.path.join(m.path, "registry")],
                       capture_output=True)
    assert d.returncode == 1 and b"nginx:changed" in d.stdout
    st = subprocess.run(["stat", "-c", "%s %F", os.path.join(m.path, "registry/pods/default/pod-0")],
                        capture_output=True, check=True).stdout.decode().split(" ", 1)
    assert st[0] == str(len("image: nginx:0\nns: default\n")) and st[1].strip() == "regular file"


def test_xattrs_match_etcdctl_json(etcd, mnt):
    etcd.put("/x/y", "1")
    etcd.put("/x/y", "2")
    time.sleep(0.2)
    out = json.loads(etcd.ctl("get", "/x/y", "-w", "json"))
    kv = out["kvs"][0]
    p = os.path.join(mnt.path, "x/y")
    assert os.getxattr(p, "user.etcd.key") == b"/x/y"
    assert int(os.getxattr(p, "user.etcd.create_revision")) == kv["create_revision"]
    assert int(os.getxattr(p, "user.etcd.mod_revision")) == kv["mod_revision"]
    assert int(os.getxattr(p, "user.etcd.version")) == kv["version"]
    assert int(os.getxattr(p, "user.etcd.lease")) == kv.get("lease", 0)
    names = os.listxattr(p)
    assert "user.etcd.mod_revision" in names
    g = subprocess.run(["getfattr", "-d", p], capture_output=True, check=True).stdout.decode()
    assert 'user.etcd.key="/x/y"' in g
    # leases are reported too
    lease = etcd.ctl("lease", "grant", "600").decode().split()[1]
    etcd.ctl("put", "/x/leased", "v", "--lease", lease)
    time.sleep(0.2)
    assert int(os.getxattr(os.path.join(mnt.path, "x/leased"), "user.etcd.lease")) == int(lease, 16)


def test_large_directory(etcd, mount_factory):
    n = 10000
    etcd.put_many([(f"/big/k{i:05d}", f"v{i}") for i in range(n)])
    m = mount_factory(["--endpoints", etcd.endpoint])
    names = os.listdir(os.path.join(m.path, "big"))
    assert len(names) == n
    assert set(names) == {f"k{i:05d}" for i in range(n)}
    with open(os.path.join(m.path, "big/k09999")) as f:
        assert f.read() == "v9999"


def test_ls_l_does_not_probe_every_file(etcd, mount_factory):
    """ls -l asks every file for security.selinux and system.posix_acl_access
    and FUSE caches neither answer; ENOTSUP makes ls stop asking after the
    first (it caches "unsupported" per device). 500 files: a handful of
    requests, not 1,000 GETXATTRs."""
    n = 500
    etcd.put_many([(f"/lsl/k{i:04d}", f"v{i}") for i in range(n)])
    m = mount_factory(["--endpoints", etcd.endpoint])
    d = os.path.join(m.path, "lsl")
    out = subprocess.run(["ls", "-l", d], capture_output=True, text=True, check=True,
                         env=dict(os.environ, LC_ALL="C")).stdout
    assert len(out.splitlines()) == n + 1  # "total" line
    before = int(m.xattr("", "user.etcdfs.requests"))
    out = subprocess.run(["ls", "-l", d], capture_output=True, text=True, check=True,
                         env=dict(os.environ, LC_ALL="C")).stdout
    assert len(out.splitlines()) == n + 1
    spent = int(m.xattr("", "user.etcdfs.requests")) - before
    assert spent < 50, f"ls -l of {n} files sent {spent} requests to the daemon"


def test_writes_refused_readonly(etcd, mount_factory):
    etcd.put("/ro/x", "1")
    m = mount_factory(["--endpoints", etcd.endpoint, "-o", "ro"])
    with pytest.raises(OSError) as e:
        with open(os.path.join(m.path, "ro/x"), "w") as f:
            f.write("2")
    assert e.value.errno == errno.EROFS
    assert etcd.get("/ro/x")[0] == b"1"


def test_prefix_mount(etcd, mount_factory):
    etcd.put("/registry/pods/default/www", "pod")
    etcd.put("/registry/podsX/y", "not under the prefix")
    etcd.put("/registry/secrets/default/s", "secret")
    m = mount_factory(["--endpoints", etcd.endpoint, "--prefix", "/registry/pods"])
    assert os.listdir(m.path) == ["default"]
    with open(os.path.join(m.path, "default/www")) as f:
        assert f.read() == "pod"


@pytest.mark.no_backend
def test_unreachable_at_mount(tmp):
    from conftest import free_port
    port = free_port()
    mp = os.path.join(tmp, "m")
    os.mkdir(mp)
    t0 = time.time()
    r = subprocess.run([ETCDFS, f"--endpoints=http://127.0.0.1:{port}", "--dial-timeout=1s", mp],
                       capture_output=True, timeout=30)
    assert r.returncode != 0
    msg = r.stderr.decode()
    assert f"127.0.0.1:{port}" in msg and ("refused" in msg.lower() or "connect" in msg.lower())
    assert time.time() - t0 < 10
    assert not os.path.ismount(mp)


def test_etcd_down_then_recovers(etcd, mnt):
    etcd.put("/d/k", "before")
    time.sleep(0.3)
    p = os.path.join(mnt.path, "d/k")
    with open(p) as f:
        assert f.read() == "before"
    mnt.allowed_errors += ["etcd", "watch", "unreachable", "Connection refused"]
    etcd.stop()
    time.sleep(1.5)  # health probe notices
    t0 = time.time()
    with pytest.raises(OSError) as e:
        with open(p) as f:
            f.read()
    assert e.value.errno in (errno.EIO, errno.ETIMEDOUT)
    assert time.time() - t0 < 5  # command timeout is 2s
    # statfs and getattr of the root never need the network
    os.statvfs(mnt.path)
    os.stat(mnt.path)
    etcd.start()
    deadline = time.time() + 15
    while True:
        try:
            with open(p) as f:
                assert f.read() == "before"
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    etcd.put("/d/k", "after")
    deadline = time.time() + 10
    while time.time() < deadline:
        with open(p) as f:
            if f.read() == "after":
                break
        time.sleep(0.1)
    with open(p) as f:
        assert f.read() == "after"


def test_not_visible_to_other_users(etcd, mnt):
    etcd.put("/s/x", "secret")
    time.sleep(0.2)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "cat", os.path.join(mnt.path, "s/x")], capture_output=True)
    assert r.returncode != 0
    assert b"secret" not in r.stdout


def test_grep_reads_ahead_when_values_are_not_cached(etcd, mount_factory):
    """grep -r over a directory whose values do not fit --cache-size: the
    files come a window at a time (one range brings the next ones along),
    not one range per file, and grep finds exactly what etcd holds."""
    n = 3000
    items = []
    for i in range(n):
        mark = b"NEEDLE" if i % 7 == 0 else b"hay"
        items.append((b"/ra/d/f%05d" % i, mark + b"-%05d-" % i + b"x" * 1500))
    etcd.put_many(items)
    m = mount_factory(["--endpoints", etcd.endpoint, "--command-timeout=5s",
                       "--cache-size=1M"])
    before = int(m.xattr("", "user.etcdfs.backend_ranges"))
    misses0 = int(m.xattr("", "user.etcdfs.cache_misses"))
    r = subprocess.run(["grep", "-r", "-l", "NEEDLE", os.path.join(m.path, "ra")],
                       capture_output=True, check=True)
    ranges = int(m.xattr("", "user.etcdfs.backend_ranges")) - before
    misses = int(m.xattr("", "user.etcdfs.cache_misses")) - misses0
    ahead = int(m.xattr("", "user.etcdfs.cache_read_ahead"))
    got = sorted(os.path.basename(p) for p in r.stdout.decode().split())
    assert got == ["f%05d" % i for i in range(0, n, 7)]
    # 4.5 MB of values against a 1 MiB cache: most files were not cached
    assert misses + ahead >= n // 2, (misses, ahead)
    # a range per file would be 3,000; windows of up to 64 keys
    assert ranges <= n // 20, (ranges, misses, ahead)
    assert ahead >= n // 2, (ranges, misses, ahead)
