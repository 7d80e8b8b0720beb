/* save.h: the commit model of the write path, without FUSE.
 *
 * Builds the transactions a save sends (compare-and-put, delete-with-compare,
 * the rename txn), keeps the copies of rejected saves, runs the deferred
 * unlinks on their own thread, and owns the write-path state of nodes (the
 * side table behind cache_node.local: shadows, hidden keys, origins). Results
 * are applied to the cache at once so reads see them before the watch does.
 * fs/ calls this module and never the backend itself. See docs/writes.md.
 *
 * Locking: no function here is called with the cache lock held unless it
 * says so; the cache lock is never held across a backend call. The side
 * table has no lock of its own: the cache lock protects it as it protects
 * the node. The deferred list has its own mutex (dd_lock), taken after the
 * cache lock, never before, and never held while calling anything else.
 */
#ifndef ETCDFS_SAVE_H
#define ETCDFS_SAVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache/cache.h"
#include "kv.h"

/* Most compares one save txn carries (the key's own one included), and most
 * operations besides its put. Asking for more is -E2BIG. */
#define SAVE_MAX_COMPARES 8
#define SAVE_MAX_EXTRA_OPS 3

struct save;

/* The write-path state of one node, the side table behind
 * cache_node.local: allocated the first time the mount writes the node
 * (save_local_mut), so keys never written pay one NULL pointer. Protected
 * by the cache lock like the node (pending_size: atomic).
 *
 * A local file exists only in this mount: a new file not yet committed, or
 * a "shadow" (editor temp file) that never reaches etcd. A hidden node is
 * a key renamed onto a shadow name or unlinked: still in etcd, absent
 * here. */
struct cache_local {
	bool local_file;
	bool shadow;
	bool hidden;
	bool pinned; /* a rename in flight: never pruned */
	bool is_link;
	uint32_t mode;	  /* permission bits overridden by chmod, 0 = default */
	char *local_data; /* shadow content (and symlink target if link) */
	size_t local_len;
	int64_t pending_size; /* size of dirty open content, -1 if none */
	uint64_t origin_id;   /* shadow: the hidden key it came from (0 none) */
	int64_t origin_rev;   /* shadow: that key's mod_revision at rename */
	int64_t born_rev;     /* revision the cache had when the shadow was made */
	uint64_t mtime_ns;    /* local mtime (utimens), 0 = none */
};

/* n's write-path state, or the defaults (all clear, pending_size -1) for a
 * node never written. Cache lock held, or n kept alive by a reference
 * (the slot never changes once set). */
const struct cache_local *save_local(const struct cache_node *n);
/* n's state for writing, created on first use. Cache lock held for write.
 * NULL on ENOMEM. */
struct cache_local *save_local_mut(struct cache_node *n);
/* Sets (atomically) the size of n's dirty open content when n is a local
 * file, or clears it (-1). Cache lock held (read is enough). */
void save_set_pending(struct cache_node *n, int64_t size);
/* Forgets n's local content: no longer a local file, shadow or link. Lock
 * held for write. */
void save_clear_local(struct cache_node *n);
/* n's content is now stored in its key: no longer local, hidden or
 * pending. Lock held for write. */
void save_mark_stored(struct cache_node *n);
/* Shows a hidden node again; with prune, a node left without a key goes.
 * Lock held for write. */
void save_unhide_locked(struct cache *c, struct cache_node *n, bool prune);
/* Ends a rename in flight (the pin that kept n from being pruned). Lock
 * held for write. */
void save_unpin_locked(struct cache_node *n);
/* Creates a local file node under parent (cache_mknode_locked plus its
 * write-path state). Lock held for write. -EEXIST, -ENOENT, -ENOMEM. */
int save_mkfile_locked(struct cache *c, struct cache_node *parent, int ns, const char *seg,
		       size_t seg_len, struct cache_node **out);

