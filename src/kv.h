/* kv.h: the one key-value backend interface etcdfs runs on.
 *
 * Shaped after etcd's v3 KV API so that the etcd client (src/etcd/) and the
 * embedded Raft store (src/store/) are interchangeable: every filesystem
 * feature is written once against this vtable.
 *
 * Conventions:
 *  - Keys and values are arbitrary byte strings passed as (pointer, length).
 *    A range_end of length 0 means "just this key"; a range_end of "\0"
 *    (length 1, byte 0) means "every key >= key" (etcd's convention).
 *  - Every function returns 0 or a negative errno. Errors:
 *      -ECONNREFUSED  no endpoint could be reached
 *      -ETIMEDOUT     the request (or connect) timed out
 *      -EFBIG         request larger than the backend's request limit
 *      -EACCES        authentication failed / permission denied
 *      -ERANGE        requested revision has been compacted (compact_revision
 *                     is reported through the result where there is one)
 *      -ENOENT        requested revision is in the future
 *      -EINVAL        malformed request
 *      -EIO           anything else; the backend logs the detail
 *    The backend logs a human-readable reason (endpoint, cause) itself, so
 *    callers only need to map the errno.
 *  - All functions are thread-safe and may be called concurrently.
 *  - Result structs are filled by the backend and owned by the caller, who
 *    frees them with the matching kv_*_free(). Request structs are owned by
 *    the caller and only borrowed for the duration of the call.
 */
#ifndef ETCDFS_KV_H
#define ETCDFS_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One key-value pair with etcd's metadata. key and value are heap buffers
 * owned by whoever owns the kv_kv; each has a trailing NUL byte (not counted
 * in the length) for convenience. value is NULL for keys_only results. */
