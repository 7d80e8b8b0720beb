"""Command line: --help, --version, and the man page agree."""
import os
import re
import subprocess

from conftest import ETCDFS, ROOT


def test_help_and_version():
    r = subprocess.run([ETCDFS, "--help"], capture_output=True, check=True)
    assert b"usage:" in r.stdout
    r = subprocess.run([ETCDFS, "--version"], capture_output=True, check=True)
    assert r.stdout.startswith(b"etcdfs ")


def test_every_option_documented_in_man_page():
    help_text = subprocess.run([ETCDFS, "--help"], capture_output=True, check=True).stdout.decode()
    opts = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+|-[a-zA-Z]\b|-o [a-z_]+)", help_text))
    assert len(opts) > 15
    with open(os.path.join(ROOT, "docs/etcdfs.1")) as f:
        man = f.read().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fI", "")
    missing = sorted(o for o in opts if o not in man)
    assert not missing, f"options in --help but not in docs/etcdfs.1: {missing}"


def test_bad_option_values_fail_clearly(tmp):
    for bad, word in (("--cache-size=lots", "cache-size"), ("--consistency=maybe", "consistency"),
                      ("--command-timeout=soon", "command-timeout"),
                      ("--sync-pace=fast", "sync-pace"), ("--sync-pace=101", "sync-pace")):
        r = subprocess.run([ETCDFS, bad, tmp], capture_output=True, timeout=20)
        assert r.returncode != 0
        assert word in r.stderr.decode(), r.stderr


def _daemon_mount(etcd, tmp, extra, env=None):
    """Mounts etcdfs daemonized (no -f); returns (mount point, stderr)."""
    mnt = os.path.join(tmp, "dmnt")
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run([ETCDFS, "--endpoints", etcd.endpoint, "--prefix", "/logtest"] + extra +
                       [mnt], capture_output=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(mnt)
    return mnt, r.stderr.decode()


def _unmount(mnt):
    subprocess.run(["fusermount3", "-u", mnt], check=True)


def test_daemon_logs_to_its_log_file(etcd, tmp):
    """--log-file: a daemonized mount's messages (info included) reach the
    file, which is private to the owner; no syslog is needed."""
    etcd.put("/logtest/k", "v")
    log = os.path.join(tmp, "etcdfs.log")
    mnt, err = _daemon_mount(etcd, tmp, ["--log-file", log])
    try:
        with open(os.path.join(mnt, "k")) as f:
            assert f.read() == "v"
    finally:
        _unmount(mnt)
    assert os.stat(log).st_mode & 0o777 == 0o600
    with open(log) as f:
        text = f.read()
    assert "connected to " + etcd.endpoint in text, text
    assert "sync: 1 keys" in text, text


def test_daemon_without_syslog_logs_to_a_file_and_says_where(etcd, tmp):
    if os.path.exists("/dev/log"):
        import pytest
        pytest.skip("this machine has a syslog socket (/dev/log): the daemon uses syslog")
    env = dict(os.environ, XDG_RUNTIME_DIR=tmp)
    mnt, err = _daemon_mount(etcd, tmp, [], env=env)
    _unmount(mnt)
    m = re.search(r"logging to (\S+)", err)
    assert m, err
    path = m.group(1)
    # the runtime dir given (else /run/etcdfs for root)
    assert path.startswith(os.path.join(tmp, "etcdfs") + "/"), path
    assert path.endswith(mnt.replace("/", "-").strip("-") + ".log")
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        with open(path) as f:
            assert "connected to " in f.read()
    finally:
        os.unlink(path)


def _options(text):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", text))


def test_help_man_page_and_readme_agree():
    """Every option the man page or the README names for etcdfs is one
    --help lists (the reverse, --help in the man page, is checked above)."""
    help_opts = _options(subprocess.run([ETCDFS, "--help"], capture_output=True,
                                        check=True).stdout.decode())
    with open(os.path.join(ROOT, "docs/etcdfs.1")) as f:
        man = _options(f.read().replace("\\-", "-"))
    assert man - help_opts == set(), "in docs/etcdfs.1 but not in --help"
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    # the README's etcdfs command lines and its Options section
    named = set()
    for line in readme.splitlines():
        if re.match(r"^\$? ?(sudo )?(\./build/)?etcdfs ", line):
            named |= _options(line)
    section = readme.split("## Options", 1)[1].split("\n## ", 1)[0]
    named |= _options(section)
    assert len(named) >= 8
    assert named - help_opts == set(), "in the README but not in --help"


def test_transport_takes_the_equals_form(etcd, tmp):
    """--transport=json as --help writes it (it was refused: "--transport
    must be auto, grpc or json", the '=' kept in the value)."""
    etcd.put("/logtest/k", "v")
    mnt, _ = _daemon_mount(etcd, tmp, ["--transport=json"])
    try:
        with open(os.path.join(mnt, "k")) as f:
            assert f.read() == "v"
    finally:
        _unmount(mnt)
