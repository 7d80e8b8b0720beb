/* internal.h: internal to src/etcd: the client object shared by client.c (unary requests),
 * request.c (the request loop) and watch.c (streams).
 *
 * Lock order: auth_lock may be held while a request runs (one re-authentication at a time);
 * pool_lock is only held to push or pop a handle and never while calling out.
 */
#ifndef ETCDFS_ETCD_INTERNAL_H
#define ETCDFS_ETCD_INTERNAL_H

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "etcd.h"
#include "grpc.h"
#include "json.h"

#define ETCD_POOL_MAX 16

struct etcd_client {
	struct kv kv; /* first member: struct kv * casts to struct etcd_client * */
	char **urls;  /* n_urls base URLs without trailing '/', owned */
	size_t n_urls;
	/* Owned, n_urls flags, atomic access: the endpoint answered a gRPC request since the
	 * last gRPC protocol failure, so writes may go to it over gRPC (see request.c). */
	unsigned char *grpc_proven;
	char *cacert, *cert, *key; /* owned copies or NULL */
	bool insecure;
	char *user, *password; /* owned; NULL user = no auth */
	long dial_timeout_ms;
	long command_timeout_ms;
	size_t max_request_bytes;
	size_t max_txn_ops;
	long watch_stall_ms; /* atomic access */
	size_t max_reply;    /* atomic access: largest reply accepted */
	unsigned preferred;  /* atomic access: index of the endpoint that last answered */

	pthread_mutex_t pool_lock;
	CURL *pool[ETCD_POOL_MAX];  /* protected by pool_lock: idle HTTP/1.1 handles, keep-alive */
	size_t n_pool;		    /* protected by pool_lock */
	CURL *gpool[ETCD_POOL_MAX]; /* protected by pool_lock: idle HTTP/2 (gRPC) handles */
	size_t n_gpool;		    /* protected by pool_lock */

	/* gRPC transport state, all atomic access. */
	int transport;		   /* enum etcd_transport */
	int64_t grpc_off_until_ms; /* AUTO: after a protocol failure, JSON only until then */
	int grpc_fallback_logged; /* the first fallback is logged at info level, later ones debug */
	struct etcd_client_stats stats; /* every field atomic */

	pthread_mutex_t auth_lock;
	char *token;	    /* protected by auth_lock: current token, NULL = none yet */
	uint64_t token_gen; /* protected by auth_lock: bumped when token changes */
	bool auth_disabled; /* protected by auth_lock: server said auth is not enabled */
};

static inline struct etcd_client *to_client(struct kv *kv)
{
	return (struct etcd_client *)kv;
}

/* Takes an idle handle of the HTTP/1.1 (h2 false) or HTTP/2 pool, or a new one; NULL on
 * ENOMEM. etcd_pool_put() returns it (or frees it when the pool is full). */
CURL *etcd_pool_get(struct etcd_client *c, bool h2);
void etcd_pool_put(struct etcd_client *c, CURL *h, bool h2);

/* Applies URL-independent options shared by every handle: timeouts, TLS, keepalive,
 * no signals. timeout_ms 0 = no total timeout (streams). */
void etcd_setup_handle(struct etcd_client *c, CURL *h, long timeout_ms);

/* Appends "name: value" to *l ("name:" when value is empty, which suppresses curl's own
 * header of that name); the temporary copy is wiped, since value may be a token. 0 or
 * -ENOMEM (*l unchanged). */
int etcd_header_add(struct curl_slist **l, const char *name, const char *value);

/* Builds the header list (content type, no Expect, Authorization when a token is given).
 * Returns NULL on ENOMEM. Freed with curl_slist_free_all. */
struct curl_slist *etcd_headers(const char *token);

/* Returns a heap copy of the current token (NULL when auth is off) and its generation,
 * authenticating first when needed. *abort is polled during the network I/O (may be NULL). */
int etcd_get_token(struct etcd_client *c, char **token, uint64_t *gen, const int *abort_flag);
/* Drops the token of generation gen (a request said it is invalid), so the next
 * etcd_get_token() authenticates again. */
void etcd_invalidate_token(struct etcd_client *c, uint64_t gen);

/* Unary request to exactly one endpoint (no failover, no auth retry); used by the watch stall
 * probe. Returns 0 when the server answered HTTP 200. */
