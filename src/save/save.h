/* save.h: the commit model of the write path, without FUSE.
 *
 * Builds the transactions a save sends (compare-and-put, delete-with-compare,
 * the rename txn), keeps the copies of rejected saves, runs the deferred
 * unlinks on their own thread, and owns the write-path state of nodes (the
 * side table behind cache_node.local: shadows, origins). Results
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
/* Largest content a file may have while being written: more is -EFBIG at
 * once (the backend's request limit still applies at commit). */
#define SAVE_MAX_FILE (64u << 20)

struct save;
struct save_file;
struct save_fh;

/* The write-path state of one node, the side table behind
 * cache_node.local: allocated the first time the mount writes the node
 * (save_local_mut), so keys never written pay one NULL pointer. Protected
 * by the cache lock like the node.
 *
 * A local file exists only in this mount: a new file not yet committed, or
 * a "shadow" (editor temp file) that never reaches etcd. (An unlinked
 * key, or one renamed onto a shadow name, leaves the tree at once:
 * save_unlink_locked, save_park_key_locked. hidden is no longer set.) */
struct cache_local {
	bool local_file;
	bool shadow;
	bool hidden;
	bool pinned; /* a rename in flight: never pruned */
	bool is_link;
	bool unlinked;	  /* unlinked while open: a later close stores nothing */
	char *local_data; /* shadow content (and symlink target if link) */
	size_t local_len;
	struct save_file *file; /* per process, the content its writers share */
	/* A shadow: that key's mod_revision at rename. A local file that
	 * is not a shadow: the key it replaces is still in etcd at this
	 * revision (created again within an unlink's grace period), so its
	 * first save is one put compared against it (0: no key). */
	int64_t origin_rev;
	int64_t born_rev; /* revision the cache had when the shadow was made */
	/* Metadata etcd has no place for, kept for the life of the mount
	 * (docs/writes.md): set by chmod, chown, utimensat and local
	 * changes. */
	bool mode_set, owner_set;
	uint32_t mode; /* permission bits (07777) when mode_set */
	uint32_t uid, gid;
	int64_t atime_ns, mtime_ns, ctime_ns; /* realtime; 0 = not set here */
	/* mod_revision of this mount's last save of the content: while the
	 * key is still at it, the times set here stand, however late the
	 * cache saw the put (0: none). */
	int64_t own_rev;
};

/* n's write-path state, or the defaults (all clear) for a
 * node never written. Cache lock held, or n kept alive by a reference
 * (the slot never changes once set). */
const struct cache_local *save_local(const struct cache_node *n);
/* n's state for writing, created on first use. Cache lock held for write.
 * NULL on ENOMEM. */
struct cache_local *save_local_mut(struct cache_node *n);
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

/* ---- the content of an inode being written (file.c) ----
 *
 * The writable handles one process has of an inode share one struct
 * save_file: the same size and content through every handle and every
 * read of that process. Other processes see the committed content until
 * the save, so that two programs doing read-modify-write on one file get
 * a conflict (ESTALE), never a lost update or a read of the other's
 * unsaved bytes. Its lock is taken before the cache lock, never after. */

/* A writable handle (*out) joining n's shared content (loading it on the
 * first open: a local file's data or the key's content), emptied if trunc.
 * The handle compares its saves against the revision it opened at, moved
 * by its own saves and those of handles of the same process pid. Without
 * the cache lock. -ENOMEM, or the cache's error reading the key. */
int save_file_open(struct save *s, struct cache_node *n, bool trunc, int pid, struct save_fh **out);
/* Copies up to size bytes at off; returns the count. */
size_t save_file_read(struct save_file *f, char *buf, size_t size, off_t off);
/* Writes at off (at the end if append); *end is where the write ended.
 * -EFBIG past SAVE_MAX_FILE, -ENOMEM. */
int save_file_write(struct save_fh *h, const char *data, size_t size, off_t off, bool append,
		    size_t *end);
/* Sets the length, zero-filling a gap. -EFBIG, -ENOMEM. */
int save_file_truncate(struct save_fh *h, size_t len);
/* The size open writers see, if n has shared content (the content the
 * page cache holds, if any: save_file_cache_locked). Cache lock held. */
