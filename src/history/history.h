/* history.h: the retained versions of a key, for NAME%history/ (docs/naming.md).
 *
 * No FUSE here. A key's versions are fetched on demand through kv.h: a
 * range at the key's current mod_revision, then at each version's
 * mod_revision - 1, back to the version that created the key (version 1),
 * to the compaction point (-ERANGE), or to max_versions, whichever comes
 * first: one request per version. They are kept, rendered like the mount's
 * files, while the kernel holds the history's directory or one of its
 * files, and extended with the key's newer versions when it changes.
 *
 * Compaction: a version stays listed while a range at the revision it was
 * fetched at still answers. A history in use is checked (one range at its
 * oldest fetch revision) at most once per check_ms; versions found
 * compacted leave the listing, their files give ENOENT, and the log says
 * why (LOG_NOTICE).
 *
 * Inode numbers: a version file is HISTORY_INO_BASE + a sequence number
 * that is never reused; the directory's is the cache's 4*id+3. Lookup
 * counts are kept here (history_*_ref/unref), so a history and its
 * versions live exactly as long as the kernel or an open listing uses
 * them.
 *
 * Thread-safe: one mutex for the tables, held for short copies only, and a
 * mutex per history serializing its fetches; no lock is held across a
 * backend call.
 */
#ifndef ETCDFS_HISTORY_H
#define ETCDFS_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache/cache.h"
#include "kv.h"

/* The documented cap: a key with more retained versions shows its newest ones. */
#define HISTORY_MAX_VERSIONS 1000
/* How often a history in use is checked for compaction. */
#define HISTORY_CHECK_MS 1000
/* Version files' inode numbers start here (cache inodes are 4*id+kind, ids far below). */
#define HISTORY_INO_BASE (1ULL << 62)

struct history_config {
	struct kv *kv;		/* borrowed */
	cache_render_fn render; /* NULL = raw bytes */
	void *render_arg;
	cache_time_fn value_time; /* NULL = no recorded times */
	void *value_time_arg;
	size_t max_versions; /* 0 = HISTORY_MAX_VERSIONS */
	long check_ms;	     /* 0 = HISTORY_CHECK_MS */
};

struct history;

int history_new(const struct history_config *cfg, struct history **out);
void history_destroy(struct history *h);

/* A key as the mount shows it now (from its cache node). */
struct history_head {
	uint64_t id; /* the cache node's id */
	const char *key;
	size_t key_len;
	int64_t mod_revision, create_revision;
	int64_t mtime_ns; /* the node's time: the newest version's, unless it records one */
};

/* What a version file shows. */
struct history_ver_info {
	uint64_t ino;
	uint64_t id; /* the key's cache node */
	int64_t mod_revision, create_revision, version, lease;
	size_t size;	  /* of the rendered content */
	int64_t mtime_ns; /* 0 = unknown (the mount time) */
};

/* Brings the history of head up to date: fetches it on first use, the
 * key's newer versions after a change (all of them again after a delete
 * and re-create), and checks for compaction when due. With ref, takes one
 * lookup of the directory inode. Without locks; 0 or a negative errno
 * (the backend's). */
int history_refresh(struct history *h, const struct history_head *head, bool ref);
/* The directory's lookup count (FORGET), and an open listing's hold. */
void history_dir_unref(struct history *h, uint64_t id, uint64_t n);
int history_hold(struct history *h, uint64_t id); /* -ENOENT when not known */
void history_release(struct history *h, uint64_t id);
/* Whether a history of id is known (the kernel or a listing holds it). */
bool history_known(struct history *h, uint64_t id);

/* The listed versions of id, newest first: a malloc'd array of *n. */
int history_list(struct history *h, uint64_t id, struct history_ver_info **out, size_t *n);

/* The version of id with this mod_revision, if listed; with ref, takes
 * one lookup of its inode. -ENOENT. */
int history_lookup(struct history *h, uint64_t id, int64_t mod_revision, bool ref,
		   struct history_ver_info *out);
/* A version file by inode: -ENOENT once it left the listing. */
int history_stat(struct history *h, uint64_t ino, struct history_ver_info *out);
void history_ver_ref(struct history *h, uint64_t ino);
void history_ver_unref(struct history *h, uint64_t ino, uint64_t n);
/* Checks the version's history for compaction when due (an open). */
int history_check(struct history *h, uint64_t ino);
/* Copies up to size bytes of the version's content at off. Returns the
 * bytes copied, -ENOENT (compacted), or -EIO (the mount cannot show it). */
ssize_t history_read(struct history *h, uint64_t ino, char *buf, size_t size, off_t off);
/* The full key of a version file (malloc'd), for user.etcd.key. */
int history_key(struct history *h, uint64_t ino, char **key, size_t *len);

static inline bool history_is_ino(uint64_t ino)
{
	return ino >= HISTORY_INO_BASE;
}

struct history_stats {
	uint64_t ranges;	      /* walk requests */
	uint64_t checks;	      /* compaction checks */
	uint64_t compacted;	      /* versions that left a listing as compacted */
	uint64_t histories, versions; /* held now */
};
void history_get_stats(struct history *h, struct history_stats *st);

#endif
