#!/bin/sh
# test_k8s_cli.sh: etcdfs-k8s decode/encode/detect on real values and fixtures.
# Usage: test_k8s_cli.sh PATH/TO/etcdfs-k8s SHARED_DIR
set -u
T=$1
S=$2
. "$(dirname "$0")/k8s_fixtures.sh"
need_fixtures "$S"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# real-cluster values: decode, and encode --orig of the unedited text is byte-exact
for v in "$S"/k8s-real/values/*; do
	n=$(basename "$v")
	for fmt in yaml json; do
		if "$T" decode -o $fmt < "$v" > "$W/t" &&
			"$T" encode --orig "$v" < "$W/t" > "$W/b" && cmp -s "$v" "$W/b"; then
			ok "round trip $fmt $n"
		else
			bad "round trip $fmt $n"
		fi
	done
done

# decode output equals the upstream YAML fixtures
for k in core.v1.Pod apps.v1.Deployment core.v1.Secret batch.v1.CronJob; do
	if "$T" decode < "$S/k8s-fixtures/HEAD/$k.pb" | cmp -s - "$S/k8s-fixtures/HEAD/$k.yaml"; then
		ok "fixture yaml $k"
	else
		bad "fixture yaml $k"
	fi
	# and a new encode of the JSON fixture is the stored protobuf
	if "$T" encode --encoding protobuf < "$S/k8s-fixtures/HEAD/$k.json" |
		cmp -s - "$S/k8s-fixtures/HEAD/$k.pb"; then
		ok "fixture json->pb $k"
	else
		bad "fixture json->pb $k"
	fi
done

# detect
[ "$("$T" detect < "$S/k8s-real/values/registry-jobs-default-pi.bin")" = protobuf ] &&
	ok "detect protobuf" || bad "detect protobuf"
printf 'k8s:enc:aescbc:v1:key:xx' > "$W/enc"
[ "$("$T" detect < "$W/enc")" = encrypted ] && ok "detect encrypted" || bad "detect encrypted"
if "$T" decode < "$W/enc" > /dev/null 2> "$W/err"; then
	bad "encrypted decode must fail"
else
	ok "encrypted decode fails: $(cat "$W/err")"
fi

# edit with sed, then encode: the change lands, validation errors name the line
"$T" decode < "$S/k8s-real/values/registry-pods-default-pi-dqtsw.bin" |
	sed 's/restartPolicy: Never/restartPolicy: OnFailure/' > "$W/edit.yaml"
if "$T" encode --orig "$S/k8s-real/values/registry-pods-default-pi-dqtsw.bin" \
	--name pi-dqtsw --namespace default < "$W/edit.yaml" > "$W/edit.bin" &&
	"$T" decode < "$W/edit.bin" | cmp -s - "$W/edit.yaml"; then
	ok "sed edit round trip"
else
	bad "sed edit round trip"
fi
sed 's/restartPolicy: OnFailure/restartPolicy: [/' "$W/edit.yaml" > "$W/broken.yaml"
if "$T" encode --orig "$S/k8s-real/values/registry-pods-default-pi-dqtsw.bin" \
	< "$W/broken.yaml" > /dev/null 2> "$W/err"; then
	bad "broken yaml accepted"
elif grep -q 'line' "$W/err"; then
	ok "broken yaml refused: $(cat "$W/err")"
else
	bad "broken yaml error lacks a line: $(cat "$W/err")"
fi
if "$T" encode --orig "$S/k8s-real/values/registry-pods-default-pi-dqtsw.bin" \
	--name other < "$W/edit.yaml" > /dev/null 2> "$W/err"; then
	bad "wrong name accepted"
else
	ok "wrong name refused: $(cat "$W/err")"
fi

# heredoc create of a ConfigMap: protobuf that decodes back to the text
cat > "$W/cm.yaml" <<'YAML'
apiVersion: v1
data:
  key: value
kind: ConfigMap
metadata:
  name: app
  namespace: default
YAML
if "$T" encode < "$W/cm.yaml" > "$W/cm.bin" &&
	[ "$("$T" detect < "$W/cm.bin")" = protobuf ] &&
	"$T" decode < "$W/cm.bin" | cmp -s - "$W/cm.yaml"; then
	ok "create ConfigMap"
else
	bad "create ConfigMap"
fi

# a release fixture: a kind k8s.io/api no longer has decodes, and the JSON
# encoded as that release (--release) is its protobuf; the newest form differs
R="$S/k8s-fixtures/releases/v1.15.0"
if [ -d "$R" ]; then
	k=policy.v1beta1.PodSecurityPolicy
	if "$T" decode < "$R/$k.pb" | grep -q '^kind: PodSecurityPolicy$'; then
		ok "decode removed kind $k"
	else
		bad "decode removed kind $k"
	fi
	if "$T" encode --release 1.15 --encoding protobuf < "$R/$k.json" | cmp -s - "$R/$k.pb" &&
		! "$T" encode --encoding protobuf < "$R/$k.json" | cmp -s - "$R/$k.pb"; then
		ok "encode --release 1.15 $k"
	else
		bad "encode --release 1.15 $k"
	fi
	if ! "$T" encode --release 2.1 < "$R/$k.json" > /dev/null 2>&1; then
		ok "encode --release 2.1 refused"
	else
		bad "encode --release 2.1 refused"
	fi
else
	echo "skip release checks: $R missing"
fi

echo "$fails failure(s)"
[ $fails -eq 0 ]
