/* client.c: the etcd backend's unary requests (range, txn, compact, status): keep-alive
 * handle pools, TLS, the JSON and gRPC transports of the request loop (request.c), token
 * auth, range paging, and the choice between the JSON gateway and native gRPC (grpc.c) for
 * ranges and txns, with fallback to JSON. */
#include "internal.h"
#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"

/* Replies above c->max_reply (default ETCD_DEFAULT_MAX_REPLY_BYTES) are refused: a runaway,
 * not data. Ranges then ask for fewer keys. */
#define RESP_MAX(c) __atomic_load_n(&(c)->max_reply, __ATOMIC_RELAXED)
#define PAGE_MAX 1000 /* keys per range page */
#define PAGE_MIN 16
#define PAGE_BIG_BYTES ((size_t)8 << 20)   /* halve the page size above this reply size */
#define GRPC_PAGE_MAX 10000		   /* keys per gRPC range page */
#define GRPC_PAGE_BYTES ((size_t)16 << 20) /* aimed size of a gRPC range page */

/* ---- handles ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void etcd_setup_handle(struct etcd_client *c, CURL *h, long timeout_ms)
{
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->dial_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 10L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 5L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	/* The gateway speaks HTTP/1.1; keep-alive gives connection reuse. */
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "etcdfs/" ETCDFS_VERSION);
	if (c->cacert)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
	if (c->cert)
		curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert);
	if (c->key)
		curl_easy_setopt(h, CURLOPT_SSLKEY, c->key);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, c->insecure ? 0L : 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, c->insecure ? 0L : 2L);
}

int etcd_header_add(struct curl_slist **l, const char *name, const char *value)
{
	size_t len = strlen(name) + strlen(value) + sizeof(": ");
	char *h = malloc(len);
	if (!h)
		return -ENOMEM;
	/* "Name:" with nothing after it tells curl not to send its own. */
	snprintf(h, len, "%s:%s%s", name, *value ? " " : "", value);
	struct curl_slist *n = curl_slist_append(*l, h);
	/* The value may be a token: do not leave a copy on the heap. */
	explicit_bzero(h, len);
	free(h);
	if (!n)
		return -ENOMEM;
	*l = n;
	return 0;
}

struct curl_slist *etcd_headers(const char *token)
{
	struct curl_slist *l = NULL;
	/* "Expect:" (empty) stops curl from waiting for 100-continue on large bodies. */
	if (etcd_header_add(&l, "Content-Type", "application/json") < 0 ||
	    etcd_header_add(&l, "Expect", "") < 0 ||
	    (token && etcd_header_add(&l, "Authorization", token) < 0)) {
		curl_slist_free_all(l);
		return NULL;
	}
	return l;
}

/* HTTP/1.1 and HTTP/2 handles live in separate pools so that a handle's cached connection
 * always matches the protocol of the next request made with it. */
CURL *etcd_pool_get(struct etcd_client *c, bool h2)
{
	CURL *h = NULL;
	CURL **pool = h2 ? c->gpool : c->pool;
	size_t *n = h2 ? &c->n_gpool : &c->n_pool;
	pthread_mutex_lock(&c->pool_lock);
	if (*n)
		h = pool[--*n];
	pthread_mutex_unlock(&c->pool_lock);
	return h ? h : curl_easy_init();
}

void etcd_pool_put(struct etcd_client *c, CURL *h, bool h2)
{
	CURL **pool = h2 ? c->gpool : c->pool;
	size_t *n = h2 ? &c->n_gpool : &c->n_pool;
	pthread_mutex_lock(&c->pool_lock);
	if (*n < ETCD_POOL_MAX) {
		pool[(*n)++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

static void count(uint64_t *counter)
{
	__atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

/* ---- one HTTP exchange ---- */

int etcd_body_add(struct etcd_body *b, const void *data, size_t n, size_t reserve)
{
	if (b->len + n > b->max) {
		b->overflow = true;
		return -EMSGSIZE;
	}
	if (util_grow(&b->p, &b->cap, reserve, 1, 4096) < 0)
		return -ENOMEM;
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return 0;
}

/* Keeps a JSON reply NUL-terminated (not counted) for the parser. */
static size_t buf_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct etcd_body *b = ud;
	size_t n = size * nmemb;
	if (etcd_body_add(b, ptr, n, b->len + n + 1) < 0)
		return 0;
	b->p[b->len] = 0;
	return n;
}

static int xfer_abort(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	const int *abort_flag = ud;
	return abort_flag && __atomic_load_n(abort_flag, __ATOMIC_ACQUIRE) ? 1 : 0;
}

void etcd_describe_curl_error(CURL *h, CURLcode rc, const char *errbuf, char *buf, size_t size)
{
	long oserr = 0;
	curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
	if (rc == CURLE_COULDNT_CONNECT && oserr)
		snprintf(buf, size, "%s", strerror((int)oserr));
	else if (errbuf && *errbuf)
		snprintf(buf, size, "%s", errbuf);
	else
		snprintf(buf, size, "%s", curl_easy_strerror(rc));
}

/* Maps a transport failure to an errno; *unsent tells whether the request surely did not
 * reach the server (then retrying it elsewhere cannot apply it twice). */
int etcd_curl_errno(CURL *h, CURLcode rc, const char *errbuf, bool *unsent)
{
	curl_off_t pretransfer = 0;
	curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
	*unsent = pretransfer == 0;
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		*unsent = true;
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
		return -EACCES;
	case CURLE_ABORTED_BY_CALLBACK:
		return -ECANCELED;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		/* With TLS 1.3 a refused client certificate shows up as an alert on the first
		 * read after the handshake, e.g. "sslv3 alert bad certificate" or "tlsv13 alert
		 * certificate required". */
		if (errbuf && strstr(errbuf, "alert") && strstr(errbuf, "certificate"))
			return -EACCES;
		return -EIO;
	default:
		return -EIO;
	}
}

struct exchange {
	long status;	       /* HTTP status when the server answered */
	struct etcd_body resp; /* reply body */
	bool unsent;	       /* transport failure before the request left */
};

/* Posts body to one endpoint. Returns 0 when an HTTP reply arrived (any status), else the
 * transport errno after logging the endpoint and cause. */
static int exchange(struct etcd_client *c, size_t idx, const char *path, const char *body,
		    size_t body_len, const char *token, long timeout_ms, const int *abort_flag,
		    struct exchange *x)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	char url[1024];
	int ret = 0;
	memset(x, 0, sizeof(*x));
	snprintf(url, sizeof(url), "%s%s", c->urls[idx], path);
	CURL *h = etcd_pool_get(c, false);
	struct curl_slist *hdrs = etcd_headers(token);
	if (!h || !hdrs) {
		ret = -ENOMEM;
		x->unsent = true;
		goto out;
	}
	x->resp.max = RESP_MAX(c);
	curl_easy_reset(h);
	etcd_setup_handle(c, h, timeout_ms);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x->resp);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	if (abort_flag) {
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xfer_abort);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)abort_flag);
	}
	CURLcode rc = curl_easy_perform(h);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
	} else if (x->resp.overflow) {
		/* Not the endpoint's fault: the caller may ask for less (range paging). */
		log_debug("etcd %s: reply to %s larger than %zu bytes", c->urls[idx], path,
			  RESP_MAX(c));
		ret = -EMSGSIZE;
	} else {
		char cause[CURL_ERROR_SIZE + 64];
		ret = etcd_curl_errno(h, rc, errbuf, &x->unsent);
		etcd_describe_curl_error(h, rc, errbuf, cause, sizeof(cause));
		if (ret != -ECANCELED)
			log_warn("etcd %s: %s", c->urls[idx], cause);
	}
	/* Do not keep the header list (token) referenced by a pooled handle. */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