struct kv_kv {
	char *key;
	size_t key_len;
	char *value;
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

void kv_kv_free(struct kv_kv *kv); /* frees key and value, not kv itself */
int kv_kv_copy(struct kv_kv *dst, const struct kv_kv *src);

enum kv_sort_order { KV_SORT_NONE = 0, KV_SORT_ASCEND, KV_SORT_DESCEND };
enum kv_sort_target {
	KV_SORT_KEY = 0,
	KV_SORT_VERSION,
	KV_SORT_CREATE,
	KV_SORT_MOD,
	KV_SORT_VALUE
};

struct kv_range_req {
	const void *key;
	size_t key_len;
	const void *range_end;
	size_t range_end_len;
	int64_t revision; /* 0 = latest */
	int64_t limit;	  /* 0 = no limit; callers page large ranges */
	bool keys_only;
	bool count_only;
	bool serializable; /* false = linearizable (quorum) read */
	enum kv_sort_order sort_order;
	enum kv_sort_target sort_target;
};

struct kv_range_result {
	struct kv_kv *kvs; /* array of n_kvs, owned */
	size_t n_kvs;
	bool more;		  /* more keys in the range beyond limit */
	int64_t count;		  /* total keys in the range */
	int64_t revision;	  /* store revision at which the range was served */
	int64_t compact_revision; /* set when the call failed with -ERANGE */
};

void kv_range_result_free(struct kv_range_result *r);

enum kv_cmp_target { KV_CMP_VERSION = 0, KV_CMP_CREATE, KV_CMP_MOD, KV_CMP_VALUE, KV_CMP_LEASE };
enum kv_cmp_result { KV_CMP_EQUAL = 0, KV_CMP_GREATER, KV_CMP_LESS, KV_CMP_NOT_EQUAL };

struct kv_compare {
	enum kv_cmp_target target;
	enum kv_cmp_result result;
	const void *key;
	size_t key_len;
	const void *range_end; /* optional: compare every key in range */
	size_t range_end_len;
	int64_t number;	   /* for VERSION, CREATE, MOD, LEASE */
	const void *value; /* for VALUE */
	size_t value_len;
};

enum kv_op_type { KV_OP_RANGE = 0, KV_OP_PUT, KV_OP_DELETE };

struct kv_op {
	enum kv_op_type type;
	const void *key;
	size_t key_len;
	const void *range_end; /* RANGE, DELETE */
	size_t range_end_len;
	const void *value; /* PUT */
	size_t value_len;
	int64_t lease;	   /* PUT */
	bool ignore_lease; /* PUT: keep the key's current lease */
	bool prev_kv;	   /* PUT, DELETE: return the previous kv(s) */
	bool keys_only;	   /* RANGE */
};

struct kv_op_result {
	enum kv_op_type type;
	struct kv_range_result range; /* RANGE: kvs; PUT/DELETE: prev kvs */
	int64_t deleted;	      /* DELETE: number of keys deleted */
};

struct kv_txn {
	const struct kv_compare *compare;
	size_t n_compare;
	const struct kv_op *success;
	size_t n_success;
	const struct kv_op *failure;
	size_t n_failure;
};

struct kv_txn_result {
	bool succeeded;
	int64_t revision;	      /* store revision after the txn */
	struct kv_op_result *results; /* n_results, owned */
	size_t n_results;
};

void kv_txn_result_free(struct kv_txn_result *r);

/* ---- watch ---- */

enum kv_event_type { KV_EVENT_PUT = 0, KV_EVENT_DELETE };

struct kv_event {
	enum kv_event_type type;
	struct kv_kv kv; /* DELETE: key and mod_revision (the deletion's revision) */
};

enum kv_watch_state {
	KV_WATCH_EVENTS = 0,   /* events[] holds changes, in revision order */
	KV_WATCH_PROGRESS,     /* no events; everything up to revision was seen */
	KV_WATCH_CONNECTED,    /* (re)established; events resume after revision */
	KV_WATCH_DISCONNECTED, /* stream lost; backend retries with backoff */
	KV_WATCH_COMPACTED,    /* start revision compacted: the watch has stopped,
				  the consumer must re-list and watch again */
	KV_WATCH_CANCELED,     /* stopped for good (err says why) */
};

struct kv_watch_batch {
	enum kv_watch_state state;
	const struct kv_event *events; /* valid only during the callback */
	size_t n_events;
	int64_t revision;	  /* header revision of this message */
	int64_t compact_revision; /* COMPACTED */
	int err;		  /* DISCONNECTED, CANCELED: negative errno */
};

/* Called on the backend's own watch thread, one batch at a time, never
 * concurrently for the same watch. It must not call kv_watch_cancel() on its
 * own watch. Events of one revision are never split across batches. */
typedef void (*kv_watch_cb)(void *arg, const struct kv_watch_batch *batch);

struct kv_watch; /* opaque, owned by the backend until kv_watch_cancel */

struct kv_watch_req {
	const void *key;
	size_t key_len;
	const void *range_end;
	size_t range_end_len;
	int64_t start_revision; /* first revision to deliver; 0 = now */
	bool prev_kv;
};

/* ---- leases ----
 *
 * Optional: a backend without leases leaves these ops NULL and the wrappers
 * answer -ENOSYS. Errors beyond the list above: -ENOENT the lease does not
 * exist (expired, revoked or never granted; also a txn PUT naming such a
 * lease, as etcd's "requested lease not found"), -EEXIST a grant with an id
 * already in use. A lease's expiry deletes every key attached to it in one
 * revision, as etcd does. */
struct kv_lease {
	int64_t id;
	int64_t ttl;	     /* seconds left (keep-alive: the TTL renewed to) */
	int64_t granted_ttl; /* seconds the grant asked for (after the backend's minimum) */
};

/* ---- the backend vtable ---- */

struct kv;

struct kv_ops {
	const char *name; /* "etcd", "store" */
	int (*range)(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res);
	int (*txn)(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res);
	int (*watch)(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
		     struct kv_watch **out);
	/* Stops delivery, joins the watch thread; after return cb is never
	 * called again. Frees w. */
	void (*watch_cancel)(struct kv_watch *w);
	int (*compact)(struct kv *kv, int64_t revision, bool physical);
	/* Cheap liveness probe; fills the current store revision. */
	int (*status)(struct kv *kv, int64_t *revision);
	/* Largest request in bytes the backend accepts (etcd: 1.5 MiB default). */
	size_t (*max_request_bytes)(struct kv *kv);
	/* Most operations one txn may hold (etcd: 128 default). */
	size_t (*max_txn_ops)(struct kv *kv);
	/* Leases (optional, see above). grant: id 0 lets the backend pick one. */
	int (*lease_grant)(struct kv *kv, int64_t id, int64_t ttl, struct kv_lease *out);
	int (*lease_revoke)(struct kv *kv, int64_t id, int64_t *revision);
	int (*lease_keepalive)(struct kv *kv, int64_t id, struct kv_lease *out);
	/* keys (may be NULL): the attached keys, key only (value NULL), owned by the caller. */
	int (*lease_ttl)(struct kv *kv, int64_t id, struct kv_lease *out,
			 struct kv_range_result *keys);
	/* *ids: malloc'd array of n lease ids, owned by the caller. */
	int (*lease_list)(struct kv *kv, int64_t **ids, size_t *n);
	void (*destroy)(struct kv *kv);
};

/* Implementations embed struct kv as their first member. */
struct kv {
	const struct kv_ops *ops;
};

/* Convenience wrappers over the vtable (kv.c). put and delete_range are txns
 * without compares. */
int kv_range(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res);
/* How many kv_range calls this process has made, on any backend (the etcd client may send
 * one as several pages). Shown as the mount root's user.etcdfs.backend_ranges. */
uint64_t kv_range_count(void);
int kv_get(struct kv *kv, const void *key, size_t key_len,
	   struct kv_kv *out); /* -ENOENT if absent */
int kv_put(struct kv *kv, const void *key, size_t key_len, const void *val, size_t val_len,
	   int64_t *revision);
int kv_delete_range(struct kv *kv, const void *key, size_t key_len, const void *range_end,
		    size_t range_end_len, int64_t *deleted, int64_t *revision);
int kv_txn(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res);
int kv_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
	     struct kv_watch **out);
