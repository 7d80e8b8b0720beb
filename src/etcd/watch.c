/* watch.c: etcd watches, over etcd's native gRPC Watch stream or the gateway's streamed
 * /v3/watch reply.
 *
 * Each watch owns a thread, a curl multi handle (so that cancel can wake it with
 * curl_multi_wakeup) and an easy handle. Over gRPC (transport AUTO or GRPC) the stream is a
 * POST to /etcdserverpb.Watch/Watch carrying one framed WatchRequest (create); the client
 * half-closes its side after it, which etcd takes as "no more requests" while it keeps sending
 * WatchResponse frames. Over JSON the reply is a sequence of newline-delimited JSON messages
 * {"result": WatchResponse}. Either way messages are decoded as bytes arrive and delivered to
 * the callback from this thread. On a broken stream the thread reconnects with backoff and
 * resumes at the revision after the last one delivered, so nothing is lost or repeated. A gRPC
 * stream that the endpoint does not understand (no HTTP/2, not a gRPC reply) is reopened at
 * once through JSON.
 */
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

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LINE_MAX_BYTES ((size_t)512 << 20)
#define ERR_BODY_MAX 65536

/* Outcomes of one stream besides a negative errno (disconnect). */
enum {
	STREAM_FINAL = 1,     /* COMPACTED or CANCELED delivered: the thread ends */
	STREAM_RECONNECT = 2, /* reconnect now without telling the consumer */
};

struct kv_watch {
	struct etcd_client *c;
	char *key, *end; /* owned copies of the request's range */
	size_t key_len, end_len;
	bool prev_kv;
	kv_watch_cb cb;
	void *arg;
	long stall_ms;
	pthread_t thread;
	CURLM *multi;
	CURL *easy;
	int stop; /* atomic: set by watch_cancel */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* protected by lock: wakes a backoff sleep on cancel */

	/* Everything below is touched by the watch thread only. */
	size_t ep;	    /* endpoint in use */
	int64_t next_rev;   /* first revision not delivered yet; 0 = "now" */
	bool announced;	    /* CONNECTED delivered and no DISCONNECTED since */
	bool reported_down; /* DISCONNECTED delivered for the current outage */
	bool auth_retried;  /* the token was renewed since the last stream was created */
	long backoff;	    /* the next reconnect delay */
	/* state of the current stream */
	bool grpc;		   /* it speaks gRPC (else JSON lines) */
	bool grpc_malformed;	   /* a gRPC message did not decode */
	struct etcd_grpc_reply gr; /* gRPC: status and content type from headers/trailers */
	char *line;		   /* JSON: partial lines; gRPC: partial frames */
	size_t line_len, line_cap;
	bool created;
	bool final;
	bool failed; /* err holds why the stream must end */
	struct etcd_error err;
	long status;
	int64_t last_byte_ms;
};

static bool stopped(struct kv_watch *w)
{
	return __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE);
}

static void deliver(struct kv_watch *w, enum kv_watch_state state, int64_t revision, int err)
{
	struct kv_watch_batch b = {.state = state, .revision = revision, .err = err};
	w->cb(w->arg, &b);
}

static void fail(struct kv_watch *w, int err, const char *msg)
{
	w->failed = true;
	w->err.err = err;
	w->err.grpc_code = -1;
	snprintf(w->err.msg, sizeof(w->err.msg), "%s", msg);
}