bool save_file_size(const struct cache_node *n, size_t *size);
/* Whether h's content may be what the kernel's page cache of n holds
 * (docs/writes.md, "Commit model"): yes if it already is, or if h is the
 * only open handle of n (n->nopen counts it) and the first of its process;
 * then it becomes so until its last handle closes. Lock held for write. */
bool save_file_cache_locked(struct cache_node *n, struct save_fh *h);
/* Whether process pid's content is what the page cache of n holds. Lock
 * held. */
bool save_file_cached_by_locked(const struct cache_node *n, int pid);
/* Whether process pid has content of n (writers open). Lock held. */
bool save_file_writes_locked(const struct cache_node *n, int pid);
/* The process whose content the page cache of n holds, or -1. Lock held. */
int save_file_cached_pid_locked(const struct cache_node *n);
/* Commits the content as one txn (save_store_text's rules) unless it is
 * unchanged; a just-created or truncated file is left for the last close
 * unless force (fsync). *wrote tells whether something was stored. */
int save_file_flush(struct save *s, struct cache_node *n, struct save_fh *h, bool force,
		    bool *wrote);
/* Ends (frees) h: the last handle commits what is still dirty (logged on
 * failure). */
int save_file_close(struct save *s, struct cache_node *n, struct save_fh *h);
/* save_file_close, telling in *stale_view whether h was the last handle of
 * the content the page cache holds (save_file_cache_locked) and that content
 * is not what other processes read (a rejected or failed save): the kernel
 * must then forget its pages and size of n. */
int save_file_close_view(struct save *s, struct cache_node *n, struct save_fh *h, bool *stale_view);
/* truncate(path): one immediate save of n's content cut or grown to len
 * (through the shared content if writers have it open). */
int save_truncate(struct save *s, struct cache_node *n, size_t len, int pid);
/* Keeps the content process pid's writers share (if any; pid -1: any
 * process's) from being freed until save_file_unref_locked: for a read
 * through any handle of that process. Lock held for write. */
struct save_file *save_file_ref_locked(struct cache_node *n, int pid);
void save_file_unref_locked(struct cache_node *n, struct save_file *f);
/* Waits for a commit of n in flight to end and keeps the next from
 * starting until save_file_unhold, so that unlink and rename never race a
 * close's save. Cache lock held for write on entry and return (dropped
 * while waiting). NULL when no writer has n open. */
struct save_file *save_file_hold_locked(struct save *s, struct cache_node *n);
/* Ends a hold. Cache lock held for write. */
void save_file_unhold_locked(struct cache_node *n, struct save_file *f);

/* ---- why saves were refused (why.c) ---- */

/* The sentence that refused the last save or delete of key (what was wrong,
 * for YAML the line and field, where the rejected content was kept), as
 * the log gave it, in *out (malloc'd). -ENODATA when the key's last save
 * succeeded or none was refused; -ENOMEM. */
int save_why_get(struct save *s, const char *key, size_t klen, char **out);
/* The same for the most recent refusal of any key. */
int save_why_last(struct save *s, char **out);
/* A refusal of no one key (a read-only mount's EROFS) for save_why_last. */
void save_why_note(struct save *s, const char *msg);

/* Every writer's file of one node, held for a rename (save_hold_locked). */
struct save_hold;
/* Waits for n's commits in flight to end and keeps the next from starting
 * until save_unhold_locked, so that a rename never races a close's save:
 * the kernel sends RELEASE after close() returns, and "touch a; mv a b"
 * stored a under its old name while the rename moved it (a key left
 * behind, and the rename back refused as a conflict). Takes every file's
 * mu, so the caller holds no other file's: renames are serialized by the
 * caller for that. Keeps n alive. Cache lock held for write on entry and
 * return, dropped while waiting. NULL when no writer has n open (or out
 * of memory: then it waited for one file only, as save_file_hold_locked). */
struct save_hold *save_hold_locked(struct save *s, struct cache_node *n);
/* The node a hold is on. */
struct cache_node *save_hold_node(const struct save_hold *h);
/* Ends a hold and frees it. Cache lock held for write. */
void save_unhold_locked(struct save *s, struct save_hold *h);

/* A rename moved n's key (from_rev, or from_absent: a new file) and
 * stored it under the new name at rev: n's writers that built on what
 * moved now build on rev (a handle's save goes to the new key, not a
 * conflict with its own rename). Files in held (may be NULL) are already
 * locked by the caller. Without the cache lock; n kept alive by a
 * reference. */
