/* cache.h: the in-memory key tree and value cache of one mounted prefix.
 *
 * At start the whole prefix is listed (paged) at one revision R, then
 * watched from R+1; every event updates the tree, so lookups, listings and
 * sizes never touch the network while the watch is healthy. Values are kept
 * in an LRU bounded by max_bytes and fetched again when evicted. With a
 * render function the LRU keeps the stored bytes, not the rendering: every
 * value is rendered once for its size (exact, so stat needs no render),
 * and rendered again when read; the texts of recently read versions are
 * kept too, in 1/16 of max_bytes.
 *
 * The tree is keyed by raw key segments. A key K under prefix P becomes the
 * relative key R = K[len(P):]. When P is empty, keys starting with '/' have
 * that slash dropped (namespace 0) and keys without it live in namespace 1
 * of the root; fs/ shows namespace-1 names with a marker (docs/naming.md).
 * Every other split is on '/', so empty segments are legal.
 *
 * Each node has a stable id for its life: the index of its slot in the id
 * table and the slot's generation, which grows each time a freed slot is
 * reused, so an id (an inode the kernel forgot, one in a queued
 * notification or a directory listing) never names a later node. Its file
 * inode is 4*id, its directory inode 4*id+1 and its raw-bytes view 4*id+2,
 * so a key that is also a prefix has two inodes (the directory, and its
 * value shown inside it), and a file that turns into a directory gets a
 * new inode as the kernel requires. The root is id 0, directory inode 1 (FUSE_ROOT_ID).
 *
 * No FUSE here: changes that the kernel must hear about are reported through
 * cache_config.notify, called with the cache lock held; it must only queue.
 *
 * Locking: one rwlock (cache->lock) protects the tree and every node field
 * marked "protected by lock"; the LRU has its own mutex (lru_lock), always
 * taken after lock, never before. Network I/O is never done with either held.
 */
#ifndef ETCDFS_CACHE_H
#define ETCDFS_CACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "kv.h"

#define CACHE_ROOT_INO 1

struct cache;
struct cache_local;
/* links of the value LRU (cache.c: the first member of struct cache_val) */
struct cache_lru {
	struct cache_lru *prev, *next;
};
#define CACHE_ID_CHUNK 4096
struct cache_val;  /* cache.c: the stored bytes of one version of a key */
struct cache_text; /* cache.c: the rendered content of one version */

/* How the cache treats the write-path state of a node (set by src/save). */
struct cache_local_ops {
	/* A node whose state keeps it (a local file, a hidden key, a rename
	 * in flight) is never pruned. */
	bool (*keep)(const struct cache_local *l);
	/* Frees the state with its node. */
	void (*free)(struct cache_local *l);
};

/* State few nodes need, in a record allocated on first use (cache.c,
 * node_x) and freed again, under the write lock, once it is back to its
 * defaults: the kernel's view of a node the kernel has looked up, its
 * references, its write-path state, a directory's children, a renamed
 * node's segment. A key synced and never looked up, written or listed as
 * a directory has none (docs/design.md, Memory). */
struct cache_node_x {
	/* The version whose size the kernel was last told (protected by
	 * lru_lock). Reads are served from it until the kernel asks for
	 * attributes again, so data always matches the kernel's i_size and a
	 * reader racing a change never gets a mix of two versions. */
	int64_t rep_rev;
	struct cache_val *rep_val; /* stored bytes of rep_rev when not the current */
	int64_t pending_inval;	   /* a change the kernel was not yet told about */
	int64_t kernel_rev;	   /* content revision the kernel page cache holds */
	/* times the kernel was told rep_val's size (protected by lru_lock):
	 * the notifier compares it around an invalidation (cache_inval_done) */
	uint32_t rep_told;
	/* references that keep a detached node alive, protected by lock
	 * (atomic increments under the read lock) */
	uint64_t nlookup; /* kernel lookups (file and dir inode together) */
	uint32_t nopen;	  /* open handles */
	/* A directory's children, in the order they came (listings keep it):
	 * node indices (cache_node_at), 0 for a hole a removal left;
	 * n_kids of them live, n_slots used, room for cap. Protected by lock. */
	uint32_t n_kids, n_slots, cap;
	uint32_t *kids;
	/* Write-path state (struct cache_local, src/save/save.h), owned by
	 * src/save. Set once under the write lock, then kept until the node
	 * is freed. */
	struct cache_local *local;
	char *seg; /* the segment after a rename (seg_out) */
};