void kv_watch_cancel(struct kv *kv, struct kv_watch *w);
int kv_compact(struct kv *kv, int64_t revision, bool physical);
int kv_status(struct kv *kv, int64_t *revision);
void kv_destroy(struct kv *kv);
int kv_lease_grant(struct kv *kv, int64_t id, int64_t ttl, struct kv_lease *out);
int kv_lease_revoke(struct kv *kv, int64_t id, int64_t *revision);
int kv_lease_keepalive(struct kv *kv, int64_t id, struct kv_lease *out);
int kv_lease_ttl(struct kv *kv, int64_t id, struct kv_lease *out, struct kv_range_result *keys);
int kv_lease_list(struct kv *kv, int64_t **ids, size_t *n);

/* Computes the range_end that selects every key with the given prefix
 * (etcd's "prefix + 1" rule). Writes into buf (at least prefix_len bytes)
 * and returns its length; an empty prefix or all-0xff prefix gives "\0"
 * (length 1) meaning "to the end of the keyspace". */
size_t kv_prefix_end(const void *prefix, size_t prefix_len, char *buf);

/* etcd's order of keys and values: bytewise, a prefix before what extends it. Either pointer
 * may be NULL when its length is 0. Returns <0, 0 or >0 like memcmp. */
int kv_key_cmp(const void *a, size_t a_len, const void *b, size_t b_len);
/* Whether key k is selected by [key, end) in etcd's conventions: an empty end selects key
 * alone, "\0" every key from key on. */
bool kv_key_in_range(const void *k, size_t k_len, const void *key, size_t key_len, const void *end,
		     size_t end_len);

/* etcd's order of a range sorted by target (a NULL value sorts as an empty one); ties, and
 * KV_SORT_KEY, go by key. Returns <0, 0 or >0. */
int kv_sort_cmp(const struct kv_kv *a, const struct kv_kv *b, enum kv_sort_target target);

/* etcd's compareKV, for the backends that evaluate txns themselves: whether compare c holds
 * for kv (its key and range are not looked at). kv NULL stands for the zero KeyValue of a
 * key that does not exist: numbers 0, empty value. */
bool kv_compare_kv(const struct kv_compare *c, const struct kv_kv *kv);
/* etcd's applyCompare for a range in which no key exists: the zero KeyValue is compared,
 * except that a VALUE compare then fails. */
bool kv_compare_empty(const struct kv_compare *c);

#endif
