/* tls.c: TLS on the gateway's client port: the server context (certificate, key, client
 * verification, ALPN), the handshake and the relay between the TLS session and the plain
 * socketpair the HTTP code uses (tls.h says why).
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "core/util.h"
#include "gateway_int.h"

#define HANDSHAKE_TIMEOUT_MS 10000
#define STALL_TIMEOUT_MS 30000 /* as the plain socket's SO_SNDTIMEO in server.c */
#define RELAY_BUF 16384	       /* one TLS record */

struct tls_srv {
	SSL_CTX *ctx;
};

struct tls_conn {
	SSL *ssl;
	int net;   /* the TCP socket (non-blocking) */
	int inner; /* the relay's end of the socketpair (non-blocking) */
	pthread_t relay;
};

/* OpenSSL's most recent error as text (and the queue emptied). */
static const char *ssl_reason(char *buf, size_t size)
{
	unsigned long e = ERR_peek_last_error();
	if (!e) {
		snprintf(buf, size, "%s", errno ? strerror(errno) : "unknown error");
	} else {
		const char *r = ERR_reason_error_string(e);
		snprintf(buf, size, "%s", r ? r : "unknown error");
	}
	ERR_clear_error();
	return buf;
}

/* ALPN: h2 first, then http/1.1; a client offering neither goes on without ALPN. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x02h2\x08http/1.1";
	unsigned char *sel;
	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int load_fail(const char *what, const char *file)
{
	char r[256];
	log_err("gateway: cannot use %s '%s': %s", what, file, ssl_reason(r, sizeof(r)));
	return -EINVAL;
}

int tls_srv_new(const struct gw_tls_config *cfg, struct tls_srv **out)
{
	*out = NULL;
	if (!cfg->cert_file || !cfg->key_file) {
		log_err("gateway: TLS needs both --cert-file and --key-file");
		return -EINVAL;
	}
	if (cfg->client_cert_auth && !cfg->trusted_ca_file) {
		log_err("gateway: --client-cert-auth needs --trusted-ca-file (the CA that signs "
			"client certificates)");
		return -EINVAL;
	}
	struct tls_srv *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	int ret = -EINVAL;
	t->ctx = SSL_CTX_new(TLS_server_method());
	if (!t->ctx) {
		ret = -ENOMEM;
		goto err;
	}
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	/* The relay retries a write from where its buffer now starts. */
	SSL_CTX_set_mode(t->ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(t->ctx, cfg->cert_file) != 1) {
		load_fail("--cert-file", cfg->cert_file);
		goto err;
	}
	if (SSL_CTX_use_PrivateKey_file(t->ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
		load_fail("--key-file", cfg->key_file);
		goto err;
	}
	if (SSL_CTX_check_private_key(t->ctx) != 1) {
		load_fail("--key-file (does it match --cert-file?)", cfg->key_file);
		goto err;
	}
	if (cfg->trusted_ca_file) {
		if (SSL_CTX_load_verify_locations(t->ctx, cfg->trusted_ca_file, NULL) != 1) {
			load_fail("--trusted-ca-file", cfg->trusted_ca_file);
			goto err;
		}
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->trusted_ca_file);
		if (names)
			SSL_CTX_set_client_CA_list(t->ctx, names);
		ERR_clear_error();
	}
	/* As etcd: the trusted CA alone asks for nothing; --client-cert-auth requires a
	 * certificate the CA signed. */
	if (cfg->client_cert_auth)
		SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_alpn_select_cb(t->ctx, alpn_select, NULL);
	*out = t;
	return 0;
err:
	tls_srv_free(t);
	return ret;
}

void tls_srv_free(struct tls_srv *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

/* ---- handshake ---- */

static void peer_name(int fd, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
			port = ntohs(s6->sin6_port);
		} else if (ss.ss_family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
			port = ntohs(s4->sin_port);
		}
	}
	snprintf(buf, size, "%s:%d", host, port);
}

/* Why the handshake failed, in words an operator can act on. */
static const char *handshake_reason(SSL *ssl, int err, char *buf, size_t size)
{
	long v = SSL_get_verify_result(ssl);
	if (v != X509_V_OK) {
		snprintf(buf, size, "client certificate refused: %s",
			 X509_verify_cert_error_string(v));
		ERR_clear_error();
		return buf;
	}
	if (err == SSL_ERROR_SYSCALL && !ERR_peek_last_error())
		return errno ? strerror(errno) : "the client closed the connection";
	return ssl_reason(buf, size);
}

static const char plain_answer[] = "HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n"
				   "Client sent an HTTP request to an HTTPS server.\n";

