"""etcdfs with the embedded store (--data-dir, --peers): no etcd at all.
Persistence across remounts, kill -9 while saving, a full disk, a read-only
data dir, and a three-node cluster whose leader is killed."""
import errno
import os
import random
import signal
import subprocess
import time

from conftest import ETCDFS, free_port


def mount_store(tmp, name, args, wait=True):
    mp = os.path.join(tmp, name)
    os.makedirs(mp, exist_ok=True)
    log = open(os.path.join(tmp, name + ".log"), "ab")
    p = subprocess.Popen([ETCDFS, "-f"] + args + [mp], stdout=log, stderr=log)
    if wait:
        deadline = time.time() + 30
        while not os.path.ismount(mp):
            assert p.poll() is None, open(log.name).read()
            assert time.time() < deadline, "no mount"
            time.sleep(0.05)
    return p, mp


def unmount(p, mp):
    subprocess.run(["fusermount3", "-u", mp], capture_output=True)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def test_persistent_across_remounts(tmp):
    data = os.path.join(tmp, "data")
    p, mp = mount_store(tmp, "m", ["--data-dir", data])
    os.makedirs(os.path.join(mp, "config/app"))
    for i in range(50):
        with open(os.path.join(mp, f"config/app/k{i}"), "w") as f:
            f.write(f"value {i}\n")
    subprocess.run(["sed", "-i", "s/value 7/seven/", os.path.join(mp, "config/app/k7")], check=True)
    os.unlink(os.path.join(mp, "config/app/k8"))
    time.sleep(0.2)
    unmount(p, mp)
    p, mp = mount_store(tmp, "m", ["--data-dir", data])
    try:
        names = sorted(os.listdir(os.path.join(mp, "config/app")))
        assert len(names) == 49 and "k8" not in names
        with open(os.path.join(mp, "config/app/k7")) as f:
            assert f.read() == "seven\n"
        assert int(os.getxattr(os.path.join(mp, "config/app/k7"), "user.etcd.version")) == 2
    finally:
        unmount(p, mp)


def test_kill_9_keeps_every_acknowledged_save(tmp):
    """A writer records every save that close() acknowledged; the daemon is
    killed with SIGKILL at random moments; after each restart every
    acknowledged save is there."""
    data = os.path.join(tmp, "data")
    acked = {}
    rng = random.Random(7)
    n = 0
    for round_ in range(20):
        p, mp = mount_store(tmp, "m", ["--data-dir", data])
        # everything acknowledged so far survived
        for k, v in acked.items():
            with open(os.path.join(mp, k)) as f:
                assert f.read() == v, (round_, k)
        deadline = time.time() + rng.uniform(0.05, 0.4)
        os.makedirs(os.path.join(mp, "crash"), exist_ok=True)
        while time.time() < deadline:
            k = f"crash/k{n % 40}"
            v = f"save {n}\n"
            try:
                with open(os.path.join(mp, k), "w") as f:
                    f.write(v)
                acked[k] = v
            except OSError:
                pass
            n += 1
        p.send_signal(signal.SIGKILL)
        p.wait()
        subprocess.run(["fusermount3", "-u", mp], capture_output=True)
    p, mp = mount_store(tmp, "m", ["--data-dir", data])
    try:
        for k, v in acked.items():
            with open(os.path.join(mp, k)) as f:
                assert f.read() == v
        assert len(acked) >= 20
    finally:
        unmount(p, mp)


