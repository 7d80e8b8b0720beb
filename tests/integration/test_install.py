"""Install and mount the usual ways: meson install, mount -t fuse.etcdfs,
an fstab line (mount -T), and the installed files."""
import os
import re
import subprocess

import pytest

from conftest import BUILD, ETCDFS, ROOT


def test_meson_install(tmp):
    dest = os.path.join(tmp, "dest")
    r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", dest],
                       capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    files = set()
    for d, _, fns in os.walk(dest):
        for n in fns:
            files.add(os.path.relpath(os.path.join(d, n), dest))
    for want in ("usr/local/bin/etcdfs", "usr/local/bin/etcdfs-k8s",
                 "usr/local/share/man/man1/etcdfs.1", "usr/local/share/man/man1/etcdfs-k8s.1",
                 "usr/local/sbin/mount.fuse.etcdfs",
                 "usr/local/share/bash-completion/completions/etcdfs"):
        assert want in files, sorted(files)
    r = subprocess.run(["man", "-l", os.path.join(dest, "usr/local/share/man/man1/etcdfs.1")],
                       capture_output=True, env=dict(os.environ, MANPAGER="cat", PAGER="cat"))
    assert r.returncode == 0 and b"etcdfs" in r.stdout


@pytest.fixture
def etcdfs_in_path():
    """mount(8) runs helpers with a fixed PATH: put etcdfs where it looks."""
    link = "/usr/local/bin/etcdfs"
    created = False
    if not os.path.exists(link):
        os.symlink(os.path.abspath(ETCDFS), link)
        created = True
    yield
    if created:
        os.unlink(link)


def test_mount_t_and_fstab(etcd, tmp, etcdfs_in_path):
    etcd.put("/app/color", "blue")
    m1 = os.path.join(tmp, "m1")
    os.mkdir(m1)
    r = subprocess.run(["mount", "-t", "fuse.etcdfs", etcd.endpoint, m1, "-o", "ro,prefix=/app"],
                       capture_output=True, timeout=30)
    try:
        assert r.returncode == 0, r.stderr.decode()
        # a daemonizing mount prints nothing on success but, on a machine
        # without syslog, the one line that says where its log goes
        err = r.stderr.decode()
        if os.path.exists("/dev/log"):
            assert err == ""
        else:
            assert re.fullmatch(r"etcdfs: no syslog \(/dev/log\): logging to (\S+)\n", err), err
        with open(os.path.join(m1, "color")) as f:
            assert f.read() == "blue"
    finally:
        subprocess.run(["umount", m1])
    m2 = os.path.join(tmp, "m2")
    os.mkdir(m2)
    fstab = os.path.join(tmp, "fstab")
    with open(fstab, "w") as f:
        f.write(f"{etcd.endpoint} {m2} fuse.etcdfs ro,nofail,_netdev,prefix=/app 0 0\n")
    r = subprocess.run(["mount", "-T", fstab, m2], capture_output=True, timeout=30)
    try:
        assert r.returncode == 0, r.stderr.decode()
        with open(os.path.join(m2, "color")) as f:
            assert f.read() == "blue"
    finally:
        subprocess.run(["umount", m2])


def test_mount_helper_script(etcd, tmp, etcdfs_in_path):
    etcd.put("/app/size", "3")
    m = os.path.join(tmp, "m")
    os.mkdir(m)
    helper = os.path.join(ROOT, "contrib/mount.fuse.etcdfs")
    r = subprocess.run([helper, etcd.endpoint, m, "-o", "ro,defaults,nofail,prefix=/app"],
                       capture_output=True, timeout=30)
    try:
        assert r.returncode == 0, r.stderr.decode()
        with open(os.path.join(m, "size")) as f:
            assert f.read() == "3"
    finally:
        subprocess.run(["fusermount3", "-u", m])


def test_bash_completion():
    script = os.path.join(ROOT, "contrib/bash-completion/etcdfs")
    bindir = os.path.dirname(os.path.abspath(ETCDFS))
    out = subprocess.run(["bash", "-c", f"""
source {script}
COMP_WORDS=(etcdfs --end); COMP_CWORD=1; _etcdfs; echo "${{COMPREPLY[@]}}"
COMP_WORDS=(etcdfs --format ''); COMP_CWORD=2; _etcdfs; echo "${{COMPREPLY[@]}}"
"""], capture_output=True, env=dict(os.environ, PATH=bindir + ":" + os.environ["PATH"]),
        check=True).stdout.decode().splitlines()
    assert out[0].split() == ["--endpoints"]
    assert sorted(out[1].split()) == ["json", "raw", "yaml"]
