"""Encrypted Kubernetes values (--encryption-config) and CBOR values through a real
mount over a real etcd. Every ciphertext is made, and every ciphertext etcdfs
writes is opened, by an implementation independent of etcdfs: the openssl
command line (aescbc), python3-cryptography (aesgcm), python3-nacl (secretbox);
CBOR values come from python3-cbor2."""
import base64
import errno
import json
import os
import subprocess
import sys

import cbor2
import pytest

from conftest import BUILD

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit", "k8s"))
from k8s_testlib import aescbc, aescbc_open, aesgcm, secretbox  # noqa: E402

K8S = os.path.join(BUILD, "src/k8s/etcdfs-k8s")

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
GCM = bytes(range(50, 82))
SB = bytes(range(200, 232))

CONFIG = f"""apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - {{name: key1, secret: {base64.b64encode(K1).decode()}}}
            - {{name: key2, secret: {base64.b64encode(K2).decode()}}}
      - aesgcm:
          keys:
            - {{name: gkey, secret: {base64.b64encode(GCM).decode()}}}
      - secretbox:
          keys:
            - {{name: sbkey, secret: {base64.b64encode(SB).decode()}}}
      - identity: {{}}
  - resources: [configmaps]
    providers:
      - kms: {{apiVersion: v2, name: vault, endpoint: "unix:///run/kms.sock"}}
      - identity: {{}}
"""