static int handshake(struct conn *c, SSL *ssl)
{
	int64_t deadline = util_now_ms() + HANDSHAKE_TIMEOUT_MS;
	char peer[80], why[256];
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int r = SSL_accept(ssl);
		if (r == 1)
			return 0;
		int err = SSL_get_error(ssl, r);
		int64_t left = deadline - util_now_ms();
		short ev = err == SSL_ERROR_WANT_READ	 ? POLLIN
			   : err == SSL_ERROR_WANT_WRITE ? POLLOUT
							 : 0;
		if (ev && left > 0 && !gw_stopping(c->gw)) {
			struct pollfd p = {.fd = c->fd, .events = ev};
			poll(&p, 1, left < 1000 ? (int)left : 1000);
			continue;
		}
		/* A cleartext HTTP client is told in words it can read, as etcd (Go) does. */
		bool cleartext = !ev && ERR_GET_REASON(ERR_peek_error()) == SSL_R_HTTP_REQUEST;
		peer_name(c->fd, peer, sizeof(peer));
		if (ev)
			snprintf(why, sizeof(why), "%s", left > 0 ? "stopping" : "timed out");
		else if (cleartext)
			snprintf(why, sizeof(why), "a cleartext HTTP request (answered 400)");
		else
			handshake_reason(ssl, err, why, sizeof(why));
		log_warn("gateway: TLS handshake with %s failed: %s", peer, why);
		if (cleartext && send(c->fd, plain_answer, sizeof(plain_answer) - 1,
				      MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("gateway: cannot answer %s: %s", peer, strerror(errno));
		else if (cleartext)
			http_linger_drain(
				c); /* the rest of its request must not reset the answer */
		return -ECONNABORTED;
	}
}

/* ---- the relay ---- */

enum { WANT_NONE, WANT_IN, WANT_OUT, WANT_FAIL };

static int want(SSL *ssl, int r)
{
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return WANT_IN;
	case SSL_ERROR_WANT_WRITE:
		return WANT_OUT;
	default:
		ERR_clear_error();
		return WANT_FAIL;
	}
}

struct relay {
	struct tls_conn *t;
	/* up: from the client to the HTTP code; down: from the HTTP code to the client */
	char up[RELAY_BUF], down[RELAY_BUF];
	size_t up_off, up_len, down_off, down_len;
	bool net_eof;	  /* the client ended (or the session failed): nothing more comes */
	bool up_shut;	  /* the HTTP code was told (shutdown SHUT_WR on inner) */
	bool inner_eof;	  /* the HTTP code has sent all it will */
	bool inner_gone;  /* the HTTP code has closed both directions */
	bool close_sent;  /* close_notify sent, the TCP sending side shut */
	bool failed;	  /* the session failed on our side, or the client stalled */
	int64_t stall_ms; /* since when a write to the client waits; 0: none */
	short net_ev, inner_ev;
};

/* Client to HTTP code. Returns whether anything moved. */
static bool pump_up(struct relay *r)
{
	bool moved = false;
	if (!r->net_eof && !r->inner_gone && r->up_len == 0) {
		ERR_clear_error();
		int n = SSL_read(r->t->ssl, r->up, sizeof(r->up));
		if (n > 0) {
			r->up_off = 0;
			r->up_len = (size_t)n;
			moved = true;
		} else {
			int w = want(r->t->ssl, n);
			if (w == WANT_IN)
				r->net_ev |= POLLIN;
			else if (w == WANT_OUT)
				r->net_ev |= POLLOUT;
			else
				r->net_eof = moved =
					true; /* close_notify, EOF or a broken session */
		}
	}
	if (r->up_len > r->up_off) {
		ssize_t n = send(r->t->inner, r->up + r->up_off, r->up_len - r->up_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			r->up_off += (size_t)n;
			if (r->up_off == r->up_len)
				r->up_off = r->up_len = 0;
			moved = true;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			r->inner_ev |= POLLOUT;
		} else {
			r->inner_gone = moved = true; /* the HTTP code stopped reading */
			r->up_off = r->up_len = 0;
		}
	}
	if (r->net_eof && r->up_len == 0 && !r->up_shut && !r->inner_gone) {
		shutdown(r->t->inner, SHUT_WR); /* the HTTP code sees the client's EOF */
		r->up_shut = moved = true;
	}
	return moved;
}