struct cache_node {
	/* immutable: the index of its slot in the id table (low 32 bits) and
	 * that slot's generation (high bits), so an id never names a later
	 * node that reuses the slot */
	uint64_t id;
	struct cache_node *parent; /* protected by lock; NULL for root or detached */
	/* Value cache, protected by lru_lock (and lock for the pointer swap).
	 * The stored bytes are kept, not the content shown: a rendered view
	 * (YAML) renders again on read, and keeps the text of recently read
	 * versions only, beside the bytes (docs/design.md, Memory). */
	struct cache_val *val;	/* stored bytes of a version, NULL if not cached */
	struct cache_node_x *x; /* NULL when all its fields would be defaults */
	/* the key at this path, protected by lock */
	int64_t create_revision, mod_revision, version, lease;
	/* Realtime ns of the last change seen, 0 = unknown (fs shows the mount
	 * time); protected by lock. A key: when the watch, a resync or a save
	 * of this mount changed it, else (initial load) the time its value
	 * records (cache_config.value_time). A directory: when an entry last
	 * appeared in it or vanished from it, else (initial load) the latest
	 * time below it. Shared by a node's file and directory inodes. */
	int64_t mtime_ns;
	uint32_t raw_size;	/* stored value size (etcd's values are < 2 GiB) */
	uint32_t rendered_size; /* size of the content shown (render() keeps it < 4 GiB) */
	uint32_t seg_len;
	uint32_t hnext; /* next node index in its name hash chain (0: none) */
	uint32_t pos;	/* its slot in parent's x->kids */
	/* monotonic ms of the last content change, low 32 bits (0 = none;
	 * protected by lru_lock): cache_changed_ms */
	uint32_t changed;
	int8_t ns; /* 1 for non-slash top-level keys (see above) */
	/* protected by lock */
	bool local_dir : 1; /* created by mkdir, kept while empty */
	bool detached : 1;  /* removed from the tree, kept alive by references */
	bool has_value : 1;
	bool seen : 1;	  /* listed by the running resync (its sweep) */
	bool seg_out : 1; /* renamed: the segment is x->seg, not seg */
	char seg[];	  /* raw segment bytes, NUL-terminated (cache_node_seg) */
};

/* What changed, for kernel invalidation. Names are raw segments. */
enum cache_change_kind {
	CACHE_CHG_CONTENT,   /* node's value/size changed: inode file_ino */
	CACHE_CHG_NEW,	     /* name appeared in dir parent_ino */
	CACHE_CHG_DELETE,    /* name vanished from dir parent_ino (child_ino) */
	CACHE_CHG_RETYPE,    /* name in parent switched file <-> directory */
	CACHE_CHG_DIR,	     /* listing of dir parent_ino changed (e.g. %value) */
	CACHE_CHG_ALL_ATTRS, /* health changed: drop every cached attribute */
};

struct cache_change {
	enum cache_change_kind kind;
	uint64_t parent_ino;
	uint64_t ino;	 /* CONTENT: the inode; DELETE: the child inode */
	int64_t rev;	 /* CONTENT: the revision now current */
	const char *seg; /* valid during the call only */
	size_t seg_len;
	int ns;
};

/* Renders a stored value to the content a file shows (YAML for Kubernetes
 * values). Returns 0 and a malloc'd buffer, -EIO when the value must not be
 * shown at all (reads of the file then fail with EIO: an encrypted value
 * without its key), or another negative errno to show the raw bytes. out is
 * NULL when only the length is wanted (the initial sync's sizes): the text
 * need not be built whole then. Called without locks held. */
typedef int (*cache_render_fn)(void *arg, const char *key, size_t key_len, const char *val,
			       size_t val_len, int64_t mod_revision, char **out, size_t *out_len);

/* The realtime (ns since the epoch) a stored value records as its latest
 * write (a Kubernetes object's managedFields and creation times), or 0 when
 * it records none. Called without locks, from several threads at once, for
 * every key of the initial listing only. */