def k8s(*args, data):
    r = subprocess.run([K8S] + list(args), input=data, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def secret(name, password):
    return k8s("encode", data=f"""apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: default
  uid: 0a0a0a0a-0000-4000-8000-{abs(hash(name)) % 10**12:012d}
  creationTimestamp: "2024-03-04T05:06:07Z"
data:
  password: {base64.b64encode(password).decode()}
type: Opaque
""".encode())


WIDGET = {"apiVersion": "example.com/v1", "kind": "Widget",
          "metadata": {"name": "w1", "namespace": "default", "uid": "u-1",
                       "labels": {"app": "demo"}},
          "spec": {"replicas": 3, "ratio": 0.25, "enabled": True, "note": None,
                   "tags": ["a", "b"], "negative": -7}}


def cbor_value(obj):
    # strings as CBOR byte strings, as the apiserver writes them
    def bytes_strings(v):
        if isinstance(v, dict):
            return {k.encode(): bytes_strings(x) for k, x in v.items()}
        if isinstance(v, list):
            return [bytes_strings(x) for x in v]
        return v.encode() if isinstance(v, str) else v
    return cbor2.dumps(cbor2.CBORTag(55799, bytes_strings(obj)))


@pytest.fixture
def config(tmp):
    path = os.path.join(tmp, "enc.yaml")
    with open(path, "w") as f:
        f.write(CONFIG)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def cluster(etcd):
    plain = {n: secret(n, b"pw-" + n.encode()) for n in ("cbc", "gcm", "sb", "bad", "trunc")}
    etcd.plain = plain
    etcd.put("/registry/secrets/default/cbc", aescbc(K2, "key2", plain["cbc"]))
    etcd.put("/registry/secrets/default/gcm",
             aesgcm(GCM, "gkey", plain["gcm"], "/registry/secrets/default/gcm"))
    etcd.put("/registry/secrets/default/sb", secretbox(SB, "sbkey", plain["sb"]))
    etcd.put("/registry/secrets/default/bad", aescbc(bytes(32), "key1", plain["bad"]))
    etcd.put("/registry/secrets/default/trunc", aescbc(K1, "key1", plain["trunc"])[:-16])
    etcd.put("/registry/configmaps/default/kms", b"k8s:enc:kms:v2:vault:" + os.urandom(48))
    etcd.put("/registry/example.com/widgets/default/w1", cbor_value(WIDGET))
    return etcd


@pytest.fixture
def kmnt(cluster, config, mount_factory):
    m = mount_factory(["--endpoints", cluster.endpoint, "-o", "rw",
                       "--encryption-config", config])
    m.allowed_errors += ["refused:"]
    return m


def path(m, key):
    return os.path.join(m.path, key.lstrip("/"))


def test_read_decrypted(cluster, kmnt):
    for name in ("cbc", "gcm", "sb"):
        key = "/registry/secrets/default/" + name
        stored, kv = cluster.get(key)
        with open(path(kmnt, key), "rb") as f:
            text = f.read()
        assert text == k8s("decode", "--rv", kv["mod_revision"], data=cluster.plain[name])
        assert f"pw-{name}".encode() not in text  # data is base64, as kubectl shows it
        assert base64.b64encode(f"pw-{name}".encode()) in text
        # NAME%raw still holds the ciphertext
        with open(path(kmnt, key) + "%raw", "rb") as f:
            assert f.read() == stored
        # the file's time is the one recorded inside the encrypted object
        assert os.stat(path(kmnt, key)).st_mtime == 1709528767
        assert kmnt.xattr(key.lstrip("/"), "user.etcdfs.k8s.encryption").startswith(
            {"cbc": "aescbc:v1:key2", "gcm": "aesgcm:v1:gkey", "sb": "secretbox:v1:sbkey"}[name])


def test_wrong_key_and_truncated_give_eio(cluster, kmnt):
    for name in ("bad", "trunc"):
        with pytest.raises(OSError) as e:
            with open(path(kmnt, "/registry/secrets/default/" + name), "rb") as f:
                f.read()
        assert e.value.errno == errno.EIO
    log = kmnt.log()
    assert "/registry/secrets/default/bad: cannot decrypt: aescbc key key1 for resource " \
           "secrets" in log
    # saving over an undecryptable value is refused, and nothing is stored
    before = cluster.get("/registry/secrets/default/bad")[0]
    with pytest.raises(OSError):
        with open(path(kmnt, "/registry/secrets/default/bad"), "w") as f:
            f.write("apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad\n")
    assert cluster.get("/registry/secrets/default/bad")[0] == before


def test_save_reencrypts_with_first_provider(cluster, kmnt):
    key = "/registry/secrets/default/sb"  # stored with secretbox, the third provider
    p = path(kmnt, key)
    _, kv0 = cluster.get(key)
    with open(p) as f:
        text = f.read()
    new_pw = base64.b64encode(b"rotated!").decode()
    edited = text.replace(base64.b64encode(b"pw-sb").decode(), new_pw)
    with open(p, "w") as f:
        f.write(edited)
    stored, _ = cluster.get(key)
    prefix = b"k8s:enc:aescbc:v1:key1:"
    assert stored.startswith(prefix)
    opened = aescbc_open(K1, stored[len(prefix):])
    decoded = json.loads(k8s("decode", "-o", "json", data=opened))
    assert decoded["data"]["password"] == new_pw
    assert decoded["metadata"]["uid"].startswith("0a0a0a0a-")
    # lossless: the plaintext is the same edit made without encryption
    orig = os.path.join(os.path.dirname(kmnt.path), "sb.plain")
    with open(orig, "wb") as f:
        f.write(cluster.plain["sb"])
    assert opened == k8s("encode", "--orig", orig, "--rv", kv0["mod_revision"],
                         data=edited.encode())
    # and the mount shows the new content
    with open(p) as f:
        assert new_pw in f.read()


def test_new_secret_is_encrypted(cluster, kmnt):
    key = "/registry/secrets/default/fresh"
    with open(path(kmnt, key), "w") as f:
        f.write("apiVersion: v1\nkind: Secret\nmetadata:\n  name: fresh\n  namespace: default\n"
                "stringData:\n  token: abc\n")
    stored, _ = cluster.get(key)
    prefix = b"k8s:enc:aescbc:v1:key1:"
    assert stored.startswith(prefix)
    decoded = json.loads(k8s("decode", "-o", "json", data=aescbc_open(K1, stored[len(prefix):])))
    assert decoded["stringData"] == {"token": "abc"}


def test_kms_raw_readonly_with_xattr(cluster, kmnt):
    key = "/registry/configmaps/default/kms"
    stored, _ = cluster.get(key)
    with open(path(kmnt, key), "rb") as f:
        assert f.read() == stored
    assert kmnt.xattr(key.lstrip("/"), "user.etcdfs.k8s.encryption") == "kms:v2:vault"
    with pytest.raises(OSError):
        with open(path(kmnt, key), "ab") as f:
            f.write(b"x")
    assert cluster.get(key)[0] == stored


def test_cbor_shown_like_json_and_read_only(cluster, kmnt):
    key = "/registry/example.com/widgets/default/w1"
    stored, kv = cluster.get(key)
    p = path(kmnt, key)
    with open(p, "rb") as f:
        text = f.read()
    # the same object stored as JSON (same member order) shows the same
    as_json = json.dumps(WIDGET, separators=(",", ":")).encode() + b"\n"
    assert text == k8s("decode", "--rv", kv["mod_revision"], data=as_json)
    assert b"kind: Widget" in text and b"ratio: 0.25" in text
    with open(p + "%raw", "rb") as f:
        assert f.read() == stored
    with pytest.raises(OSError):
        with open(p, "w") as f:
            f.write(text.decode().replace("replicas: 3", "replicas: 4"))
    assert cluster.get(key)[0] == stored
    assert "round trip" in kmnt.log()


def test_loose_config_refused(cluster, config, mount_factory):
    os.chmod(config, 0o644)
    m = mount_factory(["--endpoints", cluster.endpoint, "--encryption-config", config],
                      expect_fail=True)
    assert m.proc.wait(10) != 0
    assert "chmod 600" in m.log()
    assert not os.path.ismount(m.path)


def test_fstab_option_form_and_missing_file(cluster, config, mount_factory, tmp):
    m = mount_factory(["--endpoints", cluster.endpoint, "-o", "encryption_config=" + config])
    with open(path(m, "/registry/secrets/default/gcm"), "rb") as f:
        assert base64.b64encode(b"pw-gcm") in f.read()
    missing = os.path.join(tmp, "nope.yaml")
    m2 = mount_factory(["--endpoints", cluster.endpoint, "--encryption-config", missing],
                       expect_fail=True)
    assert m2.proc.wait(10) != 0
    assert "nope.yaml" in m2.log() and not os.path.ismount(m2.path)
