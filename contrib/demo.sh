#!/bin/bash
# contrib/demo.sh: builds etcdfs and mounts a running example at /mnt/etcd
# (or $1), with nothing else to run: the keyspace lives in etcdfs's embedded
# Raft store (/var/lib/etcdfs-demo), seeded with a small Kubernetes-like
# cluster (a namespace, pods, a ConfigMap, a Secret) stored in protobuf,
# exactly as an apiserver stores them. Unmount with: fusermount3 -u /mnt/etcd
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
tools/deps.sh build
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
