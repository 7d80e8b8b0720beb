#!/bin/bash
# tests/run.sh: the whole test suite, exactly as CI runs it.
#
#  1. build (gcc, -Werror): compiles everything;
#  2. build-asan (gcc, -Werror, ASan+UBSan): unit tests (meson test), then
#     the integration tests (pytest: real etcd servers, real FUSE mounts,
#     real tools), over etcd and over the embedded store;
#  3. valgrind memcheck over the plain build's unit tests that run no servers;
#  4. build-fuzz (clang): every libFuzzer target for FUZZ_SECONDS (30).
# Ends with "N passed, N failed"; exits non-zero on any failure.
# Needs root (FUSE, mount, and apt-get for tools/deps.sh on a fresh machine).
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
# Every Debian package the suite needs (a no-op when all are installed).
if ! tools/deps.sh test; then
	echo "0 passed, 1 failed"
	exit 1
fi
results=$(mktemp -d)
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
status=0
t0=$(date +%s)
stamp() { echo "== $* ($(($(date +%s) - t0)) s)"; }

setup() { # dir, meson args...
	local dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@"
	else
		meson setup "$dir" "$@"
	fi >"$results/setup-$(basename "$dir").log" 2>&1 || {
		cat "$results/setup-$(basename "$dir").log"
		return 1
	}
}

unit() { # build dir, label, extra meson test args...
	local b=$1 label=$2
	shift 2
	stamp "unit tests: $label"
	meson test -C "$b" --print-errorlogs --num-processes 2 "$@" || status=1
	cp "$b/meson-logs/testlog.json" "$results/unit-$label.json" 2>/dev/null
}

# The Kubernetes fixtures: ../shared, or where tools/fetch-k8s-data.sh put
# them ($ETCDFS_SHARED; pytest reads the variable itself).
shared_opt=()
[ -n "${ETCDFS_SHARED:-}" ] && shared_opt=("-Dshared_dir=$ETCDFS_SHARED")

stamp "build (gcc -Werror)"
if ! { setup build -Dwerror=true "${shared_opt[@]}" && ninja -C build; }; then
	echo "BUILD FAILED: build"
	echo "build" >>"$results/build-failures"
	status=1
fi

# A small quarantine keeps the daemon's RSS meaningful for the load test's
# memory bound (ASan otherwise holds up to 256 MB of freed memory).
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=32
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
stamp "build (gcc -Werror, ASan+UBSan)"
if setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
	"${shared_opt[@]}" &&
	ninja -C build-asan; then
	unit build-asan asan
	# The two integration passes run one after the other: run at once
	# (2026-12-05) they took 12 minutes instead of 20, but timing-bound
	# tests failed under the doubled load, 2 to 4 a run. Each prints its
	# report when both are done.
	stamp "integration tests (ASan+UBSan daemon), over etcd, then over the embedded store"
	# etcdfs-server's own tests (gRPC, TLS, faults, a third-party client)
	# run after the store pass, in its process, to even the two out.
	server_tests=(tests/integration/test_grpc.py tests/integration/test_grpc_faults.py
		tests/integration/test_grpc_tls.py tests/integration/test_node_client.py)
	# Tests that time one call against a bound set for an idle machine run
	# alone after both passes (curl's 30 s bound was hit once under the
	# load; the Ctrl-C test's failures then were an ignored SIGINT, since
	# fixed: docs/reliability.md).
	alone_tests=("tests/integration/test_reliability.py::test_ctrl_c_interrupts_a_waiting_read_at_once"
		"tests/integration/test_grpc.py::test_malformed_calls")
	# each report ends with its 15 slowest phases: where the suite's time goes
	export PYTEST_ADDOPTS="--durations=15 ${PYTEST_ADDOPTS:-}"
	ETCDFS_BUILD="$top/build-asan" /usr/bin/python3 -m pytest tests/integration -q \
		-p no:cacheprovider --junitxml="$results/it-asan.xml" \
		"${server_tests[@]/#/--ignore=}" "${alone_tests[@]/#/--deselect=}" ${PYTEST_ARGS:-} \
		>"$results/it-asan.log" 2>&1
	it_etcd=$?
	# The same foundation, write, watch, Kubernetes and model tests over
	# the embedded store (etcdfs-server serves it through etcd's gRPC API and JSON gateway).
	(
	ETCDFS_BUILD="$top/build-asan" ETCDFS_BACKENDS=store /usr/bin/python3 -m pytest -q \
		-p no:cacheprovider --junitxml="$results/it-store.xml" \
		tests/integration/test_read.py tests/integration/test_write.py \
		tests/integration/test_watch.py tests/integration/test_k8s.py \
		tests/integration/test_model.py tests/integration/test_model_basic.py tests/integration/test_toolbox.py \
		tests/integration/test_tools.py tests/integration/test_issue14.py tests/integration/test_refusals.py \
		tests/integration/test_history.py \
		${PYTEST_ARGS:-} >"$results/it-store.log" 2>&1
	store_status=$?
	ETCDFS_BUILD="$top/build-asan" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
		--junitxml="$results/it-server.xml" "${server_tests[@]}" \
		"${alone_tests[@]/#/--deselect=}" ${PYTEST_ARGS:-} \
		>>"$results/it-store.log" 2>&1 && exit "$store_status"
	)
	it_store=$?
	[ "$it_etcd" -eq 0 ] || status=1
	[ "$it_store" -eq 0 ] || status=1
	stamp "integration tests over etcd: report"
	cat "$results/it-asan.log"
	stamp "integration tests over the embedded store: report"
	cat "$results/it-store.log"
	stamp "integration tests that time one call, alone"
	ETCDFS_BUILD="$top/build-asan" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
		--junitxml="$results/it-alone.xml" "${alone_tests[@]}" ${PYTEST_ARGS:-} || status=1
