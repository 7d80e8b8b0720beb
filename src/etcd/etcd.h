/* etcd.h: the etcd v3 backend of kv.h, over etcd's native gRPC API (HTTP/2 with libcurl,
 * our own src/v3pb/etcdserver.proto with protobuf-c) for ranges, txns and watches, and etcd's JSON
 * gRPC-gateway (libcurl + jansson) for everything else and as a fallback.
 *
 * Works with etcd 3.4 and later (paths /v3/...). Configuration mirrors etcdctl's flags and
 * ETCDCTL_* environment variables so that a command line copied from etcdctl works.
 *
 * Ownership: struct etcd_config owns every string and the endpoint array it points to; they
 * are heap copies made by the etcd_config_* setters and released by etcd_config_free().
 * etcd_client_new() copies what it needs, so the config may be freed right after.
 * The struct kv returned by etcd_client_new() is released with kv_destroy(); all watches must
 * have been cancelled before.
 *
 * Errors follow kv.h. Details specific to this backend:
 *  - every failing endpoint is logged with its URL and the cause; a request fails only when
 *    every endpoint failed. -ETIMEDOUT if any endpoint timed out, else -EACCES if TLS
 *    verification failed, else -ECONNREFUSED (-EIO for a broken reply).
 *  - writes (txns holding a put or delete, compaction) are not retried on another endpoint once
 *    they may have reached a server, so they are never applied twice.
 *  - ranges with limit 0 are paged internally, every page pinned to the first page's
 *    revision; count and revision come from the first page. Paging needs key order (sort NONE,
 *    or KEY ascending/descending); other sort orders are sent as one request. Over the JSON
 *    gateway pages hold up to 1000 keys (fewer when pages are large); over gRPC the first page
 *    holds 1000 keys and later ones are sized to about 16 MiB (16 .. 10000 keys).
 *  - transport (ETCD_TRANSPORT_AUTO, the default): ranges (single keys included), txns and
 *    watches go through etcd's native gRPC API over HTTP/2 (h2c with prior knowledge for
 *    http://, ALPN h2 for https://): POST /etcdserverpb.KV/Range, /etcdserverpb.KV/Txn and
 *    the /etcdserverpb.Watch/Watch stream. Compaction, status and authentication go through
 *    the JSON gateway. Should gRPC fail for a reason other than an unreachable endpoint (no
 *    HTTP/2, not a gRPC reply, broken framing), that range, read-only txn or watch stream is
 *    redone through JSON at once, the first such fallback is logged at info level, and gRPC
 *    is not tried again for 30 s. Errors the server reports over gRPC (compacted, permission
 *    denied, ...) are final and map to the same errnos as over JSON.
 *    Writes follow the rule above: over gRPC a write is redone (elsewhere or through JSON)
 *    only when it surely was not applied (nothing or not all of it left, or the server
 *    answered UNIMPLEMENTED); a protocol failure after it left is -EIO. As a lost reply
 *    cannot be told from an HTTP/1.1 server refusing HTTP/2, AUTO sends a write over gRPC
 *    only to an endpoint that has answered gRPC (a range, read-only txn or watch) since the
 *    last gRPC failure, and through JSON before.
 *    ETCD_TRANSPORT_JSON uses the gateway only; ETCD_TRANSPORT_GRPC never falls back (a
 *    non-gRPC endpoint then fails with -EIO).
 *  - HTTP/2 connections are kept alive and reused like the JSON ones. libcurl 7.88 (Debian
 *    12) fails a request that asks for h2c prior knowledge on a reused connection; the client
 *    asks for it only when it opens a connection and rides cached ones without it.
 *  - the size of a request is checked against max_request_bytes before it is sent (-EFBIG), as
 *    is the number of txn operations against max_txn_ops (-E2BIG).
 */
#ifndef ETCDFS_ETCD_H
#define ETCDFS_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

enum etcd_transport {
	ETCD_TRANSPORT_AUTO = 0, /* gRPC where it is faster, JSON elsewhere and as fallback */
	ETCD_TRANSPORT_JSON,	 /* JSON gateway only */
	ETCD_TRANSPORT_GRPC,	 /* gRPC wherever AUTO may use it, no fallback (tests) */
};

struct etcd_config {
	char **endpoints; /* n_endpoints URLs: "http://h:p", "https://h:p" or bare "h:p" */
	size_t n_endpoints;
	char *cacert, *cert, *key; /* PEM paths or NULL */
	bool insecure_skip_tls_verify;
	char *user;	/* "name" or "name:password", NULL = no auth */
	char *password; /* used when user has no ":password" part */
	long dial_timeout_ms;
	long command_timeout_ms;
	size_t max_request_bytes;
	size_t max_txn_ops;
	enum etcd_transport transport; /* ETCD_TRANSPORT_AUTO by default */
};

