/* tls.h: TLS on the gateway's client port (OpenSSL). Not a public header.
 *
 * A TLS connection is terminated on its own relay thread: after the handshake, the
 * connection's c->fd becomes one end of a socketpair and the relay copies between the other
 * end and the TLS session. So the HTTP/1.1 and HTTP/2 code (and the watch threads that send
 * on c->fd) keep using one plain socket, with its poll(), MSG_PEEK sniffing, shutdown() and
 * send timeouts, and no SSL object is ever used by two threads (OpenSSL forbids that).
 * ALPN offers h2 and http/1.1; the preface sniffing still decides what is spoken.
 */
#ifndef ETCDFS_GATEWAY_TLS_H
#define ETCDFS_GATEWAY_TLS_H

#include "gateway.h"

struct conn;
struct tls_srv; /* the server's certificate, key and client verification */

/* Loads the files of cfg (errors logged, naming the file and OpenSSL's reason):
 * 0 or -EINVAL. */
int tls_srv_new(const struct gw_tls_config *cfg, struct tls_srv **out);
void tls_srv_free(struct tls_srv *t);

/* On the connection's thread, before anything is read: the handshake on c->fd (bounded in
 * time), then c->fd is swapped (under gw->lock) for the socketpair end and the relay starts.
 * 0, or a negative errno: the handshake failed (logged), c->fd is unchanged. */
int tls_conn_start(struct conn *c);
/* After the connection's shutdown(c->fd): waits for the relay to send what is left. */
void tls_conn_end(struct conn *c);
/* gw_stop(), under gw->lock: ends the network side at once. */
void tls_conn_abort(struct conn *c);
/* The reaper, after the thread was joined: closes the network socket, frees. */
void tls_conn_free(struct conn *c);

#endif