void save_file_moved(struct save *s, struct cache_node *n, int64_t from_rev, bool from_absent,
		     int64_t rev, const struct save_hold *held);

/* ---- metadata (attr.c) ---- */

#define SAVE_ATIME 1u
#define SAVE_MTIME 2u
#define SAVE_CTIME 4u

/* Sets the times named by what to now. Lock held for write. -ENOMEM. */
int save_touch_locked(struct cache_node *n, unsigned what);
/* A write by a caller without CAP_FSETID: drops setuid, and setgid where
 * group execute is set (setgid without it marks mandatory locking), as
 * Linux does. Lock held for write. -ENOMEM. */
int save_kill_priv_locked(struct cache_node *n);
/* What chmod, chown and utimensat set; a field applies when its flag is
 * in what (SAVE_ATTR_*). */
enum {
	SAVE_ATTR_MODE = 1,
	SAVE_ATTR_UID = 2,
	SAVE_ATTR_GID = 4,
	SAVE_ATTR_ATIME = 8,
	SAVE_ATTR_MTIME = 16
};
struct save_attr {
	unsigned what;
	uint32_t mode, uid, gid;
	int64_t atime_ns, mtime_ns;
};
/* Applies a; ctime becomes now. Lock held for write. -ENOMEM. */
int save_setattr_locked(struct cache_node *n, const struct save_attr *a);
/* Ownership and mode of a new node made by uid:gid with mode under parent
 * (a setgid directory passes on its group, and to directories its bit),
 * all three times now, and parent's mtime and ctime. Lock held for write.
 * -ENOMEM. */
int save_init_new_locked(struct cache_node *n, struct cache_node *parent, uint32_t mode,
			 uint32_t uid, uint32_t gid);
/* The metadata a node shows. */
struct save_meta {
	uint32_t perm; /* permission bits */
	uint32_t uid, gid;
	int64_t atime_ns, mtime_ns, ctime_ns;
};
/* Fills m from n's local metadata over the defaults in m (which the caller
 * sets: mount owner, default mode, seen_ns as every time). Local times
 * win while no later change was seen (seen_ns, the cache's time of the
 * node). Cache lock held. */
void save_meta_of(const struct cache_node *n, int64_t seen_ns, struct save_meta *m);

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
/* Stops the thread if running, commits pending deletes and frees s.
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

/* ---- unlink, create and rename (defer.c; docs/writes.md) ---- */

/* unlink of n, a file the user sees: n leaves its directory at once, as on
 * any filesystem (the name is free, the directory stays and may be empty),
 * and an open handle keeps it (nlink 0). A key, or a new file that replaces
 * one (cache_local.origin_rev), is deleted in etcd after a short grace
 * period by save_defer_delete_locked; any other local file just goes.
 * Lock held for write. -ENOMEM (nothing changed). */
int save_unlink_locked(struct save *s, struct cache_node *n);
/* Deletes key if still at rev after the grace period; until then the
 * cache holds it (cache_hold_key_locked), so that nothing shows it again.
 * Lock held for write. -ENOMEM. */
int save_defer_delete_locked(struct save *s, const char *key, size_t klen, int64_t rev);
/* rename(key -> shadow name): the key stays in etcd, hidden: the name is
 * free as after an unlink, but the delete is parked until the shadow
 * (node owner) is unlinked (save_unpark_locked: then it is due after the
 * grace period). A create or rename onto the name takes it, as a pending
 * delete. Lock held for write. -ENOMEM. */
int save_park_key_locked(struct save *s, const char *key, size_t klen, int64_t rev, uint64_t owner);
void save_unpark_locked(struct save *s, uint64_t owner);
/* The name of key is created (or renamed onto) again: takes its pending
 * delete, if any, so that the new content is one put compared against
 * *rev instead of a delete and a create. false when none is pending (or
 * it is being sent: the new key's save then waits for it, save_put_txn).
 * Lock held for write. */
bool save_take_deferred_locked(struct save *s, const char *key, size_t klen, int64_t *rev);
/* Runs deferred deletes now: those due, or all of them. */
void save_flush_deferred(struct save *s, bool all);

#endif
