/* http.c: HTTP/1.1 on one connection: reading requests (bounded head and body, keep-alive,
 * pipelining, chunked bodies, Expect: 100-continue) and sending replies.
 */
#include "gateway_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/util.h"

#define BODY_MAX ((size_t)4 << 20) /* larger request bodies are refused */
#define HEAD_MAX ((size_t)16 << 10)
#define IN_MAX (BODY_MAX + HEAD_MAX + ((size_t)64 << 10))
#define DRAIN_MAX ((size_t)64 << 20) /* bytes read and dropped before closing on an error */
#define MAX_HEADERS 100
#define IDLE_TIMEOUT_MS 300000 /* keep-alive connection without a request */
#define IO_TIMEOUT_MS 30000    /* silence in the middle of a request */

static const char *status_text(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 412:
		return "Precondition Failed";
	case 413:
		return "Payload Too Large";
	case 414:
		return "URI Too Long";
	case 417:
		return "Expectation Failed";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Internal Server Error";
	}
}

/* grpc-gateway's mapping of gRPC codes to HTTP statuses. */
static int http_status(int code)
{
	/* etcd 3.4's grpc-gateway: FailedPrecondition (9) is 412, as etcd answers a grant of
	 * a lease id in use (test_json_lease_endpoints_differential) */
	static const int map[] = {200, 408, 500, 400, 504, 404, 409, 403, 429,
				  412, 409, 400, 501, 500, 503, 500, 401};
	return code >= 0 && code < (int)(sizeof(map) / sizeof(map[0])) ? map[code] : 500;
}

int http_send_typed(struct conn *c, int status, const char *type, const char *body, size_t len,
		    bool keep)
{
	char head[256];
	int hn = snprintf(head, sizeof(head),
			  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
			  "Content-Length: %zu\r\n%s\r\n",
			  status, status_text(status), type, len,
			  keep ? "" : "Connection: close\r\n");
	char *all = malloc((size_t)hn + len);
	if (!all)
		return -ENOMEM;
	memcpy(all, head, (size_t)hn);
	memcpy(all + hn, body, len);
	int ret = util_send_all(c->fd, all, (size_t)hn + len);
	free(all);
	return ret;
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

/* Reads more input. >0 bytes read, 0 at EOF, -ETIMEDOUT, -ENOBUFS when the buffer is at its
 * bound, or another negative errno. */
static ssize_t fill(struct conn *c, int timeout_ms)
{
	if (c->in_off && c->in_len == c->in_cap) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	if (c->in_len == c->in_cap) {
		if (c->in_cap >= IN_MAX)
			return -ENOBUFS;
		size_t cap = c->in_cap ? c->in_cap * 2 : 16384;
		if (cap > IN_MAX)
			cap = IN_MAX;
		char *p = realloc(c->in, cap);
		if (!p)
			return -ENOMEM;
		c->in = p;
		c->in_cap = cap;
	}
	for (;;) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		c->in_len += (size_t)n;
		return n;
	}
}

static int http_fail(struct http_err *e, int status, int code, const char *msg)
{
	e->status = status;
	e->code = code;
	e->msg = msg;
	return -1;
}

static bool is_token_char(unsigned char ch)
{
	return ch > 32 && ch < 127 && !strchr("()<>@,;:\\\"/[]?={}", ch);
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = 0;
	return s;
}