/* Handles one decoded message. Returns false to end the stream. */
static bool handle_msg(struct kv_watch *w, struct etcd_watch_msg *m)
{
	if (m->is_error) {
		w->failed = true;
		w->err = m->error;
		return false;
	}
	if (m->canceled) {
		if (m->compact_revision > 0) {
			log_warn("etcd: watch from revision %lld: revisions up to %lld are "
				 "compacted",
				 (long long)w->next_rev, (long long)m->compact_revision);
			struct kv_watch_batch b = {.state = KV_WATCH_COMPACTED,
						   .revision = m->revision,
						   .compact_revision = m->compact_revision};
			w->cb(w->arg, &b);
			w->final = true;
			return false;
		}
		if (m->error.retry_auth) {
			w->failed = true;
			w->err = m->error;
			return false;
		}
		int err = m->error.err ? m->error.err : -EIO;
		log_err("etcd: watch canceled by the server: %s",
			m->error.msg[0] ? m->error.msg : "no reason given");
		deliver(w, KV_WATCH_CANCELED, m->revision, err);
		w->final = true;
		return false;
	}
	if (m->created) {
		w->created = true;
		if (w->grpc)
			etcd_grpc_answered(w->c, w->ep); /* lets writes use gRPC (request.c) */
		__atomic_add_fetch(w->grpc ? &w->c->stats.grpc_watch_streams
					   : &w->c->stats.json_watch_streams,
				   1, __ATOMIC_RELAXED);
		w->backoff = BACKOFF_MIN_MS;
		if (w->next_rev == 0)
			w->next_rev = m->revision + 1;
		if (!w->announced) {
			if (w->reported_down)
				log_info("etcd %s: watch re-established", w->c->urls[w->ep]);
			deliver(w, KV_WATCH_CONNECTED, w->next_rev - 1, 0);
			w->announced = true;
			w->reported_down = false;
		}
		return true;
	}
	/* Drop what an earlier stream already delivered. */
	size_t skip = 0;
	while (skip < m->n_events && m->events[skip].kv.mod_revision < w->next_rev)
		skip++;
	if (m->n_events == 0) {
		/* Progress: etcd sends it only to synced watchers, so every event up to the
		 * header revision has been sent. */
		if (m->revision + 1 > w->next_rev)
			w->next_rev = m->revision + 1;
		deliver(w, KV_WATCH_PROGRESS, m->revision, 0);
		return true;
	}
	if (skip == m->n_events)
		return true;
	struct kv_watch_batch b = {.state = KV_WATCH_EVENTS,
				   .events = m->events + skip,
				   .n_events = m->n_events - skip,
				   .revision = m->revision};
	w->cb(w->arg, &b);
	w->next_rev = m->events[m->n_events - 1].kv.mod_revision + 1;
	return true;
}

/* Decodes every complete line in the buffer. Returns false to end the stream. */
static bool process_lines(struct kv_watch *w)
{
	size_t off = 0;
	bool go_on = true;
	while (go_on && !stopped(w)) {
		char *nl = memchr(w->line + off, '\n', w->line_len - off);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (w->line + off));
		json_error_t jerr;
		json_t *o = len ? json_loadb(w->line + off, len, 0, &jerr) : NULL;
		off += len + 1;
		if (!len)
			continue;
		struct etcd_watch_msg m;
		if (!o || etcd_json_parse_watch(o, &m) < 0) {
			char why[200];
			snprintf(why, sizeof(why), "malformed watch message: %s",
				 o ? "unexpected fields" : jerr.text);
			fail(w, -EIO, why);
			json_decref(o);
			if (o)
				etcd_watch_msg_free(&m);
			return false;
		}
		json_decref(o);
		go_on = handle_msg(w, &m);
		etcd_watch_msg_free(&m);
	}
	memmove(w->line, w->line + off, w->line_len - off);
	w->line_len -= off;
	return go_on && !stopped(w);
}

/* Decodes every complete gRPC frame in the buffer. Returns false to end the stream. */
static bool process_frames(struct kv_watch *w)
{
	size_t off = 0;
	bool go_on = true;
	while (go_on && !stopped(w)) {
		const uint8_t *msg;
		size_t msg_len, used;
		int f = etcd_grpc_frame_next((const uint8_t *)w->line + off, w->line_len - off,
					     LINE_MAX_BYTES, &msg, &msg_len, &used);
		if (f == 0)
			break;
		if (f < 0) {
			fail(w, -EIO,
			     f == -EPROTO ? "compressed gRPC frame in the watch stream"
					  : "gRPC watch message too large");
			return false;
		}
		struct etcd_watch_msg m;
		int ret = etcd_grpc_parse_watch(msg, msg_len, &m);
		off += used;
		if (ret < 0) {
			etcd_watch_msg_free(&m);
			w->grpc_malformed = ret == -EINVAL;
			fail(w, ret == -ENOMEM ? -ENOMEM : -EIO,
			     ret == -ENOMEM ? "out of memory" : "malformed gRPC watch message");
			return false;
		}
		go_on = handle_msg(w, &m);
		etcd_watch_msg_free(&m);
	}
	memmove(w->line, w->line + off, w->line_len - off);
	w->line_len -= off;
	return go_on && !stopped(w);
}

