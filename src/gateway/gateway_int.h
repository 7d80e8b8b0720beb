/* gateway_int.h: what the files of the JSON gateway share. Not a public header.
 *
 * server.c   listening socket, accept thread, one thread per connection, start/stop
 * http.c     HTTP/1.1 through libmicrohttpd: handing a connection over, queueing replies
 * dispatch.c routing a request to its handler and sending the reply or the error
 * jsonpb.c   the request context (reply, error, allocations) and etcd's jsonpb rules
 * kvapi.c    the unary handlers: KV, compaction, status, auth
 * watch.c    /v3/watch streams
 * tls.c      TLS: the handshake and a relay thread per connection (tls.h)
 *
 * Threads: struct gw is shared by the accept thread, every connection thread and the
 * caller of gw_stop(); a struct conn and its struct request belong to the connection's
 * thread, except for the fields marked otherwise. An HTTP/1.1 connection is served by
 * libmicrohttpd's thread for it while the connection thread waits (http_serve()). A watch
 * stream's messages are also queued from the backend's watch callback threads, under the
 * stream's lock.
 */
#ifndef ETCDFS_GATEWAY_INT_H
#define ETCDFS_GATEWAY_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway.h"
#include "kv.h"

#define API_VERSION "3.4.0" /* the etcd API level this gateway mimics */
#define GW_MAX_PEERS 16

/* gRPC status codes used here. */
enum {
	GRPC_OK = 0,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
};

#define ERR_COMPACTED "etcdserver: mvcc: required revision has been compacted"
#define ERR_FUTURE_REV "etcdserver: mvcc: required revision is a future revision"
#define ERR_TOO_LARGE "etcdserver: request is too large"
#define ERR_TOO_MANY_OPS "etcdserver: too many operations in txn request"
#define ERR_EMPTY_KEY "etcdserver: key is not provided"
#define ERR_KEY_NOT_FOUND "etcdserver: key not found"
#define ERR_LEASE_PROVIDED "etcdserver: lease is provided"
#define ERR_TIMEOUT "etcdserver: request timed out"
#define ERR_NO_SPACE "etcdserver: mvcc: database space exceeded"
#define ERR_AUTH_OFF "etcdserver: authentication is not enabled"
#define ERR_DUPLICATE_KEY "etcdserver: duplicate key given in txn request"

struct MHD_Connection;
struct MHD_Daemon;
struct MHD_Response;

struct conn {
	struct gw *gw;
	int fd;
	pthread_t thread;
	bool done;	      /* protected by gw->lock: the thread has ended */
	struct conn *next;    /* protected by gw->lock */
	struct tls_conn *tls; /* set under gw->lock by tls_conn_start(); NULL: cleartext */
	/* HTTP/1.1: the descriptor given to MHD and where it is (http.c), under gw->lock */
	int mhd_fd;
	int mhd_state;
	struct conn *mhd_next; /* in gw->mhd_pending until MHD starts serving it */
	/* MHD's thread only: the connection of the request being answered, and whether a
	 * reply was queued for it */
	struct MHD_Connection *mc;
	bool replied;
};

struct gw {
	struct kv *kv;	     /* borrowed */
	struct tls_srv *tls; /* NULL: cleartext */
	int lfd;
	int wake[2]; /* pipe: wakes the accept thread on stop */
	int port;
	pthread_t accept_thread;
	struct MHD_Daemon *mhd;	  /* HTTP/1.1 (http.c) */
	pthread_cond_t mhd_cond;  /* with lock: a conn's mhd_state became closed */
	struct conn *mhd_pending; /* protected by lock: handed to MHD, not yet started */
	long progress_ms;	  /* atomic */
	/* atomic; gw_set_keepalive() */
	long keepalive_ms, keepalive_timeout_ms;
	pthread_mutex_t lock;
	struct conn *conns; /* protected by lock */
	size_t n_conns;	    /* protected by lock */
	bool stopping;	    /* protected by lock */
	/* what Status, MemberList and reply headers say about this node (gw_set_member) */
	uint64_t cluster_id, member_id;
	char name[64];
	char client_url[300];
	/* the other members (gw_add_peer), for MemberList; set before clients come */
	struct gw_peer {
		uint64_t id;
		char peer_url[300];
	} peers[GW_MAX_PEERS];
	size_t n_peers;
	gw_node_fn node_fn;
	void *node_arg;
};

struct request {
	char method[16];
	char path[1024];
	bool keep_alive;
	bool too_large; /* the body passed the limit: the rest is dropped, then refused */
	char *body;	/* malloc'd, NUL-terminated; freed when MHD completes the request */
	size_t body_len, body_cap;
};

/* A unary request's context: the reply (or error) and the allocations that live until
 * the reply is sent. Handlers return 0 with a body set, or -1 with code and msg set. */
struct ctx {
	struct gw *gw;
	int code; /* gRPC code; GRPC_OK with body set on success */
	char msg[256];
	json_t *body;
	const uint8_t *pb; /* gRPC: the packed reply (allocated in the context) */
	size_t pb_len;
	void **allocs;
	size_t n_allocs, cap_allocs;
};

/* ---- server.c ---- */

/* True once gw_stop() has begun: connection and stream loops end. */
bool gw_stopping(struct gw *gw);

/* ---- http.c ---- */

/* Starts and stops the MHD daemon (no listening socket of its own). 0 or a negative errno. */
int http_start(struct gw *gw);
void http_stop(struct gw *gw);
/* Serves c's HTTP/1.1 requests through MHD; returns once MHD has closed the connection. */
void http_serve(struct conn *c);
/* Queues r (consumed; NULL is out of memory) as the reply to c's current request. */
int http_queue(struct conn *c, int status, struct MHD_Response *r, bool keep);

