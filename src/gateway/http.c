/* http.c: HTTP/1.1 through libmicrohttpd. The accept thread (server.c) owns the port and
 * sniffs each connection; one that does not start with the HTTP/2 preface is handed here and
 * added to an MHD daemon that has no listening socket of its own. MHD parses requests (head
 * and body limits, keep-alive, pipelining, chunked bodies, Expect: 100-continue) and writes
 * replies; this file turns its calls into struct request and gw_dispatch().
 *
 * MHD runs one thread per connection, so a watch stream may block in its content callback
 * (watch.c). The connection thread of server.c waits until MHD has closed the connection, so
 * the life of a struct conn and gw_stop()'s shutdown() of its socket stay as they were.
 */
#include "gateway_int.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

#define BODY_MAX ((size_t)4 << 20)    /* larger request bodies are refused */
#define POOL_BYTES ((size_t)24 << 10) /* MHD's per-connection pool: bounds the head (431) */
#define DRAIN_MAX ((size_t)64 << 20)  /* bytes read and dropped before closing on an error */
#define IDLE_TIMEOUT_S 300	      /* keep-alive connection without a request */

enum { MHD_NONE, MHD_PENDING, MHD_STARTED, MHD_CLOSED };

/* grpc-gateway's mapping of gRPC codes to HTTP statuses. */
static int http_status(int code)
{
	/* etcd 3.4's grpc-gateway: FailedPrecondition (9) is 412, as etcd answers a grant of
	 * a lease id in use (test_json_lease_endpoints_differential) */
	static const int map[] = {200, 408, 500, 400, 504, 404, 409, 403, 429,
				  412, 409, 400, 501, 500, 503, 500, 401};
	return code >= 0 && code < (int)(sizeof(map) / sizeof(map[0])) ? map[code] : 500;
}

int http_queue(struct conn *c, int status, struct MHD_Response *r, bool keep)
{
	if (!r)
		return -ENOMEM;
	int ret = 0;
	if (!keep && MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close") != MHD_YES)
		ret = -ENOMEM;
	if (!ret && MHD_queue_response(c->mc, (unsigned)status, r) != MHD_YES)
		ret = -EIO;
	if (!ret)
		c->replied = true;
	MHD_destroy_response(r);
	return ret;
}

int http_send_typed(struct conn *c, int status, const char *type, const char *body, size_t len,
		    bool keep)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (r && MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES) {
		MHD_destroy_response(r);
		r = NULL;
	}
	return http_queue(c, status, r, keep);
}

static int send_response(struct conn *c, int status, const char *body, size_t len, bool keep)
{
	return http_send_typed(c, status, "application/json", body, len, keep);
}

int http_send_json(struct conn *c, int status, json_t *o, bool keep)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	int ret;
	if (!s) {
		static const char e[] = "{\"error\":\"etcdfs gateway: out of memory\",\"code\":8,"
					"\"message\":\"etcdfs gateway: out of memory\"}";
		return send_response(c, 500, e, sizeof(e) - 1, keep);
	}
	ret = send_response(c, status, s, strlen(s), keep);
	free(s);
	return ret;
}

int http_send_error(struct conn *c, int code, const char *msg, bool keep)
{
	json_t *o = json_pack("{s:s, s:s, s:i}", "error", msg, "message", msg, "code", code);
	int ret = http_send_json(c, http_status(code), o, keep);
	json_decref(o);
	return ret;
}

void http_linger_drain(struct conn *c)
{
	char buf[65536];
	size_t total = 0;
	int64_t deadline = util_now_ms() + 2000;
	shutdown(c->fd, SHUT_WR);
	while (total < DRAIN_MAX) {
		int64_t left = deadline - util_now_ms();
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		total += (size_t)n;
	}
}

static bool has_token(const char *value, const char *tok)
{
	size_t tl = strlen(tok);
	for (const char *p = value; p && *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		size_t n = (size_t)(e - p);
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == tl && !strncasecmp(p, tok, tl))
			return true;
		p = e;
	}
	return false;
}

static const char *header(struct MHD_Connection *mc, const char *name)
{
	return MHD_lookup_connection_value(mc, MHD_HEADER_KIND, name);
}

