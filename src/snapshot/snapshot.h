/* snapshot.h: a read-only kv.h backend over an etcd v3 backend file.
 *
 * The file is the bbolt database written by `etcdctl snapshot save`, or a
 * stopped member's `member/snap/db`. No etcd runs: snapshot_open() walks the
 * file once, indexes every revision of every key in the bucket "key" and reads
 * the compaction marks from the bucket "meta"; values stay in the file and
 * are read with pread() on demand.
 *
 * The returned kv serves:
 *  - range at the latest revision and at any revision the file still holds
 *    (>= the compacted revision; older ones give -ERANGE with
 *    compact_revision set, later ones -ENOENT);
 *  - txn made only of RANGE ops, with compares evaluated at the latest
 *    revision; a txn holding any PUT or DELETE (in either branch) is -EROFS;
 *  - status: the store revision (the highest revision in the file, or the
 *    compacted revision if that is higher, as etcd itself reports it);
 *  - watch: -ENOTSUP (the file never changes); compact: -EROFS.
 * It is immutable after open, so every call is thread-safe without locks.
 *
 * The file is held open with a shared flock() (etcd holds an exclusive one on
 * a live db, so a running member's db is refused with -EBUSY). It must not be
 * rewritten while open: values are read from it on demand.
 *
 * Errors from open (each logged with the file name and the cause):
 *   -ENOENT/-EACCES... the file cannot be opened
 *   -EINVAL  not an etcd backend: empty file, bad magic, unsupported bbolt
 *            version, no bucket "key"
 *   -EUCLEAN corrupt: bad meta checksum, bad SHA-256 trailer, truncated,
 *            page out of range, malformed page, record or revision key
 *   -EBUSY   locked by a running etcd
 *   -EIO, -ENOMEM
 */
#ifndef ETCDFS_SNAPSHOT_SNAPSHOT_H
#define ETCDFS_SNAPSHOT_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

/* Opens path read-only and indexes the latest state (and history, for range
 * at revision) of every key. On success *out is a kv freed with kv_destroy(). */
int snapshot_open(const char *path, struct kv **out);

/* Same over an open file descriptor, which the backend takes over (it is
 * closed on error and by kv_destroy()). name is used in log lines only. */
int snapshot_open_fd(int fd, const char *name, struct kv **out);

struct snapshot_info {
	int64_t revision;	   /* store revision (what status reports) */
	int64_t max_revision;	   /* highest revision of any record in the file */
	int64_t compact_revision;  /* oldest revision range can serve; 0 = none */
	uint64_t consistent_index; /* meta "consistent_index", 0 if absent */
	size_t n_keys;		   /* keys that exist at the latest revision */
	size_t n_keys_all;	   /* keys with any record in the file */
	size_t n_records;	   /* revisions (puts and tombstones) in the file */
	size_t n_tombstones;
	uint32_t page_size;
	uint64_t file_size;
	bool sha256_verified; /* the etcdctl snapshot trailer was present and matched */
	/* bbolt pages read while indexing, by kind (diagnostics). */
	uint64_t pages_branch, pages_leaf, pages_overflow, pages_inline;
};

/* Fills *info for a kv returned by snapshot_open(); -EINVAL for any other kv. */
int snapshot_get_info(struct kv *kv, struct snapshot_info *info);

#endif
