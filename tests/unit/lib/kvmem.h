/* kvmem.h: an in-memory kv.h backend with fault injection, for unit tests that need no Raft.
 *
 * The keyspace is the embedded store's MVCC core (src/store/mvcc.c), so ranges, txns,
 * compaction and watch replay follow etcd exactly as the store does: one global revision,
 * paging with limit/more, reads at a revision (-ERANGE below the compaction point, -ENOENT
 * above the current revision), at most 128 operations per txn list (-E2BIG, as both real
 * backends answer), requests over 1.5 MiB rejected with -EFBIG. Results are owned by the
 * caller as kv.h states.
 *
 * Thread-safe: one mutex guards the keyspace, the counters and the faults. Each watch has its
 * own delivery thread that calls back without holding that mutex: first CONNECTED, then
 * EVENTS (or PROGRESS for revisions that bring it nothing) in revision order, COMPACTED (and
 * the watch stops) when the revision it needs is compacted.
 *
 * Faults are armed per call kind and counted from the moment they are armed. Every call of
 * range, txn, status, watch and compact counts (kv_put and kv_delete_range are txns);
 * max_request_bytes, max_txn_ops and watch_cancel do not. An injected error is logged at
 * LOG_WARNING, as a real backend logs its failures. When two faults fall on the same call,
 * the one armed first fires and the other fires on the next call it matches.
 */
#ifndef ETCDFS_TEST_KVMEM_H
#define ETCDFS_TEST_KVMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

/* A new empty keyspace at revision 1 (etcd's starting point); NULL when out of memory.
 * Destroy it with kv_destroy(); watches still open then are stopped and freed. */
struct kv *kvmem_new(void);

enum kvmem_call { KVMEM_ANY = 0, KVMEM_RANGE, KVMEM_TXN, KVMEM_STATUS, KVMEM_WATCH, KVMEM_COMPACT };

/* The call number after+1 of that kind (counted from now) fails once with err (a negative
 * errno: -ETIMEDOUT, -EIO, -ENOMEM...) and changes nothing. When applied is true and the call
 * is a txn or a compact, it is carried out first and then err returned: a reply lost after
 * the write happened (a call that fails on its own returns its own error and still uses the
 * fault up). At most 16 faults are armed at once; arming more aborts the test. */
void kvmem_fail(struct kv *kv, enum kvmem_call which, unsigned after, int err, bool applied);

/* Every call of that kind fails with err, from now until kvmem_fail_clear(): a backend that
 * is down. */
void kvmem_fail_always(struct kv *kv, enum kvmem_call which, int err);

/* The call number after+1 of KVMEM_TXN has its compares evaluate false, as if another writer
 * had won: the failure branch runs (and is applied) and succeeded is false. This holds for a
 * txn without compares too, so count only the txns you mean. */
void kvmem_fail_compare(struct kv *kv, unsigned after);

/* The call number after+1 of that kind (counted from now) waits, before it does anything,
 * until kvmem_release_stall(); calls of other threads go on meanwhile. kvmem_wait_stalled()
 * returns once a call waits there. For races that need one call held in flight. One stall
 * at a time. */
void kvmem_stall(struct kv *kv, enum kvmem_call which, unsigned after);
void kvmem_wait_stalled(struct kv *kv);
void kvmem_release_stall(struct kv *kv);

/* Disarms every fault that has not fired yet. */
void kvmem_fail_clear(struct kv *kv);

/* Calls made so far of that kind; KVMEM_ANY gives the total. */
unsigned long kvmem_calls(struct kv *kv, enum kvmem_call which);

/* ---- another writer ---- */

/* A second handle on the same keyspace, for "another client": every kv_* call made through
 * it (reads, writes, watches, compaction) behaves as on kv but is neither counted nor subject
 * to faults, so it does not shift the call numbers a test armed its faults with. It lives as
 * long as kv; never kv_destroy() it. */
struct kv *kvmem_other(struct kv *kv);
/* Shorthands for writes through kvmem_other(kv): a txn (same result ownership and errors as
 * kv_txn()), a put of one key, a delete of one key. *revision (may be NULL) gets the new
 * revision. */
int kvmem_external_txn(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res);
int kvmem_external_put(struct kv *kv, const void *key, size_t key_len, const void *val,
		       size_t val_len, int64_t *revision);
int kvmem_external_delete(struct kv *kv, const void *key, size_t key_len, int64_t *revision);

/* The current revision, without counting a call. */
int64_t kvmem_revision(struct kv *kv);

/* ---- watch streams ---- */

/* Every open watch gets KV_WATCH_CANCELED with err (as a server cancelling it) and stops;
 * the consumer still calls kv_watch_cancel() to free it. Returns how many were canceled. */
size_t kvmem_watch_cancel_all(struct kv *kv, int err);
/* Every open watch gets KV_WATCH_DISCONNECTED with err, then KV_WATCH_CONNECTED, and goes on
 * where it was, as a stream re-established by the backend. Returns how many. */
size_t kvmem_watch_disconnect_all(struct kv *kv, int err);

#endif
