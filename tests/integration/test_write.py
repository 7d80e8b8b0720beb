"""Writes through etcd transactions: editors, tools, conflicts, limits."""
import errno
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import b64, prefix_end


class Watch:
    """A watch on the JSON gateway's /v3/watch stream (etcd and the embedded
    store serve it alike), recording every event during a save."""

    def __init__(self, etcd, prefix):
        import http.client
        import urllib.parse
        u = urllib.parse.urlparse(etcd.endpoint)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        body = json.dumps({"create_request": {"key": b64(prefix),
                                              "range_end": b64(prefix_end(prefix))}})
        self.conn.request("POST", "/v3/watch", body=body,
                          headers={"Content-Type": "application/json"})
        # kept: a response that ends with the connection (etcdfs-server's) takes the
        # socket from self.conn, and only shutting it down ends the reader at once
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.events = []
        self.created = threading.Event()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        assert self.created.wait(10), "watch not created"

    def _read(self):
        import base64
        try:
            for line in self.resp:
                line = line.strip()
                if not line:
                    continue
                res = json.loads(line).get("result", {})
                if res.get("created"):
                    self.created.set()
                for ev in res.get("events") or []:
                    kv = ev["kv"]
                    key = base64.b64decode(kv["key"]).decode(errors="replace")
                    if ev.get("type") == "DELETE":
                        self.events.append(("DELETE", key, None))
                    else:
                        self.events.append(("PUT", key, base64.b64decode(kv.get("value", ""))))
        except Exception:
            pass

    def stop(self, settle=0.6):
        time.sleep(settle)
        try:
            self.sock.shutdown(2)
        except Exception:
            pass
        self.conn.close()
        self.t.join(2)
        return list(self.events)


@pytest.fixture
def wmnt(etcd, mount_factory):
    etcd.put("/cfg/app.conf", "name = demo\ncolor = blue\n")
    m = mount_factory(["--endpoints", etcd.endpoint, "--command-timeout=3s"])
    m.allowed_errors += ["conflict:", "refused:"]
    return m


def assert_one_put(events, key, content):
    on_key = [e for e in events if e[1] == key]
    assert on_key == [("PUT", key, content)], events
    others = [e for e in events if e[1] != key]
    assert not others, f"auxiliary keys reached etcd: {others}"


def run_watched(etcd, args, **kw):
    """Runs a tool with a watch on every key; checks that it succeeded and
    returns the events its run caused."""
    w = Watch(etcd, "/")
    r = subprocess.run(args, capture_output=True, timeout=60, **kw)
    events = w.stop()
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return events


def assert_saved(etcd, key, path, content):
    """etcd holds content at key, and the file at path reads it."""
    assert etcd.get(key)[0] == content
    with open(path, "rb") as f:
        assert f.read() == content


EDITS = {
    "vim-default": ["vim", "-u", "/usr/share/vim/vim90/defaults.vim", "-i", "NONE", "-n", "-es",
                    "+%s/blue/green/", "+wq"],
    "vim-backupcopy-yes": ["vim", "-u", "NONE", "-i", "NONE", "-es", "+set backupcopy=yes",
                           "+set swapfile", "+%s/blue/green/", "+wq"],
    "vim-backupcopy-no": ["vim", "-u", "NONE", "-i", "NONE", "-es", "+set backupcopy=no",
                          "+set swapfile writebackup", "+%s/blue/green/", "+wq"],
    "sed": ["sed", "-i", "s/blue/green/"],
    "sed-bak": ["sed", "-i.bak", "s/blue/green/"],
    "perl": ["perl", "-pi", "-e", "s/blue/green/"],
    "emacs": ["emacs", "--batch", "--eval",
              "(progn (find-file (car command-line-args-left)) (goto-char (point-min))"
              " (while (search-forward \"blue\" nil t) (replace-match \"green\"))"
              " (save-buffer))"],
}


@pytest.mark.parametrize("tool", sorted(EDITS))
def test_editor_saves_once(etcd, wmnt, tool):
    if not shutil.which(EDITS[tool][0]):
        pytest.fail(f"{EDITS[tool][0]} is not installed")
    p = os.path.join(wmnt.path, "cfg/app.conf")
    events = run_watched(etcd, EDITS[tool] + [p], cwd=os.path.dirname(p),
                         stdin=subprocess.DEVNULL)
    want = b"name = demo\ncolor = green\n"
    assert_saved(etcd, "/cfg/app.conf", p, want)
    assert_one_put(events, "/cfg/app.conf", want)


