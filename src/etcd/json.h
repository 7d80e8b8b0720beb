/* json.h: internal to src/etcd: encoding requests for and decoding replies of etcd's JSON
 * gateway. Pure functions without I/O so that unit tests can feed them recorded bodies.
 *
 * Wire facts (etcd 3.4 gateway): keys and values are standard base64; int64 fields arrive as
 * JSON strings, and any field equal to its zero value (0, false, "", empty list) is omitted.
 * Errors arrive as {"error": msg, "message": msg, "code": grpc_code}, and inside a watch stream
 * as {"error": {"grpc_code": n, "message": msg, ...}}.
 *
 * Ownership: returned json_t are new references the caller json_decref()s; returned buffers
 * are malloc'd and freed by the caller; result structs are filled as kv.h describes and freed
 * with the kv_*_free() functions (also after a failure, which leaves them consistent).
 */
#ifndef ETCDFS_ETCD_JSON_H
#define ETCDFS_ETCD_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

/* Reads an int64 field given as a JSON string or number. Absent or null gives 0. -EINVAL if
 * it is another type or not a whole int64. */
int etcd_json_int64(const json_t *obj, const char *field, int64_t *out);
/* Reads a bool field; absent gives false; -EINVAL if not a boolean. */
int etcd_json_bool(const json_t *obj, const char *field, bool *out);
/* Reads an enum given either by name (names[i]) or by number; absent gives 0. */
int etcd_json_enum(const json_t *obj, const char *field, const char *const *names, int n_names,
		   int *out);
/* Decodes a base64 string field; absent gives an empty buffer (never NULL on success). */
int etcd_json_bytes(const json_t *obj, const char *field, char **out, size_t *out_len);

/* Decodes one mvccpb.KeyValue. value stays NULL when keys_only, else an absent value is an
 * empty one. */
int etcd_json_parse_kv(const json_t *o, bool keys_only, struct kv_kv *out);
/* Appends the "kvs" of a RangeResponse to res and sets res->more, res->count and
 * res->revision (from the header). */
int etcd_json_parse_range(const json_t *o, bool keys_only, struct kv_range_result *res);
/* Decodes a TxnResponse. keys_only[i] is the keys_only flag of the i-th op of the branch that
 * ran (may be NULL). */
int etcd_json_parse_txn(const json_t *o, const bool *keys_only, size_t n_ops,
			struct kv_txn_result *res);
/* Header revision of any response. */
int etcd_json_header_revision(const json_t *o, int64_t *rev);

/* A decoded etcd error. */
struct etcd_error {
	int err;	 /* negative errno, as kv.h documents */
	int grpc_code;	 /* -1 when unknown */
	bool retry_auth; /* token invalid or stale: re-authenticate and retry once */
	char msg[256];	 /* the server's message (truncated) */
};

/* Maps an etcd error message (and gRPC code, or -1) to a negative errno. */
int etcd_error_errno(const char *msg, int grpc_code, bool *retry_auth);
/* Decodes an error object of either form (the value of "error" in a stream, or a whole unary
 * error body). */
void etcd_json_error_obj(const json_t *o, struct etcd_error *e);
/* Decodes an error body. When it is not an error object, e->err is -EIO and e->msg names the
 * HTTP status. */
void etcd_json_error(const char *body, size_t len, long http_status, struct etcd_error *e);

/* Requests. Return NULL on ENOMEM. */
json_t *etcd_json_range_req(const struct kv_range_req *req, const void *key, size_t key_len,
			    const void *range_end, size_t range_end_len, int64_t revision,
			    int64_t limit);
json_t *etcd_json_txn_req(const struct kv_txn *txn);
json_t *etcd_json_watch_req(const struct kv_watch_req *req, int64_t start_revision);
/* Lower bound of the protobuf size of a txn, compared with max_request_bytes. */
size_t etcd_txn_size_estimate(const struct kv_txn *txn);

/* One decoded watch stream message. */
struct etcd_watch_msg {
	bool is_error; /* stream error object; err and msg are set */
	bool created;
	bool canceled;
	int64_t revision; /* header revision (0 when absent, as in compaction replies) */
	int64_t compact_revision;
	struct kv_event *events; /* n_events, owned; free with etcd_watch_msg_free */
	size_t n_events;
	struct etcd_error error; /* is_error, or canceled with a cancel_reason */
};

int etcd_json_parse_watch(const json_t *o, struct etcd_watch_msg *out);
void etcd_watch_msg_free(struct etcd_watch_msg *m);

#endif
