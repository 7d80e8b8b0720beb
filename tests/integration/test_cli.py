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
                      ("--command-timeout=soon", "command-timeout")):
        r = subprocess.run([ETCDFS, bad, tmp], capture_output=True, timeout=20)
        assert r.returncode != 0
        assert word in r.stderr.decode(), r.stderr
