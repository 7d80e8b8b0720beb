/* store.h: the embedded Raft-replicated MVCC store behind the kv.h vtable.
 *
 * store_open() returns a struct kv whose operations behave like etcd's v3 KV
 * API (see kv.h and docs/store.md). Every write is a Raft log entry (libraft
 * with its libuv I/O backend, on a store-owned loop thread); a write returns
 * only once its entry is committed, on disk and applied. Reads come from the
 * local state machine: serializable ones on any node; linearizable ones on
 * the leader after a read barrier (followers forward them), so they never
 * return stale data (docs/store.md). Watch callbacks run on one store-owned
 * thread per watch, never on the Raft loop thread.
 *
 * Ownership: store_open() copies everything it needs from cfg (the caller may
 * free cfg's strings afterwards). The returned kv is freed with kv_destroy(),
 * which stops the Raft loop, the forwarding server and any watch still open.
 */
#ifndef ETCDFS_STORE_STORE_H
#define ETCDFS_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

struct store_config {
	const char *data_dir; /* created if missing (mode 0700); required */
	unsigned id;	      /* raft server id, default 1 */
	/* Raft address "IP:PORT" of this node. Single node: unused (no socket is
	 * opened). Multi-node: defaults to this node's entry in peers. */
	const char *listen;
	/* NULL for a single node, or "1=127.0.0.1:7001,2=127.0.0.1:7002,..."
	 * Each entry may end in ":FWDPORT", the port followers forward client
	 * requests to; default raft port + 1000. */
	const char *peers;
	unsigned snapshot_threshold;   /* entries between snapshots, default 1024 */
	unsigned snapshot_trailing;    /* entries kept after a snapshot, default 128 */
	long apply_timeout_ms;	       /* write waits for commit, default 5000 -> -ETIMEDOUT */
	long open_timeout_ms;	       /* store_open waits for a leader, default 10000 */
	size_t max_request_bytes;      /* default 1.5 MiB like etcd -> -EFBIG */
	size_t max_txn_ops;	       /* default 128 like etcd -> -E2BIG */
	unsigned election_timeout_ms;  /* default 1000 */
	unsigned heartbeat_timeout_ms; /* default 100 */
	size_t segment_size;	       /* raft log segment size, default 8 MiB */
	/* History older than this many revisions is compacted automatically by
	 * the leader (a compaction entry, so every node does the same), checked
	 * every 50 ms once twice as many have accumulated. Default 10000; 0 turns
	 * it off (then only kv_compact() frees history). */
	int64_t auto_compact_retain;
};

void store_config_init(struct store_config *cfg);

/* Opens (creating/bootstrapping if needed) the store in cfg->data_dir and
 * starts Raft. A single node is leader when this returns; a multi-node store
 * waits up to open_timeout_ms for a leader, then returns anyway (requests fail
 * with -ETIMEDOUT until a quorum is up). Errors: -EINVAL bad config, -EACCES /
 * -EROFS / -ENOSPC data dir unusable, -EBUSY data dir used by another process,
 * -EUCLEAN stored data failed to load; each is logged with the cause. */
int store_open(const struct store_config *cfg, struct kv **out);

/* Integrity check of the state machine (revision and index invariants, change
 * log consistency). 0 or -EUCLEAN (logged). kv must come from store_open. */
int store_check(struct kv *kv);

struct store_status {
	unsigned id;
	unsigned leader_id; /* 0 = no known leader */
	bool is_leader;
	int64_t revision;
	int64_t compact_revision;
	uint64_t applied_index; /* raft index reflected in the state */
	size_t leases;		/* leases in the local state */
	bool io_error;		/* last log write failed; raft restarting */
};

/* Snapshot of the node's state for tests and diagnostics. */
int store_get_status(struct kv *kv, struct store_status *st);

#endif