typedef int64_t (*cache_time_fn)(void *arg, const char *key, size_t key_len, const char *val,
				 size_t val_len);

struct cache_config {
	struct kv *kv;	    /* borrowed */
	const char *prefix; /* borrowed; normalized by the caller */
	size_t prefix_len;
	size_t max_bytes; /* value cache bound (stored bytes and texts) */
	size_t page_size; /* keys per range page at sync (default 1000) */
	/* A paced listing leaves etcd idle for sync_pace times as long as it
	 * took to serve each page, and renders on one thread meanwhile; 0:
	 * full speed; negative: CACHE_PACE_AUTO past pace_above keys (default
	 * CACHE_PACE_ABOVE), else full speed. See list_all in cache.c. */
	double sync_pace;
	uint64_t pace_above;
	cache_render_fn render; /* NULL = raw */
	void *render_arg;
	cache_time_fn value_time; /* NULL = keys load with mtime_ns 0 */
	void *value_time_arg;
	void (*notify)(void *arg, const struct cache_change *chg);
	void *notify_arg;
	bool no_watch;	  /* static view (time travel, snapshot) */
	int64_t revision; /* list at this revision (0 = latest) */
	long stale_ms;	  /* how long an unhealthy watch may serve cache */
};

#define CACHE_PACE_AUTO 8.0
#define CACHE_PACE_ABOVE 200000

enum cache_health { CACHE_SYNCING = 0, CACHE_HEALTHY, CACHE_DEGRADED };

struct cache_stats {
	enum cache_health health;
	int64_t revision; /* last revision applied from etcd */
	uint64_t keys;
	uint64_t value_bytes; /* bytes in the value cache */
	uint64_t hits, misses, fetch_errors, events, resyncs;
	uint64_t read_ahead;   /* versions cached by read-ahead along a miss */
	uint64_t watch_age_ms; /* since the watch last proved current (event/progress/probe) */
	uint64_t sync_done, sync_total; /* keys listed by the current or last listing, of */
	bool syncing;			/* a listing (initial sync or resync) is running */
	int64_t sync_elapsed_ms;	/* since that listing started */
};

/* One line on a listing's progress into buf: "12000 of 100000 keys (12%),
 * 45000 keys/s, about 2 s left" (no rate or time left before a second has
 * passed; "N keys" once done). */
void cache_progress_text(char *buf, size_t size, uint64_t done, uint64_t total, int64_t elapsed_ms,
			 bool finished);

struct cache {
	struct cache_config cfg;
	pthread_rwlock_t lock;
	pthread_mutex_t lru_lock;
	int rep_grace_ms; /* cache_set_rep_grace; atomic */
	/* everything below protected by lock unless noted */
	struct cache_node *root;
	/* The name hash: heads of chains of node indices (0: empty; the root,
	 * index 0, has no name), load factor up to 1. */
	uint32_t *by_name;
	size_t by_name_cap;
	/* The id table: node index -> node, in chunks of CACHE_ID_CHUNK
	 * slots. A free slot holds the next free index and the generation its
	 * next node gets (cache.c, id_put). Detached nodes keep their slot. */
	uint64_t **ids;
	size_t ids_cap;	  /* chunk pointers allocated */
	uint32_t n_ids;	  /* slots used so far */
	uint32_t id_free; /* first free slot, 0: none */
	size_t n_nodes;
	uint64_t n_keys;
	struct cache_lru lru_head; /* protected by lru_lock */
	size_t lru_bytes;	   /* protected by lru_lock: stored bytes cached */
	size_t val_max;		   /* bound of lru_bytes (immutable) */
	/* Rendered texts, most recently used first (circular; protected by
	 * lru_lock), and their bound: 1/16 of max_bytes, taken from val_max. */
	struct cache_text *text_mru;
	size_t text_bytes, text_max;
	struct kv_watch *watch;
	/* health: atomics, readable without locks */
	int health;
	int64_t revision;
	int64_t seen_rev;   /* highest revision known, local writes included */
	int64_t last_ok_ms; /* last time the watch proved fresh */
	uint64_t hits, misses, fetch_errors, events, resyncs;
	uint64_t read_ahead; /* versions cached by read-ahead (atomic) */
	/* The last miss's directory (index), its slot there and the siblings
	 * it fetched along (cache.c, ahead_window); protected by lru_lock. */
	uint32_t ra_dir, ra_pos, ra_window;
	/* tombstones of local writes the watch has not caught up with */
	struct cache_tomb *tombs;
	pthread_t health_thread;
	bool health_running;
	pthread_mutex_t health_mu;
	pthread_cond_t health_cv;
	bool quiet; /* initial sync: the kernel knows nothing yet */
	/* The change being applied is this mount's own: src/save keeps its
	 * times, the cache's mtime_ns stays (protected by lock). */
	bool own_change;
	bool stopping;	    /* protected by health_mu */
	bool resync_wanted; /* protected by health_mu */
	/* the running or last listing's progress (atomic), for the log and the
	 * mount root's user.etcdfs.sync */
	uint64_t sync_done, sync_total;
	int64_t sync_t0_ms;
	bool syncing;
	/* Threads that render a listing page (usable CPUs, at most 8); set
	 * before the initial sync, then read-only. */
	size_t render_threads;
	uint64_t render_helpers_used;		 /* helper threads started so far (atomic) */
	const struct cache_local_ops *local_ops; /* protected by lock; NULL = none */
	int64_t probe_failed_ms;		 /* atomic: when the last backend probe failed */
	int probe_err;				 /* atomic: and how */
};

