"""What the Python tests of etcdfs-k8s share: the pass/fail report of the
k8s-crypt and k8s-cbor scripts, and the apiserver's encrypted value formats
("k8s:enc:PROVIDER:v1:KEYNAME:" + IV/nonce + ciphertext) made and opened by
implementations independent of etcdfs: the openssl command line (aescbc),
python3-cryptography (aesgcm) and python3-nacl (secretbox).
tests/integration/test_k8s_crypt.py imports it too."""
import os
import subprocess

import nacl.secret
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FAILS = []


def check(name, cond, detail=""):
    """Prints one case's result (with detail when it failed) and remembers a failure."""
    print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail and not cond else ""))
    if not cond:
        FAILS.append(name)


def summary():
    """Prints what failed, if anything; the script's exit status."""
    if FAILS:
        print(f"{len(FAILS)} failed: " + ", ".join(FAILS))
        return 1
    print("all passed")
    return 0


def aescbc(key, name, plain):
    iv = os.urandom(16)
    ct = subprocess.run(["openssl", "enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex()],
                        input=plain, capture_output=True, check=True).stdout
    return b"k8s:enc:aescbc:v1:" + name.encode() + b":" + iv + ct


def aescbc_open(key, body):
    """body: what follows the prefix (IV, then ciphertext)."""
    return subprocess.run(["openssl", "enc", "-d", "-aes-256-cbc", "-K", key.hex(), "-iv",
                           body[:16].hex()], input=body[16:], capture_output=True,
                          check=True).stdout


def aesgcm(key, name, plain, etcd_key):
    """The etcd key (a str) is the authenticated data."""
    nonce = os.urandom(12)
    return (b"k8s:enc:aesgcm:v1:" + name.encode() + b":" + nonce +
            AESGCM(key).encrypt(nonce, plain, etcd_key.encode()))


def secretbox(key, name, plain):
    # nonce + tag + ciphertext
    return (b"k8s:enc:secretbox:v1:" + name.encode() + b":" +
            bytes(nacl.secret.SecretBox(key).encrypt(plain, os.urandom(24))))
