"""A third-party etcd client against etcdfs-server: the npm etcd3 package (over
@grpc/grpc-js, nobody here wrote either) runs tests/node/client.js, a short
session of put, get, watch, lease (grant, attach, automatic and single
keep-alive, time-to-live, revoke) and txn, against a real etcd and against
etcdfs-server. The values it reports are checked, and the two reports must be
equal (revisions included: both servers start fresh).

The package is installed with `npm ci` from tests/node/package-lock.json
(pinned versions and hashes) into a cache outside the repository
($ETCDFS_NODE_CACHE, default ~/.cache/etcdfs/node-<lock hash>). Without node or
npm, or without the npm registry, the test skips saying why, except under CI
(CI=true), where it fails: tools/deps.sh installs node and npm there.
"""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, Etcd, StoreServer

NODE_DIR = os.path.join(ROOT, "tests", "node")


def unavailable(why):
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Node.js client test must run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def node_modules():
    """The directory holding etcd3 and its dependencies, installed once per lock file."""
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            unavailable(f"needs {tool} (tools/deps.sh test installs it)")
    with open(os.path.join(NODE_DIR, "package-lock.json"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    base = os.environ.get("ETCDFS_NODE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "etcdfs")
    where = os.path.join(base, f"node-{digest}")
    done = os.path.join(where, ".installed")
    if not os.path.exists(done):
        os.makedirs(where, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(NODE_DIR, name), where)
        # --ignore-scripts: nothing of the packages runs at install time (the only
        # script, protobufjs's postinstall, just prints version hints)
        r = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund",
                            "--cache", os.path.join(base, "npm-cache")],
                           cwd=where, capture_output=True, timeout=300)
        if r.returncode != 0:
            unavailable("npm ci of tests/node failed (is the npm registry reachable?): "
                        + r.stderr.decode(errors="replace")[-1500:])
        open(done, "w").close()
    return os.path.join(where, "node_modules")


def session(node_modules, server):
    r = subprocess.run(["node", os.path.join(NODE_DIR, "client.js"), server.endpoint],
                       env=dict(os.environ, NODE_PATH=node_modules),
                       capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-4000:]
    return json.loads(r.stdout)


def check(r):
    """What the session must have seen, on any server."""
    assert r["get"] == "3" and r["get_missing"] is None
    assert r["prefix"] == {"node/a": "3", "node/b": "2"} and r["count"] == 2
    assert r["keys_desc"] == ["node/b", "node/a"]
    # the watch saw both puts and the delete, each with the value before it
    assert [(e["type"], e["value"], e["prev"]) for e in r["watch"]] == \
        [("put", "1", None), ("put", "2", "1"), ("delete", "", "2")]
    assert [e["mod"] for e in r["watch"]] == [5, 6, 7]
    assert [(e["value"], e["mod"]) for e in r["watch_history"]] == [("1", 2), ("3", 4)]
    # the lease: granted, attached, kept past its 3 s TTL by the client's renewals
    assert r["lease_keys"] == ["node/l/1", "node/l/2"]
    assert r["lease_keepalive_ttl"] == 3 and r["lease_keepalive_once_ttl"] == 3
    assert r["lease_keys_after_4s"] == ["node/l/1", "node/l/2"]
    assert r["lease_ttl"] == {"granted": 3, "alive": True, "keys": ["node/l/1", "node/l/2"]}
    # revoked: both keys deleted in one revision, the lease gone, never reported lost
    ev = r["lease_revoke_events"]
    assert [(e["type"], e["key"]) for e in ev] == [("delete", "node/l/1"), ("delete", "node/l/2")]
    assert ev[0]["mod"] == ev[1]["mod"]
    assert r["lease_keys_after_revoke"] == [] and r["lease_ttl_after_revoke"] == -1
    assert r["lease_lost"] == []
    # the txns: the then branch (with its range), then the else branch
    assert r["txn_then"] == {"succeeded": True, "got": ["2"]} and r["txn_then_value"] == "then"
    assert r["txn_else"]["succeeded"] is False
    assert r["txn_else_value"] == "else" and r["txn_else_b"] is None
    assert r["final"] == {"node/a": "3", "node/t": "else"}
    assert r["final_revision"] == r["txn_else"]["revision"]


def test_etcd3_npm_client(pair, node_modules):
    etcd, store = pair
    want = session(node_modules, etcd)
    check(want)
    got = session(node_modules, store)
    check(got)
    assert got == want, "\n".join(f"{k}: etcd {want.get(k)!r}, etcdfs-server {got.get(k)!r}"
                                  for k in sorted(set(want) | set(got))
                                  if want.get(k) != got.get(k))
