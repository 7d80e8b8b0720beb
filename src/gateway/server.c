/* server.c: the listening socket, the accept thread and one thread per connection.
 *
 * A connection thread never closes its socket: whoever joins it does, so gw_stop() can
 * shutdown() any socket at any time without racing a reuse of the descriptor.
 */
#include "grpc_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "tls.h"

#define MAX_CONNS 256
#define SEND_TIMEOUT_S 30 /* a client that does not read for this long is dropped */
#define DEFAULT_PROGRESS_MS 5000
#define DEFAULT_KEEPALIVE_MS 7200000 /* etcd's --grpc-keepalive-interval */
#define DEFAULT_KEEPALIVE_TIMEOUT_MS 20000
#define DEFAULT_CLUSTER_ID 0x65746364667300ULL /* "etcdfs": any constant, clients only compare */

bool gw_stopping(struct gw *gw)
{
	pthread_mutex_lock(&gw->lock);
	bool s = gw->stopping;
	pthread_mutex_unlock(&gw->lock);
	return s;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	if (c->gw->tls && tls_conn_start(c) < 0)
		goto out;
	/* etcd serves gRPC and its JSON gateway on one port: the first bytes tell which. */
	if (h2_sniff(c))
		h2_serve(c);
	else
		http_serve(c);
out:
	/* The client sees the end now; the descriptor itself is closed by the reaper. */
	shutdown(c->fd, SHUT_RDWR);
	tls_conn_end(c);
	pthread_mutex_lock(&c->gw->lock);
	c->done = true;
	pthread_mutex_unlock(&c->gw->lock);
	return NULL;
}

/* Joins and frees connections whose thread has ended (all of them when all is set, after
 * their sockets were shut down). */
