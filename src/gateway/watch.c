/* watch.c: /v3/watch streams: a chunked reply of newline-delimited {"result": WatchResponse}
 * objects, one kv.h watch per create_request.
 *
 * The connection thread parses the request body, starts the watches and then only waits
 * for the client to go away, sending progress messages; events are sent from the backend's
 * watch callbacks. Everything sent on the socket goes through stream_send() under the
 * stream's lock.
 */
#include "gateway_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/util.h"

static const char *const filter_names[] = {"NOPUT", "NODELETE"};

struct stream;

struct watcher {
	struct stream *st;
	int64_t id;
	struct kv_watch *w;
	int64_t start_rev;
	bool progress_notify, no_put, no_delete;
	bool created;	       /* protected by st->lock */
	bool finished;	       /* protected by st->lock: canceled or compacted */
	int64_t delivered_rev; /* protected by st->lock: every event up to it was sent */
	int64_t last_send_ms;  /* protected by st->lock */
};

struct stream {
	struct conn *c;
	pthread_mutex_t lock; /* serializes chunks on the socket */
	bool broken;	      /* protected by lock: a send failed, nothing more is sent */
	struct watcher **ws;
	size_t n_ws;
	int64_t next_id;
};

/* Sends {"result": r} as one chunk. Called with st->lock held; steals r. */
static void stream_send(struct stream *st, json_t *r)
{
	json_t *o = r ? json_pack("{s:o}", "result", r) : NULL;
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s) {
		log_err("gateway: out of memory encoding a watch message; ending the stream");
		goto out_broken;
	}
	size_t n = strlen(s);
	char head[24];
	int hn = snprintf(head, sizeof(head), "%zx\r\n", n + 1);
	int ret = st->broken ? -EPIPE : util_send_all(st->c->fd, head, (size_t)hn);
	if (!ret)
		ret = util_send_all(st->c->fd, s, n);
	if (!ret)
		ret = util_send_all(st->c->fd, "\n\r\n", 3);
	free(s);
	if (!ret)
		return;
	if (ret != -EPIPE && ret != -ECONNRESET)
		log_info("gateway: watch client does not read (%s); closing its stream",
			 strerror(-ret));
out_broken:
	st->broken = true;
	shutdown(st->c->fd, SHUT_RDWR); /* wakes the connection thread */
}

static json_t *watch_msg(const struct watcher *wt, int64_t revision)
{
	json_t *r = jp_reply(revision);
	return jp_done(r, !r || jp_set_i64(r, "watch_id", wt->id) < 0);
}

static void send_created(struct watcher *wt, int64_t revision)
{
	json_t *r = watch_msg(wt, revision);
	if (r && json_object_set_new(r, "created", json_true()) < 0) {
		json_decref(r);
		r = NULL;
	}
	stream_send(wt->st, r);
	wt->created = true;
}

static void watch_cb(void *arg, const struct kv_watch_batch *b)
{
	struct watcher *wt = arg;
	struct stream *st = wt->st;
	json_t *r = NULL;
	pthread_mutex_lock(&st->lock);
	if (st->broken || wt->finished)
		goto out;
	if (!wt->created && b->state != KV_WATCH_DISCONNECTED) {
		/* etcd's created header carries the current revision; for a watch from now
		 * that is where events resume, which CONNECTED reports. */
		int64_t rev = b->state == KV_WATCH_CONNECTED ? b->revision : 0;
		if (wt->start_rev > 0 || b->state != KV_WATCH_CONNECTED) {
			int64_t cur;
			if (kv_status(st->c->gw->kv, &cur) == 0 && cur > rev)
				rev = cur;
		}
		send_created(wt, rev);
		if (b->state == KV_WATCH_CONNECTED)
			wt->delivered_rev = b->revision;
		wt->last_send_ms = util_now_ms();
	}
	switch (b->state) {
	case KV_WATCH_CONNECTED:
	case KV_WATCH_DISCONNECTED:
		/* A backend that reconnects resumes without loss or repetition. */
		break;
	case KV_WATCH_EVENTS: {
		json_t *evs = json_array();
		r = watch_msg(wt, b->revision);
		if (!r || !evs || json_object_set_new(r, "events", evs) < 0) {
			json_decref(r);
			stream_send(st, NULL);
			goto out;
		}
		for (size_t i = 0; i < b->n_events; i++) {
			const struct kv_event *ev = &b->events[i];
			bool del = ev->type == KV_EVENT_DELETE;
			if ((del && wt->no_delete) || (!del && wt->no_put))
				continue;
			json_t *e = json_object();
			if (!e || json_array_append_new(evs, e) < 0 ||
			    (del && json_object_set_new(e, "type", json_string("DELETE")) < 0) ||
			    json_object_set_new(e, "kv", jp_kv(&ev->kv)) < 0) {
				json_decref(r);
				stream_send(st, NULL);
				goto out;
			}
		}
		wt->delivered_rev = b->revision;
		size_t n_sent = json_array_size(evs);
		if (!n_sent)
			json_object_del(r, "events"); /* jsonpb omits empty lists; frees evs */
		if (n_sent || wt->progress_notify) {
			stream_send(st, r);
			wt->last_send_ms = util_now_ms();
		} else {
			json_decref(r);
		}
		break;
	}
	case KV_WATCH_PROGRESS:
		wt->delivered_rev = b->revision;
		if (wt->progress_notify) {
			stream_send(st, watch_msg(wt, b->revision));
			wt->last_send_ms = util_now_ms();
		}
		break;
	case KV_WATCH_COMPACTED:
		/* etcd: compact_revision with canceled, and no header revision. */
		r = watch_msg(wt, 0);
		if (r && (json_object_set_new(r, "canceled", json_true()) < 0 ||
			  jp_set_i64(r, "compact_revision", b->compact_revision) < 0)) {
			json_decref(r);
			r = NULL;
		}
		stream_send(st, r);
		wt->finished = true;
		break;
	case KV_WATCH_CANCELED:
		r = watch_msg(wt, b->revision);
		if (r &&
		    (json_object_set_new(r, "canceled", json_true()) < 0 ||
		     json_object_set_new(r, "cancel_reason",
					 json_string(strerror(-b->err ? -b->err : EIO))) < 0)) {
			json_decref(r);
			r = NULL;
		}
		stream_send(st, r);
		wt->finished = true;
		break;
	}
out:
	pthread_mutex_unlock(&st->lock);
}