static size_t stream_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct kv_watch *w = ud;
	size_t n = size * nmemb;
	w->last_byte_ms = util_now_ms();
	if (!w->status)
		curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &w->status);
	bool decode = w->status == 200 && (!w->grpc || w->gr.grpc_ct);
	size_t max = decode ? LINE_MAX_BYTES : ERR_BODY_MAX;
	if (w->line_len + n + 1 > max) {
		fail(w, -EIO, "watch message too large");
		return 0;
	}
	if (util_grow(&w->line, &w->line_cap, w->line_len + n + 1, 1, 4096) < 0) {
		fail(w, -ENOMEM, "out of memory");
		return 0;
	}
	memcpy(w->line + w->line_len, ptr, n);
	w->line_len += n;
	if (!decode)
		return n; /* an error body, looked at when the reply ends */
	bool go_on = w->grpc ? process_frames(w) : process_lines(w);
	/* A slow callback is not a silent server: restart the stall clock. */
	w->last_byte_ms = util_now_ms();
	return go_on ? n : 0;
}

/* Builds the request of one stream into w->easy (body and header list owned by the caller).
 * Returns 0 or -ENOMEM. */
static int stream_setup(struct kv_watch *w, size_t idx, const char *token, char **body,
			struct curl_slist **hdrs, char *errbuf)
{
	struct etcd_client *c = w->c;
	struct kv_watch_req req = {.key = w->key,
				   .key_len = w->key_len,
				   .range_end = w->end,
				   .range_end_len = w->end_len,
				   .prev_kv = w->prev_kv};
	size_t body_len = 0;
	char url[1024];
	if (w->grpc) {
		uint8_t *pb = NULL;
		if (etcd_grpc_watch_req(&req, w->next_rev, &pb, &body_len) == 0)
			*body = (char *)pb;
		*hdrs = etcd_grpc_headers(token, 0);
		snprintf(url, sizeof(url), "%s%s", c->urls[idx], ETCD_GRPC_WATCH_PATH);
	} else {
		json_t *o = etcd_json_watch_req(&req, w->next_rev);
		*body = o ? json_dumps(o, JSON_COMPACT) : NULL;
		body_len = *body ? strlen(*body) : 0;
		json_decref(o);
		*hdrs = etcd_headers(token);
		snprintf(url, sizeof(url), "%s/v3/watch", c->urls[idx]);
	}
	if (!*body || !*hdrs)
		return -ENOMEM;
	curl_easy_reset(w->easy);
	etcd_setup_handle(c, w->easy, 0);
	if (w->grpc) {
		bool tls = !strncasecmp(url, "https:", 6);
		/* One connection per stream, opened for it and closed after it: prior knowledge
		 * must never meet a reused h2c connection under libcurl 7.88 (see grpc.c). */
		curl_easy_setopt(w->easy, CURLOPT_HTTP_VERSION,
				 tls ? (long)CURL_HTTP_VERSION_2TLS
				     : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
		curl_easy_setopt(w->easy, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(w->easy, CURLOPT_FORBID_REUSE, 1L);
		curl_easy_setopt(w->easy, CURLOPT_HEADERFUNCTION, etcd_grpc_header_cb);
		curl_easy_setopt(w->easy, CURLOPT_HEADERDATA, &w->gr);
	}
	curl_easy_setopt(w->easy, CURLOPT_URL, url);
	curl_easy_setopt(w->easy, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(w->easy, CURLOPT_POSTFIELDS, *body);
	curl_easy_setopt(w->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, stream_write);
	curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, errbuf);
	return 0;
}

/* Drives the stream until it ends, is cancelled, times out before it was created or stalls.
 * Returns 0 (*rc says how the transfer ended), STREAM_RECONNECT or -ETIMEDOUT. */
static int stream_pump(struct kv_watch *w, long timeout_ms, CURLcode *rc)
{
	struct etcd_client *c = w->c;
	int64_t start = util_now_ms();
	long stall_ms = w->stall_ms;
	int64_t created_deadline = start + c->dial_timeout_ms + timeout_ms;
	w->last_byte_ms = start;
	*rc = CURLE_OK;
	while (!stopped(w)) {
		int running = 0, q;
		bool done = false;
		curl_multi_perform(w->multi, &running);
		CURLMsg *msg;
		while ((msg = curl_multi_info_read(w->multi, &q))) {
			if (msg->msg == CURLMSG_DONE) {
				*rc = msg->data.result;
				done = true;
			}
		}
		if (done || stopped(w))
			break;
		int64_t now = util_now_ms();
		if (!w->created && now >= created_deadline) {
			fail(w, -ETIMEDOUT, "no reply to the watch request within the timeouts");
			return -ETIMEDOUT;
		}
		if (w->created && stall_ms > 0 && now - w->last_byte_ms >= stall_ms) {
			/* Silence can be an idle watch or a dead stream; ask the server. */
			if (etcd_probe_endpoint(c, w->ep, &w->stop) == 0) {
				log_info("etcd %s: watch stream silent for %ld ms while the server "
					 "answers; re-establishing it",
					 c->urls[w->ep], stall_ms);
				return STREAM_RECONNECT;
			}
			fail(w, -ETIMEDOUT, "watch stream stalled and the server does not answer");
			return -ETIMEDOUT;
		}
		long wait = 1000;
		if (!w->created && created_deadline - now < wait)
			wait = (long)(created_deadline - now);
		if (w->created && stall_ms > 0 && w->last_byte_ms + stall_ms - now < wait)
			wait = (long)(w->last_byte_ms + stall_ms - now);
		curl_multi_poll(w->multi, NULL, 0, wait > 0 ? (int)wait : 0, NULL);
	}
	return 0;
}

/* Why an ended gRPC stream was no gRPC reply at all (NULL when it was one), into cause. */
static const char *grpc_foreign(struct kv_watch *w, CURLcode rc, const char *errbuf, char *cause,
				size_t size)
{
	long version = 0;
	curl_easy_getinfo(w->easy, CURLINFO_HTTP_VERSION, &version);
	if (rc == CURLE_OK && version != CURL_HTTP_VERSION_2_0)
		return "the server did not answer over HTTP/2";
	if (rc == CURLE_OK && (w->status != 200 || w->gr.grpc_status < 0)) {
		snprintf(cause, size, "not a gRPC reply (HTTP status %ld)", w->status);
		return cause;
	}
	bool unsent;
	if (rc != CURLE_OK && !w->created && etcd_grpc_protocol_failure(rc) &&
	    etcd_curl_errno(w->easy, rc, errbuf, &unsent) == -EIO) {
		etcd_describe_curl_error(w->easy, rc, errbuf, cause, size);
		return cause;
	}
	return NULL;
}

/* Classifies how a stream ended for the request loop. */
static enum etcd_outcome stream_outcome(struct kv_watch *w, CURLcode rc, const char *errbuf,
					struct etcd_attempt *a)
{
	if (w->grpc_malformed) {
		/* Not what our etcdserver.proto describes (a server from the future?): resume through
		 * JSON from the next undelivered revision; nothing is lost or repeated. */
		snprintf(a->why, sizeof(a->why), "malformed WatchResponse");
		return ETCD_FOREIGN;
	}
	if (w->grpc && !w->failed) {
		if (!w->status)
			curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &w->status);
		char cause[sizeof(w->err.msg)];
		const char *why = NULL;
		if (w->gr.grpc_status > 0) {
			/* The server ended the call with an error (trailers or trailers-only). */
			etcd_grpc_status_error(w->gr.grpc_status, w->gr.grpc_msg, &w->err);
			w->failed = true;
		} else if ((why = grpc_foreign(w, rc, errbuf, cause, sizeof(cause))) &&
			   !w->created) {
			fail(w, -EIO, why);
			snprintf(a->why, sizeof(a->why), "%s", why);
			return ETCD_FOREIGN;
		}
	}
	if (!w->grpc && !w->failed && w->status && w->status != 200) {
		etcd_json_error(w->line ? w->line : "", w->line_len, w->status, &w->err);
		w->failed = true;
	}
	if (w->failed) {
		a->e = w->err;
		return ETCD_REFUSED;
	}
	if (rc != CURLE_OK) {
		char cause[sizeof(w->err.msg)];
		bool unsent;
		etcd_describe_curl_error(w->easy, rc, errbuf, cause, sizeof(cause));
		a->err = etcd_curl_errno(w->easy, rc, errbuf, &unsent);
		fail(w, a->err, cause);
		return ETCD_LOST;
	}
	fail(w, -ECONNRESET, "the server ended the watch stream");
	a->err = -ECONNRESET;
	return ETCD_LOST;
}

/* The watch's attempt for the request loop: one stream on endpoint idx, run until it ends.
 * Ends with STOP STREAM_FINAL or STREAM_RECONNECT, or an outcome whose cause is in w->err. */
static enum etcd_outcome stream_perform(struct etcd_client *c, void *ctx, size_t idx,
					const char *token, long timeout_ms, struct etcd_attempt *a)
{
	struct kv_watch *w = ctx;
	char *body = NULL, errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;
	enum etcd_outcome o = ETCD_STOP;
	CURLcode rc;

	w->line_len = 0;
	w->created = w->final = w->failed = false;
	w->status = 0;
	memset(&w->err, 0, sizeof(w->err));
	w->grpc = etcd_use_grpc(c);
	w->grpc_malformed = false;
	memset(&w->gr, 0, sizeof(w->gr));
	w->gr.grpc_status = -1;
	if (stream_setup(w, idx, token, &body, &hdrs, errbuf) < 0) {
		fail(w, -ENOMEM, "out of memory");
		a->err = -ENOMEM;
		goto out;
	}
	curl_multi_add_handle(w->multi, w->easy);
	int ret = stream_pump(w, timeout_ms, &rc);
	curl_multi_remove_handle(w->multi, w->easy);
	curl_easy_setopt(w->easy, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, NULL);
	a->token_worked = w->created;
	if (stopped(w) || w->final)
		a->err = STREAM_FINAL;
	else if (ret == -ETIMEDOUT)
		o = ETCD_LOST, a->err = ret;
	else if (ret)
		a->err = ret;
	else
		o = stream_outcome(w, rc, errbuf, a);
out:
	curl_slist_free_all(hdrs);
	free(body);
	return o;
}

static const struct etcd_request_ops stream_ops = {.grpc = false, .perform = stream_perform};

/* Runs one stream on endpoint w->ep through the request loop (token, its renewal, the gRPC
 * fallback). Returns STREAM_FINAL, STREAM_RECONNECT or a negative errno (stream lost;
 * w->err.msg says why). */
static int run_stream(struct kv_watch *w)
{
	struct etcd_client *c = w->c;
	struct etcd_request rq = {.ops = &stream_ops,
				  .ctx = w,
				  .path = "/v3/watch",
				  .idempotent = true,
				  .use_auth = true,
				  .abort_flag = &w->stop,
				  .stream = true,
				  .first = w->ep,
				  .auth_retried = w->auth_retried};
	int ret = etcd_request_run(c, &rq);
	w->auth_retried = rq.auth_retried;
	if (ret < 0 && rq.token_failed) {
		fail(w, ret, "authentication failed");
		if (ret == -EACCES) {
			deliver(w, KV_WATCH_CANCELED, 0, ret);
			return STREAM_FINAL;
		}
		return ret;
	}
	if (ret == -EPROTONOSUPPORT) /* through JSON, right away */
		return etcd_fall_back(c) ? STREAM_RECONNECT : (w->err.err ? w->err.err : -EIO);
	if (ret == -EACCES && rq.refused) {
		log_err("etcd %s: watch refused: %s", c->urls[w->ep], w->err.msg);
		deliver(w, KV_WATCH_CANCELED, 0, -EACCES);
		return STREAM_FINAL;
	}
	return ret;
}

/* Sleeps up to ms, returning early on cancel. */
static void backoff_sleep(struct kv_watch *w, long ms)
{
	struct timespec ts;
	util_deadline_ts(CLOCK_MONOTONIC, ms, &ts);
	pthread_mutex_lock(&w->lock);
	while (!stopped(w))
		if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&w->lock);
}