def test_nano_saves_once(etcd, wmnt):
    """nano with locking on, driven through a real terminal (tmux)."""
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed")
    p = os.path.join(wmnt.path, "cfg/app.conf")
    w = Watch(etcd, "/")
    sess = f"nano{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", sess, "-x", "120", "-y", "30",
                    f"nano --locking {p}"], check=True)
    try:
        time.sleep(1.0)
        subprocess.run(["tmux", "send-keys", "-t", sess, "M-\\", ""], check=True)  # top
        subprocess.run(["tmux", "send-keys", "-t", sess, "C-k", ""], check=True)   # cut line 1
        subprocess.run(["tmux", "send-keys", "-t", sess, "name = edited", "Enter"], check=True)
        subprocess.run(["tmux", "send-keys", "-t", sess, "C-o", ""], check=True)
        time.sleep(0.5)
        subprocess.run(["tmux", "send-keys", "-t", sess, "Enter", ""], check=True)
        time.sleep(1.0)
        subprocess.run(["tmux", "send-keys", "-t", sess, "C-x", ""], check=True)
        time.sleep(0.5)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", sess], capture_output=True)
    events = w.stop()
    want = b"name = edited\ncolor = blue\n"
    assert etcd.get("/cfg/app.conf")[0] == want
    assert_one_put(events, "/cfg/app.conf", want)


SHELL_WRITES = {
    "cp": "printf 'new content\\n' > {tmp}/src && cp {tmp}/src {p}",
    "tee": "printf 'new content\\n' | tee {p} >/dev/null",
    "redirect": "printf 'new content\\n' > {p}",
    "install": "printf 'new content\\n' > {tmp}/src && install -m 0644 {tmp}/src {p}",
    "rsync": "printf 'new content\\n' > {tmp}/src && rsync {tmp}/src {p}",
    "mv": "printf 'new content\\n' > {d}/incoming.tmp && mv {d}/incoming.tmp {p}",
}


@pytest.mark.parametrize("tool", sorted(SHELL_WRITES))
def test_tool_writes_once(etcd, wmnt, tmp, tool):
    p = os.path.join(wmnt.path, "cfg/app.conf")
    d = os.path.dirname(p)
    cmd = SHELL_WRITES[tool].format(p=p, tmp=tmp, d=d)
    events = run_watched(etcd, ["bash", "-c", cmd])
    want = b"new content\n"
    assert_saved(etcd, "/cfg/app.conf", p, want)
    if tool == "mv":
        # a real rename: the temp name is a real key, created then moved
        on_key = [e for e in events if e[1] == "/cfg/app.conf"]
        assert on_key == [("PUT", "/cfg/app.conf", want)], events
        assert etcd.get("/cfg/incoming.tmp")[0] is None
    else:
        assert_one_put(events, "/cfg/app.conf", want)


def test_append(etcd, wmnt):
    p = os.path.join(wmnt.path, "cfg/app.conf")
    w = Watch(etcd, "/")
    subprocess.run(["bash", "-c", f"echo 'size = 3' >> {p}"], check=True)
    events = w.stop()
    want = b"name = demo\ncolor = blue\nsize = 3\n"
    assert etcd.get("/cfg/app.conf")[0] == want
    assert_one_put(events, "/cfg/app.conf", want)


def test_unchanged_save_writes_nothing(etcd, wmnt):
    p = os.path.join(wmnt.path, "cfg/app.conf")
    rev = etcd.revision()
    with open(p, "r+") as f:
        data = f.read()
        f.seek(0)
        f.write(data)
    assert etcd.revision() == rev


