#!/bin/bash
# contrib/demo.sh: builds etcdfs and mounts a running example at /mnt/etcd.
#
# Until the embedded store is the default demo backend, this starts a local
# etcd on loopback (127.0.0.1:23790, data in /tmp/etcdfs-demo) and loads a
# few sample keys. Stop with: fusermount3 -u /mnt/etcd; pkill -f etcdfs-demo
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v meson >/dev/null || ! command -v etcd >/dev/null; then
	apt-get update -qq
	apt-get install -y -qq build-essential meson ninja-build pkg-config libfuse3-dev fuse3 \
		libcurl4-openssl-dev libjansson-dev libssl-dev libprotobuf-c-dev \
		protobuf-c-compiler libyaml-dev libraft-dev libuv1-dev etcd-server etcd-client >/dev/null
fi
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
mnt=${1:-/mnt/etcd}
ep=http://127.0.0.1:23790
if ! ETCDCTL_API=3 etcdctl --endpoints $ep endpoint health >/dev/null 2>&1; then
	mkdir -p /tmp/etcdfs-demo
	(cd /tmp/etcdfs-demo && exec -a etcdfs-demo etcd --name demo --data-dir /tmp/etcdfs-demo/data \
		--listen-client-urls $ep --advertise-client-urls $ep \
		--listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
		--initial-cluster demo=http://127.0.0.1:23800 --log-level error >etcd.log 2>&1 &)
	for _ in $(seq 50); do
		ETCDCTL_API=3 etcdctl --endpoints $ep endpoint health >/dev/null 2>&1 && break
		sleep 0.2
	done
fi
put() { ETCDCTL_API=3 etcdctl --endpoints $ep put "$1" "$2" >/dev/null; }
put /config/app/name "demo"
put /config/app/color "blue"
put /config/db/url "postgres://db.internal:5432/app"
put /services/web/replicas "3"
put /services/web/image "nginx:1.25"
put /services/api/image "registry.local/api:2.1"
mkdir -p "$mnt"
mountpoint -q "$mnt" && fusermount3 -u "$mnt"
./build/etcdfs --endpoints $ep "$mnt"
echo "etcd keyspace mounted at $mnt. Try: ls -R $mnt; grep -r image $mnt"
