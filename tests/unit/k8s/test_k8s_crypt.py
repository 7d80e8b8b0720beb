#!/usr/bin/python3
"""k8s-crypt: encrypted values through `etcdfs-k8s decode/encode --encryption-config`.

Every ciphertext here is made, and every ciphertext etcdfs-k8s writes is opened,
by an implementation independent of etcdfs: the openssl command line (aescbc),
python3-cryptography (aesgcm) and python3-nacl (secretbox), following the
apiserver's formats: "k8s:enc:PROVIDER:v1:KEYNAME:" + IV/nonce + ciphertext,
with the etcd key as aesgcm's authenticated data.

usage: test_k8s_crypt.py ETCDFS_K8S
"""
import base64
import json
import os
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from k8s_testlib import aescbc, aescbc_open, aesgcm, check, secretbox, summary

TOOL = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="k8s-crypt-")
KEY = "/registry/secrets/default/db"

SECRET_YAML = b"""apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: default
  uid: 2b1e0f4e-0000-4000-8000-000000000001
data:
  password: aHVudGVyMg==
type: Opaque
"""

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
GCM1 = bytes(range(50, 66))  # AES-128 for GCM
SB1 = bytes(range(200, 232))


def b64(b):
    return base64.b64encode(b).decode()


def run(args, data):
    p = subprocess.run([TOOL] + args, input=data, capture_output=True)
    err = p.stderr.decode(errors="replace")
    # key material never appears in a message
    for k in (K1, K2, GCM1, SB1):
        if b64(k) in err or k.hex() in err:
            check("no key material in: " + " ".join(args), False, err)
    return p.returncode, p.stdout, err


def write_config(text, mode=0o600, name="enc.yaml"):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


CONFIG = f"""apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: {b64(K1)}
            - name: key2
              secret: {b64(K2)}
            - name: "rot:3"
              secret: {b64(K2)}
      - aesgcm:
          keys:
            - name: gkey
              secret: {b64(GCM1)}
      - secretbox:
          keys:
            - name: sbkey
              secret: {b64(SB1)}
      - identity: {{}}
  - resources:
      - '*.apps'
    providers:
      - aesgcm:
          keys:
            - name: appskey
              secret: {b64(GCM1)}
  - resources:
      - configmaps
    providers:
      - kms:
          apiVersion: v2
          name: vault
          endpoint: unix:///run/kms.sock
"""