/* Handles one create_request. The reply comes from the backend's CONNECTED callback. */
static void watch_create(struct stream *st, const json_t *o)
{
	struct ctx x = {.gw = st->c->gw};
	struct kv_watch_req req = {0};
	const json_t *filters = jp_field(o, "filters", NULL);
	struct watcher *wt = calloc(1, sizeof(*wt));
	bool prev_kv;
	int ret;
	if (!wt) {
		ctx_oom(&x);
		goto out_refuse;
	}
	wt->st = st;
	wt->id = st->next_id;
	if (jp_check_object(&x, o, "create_request") < 0 ||
	    jp_get_bytes(&x, o, "key", NULL, &req.key, &req.key_len) < 0 ||
	    jp_get_bytes(&x, o, "range_end", "rangeEnd", &req.range_end, &req.range_end_len) < 0 ||
	    jp_get_i64(&x, o, "start_revision", "startRevision", &req.start_revision) < 0 ||
	    jp_get_bool(&x, o, "progress_notify", "progressNotify", &wt->progress_notify) < 0 ||
	    jp_get_bool(&x, o, "prev_kv", "prevKv", &prev_kv) < 0)
		goto out_refuse;
	if (filters && !json_is_array(filters)) {
		ctx_fail(&x, GRPC_INVALID_ARGUMENT, "\"filters\" must be an array");
		goto out_refuse;
	}
	for (size_t i = 0; filters && i < json_array_size(filters); i++) {
		json_t *tmp = json_pack("{s:O}", "f", json_array_get(filters, i));
		int f;
		ret = tmp ? jp_get_enum(&x, tmp, "f", NULL, filter_names, 2, &f) : ctx_oom(&x);
		json_decref(tmp);
		if (ret < 0)
			goto out_refuse;
		if (f)
			wt->no_delete = true;
		else
			wt->no_put = true;
	}
	if (req.start_revision < 0) {
		ctx_fail(&x, GRPC_INVALID_ARGUMENT, "negative start_revision");
		goto out_refuse;
	}
	/* kv.h events carry no previous value: prev_kv is accepted and not honoured. */
	req.prev_kv = prev_kv;
	wt->start_rev = req.start_revision;
	struct watcher **ws = realloc(st->ws, (st->n_ws + 1) * sizeof(*ws));
	if (!ws) {
		ctx_oom(&x);
		goto out_refuse;
	}
	st->ws = ws;
	ret = kv_watch(st->c->gw->kv, &req, watch_cb, wt, &wt->w);
	if (ret < 0) {
		ctx_kv_fail(&x, ret, false);
		goto out_refuse;
	}
	st->ws[st->n_ws++] = wt;
	st->next_id++;
	ctx_free(&x);
	return;
out_refuse:
	/* etcd answers a failed create with created + canceled and watch_id -1. */
	log_info("gateway: watch refused: %s", x.msg);
	free(wt);
	pthread_mutex_lock(&st->lock);
	json_t *r = json_object();
	if (r && (json_object_set_new(r, "header", json_object()) < 0 ||
		  json_object_set_new(r, "watch_id", json_string("-1")) < 0 ||
		  json_object_set_new(r, "created", json_true()) < 0 ||
		  json_object_set_new(r, "canceled", json_true()) < 0 ||
		  json_object_set_new(r, "cancel_reason", json_string(x.msg)) < 0)) {
		json_decref(r);
		r = NULL;
	}
	stream_send(st, r);
	pthread_mutex_unlock(&st->lock);
	ctx_free(&x);
}

