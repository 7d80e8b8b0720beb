/* grpc_int.h: what the gRPC side of the gateway shares. Not a public header.
 *
 * h2.c         HTTP/2 (nghttp2) on a connection that opened with the client preface: streams,
 *              gRPC message framing, grpc-status trailers, flow control and memory bounds
 * grpc_kv.c    the unary RPCs: KV, Lease (but KeepAlive), Maintenance, Cluster
 * grpc_watch.c the streaming RPCs: Watch and Lease.KeepAlive
 * grpc_snapshot.c Maintenance.Snapshot: the keyspace as a bbolt file, as etcd streams it
 *
 * Wire facts (gRPC over HTTP/2): a call is a POST to /<package.Service>/<Method> with
 * "content-type: application/grpc"; each message travels as [1 byte compressed flag][4 bytes
 * big-endian length][protobuf]. The reply is HEADERS (:status 200), DATA, then trailing HEADERS
 * with "grpc-status" (decimal code) and "grpc-message" (percent-encoded); a call that fails
 * before any message may answer with the trailers alone ("trailers-only").
 *
 * Threads: an h2 connection, its session and its streams belong to the connection's thread.
 * A stream's output queue (and the connection's output accounting) is shared with the
 * backend's watch threads, under h2conn.mu; unary handlers run on the connection's worker
 * threads and see only their ctx (never the stream).
 */
#ifndef ETCDFS_GATEWAY_GRPC_INT_H
#define ETCDFS_GATEWAY_GRPC_INT_H

#include <protobuf-c/protobuf-c.h>

#include "etcdserver.pb-c.h"
#include "gateway_int.h"

#define GRPC_NOT_FOUND 5
#define ERR_LEASE_NOT_FOUND "etcdserver: requested lease not found"
#define ERR_LEASE_EXISTS "etcdserver: lease already exists"
#define ERR_VALUE_PROVIDED "etcdserver: value is provided"

/* etcd's defaults: requests up to 1.5 MiB, and gRPC messages up to that plus 512 KiB of
 * overhead (larger ones are refused by gRPC itself, before etcd looks at them). */
#define GRPC_MAX_REQUEST_BYTES ((size_t)3 << 19)
#define GRPC_MAX_RECV_MSG (GRPC_MAX_REQUEST_BYTES + ((size_t)512 << 10))

struct h2conn;
struct h2stream;

/* One RPC. Unary: the request is unpacked as req_desc says (an undecodable one fails the
 * call), then unary does the call with it (borrowed: freed after it returns) and sets the
 * packed reply (grpc_reply()), returning 0, or returns -1 with x's error set. Streaming: open, then
 * one msg call per request message, then close (also when the connection ends); they run on the
 * connection thread, and open and msg return 0 to go on or a gRPC code (message: h2_stream_error())
 * to end the call. */
struct grpc_method {
	const char *path;
	const ProtobufCMessageDescriptor *req_desc;
	int (*unary)(struct ctx *x, void *req);
	int (*open)(struct h2stream *st);
	int (*msg)(struct h2stream *st, const uint8_t *msg, size_t len);
	void (*close)(struct h2stream *st);
	/* the call goes on after the client ended its side (etcd's Watch does; KeepAlive ends) */
	bool outlives_input;
};

/* ---- h2.c ---- */

/* Whether the connection's first bytes are the HTTP/2 client preface (waits for them). */
bool h2_sniff(struct conn *c);
/* Serves HTTP/2 on the connection until it ends or the gateway stops. */
void h2_serve(struct conn *c);

struct gw *h2_stream_gw(struct h2stream *st);
void *h2_stream_data(struct h2stream *st);
void h2_stream_set_data(struct h2stream *st, void *data);
/* Queues one message on a streaming reply. wait: block while the stream's (or the
 * connection's) queued output is above its bound, until the client reads (back-pressure on
 * a watch thread); without it the message is queued regardless (replies the connection
 * thread itself makes). -EPIPE once the stream or connection is gone, -ENOMEM. */
int h2_stream_send(struct h2stream *st, const ProtobufCMessage *m, bool wait, const int *stop);
/* The same, from a message already packed (len bytes, without the frame header). */
int h2_stream_send_packed(struct h2stream *st, const uint8_t *p, size_t len);
/* Sets the message a streaming call ends with; returns code. */
int h2_stream_error(struct h2stream *st, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Ends a streaming call with code and message once the queued output is sent (connection
 * thread only). */
void h2_stream_finish(struct h2stream *st, int code, const char *msg);
/* Wakes every h2_stream_send() waiting on st, so each re-checks its stop flag. */
void h2_stream_wake(struct h2stream *st);

/* ---- grpc_kv.c ---- */

extern const struct grpc_method grpc_methods[];
extern const size_t grpc_n_methods;
/* Packs m as x's reply; 0, or -1 (out of memory, error set). */
int grpc_reply(struct ctx *x, const ProtobufCMessage *m);
/* Fills a reply header at revision rev. */
void grpc_header_fill(struct gw *gw, struct V3pb__Header *h, int64_t rev);
/* grpc_reply() of m with *header (m's own header field) set to a header at rev. */
int grpc_reply_at(struct ctx *x, const ProtobufCMessage *m, struct V3pb__Header **header,
		  int64_t rev);
/* A KeyValue from kv (borrowing its buffers). */
void grpc_kv_fill(struct V3pb__KeyValue *o, const struct kv_kv *kv);
/* Maps a kv.h errno to etcd's gRPC error like ctx_kv_fail(); -ENOENT of a write that names
 * a lease is "lease not found", -ENOSYS is Unimplemented. Returns -1. */
int grpc_kv_fail(struct ctx *x, int err, bool write, bool lease);

/* ---- grpc_watch.c ---- */

int grpc_watch_open(struct h2stream *st);
int grpc_watch_msg(struct h2stream *st, const uint8_t *msg, size_t len);
void grpc_watch_close(struct h2stream *st);
int grpc_keepalive_open(struct h2stream *st);
int grpc_keepalive_msg(struct h2stream *st, const uint8_t *msg, size_t len);
void grpc_keepalive_close(struct h2stream *st);

/* ---- grpc_snapshot.c ---- */

int grpc_snapshot_open(struct h2stream *st);
int grpc_snapshot_msg(struct h2stream *st, const uint8_t *msg, size_t len);

#endif
