#!/bin/sh
# fuzz_k8s_run.sh: a short libFuzzer run of fuzz_k8s over a temp corpus seeded
# with the upstream fixtures and real values. Usage: fuzz_k8s_run.sh FUZZER SHARED SECONDS
set -eu
F=$1
S=$2
SECS=${3:-20}
. "$(dirname "$0")/k8s_fixtures.sh"
need_fixtures "$S"
C=$(mktemp -d)
trap 'rm -rf "$C"' EXIT
i=0
for f in "$S"/k8s-fixtures/HEAD/*.pb "$S"/k8s-real/values/*; do
	i=$((i + 1))
	# mode byte 0: decode + lossless re-encode
	{ printf '\000'; cat "$f"; } > "$C/pb$i"
done
for f in "$S"/k8s-fixtures/HEAD/core.v1.Pod.yaml "$S"/k8s-fixtures/HEAD/apps.v1.Deployment.json \
	"$S"/k8s-fixtures/HEAD/core.v1.ConfigMap.yaml; do
	i=$((i + 1))
	# mode byte 1: text -> encode
	{ printf '\001'; cat "$f"; } > "$C/txt$i"
done
exec "$F" -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 "$C"
