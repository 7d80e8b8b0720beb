"""Kubernetes objects as YAML/JSON files: decode on read, lossless encode on
save, validation, and the raw bytes at NAME%raw."""
import errno
import json
import os
import subprocess
import time

import pytest

from conftest import BUILD, shared

K8S = os.path.join(BUILD, "src/k8s/etcdfs-k8s")


def k8s(*args, data):
    r = subprocess.run([K8S] + list(args), input=data, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def real(name):
    with open(shared("k8s-real/values", name), "rb") as f:
        data = f.read()
    # the .bin files hold the value as etcdctl printed it: one extra "\n"
    return data[:-1] if name.endswith(".bin") else data


def fixture_object(kind, name, namespace="default"):
    """A fixture object renamed to live at a realistic key."""
    with open(shared("k8s-fixtures/HEAD", kind + ".json")) as f:
        obj = json.load(f)
    obj["metadata"]["name"] = name
    obj["metadata"]["namespace"] = namespace
    obj["metadata"].pop("resourceVersion", None)
    return k8s("encode", data=json.dumps(obj).encode())


@pytest.fixture
def cluster(etcd):
    etcd.put("/registry/pods/default/pi-dqtsw", real("registry-pods-default-pi-dqtsw.bin"))
    etcd.put("/registry/jobs/default/pi", real("registry-jobs-default-pi.bin"))
    etcd.put("/registry/apiextensions.k8s.io/customresourcedefinitions/shirts.stable.example.com",
             real("registry-apiextensions.k8s.io-customresourcedefinitions-shirts.stable.example.com.json"))
    etcd.put("/registry/configmaps/default/app", fixture_object("core.v1.ConfigMap", "app"))
    etcd.put("/registry/secrets/default/creds", fixture_object("core.v1.Secret", "creds"))
    etcd.put("/registry/deployments/default/web",
             fixture_object("apps.v1.Deployment", "web"))
    etcd.put("/registry/stable.example.com/shirts/default/red",
             b'{"apiVersion":"stable.example.com/v1","kind":"Shirt","metadata":{"name":"red",'
             b'"namespace":"default","uid":"u1"},"spec":{"color":"red","size":"M"}}\n')
    etcd.put("/registry/secrets/default/sealed", b"k8s:enc:aescbc:v1:key1:\x00\x01opaque")
    return etcd


@pytest.fixture
def kmnt(cluster, mount_factory):
    m = mount_factory(["--endpoints", cluster.endpoint, "-o", "rw"])
    m.allowed_errors += ["refused:"]
    return m


def test_pod_as_yaml(cluster, kmnt):
    p = os.path.join(kmnt.path, "registry/pods/default/pi-dqtsw")
    with open(p, "rb") as f:
        text = f.read()
    _, kv = cluster.get("/registry/pods/default/pi-dqtsw")
    want = k8s("decode", "--rv", kv["mod_revision"], data=real("registry-pods-default-pi-dqtsw.bin"))
    assert text == want
    assert text.startswith(b"apiVersion: v1\nkind: Pod\n")
    assert f'resourceVersion: "{kv["mod_revision"]}"'.encode() in text
    assert os.stat(p).st_size == len(text)
    # the stored bytes are at NAME%raw
    with open(p + "%raw", "rb") as f:
        assert f.read() == real("registry-pods-default-pi-dqtsw.bin")


def test_grep_images(kmnt):
    r = subprocess.run(["grep", "-r", "image:", os.path.join(kmnt.path, "registry")],
                       capture_output=True)
    out = r.stdout.decode()
    assert "pods/default/pi-dqtsw:" in out and "perl" in out
    assert "deployments/default/web:" in out


def test_json_format(cluster, mount_factory):
    m = mount_factory(["--endpoints", cluster.endpoint, "--format=json"])
    with open(os.path.join(m.path, "registry/jobs/default/pi")) as f:
        obj = json.load(f)
    assert obj["kind"] == "Job" and obj["metadata"]["name"] == "pi"


def test_raw_format(cluster, mount_factory):
    m = mount_factory(["--endpoints", cluster.endpoint, "--format=raw"])
    with open(os.path.join(m.path, "registry/jobs/default/pi"), "rb") as f:
        assert f.read() == real("registry-jobs-default-pi.bin")


def test_encrypted_and_crd_values(cluster, kmnt):
    with open(os.path.join(kmnt.path, "registry/secrets/default/sealed"), "rb") as f:
        assert f.read().startswith(b"k8s:enc:aescbc")
    with pytest.raises(OSError):
        with open(os.path.join(kmnt.path, "registry/secrets/default/sealed"), "ab") as f:
            f.write(b"x")
    assert cluster.get("/registry/secrets/default/sealed")[0].startswith(b"k8s:enc:")
    crd = os.path.join(kmnt.path,
                       "registry/apiextensions.k8s.io/customresourcedefinitions/shirts.stable.example.com")
    with open(crd) as f:
        assert "kind: CustomResourceDefinition" in f.read()


def decoded(etcd, key):
    v, _ = etcd.get(key)
    return v, k8s("decode", data=v).decode()


@pytest.mark.parametrize("tool", ["sed", "vim"])
def test_edit_configmap_lossless(cluster, kmnt, tool):
    key = "/registry/configmaps/default/app"
    p = os.path.join(kmnt.path, key.lstrip("/"))
    with open(p) as f:
        before = f.read()
    assert "kind: ConfigMap" in before
    if tool == "sed":
        r = subprocess.run(["sed", "-i", "s/dataValue/edited-by-sed/", p], capture_output=True)
    else:
        r = subprocess.run(["vim", "-u", "NONE", "-i", "NONE", "-es", "+%s/dataValue/edited-by-vim/",
                            "+wq", p], capture_output=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    stored, text = decoded(cluster, key)
    assert stored.startswith(b"k8s\x00")
    assert f"edited-by-{tool}" in text
    # everything else unchanged: the stored object decodes to the original's
    # YAML with just the edit
    orig_pb = fixture_object("core.v1.ConfigMap", "app")
    orig_yaml = k8s("decode", data=orig_pb).decode()
    assert text == orig_yaml.replace("dataValue", f"edited-by-{tool}")
    # and it is byte-for-byte what a lossless encode of that edit gives
    origf = os.path.join(os.path.dirname(kmnt.path), "orig.pb")
    with open(origf, "wb") as f:
        f.write(orig_pb)
    want = k8s("encode", "--orig", origf, "--name", "app", "--namespace", "default",
               data=orig_yaml.replace("dataValue", f"edited-by-{tool}").encode())
    assert stored == want


def test_create_from_heredoc(cluster, kmnt):
    p = os.path.join(kmnt.path, "registry/configmaps/default/fresh")
    r = subprocess.run(["bash", "-c", f"""cat > {p} <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: fresh
  namespace: default
data:
  greeting: hello
EOF"""], capture_output=True)
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)
    stored, text = decoded(cluster, "/registry/configmaps/default/fresh")
    assert stored.startswith(b"k8s\x00")
    assert "greeting: hello" in text and "name: fresh" in text


def test_edit_custom_resource_json(cluster, kmnt):
    p = os.path.join(kmnt.path, "registry/stable.example.com/shirts/default/red")
    subprocess.run(["sed", "-i", "s/size: M/size: L/", p], check=True)
    stored, _ = cluster.get("/registry/stable.example.com/shirts/default/red")
    assert stored.endswith(b"\n") and stored.startswith(b"{")
    obj = json.loads(stored)
    assert obj["spec"] == {"color": "red", "size": "L"}
    assert "resourceVersion" not in obj["metadata"]


@pytest.mark.parametrize("bad,why", [
    ("s/^kind: ConfigMap/kind: [unclosed/", "line"),
    ("s/^  name: app$/  name: other/", "name"),
    ("s/^kind: ConfigMap/kind: Secret/", "kind"),
])
def test_bad_edits_refused(cluster, kmnt, bad, why):
    key = "/registry/configmaps/default/app"
    p = os.path.join(kmnt.path, key.lstrip("/"))
    before, _ = cluster.get(key)
    r = subprocess.run(["sed", "-i", bad, p], capture_output=True)
    assert r.returncode != 0
    assert cluster.get(key)[0] == before
    log = kmnt.log()
    assert "refused:" in log and why in log.split("refused:")[-1].split("; ")[0].lower()


def test_kubernetes_keyspace_read_only_without_rw(cluster, mount_factory):
    m = mount_factory(["--endpoints", cluster.endpoint])
    with pytest.raises(OSError) as e:
        open(os.path.join(m.path, "registry/configmaps/default/app"), "a")
    assert e.value.errno == errno.EROFS


NEW_OBJECTS = {
    "secret": ("registry/secrets/default/fresh-secret", """apiVersion: v1
kind: Secret
metadata:
  name: fresh-secret
  namespace: default
data:
  token: aGVsbG8=
type: Opaque
""", b"k8s\x00", "token: aGVsbG8="),
    "deployment": ("registry/deployments/default/fresh-web", """apiVersion: apps/v1
kind: Deployment
metadata:
  name: fresh-web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels:
      app: fresh-web
  template:
    metadata:
      labels:
        app: fresh-web
    spec:
      containers:
      - image: nginx:1.25
        name: web
""", b"k8s\x00", "replicas: 2"),
    "custom-resource": ("registry/stable.example.com/shirts/default/blue", """apiVersion: stable.example.com/v1
kind: Shirt
metadata:
  name: blue
  namespace: default
spec:
  color: blue
""", b"{", "color: blue"),
}


@pytest.mark.parametrize("kind", sorted(NEW_OBJECTS))
def test_create_and_edit_kinds(cluster, kmnt, kind):
    path, text, magic, marker = NEW_OBJECTS[kind]
    p = os.path.join(kmnt.path, path)
    r = subprocess.run(["bash", "-c", f"cat > {p} <<'EOF'\n{text}EOF"], capture_output=True)
    assert r.returncode == 0, r.stderr
    stored, _ = cluster.get("/" + path)
    assert stored.startswith(magic), stored[:20]
    with open(p) as f:
        shown = f.read()
    assert marker in shown
    # and edit it with vim: stored back in the same encoding
    r = subprocess.run(["vim", "-u", "NONE", "-i", "NONE", "-es", "+%s/^metadata:/metadata:\r  labels:\r    edited: \"yes\"/",
                        "+wq", p], capture_output=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    stored2, _ = cluster.get("/" + path)
    assert stored2.startswith(magic)
    if magic == b"{":
        obj = json.loads(stored2)
        assert obj["metadata"]["labels"] == {"edited": "yes"} and stored2.endswith(b"\n")
    else:
        text2 = k8s("decode", data=stored2).decode()
        assert 'edited: "yes"' in text2 and marker in text2


def test_removed_kind_decodes_and_says_so(etcd, mount_factory):
    """A kind only older releases served (PodSecurityPolicy, gone in 1.25)
    decodes through the union schema, and user.etcdfs.k8s.schema says when
    it was removed; a current kind has no such xattr."""
    with open(shared("k8s-fixtures/releases/v1.15.0/policy.v1beta1.PodSecurityPolicy.pb"),
              "rb") as f:
        etcd.put("/registry/podsecuritypolicy/restricted", f.read())
    etcd.put("/registry/configmaps/default/app", fixture_object("core.v1.ConfigMap", "app"))
    m = mount_factory(["--endpoints", etcd.endpoint])
    p = os.path.join(m.path, "registry/podsecuritypolicy/restricted")
    with open(p) as f:
        text = f.read()
    assert "kind: PodSecurityPolicy" in text and "apiVersion: policy/v1beta1" in text
    assert os.getxattr(p, "user.etcdfs.k8s.schema") == b"removed-in-1.25"
    with pytest.raises(OSError) as e:
        os.getxattr(os.path.join(m.path, "registry/configmaps/default/app"),
                    "user.etcdfs.k8s.schema")
    assert e.value.errno == errno.ENODATA
