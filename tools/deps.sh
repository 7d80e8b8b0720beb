#!/bin/bash
# tools/deps.sh: installs the Debian 12 packages etcdfs needs, and only those
# missing (a no-op, in well under a second, when all are there).
#   tools/deps.sh build   what building etcdfs needs (contrib/demo.sh)
#   tools/deps.sh test    that plus what the test suite runs: etcd, the
#                         tools it drives, valgrind, clang for the fuzzers
#                         (tests/run.sh and .ci/run)
# Needs root (apt-get) only when something is missing. docs/dependencies.md
# says why each package is there.
set -u
build=(build-essential meson ninja-build pkg-config libfuse3-dev fuse3
	libcurl4-openssl-dev libjansson-dev libssl-dev libprotobuf-c-dev
	protobuf-c-compiler libyaml-dev libraft-dev libuv1-dev libsodium-dev libcbor-dev libnghttp2-dev
	libmicrohttpd-dev)
test=(etcd-server etcd-client python3 python3-pytest attr openssl ca-certificates
	vim nano emacs-nox rsync perl util-linux mount curl tmux man-db procps
	tar git sqlite3 make valgrind clang libclang-rt-14-dev
	python3-cryptography python3-nacl python3-cbor2 nodejs)
case "${1:-}" in
build) want=("${build[@]}") ;;
test) want=("${build[@]}" "${test[@]}") ;;
*)
	echo "usage: $0 build|test" >&2
	exit 2
	;;
esac
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
# npm for the Node.js client test (tests/node): a nodejs that brings its own
# npm (NodeSource's) must not get Debian's npm package as well
[ "${1:-}" = test ] && ! command -v npm >/dev/null && missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing Debian packages (run as root to install): ${missing[*]}" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null &&
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
	echo "deps: apt-get install failed" >&2
	exit 1
}
