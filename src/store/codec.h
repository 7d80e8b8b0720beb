/* codec.h: kv.h structs <-> our protobuf messages (store.proto).
 *
 * Raft log entries (Command), forwarded requests and their responses all use
 * these. Packed buffers come from the allocator the caller passes (raft's
 * entries must be raft_malloc'd) and belong to the caller. Decoded "views"
 * point into the unpacked protobuf message they keep, so they stay valid
 * until the matching *_free().
 */
#ifndef ETCDFS_STORE_CODEC_H
#define ETCDFS_STORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

typedef void *(*codec_alloc_fn)(size_t size);

enum codec_cmd_kind {
	CODEC_CMD_TXN = 1,
	CODEC_CMD_COMPACT,
	CODEC_CMD_NOOP,
	CODEC_CMD_LEASE_GRANT,
	CODEC_CMD_LEASE_REVOKE
};

/* A Raft log entry. For TXN, txn's arrays point into the unpacked message. */
struct codec_cmd {
	uint64_t origin, boot, seq;
	enum codec_cmd_kind kind;
	struct kv_txn txn;
	bool leases_checked; /* TXN: false for entries from before leases */
	int64_t compact;
	int64_t lease_id;  /* LEASE_GRANT (0: picked on apply), LEASE_REVOKE */
	int64_t lease_ttl; /* LEASE_GRANT */
	void *priv;	   /* unpacked message and arrays */
};

/* txn is used for CODEC_CMD_TXN, compact for CODEC_CMD_COMPACT. The packed
 * entry is framed and padded to a multiple of 8 bytes (libraft 0.15 needs
 * that, see codec.c); codec_unpack_cmd expects that framing. */
int codec_pack_cmd(const struct codec_cmd *cmd, codec_alloc_fn alloc, void **buf, size_t *len);
/* Size of the packed command without packing it (request size limits). */
size_t codec_cmd_size(const struct codec_cmd *cmd);
int codec_unpack_cmd(const void *buf, size_t len, struct codec_cmd *out);
void codec_cmd_free(struct codec_cmd *cmd);

/* ---- forwarding protocol ---- */

enum codec_fwd_kind { CODEC_FWD_TXN = 1, CODEC_FWD_RANGE, CODEC_FWD_COMPACT, CODEC_FWD_LEASE };

enum codec_lease_op {
	CODEC_LEASE_GRANT = 1,
	CODEC_LEASE_REVOKE,
	CODEC_LEASE_KEEPALIVE,
	CODEC_LEASE_TTL,
	CODEC_LEASE_LIST
};

/* A lease call, run by the leader (store.c store_local_lease). */
struct codec_lease_req {
	enum codec_lease_op op;
	int64_t id;
	int64_t ttl; /* GRANT */
	bool keys;   /* TTL: also list the attached keys */
};

struct codec_fwd_req {
	enum codec_fwd_kind kind;
	struct kv_txn txn;
	struct kv_range_req range;
	int64_t compact;
	struct codec_lease_req lease;
	void *priv;
};

int codec_pack_fwd_req(const struct codec_fwd_req *req, void **buf, size_t *len);
int codec_unpack_fwd_req(const void *buf, size_t len, struct codec_fwd_req *out);
void codec_fwd_req_free(struct codec_fwd_req *req);

/* A response carries err (0 or negative errno) and, depending on the request,
 * a txn result, a range result (also on -ERANGE for compact_revision) or a
 * revision. Unpacking deep-copies into caller-owned kv.h results. */
struct codec_fwd_resp {
	int err;
	struct kv_txn_result *txn;
	struct kv_range_result *range; /* also a lease's keys */
	int64_t revision;	       /* also a lease revoke's revision */
	struct kv_lease lease;	       /* GRANT, KEEPALIVE, TTL */
	int64_t *lease_ids;	       /* LIST: malloc'd, the caller's after unpacking */
	size_t n_lease_ids;
};

int codec_pack_fwd_resp(const struct codec_fwd_resp *resp, void **buf, size_t *len);
int codec_unpack_fwd_resp(const void *buf, size_t len, struct codec_fwd_resp *out);

#endif
