#!/bin/bash
# tools/fetch-k8s-data.sh DIR: fetches Kubernetes' own round-trip fixtures
# into DIR/k8s-fixtures, laid out as the tests expect ../shared to be:
#   HEAD/            k8s.io/api testdata/HEAD at API_COMMIT
#   apiextensions/   apiextensions-apiserver pkg/apis/testdata/HEAD at EXT_COMMIT
#   releases/v1.X.0/ k8s.io/api testdata/HEAD at the tag kubernetes-1.X.0
# Then run the tests with ETCDFS_SHARED=DIR (tests/run.sh passes it on to
# meson's shared_dir option and to pytest). The commits are pinned, so the
# files are the same bytes as CI's ../shared. The real-cluster data
# (k8s-real/) is not public and is not fetched: tests that need it skip.
# API_GIT and EXT_GIT override the repositories (a local mirror).
set -eu
dir=${1:?usage: $0 DIR}
api_git=${API_GIT:-https://github.com/kubernetes/api.git}
ext_git=${EXT_GIT:-https://github.com/kubernetes/apiextensions-apiserver.git}
API_COMMIT=10b39a39bcee995dfe7cd5e8e7b922be5e46f1e2
EXT_COMMIT=1aa2717a552ee6ca1e2a18f1f8ffccde981db923
RELEASES="1.15.0 1.20.0 1.24.0 1.28.0 1.32.0"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Blobless clones: only the trees and the fixture files are downloaded.
clone() { # url, dest
	git clone -q --bare --filter=blob:none "$1" "$2" 2>/dev/null ||
		git clone -q --bare "$1" "$2"
}
extract() { # repo, rev, path in the repo, destination
	rm -rf "$work/x" && mkdir -p "$work/x" "$4"
	git -C "$1" archive "$2" "$3" | tar -x -C "$work/x"
	cp -a "$work/x/$3/." "$4/"
}
clone "$api_git" "$work/api"
clone "$ext_git" "$work/ext"
out="$dir/k8s-fixtures"
rm -rf "$out"
extract "$work/api" "$API_COMMIT" testdata/HEAD "$out/HEAD"
extract "$work/ext" "$EXT_COMMIT" pkg/apis/testdata/HEAD "$out/apiextensions"
for v in $RELEASES; do
	extract "$work/api" "kubernetes-$v" testdata/HEAD "$out/releases/v$v"
done
echo "fixtures in $out ($(find "$out" -type f | wc -l) files); run the tests with ETCDFS_SHARED=$dir"
