# k8s_fixtures.sh: sourced by the k8s test scripts for what they share.

# need_fixtures SHARED: exits 77 (meson's "skipped", not failed) when the
# Kubernetes fixtures, which live outside the repo, are not in SHARED.
need_fixtures() {
	for d in "$1/k8s-real/values" "$1/k8s-fixtures/HEAD"; do
		[ -d "$d" ] || { echo "skip: $d missing (Kubernetes fixtures: ../shared, or tools/fetch-k8s-data.sh DIR and -Dshared_dir=DIR)"; exit 77; }
	done
}