out:
	curl_slist_free_all(hdrs);
	if (h)
		etcd_pool_put(c, h, false);
	if (ret < 0) {
		free(x->resp.p);
		x->resp.p = NULL;
	}
	return ret;
}

struct req_opts {
	bool idempotent; /* safe to send again to another endpoint after it may have arrived */
	bool use_auth;
	bool secret;	 /* body holds a password: wipe it */
	bool may_shrink; /* -EMSGSIZE goes back to the caller, who asks for less */
	const int *abort_flag;
};

struct json_call {
	const char *path, *body;
	size_t body_len;
	const int *abort_flag;
	json_t *out;	   /* the decoded reply */
	size_t resp_bytes; /* its size */
};

/* The JSON transport's attempt for the request loop. */
static enum etcd_outcome json_perform(struct etcd_client *c, void *ctx, size_t idx,
				      const char *token, long timeout_ms, struct etcd_attempt *a)
{
	struct json_call *j = ctx;
	struct exchange x;
	int ret = exchange(c, idx, j->path, j->body, j->body_len, token, timeout_ms, j->abort_flag,
			   &x);
	a->err = ret;
	a->unsent = x.unsent;
	if (ret == -ECANCELED || ret == -ENOMEM || ret == -EMSGSIZE)
		return ETCD_STOP;
	if (ret < 0)
		return ETCD_LOST; /* exchange() logged it */
	if (x.status != 200) {
		etcd_json_error(x.resp.p ? x.resp.p : "", x.resp.len, x.status, &a->e);
		free(x.resp.p);
		return ETCD_REFUSED;
	}
	json_error_t jerr;
	json_t *r = json_loadb(x.resp.p ? x.resp.p : "", x.resp.len, 0, &jerr);
	if (!r || !json_is_object(r)) {
		log_err("etcd %s%s: malformed reply: %s", c->urls[idx], j->path,
			r ? "not an object" : jerr.text);
		json_decref(r);
		free(x.resp.p);
		a->err = -EIO;
		return ETCD_STOP;
	}
	j->out = r;
	j->resp_bytes = x.resp.len;
	free(x.resp.p);
	return ETCD_DONE;
}

static const struct etcd_request_ops json_ops = {.grpc = false, .perform = json_perform};

/* Sends req through the request loop over the JSON gateway. On success *out is the decoded
 * reply and *resp_bytes its size. -EMSGSIZE (not logged) when a reply exceeds c->max_reply
 * and o->may_shrink. */
static int request(struct etcd_client *c, const char *path, const json_t *req,
		   const struct req_opts *o, json_t **out, size_t *resp_bytes)
{
	char *body = json_dumps(req, JSON_COMPACT);
	*out = NULL;
	if (!body)
		return -ENOMEM;
	struct json_call j = {
		.path = path, .body = body, .body_len = strlen(body), .abort_flag = o->abort_flag};
	struct etcd_request rq = {.ops = &json_ops,
				  .ctx = &j,
				  .path = path,
				  .idempotent = o->idempotent,
				  .use_auth = o->use_auth,
				  .abort_flag = o->abort_flag};
	int ret = etcd_request_run(c, &rq);
	if (ret == 0) {
		*out = j.out;
		if (resp_bytes)
			*resp_bytes = j.resp_bytes;
	}
	if (ret == -EMSGSIZE && !o->may_shrink) {
		log_err("etcd: reply to %s larger than %zu bytes", path, RESP_MAX(c));
		ret = -EIO;
	}
	if (o->secret)
		explicit_bzero(body, j.body_len);
	free(body);
	return ret;
}

/* ---- gRPC requests ---- */

struct grpc_call {
	const char *path;
	const uint8_t *body;
	size_t body_len, max;
	const int *abort_flag;
	struct etcd_grpc_reply *r;
	const uint8_t *msg; /* the reply's message, inside r->body.p */
	size_t msg_len;
};

/* The gRPC transport's attempt for the request loop. */
static enum etcd_outcome grpc_perform(struct etcd_client *c, void *ctx, size_t idx,
				      const char *token, long timeout_ms, struct etcd_attempt *a)
{
	struct grpc_call *g = ctx;
	struct etcd_grpc_reply *r = g->r;
	*r = (struct etcd_grpc_reply){.body.max = g->max};
	int ret = etcd_grpc_exchange(c, idx, g->path, g->body, g->body_len, token, timeout_ms,
				     g->abort_flag, r);
	a->err = ret;
	a->unsent = r->unsent;
	if (ret == -ECANCELED || ret == -ENOMEM || ret == -EMSGSIZE)
		return ETCD_STOP;
	if (ret < 0 && r->proto_fail) {
		snprintf(a->why, sizeof(a->why), "%s", r->why);
		return ETCD_FOREIGN;
	}
	if (ret < 0) {
		log_warn("etcd %s: %s", c->urls[idx], r->why);
		return ETCD_LOST;
	}
	etcd_grpc_answered(c, idx);
	if (r->grpc_status == ETCD_GRPC_OK) {
		size_t used;
		int f = etcd_grpc_frame_next((const uint8_t *)r->body.p, r->body.len, g->max,
					     &g->msg, &g->msg_len, &used);
		if (f == 1 && used == r->body.len)
			return ETCD_DONE;
		snprintf(a->why, sizeof(a->why), "%s",
			 f == 1 ? "trailing bytes after the reply message"
				: "malformed reply frame");
		etcd_grpc_reply_free(r);
		a->applied = true; /* status OK: the server did apply it */
		return ETCD_FOREIGN;
	}
	etcd_grpc_status_error(r->grpc_status, r->grpc_msg, &a->e);
	etcd_grpc_reply_free(r);
	if (a->e.grpc_code == ETCD_GRPC_UNIMPLEMENTED) {
		/* A gRPC server without etcd's KV service (a proxy?): JSON may work. It ran
		 * nothing, so this holds for writes too. */
		snprintf(a->why, sizeof(a->why), "%s", a->e.msg);
		a->unsent = true;
		return ETCD_FOREIGN;
	}
	return ETCD_REFUSED;
}