#define ETCD_DEFAULT_ENDPOINT "http://127.0.0.1:2379"
#define ETCD_DEFAULT_DIAL_TIMEOUT_MS 2000L
#define ETCD_DEFAULT_COMMAND_TIMEOUT_MS 5000L
#define ETCD_DEFAULT_MAX_REQUEST_BYTES ((size_t)(1.5 * 1024 * 1024))
#define ETCD_DEFAULT_MAX_TXN_OPS ((size_t)128)
#define ETCD_DEFAULT_WATCH_STALL_MS 30000L
#define ETCD_DEFAULT_MAX_REPLY_BYTES ((size_t)256 << 20)

/* Fills defaults; endpoints = ETCD_DEFAULT_ENDPOINT. Aborts only if out of memory. */
void etcd_config_init(struct etcd_config *cfg);
/* Applies the ETCDCTL_ENDPOINTS, _CACERT, _CERT, _KEY, _USER, _PASSWORD,
 * _INSECURE_SKIP_TLS_VERIFY, _DIAL_TIMEOUT and _COMMAND_TIMEOUT variables that are set, and
 * ETCDFS_ETCD_TRANSPORT (auto, json or grpc).
 * Call it before applying command-line flags so that flags override. -EINVAL (logged) on a
 * malformed value. */
int etcd_config_from_env(struct etcd_config *cfg);
/* Replaces the endpoint list with a comma separated list. -EINVAL if empty. */
int etcd_config_set_endpoints(struct etcd_config *cfg, const char *comma_list);
/* Sets *str to a heap copy of val (NULL clears). For cacert, cert, key, user, password. */
int etcd_config_set_string(char **str, const char *val);
/* Parses a Go-style duration ("5s", "500ms", "1m30s", "1.5s"); a bare number means seconds.
 * -EINVAL on anything else or a negative value. */
int etcd_parse_duration_ms(const char *s, long *ms);
/* Reads the password from the first line of a file (trailing newline stripped). */
int etcd_config_read_password_file(struct etcd_config *cfg, const char *path);
void etcd_config_free(struct etcd_config *cfg);
/* Parses "auto", "json" or "grpc". -EINVAL on anything else. */
int etcd_parse_transport(const char *s, enum etcd_transport *out);

/* Creates the backend. Does not contact the server (probe with kv_status()). -EINVAL (logged) on
 * a bad endpoint URL or a user without a password. */
int etcd_client_new(const struct etcd_config *cfg, struct kv **out);

/* Changes the transport of requests started afterwards. */
void etcd_client_set_transport(struct kv *kv, enum etcd_transport t);

/* Largest reply accepted (0 = ETCD_DEFAULT_MAX_REPLY_BYTES). A paged range whose page
 * exceeds it asks again for a quarter of the keys (down to 16); other requests fail with -EIO
 * (logged). Applies to requests started afterwards; tests lower it. */
void etcd_client_set_max_reply_bytes(struct kv *kv, size_t bytes);

/* Counters since etcd_client_new(), for tests and benchmarks (read without stopping
 * traffic: each field is exact, the set is not a snapshot). */
struct etcd_client_stats {
	uint64_t grpc_ranges;	     /* range round trips answered over gRPC */
	uint64_t json_ranges;	     /* range round trips answered over the JSON gateway */
	uint64_t grpc_txns;	     /* txns answered over gRPC */
	uint64_t json_txns;	     /* txns answered over the JSON gateway */
	uint64_t grpc_fallbacks;     /* gRPC range or txn requests redone over JSON */
	uint64_t grpc_connects;	     /* connections opened for gRPC requests */
	uint64_t grpc_watch_streams; /* watch streams created over gRPC */
	uint64_t json_watch_streams; /* watch streams created over the JSON gateway */
};
void etcd_client_get_stats(struct kv *kv, struct etcd_client_stats *out);

/* Watch stall guard: when a connected watch stream receives no bytes for this long, the
 * backend probes the endpoint; if it answers, the stream is silently re-established from the
 * next revision, otherwise DISCONNECTED is delivered and reconnection starts. Applies to watches
 * created afterwards. Default ETCD_DEFAULT_WATCH_STALL_MS; tests lower it. */
void etcd_client_set_watch_stall_ms(struct kv *kv, long ms);

/* Watch semantics of this backend (see kv.h for the batch types):
 *  - kv_watch() validates its arguments and starts a thread; connection results arrive
 *    asynchronously: CONNECTED once the server created the watch, with revision = the last
 *    revision whose events are not delivered (events resume after it).
 *  - after a broken stream, DISCONNECTED (err) is delivered once, then the backend reconnects
 *    with exponential backoff (100 ms .. 5 s), resuming at the revision after the last one it
 *    delivered, and delivers CONNECTED again. No event is lost or repeated across reconnects.
 *  - COMPACTED and CANCELED are final: the thread ends, and the caller still calls
 *    kv_watch_cancel() to free the watch.
 *  - kv_watch_req.prev_kv is sent to etcd, but kv.h events carry no previous value. */

#endif