static void reap(struct gw *gw, bool all)
{
	struct conn *dead = NULL;
	pthread_mutex_lock(&gw->lock);
	for (struct conn **pp = &gw->conns; *pp;) {
		struct conn *c = *pp;
		if (all || c->done) {
			*pp = c->next;
			c->next = dead;
			dead = c;
			gw->n_conns--;
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&gw->lock);
	while (dead) {
		struct conn *c = dead;
		dead = c->next;
		pthread_join(c->thread, NULL);
		close(c->fd);
		tls_conn_free(c);
		free(c);
	}
}

static void refuse_busy(int fd, bool tls)
{
	static const char body[] =
		"{\"error\":\"etcdfs gateway: too many connections\","
		"\"code\":14,\"message\":\"etcdfs gateway: too many connections\"}";
	char msg[512];
	if (tls) { /* a cleartext answer would only be a TLS error to the client */
		close(fd);
		return;
	}
	int n = snprintf(msg, sizeof(msg),
			 "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 sizeof(body) - 1, body);
	if (send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("gateway: could not answer a refused connection: %s", strerror(errno));
	close(fd);
}

static void *accept_main(void *arg)
{
	struct gw *gw = arg;
	for (;;) {
		struct pollfd p[2] = {{.fd = gw->lfd, .events = POLLIN},
				      {.fd = gw->wake[0], .events = POLLIN}};
		int r = poll(p, 2, 1000);
		reap(gw, false);
		if (r < 0 && errno != EINTR) {
			log_err("gateway: poll failed: %s", strerror(errno));
			usleep(100000);
			continue;
		}
		if (p[1].revents)
			break;
		if (r <= 0 || !(p[0].revents & POLLIN))
			continue;
		int fd = accept4(gw->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_warn("gateway: cannot accept a connection: %s",
					 strerror(errno));
				usleep(100000);
			}
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct timeval tv = {.tv_sec = SEND_TIMEOUT_S};
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		struct conn *c = calloc(1, sizeof(*c));
		pthread_mutex_lock(&gw->lock);
		bool busy = gw->n_conns >= MAX_CONNS || gw->stopping || !c;
		if (!busy) {
			c->gw = gw;
			c->fd = fd;
			if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
				busy = true;
			} else {
				c->next = gw->conns;
				gw->conns = c;
				gw->n_conns++;
			}
		}
		pthread_mutex_unlock(&gw->lock);
		if (busy) {
			log_warn("gateway: refusing a connection (%s)",
				 c ? "too many connections" : "out of memory");
			free(c);
			refuse_busy(fd, gw->tls != NULL);
		}
	}
	return NULL;
}

/* Splits "host:port" / "[v6]:port" into host and port. */
static int split_addr(const char *addr, char *host, size_t host_size, char *port, size_t port_size)
{
	const char *colon = strrchr(addr, ':');
	if (!colon || !colon[1] || strlen(colon + 1) >= port_size ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1) || atol(colon + 1) > 65535)
		return -EINVAL;
	const char *h = addr;
	size_t hl = (size_t)(colon - addr);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (!hl || hl >= host_size)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	strcpy(port, colon + 1);
	return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
	return false;
}

int gw_start(struct kv *kv, const char *listen_addr, struct gw **out)
{
	return gw_start_tls(kv, listen_addr, NULL, true, out);
}

/* Cleartext off loopback only when asked: anyone who reaches the port owns the keyspace. */
static int check_plaintext(const struct sockaddr *sa, const char *listen_addr, bool insecure)
{
	if (is_loopback(sa))
		return 0;
	if (!insecure) {
		log_err("gateway: refusing to serve cleartext on %s, which is not a loopback "
			"address: anyone who reaches it could read and write the whole keyspace. "
			"Give --cert-file and --key-file (and --trusted-ca-file with "
			"--client-cert-auth) to serve TLS, or --insecure-plaintext to serve "
			"cleartext anyway",
			listen_addr);
		return -EPERM;
	}
	log_warn("gateway: listening on %s, which is not a loopback address: there is no "
		 "TLS and no authentication, anyone who reaches it can read and write the "
		 "whole keyspace",
		 listen_addr);
	return 0;
}

int gw_start_tls(struct kv *kv, const char *listen_addr, const struct gw_tls_config *tls,
		 bool insecure_plaintext, struct gw **out)
{
	char host[256], port[8];
	struct tls_srv *ts = NULL;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV},
			*ai = NULL;
	int ret, fd = -1;
	*out = NULL;
	if (!kv || !listen_addr ||
	    split_addr(listen_addr, host, sizeof(host), port, sizeof(port)) < 0) {
		log_err("gateway: bad listen address '%s' (want IP:PORT)",
			listen_addr ? listen_addr : "(null)");
		return -EINVAL;
	}
	int gai = getaddrinfo(host, port, &hints, &ai);
	if (gai) {
		log_err("gateway: cannot resolve '%s': %s", listen_addr, gai_strerror(gai));
		return -EINVAL;
	}
	ret = tls ? tls_srv_new(tls, &ts)
		  : check_plaintext(ai->ai_addr, listen_addr, insecure_plaintext);
	if (ret < 0)
		goto out_err;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		log_err("gateway: socket: %s", strerror(errno));
		goto out_err;
	}
	int one = 1;
	/* A restart on the same port must not wait for TIME_WAIT connections. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		ret = -errno;
		log_err("gateway: cannot listen on %s: %s", listen_addr, strerror(errno));
		goto out_err;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	struct gw *gw = calloc(1, sizeof(*gw));
	if (!gw) {
		ret = -ENOMEM;
		goto out_err;
	}
	gw->kv = kv;
	gw->tls = ts;
	gw->lfd = fd;
	gw->progress_ms = DEFAULT_PROGRESS_MS;
	gw->keepalive_ms = DEFAULT_KEEPALIVE_MS;
	gw->keepalive_timeout_ms = DEFAULT_KEEPALIVE_TIMEOUT_MS;
	gw->cluster_id = DEFAULT_CLUSTER_ID;
	gw->member_id = 1;
	snprintf(gw->name, sizeof(gw->name), "etcdfs");
	gw->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						  : ((struct sockaddr_in *)&ss)->sin_port);
	snprintf(gw->client_url, sizeof(gw->client_url), "%s://%s%s%s:%d", ts ? "https" : "http",
		 ai->ai_family == AF_INET6 ? "[" : "", host, ai->ai_family == AF_INET6 ? "]" : "",
		 gw->port);
	pthread_mutex_init(&gw->lock, NULL);
	if ((ret = http_start(gw)) < 0)
		goto out_free;
	if (pipe2(gw->wake, O_CLOEXEC) < 0) {
		ret = -errno;
		goto out_http;
	}
	ret = -pthread_create(&gw->accept_thread, NULL, accept_main, gw);
	if (ret < 0) {
		log_err("gateway: cannot start a thread: %s", strerror(-ret));
		close(gw->wake[0]);
		close(gw->wake[1]);
		goto out_http;
	}
	freeaddrinfo(ai);
	log_info("gateway: serving etcd's v3 API (gRPC and JSON) on %s (port %d)%s", listen_addr,
		 gw->port, ts ? " over TLS" : "");
	*out = gw;
	return 0;
out_http:
	http_stop(gw);
out_free:
	pthread_mutex_destroy(&gw->lock);
	free(gw);
out_err:
	if (fd >= 0)
		close(fd);
	tls_srv_free(ts);
	freeaddrinfo(ai);
	return ret;
}

int gw_port(const struct gw *gw)
{
	return gw->port;
}

void gw_set_progress_interval(struct gw *gw, long ms)
{
	__atomic_store_n(&gw->progress_ms, ms > 0 ? ms : DEFAULT_PROGRESS_MS, __ATOMIC_RELAXED);
}

void gw_set_keepalive(struct gw *gw, long interval_ms, long timeout_ms)
{
	__atomic_store_n(&gw->keepalive_ms, interval_ms > 0 ? interval_ms : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&gw->keepalive_timeout_ms,
			 timeout_ms > 0 ? timeout_ms : DEFAULT_KEEPALIVE_TIMEOUT_MS,
			 __ATOMIC_RELAXED);
}

void gw_set_member(struct gw *gw, uint64_t cluster_id, uint64_t member_id, const char *name,
		   const char *client_url, gw_node_fn fn, void *arg)
{
	gw->cluster_id = cluster_id;
	gw->member_id = member_id;
	snprintf(gw->name, sizeof(gw->name), "%s", name ? name : "");
	if (client_url)
		snprintf(gw->client_url, sizeof(gw->client_url), "%s", client_url);
	gw->node_fn = fn;
	gw->node_arg = arg;
}

int gw_add_peer(struct gw *gw, uint64_t id, const char *peer_url)
{
	if (gw->n_peers == GW_MAX_PEERS)
		return -ENOSPC;
	struct gw_peer *p = &gw->peers[gw->n_peers++];
	p->id = id;
	snprintf(p->peer_url, sizeof(p->peer_url), "%s", peer_url);
	return 0;
}

void gw_stop(struct gw *gw)
{
	if (!gw)
		return;
	pthread_mutex_lock(&gw->lock);
	gw->stopping = true;
	pthread_mutex_unlock(&gw->lock);
	char b = 1;
	if (write(gw->wake[1], &b, 1) < 0)
		log_warn("gateway: cannot wake the accept thread: %s", strerror(errno));
	pthread_join(gw->accept_thread, NULL);
	close(gw->lfd);
	pthread_mutex_lock(&gw->lock);
	for (struct conn *c = gw->conns; c; c = c->next) {
		shutdown(c->fd, SHUT_RDWR);
		tls_conn_abort(c);
	}
	pthread_mutex_unlock(&gw->lock);
	reap(gw, true);
	http_stop(gw);
	close(gw->wake[0]);
	close(gw->wake[1]);
	pthread_mutex_destroy(&gw->lock);
	tls_srv_free(gw->tls);
	log_info("gateway: stopped");
	free(gw);
}