else
	echo "BUILD FAILED: build-asan"
	echo "build-asan" >>"$results/build-failures"
	status=1
fi

# A plain clone has no ../shared: the unit suites must pass there too, the
# tests that need outside data skipping with a reason. The suites that
# start etcd servers (etcd, store, gateway) read no outside data and ran
# above; leaving them out here keeps the whole run under 20 minutes.
stamp "unit tests from a copy with no ../shared"
plain=$(mktemp -d)
mkdir "$plain/etcdfs"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$plain/etcdfs"
if (cd "$plain/etcdfs" && setup build -Dwerror=true && ninja -C build >"$results/plain-build.log" 2>&1); then
	unit "$plain/etcdfs/build" plain-clone --suite k8s --suite snapshot --suite core \
		--suite lib --suite cache --suite save --suite fs --suite history
	grep -ho 'skip: .*' "$plain/etcdfs/build/meson-logs/testlog.txt" | sort -u | head -20
else
	cat "$results/plain-build.log"
	echo "plain-clone" >>"$results/build-failures"
	status=1
fi
rm -rf "$plain"

if command -v valgrind >/dev/null && [ -x build/etcdfs ]; then
	stamp "unit tests under valgrind memcheck"
	# the C unit tests that start no servers (valgrind would watch etcd's
	# Go runtime or a shell otherwise)
	meson test -C build --print-errorlogs --num-processes 2 naming cache k8s-fixtures \
		k8s-codec k8s-fuzz-replay etcd_json snapshot_real snapshot_malformed store_mvcc kvmem history \
		--wrapper='valgrind --error-exitcode=97 --leak-check=full --errors-for-leak-kinds=definite -q' \
		--timeout-multiplier 10 || status=1
	cp build/meson-logs/testlog-valgrind.json "$results/unit-valgrind.json" 2>/dev/null ||
		cp build/meson-logs/testlog.json "$results/unit-valgrind.json" 2>/dev/null
fi

if command -v clang >/dev/null; then
	stamp "fuzzing (clang, libFuzzer, ${FUZZ_SECONDS} s per target)"
	if CC=clang setup build-fuzz -Db_sanitize=address,undefined -Db_lundef=false &&
		ninja -C build-fuzz tests/unit/fuzz/fuzz_naming tests/unit/fuzz/fuzz_etcd_json \
			tests/unit/k8s/fuzz_k8s tests/unit/snapshot/fuzz_snapshot; then
		fuzzers=(build-fuzz/tests/unit/fuzz/fuzz_naming build-fuzz/tests/unit/fuzz/fuzz_etcd_json
			build-fuzz/tests/unit/k8s/fuzz_k8s build-fuzz/tests/unit/snapshot/fuzz_snapshot)
		run_fuzz() {
			local f=$1 name
			name=$(basename "$f")
			mkdir -p "$results/corpus-$name"
			if "$f" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
				-artifact_prefix="$results/$name-" "$results/corpus-$name" \
				>"$results/$name.log" 2>&1; then
				echo "$name ok" >>"$results/fuzz"
				echo "fuzz $name: ok ($(grep -o 'Done [0-9]* runs' "$results/$name.log"))"
			else
				echo "$name FAIL" >>"$results/fuzz"
				echo "fuzz $name: FAILED"
				tail -40 "$results/$name.log"
			fi
		}
		# two at a time: the machine has two cores
		for ((i = 0; i < ${#fuzzers[@]}; i += 2)); do
			run_fuzz "${fuzzers[i]}" &
			[ -n "${fuzzers[i + 1]:-}" ] && run_fuzz "${fuzzers[i + 1]}" &
			wait
		done
	else
		echo "fuzz FAIL" >>"$results/fuzz"
	fi
fi

stamp "summary"
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
        if r["result"] in ("OK", "EXPECTEDFAIL"):
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
for name in ("fuzz", "build-failures"):
    p = os.path.join(d, name)
    if os.path.exists(p):
        for line in open(p):
            if name == "fuzz" and line.split()[-1] == "ok":
                passed += 1
            elif line.strip():
                failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
open(os.path.join(d, "counts"), "w").write(f"{passed} {failed}\n")
PY
read -r p f <"$results/counts" || { p=0; f=1; }
[ "$f" -ne 0 ] && status=1
[ "$p" -eq 0 ] && status=1
rm -rf "$results"
exit $status
