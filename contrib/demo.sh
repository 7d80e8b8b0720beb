#!/bin/bash
# contrib/demo.sh: builds etcdfs and mounts a running example at /mnt/etcd
# (or $1), with nothing else to run: the keyspace lives in etcdfs's embedded
# Raft store (/var/lib/etcdfs-demo), seeded with a small Kubernetes-like
# cluster (a namespace, pods, a ConfigMap, a Secret) stored in protobuf,
# exactly as an apiserver stores them. Unmount with: fusermount3 -u /mnt/etcd
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v meson >/dev/null || ! pkg-config --exists fuse3 raft yaml-0.1 2>/dev/null; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends build-essential meson ninja-build pkg-config \
		libfuse3-dev fuse3 libcurl4-openssl-dev libjansson-dev libssl-dev libprotobuf-c-dev \
		protobuf-c-compiler libyaml-dev libraft-dev libuv1-dev >/dev/null
fi
[ -d build ] || meson setup build >/dev/null
ninja -C build etcdfs src/k8s/etcdfs-k8s >/dev/null
mnt=${1:-/mnt/etcd}
data=${ETCDFS_DEMO_DIR:-/var/lib/etcdfs-demo}
mkdir -p "$mnt"
mountpoint -q "$mnt" && fusermount3 -u "$mnt"
# -o rw: this keyspace holds Kubernetes objects, read-only unless asked.
./build/etcdfs --data-dir "$data" -o rw "$mnt"
seed() { # file, key path under the mount
	local dir
	dir=$(dirname "$mnt/$2")
	mkdir -p "$dir"
	[ -e "$mnt/$2" ] || cp "contrib/sample/$1" "$mnt/$2"
}
seed namespace-shop.yaml registry/namespaces/shop
seed pod-web.yaml registry/pods/shop/web-7d9f8
seed pod-api.yaml registry/pods/shop/api-5c6b4
seed configmap-app-config.yaml registry/configmaps/shop/app-config
seed secret-db.yaml registry/secrets/shop/db
echo "Mounted at $mnt (embedded store in $data). Try:"
echo "  ls -R $mnt/registry"
echo "  cat $mnt/registry/pods/shop/web-7d9f8"
echo "  grep -r image: $mnt/registry/pods"
echo "  cat $mnt/registry/pods/shop/web-7d9f8%raw | head -c 64 | od -c   # the stored protobuf"