static void watch_cancel_req(struct stream *st, const json_t *o)
{
	struct ctx x = {.gw = st->c->gw};
	int64_t id;
	if (!json_is_object(o) || jp_get_i64(&x, o, "watch_id", "watchId", &id) < 0)
		return;
	for (size_t i = 0; i < st->n_ws; i++) {
		struct watcher *wt = st->ws[i];
		if (wt->id != id || !wt->w)
			continue;
		kv_watch_cancel(st->c->gw->kv, wt->w);
		wt->w = NULL;
		int64_t cur = 0;
		kv_status(st->c->gw->kv, &cur);
		pthread_mutex_lock(&st->lock);
		if (!wt->finished) {
			json_t *r = watch_msg(wt, cur);
			if (r && json_object_set_new(r, "canceled", json_true()) < 0) {
				json_decref(r);
				r = NULL;
			}
			stream_send(st, r);
			wt->finished = true;
		}
		pthread_mutex_unlock(&st->lock);
	}
}

/* Sends a progress message for every live watch silent for interval_ms (or for all when
 * force: a progress_request). The revision is the last one fully delivered. */
static void send_progress(struct stream *st, long interval_ms, bool force)
{
	int64_t now = util_now_ms();
	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < st->n_ws && !st->broken; i++) {
		struct watcher *wt = st->ws[i];
		if (!wt->created || wt->finished || !wt->w)
			continue;
		if (!force && (!wt->progress_notify || now - wt->last_send_ms < interval_ms))
			continue;
		stream_send(st, watch_msg(wt, wt->delivered_rev));
		wt->last_send_ms = now;
	}
	pthread_mutex_unlock(&st->lock);
}

/* The request body holds one or more WatchRequest objects. */
void gw_serve_watch(struct conn *c, const struct request *rq)
{
	struct stream st = {.c = c};
	json_error_t jerr;
	size_t off = 0;
	json_t *msgs = json_array();
	if (!msgs) {
		http_send_error(c, GRPC_RESOURCE_EXHAUSTED, "etcdfs gateway: out of memory", false);
		return;
	}
	/* Parse everything first: a malformed body gets a plain error reply. */
	while (off < rq->body_len) {
		while (off < rq->body_len && strchr(" \t\r\n", rq->body[off]))
			off++;
		if (off >= rq->body_len)
			break;
		json_t *o = json_loadb(rq->body + off, rq->body_len - off, JSON_DISABLE_EOF_CHECK,
				       &jerr);
		if (!o || !json_is_object(o)) {
			char msg[256];
			snprintf(msg, sizeof(msg), "bad watch request: %s",
				 o ? "not an object" : jerr.text);
			json_decref(o);
			json_decref(msgs);
			http_send_error(c, GRPC_INVALID_ARGUMENT, msg, false);
			return;
		}
		off += jerr.position;
		json_array_append_new(msgs, o);
	}
	pthread_mutex_init(&st.lock, NULL);
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				   "Transfer-Encoding: chunked\r\n\r\n";
	if (util_send_all(c->fd, head, sizeof(head) - 1) < 0)
		goto out;
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m)
	{
		const json_t *v;
		if ((v = jp_field(m, "create_request", "createRequest")))
			watch_create(&st, v);
		else if ((v = jp_field(m, "cancel_request", "cancelRequest")))
			watch_cancel_req(&st, v);
		else if (jp_field(m, "progress_request", "progressRequest"))
			send_progress(&st, 0, true);
	}
	/* Now only the client's going away (or stop) ends the stream; input is dropped. */
	for (;;) {
		long interval = __atomic_load_n(&c->gw->progress_ms, __ATOMIC_RELAXED);
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, interval < 1000 ? (int)(interval / 2 + 1) : 500);
		if (r < 0 && errno != EINTR)
			break;
		if (r > 0) {
			char buf[4096];
			ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				break;
		}
		pthread_mutex_lock(&st.lock);
		bool broken = st.broken;
		pthread_mutex_unlock(&st.lock);
		if (broken || gw_stopping(c->gw))
			break;
		send_progress(&st, interval, false);
	}
out:
	for (i = 0; i < st.n_ws; i++) {
		if (st.ws[i]->w)
			kv_watch_cancel(c->gw->kv, st.ws[i]->w);
		free(st.ws[i]);
	}
	free(st.ws);
	pthread_mutex_destroy(&st.lock);
	json_decref(msgs);
}
