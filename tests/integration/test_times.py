"""File and directory times (issue #14): at mount time a Kubernetes object
shows the latest write time it records (managedFields, creationTimestamp),
a directory the latest time below it; any change seen later is "now"."""
import calendar
import json
import os
import subprocess
import time

from conftest import BUILD, wait_for

K8S = os.path.join(BUILD, "src/k8s/etcdfs-k8s")
HOUR = 3600


def pod(name, created, managed=()):
    """A protobuf Pod (encoded by etcdfs-k8s, needing nothing from ../shared)."""
    meta = {"name": name, "namespace": "default", "uid": "u-" + name,
            "creationTimestamp": iso(created)}
    if managed:
        meta["managedFields"] = [{"manager": "kubectl", "operation": "Update",
                                  "apiVersion": "v1", "time": iso(t)} for t in managed]
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}
    r = subprocess.run([K8S, "encode"], input=json.dumps(obj).encode(), capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.startswith(b"k8s\0")
    return r.stdout


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def utc(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def test_times(etcd, mount_factory):
    now = int(time.time())
    recent = now - 10 * 60  # within find -mmin -60
    times = {
        "old": utc("2020-01-01T00:00:00Z"),   # creationTimestamp only
        "mid": utc("2022-06-01T12:00:00Z"),   # managedFields later than creation
        "late": utc("2023-03-01T08:30:00Z"),  # the max of two managedFields
        "hot": recent,
    }
    etcd.put("/registry/pods/default/old", pod("old", times["old"]))
    etcd.put("/registry/pods/default/mid",
             pod("mid", utc("2021-01-01T00:00:00Z"), [times["mid"]]))
    etcd.put("/registry/pods/default/late",
             pod("late", utc("2019-01-01T00:00:00Z"),
                 [utc("2021-05-05T00:00:00Z"), times["late"]]))
    etcd.put("/registry/pods/default/hot", pod("hot", utc("2018-01-01T00:00:00Z"), [recent]))
    etcd.put("/registry/pods/other/quiet", pod("quiet", times["old"]))
    etcd.put("/plain/key", b"not kubernetes")
    m = mount_factory(["--endpoints", etcd.endpoint])
    d = os.path.join(m.path, "registry/pods/default")

    for name, t in times.items():
        st = os.stat(os.path.join(d, name))
        assert st.st_mtime == t and st.st_ctime == t, (name, st.st_mtime, t)
    # the raw bytes view has the same time
    assert os.stat(os.path.join(d, "old%raw")).st_mtime == times["old"]
    # a directory shows the latest time below it; other keys the mount time
    assert os.stat(d).st_mtime == recent
    assert os.stat(os.path.join(m.path, "registry/pods/other")).st_mtime == times["old"]
    assert os.stat(os.path.join(m.path, "registry/pods")).st_mtime == recent
    plain = os.stat(os.path.join(m.path, "plain/key")).st_mtime
    assert abs(plain - time.time()) < 60, "a non-Kubernetes key has the mount time"

    ls = subprocess.run(["ls", "-t", d], capture_output=True, check=True, text=True)
    assert ls.stdout.split() == ["hot", "late", "mid", "old"]
    ls = subprocess.run(["ls", "-lt", "--time-style=+%Y-%m-%d", d], capture_output=True,
                        check=True, text=True)
    assert "2020-01-01 old" in ls.stdout and "2023-03-01 late" in ls.stdout

    def find(*pred):
        r = subprocess.run(["find", d, "-type", "f"] + list(pred), capture_output=True,
                           check=True, text=True)
        return sorted(os.path.basename(p) for p in r.stdout.split())

    assert find("-mmin", "-60") == ["hot"]
    assert find("-mmin", "+60") == ["late", "mid", "old"]
    assert find("-newermt", "2022-01-01") == ["hot", "late", "mid"]

    # an external put moves the file's time to now, even though the object
    # still records 2020
    before = time.time()
    etcd.put("/registry/pods/default/old", pod("old", times["old"], [times["old"]]))
    p = os.path.join(d, "old")
    assert wait_for(lambda: os.stat(p).st_mtime >= before - 1)
    assert os.stat(p).st_mtime <= time.time() + 1
    assert find("-mmin", "-60") == ["hot", "old"]
    assert subprocess.run(["ls", "-t", d], capture_output=True, text=True).stdout.split()[0] \
        == "old"
    # no entry came or went: the directory keeps its time
    assert os.stat(d).st_mtime == recent

    # a new entry moves the directory, and so does one vanishing
    before = time.time()
    etcd.put("/registry/pods/other/new", pod("new", times["old"]))
    o = os.path.join(m.path, "registry/pods/other")
    assert wait_for(lambda: os.stat(o).st_mtime >= before - 1)
    assert abs(os.stat(os.path.join(o, "new")).st_mtime - time.time()) < 30
    time.sleep(1.1)
    before = time.time()
    etcd.delete("/registry/pods/other/quiet")
    assert wait_for(lambda: os.stat(o).st_mtime >= before - 0.01)


def times_of(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_ctime_ns


def test_last_close_moves_no_time_as_on_tmpfs(etcd, mount_factory, tmp):
    """A file created (or truncated) with nothing written is saved at its last close, which for
    the kernel's RELEASE comes after close() returned: that save moved the file's ctime (and,
    when the watch delivered the put first, mtime) to the moment it landed, long after the
    create, where tmpfs moves no time at close (the model test's seed 11 found it). Two handles
    make the late save deterministic: the first close only flushes, the second commits."""
    oracle = os.path.join(tmp, "tmpfs")
    os.mkdir(oracle)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", oracle], check=True)
    try:
        m = mount_factory(["--endpoints", etcd.endpoint, "--prefix", "/t"])
        for root in (oracle, m.path):
            for name, flags in (("new", os.O_CREAT), ("trunc", os.O_TRUNC)):
                p = os.path.join(root, name)
                if flags == os.O_TRUNC:
                    with open(p, "wb") as f:
                        f.write(b"old content\n")
                    time.sleep(0.05)
                a = os.open(p, os.O_WRONLY | flags, 0o644)
                b = os.open(p, os.O_WRONLY)
                os.close(a)
                before = times_of(p)
                time.sleep(0.2)  # the save below lands 200 ms after the change
                os.close(b)
                time.sleep(0.2)  # the RELEASE, sent after close() returned, has landed
                after = times_of(p)
                assert after == before, (root, name, before, after)
                assert os.path.getsize(p) == 0, (root, name)
        assert etcd.get("/t/new")[0] == b"" and etcd.get("/t/trunc")[0] == b""
    finally:
        subprocess.run(["umount", oracle])
