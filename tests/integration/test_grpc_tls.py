"""etcdfs-server over TLS (issue 19 item 3): etcd's --cert-file, --key-file,
--trusted-ca-file and --client-cert-auth; gRPC (etcdctl, etcdfs) and the JSON gateway
on one TLS port, ALPN offering h2 and http/1.1; clients without a certificate or with
the wrong CA refused; cleartext off loopback refused unless --insecure-plaintext."""
import http.client
import json
import os
import socket
import ssl
import subprocess
import time

import pytest

from conftest import BUILD, ETCDFS, StoreServer, b64, free_port, wait_for
from test_tls_auth import make_ca, make_cert

SERVER = os.path.join(BUILD, "src/gateway/etcdfs-server")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The certificates, made once for the module: the tests only read them."""
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_cert(d, "ca", "server", True)
    make_cert(d, "ca", "client", False)
    make_cert(d, "otherca", "rogue", False)  # a client certificate from the wrong CA
    return d


class TlsStoreServer(StoreServer):
    """etcdfs-server with etcd's TLS flags, probed through etcdctl over TLS."""

    def __init__(self, tmp, pki, client_cert_auth=True, extra_args=()):
        p = lambda n: os.path.join(pki, n)
        super().__init__(tmp, extra_args, tls=dict(
            cert=p("server.crt"), key=p("server.key"), ca=p("ca.crt"),
            client_cert=p("client.crt"), client_key=p("client.key")))
        self.client_cert_auth = client_cert_auth
        self.endpoint = f"https://127.0.0.1:{self.port}"

    def _start(self):
        args = [SERVER, "--data-dir", os.path.join(self.dir, "data"),
                "--listen-client", f"127.0.0.1:{self.port}",
                "--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                "--trusted-ca-file", self.tls["ca"]] + self.extra_args
        if self.client_cert_auth:
            args.append("--client-cert-auth")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        self._await_ready(lambda: self.ctl("endpoint", "health", timeout=5), 0.1,
                          b"already in use", "etcdfs-server exited",
                          "etcdfs-server did not answer over TLS")

    def stop(self, sig=None):
        """Stops the server and checks it exited cleanly, without sanitizer reports."""
        proc = self.proc
        super().stop()
        if proc is not None:
            log = self.server_log()
            assert proc.returncode == 0, log
            assert "AddressSanitizer" not in log and "runtime error" not in log, log

    def server_log(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture
def tls_store(tmp, pki):
    s = TlsStoreServer(tmp, pki)
    s.start()
    yield s
    s.stop()


def ssl_ctx(pki, cert="client", ca="ca", alpn=("h2", "http/1.1")):
    ctx = ssl.create_default_context(cafile=os.path.join(pki, f"{ca}.crt"))
    if cert:
        ctx.load_cert_chain(os.path.join(pki, f"{cert}.crt"), os.path.join(pki, f"{cert}.key"))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def json_call(port, ctx, path, body):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    try:
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def ctl_raw(store, *args, cacert="ca", cert="client", timeout=20):
    """etcdctl against the server with chosen credentials: the CompletedProcess."""
    pki = os.path.dirname(store.tls["ca"])
    a = ["etcdctl", "--endpoints", store.endpoint, "--dial-timeout", "3s",
         "--command-timeout", "5s", "--cacert", os.path.join(pki, f"{cacert}.crt")]
    if cert:
        a += ["--cert", os.path.join(pki, f"{cert}.crt"), "--key", os.path.join(pki, f"{cert}.key")]
    return subprocess.run(a + list(args), capture_output=True, timeout=timeout,
                          env=dict(os.environ, ETCDCTL_API="3"))


def test_etcdctl_and_json_over_tls(tls_store, pki):
    s = tls_store
    s.ctl("put", "/tls/a", "over grpc")
    assert s.ctl("get", "/tls/a", "--print-value-only") == b"over grpc\n"
    st = json.loads(s.ctl("endpoint", "status", "-w", "json"))
    assert st[0]["Endpoint"] == s.endpoint
    members = json.loads(s.ctl("member", "list", "-w", "json"))["members"]
    assert members[0]["clientURLs"] == [s.endpoint], members
    # a watch streams over TLS too
    w = subprocess.Popen(s.ctl_args() + ["watch", "/tls/w"], stdout=subprocess.PIPE,
                         env=s.ctl_env())
    try:
        # the watch is created before the put: retry the put until the event shows
        out = b""
        deadline = time.time() + 20
        os.set_blocking(w.stdout.fileno(), False)
        while b"watched" not in out and time.time() < deadline:
            s.ctl("put", "/tls/w", "watched")
            time.sleep(0.3)
            out += w.stdout.read() or b""
        assert b"/tls/w\nwatched" in out, out
    finally:
        w.terminate()
        w.wait(10)
    # the JSON gateway on the same port: ALPN picks http/1.1 when the client offers only it
    ctx = ssl_ctx(pki, alpn=("http/1.1",))
    status, r = json_call(s.port, ctx, "/v3/kv/range", {"key": b64("/tls/a")})
    assert status == 200 and r["kvs"][0]["value"] == b64("over grpc"), r
    status, r = json_call(s.port, ctx, "/v3/kv/put", {"key": b64("/tls/j"), "value": b64("json")})
    assert status == 200, r
    assert s.ctl("get", "/tls/j", "--print-value-only") == b"json\n"
    # values far above one TLS record (16 KiB) both ways: JSON in, gRPC and JSON out
    big = os.urandom(1 << 20).hex()[: 1 << 20]
    status, r = json_call(s.port, ctx, "/v3/kv/put", {"key": b64("/tls/big"), "value": b64(big)})
    assert status == 200, r
    assert s.ctl("get", "/tls/big", "--print-value-only") == big.encode() + b"\n"
    status, r = json_call(s.port, ctx, "/v3/kv/range", {"key": b64("/tls/big")})
    assert status == 200 and r["kvs"][0]["value"] == b64(big)
    # and a client offering no ALPN at all still gets the gateway
    status, _ = json_call(s.port, ssl_ctx(pki, alpn=None), "/v3/kv/range", {"key": b64("x")})
    assert status == 200


def test_alpn_offers_h2_and_http11(tls_store, pki):
    for offer, chosen in [(("h2", "http/1.1"), "h2"), (("http/1.1", "h2"), "h2"),
                          (("http/1.1",), "http/1.1"), (("h2",), "h2")]:
        with socket.create_connection(("127.0.0.1", tls_store.port), timeout=10) as raw:
            with ssl_ctx(pki, alpn=offer).wrap_socket(raw, server_hostname="127.0.0.1") as t:
                assert t.selected_alpn_protocol() == chosen, offer


@pytest.mark.parametrize("transport", ["grpc", "json"])
def test_etcdfs_mounts_over_tls(tls_store, pki, mount_factory, transport):
    """etcdfs over gRPC only (HTTP/2, ALPN h2) and over the JSON gateway only (HTTP/1.1)."""
    s = tls_store
    p = lambda n: os.path.join(pki, n)
    s.ctl("put", "/m/k", "mounted over tls")
    m = mount_factory(["--endpoints", s.endpoint, "--cacert", p("ca.crt"),
                       "--cert", p("client.crt"), "--key", p("client.key"),
                       "--command-timeout=5s", "--transport", transport])
    with open(os.path.join(m.path, "m/k")) as f:
        assert f.read() == "mounted over tls"
    with open(os.path.join(m.path, "m/new"), "w") as f:
        f.write("written through etcdfs")
    assert wait_for(lambda: s.ctl("get", "/m/new", "--print-value-only")
                    == b"written through etcdfs\n", 10)
    # a change made elsewhere reaches the mount through its watch
    s.ctl("put", "/m/k", "changed")
    assert wait_for(lambda: open(os.path.join(m.path, "m/k")).read() == "changed", 10)


def test_client_without_certificate_refused(tls_store, pki):
    s = tls_store
    # etcdctl 3.4 only says "context deadline exceeded" (against etcd too)
    r = ctl_raw(s, "get", "x", cert=None)
    assert r.returncode != 0
    # etcdfs names the endpoint and the TLS failure
    mp = os.path.join(os.path.dirname(s.dir), "nocert")
    os.mkdir(mp)
    r = subprocess.run([ETCDFS, "--endpoints", s.endpoint, "--cacert", s.tls["ca"],
                        "--dial-timeout=3s", mp], capture_output=True, timeout=60)
    assert r.returncode != 0 and not os.path.ismount(mp)
    err = r.stderr.decode()
    print(err)
    assert s.endpoint in err and ("certificate" in err.lower() or "ssl" in err.lower()), err
    # a TLS client without a certificate: the handshake (TLS 1.3: the first read) fails
    with pytest.raises((ssl.SSLError, ConnectionError)):
        json_call(s.port, ssl_ctx(pki, cert=None), "/v3/kv/range", {"key": b64("x")})
    log = s.server_log()
    assert "TLS handshake with 127.0.0.1:" in log, log
    assert "did not return a certificate" in log or "certificate required" in log, log
    # the server still serves the right clients
    s.ctl("put", "/still", "ok")


def test_cleartext_client_and_silent_client(tls_store, pki):
    s = tls_store
    # a cleartext HTTP request on the TLS port gets a readable answer, as from etcd
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        answer = b""
        while True:
            b = c.recv(4096)
            if not b:
                break
            answer += b
    assert answer.startswith(b"HTTP/1.0 400") and b"HTTP request to an HTTPS server" in answer
    # a client that connects and never starts the handshake holds nothing: others are
    # served meanwhile, and the server lets it go after 10 s
    silent = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:
        t0 = time.time()
        s.ctl("put", "/served", "meanwhile")
        assert silent.recv(1) == b""
        assert 8 < time.time() - t0 < 25
    finally:
        silent.close()
    assert "a cleartext HTTP request (answered 400)" in s.server_log()
    assert "timed out" in s.server_log()


def test_wrong_ca_refused(tls_store, pki):
    s = tls_store
    # the client does not trust the server's CA
    r = ctl_raw(s, "get", "x", cacert="otherca")
    assert r.returncode != 0
    with pytest.raises(ssl.SSLCertVerificationError):
        json_call(s.port, ssl_ctx(pki, ca="otherca"), "/v3/kv/range", {"key": b64("x")})
    mp = os.path.join(os.path.dirname(s.dir), "wrongca")
    os.mkdir(mp)
    r = subprocess.run([ETCDFS, "--endpoints", s.endpoint, "--cacert", os.path.join(pki, "otherca.crt"),
                        "--cert", os.path.join(pki, "client.crt"), "--key",
                        os.path.join(pki, "client.key"), "--dial-timeout=3s", mp],
                       capture_output=True, timeout=60)
    assert r.returncode != 0 and not os.path.ismount(mp)
    err = r.stderr.decode()
    print(err)
    assert s.endpoint in err and "certificate" in err.lower(), err
    # the server does not trust the client's CA
    r = ctl_raw(s, "get", "x", cert="rogue")
    assert r.returncode != 0
    with pytest.raises((ssl.SSLError, ConnectionError)):
        json_call(s.port, ssl_ctx(pki, cert="rogue"), "/v3/kv/range", {"key": b64("x")})
    assert "client certificate refused: unable to get local issuer certificate" in \
        s.server_log(), s.server_log()


def test_trusted_ca_without_client_cert_auth(tmp, pki):
    """As etcd: without --client-cert-auth no certificate is asked for."""
    s = TlsStoreServer(tmp, pki, client_cert_auth=False)
    s.start()
    try:
        r = ctl_raw(s, "put", "k", "v", cert=None)
        assert r.returncode == 0, r.stderr
        status, _ = json_call(s.port, ssl_ctx(pki, cert=None), "/v3/kv/range", {"key": b64("k")})
        assert status == 200
    finally:
        s.stop()


def run_server(tmp, *args, wait=2.0):
    """Starts etcdfs-server; returns (proc, exited: bool) after wait seconds or its exit."""
    d = os.path.join(tmp, f"data-{time.time_ns()}")
    p = subprocess.Popen([SERVER, "--data-dir", d] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        p.wait(wait)
        return p, True
    except subprocess.TimeoutExpired:
        return p, False


def stop(p):
    p.terminate()
    p.wait(10)


def test_plaintext_refused_off_loopback(tmp, pki):
    port = free_port()
    p, exited = run_server(tmp, "--listen-client", f"0.0.0.0:{port}", wait=20)
    assert exited and p.returncode != 0
    out = p.stdout.read().decode()
    assert "refusing to serve cleartext on 0.0.0.0:" in out, out
    assert "--cert-file" in out and "--insecure-plaintext" in out, out
    # loopback stays allowed in cleartext; --insecure-plaintext allows any address
    for args in (["--listen-client", f"127.0.0.1:{port}"],
                 ["--listen-client", f"0.0.0.0:{port}", "--insecure-plaintext"]):
        p, exited = run_server(tmp, *args)
        assert not exited, p.stdout.read().decode()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", "/v3/kv/range", body=json.dumps({"key": b64("x")}))
            assert c.getresponse().status == 200
            c.close()
        finally:
            stop(p)
    # TLS needs no flag off loopback
    cp = lambda n: os.path.join(pki, n)
    p, exited = run_server(tmp, "--listen-client", f"0.0.0.0:{port}", "--cert-file",
                           cp("server.crt"), "--key-file", cp("server.key"))
    assert not exited, p.stdout.read().decode()
    try:
        status, _ = json_call(port, ssl_ctx(pki, cert=None), "/v3/kv/range", {"key": b64("x")})
        assert status == 200
    finally:
        stop(p)


def test_bad_tls_flags_refused(tmp, pki):
    cp = lambda n: os.path.join(pki, n)
    cases = [
        (["--cert-file", cp("server.crt"), "--key-file", cp("client.key")],
         "key values mismatch"),
        (["--cert-file", cp("missing.crt"), "--key-file", cp("server.key")],
         "cannot use --cert-file"),
        (["--cert-file", cp("server.crt")], "needs both --cert-file and --key-file"),
        (["--cert-file", cp("server.crt"), "--key-file", cp("server.key"),
          "--client-cert-auth"], "--client-cert-auth needs --trusted-ca-file"),
        (["--client-cert-auth", "--trusted-ca-file", cp("ca.crt")], "need --cert-file"),
    ]
    for args, msg in cases:
        p, exited = run_server(tmp, "--listen-client", f"127.0.0.1:{free_port()}", *args,
                               wait=20)
        if not exited:
            stop(p)
        out = p.stdout.read().decode()
        assert exited and p.returncode != 0 and msg in out, (args, out)


def test_stalled_tls_watcher(tls_store, pki):
    """A TLS watcher that stops reading: the relay neither spins nor drops anything, and
    every event arrives once it reads again."""
    s = tls_store
    r, w = os.pipe()
    watch = subprocess.Popen(s.ctl_args() + ["watch", "--prefix", "/s/"], stdout=w,
                             env=s.ctl_env())
    os.close(w)
    try:
        time.sleep(2)  # the watch is created
        ctx = ssl_ctx(pki, alpn=("http/1.1",))
        c = http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=60)
        value = "x" * (256 << 10)
        n = 128  # 32 MiB of events, far above the pipe, socket and relay buffers
        for i in range(n):
            c.request("POST", "/v3/kv/put", body=json.dumps(
                {"key": b64(f"/s/{i % 8}"), "value": b64(value)}))
            assert c.getresponse().read()
        c.close()
        stat = lambda: open(f"/proc/{s.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        cpu = lambda: (int(stat()[11]) + int(stat()[12])) / os.sysconf("SC_CLK_TCK")
        c0 = cpu()
        time.sleep(5)
        # a correct relay idles (0.05 s of CPU in 10 s, measured); a spinning one burns
        # whatever share of a core the loaded machine gives it
        assert cpu() - c0 < 0.5, "the server spins while its TLS watcher is stalled"
        got, deadline = 0, time.time() + 60
        os.set_blocking(r, False)
        while got < n * len(value) and time.time() < deadline:
            try:
                b = os.read(r, 1 << 20)
                got += b.count(b"x")
            except BlockingIOError:
                time.sleep(0.05)
        assert got == n * len(value)
    finally:
        watch.kill()
        watch.wait()
        os.close(r)
    s.ctl("put", "/after", "ok")