/* Creates the cache and runs the initial sync (returns its error). Starts
 * the watch unless cfg->no_watch. */
int cache_new(const struct cache_config *cfg, struct cache **out);
void cache_destroy(struct cache *c);

void cache_rdlock(struct cache *c);
void cache_wrlock(struct cache *c);
void cache_unlock(struct cache *c);

/* Lookups; the lock must be held (read or write). */
struct cache_node *cache_node_by_id(struct cache *c, uint64_t id);
struct cache_node *cache_child(struct cache *c, struct cache_node *dir, int ns, const char *seg,
			       size_t seg_len);
/* Inode numbers: 4*id + kind. */
enum { CACHE_INO_FILE = 0, CACHE_INO_DIR = 1, CACHE_INO_RAW = 2 };
static inline uint64_t cache_ino_id(uint64_t ino)
{
	return ino >> 2;
}
static inline int cache_ino_kind(uint64_t ino)
{
	return (int)(ino & 3);
}
static inline uint64_t cache_file_ino(const struct cache_node *n)
{
	return n->id * 4 + CACHE_INO_FILE;
}
static inline uint64_t cache_dir_ino(const struct cache_node *n)
{
	return n->id * 4 + CACHE_INO_DIR;
}
static inline uint64_t cache_raw_ino(const struct cache_node *n)
{
	return n->id * 4 + CACHE_INO_RAW;
}
/* n's side record, NULL when it has none. Any lock. */
static inline struct cache_node_x *cache_node_x(const struct cache_node *n)
{
	return __atomic_load_n(&n->x, __ATOMIC_ACQUIRE);
}
static inline uint32_t cache_n_children(const struct cache_node *n)
{
	const struct cache_node_x *x = cache_node_x(n);
	return x ? x->n_kids : 0;
}
static inline bool cache_is_dir(const struct cache_node *n)
{
	return cache_n_children(n) > 0 || n->local_dir || n->parent == NULL;
}
static inline const char *cache_node_seg(const struct cache_node *n)
{
	return n->seg_out ? n->x->seg : n->seg;
}
/* Open handles and kernel lookups of n. Lock held. */
static inline uint32_t cache_nopen(const struct cache_node *n)
{
	const struct cache_node_x *x = cache_node_x(n);
	return x ? __atomic_load_n(&x->nopen, __ATOMIC_RELAXED) : 0;
}
static inline uint64_t cache_nlookup(const struct cache_node *n)
{
	const struct cache_node_x *x = cache_node_x(n);
	return x ? __atomic_load_n(&x->nlookup, __ATOMIC_RELAXED) : 0;
}
/* n's write-path state, NULL for a key never written. Lock held. */
static inline struct cache_local *cache_node_local(const struct cache_node *n)
{
	const struct cache_node_x *x = cache_node_x(n);
	return x ? __atomic_load_n(&x->local, __ATOMIC_ACQUIRE) : NULL;
}
/* Sets it, once (lock held for write). 0 or -ENOMEM. */
int cache_node_set_local(struct cache_node *n, struct cache_local *l);
/* The content revision the kernel's page cache holds of n (0: unknown,
 * -1: whatever it holds must go). Lock held (read is enough). */