/* The first call for a request: its head. Returns the error to answer at once, or NULL. */
static const char *check_head(struct conn *c, struct request *rq, const char *url,
			      const char *method, const char *version, int *status, int *code)
{
	const char *cl = header(c->mc, MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *te = header(c->mc, MHD_HTTP_HEADER_TRANSFER_ENCODING);
	*status = 400;
	*code = GRPC_INVALID_ARGUMENT;
	/* HTTP/1.0 clients get one request per connection (no keep-alive header games). */
	rq->keep_alive = !strcmp(version, MHD_HTTP_VERSION_1_1) &&
			 !has_token(header(c->mc, MHD_HTTP_HEADER_CONNECTION), "close");
	if (strlen(method) >= sizeof(rq->method) || strlen(url) >= sizeof(rq->path)) {
		*status = 414;
		return "request target too long";
	}
	strcpy(rq->method, method);
	strcpy(rq->path, url);
	if (cl && te)
		return "both Content-Length and Transfer-Encoding";
	if (te && strcasecmp(te, "chunked")) {
		*status = 501;
		*code = GRPC_UNIMPLEMENTED;
		return "unsupported Transfer-Encoding";
	}
	if (cl && strtoull(cl, NULL, 10) > BODY_MAX)
		return ERR_TOO_LARGE;
	return NULL;
}

static enum MHD_Result refuse(struct conn *c, int status, int code, const char *msg)
{
	log_debug("gateway: refusing a request: %s", msg);
	json_t *o = json_pack("{s:s, s:s, s:i}", "error", msg, "message", msg, "code", code);
	int ret = http_send_json(c, status, o, false);
	json_decref(o);
	return ret ? MHD_NO : MHD_YES;
}

/* Appends a piece of the body; past BODY_MAX the rest is read and dropped. */
static int add_body(struct request *rq, const char *data, size_t n)
{
	if (rq->too_large || rq->body_len + n > BODY_MAX) {
		rq->too_large = true;
		return 0;
	}
	if (rq->body_len + n + 1 > rq->body_cap) {
		size_t cap = rq->body_cap ? rq->body_cap : 4096;
		while (cap < rq->body_len + n + 1)
			cap *= 2;
		char *p = realloc(rq->body, cap);
		if (!p)
			return -ENOMEM;
		rq->body = p;
		rq->body_cap = cap;
	}
	memcpy(rq->body + rq->body_len, data, n);
	rq->body_len += n;
	rq->body[rq->body_len] = 0;
	return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *size, void **req_cls)
{
	(void)cls;
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *c = ci ? ci->socket_context : NULL;
	struct request *rq = *req_cls;
	int status, code;
	if (!c)
		return MHD_NO;
	c->mc = mc;
	if (!rq) {
		if (!(rq = calloc(1, sizeof(*rq))))
			return MHD_NO;
		*req_cls = rq;
		const char *err = check_head(c, rq, url, method, version, &status, &code);
		return err ? refuse(c, status, code, err) : MHD_YES;
	}
	if (*size) {
		int ret = add_body(rq, data, *size);
		*size = 0;
		return ret ? MHD_NO : MHD_YES;
	}
	if (rq->too_large)
		return refuse(c, 400, GRPC_INVALID_ARGUMENT, ERR_TOO_LARGE);
	if (!rq->body && !(rq->body = calloc(1, 1)))
		return MHD_NO;
	c->replied = false;
	gw_dispatch(c, rq); /* its keep-alive verdict is in the reply's Connection header */
	return c->replied ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
			 enum MHD_RequestTerminationCode why)
{
	(void)cls, (void)mc, (void)why;
	struct request *rq = *req_cls;
	if (rq) {
		free(rq->body);
		free(rq);
		*req_cls = NULL;
	}
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct gw *gw = cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
		pthread_mutex_lock(&gw->lock);
		/* Only one pending connection can hold this descriptor: it is still open. The
		 * pending list is not gw->conns, which gw_stop() empties before joining. */
		for (struct conn **pp = &gw->mhd_pending; ci && *pp; pp = &(*pp)->mhd_next) {
			struct conn *c = *pp;
			if (c->mhd_fd == ci->connect_fd) {
				*pp = c->mhd_next;
				c->mhd_state = MHD_STARTED;
				*socket_context = c;
				break;
			}
		}
		pthread_mutex_unlock(&gw->lock);
		return;
	}
	struct conn *c = *socket_context;
	if (!c)
		return;
	pthread_mutex_lock(&gw->lock);
	c->mhd_state = MHD_CLOSED;
	pthread_cond_broadcast(&gw->mhd_cond);
	pthread_mutex_unlock(&gw->lock);
}

int http_start(struct gw *gw)
{
	pthread_cond_init(&gw->mhd_cond, NULL);
	gw->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					   MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC | MHD_USE_POLL,
				   0, NULL, NULL, on_request, gw,
				   MHD_OPTION_CONNECTION_MEMORY_LIMIT, POOL_BYTES,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)IDLE_TIMEOUT_S,
				   MHD_OPTION_NOTIFY_COMPLETED, on_completed, gw,
				   MHD_OPTION_NOTIFY_CONNECTION, on_connection, gw, MHD_OPTION_END);
	if (!gw->mhd) {
		pthread_cond_destroy(&gw->mhd_cond);
		log_err("gateway: cannot start libmicrohttpd");
		return -ENOMEM;
	}
	return 0;
}

void http_stop(struct gw *gw)
{
	if (!gw->mhd)
		return;
	MHD_stop_daemon(gw->mhd);
	gw->mhd = NULL;
	pthread_cond_destroy(&gw->mhd_cond);
}

void http_serve(struct conn *c)
{
	struct gw *gw = c->gw;
	/* MHD closes the descriptor it gets; ours stays for the reaper and gw_stop(). */
	int fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		log_warn("gateway: cannot hand a connection over: %s", strerror(errno));
		return;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0 || ss.ss_family == AF_UNIX) {
		/* TLS arrives through a socketpair: the peer is the relay in this process */
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		memset(&ss, 0, sizeof(ss));
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*in);
	}
	pthread_mutex_lock(&gw->lock);
	c->mhd_fd = fd;
	c->mhd_state = MHD_PENDING;
	c->mhd_next = gw->mhd_pending;
	gw->mhd_pending = c;
	pthread_mutex_unlock(&gw->lock);
	/* MHD closes fd in any case */
	bool added = MHD_add_connection(gw->mhd, fd, (struct sockaddr *)&ss, sl) == MHD_YES;
	pthread_mutex_lock(&gw->lock);
	if (!added) {
		log_warn("gateway: libmicrohttpd refused a connection: %s", strerror(errno));
		for (struct conn **pp = &gw->mhd_pending; *pp; pp = &(*pp)->mhd_next) {
			if (*pp == c) {
				*pp = c->mhd_next;
				break;
			}
		}
		c->mhd_state = MHD_CLOSED;
	}
	while (c->mhd_state != MHD_CLOSED)
		pthread_cond_wait(&gw->mhd_cond, &gw->lock);
	pthread_mutex_unlock(&gw->lock);
}
