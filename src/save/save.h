/* save.h: the commit model of the write path, without FUSE.
 *
 * Builds the transactions a save sends (compare-and-put, delete-with-compare,
 * the rename txn), keeps the copies of rejected saves, and runs the deferred
 * unlinks on their own thread. Results are applied to the cache at once so
 * reads see them before the watch does. fs/ calls this module and never the
 * backend itself. See docs/writes.md.
 *
 * Locking: no function here is called with the cache lock held unless it
 * says so; the cache lock is never held across a backend call. The deferred
 * list has its own mutex (dd_lock), taken after the cache lock, never before.
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

/* Turns saved text into stored bytes (view.h: view_encode); -ENOTSUP from it
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