/* Turns saved text into stored bytes (k8s/k8s_mount.h: k8s_mount_encode); -ENOTSUP from it
 * means "store the text as is". */
typedef int (*save_encode_fn)(void *arg, const char *key, size_t key_len, const char *orig,
			      size_t orig_len, int64_t orig_rev, const char *text, size_t text_len,
			      char **out, size_t *out_len, char **err);

struct save_config {
	struct kv *kv;		     /* borrowed */
	struct cache *cache;	     /* borrowed */
	const char *conflict_dir;    /* borrowed; NULL = /tmp/etcdfs-conflicts-UID */
	const char *shadow_patterns; /* borrowed; NULL = the default editor temp names */
	uid_t uid;		     /* names the default conflict dir */
	save_encode_fn encode;	     /* NULL = store text as is */
	void *encode_arg;
	/* Whether encode applies to a key at all (so that saves of other keys
	 * do not fetch the original first); NULL = always. */
	bool (*encode_applies)(void *arg, const char *key, size_t key_len);
};

/* Creates the module; the deferred-delete thread starts with save_start. */
int save_new(const struct save_config *cfg, struct save **out);
/* Stops the thread if running (committing pending deletes) and frees s.
 * NULL is fine. */
void save_destroy(struct save *s);
int save_start(struct save *s);
/* Joins the thread and commits every pending delete (no-op if not started). */
void save_stop(struct save *s);

/* True when name (one path segment, as shown) is an editor or tool temp
 * file that lives only in this mount. */
bool save_is_shadow_name(const struct save *s, const char *name);

/* Stores text under key as one txn comparing the key's mod_revision with
 * base (create_revision with 0 when absent), after encoding it back to the
 * stored form. Applies the result to the cache and gives the new revision
 * in *rev. -ESTALE on conflict (logged, the text kept in the conflict dir);
 * -EINVAL/-EPERM when the encoder refuses the text; -EFBIG over the
 * backend's request limit; else the backend's error. */
int save_store_text(struct save *s, const char *key, size_t klen, const char *text, size_t len,
		    int64_t base, bool absent, int64_t *rev);
/* The two steps of save_store_text. save_encode converts text into the
 * bytes stored under key (Kubernetes objects go back to their original
 * encoding, which it fetches); *raw is text itself unless *owned (then the
 * caller frees it). -EINVAL/-EPERM when the content is refused (logged). */
int save_encode(struct save *s, const char *key, size_t klen, const char *text, size_t len,
		int64_t base, bool absent, char **raw, size_t *rawlen, bool *owned);
/* Stores bytes as they are (no encoding). */
int save_store(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
	       int64_t base, bool absent, int64_t *rev);
/* rename(key -> key): one txn that deletes skey (compared against the
 * revision it has now) and puts its stored bytes under dkey (compared
 * against d_rev, or absent). Applies the put to the cache; the caller
 * applies the deletion once its node has moved. */
int save_move_key(struct save *s, const char *skey, size_t sklen, const char *dkey, size_t dklen,
		  int64_t d_rev, bool d_absent, int64_t *rev);
/* Deletes key if it is still at rev. 0, -ESTALE (logged) or -errno. */
int save_delete(struct save *s, const char *key, size_t klen, int64_t rev);
/* Keeps a copy of rejected content in the conflict dir and logs why:
 * key changed to revision now while a temp copy was being edited.
 * Returns -ESTALE. */
int save_reject_edit(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
		     int64_t now);

/* Deferred unlink: the hidden node id holds key at rev; it is deleted after
 * a short grace period unless cancelled (the same name created again).
 * Takes ownership of key (freed on every path). */
int save_defer_delete(struct save *s, uint64_t id, char *key, size_t klen, int64_t rev);
/* Drops the deferred delete of node id. May be called with the cache lock
 * held. */
void save_cancel_deferred(struct save *s, uint64_t id);
/* Runs deferred deletes now: those due, or all of them. */
void save_flush_deferred(struct save *s, bool all);

#endif
