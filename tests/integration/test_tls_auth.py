"""Foundation: TLS with client certificates, and user/password auth."""
import os
import subprocess
import time

import pytest

from conftest import ETCDFS, Etcd, openssl


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", cwd=d)


def make_cert(d, ca, name, server):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", ext, cwd=d)


@pytest.fixture
def pki(tmp):
    d = os.path.join(tmp, "pki")
    os.mkdir(d)
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_cert(d, "ca", "server", True)
    make_cert(d, "ca", "client", False)
    return d


def test_tls_client_certs(tmp, pki, mount_factory):
    p = lambda n: os.path.join(pki, n)
    e = Etcd(tmp, tls=dict(cert=p("server.crt"), key=p("server.key"), ca=p("ca.crt"),
                           client_cert=p("client.crt"), client_key=p("client.key")))
    e.start()
    m = None
    try:
        e.ctl("put", "/tls/k", "over tls")
        m = mount_factory(["--endpoints", e.endpoint, "--cacert", p("ca.crt"),
                           "--cert", p("client.crt"), "--key", p("client.key")])
        with open(os.path.join(m.path, "tls/k")) as f:
            assert f.read() == "over tls"
        # the same flags through ETCDCTL_* variables
        env = dict(os.environ, ETCDCTL_ENDPOINTS=e.endpoint, ETCDCTL_CACERT=p("ca.crt"),
                   ETCDCTL_CERT=p("client.crt"), ETCDCTL_KEY=p("client.key"))
        mp = os.path.join(tmp, "envmnt")
        os.mkdir(mp)
        proc = subprocess.Popen([ETCDFS, "-f", mp], env=env, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 20
            while not os.path.ismount(mp) and time.time() < deadline:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.05)
            with open(os.path.join(mp, "tls/k")) as f:
                assert f.read() == "over tls"
        finally:
            subprocess.run(["fusermount3", "-u", mp])
            proc.wait(10)
        # a wrong CA is refused, with a clear message, non-zero exit
        mp2 = os.path.join(tmp, "bad")
        os.mkdir(mp2)
        r = subprocess.run([ETCDFS, "--endpoints", e.endpoint, "--cacert", p("otherca.crt"),
                            "--cert", p("client.crt"), "--key", p("client.key"), mp2],
                           capture_output=True, timeout=30)
        assert r.returncode != 0
        msg = r.stderr.decode().lower()
        assert e.endpoint.lower() in msg and ("certificate" in msg or "ssl" in msg), msg
        assert not os.path.ismount(mp2)
        # without a client certificate the server refuses us
        r = subprocess.run([ETCDFS, "--endpoints", e.endpoint, "--cacert", p("ca.crt"), mp2],
                           capture_output=True, timeout=30)
        assert r.returncode != 0
    finally:
        if m:
            m.stop()  # before its etcd goes away
        e.stop()


def test_user_password(etcd, mount_factory, tmp):
    etcd.put("/auth/k", "secret value")
    etcd.ctl("user", "add", "root:rootpw")
    etcd.ctl("auth", "enable")
    try:
        m = mount_factory(["--endpoints", etcd.endpoint, "--user", "root:rootpw"])
        with open(os.path.join(m.path, "auth/k")) as f:
            assert f.read() == "secret value"
        # password from a file; it must not show in ps
        pwf = os.path.join(tmp, "pw")
        with open(pwf, "w") as f:
            f.write("rootpw\n")
        m2 = mount_factory(["--endpoints", etcd.endpoint, "--user", "root",
                            "--password-file", pwf])
        with open(os.path.join(m2.path, "auth/k")) as f:
            assert f.read() == "secret value"
        assert "rootpw" not in m2.log() and "rootpw" not in m.log()
        # a wrong password: non-zero exit, clear message
        mp = os.path.join(tmp, "wrong")
        os.mkdir(mp)
        r = subprocess.run([ETCDFS, "--endpoints", etcd.endpoint, "--user", "root:nope", mp],
                           capture_output=True, timeout=30)
        assert r.returncode != 0
        msg = r.stderr.decode().lower()
        assert "auth" in msg or "password" in msg or "permission" in msg, msg
        assert "nope" not in r.stderr.decode()
    finally:
        etcd.ctl("--user", "root:rootpw", "auth", "disable")