def test_full_disk_fails_cleanly(tmp):
    small = os.path.join(tmp, "small")
    os.makedirs(small)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", small], check=True)
    try:
        p, mp = mount_store(tmp, "m", ["--data-dir", os.path.join(small, "data")])
        saved = {}
        err = None
        for i in range(5000):
            k = f"fill/k{i}"
            os.makedirs(os.path.join(mp, "fill"), exist_ok=True)
            try:
                with open(os.path.join(mp, k), "w") as f:
                    f.write("x" * 4000)
                saved[k] = "x" * 4000
            except OSError as e:
                err = e
                break
        assert err is not None, "the disk never filled"
        assert len(saved) > 10, "nothing was saved before the disk filled"
        assert err.errno in (errno.ENOSPC, errno.EIO), err
        for k, v in list(saved.items())[-5:]:
            with open(os.path.join(mp, k)) as f:
                assert f.read() == v
        unmount(p, mp)
        # everything acknowledged is intact after a restart
        subprocess.run(["mount", "-o", "remount,size=64m", small], check=True)
        p, mp = mount_store(tmp, "m", ["--data-dir", os.path.join(small, "data")])
        try:
            assert len(os.listdir(os.path.join(mp, "fill"))) >= len(saved)
            for k, v in saved.items():
                with open(os.path.join(mp, k)) as f:
                    assert f.read() == v
        finally:
            unmount(p, mp)
    finally:
        subprocess.run(["umount", small])


def test_read_only_data_dir(tmp):
    data = os.path.join(tmp, "data")
    p, mp = mount_store(tmp, "m", ["--data-dir", data])
    with open(os.path.join(mp, "k"), "w") as f:
        f.write("v")
    unmount(p, mp)
    ro = os.path.join(tmp, "ro")
    os.makedirs(ro)
    subprocess.run(["mount", "--bind", "-o", "ro", data, ro], check=True)
    try:
        mp2 = os.path.join(tmp, "m2")
        os.makedirs(mp2)
        r = subprocess.run([ETCDFS, "--data-dir", ro, mp2], capture_output=True, timeout=30)
        assert r.returncode != 0
        assert b"read-only" in r.stderr.lower() or b"not writable" in r.stderr.lower(), r.stderr
        assert not os.path.ismount(mp2)
    finally:
        subprocess.run(["umount", ro])
    # and nothing was harmed
    p, mp = mount_store(tmp, "m", ["--data-dir", data])
    try:
        with open(os.path.join(mp, "k")) as f:
            assert f.read() == "v"
    finally:
        unmount(p, mp)


def test_three_node_cluster(tmp):
    ports = [free_port() for _ in range(3)]
    peers = ",".join(f"{i + 1}=127.0.0.1:{ports[i]}:{free_port()}" for i in range(3))
    nodes = []
    for i in range(3):
        nodes.append(mount_store(tmp, f"n{i + 1}", ["--data-dir", os.path.join(tmp, f"d{i + 1}"),
                                                    "--node-id", str(i + 1), "--peers", peers],
                                 wait=False))
    try:
        for p, mp in nodes:
            deadline = time.time() + 30
            while not os.path.ismount(mp):
                assert p.poll() is None
                assert time.time() < deadline
                time.sleep(0.05)
        # a save through any node is seen through every node
        for i, (p, mp) in enumerate(nodes):
            with open(os.path.join(mp, f"from{i + 1}"), "w") as f:
                f.write(f"node {i + 1}\n")
        for p, mp in nodes:
            for i in range(3):
                path = os.path.join(mp, f"from{i + 1}")
                deadline = time.time() + 10
                while not os.path.exists(path) and time.time() < deadline:
                    time.sleep(0.05)
                with open(path) as f:
                    assert f.read() == f"node {i + 1}\n"
        # kill one node (whichever leads or not): saves continue on the others
        p, mp = nodes[0]
        p.send_signal(signal.SIGKILL)
        p.wait()
        subprocess.run(["fusermount3", "-u", mp], capture_output=True)
        ok = 0
        deadline = time.time() + 20
        while ok < 20 and time.time() < deadline:
            try:
                with open(os.path.join(nodes[1][1], f"after{ok}"), "w") as f:
                    f.write("x")
                ok += 1
            except OSError:
                time.sleep(0.2)
        assert ok == 20, "saves did not continue after a node was killed"
        path = os.path.join(nodes[2][1], "after19")
        deadline = time.time() + 10
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.05)
        assert os.path.exists(path)
    finally:
        for p, mp in nodes:
            if p.poll() is None:
                unmount(p, mp)