static inline int64_t cache_kernel_rev(const struct cache_node *n)
{
	const struct cache_node_x *x = cache_node_x(n);
	return x ? __atomic_load_n(&x->kernel_rev, __ATOMIC_RELAXED) : 0;
}
void cache_set_kernel_rev(struct cache_node *n, int64_t rev);
/* Monotonic ms of n's last content change (util_now_ms), 0 when none;
 * kept to 32 bits, so a change 49.7 days old may look recent again. */
int64_t cache_changed_ms(const struct cache_node *n);
/* The live node in the id table after index *i (from 0), or NULL at the
 * end; *i moves on. Lock held. */
struct cache_node *cache_next_node(const struct cache *c, uint32_t *i);
/* dir's children in the order they came, from *i = 0 on; NULL at the
 * end. Lock held. */
struct cache_node *cache_next_child(const struct cache *c, const struct cache_node *dir,
				    uint32_t *i);

/* n's mtime_ns as a timespec, or dflt when unknown (0). Lock held. */
static inline struct timespec cache_node_mtime(const struct cache_node *n, struct timespec dflt)
{
	if (!n->mtime_ns)
		return dflt;
	struct timespec ts = {.tv_sec = n->mtime_ns / 1000000000,
			      .tv_nsec = n->mtime_ns % 1000000000};
	return ts;
}

/* Full etcd key of a node (prefix + relative path). Lock held. malloc'd. */
char *cache_node_key(struct cache *c, const struct cache_node *n, size_t *len);

/* Maps an absolute etcd key to (is under prefix). Returns false if the key
 * is outside the mounted prefix. */
bool cache_key_in_prefix(const struct cache *c, const char *key, size_t key_len);

/* Size to tell the kernel for n, and remembers that it was told: the
 * previous version's while the kernel has not yet been told to drop its
 * pages (so pages and i_size always belong to one version). Lock held. */
size_t cache_report_size(struct cache *c, struct cache_node *n);
/* For how long after a change reads keep getting the version whose size
 * the kernel was told, after the invalidation too (0, the default: only
 * until it was delivered). A mount whose reads have no OPEN (fs no_open)
 * needs it, as nothing else makes the kernel ask for the new size before
 * a read; a mapping then sees a change up to that late. */
void cache_set_rep_grace(struct cache *c, int ms);
/* The size the kernel was last told for n, not moving it to a newer
 * version (fs: another reader may still be copying pages of the told one).
 * Lock held. */
size_t cache_held_size(struct cache *c, struct cache_node *n);
/* Taken by the notifier before it invalidates n's content, for
 * cache_inval_done. Lock held (read is enough). */
uint32_t cache_inval_begin(struct cache *c, struct cache_node *n);
/* The notifier delivered the invalidation of n's content up to rev; told
 * is what cache_inval_begin returned before it. Lock held (read is
 * enough). */
void cache_inval_done(struct cache *c, struct cache_node *n, int64_t rev, uint32_t told);

/* Copies up to size bytes of n's content at off into buf. Fetches from the
 * backend when not cached. Must be called WITHOUT the lock; n must be kept
 * alive by a reference (nlookup/nopen). Returns bytes copied or -errno. */
ssize_t cache_read(struct cache *c, struct cache_node *n, char *buf, size_t size, off_t off);

/* Returns a malloc'd copy of n's whole content and its mod_revision.
 * Without the lock held. */
int cache_get_content(struct cache *c, struct cache_node *n, char **out, size_t *len,
		      int64_t *mod_revision);

/* The stored bytes of n's key (not the rendered content), fetched from the
 * backend (at the pinned revision for static views). Without the lock. */
int cache_get_raw(struct cache *c, struct cache_node *n, char **out, size_t *len);

/* Revalidates one node against the backend (used when the watch is
 * unhealthy or for linearizable opens). Without the lock. */
int cache_revalidate(struct cache *c, struct cache_node *n);