static void *watch_thread(void *arg)
{
	struct kv_watch *w = arg;
	w->backoff = BACKOFF_MIN_MS;
	while (!stopped(w)) {
		int ret = run_stream(w);
		if (ret == STREAM_FINAL || stopped(w))
			break;
		if (ret == STREAM_RECONNECT)
			continue;
		if (!w->reported_down) {
			log_warn("etcd %s: watch stream lost: %s; reconnecting", w->c->urls[w->ep],
				 w->err.msg);
			deliver(w, KV_WATCH_DISCONNECTED, w->next_rev ? w->next_rev - 1 : 0, ret);
			w->reported_down = true;
			w->announced = false;
		} else {
			log_debug("etcd %s: watch reconnect failed: %s", w->c->urls[w->ep],
				  w->err.msg);
		}
		/* Another member may serve while this one is down. */
		w->ep = (w->ep + 1) % w->c->n_urls;
		backoff_sleep(w, w->backoff);
		w->backoff = w->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff * 2;
	}
	return NULL;
}

static void watch_free(struct kv_watch *w)
{
	if (w->easy)
		curl_easy_cleanup(w->easy);
	if (w->multi)
		curl_multi_cleanup(w->multi);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w->key);
	free(w->end);
	free(w->line);
	free(w);
}

