/* gateway.h: etcd's v3 API over any kv.h backend, gRPC and JSON on one port, as etcd serves
 * them: a connection that opens with the HTTP/2 client preface speaks gRPC (cleartext HTTP/2,
 * nghttp2), any other the HTTP/1.1 JSON gateway (libmicrohttpd, handed the connection after
 * the sniff). So etcdctl, etcd client libraries and
 * src/etcd/ (which prefers gRPC) talk to the embedded store exactly as to etcd.
 *
 * gRPC: KV (Range, Put, DeleteRange, Txn, Compact), Watch, Lease (Grant, Revoke,
 * KeepAlive, TimeToLive, Leases), Maintenance (Status, Alarm, HashKV, Hash, Snapshot) and
 * Cluster.MemberList, with etcd's status codes and messages; docs/store.md lists every RPC
 * and what differs. Limits: messages above 1.5 MiB + 512 KiB, 1000 streams per connection,
 * 16 MiB of unhandled request bytes per connection, and a bounded reply queue per watch
 * stream (a slow reader stalls its watches).
 *
 * JSON: the subset of etcd 3.4's grpc-gateway that etcdfs and its tests use, with the same
 * JSON shapes (base64 keys and values, int64 fields as strings, zero values omitted) and the
 * same error bodies:
 *
 *   POST /v3/kv/range  /v3/kv/put  /v3/kv/deleterange  /v3/kv/txn  /v3/kv/compaction
 *   POST /v3/maintenance/status  /v3/auth/authenticate (answers "not enabled")
 *   POST /v3/watch     (streamed: chunked, newline-delimited {"result": WatchResponse})
 *   POST /v3/lease/grant  /v3/lease/revoke  /v3/lease/keepalive (one request)
 *        /v3/lease/timetolive  /v3/lease/leases  (and the /v3/kv/lease/... aliases)
 *   GET  /health  /version
 *
 * (/v3beta/ and /v3alpha/ are accepted as aliases of /v3/.) Everything else answers 404 with
 * a plain "Not Found", as etcd does. Not supported, with a clear error (gRPC code 12, HTTP 501):
 * put's ignore_value (served over gRPC outside txns), nested txns, and a range at a revision
 * inside a txn. Range options kv.h
 * lacks (min/max mod/create revision filters; limit, sort and count_only inside a txn) are
 * applied by the gateway as etcd applies them. Watch: create/cancel/progress requests, the
 * NOPUT/NODELETE filters; prev_kv is accepted but JSON events carry no previous value (gRPC
 * ones do). No user/password authentication. TLS (gw_start_tls) serves both gRPC and JSON, with
 * ALPN offering h2 and http/1.1 and, if asked, client certificates verified against a CA;
 * cleartext is refused on an address other than loopback unless the caller insists.
 *
 * Threads: one accept thread, one thread per connection (at most 256). JSON request bodies
 * above 4 MiB are refused with etcd's "request is too large" error. A watch stream asking for
 * progress_notify gets a progress message (no events, header revision = everything up to it
 * delivered) after every few seconds without other output, so clients see it is alive.
 *
 * Ownership: the gateway borrows kv; the caller keeps it alive until gw_stop()
 * has returned (which closes every connection, cancels every watch it started and joins
 * every thread), then destroys it.
 */
#ifndef ETCDFS_GATEWAY_H
#define ETCDFS_GATEWAY_H

#include "kv.h"

struct gw; /* opaque; freed by gw_stop() */

/* Binds listen_addr ("IP:PORT", "[IPv6]:PORT" or "localhost:PORT"; port 0 picks a free
 * one), starts serving cleartext (any address, with a warning off loopback) and returns. Errors
 * (logged with the address): -EINVAL bad address, -EADDRINUSE port taken, -EACCES privileged port,
 * -EADDRNOTAVAIL not a local address. */
int gw_start(struct kv *kv, const char *listen_addr, struct gw **out);

/* TLS on the client port, with etcd's flag names. */
struct gw_tls_config {
	const char *cert_file;	     /* --cert-file: the server's PEM certificate (chain) */
	const char *key_file;	     /* --key-file: its PEM private key */
	const char *trusted_ca_file; /* --trusted-ca-file: PEM CAs that sign client certs */
	bool client_cert_auth;	     /* --client-cert-auth: require a certificate it signed */
};

/* gw_start() with TLS when tls is not NULL (files loaded before binding; a bad file is
 * -EINVAL, logged with OpenSSL's reason). Without TLS, an address that is not loopback is
 * refused with -EPERM (the log says what to do) unless insecure_plaintext is set. */
int gw_start_tls(struct kv *kv, const char *listen_addr, const struct gw_tls_config *tls,
		 bool insecure_plaintext, struct gw **out);

/* The TCP port actually bound (useful with port 0). */
int gw_port(const struct gw *gw);

/* Silence after which a watch that asked for progress_notify gets a progress message
 * (default 5000 ms; tests lower it). Applies from the next check of each stream. */
void gw_set_progress_interval(struct gw *gw, long ms);

/* gRPC connections: after interval_ms without a byte from the client the server sends a
 * PING, and ends the connection when nothing comes back within timeout_ms (etcd's
 * --grpc-keepalive-interval and --grpc-keepalive-timeout: default 2 h and 20 s; interval 0
 * turns it off). */
void gw_set_keepalive(struct gw *gw, long interval_ms, long timeout_ms);

/* What Status and MemberList report about this node (optional; set before clients come). */
struct gw_node {
	uint64_t leader;	  /* member id of the leader, 0 = none known */
	uint64_t raft_index;	  /* applied Raft index */
	int64_t compact_revision; /* oldest revision still readable */
};
typedef int (*gw_node_fn)(void *arg, struct gw_node *out);
/* cluster_id and member_id go into every gRPC reply header; name and client_url into
 * MemberList; fn (may be NULL) fills struct gw_node when Status or HashKV is asked. */
void gw_set_member(struct gw *gw, uint64_t cluster_id, uint64_t member_id, const char *name,
		   const char *client_url, gw_node_fn fn, void *arg);
/* A member of the cluster (this node too) with its peer URL, for MemberList, which then lists
 * every member added, by id (the others without client URLs: this node does not know them).
 * At most 16; -ENOSPC beyond. Call before clients come. */
int gw_add_peer(struct gw *gw, uint64_t id, const char *peer_url);

/* Stops accepting, ends every connection and watch, joins all threads, frees gw. NULL is
 * ignored. */
void gw_stop(struct gw *gw);

#endif
