#!/bin/bash
# tests/run.sh: the whole test suite, exactly as CI runs it.
#
# Builds etcdfs twice (plain with -Werror, and with ASan+UBSan), runs the
# unit tests (meson test) on both builds and the integration tests (pytest,
# real etcd + real FUSE mounts) on both, and ends with "N passed, N failed".
# Needs root (FUSE mounts) and the Debian packages .ci/run installs.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
results=$(mktemp -d)
pytest_args=${PYTEST_ARGS:-}

build() { # dir, extra meson args...
	local dir=$1
	shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" -Dwerror=true "$@" >"$results/setup-$(basename "$dir").log" 2>&1
	else
		meson setup "$dir" -Dwerror=true "$@" >"$results/setup-$(basename "$dir").log" 2>&1
	fi || { cat "$results/setup-$(basename "$dir").log"; return 1; }
	ninja -C "$dir"
}

status=0
build build || status=1
build build-asan -Db_sanitize=address,undefined -Db_lundef=false || status=1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for b in build build-asan; do
	[ -x "$b/etcdfs" ] || continue
	meson test -C "$b" --print-errorlogs --num-processes 2 || status=1
	cp "$b/meson-logs/testlog.json" "$results/unit-$b.json" 2>/dev/null
	ETCDFS_BUILD="$top/$b" /usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider \
		--junitxml="$results/it-$b.xml" $pytest_args
	rc=$?
	[ $rc -ne 0 ] && status=1
done

/usr/bin/python3 - "$results" <<'PY'
import glob, json, os, sys
import xml.etree.ElementTree as ET
d = sys.argv[1]
passed = failed = skipped = 0
for f in glob.glob(os.path.join(d, "unit-*.json")):
    for line in open(f):
        if not line.strip():
            continue
        r = json.loads(line)
        if r["result"] == "OK" or r["result"] == "EXPECTEDFAIL":
            passed += 1
        elif r["result"] == "SKIP":
            skipped += 1
        else:
            failed += 1
for f in glob.glob(os.path.join(d, "it-*.xml")):
    root = ET.parse(f).getroot()
    for s in root.iter("testsuite"):
        t, e, fl, sk = (int(s.get(k, 0)) for k in ("tests", "errors", "failures", "skipped"))
        passed += t - e - fl - sk
        failed += e + fl
        skipped += sk
print(f"{passed} passed, {failed} failed, {skipped} skipped")
open(os.path.join(d, "counts"), "w").write(f"{passed} {failed}\n")
PY
read -r p f <"$results/counts" || { p=0; f=1; }
[ "$f" -ne 0 ] && status=1
[ "$p" -eq 0 ] && status=1
rm -rf "$results"
exit $status