static const struct etcd_request_ops grpc_ops = {.grpc = true, .perform = grpc_perform};

/* Sends a framed gRPC request through the request loop. On success *r holds the reply and
 * *msg, *msg_len its first message (inside r->body.p). Returns -EPROTONOSUPPORT (logged by
 * etcd_grpc_failed) when the request should go through JSON instead (see request.h),
 * -EMSGSIZE (not logged) when a reply exceeds max. */
static int grpc_request(struct etcd_client *c, const char *path, const uint8_t *body,
			size_t body_len, size_t max, bool idempotent, const int *abort_flag,
			struct etcd_grpc_reply *r, const uint8_t **msg, size_t *msg_len)
{
	struct grpc_call g = {.path = path,
			      .body = body,
			      .body_len = body_len,
			      .max = max,
			      .abort_flag = abort_flag,
			      .r = r};
	struct etcd_request rq = {.ops = &grpc_ops,
				  .ctx = &g,
				  .path = path,
				  .idempotent = idempotent,
				  .use_auth = true,
				  .abort_flag = abort_flag};
	memset(r, 0, sizeof(*r));
	int ret = etcd_request_run(c, &rq);
	if (ret < 0) {
		etcd_grpc_reply_free(r);
		return ret;
	}
	*msg = g.msg;
	*msg_len = g.msg_len;
	return 0;
}

/* ---- auth ---- */

/* Called with auth_lock held. */
static int authenticate(struct etcd_client *c, const int *abort_flag)
{
	json_t *req = json_pack("{s:s, s:s}", "name", c->user, "password", c->password);
	json_t *resp = NULL;
	struct req_opts o = {.idempotent = true, .secret = true, .abort_flag = abort_flag};
	int ret;
	if (!req)
		return -ENOMEM;
	ret = request(c, "/v3/auth/authenticate", req, &o, &resp, NULL);
	/* jansson keeps its own copy of the password; wipe it before freeing. */
	json_t *pw = json_object_get(req, "password");
	if (pw)
		explicit_bzero((char *)json_string_value(pw), json_string_length(pw));
	json_decref(req);
	if (ret == -EOPNOTSUPP) {
		log_info("etcd: authentication is not enabled on the server; going on without a "
			 "token");
		c->auth_disabled = true;
		return 0;
	}
	if (ret < 0) {
		log_err("etcd: authentication as user '%s' failed: %s", c->user, strerror(-ret));
		return ret;
	}
	json_t *t = json_object_get(resp, "token");
	if (!json_is_string(t) || !*json_string_value(t)) {
		log_err("etcd: authentication reply carries no token");
		json_decref(resp);
		return -EIO;
	}
	char *tok = strdup(json_string_value(t));
	json_decref(resp);
	if (!tok)
		return -ENOMEM;
	etcd_secret_free(c->token);
	c->token = tok;
	c->token_gen++;
	log_debug("etcd: authenticated as user '%s'", c->user);
	return 0;
}

int etcd_get_token(struct etcd_client *c, char **token, uint64_t *gen, const int *abort_flag)
{
	int ret = 0;
	*token = NULL;
	*gen = 0;
	if (!c->user)
		return 0;
	pthread_mutex_lock(&c->auth_lock);
	if (!c->token && !c->auth_disabled)
		ret = authenticate(c, abort_flag);
	if (ret == 0 && c->token && !(*token = strdup(c->token)))
		ret = -ENOMEM;
	*gen = c->token_gen;
	pthread_mutex_unlock(&c->auth_lock);
	return ret;
}

void etcd_invalidate_token(struct etcd_client *c, uint64_t gen)
{
	pthread_mutex_lock(&c->auth_lock);
	if (gen == c->token_gen) {
		etcd_secret_free(c->token);
		c->token = NULL;
		c->auth_disabled = false;
		c->token_gen++;
	}
	pthread_mutex_unlock(&c->auth_lock);
}

int etcd_probe_endpoint(struct etcd_client *c, size_t idx, const int *abort_flag)
{
	struct exchange x;
	long timeout = c->command_timeout_ms < 2000 ? c->command_timeout_ms : 2000;
	int ret = exchange(c, idx % c->n_urls, "/v3/maintenance/status", "{}", 2, NULL, timeout,
			   abort_flag, &x);
	if (ret < 0)
		return ret;
	free(x.resp.p);
	/* Without a token an auth-enabled server still answers status; any HTTP reply proves
	 * the server is alive. */
	return 0;
}

/* ---- kv ops ---- */

static const struct req_opts read_opts = {.idempotent = true, .use_auth = true};
static const struct req_opts write_opts = {.idempotent = false, .use_auth = true};
static const struct req_opts range_opts = {
	.idempotent = true, .use_auth = true, .may_shrink = true};

/* One range request through the JSON gateway. */
static int range_json(struct etcd_client *c, const struct kv_range_req *req, const void *key,
		      size_t key_len, const void *end, size_t end_len, int64_t rev, int64_t limit,
		      struct kv_range_result *res, size_t *resp_bytes)
{
	json_t *o = etcd_json_range_req(req, key, key_len, end, end_len, rev, limit);
	json_t *resp = NULL;
	int ret;
	if (!o)
		return -ENOMEM;
	ret = request(c, "/v3/kv/range", o, &range_opts, &resp, resp_bytes);
	json_decref(o);
	if (ret < 0)
		return ret;
	count(&c->stats.json_ranges);
	ret = etcd_json_parse_range(resp, req->keys_only, res);
	if (ret < 0)
		log_err("etcd: malformed range reply: %s", strerror(-ret));
	json_decref(resp);
	return ret < 0 ? -EIO : 0;
}