int etcd_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
	       struct kv_watch **out)
{
	struct etcd_client *c = to_client(kv);
	struct kv_watch *w;
	pthread_condattr_t ca;
	int ret;
	*out = NULL;
	if (!cb || (!req->key && req->key_len) || (!req->range_end && req->range_end_len) ||
	    req->start_revision < 0)
		return -EINVAL;
	if (!(w = calloc(1, sizeof(*w))))
		return -ENOMEM;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	w->c = c;
	w->cb = cb;
	w->arg = arg;
	w->prev_kv = req->prev_kv;
	w->next_rev = req->start_revision;
	w->stall_ms = __atomic_load_n(&c->watch_stall_ms, __ATOMIC_RELAXED);
	w->ep = __atomic_load_n(&c->preferred, __ATOMIC_RELAXED) % c->n_urls;
	w->key = util_memdup(req->key, req->key_len);
	w->key_len = req->key_len;
	w->end = util_memdup(req->range_end, req->range_end_len);
	w->end_len = req->range_end_len;
	w->multi = curl_multi_init();
	w->easy = curl_easy_init();
	if (!w->key || !w->end || !w->multi || !w->easy) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = -pthread_create(&w->thread, NULL, watch_thread, w);
	if (ret < 0) {
		log_err("etcd: cannot start a watch thread: %s", strerror(-ret));
		goto out_free;
	}
	*out = w;
	return 0;
out_free:
	watch_free(w);
	return ret;
}

void etcd_watch_cancel(struct kv_watch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	__atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	curl_multi_wakeup(w->multi);
	pthread_join(w->thread, NULL);
	watch_free(w);
}