/* Applies the result of a local write so reads see it at once.
 * Without the lock. kv NULL means the key was deleted at revision rev. */
void cache_apply_local(struct cache *c, const char *key, size_t key_len, const struct kv_kv *kv,
		       int64_t rev);

/* A pending delete of key at rev (src/save's deferred unlink): no event or
 * listing of the key at rev or before may show it again, until
 * cache_release_key_locked: then forget, or keep refusing the events (not
 * a listing) until the watch is past rev. Lock held for write. -ENOMEM. */
int cache_hold_key_locked(struct cache *c, const char *key, size_t key_len, int64_t rev);
void cache_release_key_locked(struct cache *c, const char *key, size_t key_len, int64_t rev,
			      bool forget);
/* This mount removed n's key (key is n's): n no longer shows it, and a
 * node left with nothing leaves the tree (its directory stays, as the
 * caller's own change: no time moves here). Lock held for write. */
void cache_unlink_locked(struct cache *c, struct cache_node *n, const char *key, size_t key_len);

/* Installs the write path's handling of cache_node.local. Lock NOT held. */
void cache_set_local_ops(struct cache *c, const struct cache_local_ops *ops);

/* Creates a node (a local directory when dir is true) under parent. Lock must be
 * held for write. -EEXIST if the name exists. */
int cache_mknode_locked(struct cache *c, struct cache_node *parent, int ns, const char *seg,
			size_t seg_len, bool dir, struct cache_node **out);
/* Moves n (with its id, so the kernel's inode stays valid) to a new name.
 * A node already at the destination is detached first. Lock held for
 * write. No kernel notification: the kernel did the rename itself. */
int cache_move_locked(struct cache *c, struct cache_node *n, struct cache_node *newparent, int ns,
		      const char *seg, size_t seg_len);
/* Drops n's cached content (e.g. when it turns into a local file). */
void cache_drop_rendered_locked(struct cache *c, struct cache_node *n);
/* Marks n as no longer holding a key (local bookkeeping). Lock held. */
void cache_forget_key_locked(struct cache *c, struct cache_node *n);

/* Metadata of a key a local write just stored (cache_set_key_locked). */
struct cache_key_meta {
	int64_t create_revision, mod_revision, version, lease;
	size_t raw_size, rendered_size; /* < 4 GiB, as render() keeps them */
};
/* Makes n show a key with this metadata (counted in the stats' keys). Lock
 * held for write. */
/* The kernel is being told n's current version (a save through the
 * mount: its page cache holds what was written): sizes and reads stop
 * serving the version it was told before. Lock held. */
void cache_told_locked(struct cache *c, struct cache_node *n);
void cache_set_key_locked(struct cache *c, struct cache_node *n, const struct cache_key_meta *m);

/* Removes a node that has no key, children or local state left (after the
 * caller cleared them). Lock held for write. */
void cache_prune_locked(struct cache *c, struct cache_node *n);

/* mkdir/rmdir of local (empty) directories; lock must NOT be held. */
int cache_mkdir(struct cache *c, struct cache_node *parent, int ns, const char *seg, size_t seg_len,
		struct cache_node **out);
int cache_rmdir(struct cache *c, struct cache_node *parent, int ns, const char *seg,
		size_t seg_len);

/* Reference counting for the fs layer. Lock must be held (write for unref
 * since it may free). */
void cache_ref_lookup(struct cache *c, struct cache_node *n);
void cache_unref_lookup(struct cache *c, struct cache_node *n, uint64_t nlookup);
void cache_ref_open(struct cache *c, struct cache_node *n);
void cache_unref_open(struct cache *c, struct cache_node *n);

/* True when the cache may be trusted without asking the backend. */
bool cache_fresh(struct cache *c);
/* The highest revision known, local writes included. Any lock state. */
int64_t cache_seen_rev(struct cache *c);
/* While the watch is unhealthy the cache may be stale: asks the backend
 * (kv_status) whether it is there, so errors surface instead of old data.
 * 0 when fresh or reachable, else -ETIMEDOUT or -EIO; one failure answers
 * for the next second. Without the lock. */
int cache_probe(struct cache *c);
void cache_get_stats(struct cache *c, struct cache_stats *st);

#endif