/* One range request through gRPC. -EPROTONOSUPPORT: use JSON instead. */
static int range_grpc(struct etcd_client *c, const struct kv_range_req *req, const void *key,
		      size_t key_len, const void *end, size_t end_len, int64_t rev, int64_t limit,
		      struct kv_range_result *res, size_t *resp_bytes)
{
	uint8_t *body = NULL;
	size_t body_len = 0, msg_len = 0;
	const uint8_t *msg = NULL;
	struct etcd_grpc_reply r;
	int ret =
		etcd_grpc_range_req(req, key, key_len, end, end_len, rev, limit, &body, &body_len);
	if (ret < 0)
		return ret;
	ret = grpc_request(c, ETCD_GRPC_RANGE_PATH, body, body_len, RESP_MAX(c), true, NULL, &r,
			   &msg, &msg_len);
	free(body);
	if (ret < 0)
		return ret;
	count(&c->stats.grpc_ranges);
	if (resp_bytes)
		*resp_bytes = r.body.len;
	ret = etcd_grpc_parse_range(msg, msg_len, req->keys_only, res);
	etcd_grpc_reply_free(&r);
	if (ret == -EINVAL) {
		/* Not what our etcdserver.proto describes (a server from the future?): the JSON
		 * gateway may still serve it. */
		etcd_grpc_failed(
			c, c->urls[__atomic_load_n(&c->preferred, __ATOMIC_RELAXED) % c->n_urls],
			"malformed RangeResponse");
		return -EPROTONOSUPPORT;
	}
	return ret;
}

/* One range round trip by gRPC or JSON (falling back to JSON in AUTO). *grpc tells which
 * served it. -EMSGSIZE when the reply would exceed c->max_reply (not logged). */
static int range_once(struct etcd_client *c, const struct kv_range_req *req, const void *key,
		      size_t key_len, const void *end, size_t end_len, int64_t rev, int64_t limit,
		      struct kv_range_result *res, size_t *resp_bytes, bool *grpc)
{
	*grpc = false;
	if (etcd_use_grpc(c)) {
		int ret =
			range_grpc(c, req, key, key_len, end, end_len, rev, limit, res, resp_bytes);
		if (ret != -EPROTONOSUPPORT) {
			*grpc = true;
			return ret;
		}
		if (!etcd_fall_back(c))
			return -EIO;
	}
	return range_json(c, req, key, key_len, end, end_len, rev, limit, res, resp_bytes);
}

/* Keys for the next page: JSON keeps its proven sizes; gRPC aims at GRPC_PAGE_BYTES from the
 * bytes per key of the page just read. Both stay well under the reply limit max_reply, so that
 * a limit lowered below the usual page sizes does not make pages overshoot again and again. */
static int64_t next_limit(int64_t limit, bool grpc, size_t resp_bytes, size_t n_keys,
			  size_t max_reply)
{
	if (grpc) {
		size_t budget = GRPC_PAGE_BYTES < max_reply / 2 ? GRPC_PAGE_BYTES : max_reply / 2;
		size_t per_key = n_keys ? resp_bytes / n_keys : resp_bytes;
		size_t n = budget / (per_key ? per_key : 1);
		return n < PAGE_MIN ? PAGE_MIN : n > GRPC_PAGE_MAX ? GRPC_PAGE_MAX : (int64_t)n;
	}
	size_t big = PAGE_BIG_BYTES < max_reply / 2 ? PAGE_BIG_BYTES : max_reply / 2;
	if (limit > PAGE_MAX)
		limit = PAGE_MAX;
	if (resp_bytes > big && limit > PAGE_MIN)
		return limit / 2;
	if (resp_bytes < big / 8 && limit < PAGE_MAX)
		return limit * 2 > PAGE_MAX ? PAGE_MAX : limit * 2;
	return limit;
}

static int client_range(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res)
{
	struct etcd_client *c = to_client(kv);
	memset(res, 0, sizeof(*res));
	bool key_order = req->sort_order == KV_SORT_NONE || req->sort_target == KV_SORT_KEY;
	bool page = req->limit == 0 && !req->count_only && req->range_end_len > 0 && key_order;
	bool grpc;
	int ret;
	if (req->limit < 0)
		return -EINVAL;
	if (!page) {
		ret = range_once(c, req, req->key, req->key_len, req->range_end, req->range_end_len,
				 req->revision, req->limit, res, NULL, &grpc);
		if (ret == -EMSGSIZE) {
			log_err("etcd: range reply larger than %zu bytes; ask for fewer keys",
				RESP_MAX(c));
			ret = -EIO;
		}
		goto out;
	}
	/* Page in key order, pinned to one revision. Ascending pages continue after the last
	 * key (last + "\0"); descending ones end before it (range_end = last). */
	bool descend = req->sort_order == KV_SORT_DESCEND;
	char *key = malloc(req->key_len + 1), *end = malloc(req->range_end_len + 1);
	size_t key_len = req->key_len, end_len = req->range_end_len;
	int64_t limit = PAGE_MAX, rev = req->revision, count = 0, revision = 0;
	bool first = true;
	ret = -ENOMEM;
	if (!key || !end)
		goto out_free;
	if (key_len)
		memcpy(key, req->key, key_len);
	memcpy(end, req->range_end, end_len);
	for (;;) {
		size_t resp_bytes = 0, before = res->n_kvs;
		ret = range_once(c, req, key, key_len, end, end_len, rev, limit, res, &resp_bytes,
				 &grpc);
		if (ret == -EMSGSIZE && limit > PAGE_MIN) {
			/* Huge values: ask again for fewer keys. */
			limit = limit / 4 > PAGE_MIN ? limit / 4 : PAGE_MIN;
			log_debug("etcd: range page too large; retrying with %lld keys",
				  (long long)limit);
			continue;
		}
		if (ret == -EMSGSIZE) {
			log_err("etcd: %d keys of a range exceed %zu bytes", PAGE_MIN, RESP_MAX(c));
			ret = -EIO;
		}
		if (ret < 0)
			goto out_free;
		if (first) {
			count = res->count;
			revision = res->revision;
			if (!rev)
				rev = revision;
			first = false;
		}
		if (!res->more)
			break;
		if (res->n_kvs == before) {
			log_err("etcd: range page says more but holds no keys");
			ret = -EIO;
			goto out_free;
		}
		const struct kv_kv *last = &res->kvs[res->n_kvs - 1];
		char **dst = descend ? &end : &key;
		size_t *dst_len = descend ? &end_len : &key_len;
		char *n = realloc(*dst, last->key_len + 1);
		if (!n) {
			ret = -ENOMEM;
			goto out_free;
		}
		memcpy(n, last->key, last->key_len);
		n[last->key_len] = 0; /* ascending: the smallest key after last */
		*dst = n;
		*dst_len = last->key_len + (descend ? 0 : 1);
		limit = next_limit(limit, grpc, resp_bytes, res->n_kvs - before, RESP_MAX(c));
	}
	res->count = count;
	res->revision = revision;
	res->more = false;
	ret = 0;
out_free:
	free(key);
	free(end);
out:
	if (ret < 0)
		kv_range_result_free(res);
	return ret;
}

