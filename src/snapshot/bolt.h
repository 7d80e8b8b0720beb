/* bolt.h: a read-only reader for bbolt database files (internal to src/snapshot).
 *
 * bbolt is the B+tree file format etcd keeps its backend in. This reader
 * validates the two meta pages, picks the newest valid one and walks bucket
 * trees with pread(): nothing is mmap'ed, so a file that shrinks under us
 * gives -EIO instead of SIGBUS. Every page read is bounds-checked against the
 * file and the meta page's high-water mark; a walk visits each page at most
 * once, so a corrupt file cannot make a walk loop or blow up.
 *
 * Errors: -EINVAL (not a bbolt file: empty, bad magic, unsupported version),
 * -EUCLEAN (corrupt: bad checksum, truncated, page out of range, bad page),
 * -EIO (read failed), -ENOMEM. Each is logged with the file name and cause.
 *
 * Ownership: bolt_open_fd() takes ownership of fd (closed by bolt_close()).
 * Bucket handles own a copy of an inline bucket's page; release them with
 * bolt_bucket_release(). Item pointers passed to a visitor are valid only
 * during the callback.
 */
#ifndef ETCDFS_SNAPSHOT_BOLT_H
#define ETCDFS_SNAPSHOT_BOLT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bolt;

/* A bucket: either a root page id or an inline page (root == 0). */
struct bolt_bucket {
	uint64_t root;
	uint8_t *inline_page; /* owned copy, inline buckets only */
	size_t inline_len;
	uint64_t inline_off; /* file offset of the inline page */
};

struct bolt_item {
	const uint8_t *key;
	size_t key_len;
	const uint8_t *val;
	size_t val_len;
	uint64_t val_off; /* file offset of val[0] */
	bool is_bucket;
};

/* Return 0 to continue, a negative errno to stop the walk with that error. */
typedef int (*bolt_visit_cb)(void *arg, const struct bolt_item *it);

struct bolt_info {
	uint32_t page_size;
	uint64_t high_pgid; /* pages in use, from the meta page */
	uint64_t txid;
	unsigned meta_page; /* 0 or 1: the meta page in use */
	uint64_t file_size;
	bool has_sha256; /* etcdctl snapshot trailer present and verified */
	/* Pages walked so far, by kind (diagnostics; tests check coverage). */
	uint64_t pages_branch, pages_leaf, pages_overflow, pages_inline;
};

/* name is used in log lines only. */
int bolt_open_fd(int fd, const char *name, struct bolt **out);
void bolt_close(struct bolt *b);
const struct bolt_info *bolt_info(const struct bolt *b);
const char *bolt_name(const struct bolt *b);

/* The root bucket (never fails). */
void bolt_root(const struct bolt *b, struct bolt_bucket *out);
/* Finds the sub-bucket name in parent: 0, -ENOENT if absent, or an error. */
int bolt_bucket_open(struct bolt *b, const struct bolt_bucket *parent, const char *name,
		     struct bolt_bucket *out);
void bolt_bucket_release(struct bolt_bucket *bk);
/* Visits every item of the bucket in key order. */
int bolt_bucket_foreach(struct bolt *b, const struct bolt_bucket *bk, bolt_visit_cb cb, void *arg);

/* Reads len bytes at file offset off (a value located by a walk). */
int bolt_pread(struct bolt *b, void *buf, size_t len, uint64_t off);

#endif
