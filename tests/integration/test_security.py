"""Security: Secrets are 0600, the mount is private to its owner, passwords
stay out of ps and the log, TLS is verified by default, and read-only
mounts refuse every write call. See docs/reliability.md."""
import errno
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import ETCDFS, Etcd, openssl

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(*cmd):
    r = subprocess.run(NOBODY + list(cmd), capture_output=True, timeout=30)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


@pytest.fixture
def public_dir():
    """A directory every user may traverse, so that a refusal seen by
    another user comes from the mount and not from the path to it."""
    d = tempfile.mkdtemp(prefix="etcdfs-pub-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def public_mount(mount_factory, public_dir, args):
    m = mount_factory(args, start=False)
    m.path = tempfile.mkdtemp(prefix="mnt-", dir=public_dir)
    os.chmod(m.path, 0o755)
    m.start()
    return m


# ---------------------------------------------------------------- Secrets

def test_secrets_are_0600(etcd, mount_factory):
    etcd.put("/app/secrets/db", "password=hunter2\n")
    etcd.put("/app/secrets/sub/deep", "x")
    etcd.put("/app/cfg", "plain\n")
    m = mount_factory(["--endpoints", etcd.endpoint])
    mode = lambda rel: os.stat(os.path.join(m.path, rel)).st_mode & 0o7777
    assert mode("app/secrets/db") == 0o600
    assert mode("app/secrets/sub/deep") == 0o600
    assert mode("app/cfg") == 0o644
    # listings agree with stat (readdirplus fills attributes too)
    out = subprocess.run(["ls", "-l", os.path.join(m.path, "app/secrets")], capture_output=True,
                         check=True).stdout.decode()
    assert "-rw------- " in out and "-rw-r--r--" not in out, out


def test_kubernetes_secrets_have_no_group_or_other_bits(etcd, mount_factory):
    etcd.put("/registry/secrets/default/token", "k8s secret bytes")
    etcd.put("/registry/configmaps/default/cm", "k8s configmap bytes")
    ro = mount_factory(["--endpoints", etcd.endpoint])  # read-only: Kubernetes keyspace
    rw = mount_factory(["--endpoints", etcd.endpoint, "-o", "rw"])
    for m, want in ((ro, 0o400), (rw, 0o600)):
        st = os.stat(os.path.join(m.path, "registry/secrets/default/token"))
        assert st.st_mode & 0o7777 == want, (m.args, oct(st.st_mode))
        st = os.stat(os.path.join(m.path, "registry/configmaps/default/cm"))
        assert st.st_mode & 0o077 != 0  # only Secrets are private


def test_rejected_save_of_a_secret_is_kept_privately(etcd, mount_factory, tmp):
    """A conflicting save lands in --conflict-dir: created 0700, file 0600."""
    etcd.put("/app/secrets/db", "v1")
    cdir = os.path.join(tmp, "conflicts")
    m = mount_factory(["--endpoints", etcd.endpoint, "--conflict-dir", cdir])
    m.allowed_errors += ["conflict:"]
    f = open(os.path.join(m.path, "app/secrets/db"), "r+")
    f.read()
    etcd.put("/app/secrets/db", "v2 by someone else")
    f.seek(0)
    f.write("my secret edit")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.ESTALE
    assert os.stat(cdir).st_mode & 0o777 == 0o700
    files = sorted(os.listdir(cdir))
    assert len(files) == 2 and files[1] == files[0] + ".why"  # the copy and why
    for name in files:
        assert os.stat(os.path.join(cdir, name)).st_mode & 0o777 == 0o600
    p = os.path.join(cdir, files[0])
    with open(p) as s:
        assert s.read() == "my secret edit"
    assert "my secret edit" not in m.log()


# ---------------------------------------------------------------- private mount

def test_mount_private_to_its_owner(etcd, mount_factory, public_dir):
    etcd.put("/app/cfg", "plain\n")
    m = public_mount(mount_factory, public_dir, ["--endpoints", etcd.endpoint])
    # the path up to the mount is open to nobody: a refusal is the mount's
    rc, _, err = as_nobody("stat", public_dir)
    assert rc == 0, err
    for cmd in (["stat", m.path], ["ls", m.path], ["cat", os.path.join(m.path, "app/cfg")],
                ["sh", "-c", f"echo x > {m.path}/app/cfg"]):
        rc, out, err = as_nobody(*cmd)
        assert rc != 0 and "Permission denied" in err, (cmd, rc, out, err)
    assert etcd.get("/app/cfg")[0] == b"plain\n"
    # the owner is not affected
    with open(os.path.join(m.path, "app/cfg")) as f:
        assert f.read() == "plain\n"


def test_allow_other_lets_others_read_plain_keys(etcd, mount_factory, public_dir):
    etcd.put("/app/cfg", "plain\n")
    m = public_mount(mount_factory, public_dir,
                     ["--endpoints", etcd.endpoint, "-o", "allow_other"])
    rc, out, err = as_nobody("cat", os.path.join(m.path, "app/cfg"))
    assert rc == 0 and out == b"plain\n", err
    rc, out, err = as_nobody("ls", os.path.join(m.path, "app"))
    assert rc == 0 and out.split() == [b"cfg"], err


# ---------------------------------------------------------------- credentials

PASSWORD = "S3cret-pw-7d1f"


@pytest.fixture
def auth_etcd(etcd):
    etcd.put("/auth/k", "behind auth")
    etcd.ctl("user", "add", f"root:{PASSWORD}")
    etcd.ctl("auth", "enable")
    yield etcd
    etcd.ctl("--user", f"root:{PASSWORD}", "auth", "disable")


def ps_output():
    return subprocess.run(["ps", "-eo", "pid,args", "ww"], capture_output=True,
                          check=True).stdout.decode(errors="replace")


def assert_password_hidden(m):
    with open(os.path.join(m.path, "auth/k")) as f:
        assert f.read() == "behind auth"  # authenticated for real
    pid = m.proc.pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert PASSWORD.encode() not in f.read()
    assert str(pid) in ps_output() and PASSWORD not in ps_output()
    assert PASSWORD not in m.log()


def test_password_file_not_in_ps_or_log(auth_etcd, mount_factory, tmp):
    pwf = os.path.join(tmp, "pw")
    with open(pwf, "w") as f:
        f.write(PASSWORD + "\n")
    os.chmod(pwf, 0o600)
    m = mount_factory(["--endpoints", auth_etcd.endpoint, "--user", "root",
                       "--password-file", pwf])
    assert_password_hidden(m)
    # the debug log (every request) does not carry it either
    d = mount_factory(["--endpoints", auth_etcd.endpoint, "--user", "root",
                       "--password-file", pwf, "-d"])
    assert_password_hidden(d)
    assert "debug" in d.log()


def test_password_from_environment_not_in_ps_or_log(auth_etcd, mount_factory, monkeypatch):
    monkeypatch.setenv("ETCDCTL_PASSWORD", PASSWORD)
    m = mount_factory(["--endpoints", auth_etcd.endpoint, "--user", "root"], start=False)
    m.start()
    monkeypatch.delenv("ETCDCTL_PASSWORD")
    assert_password_hidden(m)


def test_wrong_password_file_fails_clearly(auth_etcd, tmp):
    pwf = os.path.join(tmp, "pw")
    with open(pwf, "w") as f:
        f.write("not-the-password\n")
    mp = os.path.join(tmp, "mp")
    os.mkdir(mp)
    r = subprocess.run([ETCDFS, "--endpoints", auth_etcd.endpoint, "--user", "root",
                        "--password-file", pwf, mp], capture_output=True, timeout=30)
    assert r.returncode != 0
    assert "not-the-password" not in r.stderr.decode()
    assert not os.path.ismount(mp)
    r = subprocess.run([ETCDFS, "--endpoints", auth_etcd.endpoint, "--user", "root",
                        "--password-file", os.path.join(tmp, "missing"), mp],
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and "password-file" in r.stderr.decode()


# ---------------------------------------------------------------- TLS

def test_tls_verified_by_default(tmp, mount_factory):
    """A server certificate from a CA the system does not trust is refused
    unless --cacert names the CA (or verification is explicitly skipped)."""
    d = os.path.join(tmp, "pki")
    os.mkdir(d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key",
            "-out", "ca.crt", "-subj", "/CN=test-ca", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=server", cwd=d)
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "server.crt", "-extfile", "ext", cwd=d)
    p = lambda n: os.path.join(d, n)
    e = Etcd(tmp, extra_args=["--cert-file", p("server.crt"), "--key-file", p("server.key")])
    e.endpoint = e.endpoint.replace("http://", "https://")
    e.extra_args += ["--listen-client-urls", e.endpoint, "--advertise-client-urls", e.endpoint]
    e.ctl_args = lambda: ["etcdctl", "--endpoints", e.endpoint, "--cacert", p("ca.crt")]
    e.start()
    try:
        e.ctl("put", "/tls/k", "over tls")
        mp = os.path.join(tmp, "mp")
        os.mkdir(mp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        r = subprocess.run([ETCDFS, "--endpoints", e.endpoint, mp], capture_output=True,
                           timeout=30, env=env)
        assert r.returncode != 0
        msg = r.stderr.decode().lower()
        assert "certificate" in msg or "ssl" in msg or "tls" in msg, msg
        assert not os.path.ismount(mp)
        m = mount_factory(["--endpoints", e.endpoint, "--cacert", p("ca.crt")])
        with open(os.path.join(m.path, "tls/k")) as f:
            assert f.read() == "over tls"
        m2 = mount_factory(["--endpoints", e.endpoint, "--insecure-skip-tls-verify"])
        with open(os.path.join(m2.path, "tls/k")) as f:
            assert f.read() == "over tls"
        # unmount while this etcd still runs (it is not the fixture's)
        m.stop()
        m2.stop()
    finally:
        e.stop()


# ---------------------------------------------------------------- read-only

def write_calls(m, rel_file, rel_empty_dir):
    """Every call that could change something, on an existing key."""
    p = os.path.join(m.path, rel_file)
    d = os.path.join(m.path, rel_empty_dir)
    return {
        "open O_WRONLY": lambda: os.open(p, os.O_WRONLY),
        "open O_RDWR": lambda: os.open(p, os.O_RDWR),
        "open O_APPEND": lambda: os.open(p, os.O_WRONLY | os.O_APPEND),
        "open O_TRUNC": lambda: os.open(p, os.O_WRONLY | os.O_TRUNC),
        "create": lambda: os.open(p + ".new", os.O_CREAT | os.O_WRONLY, 0o644),
        "create O_EXCL": lambda: os.open(p + ".x", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
        "mknod": lambda: os.mknod(p + ".nod", 0o644),
        "unlink": lambda: os.unlink(p),
        "rename": lambda: os.rename(p, p + ".moved"),
        "rename onto": lambda: os.rename(p, os.path.join(os.path.dirname(p), "other")),
        "mkdir": lambda: os.mkdir(p + ".dir"),
        "rmdir": lambda: os.rmdir(d),
        "truncate": lambda: os.truncate(p, 0),
        "setxattr": lambda: os.setxattr(p, "user.test", b"1"),
        "removexattr": lambda: os.removexattr(p, "user.etcd.key"),
        "symlink": lambda: os.symlink("target", p + ".lnk"),
        "symlink shadow name": lambda: os.symlink("target", os.path.join(os.path.dirname(p),
                                                                        ".#lock")),
        "link": lambda: os.link(p, p + ".hard"),
        "chmod": lambda: os.chmod(p, 0o600),
        "chown": lambda: os.chown(p, os.getuid(), os.getgid()),
        "utime": lambda: os.utime(p, (1, 1)),
    }


def not_refused(m, rel_file, rel_empty_dir, allowed):
    """Every write call that did not fail as it should: {call: "succeeded"
    or its errno's name}. A call should fail with EROFS, or with one of
    allowed[call] where allowed names it."""
    got = {}
    for name, fn in write_calls(m, rel_file, rel_empty_dir).items():
        try:
            fd = fn()
            if isinstance(fd, int):
                os.close(fd)
            got[name] = "succeeded"
        except OSError as e:
            got[name] = errno.errorcode.get(e.errno, e.errno)
    return {k: v for k, v in got.items() if v not in allowed.get(k, ("EROFS",))}


def check_refused(m, etcd, rel_file, rel_empty_dir, allowed):
    rev = etcd.revision()
    before = {k: etcd.get(k)[0] for k in etcd.keys()}
    bad = not_refused(m, rel_file, rel_empty_dir, allowed)
    assert not bad, bad
    time.sleep(0.2)  # a deferred delete would have landed by now
    assert etcd.revision() == rev
    assert {k: etcd.get(k)[0] for k in etcd.keys()} == before
    # the kernel still shows everything as it was
    assert open(os.path.join(m.path, rel_file), "rb").read() == before[b"/" + rel_file.encode()]


def test_ro_mount_refuses_every_write_call(etcd, mount_factory):
    etcd.put("/ro/k", "v")
    etcd.put("/ro/other", "o")
    etcd.put("/ro/d/x", "1")
    m = mount_factory(["--endpoints", etcd.endpoint, "-o", "ro"])
    check_refused(m, etcd, "ro/k", "ro/d", {})
    assert os.stat(os.path.join(m.path, "ro/k")).st_mode & 0o222 == 0
    # reads still work
    with open(os.path.join(m.path, "ro/d/x")) as f:
        assert f.read() == "1"


def test_revision_view_refuses_every_write_call(etcd, mount_factory):
    etcd.put("/ro/k", "v")
    etcd.put("/ro/other", "o")
    rev = etcd.put("/ro/d/x", "1")
    etcd.put("/ro/k", "newer")
    m = mount_factory(["--endpoints", etcd.endpoint, "-o", f"revision={rev}"])
    # the view shows the old value; nothing can change etcd through it
    with open(os.path.join(m.path, "ro/k")) as f:
        assert f.read() == "v"
    rev_now = etcd.revision()
    # read-only in the kernel: every call is EROFS there
    bad = not_refused(m, "ro/k", "ro/d", {})
    assert not bad, bad
    time.sleep(0.2)
    assert etcd.revision() == rev_now
    assert etcd.get("/ro/k")[0] == b"newer"


def test_kubernetes_keyspace_refuses_every_write_call(etcd, mount_factory):
    """Without -o rw a keyspace holding /registry is read-only, in the
    kernel too: every call fails with EROFS and etcd is untouched."""
    etcd.put("/registry/configmaps/default/cm", "v")
    etcd.put("/registry/configmaps/default/other", "o")
    etcd.put("/registry/configmaps/kube-system/x", "1")
    m = mount_factory(["--endpoints", etcd.endpoint])
    m.allowed_errors += ["refused"]
    check_refused(m, etcd, "registry/configmaps/default/cm", "registry/configmaps/kube-system",
                  {})
    assert "Remount with -o rw" in m.log()


# ---- regression tests for bugs found by this suite (fixed)
# docs/reliability.md, "Known bugs"); they are kept out of commits until then.

def test_secret_created_through_the_mount_is_0600(etcd, mount_factory):
    etcd.put("/app/secrets/old", "x")
    m = mount_factory(["--endpoints", etcd.endpoint])
    p = os.path.join(m.path, "app/secrets/new")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"fresh secret")
    os.close(fd)
    assert os.stat(p).st_mode & 0o7777 == 0o600
    with open(os.path.join(m.path, "app/secrets/other"), "w") as f:  # umask 022 -> 0644
        f.write("x")
    assert os.stat(os.path.join(m.path, "app/secrets/other")).st_mode & 0o7777 == 0o600


def test_allow_other_keeps_secrets_from_others(etcd, mount_factory, public_dir):
    etcd.put("/app/secrets/db", "password=hunter2\n")
    m = public_mount(mount_factory, public_dir,
                     ["--endpoints", etcd.endpoint, "-o", "allow_other"])
    rc, out, err = as_nobody("cat", os.path.join(m.path, "app/secrets/db"))
    assert rc != 0 and b"hunter2" not in out and "Permission denied" in err, (rc, out, err)


def test_allow_other_others_cannot_write(etcd, mount_factory, public_dir):
    """Files are the mount owner's, 0644: another user may read, never
    change, create or delete keys with the owner's etcd credentials."""
    etcd.put("/app/cfg", "plain\n")
    m = public_mount(mount_factory, public_dir,
                     ["--endpoints", etcd.endpoint, "-o", "allow_other"])
    rev = etcd.revision()
    for cmd in (["sh", "-c", f"echo hacked > {m.path}/app/cfg"],
                ["sh", "-c", f"echo hacked > {m.path}/app/new"],
                ["rm", "-f", f"{m.path}/app/cfg"],
                ["mv", f"{m.path}/app/cfg", f"{m.path}/app/moved"],
                ["truncate", "-s", "0", f"{m.path}/app/cfg"]):
        rc, out, err = as_nobody(*cmd)
        assert rc != 0, (cmd, out, err)
    time.sleep(0.3)
    assert etcd.revision() == rev
    assert etcd.get("/app/cfg")[0] == b"plain\n"


def test_password_from_environment_not_in_ps_environ(auth_etcd, mount_factory, monkeypatch):
    """`ps e` shows a process's environment to its owner: the daemon
    should blank ETCDCTL_PASSWORD once it has read it."""
    monkeypatch.setenv("ETCDCTL_PASSWORD", PASSWORD)
    m = mount_factory(["--endpoints", auth_etcd.endpoint, "--user", "root"], start=False)
    m.start()
    monkeypatch.delenv("ETCDCTL_PASSWORD")
    with open(os.path.join(m.path, "auth/k")) as f:
        assert f.read() == "behind auth"
    with open(f"/proc/{m.proc.pid}/environ", "rb") as f:
        assert PASSWORD.encode() not in f.read()
    out = subprocess.run(["ps", "eww", "-p", str(m.proc.pid)], capture_output=True).stdout
    assert PASSWORD.encode() not in out


def test_password_on_command_line_hidden_from_ps(auth_etcd, mount_factory):
    """--user NAME:PASSWORD and --password are accepted for etcdctl
    compatibility; the daemon should overwrite them in its argv."""
    m = mount_factory(["--endpoints", auth_etcd.endpoint, "--user", f"root:{PASSWORD}"])
    assert_password_hidden(m)
    m2 = mount_factory(["--endpoints", auth_etcd.endpoint, "--user", "root",
                        "--password", PASSWORD])
    assert_password_hidden(m2)