static bool branch_writes(const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ops[i].type != KV_OP_RANGE)
			return true;
	return false;
}

/* Refuses what neither transport can encode, so that both fail alike (-EINVAL). */
static int txn_check(const struct kv_txn *txn)
{
	for (size_t i = 0; i < txn->n_compare; i++) {
		const struct kv_compare *k = &txn->compare[i];
		if ((unsigned)k->target > KV_CMP_LEASE || (unsigned)k->result > KV_CMP_NOT_EQUAL)
			return -EINVAL;
	}
	const struct kv_op *branches[2] = {txn->success, txn->failure};
	size_t counts[2] = {txn->n_success, txn->n_failure};
	for (int b = 0; b < 2; b++)
		for (size_t i = 0; i < counts[b]; i++)
			if ((unsigned)branches[b][i].type > KV_OP_DELETE)
				return -EINVAL;
	return 0;
}

/* One txn through the JSON gateway. */
static int txn_json(struct etcd_client *c, const struct kv_txn *txn, bool writes,
		    struct kv_txn_result *res)
{
	json_t *o = NULL, *resp = NULL;
	bool *keys_only = NULL;
	int ret;
	if (!(o = etcd_json_txn_req(txn)))
		return -ENOMEM;
	ret = request(c, "/v3/kv/txn", o, writes ? &write_opts : &read_opts, &resp, NULL);
	if (ret < 0)
		goto out;
	count(&c->stats.json_txns);
	bool succeeded;
	if (etcd_json_bool(resp, "succeeded", &succeeded) < 0) {
		ret = -EIO;
		goto out_bad;
	}
	const struct kv_op *ops = succeeded ? txn->success : txn->failure;
	size_t n_ops = succeeded ? txn->n_success : txn->n_failure;
	if (n_ops && !(keys_only = calloc(n_ops, sizeof(*keys_only)))) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_ops; i++)
		keys_only[i] = ops[i].type == KV_OP_RANGE && ops[i].keys_only;
	ret = etcd_json_parse_txn(resp, keys_only, n_ops, res);
	if (ret < 0 && ret != -ENOMEM)
		goto out_bad;
	goto out;
out_bad:
	log_err("etcd: malformed txn reply");
	ret = -EIO;
out:
	free(keys_only);
	json_decref(o);
	json_decref(resp);
	return ret;
}

/* One txn through gRPC. -EPROTONOSUPPORT: nothing was applied, use JSON instead. */
static int txn_grpc(struct etcd_client *c, const struct kv_txn *txn, bool writes,
		    struct kv_txn_result *res)
{
	uint8_t *body = NULL;
	size_t body_len = 0, msg_len = 0;
	const uint8_t *msg = NULL;
	struct etcd_grpc_reply r;
	int ret = etcd_grpc_txn_req(txn, &body, &body_len);
	if (ret < 0)
		return ret;
	ret = grpc_request(c, ETCD_GRPC_TXN_PATH, body, body_len, RESP_MAX(c), !writes, NULL, &r,
			   &msg, &msg_len);
	free(body);
	if (ret == -EMSGSIZE) {
		log_err("etcd: reply to %s larger than %zu bytes", ETCD_GRPC_TXN_PATH, RESP_MAX(c));
		return -EIO;
	}
	if (ret < 0)
		return ret;
	count(&c->stats.grpc_txns);
	ret = etcd_grpc_parse_txn(msg, msg_len, txn, res);
	etcd_grpc_reply_free(&r);
	if (ret == -EINVAL) {
		/* Not what our etcdserver.proto describes (a server from the future?). A read-only
		 * txn may be asked again through JSON; a write was applied already. */
		etcd_grpc_failed(
			c, c->urls[__atomic_load_n(&c->preferred, __ATOMIC_RELAXED) % c->n_urls],
			"malformed TxnResponse");
		if (!writes)
			return -EPROTONOSUPPORT;
		log_err("etcd: malformed txn reply; the txn was applied, its result is unknown");
		return -EIO;
	}
	return ret;
}

static int client_txn(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res)
{
	struct etcd_client *c = to_client(kv);
	int ret;
	memset(res, 0, sizeof(*res));
	if (txn->n_compare > c->max_txn_ops || txn->n_success > c->max_txn_ops ||
	    txn->n_failure > c->max_txn_ops) {
		log_warn("etcd: txn with %zu compares, %zu/%zu ops exceeds the limit of %zu",
			 txn->n_compare, txn->n_success, txn->n_failure, c->max_txn_ops);
		return -E2BIG;
	}
	size_t size = etcd_txn_size_estimate(txn);
	if (size > c->max_request_bytes) {
		log_warn("etcd: request of at least %zu bytes exceeds the request limit of %zu "
			 "bytes; not sent",
			 size, c->max_request_bytes);
		return -EFBIG;
	}
	if (txn_check(txn) < 0) {
		log_err("etcd: txn with an unknown compare or op kind; not sent");
		return -EINVAL;
	}
	bool writes = branch_writes(txn->success, txn->n_success) ||
		      branch_writes(txn->failure, txn->n_failure);
	/* A write starts over gRPC only where it can stay there (etcd_grpc_write_ok()): choosing
	 * JSON up front is not a fallback. */
	size_t pref = __atomic_load_n(&c->preferred, __ATOMIC_RELAXED) % c->n_urls;
	if (etcd_use_grpc(c) && (!writes || etcd_grpc_write_ok(c, pref))) {
		/* Measured with bench_grpc_vs_json on etcd 3.4: a save's txn takes ~0.45-0.57
		 * ms over gRPC vs ~0.8-1.1 ms through the gateway (its loopback gRPC hop). */
		ret = txn_grpc(c, txn, writes, res);
		if (ret != -EPROTONOSUPPORT)
			goto out;
		kv_txn_result_free(res);
		memset(res, 0, sizeof(*res));
		if (!etcd_fall_back(c)) {
			ret = -EIO;
			goto out;
		}
	}
	ret = txn_json(c, txn, writes, res);
out:
	if (ret < 0)
		kv_txn_result_free(res);
	return ret;
}