static bool has_token(const char *value, const char *tok)
{
	size_t tl = strlen(tok);
	for (const char *p = value; *p;) {
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

/* Parses the head in head[0..len) (NUL-terminated copy, no NUL inside). */
static int parse_head(char *head, struct request *rq, struct http_err *e)
{
	char *save = NULL, *line = strtok_r(head, "\n", &save);
	if (!line)
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "empty request");
	size_t ll = strlen(line);
	if (ll && line[ll - 1] == '\r')
		line[--ll] = 0;
	/* METHOD SP TARGET SP HTTP/1.x */
	char *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || strchr(sp2 + 1, ' '))
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed request line");
	*sp1 = *sp2 = 0;
	size_t ml = strlen(line), tl = strlen(sp1 + 1);
	if (!ml || ml >= sizeof(rq->method) || !tl)
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed request line");
	for (size_t i = 0; i < ml; i++)
		if (!is_token_char((unsigned char)line[i]))
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed method");
	if (tl >= sizeof(rq->path))
		return http_fail(e, 414, GRPC_INVALID_ARGUMENT, "request target too long");
	const char *ver = sp2 + 1;
	if (strncmp(ver, "HTTP/1.", 7) || (ver[7] != '0' && ver[7] != '1') || ver[8])
		return http_fail(e, strncmp(ver, "HTTP/", 5) ? 400 : 505, GRPC_INVALID_ARGUMENT,
				 "unsupported HTTP version");
	memcpy(rq->method, line, ml + 1);
	memcpy(rq->path, sp1 + 1, tl + 1);
	char *q = strchr(rq->path, '?');
	if (q)
		*q = 0;
	rq->minor = ver[7] - '0';
	rq->content_length = -1;
	bool close = false, keep = false, te = false;
	int n_headers = 0;
	while ((line = strtok_r(NULL, "\n", &save))) {
		ll = strlen(line);
		if (ll && line[ll - 1] == '\r')
			line[--ll] = 0;
		if (!ll)
			break;
		if (++n_headers > MAX_HEADERS)
			return http_fail(e, 431, GRPC_INVALID_ARGUMENT, "too many header fields");
		if (line[0] == ' ' || line[0] == '\t')
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "folded header line");
		char *colon = strchr(line, ':');
		if (!colon || colon == line)
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed header line");
		for (char *p = line; p < colon; p++)
			if (!is_token_char((unsigned char)*p))
				return http_fail(e, 400, GRPC_INVALID_ARGUMENT,
						 "malformed header name");
		*colon = 0;
		char *v = trim(colon + 1);
		if (!strcasecmp(line, "Content-Length")) {
			size_t vl = strlen(v);
			if (!vl || vl > 18 || strspn(v, "0123456789") != vl)
				return http_fail(e, 400, GRPC_INVALID_ARGUMENT,
						 "bad Content-Length");
			long long cl = strtoll(v, NULL, 10);
			if (rq->content_length >= 0 && rq->content_length != cl)
				return http_fail(e, 400, GRPC_INVALID_ARGUMENT,
						 "conflicting Content-Length");
			rq->content_length = cl;
		} else if (!strcasecmp(line, "Transfer-Encoding")) {
			if (te || strcasecmp(v, "chunked"))
				return http_fail(e, 501, GRPC_UNIMPLEMENTED,
						 "unsupported Transfer-Encoding");
			te = true;
		} else if (!strcasecmp(line, "Connection")) {
			close |= has_token(v, "close");
			keep |= has_token(v, "keep-alive");
		} else if (!strcasecmp(line, "Expect")) {
			if (strcasecmp(v, "100-continue"))
				return http_fail(e, 417, GRPC_INVALID_ARGUMENT,
						 "unsupported expectation");
			rq->expect_continue = rq->minor >= 1;
		}
	}
	if (te && rq->content_length >= 0)
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT,
				 "both Content-Length and Transfer-Encoding");
	rq->chunked = te;
	/* HTTP/1.0 clients get one request per connection (no keep-alive header games). */
	(void)keep;
	rq->keep_alive = rq->minor >= 1 && !close;
	return 0;
}