def test_create_excl_and_new_keys(etcd, wmnt):
    p = os.path.join(wmnt.path, "cfg/new.conf")
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b"fresh")
    os.close(fd)
    assert etcd.get("/cfg/new.conf")[0] == b"fresh"
    with pytest.raises(OSError) as e:
        os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert e.value.errno == errno.EEXIST
    # touch creates an empty key
    subprocess.run(["touch", os.path.join(wmnt.path, "cfg/empty")], check=True)
    # a file closed without any write is committed at release, which the
    # kernel sends just after the last close
    deadline = time.time() + 3
    while etcd.get("/cfg/empty")[1] is None and time.time() < deadline:
        time.sleep(0.01)
    v, kv = etcd.get("/cfg/empty")
    assert v == b"" and kv is not None
    # new directories: exist locally until a key is made under them
    os.makedirs(os.path.join(wmnt.path, "newdir/sub"))
    assert os.path.isdir(os.path.join(wmnt.path, "newdir/sub"))
    assert etcd.keys(b"/newdir") == []
    with open(os.path.join(wmnt.path, "newdir/sub/k"), "w") as f:
        f.write("v")
    assert etcd.get("/newdir/sub/k")[0] == b"v"


def test_offsets_and_truncate(etcd, wmnt):
    p = os.path.join(wmnt.path, "cfg/app.conf")
    with open(p, "r+b") as f:
        f.seek(7)
        f.write(b"DEMO")
    assert etcd.get("/cfg/app.conf")[0] == b"name = DEMO\ncolor = blue\n"
    os.truncate(p, 4)
    assert etcd.get("/cfg/app.conf")[0] == b"name"
    with open(p, "r+b") as f:
        f.truncate(2)
        f.seek(10)
        f.write(b"x")
    assert etcd.get("/cfg/app.conf")[0] == b"na" + b"\0" * 8 + b"x"
    assert os.stat(p).st_size == 11


def test_unlink_rmdir(etcd, wmnt):
    etcd.put("/cfg/sub/a", "1")
    etcd.put("/cfg/sub/b", "2")
    time.sleep(0.3)
    d = os.path.join(wmnt.path, "cfg/sub")
    with pytest.raises(OSError) as e:
        os.rmdir(d)
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(os.path.join(d, "a"))
    assert not os.path.exists(os.path.join(d, "a"))
    deadline = time.time() + 3
    while etcd.get("/cfg/sub/a")[0] is not None and time.time() < deadline:
        time.sleep(0.02)
    assert etcd.get("/cfg/sub/a")[0] is None
    subprocess.run(["rm", "-rf", d], check=True)
    assert not os.path.exists(d)
    assert etcd.keys(b"/cfg/sub/") == []


def test_rename_real_keys(etcd, wmnt):
    etcd.put("/r/a", "A")
    etcd.put("/r/b", "B")
    etcd.put("/r/c", "C")
    time.sleep(0.3)
    base = os.path.join(wmnt.path, "r")
    os.rename(os.path.join(base, "a"), os.path.join(base, "moved"))
    assert etcd.get("/r/a")[0] is None and etcd.get("/r/moved")[0] == b"A"
    with open(os.path.join(base, "moved")) as f:
        assert f.read() == "A"
    # replacing an existing key
    os.rename(os.path.join(base, "b"), os.path.join(base, "c"))
    assert etcd.get("/r/b")[0] is None and etcd.get("/r/c")[0] == b"B"
    # RENAME_NOREPLACE is honoured (mv -n / renameat2)
    etcd.put("/r/x", "X")
    etcd.put("/r/y", "Y")
    time.sleep(0.3)
    r = subprocess.run(["mv", "--no-clobber", os.path.join(base, "x"), os.path.join(base, "y")])
    assert etcd.get("/r/y")[0] == b"Y" and etcd.get("/r/x")[0] == b"X"


def test_conflict_detected(etcd, wmnt, tmp):
    p = os.path.join(wmnt.path, "cfg/app.conf")
    conflicts = os.path.join(tmp, "conflicts")
    f = open(p, "r+")
    f.read()
    etcd.put("/cfg/app.conf", "changed by someone else\n")
    f.seek(0)
    f.truncate()
    f.write("my edit\n")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.ESTALE
    assert etcd.get("/cfg/app.conf")[0] == b"changed by someone else\n"
    log = wmnt.log()
    assert "conflict: /cfg/app.conf changed since it was opened" in log
    saved = [l for l in log.splitlines() if "your version is in" in l][-1].split("your version is in ")[1]
    with open(saved.strip()) as s:
        assert s.read() == "my edit\n"