static int client_compact(struct kv *kv, int64_t revision, bool physical)
{
	struct etcd_client *c = to_client(kv);
	json_t *resp = NULL;
	json_t *o = json_pack("{s:I, s:b}", "revision", (json_int_t)revision, "physical", physical);
	if (!o)
		return -ENOMEM;
	int ret = request(c, "/v3/kv/compaction", o, &write_opts, &resp, NULL);
	json_decref(o);
	json_decref(resp);
	return ret;
}

static int client_status(struct kv *kv, int64_t *revision)
{
	struct etcd_client *c = to_client(kv);
	json_t *resp = NULL;
	json_t *o = json_object();
	if (!o)
		return -ENOMEM;
	int ret = request(c, "/v3/maintenance/status", o, &read_opts, &resp, NULL);
	json_decref(o);
	if (ret == 0 && etcd_json_header_revision(resp, revision) < 0) {
		log_err("etcd: malformed status reply");
		ret = -EIO;
	}
	json_decref(resp);
	return ret;
}

/* ---- leases ----
 *
 * Over gRPC (the Lease service) when the transport setting allows it, as a txn would go,
 * else through the JSON gateway (etcd 3.4: /v3/lease/...), with the same request loop as
 * every other call. KeepAlive is a bidirectional stream: one request sent as the whole
 * request stream gets one reply, and the server then ends the stream (through the gateway:
 * one {"result": LeaseKeepAliveResponse}). */

static const char *const lease_json_paths[] = {
	[ETCD_LEASE_GRANT] = "/v3/lease/grant",		[ETCD_LEASE_REVOKE] = "/v3/lease/revoke",
	[ETCD_LEASE_KEEPALIVE] = "/v3/lease/keepalive", [ETCD_LEASE_TTL] = "/v3/lease/timetolive",
	[ETCD_LEASE_LIST] = "/v3/lease/leases",
};

static const char *const lease_names[] = {
	[ETCD_LEASE_GRANT] = "lease grant",
	[ETCD_LEASE_REVOKE] = "lease revoke",
	[ETCD_LEASE_KEEPALIVE] = "lease keep-alive",
	[ETCD_LEASE_TTL] = "lease time-to-live",
	[ETCD_LEASE_LIST] = "lease list",
};

/* Grant and revoke change the server; keep-alive, time-to-live and list may be repeated. */
static bool lease_writes(enum etcd_lease_op op)
{
	return op == ETCD_LEASE_GRANT || op == ETCD_LEASE_REVOKE;
}

/* The "keys" of a LeaseTimeToLiveResponse (base64 strings) as key-only kvs. */
static int json_lease_keys(const json_t *resp, struct kv_range_result *keys)
{
	const json_t *arr = json_object_get(resp, "keys");
	size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
	if (arr && !json_is_array(arr))
		return -EINVAL;
	if (n) {
		keys->kvs = calloc(n, sizeof(*keys->kvs));
		if (!keys->kvs)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *holder = json_pack("{s:O}", "k", json_array_get(arr, i));
		if (!holder)
			return -ENOMEM;
		struct kv_kv *k = &keys->kvs[i];
		int ret = etcd_json_bytes(holder, "k", &k->key, &k->key_len);
		json_decref(holder);
		if (ret < 0)
			return ret;
		keys->n_kvs = i + 1;
	}
	keys->count = (int64_t)n;
	return 0;
}

static int json_lease_ids(const json_t *resp, struct etcd_lease_reply *out)
{
	const json_t *arr = json_object_get(resp, "leases");
	if (arr && !json_is_array(arr))
		return -EINVAL;
	size_t n = arr ? json_array_size(arr) : 0;
	if (!n)
		return 0;
	out->ids = calloc(n, sizeof(*out->ids));
	if (!out->ids)
		return -ENOMEM;
	out->n_ids = n;
	for (size_t i = 0; i < n; i++)
		if (etcd_json_int64(json_array_get(arr, i), "ID", &out->ids[i]) < 0)
			return -EINVAL;
	return 0;
}

/* Decodes any lease reply of the gateway (keep-alive's inside "result"). */
static int json_parse_lease(const json_t *resp, struct etcd_lease_reply *out)
{
	const json_t *result = json_object_get(resp, "result");
	if (result)
		resp = result;
	int ret;
	if ((ret = etcd_json_int64(resp, "ID", &out->id)) < 0 ||
	    (ret = etcd_json_int64(resp, "TTL", &out->ttl)) < 0 ||
	    (ret = etcd_json_int64(resp, "grantedTTL", &out->granted_ttl)) < 0 ||
	    (ret = etcd_json_header_revision(resp, &out->revision)) < 0 ||
	    (ret = json_lease_keys(resp, &out->keys)) < 0 || (ret = json_lease_ids(resp, out)) < 0)
		return ret;
	out->keys.revision = out->revision;
	return 0;
}

static int lease_json(struct etcd_client *c, enum etcd_lease_op op, int64_t id, int64_t ttl,
		      bool keys, struct etcd_lease_reply *out)
{
	/* Zero fields stay out, as the gateway itself writes them: a grant with TTL 0 gets the
	 * server's minimum. */
	json_t *req = json_object(), *resp = NULL;
	if (!req || (id && json_object_set_new(req, "ID", json_integer((json_int_t)id)) < 0) ||
	    (ttl && json_object_set_new(req, "TTL", json_integer((json_int_t)ttl)) < 0) ||
	    (keys && json_object_set_new(req, "keys", json_true()) < 0)) {
		json_decref(req);
		return -ENOMEM;
	}
	int ret = request(c, lease_json_paths[op], req, lease_writes(op) ? &write_opts : &read_opts,
			  &resp, NULL);
	json_decref(req);
	if (ret < 0)
		return ret;
	ret = json_parse_lease(resp, out);
	json_decref(resp);
	if (ret == -EINVAL) {
		log_err("etcd: malformed %s reply", lease_names[op]);
		ret = -EIO;
	}
	return ret;
}

/* One lease call through gRPC. -EPROTONOSUPPORT: nothing was applied, use JSON instead. */
static int lease_grpc(struct etcd_client *c, enum etcd_lease_op op, int64_t id, int64_t ttl,
		      bool keys, struct etcd_lease_reply *out)
{
	uint8_t *body = NULL;
	size_t body_len = 0, msg_len = 0;
	const uint8_t *msg = NULL;
	struct etcd_grpc_reply r;
	int ret = etcd_grpc_lease_req(op, id, ttl, keys, &body, &body_len);
	if (ret < 0)
		return ret;
	const char *path = etcd_grpc_lease_path(op);
	ret = grpc_request(c, path, body, body_len, RESP_MAX(c), !lease_writes(op), NULL, &r, &msg,
			   &msg_len);
	free(body);
	if (ret == -EMSGSIZE) {
		log_err("etcd: reply to %s larger than %zu bytes", path, RESP_MAX(c));
		return -EIO;
	}
	if (ret < 0)
		return ret;
	ret = etcd_grpc_parse_lease(op, msg, msg_len, out);
	etcd_grpc_reply_free(&r);
	if (ret == -EINVAL) {
		log_err("etcd: malformed %s reply", lease_names[op]);
		ret = -EIO;
	}
	return ret;
}

