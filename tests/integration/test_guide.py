"""Runs every recipe of docs/guide.md, exactly as written there, against a
real etcd holding Kubernetes objects."""
import os
import re
import subprocess
import time

import pytest

from conftest import BUILD, ETCDFS, ROOT

K8S = os.path.join(BUILD, "src/k8s/etcdfs-k8s")
SAMPLE = os.path.join(ROOT, "contrib/sample")


def recipes():
    with open(os.path.join(ROOT, "docs/guide.md")) as f:
        text = f.read()
    return dict(re.findall(r"<!-- recipe: ([\w-]+) -->\n```sh\n(.*?)```", text, re.S))


def encode(yaml_text):
    r = subprocess.run([K8S, "encode"], input=yaml_text.encode(), capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def sample(name):
    with open(os.path.join(SAMPLE, name)) as f:
        return f.read()


EVENT = """apiVersion: v1
kind: Event
metadata:
  name: {name}
  namespace: shop
involvedObject:
  kind: Pod
  name: {pod}
  namespace: shop
reason: {reason}
message: {message}
type: Normal
"""


@pytest.fixture
def cluster(etcd):
    etcd.put("/registry/namespaces/shop", encode(sample("namespace-shop.yaml")))
    etcd.put("/registry/pods/shop/web-7d9f8", encode(sample("pod-web.yaml")))
    stuck = sample("pod-api.yaml").replace(
        "metadata:\n", 'metadata:\n  deletionTimestamp: "2026-11-26T10:00:00Z"\n', 1)
    etcd.put("/registry/pods/shop/api-5c6b4", encode(stuck))
    etcd.put("/registry/configmaps/shop/app-config", encode(sample("configmap-app-config.yaml")))
    etcd.put("/registry/secrets/shop/db", encode(sample("secret-db.yaml")))
    etcd.put("/registry/events/shop/web-7d9f8.1",
             encode(EVENT.format(name="web-7d9f8.1", pod="web-7d9f8", reason="Scheduled",
                                 message="assigned shop/web-7d9f8 to node-1")))
    return etcd


def run(recipe, env):
    r = subprocess.run(["bash", "-e", "-c", PRELUDE + recipe],
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr.decode() + r.stdout.decode()
    return r.stdout.decode()


# Stands in for "kubectl apply" in the time-travel recipe: creates a Pod and
# its Events straight in etcd, as the apiserver and scheduler would.
PRELUDE = r"""
kubectl_apply_stand_in() {
  for kv in "/registry/pods/shop/new-pod:$NEWPOD" "/registry/events/shop/new-pod.1:$NEWEVENT"; do
    k=${kv%%:*}; f=${kv#*:}
    curl -sf "$ENDPOINT/v3/kv/put" -d "{\"key\":\"$(printf %s "$k" | base64 -w0)\",\"value\":\"$(base64 -w0 < "$f")\"}" >/dev/null
  done
  sleep 0.3
}
"""


@pytest.fixture
def cleanup():
    yield
    for mp in ("/tmp/then", "/tmp/kv-mnt", "/tmp/backup-mnt"):
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-u", mp])
    subprocess.run(["rm", "-rf", "/tmp/kv-data", "/tmp/shop-backup"])


def test_guide_recipes(cluster, mount_factory, tmp, cleanup):
    book = recipes()
    assert set(book) == {"list-keys", "inspect-pod", "diff-revisions", "events", "images",
                         "edit-configmap", "copy-namespace", "stuck-finalizers", "standalone",
                         "backup", "history"}
    m = mount_factory(["--endpoints", cluster.endpoint, "-o", "rw"])
    newpod = os.path.join(tmp, "newpod.pb")
    with open(newpod, "wb") as f:
        f.write(encode(sample("pod-web.yaml").replace("web-7d9f8", "new-pod")))
    newevent = os.path.join(tmp, "newevent.pb")
    with open(newevent, "wb") as f:
        f.write(encode(EVENT.format(name="new-pod.1", pod="new-pod", reason="Scheduled",
                                    message="assigned shop/new-pod to node-2")))
    snap = os.path.join(tmp, "backup.db")
    cluster.ctl("snapshot", "save", snap)
    env = dict(os.environ, MNT=m.path, ENDPOINT=cluster.endpoint, NEWPOD=newpod,
               NEWEVENT=newevent, SNAPSHOT=snap,
               ETCDFS_OPTS=f"--endpoints {cluster.endpoint}",
               PATH=os.path.dirname(os.path.abspath(ETCDFS)) + ":" + os.environ["PATH"])
    subprocess.run(["rm", "-rf", "/tmp/kv-data", "/tmp/then"])

    out = run(book["list-keys"], env)
    assert "/registry/pods/shop/web-7d9f8\n" in out and "/registry/secrets/shop/db\n" in out

    out = run(book["inspect-pod"], env)
    assert "kind: Pod" in out and "name: web-7d9f8" in out
    assert 'user.etcd.key="/registry/pods/shop/web-7d9f8"' in out

    out = run(book["diff-revisions"], env)
    assert "new-pod" in out and "new-pod.1" in out
    assert "web-7d9f8" not in out

    out = run(book["events"], env)
    assert "reason: Scheduled" in out and "assigned shop/web-7d9f8 to node-1" in out

    out = run(book["images"], env)
    assert "image: nginx:1.25" in out and "image: registry.local/shop/api:2.1" in out

    out = run(book["edit-configmap"], env)
    assert "color: green" in out
    stored, _ = cluster.get("/registry/configmaps/shop/app-config")
    assert stored.startswith(b"k8s\x00") and b"green" in stored

    out = run(book["history"], env)
    lines = out.splitlines()
    revs = [int(x) for x in lines[:3]]
    assert revs == sorted(revs) and not lines[3].isdigit(), out
    assert "-  color: red" in out and "+  color: purple" in out, out
    assert "orange" not in out
    assert "registry/configmaps/shop/feature-flags" in out
    assert "registry/configmaps/shop/app-config" in out  # saved by the vim recipe
    assert "%history" not in out
    stored, kv = cluster.get("/registry/configmaps/shop/feature-flags")
    assert stored.startswith(b"k8s\x00") and int(kv["version"]) == 3

    out = run(book["copy-namespace"], env)
    assert "/tmp/shop-backup/pods/web-7d9f8" in out
    assert "/tmp/shop-backup/configmaps/app-config" in out

    out = run(book["stuck-finalizers"], env)
    assert out.strip().endswith("registry/pods/shop/api-5c6b4")
    assert "web-7d9f8" not in out

    out = run(book["standalone"], env)
    assert out.strip() == "blue"
    # the data survives a remount
    os.makedirs("/tmp/kv-mnt", exist_ok=True)
    # the first daemon releases the data dir's lock as it exits, just
    # after the unmount returns
    for _ in range(100):
        r = subprocess.run([ETCDFS, "--data-dir", "/tmp/kv-data", "/tmp/kv-mnt"],
                           capture_output=True)
        if r.returncode == 0 or b"in use" not in r.stderr.lower() + r.stdout.lower():
            break
        time.sleep(0.1)
    assert r.returncode == 0, r.stderr.decode()
    try:
        with open("/tmp/kv-mnt/config/app/color") as f:
            assert f.read() == "blue\n"
    finally:
        subprocess.run(["fusermount3", "-u", "/tmp/kv-mnt"])
        subprocess.run(["rm", "-rf", "/tmp/kv-data"])

    out = run(book["backup"], env)
    assert "pods" in out.split() and "configmaps" in out.split()