def main():
    cfg = write_config(CONFIG)
    enc = ["--encryption-config", cfg, "--key", KEY]

    # the plain stored Secret (protobuf) and its reference decoding
    rc, plain, err = run(["encode"], SECRET_YAML)
    check("plain secret encodes", rc == 0 and plain.startswith(b"k8s\0"), err)
    rc, want, err = run(["decode"], plain)
    check("plain secret decodes", rc == 0 and b"hunter2" not in want and b"password" in want, err)

    # each provider; aescbc with the second key of two (key rotation)
    cases = {
        "aescbc (openssl, second key of two)": aescbc(K2, "key2", plain),
        "aescbc (openssl, first key)": aescbc(K1, "key1", plain),
        "aescbc (openssl, a key name with a colon)": aescbc(K2, "rot:3", plain),
        "aesgcm (python3-cryptography)": aesgcm(GCM1, "gkey", plain, KEY),
        "secretbox (python3-nacl)": secretbox(SB1, "sbkey", plain),
        "identity": plain,
    }
    for name, blob in cases.items():
        rc, out, err = run(["decode"] + enc, blob)
        check("decode " + name, rc == 0 and out == want, err)
        rc, out, err = run(["decode", "-o", "json"] + enc, blob)
        check("decode -o json " + name,
              rc == 0 and json.loads(out)["data"]["password"] == "aHVudGVyMg==", err)

    # without the configuration an encrypted value is not decoded
    rc, out, err = run(["decode"], cases["aescbc (openssl, first key)"])
    check("no config: refused", rc != 0 and out == b"", err)

    # aesgcm authenticates the etcd key: the same value under another key fails
    rc, out, err = run(["decode", "--encryption-config", cfg, "--key",
                        "/registry/secrets/default/other"], cases["aesgcm (python3-cryptography)"])
    check("aesgcm under another etcd key: refused", rc != 0 and out == b"" and "gkey" in err, err)

    # wrong key: same name, another secret; missing key name; for each provider
    wrong = {
        "aescbc": aescbc(bytes(32), "key1", plain),
        "aesgcm": aesgcm(bytes(16), "gkey", plain, KEY),
        "secretbox": secretbox(bytes(32), "sbkey", plain),
    }
    for prov, blob in wrong.items():
        kn = blob.split(b":")[4].decode()
        rc, out, err = run(["decode"] + enc, blob)
        check(f"wrong {prov} key: refused, names key and resource",
              rc != 0 and out == b"" and kn in err and "secrets" in err, err)
    rc, out, err = run(["decode"] + enc, aescbc(K1, "nokey", plain))
    check("missing key name: refused, names it",
          rc != 0 and out == b"" and "nokey" in err and "secrets" in err, err)

    # truncated ciphertexts
    for name in ("aescbc (openssl, first key)", "aesgcm (python3-cryptography)",
                 "secretbox (python3-nacl)"):
        blob = cases[name]
        for cut in (1, 16, len(blob) - blob.index(b":", 20) - 2):
            rc, out, err = run(["decode"] + enc, blob[:-cut])
            check(f"truncated {name} by {cut}: refused", rc != 0 and out == b"", err)

    # KMS values are never decrypted; the error names the provider
    rc, out, err = run(["decode", "--encryption-config", cfg, "--key",
                        "/registry/configmaps/default/c"],
                       b"k8s:enc:kms:v2:vault:" + os.urandom(40))
    check("kms v2: refused, names provider", rc != 0 and "kms:v2:vault" in err, err)

    # a configuration readable by group or others is refused
    for mode in (0o640, 0o604, 0o644):
        loose = write_config(CONFIG, mode, "loose.yaml")
        rc, out, err = run(["decode", "--encryption-config", loose, "--key", KEY], plain)
        check(f"config mode {mode:o}: refused", rc != 0 and "chmod 600" in err, err)

    # the older spelling (kind EncryptionConfig, apiVersion v1)
    old = write_config(CONFIG.replace("apiserver.config.k8s.io/v1", "v1").replace(
        "EncryptionConfiguration", "EncryptionConfig"), name="old.yaml")
    rc, out, err = run(["decode", "--encryption-config", old, "--key", KEY],
                       cases["aescbc (openssl, second key of two)"])
    check("EncryptionConfig v1 spelling", rc == 0 and out == want, err)

    # encode re-encrypts with the first provider (aescbc) and its first key (key1)
    orig = os.path.join(TMP, "orig.bin")
    with open(orig, "wb") as f:
        f.write(cases["secretbox (python3-nacl)"])
    edited = want.replace(b"aHVudGVyMg==", b"czNjcjN0")
    rc, sealed, err = run(["encode", "--orig", orig] + enc, edited)
    prefix = b"k8s:enc:aescbc:v1:key1:"
    check("encode: aescbc key1 prefix", rc == 0 and sealed.startswith(prefix), err)
    if rc == 0 and sealed.startswith(prefix):
        opened = aescbc_open(K1, sealed[len(prefix):])
        rc3, text, _ = run(["decode"], opened)
        check("encode: openssl decrypts it to the edited Secret",
              rc3 == 0 and b"czNjcjN0" in text and b"uid: 2b1e0f4e" in text)
        plain_path = os.path.join(TMP, "plain.bin")
        with open(plain_path, "wb") as f:
            f.write(plain)
        _, expect, _ = run(["encode", "--orig", plain_path], edited)
        check("encode: plaintext is the lossless edit of the decrypted original",
              opened == expect and opened != plain)
    # a new object (no --orig) of a '*.apps' resource: aesgcm with its key as AAD
    dkey = "/registry/deployments/default/web"
    dep = (b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
           b"  namespace: default\nspec:\n  replicas: 3\n")
    rc, sealed, err = run(["encode", "--encryption-config", cfg, "--key", dkey], dep)
    p = b"k8s:enc:aesgcm:v1:appskey:"
    ok = rc == 0 and sealed.startswith(p)
    check("new deployment: aesgcm appskey", ok, err)
    if ok:
        body = sealed[len(p):]
        opened = AESGCM(GCM1).decrypt(body[:12], body[12:], dkey.encode())
        rc, newplain, _ = run(["encode"], dep)
        check("new deployment: cryptography opens it with the key as AAD",
              opened == newplain)
    # a KMS resource cannot be saved
    rc, out, err = run(["encode", "--encryption-config", cfg, "--key",
                        "/registry/configmaps/default/c"],
                       b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                       b"  namespace: default\n")
    check("kms resource: save refused", rc != 0 and out == b"" and "KMS" in err, err)
    # a resource no entry names is stored plain (the apiserver's identity default)
    rc, out, err = run(["encode", "--encryption-config", cfg, "--key",
                        "/registry/serviceaccounts/default/sa"],
                       b"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n"
                       b"  namespace: default\n")
    check("unlisted resource: plain", rc == 0 and out.startswith(b"k8s\0"), err)

    # a JSON configuration (k3s writes encryption-config.json) with wildcards:
    # "*." is the core group, "*.*" everything else; identity first stores plain
    jcfg = write_config(json.dumps({
        "kind": "EncryptionConfiguration", "apiVersion": "apiserver.config.k8s.io/v1",
        "resources": [
            {"resources": ["*."], "providers": [
                {"identity": {}},
                {"secretbox": {"keys": [{"name": "core", "secret": b64(SB1)}]}}]},
            {"resources": ["*.*"], "providers": [
                {"aesgcm": {"keys": [{"name": "all", "secret": b64(K1)}]}}]}]}),
        name="enc.json")
    core = secretbox(SB1, "core", plain)
    rc, out, err = run(["decode", "--encryption-config", jcfg, "--key", KEY], core)
    check("JSON config, '*.' covers secrets", rc == 0 and out == want, err)
    rc, out, err = run(["encode", "--encryption-config", jcfg, "--key", KEY], want)
    check("identity first: encode stores plain", rc == 0 and out == plain, err)
    # the same value under a key of another group is not the core entry's
    rc, out, err = run(["decode", "--encryption-config", jcfg, "--key",
                        "/registry/deployments/default/web"], core)
    check("'*.' does not cover deployments.apps", rc != 0 and "deployments.apps" in err, err)
    gkey = "/registry/example.com/widgets/default/w"
    rc, out, err = run(["decode", "--encryption-config", jcfg, "--key", gkey],
                       aesgcm(K1, "all", plain, gkey))
    check("'*.*' covers a custom resource (AES-256-GCM)", rc == 0 and out == want, err)

    # bad configurations are refused with a reason
    bad_cfgs = {
        "wrong kind": CONFIG.replace("EncryptionConfiguration", "Pod"),
        "short aescbc key": CONFIG.replace(b64(K1), b64(K1[:10])),
        "short secretbox key": CONFIG.replace(b64(SB1), b64(SB1[:16])),
        "unknown provider": CONFIG.replace("identity: {}", "rot13: {}"),
        "not YAML": "resources: [\n",
    }
    for name, text in bad_cfgs.items():
        path = write_config(text, name="bad.yaml")
        rc, out, err = run(["decode", "--encryption-config", path, "--key", KEY], plain)
        check("bad config refused: " + name, rc != 0 and out == b"" and "bad.yaml" in err, err)

    return summary()


if __name__ == "__main__":
    sys.exit(main())