/* One lease call by gRPC or JSON, chosen as for a txn (falling back to JSON in AUTO). */
static int lease_call(struct etcd_client *c, enum etcd_lease_op op, int64_t id, int64_t ttl,
		      bool keys, struct etcd_lease_reply *out)
{
	memset(out, 0, sizeof(*out));
	size_t pref = __atomic_load_n(&c->preferred, __ATOMIC_RELAXED) % c->n_urls;
	int ret;
	if (etcd_use_grpc(c) && (!lease_writes(op) || etcd_grpc_write_ok(c, pref))) {
		ret = lease_grpc(c, op, id, ttl, keys, out);
		if (ret != -EPROTONOSUPPORT)
			goto out;
		etcd_lease_reply_free(out);
		memset(out, 0, sizeof(*out));
		if (!etcd_fall_back(c)) {
			ret = -EIO;
			goto out;
		}
	}
	ret = lease_json(c, op, id, ttl, keys, out);
out:
	if (ret < 0)
		etcd_lease_reply_free(out);
	return ret;
}

static int client_lease_grant(struct kv *kv, int64_t id, int64_t ttl, struct kv_lease *out)
{
	struct etcd_lease_reply r;
	int ret = lease_call(to_client(kv), ETCD_LEASE_GRANT, id, ttl, false, &r);
	if (ret < 0)
		return ret;
	etcd_lease_reply_free(&r);
	if (r.id == 0) {
		log_err("etcd: lease grant reply without a lease id");
		return -EIO;
	}
	*out = (struct kv_lease){.id = r.id, .ttl = r.ttl, .granted_ttl = r.ttl};
	return 0;
}

static int client_lease_revoke(struct kv *kv, int64_t id, int64_t *revision)
{
	struct etcd_lease_reply r;
	int ret = lease_call(to_client(kv), ETCD_LEASE_REVOKE, id, 0, false, &r);
	if (ret < 0)
		return ret;
	etcd_lease_reply_free(&r);
	if (revision)
		*revision = r.revision;
	return 0;
}

static int client_lease_keepalive(struct kv *kv, int64_t id, struct kv_lease *out)
{
	struct etcd_lease_reply r;
	int ret = lease_call(to_client(kv), ETCD_LEASE_KEEPALIVE, id, 0, false, &r);
	if (ret < 0)
		return ret;
	etcd_lease_reply_free(&r);
	/* etcd answers a lease that is gone with TTL 0 rather than an error. */
	if (r.ttl <= 0)
		return -ENOENT;
	*out = (struct kv_lease){.id = id, .ttl = r.ttl, .granted_ttl = r.ttl};
	return 0;
}

static int cmp_kv_key(const void *a, const void *b)
{
	const struct kv_kv *x = a, *y = b;
	return kv_key_cmp(x->key, x->key_len, y->key, y->key_len);
}

