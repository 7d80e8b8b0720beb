/* internal.h: internal to src/etcd: the client object shared by client.c (unary requests) and
 * watch.c (streams).
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
#include "json.h"

#define ETCD_POOL_MAX 16

struct etcd_client {
	struct kv kv; /* first member: struct kv * casts to struct etcd_client * */
	char **urls;  /* n_urls base URLs without trailing '/', owned */
	size_t n_urls;
	char *cacert, *cert, *key; /* owned copies or NULL */
	bool insecure;
	char *user, *password; /* owned; NULL user = no auth */
	long dial_timeout_ms;
	long command_timeout_ms;
	size_t max_request_bytes;
	size_t max_txn_ops;
	long watch_stall_ms; /* atomic access */
	unsigned preferred;  /* atomic access: index of the endpoint that last answered */

	pthread_mutex_t pool_lock;
	CURL *pool[ETCD_POOL_MAX]; /* protected by pool_lock: idle handles, keep-alive */
	size_t n_pool;		   /* protected by pool_lock */

	pthread_mutex_t auth_lock;
	char *token;	    /* protected by auth_lock: current token, NULL = none yet */
	uint64_t token_gen; /* protected by auth_lock: bumped when token changes */
	bool auth_disabled; /* protected by auth_lock: server said auth is not enabled */
};

static inline struct etcd_client *to_client(struct kv *kv)
{
	return (struct etcd_client *)kv;
}

/* Applies URL-independent options shared by every handle: timeouts, TLS, keepalive,
 * no signals. timeout_ms 0 = no total timeout (streams). */
void etcd_setup_handle(struct etcd_client *c, CURL *h, long timeout_ms);

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

/* Watch entry points (watch.c). */
int etcd_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
	       struct kv_watch **out);
void etcd_watch_cancel(struct kv_watch *w);

#endif
