"""Bad input never crashes the daemon: malformed stored values are shown as
their raw bytes (or refused with a clear error on save), and the mount
stays healthy."""
import os
import subprocess
import time

import pytest

PB = b"k8s\x00"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def nested(depth):
    m = b""
    for _ in range(depth):
        m = b"\x0a" + varint(len(m)) + m
    return m


def envelope(raw, api=b"v1", kind=b"Pod"):
    typemeta = b"\x0a" + varint(len(api)) + api + b"\x12" + varint(len(kind)) + kind
    return PB + b"\x0a" + varint(len(typemeta)) + typemeta + b"\x12" + varint(len(raw)) + raw \
        + b"\x1a\x00\x22\x00"


CORPUS = {
    "truncated-protobuf": envelope(b"\x0a\x10\x0a\x03www")[:-7],
    "wrong-wire-type": envelope(b"\x0d\x01\x02\x03\x04"),           # field 1 as fixed32
    "huge-length-prefix": envelope(b"\x0a\xff\xff\xff\xff\x0f" + b"x" * 10),
    "deep-nesting-protobuf": envelope(nested(3000)),
    "magic-only": PB,
    "invalid-utf8-string": envelope(b"\x0a\x08\x0a\x06\xff\xfe\xc3\x28\xa0\xa1"),
    "json-truncated": b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"',
    "json-deep-nesting": b'{"apiVersion":"v1","kind":"ConfigMap","data":' + b"[" * 5000 + b"]" * 5000 + b"}\n",
    "json-invalid-utf8": b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"\xff\xfe"}}\n',
    "encrypted": b"k8s:enc:aescbc:v1:key1:\x00\x01\x02garbage",
    # well-formed CBOR objects are decoded now (test_k8s_crypt.py); broken ones stay raw
    "cbor-truncated": b"\xd9\xd9\xf7\xa1\x61\x61",
    "cbor-huge-declared-map": b"\xd9\xd9\xf7\xbb\x00\x00\x10\x00\x00\x00\x00\x00",
    "random-bytes": bytes(range(256)) * 4,
}


# Shown decoded, the odd parts kept as unknown fields (losslessly): a field
# of the wrong wire type, nesting below what the schema describes, and
# invalid UTF-8 in a string field.
LENIENT = {"wrong-wire-type", "deep-nesting-protobuf", "invalid-utf8-string",
           "json-invalid-utf8"}


@pytest.fixture
def bad(etcd, mount_factory):
    for name, value in CORPUS.items():
        etcd.put(f"/registry/configmaps/bad/{name}", value)
    m = mount_factory(["--endpoints", etcd.endpoint, "-o", "rw"])
    m.allowed_errors += ["refused:"]
    return m


def test_malformed_values_show_raw(etcd, bad):
    d = os.path.join(bad.path, "registry/configmaps/bad")
    assert sorted(os.listdir(d)) == sorted(CORPUS)
    for name, value in CORPUS.items():
        with open(os.path.join(d, name), "rb") as f:
            shown = f.read()
        if name in LENIENT:
            # the codec keeps a field of the wrong wire type as an unknown
            # field (losslessly) and shows the rest of the object
            assert shown.startswith(b"apiVersion: v1\nkind: "), shown[:40]
        else:
            # undecodable: the stored bytes themselves, exactly
            assert shown == value, name
        assert os.stat(os.path.join(d, name)).st_size == len(shown)
        with open(os.path.join(d, name + "%raw"), "rb") as f:
            assert f.read() == value
    # the daemon is alive and healthy after all of it
    assert bad.proc.poll() is None
    assert os.getxattr(bad.path, "user.etcdfs.watch") == b"healthy"


def test_grep_and_diff_over_malformed(etcd, bad, tmp):
    r = subprocess.run(["grep", "-r", "-c", "x", os.path.join(bad.path, "registry")],
                       capture_output=True)
    assert r.returncode in (0, 1)
    copy = os.path.join(tmp, "copy")
    subprocess.run(["cp", "-r", os.path.join(bad.path, "registry"), copy], check=True)
    assert subprocess.run(["diff", "-r", copy, os.path.join(bad.path, "registry")]).returncode == 0


def test_saving_malformed_yaml_is_refused(etcd, bad):
    etcd.put("/registry/configmaps/good/app",
             subprocess.run([os.path.join(os.environ.get("ETCDFS_BUILD", "build"),
                                          "src/k8s/etcdfs-k8s"), "encode"],
                            input=b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n"
                                  b"  namespace: good\ndata:\n  a: b\n",
                            capture_output=True, check=True).stdout)
    p = os.path.join(bad.path, "registry/configmaps/good/app")
    deadline = time.time() + 5
    while not os.path.exists(p) and time.time() < deadline:
        time.sleep(0.02)
    before, _ = etcd.get("/registry/configmaps/good/app")
    for garbage in (b"\xff\xfe\x00 not yaml: [", b"{{{{", b"a: b\n" * 10 + b"\t- bad indent\n"):
        with pytest.raises(OSError):
            with open(p, "wb") as f:
                f.write(garbage)
        assert etcd.get("/registry/configmaps/good/app")[0] == before
    assert bad.proc.poll() is None