static int client_lease_ttl(struct kv *kv, int64_t id, struct kv_lease *out,
			    struct kv_range_result *keys)
{
	struct etcd_lease_reply r;
	if (keys)
		memset(keys, 0, sizeof(*keys));
	int ret = lease_call(to_client(kv), ETCD_LEASE_TTL, id, 0, keys != NULL, &r);
	if (ret < 0)
		return ret;
	/* etcd answers a lease that is gone with TTL -1 rather than an error. */
	if (r.ttl < 0) {
		etcd_lease_reply_free(&r);
		return -ENOENT;
	}
	*out = (struct kv_lease){.id = id, .ttl = r.ttl, .granted_ttl = r.granted_ttl};
	if (keys) {
		/* etcd lists them in no particular order; kv.h callers get key order. */
		*keys = r.keys;
		memset(&r.keys, 0, sizeof(r.keys));
		if (keys->n_kvs > 1)
			qsort(keys->kvs, keys->n_kvs, sizeof(*keys->kvs), cmp_kv_key);
	}
	etcd_lease_reply_free(&r);
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int client_lease_list(struct kv *kv, int64_t **ids, size_t *n)
{
	struct etcd_lease_reply r;
	*ids = NULL;
	*n = 0;
	int ret = lease_call(to_client(kv), ETCD_LEASE_LIST, 0, 0, false, &r);
	if (ret < 0)
		return ret;
	/* etcd lists them in no particular order; kv.h callers get ascending ids. */
	if (r.n_ids > 1)
		qsort(r.ids, r.n_ids, sizeof(*r.ids), cmp_i64);
	*ids = r.ids;
	*n = r.n_ids;
	r.ids = NULL;
	r.n_ids = 0;
	etcd_lease_reply_free(&r);
	return 0;
}

static size_t client_max_request_bytes(struct kv *kv)
{
	return to_client(kv)->max_request_bytes;
}

static size_t client_max_txn_ops(struct kv *kv)
{
	return to_client(kv)->max_txn_ops;
}

static void client_destroy(struct kv *kv)
{
	struct etcd_client *c = to_client(kv);
	if (!c)
		return;
	for (size_t i = 0; i < c->n_pool; i++)
		curl_easy_cleanup(c->pool[i]);
	for (size_t i = 0; i < c->n_gpool; i++)
		curl_easy_cleanup(c->gpool[i]);
	for (size_t i = 0; i < c->n_urls; i++)
		free(c->urls[i]);
	free(c->urls);
	free(c->grpc_proven);
	free(c->cacert);
	free(c->cert);
	free(c->key);
	free(c->user);
	etcd_secret_free(c->password);
	etcd_secret_free(c->token);
	pthread_mutex_destroy(&c->pool_lock);
	pthread_mutex_destroy(&c->auth_lock);
	free(c);
}

static const struct kv_ops etcd_ops = {
	.name = "etcd",
	.range = client_range,
	.txn = client_txn,
	.watch = etcd_watch,
	.watch_cancel = etcd_watch_cancel,
	.compact = client_compact,
	.status = client_status,
	.max_request_bytes = client_max_request_bytes,
	.max_txn_ops = client_max_txn_ops,
	.lease_grant = client_lease_grant,
	.lease_revoke = client_lease_revoke,
	.lease_keepalive = client_lease_keepalive,
	.lease_ttl = client_lease_ttl,
	.lease_list = client_lease_list,
	.destroy = client_destroy,
};

/* Turns an endpoint as etcdctl accepts it into a base URL. */
static char *normalize_endpoint(const char *ep, bool tls)
{
	const char *scheme = tls ? "https://" : "http://";
	const char *sep = strstr(ep, "://");
	if (sep) {
		size_t sl = (size_t)(sep - ep);
		if (!((sl == 4 && !strncasecmp(ep, "http", 4)) ||
		      (sl == 5 && !strncasecmp(ep, "https", 5)))) {
			log_err("etcd: endpoint '%s': only http:// and https:// are supported", ep);
			return NULL;
		}
		scheme = sl == 5 ? "https://" : "http://";
		ep = sep + 3;
	}
	size_t len = strlen(ep);
	while (len && ep[len - 1] == '/')
		len--;
	if (!len || memchr(ep, '/', len)) {
		log_err("etcd: endpoint '%.*s' is not host:port", (int)len, ep);
		return NULL;
	}
	char *url;
	if (asprintf(&url, "%s%.*s", scheme, (int)len, ep) < 0)
		return NULL;
	return url;
}

static int dup_opt(char **dst, const char *src)
{
	return etcd_config_set_string(dst, src);
}

int etcd_client_new(const struct etcd_config *cfg, struct kv **out)
{
	struct etcd_client *c;
	int ret = -EINVAL;
	*out = NULL;
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK) {
		log_err("etcd: curl_global_init failed: %s", curl_easy_strerror(curl_init_rc));
		return -EIO;
	}
	if (!cfg->n_endpoints) {
		log_err("etcd: no endpoints given");
		return -EINVAL;
	}
	if (!(c = calloc(1, sizeof(*c))))
		return -ENOMEM;
	c->kv.ops = &etcd_ops;
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_mutex_init(&c->auth_lock, NULL);
	c->insecure = cfg->insecure_skip_tls_verify;
	c->dial_timeout_ms =
		cfg->dial_timeout_ms > 0 ? cfg->dial_timeout_ms : ETCD_DEFAULT_DIAL_TIMEOUT_MS;
	c->command_timeout_ms = cfg->command_timeout_ms > 0 ? cfg->command_timeout_ms
							    : ETCD_DEFAULT_COMMAND_TIMEOUT_MS;
	c->max_request_bytes =
		cfg->max_request_bytes ? cfg->max_request_bytes : ETCD_DEFAULT_MAX_REQUEST_BYTES;
	c->max_txn_ops = cfg->max_txn_ops ? cfg->max_txn_ops : ETCD_DEFAULT_MAX_TXN_OPS;
	c->watch_stall_ms = ETCD_DEFAULT_WATCH_STALL_MS;
	c->transport = (int)cfg->transport;
	c->max_reply = ETCD_DEFAULT_MAX_REPLY_BYTES;
	if (dup_opt(&c->cacert, cfg->cacert) < 0 || dup_opt(&c->cert, cfg->cert) < 0 ||
	    dup_opt(&c->key, cfg->key) < 0) {
		ret = -ENOMEM;
		goto out_err;
	}
	/* etcdctl rule: a bare host:port uses TLS exactly when TLS files are given. */
	bool tls = cfg->cacert || cfg->cert || cfg->key;
	if (!(c->urls = calloc(cfg->n_endpoints, sizeof(*c->urls))) ||
	    !(c->grpc_proven = calloc(cfg->n_endpoints, sizeof(*c->grpc_proven)))) {
		ret = -ENOMEM;
		goto out_err;
	}
	for (size_t i = 0; i < cfg->n_endpoints; i++) {
		if (!(c->urls[i] = normalize_endpoint(cfg->endpoints[i], tls)))
			goto out_err;
		c->n_urls++;
	}
	if (cfg->user) {
		const char *colon = strchr(cfg->user, ':');
		const char *pw = colon ? colon + 1 : cfg->password;
		size_t name_len = colon ? (size_t)(colon - cfg->user) : strlen(cfg->user);
		if (!name_len) {
			log_err("etcd: --user needs a user name");
			goto out_err;
		}
		if (!pw) {
			log_err("etcd: user '%.*s' has no password (give name:password, --password "
				"or ETCDCTL_PASSWORD)",
				(int)name_len, cfg->user);
			goto out_err;
		}
		if (!(c->user = strndup(cfg->user, name_len)) || !(c->password = strdup(pw))) {
			ret = -ENOMEM;
			goto out_err;
		}
	}
	*out = &c->kv;
	return 0;
out_err:
	client_destroy(&c->kv);
	return ret;
}

void etcd_client_set_watch_stall_ms(struct kv *kv, long ms)
{
	__atomic_store_n(&to_client(kv)->watch_stall_ms, ms, __ATOMIC_RELAXED);
}

void etcd_client_set_transport(struct kv *kv, enum etcd_transport t)
{
	struct etcd_client *c = to_client(kv);
	__atomic_store_n(&c->transport, (int)t, __ATOMIC_RELAXED);
	/* An explicit choice starts with a clean slate. */
	__atomic_store_n(&c->grpc_off_until_ms, 0, __ATOMIC_RELAXED);
}

void etcd_client_set_max_reply_bytes(struct kv *kv, size_t bytes)
{
	__atomic_store_n(&to_client(kv)->max_reply, bytes ? bytes : ETCD_DEFAULT_MAX_REPLY_BYTES,
			 __ATOMIC_RELAXED);
}

void etcd_client_get_stats(struct kv *kv, struct etcd_client_stats *out)
{
	struct etcd_client *c = to_client(kv);
	out->grpc_ranges = __atomic_load_n(&c->stats.grpc_ranges, __ATOMIC_RELAXED);
	out->json_ranges = __atomic_load_n(&c->stats.json_ranges, __ATOMIC_RELAXED);
	out->grpc_txns = __atomic_load_n(&c->stats.grpc_txns, __ATOMIC_RELAXED);
	out->json_txns = __atomic_load_n(&c->stats.json_txns, __ATOMIC_RELAXED);
	out->grpc_fallbacks = __atomic_load_n(&c->stats.grpc_fallbacks, __ATOMIC_RELAXED);
	out->grpc_connects = __atomic_load_n(&c->stats.grpc_connects, __ATOMIC_RELAXED);
	out->grpc_watch_streams = __atomic_load_n(&c->stats.grpc_watch_streams, __ATOMIC_RELAXED);
	out->json_watch_streams = __atomic_load_n(&c->stats.json_watch_streams, __ATOMIC_RELAXED);
}