def test_oversize_value(etcd, wmnt):
    p = os.path.join(wmnt.path, "cfg/app.conf")
    with pytest.raises(OSError) as e:
        with open(p, "w") as f:
            f.write("x" * (2 * 1024 * 1024))
    assert e.value.errno == errno.EFBIG
    assert etcd.get("/cfg/app.conf")[0] == b"name = demo\ncolor = blue\n"
    assert "over etcd's request limit" in wmnt.log()


def test_lease_kept(etcd, wmnt):
    lease = etcd.ctl("lease", "grant", "600").decode().split()[1]
    etcd.ctl("put", "/cfg/event", "v1", "--lease", lease)
    time.sleep(0.3)
    with open(os.path.join(wmnt.path, "cfg/event"), "w") as f:
        f.write("v2")
    v, kv = etcd.get("/cfg/event")
    assert v == b"v2" and int(kv["lease"]) == int(lease, 16)


def test_open_unlinked_file_still_readable(etcd, wmnt):
    p = os.path.join(wmnt.path, "cfg/app.conf")
    f = open(p)
    os.unlink(p)
    assert f.read() == "name = demo\ncolor = blue\n"
    f.close()


def test_chmod_chown_utimens(etcd, wmnt):
    p = os.path.join(wmnt.path, "cfg/app.conf")
    os.chmod(p, 0o600)
    assert os.stat(p).st_mode & 0o777 == 0o600
    os.chown(p, os.getuid(), os.getgid())
    os.utime(p, (1000000000, 1000000000))
    assert int(os.stat(p).st_mtime) == 1000000000
    assert etcd.get("/cfg/app.conf")[0] == b"name = demo\ncolor = blue\n"


def test_lost_updates(etcd, wmnt):
    """4 processes x 200 read-modify-write increments, retrying on conflict."""
    p = os.path.join(wmnt.path, "cfg/counter")
    with open(p, "w") as f:
        f.write("0")
    script = r'''
import errno, os, sys
p, n = sys.argv[1], int(sys.argv[2])
ok = 0
while ok < n:
    try:
        fd = os.open(p, os.O_RDWR)
        try:
            v = int(os.read(fd, 64) or b"0")
            os.lseek(fd, 0, 0)
            os.ftruncate(fd, 0)
            os.write(fd, str(v + 1).encode())
        finally:
            os.close(fd)
        ok += 1
    except OSError as e:
        if e.errno != errno.ESTALE:
            raise
print(ok)
'''
    procs = [subprocess.Popen(["/usr/bin/python3", "-c", script, p, "200"],
                              stdout=subprocess.PIPE) for _ in range(4)]
    total = 0
    for pr in procs:
        out, _ = pr.communicate(timeout=300)
        assert pr.returncode == 0
        total += int(out)
    assert total == 800
    assert etcd.get("/cfg/counter")[0] == b"800"
    with open(p) as f:
        assert f.read() == "800"


def test_readonly_mount(etcd, mount_factory):
    etcd.put("/ro/k", "v")
    m = mount_factory(["--endpoints", etcd.endpoint, "-o", "ro"])
    p = os.path.join(m.path, "ro/k")
    for fn in (lambda: open(p, "w"), lambda: os.unlink(p), lambda: os.mkdir(p + "d"),
               lambda: os.rename(p, p + "2"), lambda: os.truncate(p, 0)):
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == errno.EROFS
    assert etcd.get("/ro/k")[0] == b"v"


def test_kubernetes_keyspace_needs_rw(etcd, mount_factory):
    etcd.put("/registry/configmaps/default/c", "v")
    m = mount_factory(["--endpoints", etcd.endpoint])
    with pytest.raises(OSError) as e:
        open(os.path.join(m.path, "registry/configmaps/default/c"), "w")
    assert e.value.errno == errno.EROFS
    assert "Remount with -o rw" in m.log()
    m2 = mount_factory(["--endpoints", etcd.endpoint, "-o", "rw"])
    with open(os.path.join(m2.path, "registry/configmaps/default/c"), "w") as f:
        f.write("v2")
    assert etcd.get("/registry/configmaps/default/c")[0] == b"v2"
