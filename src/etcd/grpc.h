/* grpc.h: internal to src/etcd: etcd's native gRPC API over HTTP/2 with libcurl, and the
 * protobuf-c codec of our own src/v3pb/etcdserver.proto messages.
 *
 * Wire facts (gRPC over HTTP/2): a request is a POST to /<service>/<method> with
 * "content-type: application/grpc" and "te: trailers"; each message travels as a frame of a
 * 1-byte compressed flag, a 4-byte big-endian length and the protobuf bytes. The outcome is in
 * the "grpc-status" (decimal code) and "grpc-message" (percent-encoded) trailers, or in the
 * headers of a trailers-only reply. etcd reads the auth token from the "token" metadata header.
 * http:// endpoints use cleartext HTTP/2 with prior knowledge (h2c), https:// ones negotiate
 * h2 through ALPN.
 *
 * Ownership: buffers returned through out-parameters are malloc'd and freed by the caller;
 * kv.h result structs are filled as kv.h describes and freed with kv_*_free() (also after a
 * failure, which leaves them consistent). struct etcd_grpc_reply is released with
 * etcd_grpc_reply_free().
 */
#ifndef ETCDFS_ETCD_GRPC_H
#define ETCDFS_ETCD_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h" /* struct etcd_error, struct etcd_watch_msg */
#include "kv.h"

#define ETCD_GRPC_RANGE_PATH "/etcdserverpb.KV/Range"
#define ETCD_GRPC_TXN_PATH "/etcdserverpb.KV/Txn"
#define ETCD_GRPC_WATCH_PATH "/etcdserverpb.Watch/Watch"
#define ETCD_GRPC_FRAME_HDR 5

/* gRPC status codes we act on. */
enum {
	ETCD_GRPC_OK = 0,
	ETCD_GRPC_UNKNOWN = 2,
	ETCD_GRPC_OUT_OF_RANGE = 11,
	ETCD_GRPC_UNIMPLEMENTED = 12,
	ETCD_GRPC_UNAVAILABLE = 14,
};

/* ---- pure codec (no I/O; unit tested on their own) ---- */

/* Writes the 5-byte frame header for a message of len bytes. */
void etcd_grpc_frame_header(uint8_t hdr[ETCD_GRPC_FRAME_HDR], size_t len);

/* Looks for one complete frame at the start of buf. Returns 1 and sets *msg, *msg_len and
 * *consumed when one is there, 0 when more bytes are needed (*msg_len is then the announced
 * length once the header is complete, else 0), -EPROTO for a compressed frame (we never
 * accept compression) and -EMSGSIZE when the announced length exceeds max. */
int etcd_grpc_frame_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **msg,
			 size_t *msg_len, size_t *consumed);

/* Decodes a percent-encoded grpc-message value into out (NUL-terminated, truncated to
 * size). Malformed escapes are copied as they are. */
void etcd_grpc_percent_decode(const char *in, size_t len, char *out, size_t size);

/* Fills e from a non-zero grpc-status and its decoded message, mapping it as the JSON path
 * maps the same error (kv.h errnos; OUT_OF_RANGE without a known message is -ERANGE). */
void etcd_grpc_status_error(int code, const char *msg, struct etcd_error *e);

/* Encodes a framed RangeRequest into a malloc'd buffer. Returns 0 or -ENOMEM. */
int etcd_grpc_range_req(const struct kv_range_req *req, const void *key, size_t key_len,
			const void *range_end, size_t range_end_len, int64_t revision,
			int64_t limit, uint8_t **out, size_t *out_len);

/* Decodes a RangeResponse message (without its frame header): appends its kvs to res and
 * sets res->more, res->count and res->revision, like etcd_json_parse_range(). value stays
 * NULL when keys_only, else an absent value is an empty one. -EINVAL when malformed. */
int etcd_grpc_parse_range(const uint8_t *msg, size_t len, bool keys_only,
			  struct kv_range_result *res);

/* Encodes a framed TxnRequest with the same fields etcd_json_txn_req() sends. Returns 0,
 * -EINVAL for an unknown compare target or op type, or -ENOMEM. */
int etcd_grpc_txn_req(const struct kv_txn *txn, uint8_t **out, size_t *out_len);

/* Decodes a TxnResponse message (without its frame header) into res, like
 * etcd_json_parse_txn(): succeeded, revision, and one result per op of the branch that ran
 * (txn tells which range ops were keys_only). -EINVAL when malformed, including an op result
 * of a kind we never ask for. */
int etcd_grpc_parse_txn(const uint8_t *msg, size_t len, const struct kv_txn *txn,
			struct kv_txn_result *res);

/* ---- leases ---- */

enum etcd_lease_op {
	ETCD_LEASE_GRANT = 0,
	ETCD_LEASE_REVOKE,
	ETCD_LEASE_KEEPALIVE,
	ETCD_LEASE_TTL,
	ETCD_LEASE_LIST,
};

/* The gRPC path of op ("/etcdserverpb.Lease/LeaseGrant", ...). */
const char *etcd_grpc_lease_path(enum etcd_lease_op op);

/* A lease reply of either transport, as the server sent it (TTL -1 or 0 for a lease that is
 * gone, keys in the server's order). Free with etcd_lease_reply_free(). */
struct etcd_lease_reply {
	int64_t id, ttl, granted_ttl;
	int64_t revision;	     /* header revision */
	struct kv_range_result keys; /* TTL with keys: key-only kvs */
	int64_t *ids;		     /* LIST: n_ids lease ids, malloc'd */
	size_t n_ids;
};

void etcd_lease_reply_free(struct etcd_lease_reply *r);

/* Encodes the framed request of op: GRANT uses id and ttl, TTL id and keys, REVOKE and
 * KEEPALIVE id, LIST nothing. 0 or -ENOMEM. */
int etcd_grpc_lease_req(enum etcd_lease_op op, int64_t id, int64_t ttl, bool keys, uint8_t **out,
			size_t *out_len);
/* Decodes the reply message of op into out (zeroed first). -EINVAL when malformed. */
int etcd_grpc_parse_lease(enum etcd_lease_op op, const uint8_t *msg, size_t len,
			  struct etcd_lease_reply *out);

/* Encodes a framed WatchRequest holding a create request (progress notifications on). */
int etcd_grpc_watch_req(const struct kv_watch_req *req, int64_t start_revision, uint8_t **out,
			size_t *out_len);
/* Decodes one WatchResponse message into m (free with etcd_watch_msg_free()); the same
 * fields as etcd_json_parse_watch() fills. -EINVAL when malformed. */
int etcd_grpc_parse_watch(const uint8_t *msg, size_t len, struct etcd_watch_msg *m);

#endif