/* HTTP code to client. Returns whether anything moved. */
static bool pump_down(struct relay *r)
{
	bool moved = false;
	if (!r->inner_eof && r->down_len == 0) {
		ssize_t n = recv(r->t->inner, r->down, sizeof(r->down), MSG_DONTWAIT);
		if (n > 0) {
			r->down_off = 0;
			r->down_len = (size_t)n;
			moved = true;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			r->inner_ev |= POLLIN;
		} else {
			r->inner_eof = moved = true;
		}
	}
	if (r->down_len > r->down_off) {
		ERR_clear_error();
		int n = SSL_write(r->t->ssl, r->down + r->down_off,
				  (int)(r->down_len - r->down_off));
		if (n > 0) {
			r->down_off += (size_t)n;
			if (r->down_off == r->down_len)
				r->down_off = r->down_len = 0;
			r->stall_ms = 0;
			moved = true;
		} else {
			int w = want(r->t->ssl, n);
			if (w == WANT_FAIL) {
				r->failed = moved = true;
				return moved;
			}
			r->net_ev |= w == WANT_IN ? POLLIN : POLLOUT;
			if (!r->stall_ms)
				r->stall_ms = util_now_ms();
		}
	}
	if (r->inner_eof && r->down_len == 0 && !r->close_sent) {
		/* All the HTTP code sent is out: close_notify, then the TCP FIN. */
		ERR_clear_error();
		SSL_shutdown(r->t->ssl);
		ERR_clear_error();
		shutdown(r->t->net, SHUT_WR);
		r->close_sent = moved = true;
	}
	return moved;
}

static bool relay_over(const struct relay *r)
{
	if (r->failed)
		return true;
	if (r->stall_ms && util_now_ms() - r->stall_ms > STALL_TIMEOUT_MS)
		return true;
	/* Both directions have ended, or the HTTP code is gone and has nothing left to send. */
	return r->close_sent && (r->inner_gone || (r->net_eof && r->up_len == 0));
}

static void *relay_main(void *arg)
{
	struct relay *r = arg;
	while (!relay_over(r)) {
		r->net_ev = r->inner_ev = 0;
		bool moved = pump_up(r);
		moved |= pump_down(r);
		if (moved)
			continue;
		/* inner is always watched: its POLLHUP says the HTTP code closed it. */
		struct pollfd p[2] = {
			{.fd = r->net_ev ? r->t->net : -1, .events = r->net_ev},
			{.fd = r->inner_gone ? -1 : r->t->inner, .events = r->inner_ev},
		};
		int n = poll(p, 2, 1000);
		if (n > 0 && (p[1].revents & (POLLHUP | POLLERR)) && !(p[1].revents & POLLIN) &&
		    r->inner_eof)
			r->inner_gone = true;
	}
	if (!r->close_sent) {
		ERR_clear_error();
		if (!r->failed)
			SSL_shutdown(r->t->ssl);
		ERR_clear_error();
	}
	/* Whatever the HTTP code still does on its end fails at once. */
	shutdown(r->t->inner, SHUT_RDWR);
	shutdown(r->t->net, SHUT_RDWR);
	free(r);
	return NULL;
}

/* ---- connection life ---- */

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

int tls_conn_start(struct conn *c)
{
	struct tls_conn *t = calloc(1, sizeof(*t));
	struct relay *r = calloc(1, sizeof(*r));
	int sv[2] = {-1, -1}, ret = -ENOMEM;
	if (!t || !r)
		goto err;
	t->net = c->fd;
	t->ssl = SSL_new(c->gw->tls->ctx);
	if (!t->ssl || !SSL_set_fd(t->ssl, c->fd) || (ret = set_nonblock(c->fd)) < 0) {
		ret = ret < 0 ? ret : -ENOMEM;
		goto err;
	}
	ret = handshake(c, t->ssl);
	if (ret < 0)
		goto err;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || set_nonblock(sv[1]) < 0) {
		ret = -errno;
		log_warn("gateway: socketpair: %s", strerror(errno));
		goto err;
	}
	/* The HTTP code's sends to a client that stopped reading fail as on TCP. */
	struct timeval tv = {.tv_sec = STALL_TIMEOUT_MS / 1000};
	setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	t->inner = sv[1];
	r->t = t;
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
	log_debug("gateway: TLS %s, ALPN %.*s", SSL_get_version(t->ssl), (int)alpn_len,
		  alpn_len ? (const char *)alpn : "none");
	ret = -pthread_create(&t->relay, NULL, relay_main, r);
	if (ret < 0)
		goto err;
	pthread_mutex_lock(&c->gw->lock);
	c->fd = sv[0];
	c->tls = t;
	pthread_mutex_unlock(&c->gw->lock);
	return 0;
err:
	if (sv[0] >= 0) {
		close(sv[0]);
		close(sv[1]);
	}
	if (t)
		SSL_free(t->ssl);
	free(t);
	free(r);
	return ret;
}

void tls_conn_end(struct conn *c)
{
	if (c->tls)
		pthread_join(c->tls->relay, NULL);
}

void tls_conn_abort(struct conn *c)
{
	if (c->tls)
		shutdown(c->tls->net, SHUT_RDWR);
}

void tls_conn_free(struct conn *c)
{
	struct tls_conn *t = c->tls;
	if (!t)
		return;
	SSL_free(t->ssl);
	close(t->inner);
	close(t->net);
	free(t);
	c->tls = NULL;
}
