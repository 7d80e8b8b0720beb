#!/usr/bin/python3
"""k8s-cbor: CBOR-stored objects through `etcdfs-k8s decode`, with values made by an
independent encoder (python3-cbor2). A CBOR object must show exactly like the same
object stored as JSON (same member order), in YAML and in JSON.

usage: test_k8s_cbor.py ETCDFS_K8S
"""
import json
import os
import subprocess
import sys
import tempfile

import cbor2

from k8s_testlib import check, summary

TOOL = sys.argv[1]


def decode(value, *args):
    p = subprocess.run([TOOL, "decode"] + list(args), input=value, capture_output=True)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def as_bytes(v):
    """Strings and keys as CBOR byte strings, as the apiserver writes them."""
    if isinstance(v, dict):
        return {as_bytes(k): as_bytes(x) for k, x in v.items()}
    if isinstance(v, list):
        return [as_bytes(x) for x in v]
    return v.encode() if isinstance(v, str) else v


def tagged(obj, **kw):
    return cbor2.dumps(cbor2.CBORTag(55799, obj), **kw)


OBJ = {
    "apiVersion": "stable.example.com/v1",
    "kind": "CronTab",
    "metadata": {"name": "my-cron", "namespace": "default", "uid": "9f1e-77",
                 "creationTimestamp": "2024-05-01T10:00:00Z",
                 "labels": {"app": "cron", "tier": "1"}, "annotations": {}},
    "spec": {"cronSpec": "* * * * */5", "image": "my-cron-image", "replicas": 3,
             "big": 9007199254740993, "negative": -42, "minInt": -9223372036854775808,
             "ratio": 0.25, "scale": 1.5, "tiny": -3.75e-05, "on": True, "off": False,
             "none": None, "list": [1, "two", [3], {"four": 4}], "empty": [],
             "multi": "line one\nline two\n", "unicode": "h\u00e9llo \u2603", "yes": "yes"},
}


def main():
    # the JSON the apiserver (Go's encoding/json) would have stored: Python
    # spells -3.75e-05 where Go writes -0.0000375
    ref_json = json.dumps(OBJ, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    ref_json = ref_json.replace(b"-3.75e-05", b"-0.0000375")
    for fmt in (["-o", "yaml"], ["-o", "json"]):
        rc, want, err = decode(ref_json, *fmt, "--rv", "12")
        check(f"reference JSON decodes {fmt[1]}", rc == 0, err)
        # canonical: keys sorted, floats in their shortest width (half,
        # single); YAML sorts keys itself, JSON keeps the stored order
        for name, value, fmts in (
                ("byte strings", tagged(as_bytes(OBJ)), "yaml json"),
                ("text strings", tagged(OBJ), "yaml json"),
                ("canonical, shortest floats", tagged(as_bytes(OBJ), canonical=True), "yaml")):
            if fmt[1] not in fmts:
                continue
            rc, out, err = decode(value, *fmt, "--rv", "12")
            check(f"{name} {fmt[1]} equals the JSON-stored object", rc == 0 and out == want,
                  err or out.decode()[:300])

    # []byte under tag 22 shows as base64, as encoding/json shows []byte
    v = tagged({b"apiVersion": b"v1", b"kind": b"Thing", b"metadata": {b"name": b"t"},
                b"blob": cbor2.CBORTag(22, b"\x00\x01\xfe")})
    rc, out, err = decode(v, "-o", "json")
    check("tag 22 bytes as base64", rc == 0 and json.loads(out)["blob"] == "AAH+", err)
    # a float that is integral prints as Go prints float64 (no ".0")
    v = tagged({b"apiVersion": b"v1", b"kind": b"Thing", b"metadata": {b"name": b"t"},
                b"f": 3.0, b"g": 1e21, b"h": 1e10}, canonical=True)
    check("half, single and double floats in the value", b"\xf9" in v and b"\xfa" in v and
          b"\xfb" in v)
    rc, out, err = decode(v, "-o", "json")
    check("floats in Go form", rc == 0 and b'"f": 3,' in out and b'"g": 1e+21' in out and
          b'"h": 10000000000' in out, err or out.decode())

    # what must not be shown: each fails, shows nothing
    refused = {
        "no self-describe tag": cbor2.dumps({b"a": 1}),
        "undefined": tagged({b"a": cbor2.undefined}),
        "NaN": tagged({b"a": float("nan")}),
        "infinity": tagged({b"a": float("inf")}),
        "integer beyond int64": tagged({b"a": 2**63}),
        "bignum": tagged({b"a": 2**64}),
        "epoch time tag": tagged({b"a": cbor2.CBORTag(1, 0)}),
        "invalid UTF-8 byte string": tagged({b"a": b"\xc3\x28"}),
        "non-string key": tagged({1: b"x"}),
        "trailing bytes": tagged({b"a": 1}) + b"\x00",
        "truncated": tagged(as_bytes(OBJ))[:-3],
        "a list at the top": tagged([1, 2]),
    }
    for name, value in refused.items():
        rc, out, err = decode(value)
        check("refused: " + name, rc != 0 and out == b"" and err, err)

    # encode refuses to write over a CBOR original
    d = tempfile.mkdtemp(prefix="k8s-cbor-")
    orig = os.path.join(d, "orig.cbor")
    with open(orig, "wb") as f:
        f.write(tagged(as_bytes(OBJ)))
    rc, text, _ = decode(tagged(as_bytes(OBJ)))
    p = subprocess.run([TOOL, "encode", "--orig", orig], input=text, capture_output=True)
    check("encode over CBOR refused, saying why", p.returncode != 0 and p.stdout == b"" and
          b"round trip" in p.stderr, p.stderr.decode())

    return summary()


if __name__ == "__main__":
    sys.exit(main())