int etcd_probe_endpoint(struct etcd_client *c, size_t idx, const int *abort_flag);

/* Maps a transport failure to a negative errno; *unsent tells whether the request surely did
 * not reach the server (then retrying it elsewhere cannot apply it twice). */
int etcd_curl_errno(CURL *h, CURLcode rc, const char *errbuf, bool *unsent);

/* Describes a curl failure of url into buf (cause from errno when there is one). */
void etcd_describe_curl_error(CURL *h, CURLcode rc, const char *errbuf, char *buf, size_t size);

/* A reply body as curl hands it over, piece by piece, bounded by max. */
struct etcd_body {
	char *p; /* owned, len bytes */
	size_t len, cap;
	size_t max;    /* in: the largest body accepted */
	bool overflow; /* the body exceeded max */
};

/* Appends the n bytes at data after first making room for reserve bytes (at least len + n).
 * -EMSGSIZE with overflow set when the body would exceed max (the write callback then fails
 * the transfer), -ENOMEM. */
int etcd_body_add(struct etcd_body *b, const void *data, size_t n, size_t reserve);

/* One gRPC exchange (grpc.c). */

struct etcd_grpc_reply {
	/* the reply body (frames); body.max in: largest reply accepted (0 =
	 * ETCD_DEFAULT_MAX_REPLY_BYTES) */
	struct etcd_body body;
	long http_status;   /* 0 when no reply arrived */
	int grpc_status;    /* -1 when absent */
	char grpc_msg[256]; /* decoded grpc-message */
	bool grpc_ct;	    /* content-type was application/grpc */
	bool unsent;	    /* transport failure before the whole request left */
	bool proto_fail;    /* the endpoint did not speak gRPC over HTTP/2: JSON may work */
	long connects;	    /* new connections this exchange opened */
	char why[CURL_ERROR_SIZE + 64]; /* cause of a failure */
};

/* Posts one framed message to path on endpoint idx. Returns 0 when a gRPC reply arrived (any
 * grpc_status; body holds the frames), -EMSGSIZE when it exceeded r->max, else a transport
 * errno with r->why, r->unsent and r->proto_fail set (nothing logged). Connections are
 * cached in the handle and reused, h2c ones through a workaround for libcurl 7.88 (see
 * grpc.c). Free r with etcd_grpc_reply_free() on success. */
int etcd_grpc_exchange(struct etcd_client *c, size_t idx, const char *path, const uint8_t *body,
		       size_t body_len, const char *token, long timeout_ms, const int *abort_flag,
		       struct etcd_grpc_reply *r);
void etcd_grpc_reply_free(struct etcd_grpc_reply *r);

/* The request headers of a gRPC call (content type, te, token; grpc-timeout when
 * timeout_ms > 0). NULL on ENOMEM; free with curl_slist_free_all(). */
struct curl_slist *etcd_grpc_headers(const char *token, long timeout_ms);
/* CURLOPT_HEADERFUNCTION that records grpc-status, grpc-message and the content type into
 * the struct etcd_grpc_reply given as CURLOPT_HEADERDATA (initialise grpc_status to -1). */
size_t etcd_grpc_header_cb(char *ptr, size_t size, size_t nmemb, void *ud);
/* Whether a curl failure says the endpoint did not speak gRPC over HTTP/2 with us (rather
 * than that it is unreachable). */
bool etcd_grpc_protocol_failure(CURLcode rc);
/* Whether the next range, txn or watch should use gRPC (transport setting, recent
 * failures; writes also need an endpoint that answered gRPC, see request.c). */
bool etcd_use_grpc(struct etcd_client *c);
/* Records a gRPC protocol failure on url: AUTO uses JSON for a while; logged once at info.
 * Forgets which endpoints answered gRPC. */
void etcd_grpc_failed(struct etcd_client *c, const char *url, const char *why);
/* Whether a write may go to endpoint idx over gRPC (see request.c). */
bool etcd_grpc_write_ok(struct etcd_client *c, size_t idx);
/* Records that endpoint idx answered a gRPC request (any grpc-status, over HTTP/2). */
void etcd_grpc_answered(struct etcd_client *c, size_t idx);

/* Watch entry points (watch.c). */
int etcd_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
	       struct kv_watch **out);
void etcd_watch_cancel(struct kv_watch *w);

#endif
