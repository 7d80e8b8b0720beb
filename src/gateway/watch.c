/* watch.c: /v3/watch streams: a chunked reply of newline-delimited {"result": WatchResponse}
 * objects, one kv.h watch per create_request.
 *
 * MHD's thread parses the request body, starts the watches and queues a reply of unknown
 * length; MHD then calls stream_read() for each chunk, which waits for queued messages,
 * sends progress messages and notices the client going away. Events are queued by the
 * backend's watch callbacks. Every message goes through stream_send() under the stream's
 * lock; one message is one chunk on the wire.
 */
#include "gateway_int.h"

#include <errno.h>
#include <microhttpd.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/util.h"

#define QUEUE_MAX ((size_t)16 << 20) /* queued bytes of a client that does not read */

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

struct msg {
	struct msg *next;
	size_t len, off;
	char data[];
};

struct stream {
	struct conn *c;
	pthread_mutex_t lock;	  /* orders the messages */
	pthread_cond_t more;	  /* with lock: a message was queued or the stream broke */
	bool broken;		  /* protected by lock: the stream ends, nothing more is queued */
	struct msg *head, **tail; /* protected by lock: not yet sent */
	size_t queued;		  /* protected by lock: bytes in the queue */
	struct watcher **ws;
	size_t n_ws;
	int64_t next_id;
};

/* Queues {"result": r} as one chunk. Called with st->lock held; steals r. */
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
	struct msg *m =
		st->broken || st->queued + n + 1 > QUEUE_MAX ? NULL : malloc(sizeof(*m) + n + 1);
	if (!m) {
		if (!st->broken)
			log_info("gateway: watch client does not read; closing its stream");
		free(s);
		goto out_broken;
	}
	memcpy(m->data, s, n);
	m->data[n] = '\n';
	m->len = n + 1;
	m->off = 0;
	m->next = NULL;
	*st->tail = m;
	st->tail = &m->next;
	st->queued += m->len;
	free(s);
	pthread_cond_signal(&st->more);
	return;
out_broken:
	st->broken = true;
	pthread_cond_signal(&st->more);
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
static void send_progress_locked(struct stream *st, long interval_ms, bool force)
{
	int64_t now = util_now_ms();
	for (size_t i = 0; i < st->n_ws && !st->broken; i++) {
		struct watcher *wt = st->ws[i];
		if (!wt->created || wt->finished || !wt->w)
			continue;
		if (!force && (!wt->progress_notify || now - wt->last_send_ms < interval_ms))
			continue;
		stream_send(st, watch_msg(wt, wt->delivered_rev));
		wt->last_send_ms = now;
	}
}

static void send_progress(struct stream *st, long interval_ms, bool force)
{
	pthread_mutex_lock(&st->lock);
	send_progress_locked(st, interval_ms, force);
	pthread_mutex_unlock(&st->lock);
}

/* True when the client has closed its side; what it still sends is dropped. */
static bool client_gone(struct stream *st)
{
	char buf[4096];
	ssize_t n = recv(st->c->fd, buf, sizeof(buf), MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* MHD's content callback: the next message (or the rest of one that did not fit). Blocks,
 * which MHD allows with a thread per connection. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *st = cls;
	(void)pos;
	pthread_mutex_lock(&st->lock);
	while (!st->head && !st->broken) {
		long interval = __atomic_load_n(&st->c->gw->progress_ms, __ATOMIC_RELAXED);
		long wait_ms = interval < 1000 ? interval / 2 + 1 : 500;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += wait_ms / 1000;
		ts.tv_nsec += (wait_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_cond_timedwait(&st->more, &st->lock, &ts) != ETIMEDOUT)
			continue;
		if (client_gone(st) || gw_stopping(st->c->gw))
			st->broken = true;
		else
			send_progress_locked(st, interval, false);
	}
	if (!st->head) {
		pthread_mutex_unlock(&st->lock);
		return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	struct msg *m = st->head;
	size_t n = m->len - m->off < max ? m->len - m->off : max;
	memcpy(buf, m->data + m->off, n);
	m->off += n;
	if (m->off == m->len) {
		st->head = m->next;
		if (!st->head)
			st->tail = &st->head;
		st->queued -= m->len;
		free(m);
	}
	pthread_mutex_unlock(&st->lock);
	return (ssize_t)n;
}

/* MHD is done with the reply: the watches end before the stream is freed. */
static void stream_free(void *cls)
{
	struct stream *st = cls;
	for (size_t i = 0; i < st->n_ws; i++) {
		if (st->ws[i]->w)
			kv_watch_cancel(st->c->gw->kv, st->ws[i]->w);
		free(st->ws[i]);
	}
	free(st->ws);
	while (st->head) {
		struct msg *m = st->head;
		st->head = m->next;
		free(m);
	}
	pthread_cond_destroy(&st->more);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

/* The request body holds one or more WatchRequest objects. */
void gw_serve_watch(struct conn *c, const struct request *rq)
{
	json_error_t jerr;
	size_t off = 0;
	json_t *msgs = json_array();
	struct stream *st = calloc(1, sizeof(*st));
	if (!msgs || !st) {
		json_decref(msgs);
		free(st);
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
			free(st);
			http_send_error(c, GRPC_INVALID_ARGUMENT, msg, false);
			return;
		}
		off += jerr.position;
		json_array_append_new(msgs, o);
	}
	st->c = c;
	st->tail = &st->head;
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->more, NULL);
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m)
	{
		const json_t *v;
		if ((v = jp_field(m, "create_request", "createRequest")))
			watch_create(st, v);
		else if ((v = jp_field(m, "cancel_request", "cancelRequest")))
			watch_cancel_req(st, v);
		else if (jp_field(m, "progress_request", "progressRequest"))
			send_progress(st, 0, true);
	}
	json_decref(msgs);
	/* Unknown length: MHD sends it chunked. It frees st through stream_free, also when
	 * creating the reply fails. */
	struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 << 10,
								   stream_read, st, stream_free);
	if (!r) {
		stream_free(st);
		return;
	}
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") !=
	    MHD_YES) {
		MHD_destroy_response(r);
		return;
	}
	http_queue(c, 200, r, false);
}