/* One complete response with a body of the given content type; keep false adds
 * "Connection: close". 0 or a negative errno. */
int http_send_typed(struct conn *c, int status, const char *type, const char *body, size_t len,
		    bool keep);
/* o as compact JSON (borrowed; NULL or an encoding failure sends an out-of-memory error). */
int http_send_json(struct conn *c, int status, json_t *o, bool keep);
/* etcd's error body {"error", "code", "message"} with grpc-gateway's HTTP status. */
int http_send_error(struct conn *c, int code, const char *msg, bool keep);
/* Closes the sending side and drops what the client still sends (bounded), so that the
 * reply is not lost to a reset caused by unread input. */
void http_linger_drain(struct conn *c);

/* ---- dispatch.c ---- */

/* Answers one request. Returns false when the connection must end. */
bool gw_dispatch(struct conn *c, struct request *rq);

/* ---- jsonpb.c: the request context ---- */

void ctx_free(struct ctx *x);
/* Sets the error (code and a printf-style message); returns -1. */
int ctx_fail(struct ctx *x, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int ctx_oom(struct ctx *x);
/* Zeroed memory freed with the context; NULL (error set) when out of memory. */
void *ctx_calloc(struct ctx *x, size_t n, size_t size);
/* Maps a kv.h errno to etcd's error. ENOENT means a future revision for reads and
 * compaction, and a missing key (ignore_lease) for writes. Returns -1. */
int ctx_kv_fail(struct ctx *x, int err, bool write);
/* The store's current revision (for a reply's header); -1 with x failed when it cannot say. */
int ctx_current_rev(struct ctx *x, int64_t *rev);
/* Makes body (stolen) the reply; err < 0 or a NULL body gives an out-of-memory error. */
int ctx_reply(struct ctx *x, json_t *body, int err);

/* ---- jsonpb.c: request fields (snake_case or lowerCamelCase; absent or null is zero) ---- */

const json_t *jp_field(const json_t *o, const char *snake, const char *camel);
int jp_get_i64(struct ctx *x, const json_t *o, const char *snake, const char *camel, int64_t *out);
int jp_get_bool(struct ctx *x, const json_t *o, const char *snake, const char *camel, bool *out);
/* An enum by name (one of names[0..n)) or number. */
int jp_get_enum(struct ctx *x, const json_t *o, const char *snake, const char *camel,
		const char *const *names, int n, int *out);
/* A bytes field; absent gives ("", 0). The buffer lives as long as the context. */
int jp_get_bytes(struct ctx *x, const json_t *o, const char *snake, const char *camel,
		 const void **p, size_t *n);
/* o, when present, must be an object; what names it in the error. */
int jp_check_object(struct ctx *x, const json_t *o, const char *what);

/* ---- jsonpb.c: reply builders (zero values omitted; a failure is out of memory: NULL or
 * a negative return, callers check the final result) ---- */

int jp_set_i64(json_t *o, const char *k, int64_t v);
/* o, or NULL with o dropped when building it failed: builders check their calls together. */
json_t *jp_done(json_t *o, bool failed);
/* A reply object holding its header (the store revision); NULL when out of memory. */
json_t *jp_reply(int64_t revision);
json_t *jp_kv(const struct kv_kv *kv);
int jp_set_kvs(json_t *o, const char *k, const struct kv_kv *kvs, size_t n);

/* ---- kvapi.c: range options kv.h lacks, shared with the gRPC handlers ---- */

/* Range options applied by the gateway itself: inside a txn (kv_op carries only key,
 * range_end and keys_only) and for the revision filters kv.h does not have. */
struct range_post {
	int64_t limit;
	bool count_only;
	int sort_order, sort_target;
	int64_t min_mod, max_mod, min_create, max_create;
};

bool gw_range_has_filters(const struct range_post *p);
/* A descending sort by a target other than the key: the store's order of ties is not etcd's,
 * so the gateway asks for the range in key order and sorts it itself. */
bool gw_range_sorts_itself(const struct range_post *p);
/* Applies filters, sort, limit and count_only to a result holding the whole range in
 * ascending key order, the way etcd does: count is the size of the range before filtering. */
bool gw_range_plan(struct kv_range_req *req, struct range_post *post);
void gw_range_post_apply(struct kv_range_result *r, const struct range_post *p);
/* etcd's rule, used to name the error the store gave: one branch may not put a key twice,
 * nor put a key that one of its deletes covers. Only run after a refusal, on at most the
 * few hundred ops a txn may hold. */
bool gw_txn_has_duplicate(const struct kv_op *ops, size_t n);

/* ---- kvapi.c: unary handlers (POST bodies, parsed into a JSON object) ---- */

int api_range(struct ctx *x, const json_t *body);
int api_put(struct ctx *x, const json_t *body);
int api_delete(struct ctx *x, const json_t *body);
int api_txn(struct ctx *x, const json_t *body);
int api_compact(struct ctx *x, const json_t *body);
int api_status(struct ctx *x, const json_t *body);
int api_auth(struct ctx *x, const json_t *body);
/* leaseapi.c */
int api_lease_grant(struct ctx *x, const json_t *body);
int api_lease_revoke(struct ctx *x, const json_t *body);
int api_lease_keepalive(struct ctx *x, const json_t *body);
int api_lease_ttl(struct ctx *x, const json_t *body);
int api_lease_leases(struct ctx *x, const json_t *body);

/* ---- watch.c ---- */

/* Answers POST /v3/watch with a stream that lasts until the client goes away or the
 * gateway stops (MHD's thread blocks in its content callback). */
void gw_serve_watch(struct conn *c, const struct request *rq);

#endif
