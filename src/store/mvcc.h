/* mvcc.h: the in-memory multi-version keyspace behind the embedded store.
 *
 * A faithful model of etcd's MVCC semantics: one global revision, per-key
 * create_revision/mod_revision/version/lease, history kept until compaction,
 * txns evaluated exactly as etcd does (compares, then one branch; one new
 * revision per txn that changes something), and an ordered change log that
 * watches replay from.
 *
 * Not thread-safe: the store (store.c) serializes access with a rwlock
 * (mvcc_txn/mvcc_compact/mvcc_restore exclusive, everything else shared).
 * Every result struct is allocated here and owned by the caller, who frees it
 * with the kv_*_free() helpers of kv.h. Request structs are only borrowed.
 */
#ifndef ETCDFS_STORE_MVCC_H
#define ETCDFS_STORE_MVCC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

struct mvcc;

struct mvcc *mvcc_new(void);
void mvcc_free(struct mvcc *m);

int64_t mvcc_revision(const struct mvcc *m);
int64_t mvcc_compact_revision(const struct mvcc *m);
size_t mvcc_key_count(const struct mvcc *m); /* keys with retained history */

/* Raft bookkeeping: the index of the last log entry reflected in the state.
 * The store uses it to skip entries it already applied (internal restart)
 * and it travels inside snapshots. */
uint64_t mvcc_applied_index(const struct mvcc *m);
void mvcc_set_applied_index(struct mvcc *m, uint64_t index);

/* Checks a request before it is proposed: non-empty keys, at most max_ops
 * operations per list (-E2BIG), no key put twice or put and deleted in one
 * branch (-EINVAL, as etcd's "duplicate key given in txn request"). */
int mvcc_txn_validate(const struct kv_txn *txn, size_t max_ops);
/* True if neither branch writes: such a txn never changes the store and can
 * be evaluated locally without going through the log. */
bool mvcc_txn_readonly(const struct kv_txn *txn);
int mvcc_range_validate(const struct kv_range_req *req);

/* Range at req->revision (0 = current). -ERANGE (res->compact_revision set)
 * below the compaction point, -ENOENT above the current revision. */
int mvcc_range(const struct mvcc *m, const struct kv_range_req *req, struct kv_range_result *res);

/* Evaluates and applies a txn. res may be NULL when nobody waits for the
 * result (followers, replay). Deterministic: the same sequence of txns gives
 * the same state on every node. Returns 0 or -ENOMEM (state unchanged). A
 * read-only txn may be run here too (it then changes nothing). */
int mvcc_txn(struct mvcc *m, const struct kv_txn *txn, struct kv_txn_result *res);
/* mvcc_txn for a log entry written before the store had leases: a put's
 * lease that does not exist is stored as 0 instead of failing the txn. */
int mvcc_txn_legacy(struct mvcc *m, const struct kv_txn *txn, struct kv_txn_result *res);
/* Same evaluation on a shared (read) lock; txn must be read-only. */
int mvcc_txn_readonly_eval(const struct mvcc *m, const struct kv_txn *txn,
			   struct kv_txn_result *res);

/* Drops history below rev, as etcd's compaction: for each key the newest
 * version at or below rev survives unless it is a tombstone. -ERANGE if rev is
 * at or below the current compaction point, -ENOENT if in the future. */
int mvcc_compact(struct mvcc *m, int64_t rev);

/* Collects change events with revision >= from_rev whose key is in
 * [key, range_end) (kv.h conventions), in revision order. Stops after
 * max_events but never inside one revision. *next_rev is the first revision
 * not examined (the caller resumes there). *evs is a malloc'd array owned by
 * the caller (free each event's kv with kv_kv_free, then the array).
 * -ERANGE if from_rev is below the compaction point. */
int mvcc_events(const struct mvcc *m, const void *key, size_t key_len, const void *range_end,
		size_t range_end_len, int64_t from_rev, size_t max_events, struct kv_event **evs,
		size_t *n_evs, int64_t *next_rev);
void mvcc_events_free(struct kv_event *evs, size_t n);

/* Serializes the whole state (every retained version) as a protobuf
 * Snapshot message into a malloc'd buffer owned by the caller. */
int mvcc_snapshot(const struct mvcc *m, void **buf, size_t *len);
/* Builds a new state from a Snapshot message; -EINVAL if malformed. */
int mvcc_restore(const void *buf, size_t len, struct mvcc **out);

/* ---- leases ----
 *
 * The lease table (id, granted TTL, attached keys) is replicated state: it
 * changes only through mvcc_lease_grant/revoke and txns, and travels in
 * snapshots. Each lease also has a local deadline (monotonic ms) that is NOT
 * replicated: it is set to now + TTL on grant, restore and promotion, and
 * moved by renew. Deadlines are atomics, so the deadline calls work on a
 * shared lock. A put with a lease attaches the key (leaving its old lease), a
 * delete detaches it; a txn put naming a missing lease fails with -ENOENT. */

/* Grants a lease of ttl seconds (> 0). id 0 picks an unused id derived from
 * seed (the raft index: the same on every node). -EEXIST if id is in use. */
int mvcc_lease_grant(struct mvcc *m, int64_t id, int64_t ttl, uint64_t seed, int64_t now_ms,
		     int64_t *out_id);
/* Deletes every key attached to the lease in one new revision (none if it
 * has no keys) and drops the lease; *revision is the store revision after.
 * -ENOENT if there is no such lease. */
int mvcc_lease_revoke(struct mvcc *m, int64_t id, int64_t *revision);
/* Moves the local deadline to now + TTL; -ENOENT if missing or already past
 * its deadline (the leader is revoking it). out->ttl is the granted TTL. */
int mvcc_lease_renew(const struct mvcc *m, int64_t id, int64_t now_ms, struct kv_lease *out);
/* Seconds left before the local deadline (truncated) and the granted TTL;
 * keys (may be NULL) receives the attached keys in key order, key only.
 * -ENOENT if missing or past its deadline. */
int mvcc_lease_get(const struct mvcc *m, int64_t id, int64_t now_ms, struct kv_lease *out,
		   struct kv_range_result *keys);
/* Every lease id, ascending, in a malloc'd array (NULL when n is 0). */
int mvcc_lease_list(const struct mvcc *m, int64_t **ids, size_t *n);
size_t mvcc_lease_count(const struct mvcc *m);
/* A new leader's rule: every lease gets its full TTL from now. */
void mvcc_lease_promote(struct mvcc *m, int64_t now_ms);
/* Up to max leases past their deadline, into ids; each one returned is not
 * returned again for retry_ms (its revoke is in flight). Scans the table only
 * once the earliest deadline it knows of has come. Loop thread only (it keeps
 * loop-thread bookkeeping, which is why it and promote take m non-const, though
 * they need only the shared lock). */
size_t mvcc_lease_expired(struct mvcc *m, int64_t now_ms, int64_t retry_ms, int64_t *ids,
			  size_t max);

/* Integrity check: index order, per-key revision/version invariants, change
 * log consistency, every live key's lease exists and lists it. Returns 0 or
 * -EUCLEAN, logging the first violation. */
int mvcc_check(const struct mvcc *m);

#endif