/* Finds the end of the head (after the empty line) in b[0..n); 0 if not there yet. */
static size_t head_end(const char *b, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (b[i] != '\n')
			continue;
		if (b[i + 1] == '\n')
			return i + 2;
		if (b[i + 1] == '\r' && i + 2 < n && b[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* Reads a line ending in LF from the input (for chunk sizes and trailers); returns its
 * length without CR LF, the line starting at c->in + c->in_off, and *adv the bytes to consume.
 * -1 with e set on errors, or a negative errno (-2 style values are not used). */
static int read_line(struct conn *c, size_t max, size_t *len, size_t *adv, struct http_err *e)
{
	for (;;) {
		char *s = c->in + c->in_off;
		size_t avail = c->in_len - c->in_off;
		char *nl = memchr(s, '\n', avail < max ? avail : max);
		if (nl) {
			size_t n = (size_t)(nl - s);
			*adv = n + 1;
			if (n && s[n - 1] == '\r')
				n--;
			*len = n;
			return 0;
		}
		if (avail >= max)
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed chunked body");
		ssize_t r = fill(c, IO_TIMEOUT_MS);
		if (r <= 0)
			return http_fail(e, 0, 0, NULL); /* status 0: just close */
	}
}

static int read_chunked(struct conn *c, struct request *rq, struct http_err *e)
{
	size_t cap = 0;
	for (;;) {
		size_t len, adv;
		if (read_line(c, 1024, &len, &adv, e) < 0)
			return -1;
		const char *s = c->in + c->in_off;
		size_t size = 0, i = 0;
		for (; i < len && i < 9; i++) {
			int d = s[i] >= '0' && s[i] <= '9'   ? s[i] - '0'
				: s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10
				: s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 10
							     : -1;
			if (d < 0)
				break;
			size = size * 16 + (size_t)d;
		}
		if (!i || (i < len && s[i] != ';' && s[i] != ' ' && s[i] != '\t') || i > 8)
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed chunk size");
		c->in_off += adv;
		if (size == 0)
			break;
		if (size > BODY_MAX || rq->body_len + size > BODY_MAX)
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, ERR_TOO_LARGE);
		if (rq->body_len + size + 1 > cap) {
			size_t ncap = cap ? cap : 4096;
			while (ncap < rq->body_len + size + 1)
				ncap *= 2;
			char *p = realloc(rq->body, ncap);
			if (!p)
				return http_fail(e, 500, GRPC_RESOURCE_EXHAUSTED, "out of memory");
			rq->body = p;
			cap = ncap;
		}
		size_t need = size + 1; /* data + at least LF */
		while (c->in_len - c->in_off < need + 1) {
			ssize_t r = fill(c, IO_TIMEOUT_MS);
			if (r <= 0)
				return http_fail(e, 0, 0, NULL);
		}
		memcpy(rq->body + rq->body_len, c->in + c->in_off, size);
		rq->body_len += size;
		c->in_off += size;
		const char *t = c->in + c->in_off;
		if (t[0] == '\r' && t[1] == '\n')
			c->in_off += 2;
		else if (t[0] == '\n')
			c->in_off += 1;
		else
			return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "malformed chunk");
	}
	/* Trailer fields up to an empty line. */
	for (int n = 0;; n++) {
		size_t len, adv;
		if (n > MAX_HEADERS)
			return http_fail(e, 431, GRPC_INVALID_ARGUMENT, "too many trailer fields");
		if (read_line(c, HEAD_MAX, &len, &adv, e) < 0)
			return -1;
		c->in_off += adv;
		if (!len)
			break;
	}
	if (!rq->body && !(rq->body = malloc(1)))
		return http_fail(e, 500, GRPC_RESOURCE_EXHAUSTED, "out of memory");
	rq->body[rq->body_len] = 0;
	return 0;
}

int http_read_request(struct conn *c, struct request *rq, struct http_err *e)
{
	size_t end;
	memset(rq, 0, sizeof(*rq));
	if (c->in_off) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	bool started = false;
	for (;;) {
		/* Empty lines before a request line are allowed (RFC 9112 2.2). */
		while (c->in_off < c->in_len &&
		       (c->in[c->in_off] == '\r' || c->in[c->in_off] == '\n'))
			c->in_off++;
		if (c->in_off < c->in_len)
			started = true;
		end = head_end(c->in + c->in_off, c->in_len - c->in_off);
		if (end)
			break;
		if (c->in_len - c->in_off > HEAD_MAX)
			return http_fail(e, 431, GRPC_INVALID_ARGUMENT, "request head too large");
		ssize_t r = fill(c, started ? IO_TIMEOUT_MS : IDLE_TIMEOUT_MS);
		if (r == 0 || (r == -ETIMEDOUT && !started) || r == -ECONNRESET)
			return 1;
		if (r < 0)
			return http_fail(e, r == -ETIMEDOUT ? 408 : 0, GRPC_INVALID_ARGUMENT,
					 "request timed out");
	}
	if (end > HEAD_MAX)
		return http_fail(e, 431, GRPC_INVALID_ARGUMENT, "request head too large");
	char head[HEAD_MAX + 1];
	memcpy(head, c->in + c->in_off, end);
	head[end] = 0;
	if (memchr(head, 0, end))
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, "NUL byte in request head");
	c->in_off += end;
	if (parse_head(head, rq, e) < 0)
		return -1;
	if (rq->chunked) {
		if (rq->expect_continue &&
		    util_send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
			return http_fail(e, 0, 0, NULL);
		return read_chunked(c, rq, e);
	}
	size_t cl = rq->content_length > 0 ? (size_t)rq->content_length : 0;
	if (rq->content_length > (long long)BODY_MAX)
		return http_fail(e, 400, GRPC_INVALID_ARGUMENT, ERR_TOO_LARGE);
	if (cl && rq->expect_continue && c->in_len == c->in_off &&
	    util_send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
		return http_fail(e, 0, 0, NULL);
	while (c->in_len - c->in_off < cl) {
		ssize_t r = fill(c, IO_TIMEOUT_MS);
		if (r <= 0)
			return http_fail(e, r == -ETIMEDOUT ? 408 : 0, GRPC_INVALID_ARGUMENT,
					 "request timed out");
	}
	if (!(rq->body = malloc(cl + 1)))
		return http_fail(e, 500, GRPC_RESOURCE_EXHAUSTED, "out of memory");
	memcpy(rq->body, c->in + c->in_off, cl);
	rq->body[cl] = 0;
	rq->body_len = cl;
	c->in_off += cl;
	return 0;
}
