/* grpc_watch.c: the streaming calls: Watch (create, cancel and progress requests over one
 * bidirectional stream, many watches on it) and Lease.KeepAlive.
 *
 * Watch replies follow etcd 3.4: ids count from 0 per stream; "created" comes first, with the
 * current revision; a start revision below the compaction point gets one reply with
 * compact_revision set and canceled, and the watch ends; a cancel request is answered with
 * canceled (unknown ids too); a progress request gets a reply with watch_id -1 and the
 * revision every watch of the stream has reached; progress_notify watches get an empty reply
 * after gw->progress_ms without one; fragment splits a reply larger than the request limit.
 * prev_kv is read back from the store at the event's revision - 1 (kv.h carries none).
 *
 * Events are sent from the backend's watch thread with h2_stream_send(wait): a client that
 * does not read stalls its own watches (back-pressure, bounded queue), never the store.
 */
#include "grpc_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

struct gwatch {
	struct wstream *ws;
	int64_t id;
	struct kv_watch *w;
	bool no_put, no_delete, prev_kv, progress_notify, fragment;
	int stop;	      /* atomic: cancel has begun, senders give up */
	int64_t rev;	      /* atomic: everything up to it was delivered */
	int64_t last_sent_ms; /* watch thread */
	struct gwatch *next;  /* connection thread */
};

struct wstream {
	struct h2stream *st;
	struct gw *gw;
	int64_t next_id;
	struct gwatch *watches;
};

static int64_t now_rev(struct gw *gw)
{
	int64_t rev = 0;
	kv_status(gw->kv, &rev);
	return rev;
}

/* A control reply (created, canceled, progress) from the connection thread. */
static int send_ctl(struct wstream *ws, int64_t id, int64_t rev, bool created, bool canceled,
		    int64_t compact, const char *reason)
{
	V3pb__WatchResponse o = V3PB__WATCH_RESPONSE__INIT;
	V3pb__Header h;
	grpc_header_fill(ws->gw, &h, rev);
	o.header = &h;
	o.watch_id = id;
	o.created = created;
	o.canceled = canceled;
	o.compact_revision = compact;
	o.cancel_reason = (char *)(reason ? reason : "");
	return h2_stream_send(ws->st, &o.base, false, NULL);
}

/* ---- the watch thread's side ---- */

/* The key's value just before rev, for prev_kv (NULL when there was none or it is
 * compacted away). */
static bool prev_of(struct gw *gw, const struct kv_kv *k, int64_t rev, struct kv_range_result *r)
{
	struct kv_range_req q = {
		.key = k->key, .key_len = k->key_len, .revision = rev - 1, .serializable = true};
	if (rev <= 1 || kv_range(gw->kv, &q, r) < 0)
		return false;
	if (!r->n_kvs) {
		kv_range_result_free(r);
		return false;
	}
	return true;
}

/* Sends events [from, to) of ev as one reply (fragment: more follow). */
static int send_events(struct gwatch *g, const struct kv_event *const *ev, size_t n, int64_t rev,
		       bool fragment)
{
	V3pb__WatchResponse o = V3PB__WATCH_RESPONSE__INIT;
	V3pb__Header h;
	V3pb__Event *e = calloc(n, sizeof(*e));
	V3pb__Event **ep = calloc(n, sizeof(*ep));
	V3pb__KeyValue *kvs = calloc(2 * n, sizeof(*kvs));
	struct kv_range_result *prev = calloc(n, sizeof(*prev));
	int ret = -ENOMEM;
	if (!e || !ep || !kvs || !prev)
		goto out;
	grpc_header_fill(g->ws->gw, &h, rev);
	o.header = &h;
	o.watch_id = g->id;
	o.fragment = fragment;
	for (size_t i = 0; i < n; i++) {
		v3pb__event__init(&e[i]);
		e[i].type = ev[i]->type == KV_EVENT_DELETE ? 1 : 0;
		grpc_kv_fill(&kvs[2 * i], &ev[i]->kv);
		e[i].kv = &kvs[2 * i];
		if (g->prev_kv &&
		    prev_of(g->ws->gw, &ev[i]->kv, ev[i]->kv.mod_revision, &prev[i])) {
			grpc_kv_fill(&kvs[2 * i + 1], &prev[i].kvs[0]);
			e[i].prev_kv = &kvs[2 * i + 1];
		}
		ep[i] = &e[i];
	}
	o.events = ep;
	o.n_events = n;
	ret = h2_stream_send(g->ws->st, &o.base, true, &g->stop);
out:
	for (size_t i = 0; prev && i < n; i++)
		kv_range_result_free(&prev[i]);
	free(prev);
	free(kvs);
	free(ep);
	free(e);
	return ret;
}

/* Sends the events that pass the filters, split into fragments when asked and too large. */
static void deliver(struct gwatch *g, const struct kv_watch_batch *b)
{
	const struct kv_event **ev = calloc(b->n_events ? b->n_events : 1, sizeof(*ev));
	size_t n = 0;
	if (!ev) {
		log_warn("gateway: watch %lld: out of memory, events lost", (long long)g->id);
		return;
	}
	for (size_t i = 0; i < b->n_events; i++) {
		const struct kv_event *e = &b->events[i];
		if ((e->type == KV_EVENT_PUT && g->no_put) ||
		    (e->type == KV_EVENT_DELETE && g->no_delete))
			continue;
		ev[n++] = e;
	}
	size_t from = 0;
	while (from < n) {
		size_t to = n, bytes = 0;
		if (g->fragment) {
			/* etcd cuts fragments at its request limit; at least one event each */
			for (to = from; to < n; to++) {
				bytes += ev[to]->kv.key_len + ev[to]->kv.value_len + 64;
				if (bytes > GRPC_MAX_REQUEST_BYTES && to > from)
					break;
			}
		}
		if (send_events(g, ev + from, to - from, b->revision, to < n) < 0)
			break;
		from = to;
		g->last_sent_ms = util_now_ms();
	}
	free(ev);
}

static void on_batch(void *arg, const struct kv_watch_batch *b)
{
	struct gwatch *g = arg;
	struct wstream *ws = g->ws;
	if (__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE))
		return;
	switch (b->state) {
	case KV_WATCH_EVENTS:
		deliver(g, b);
		break;
	case KV_WATCH_PROGRESS: {
		long every = __atomic_load_n(&ws->gw->progress_ms, __ATOMIC_RELAXED);
		if (g->progress_notify && util_now_ms() - g->last_sent_ms >= every) {
			V3pb__WatchResponse o = V3PB__WATCH_RESPONSE__INIT;
			V3pb__Header h;
			grpc_header_fill(ws->gw, &h, b->revision);
			o.header = &h;
			o.watch_id = g->id;
			if (h2_stream_send(ws->st, &o.base, true, &g->stop) == 0)
				g->last_sent_ms = util_now_ms();
		}
		break;
	}
	case KV_WATCH_COMPACTED: {
		V3pb__WatchResponse o = V3PB__WATCH_RESPONSE__INIT;
		V3pb__Header h;
		grpc_header_fill(ws->gw, &h, 0); /* etcd's compaction reply has no revision */
		o.header = &h;
		o.watch_id = g->id;
		o.compact_revision = b->compact_revision;
		o.canceled = true;
		h2_stream_send(ws->st, &o.base, true, &g->stop);
		break;
	}
	case KV_WATCH_CANCELED: {
		V3pb__WatchResponse o = V3PB__WATCH_RESPONSE__INIT;
		V3pb__Header h;
		grpc_header_fill(ws->gw, &h, b->revision);
		o.header = &h;
		o.watch_id = g->id;
		o.canceled = true;
		o.cancel_reason = (char *)strerror(-b->err);
		h2_stream_send(ws->st, &o.base, true, &g->stop);
		break;
	}
	default:
		break;
	}
	if (b->state != KV_WATCH_DISCONNECTED && b->revision)
		__atomic_store_n(&g->rev, b->revision, __ATOMIC_RELEASE);
}

/* ---- the connection thread's side ---- */

static struct gwatch *find_watch(struct wstream *ws, int64_t id, struct gwatch ***link)
{
	for (struct gwatch **pp = &ws->watches; *pp; pp = &(*pp)->next)
		if ((*pp)->id == id) {
			if (link)
				*link = pp;
			return *pp;
		}
	return NULL;
}

static void watch_free(struct wstream *ws, struct gwatch *g)
{
	__atomic_store_n(&g->stop, 1, __ATOMIC_RELEASE);
	h2_stream_wake(ws->st);
	if (g->w)
		kv_watch_cancel(ws->gw->kv, g->w);
	free(g);
}

static int watch_create(struct wstream *ws, const V3pb__WatchCreateRequest *c)
{
	int64_t rev = now_rev(ws->gw);
	int64_t id = c->watch_id ? c->watch_id : ws->next_id;
	if (!c->watch_id)
		while (find_watch(ws, id, NULL))
			id++;
	if (c->watch_id && find_watch(ws, id, NULL))
		return send_ctl(ws, -1, rev, true, true, 0,
				"mvcc: duplicate watch ID provided on the WatchStream");
	if (!c->watch_id)
		ws->next_id = id + 1;
	struct gwatch *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->ws = ws;
	g->id = id;
	g->prev_kv = c->prev_kv;
	g->progress_notify = c->progress_notify;
	g->fragment = c->fragment;
	g->last_sent_ms = util_now_ms();
	g->rev = c->start_revision > 0 && c->start_revision <= rev ? c->start_revision - 1 : rev;
	for (size_t i = 0; i < c->n_filters; i++) {
		g->no_put |= c->filters[i] == 0;
		g->no_delete |= c->filters[i] == 1;
	}
	/* "created" goes out before any event can. */
	int ret = send_ctl(ws, id, rev, true, false, 0, NULL);
	if (ret < 0) {
		free(g);
		return ret;
	}
	struct kv_watch_req q = {.key = c->key.data,
				 .key_len = c->key.len,
				 .range_end = c->range_end.data,
				 .range_end_len = c->range_end.len,
				 .start_revision = c->start_revision};
	ret = kv_watch(ws->gw->kv, &q, on_batch, g, &g->w);
	if (ret < 0) {
		free(g);
		return send_ctl(ws, id, rev, false, true, 0, strerror(-ret));
	}
	g->next = ws->watches;
	ws->watches = g;
	return 0;
}

static int watch_cancel(struct wstream *ws, int64_t id)
{
	struct gwatch **link;
	struct gwatch *g = find_watch(ws, id, &link);
	if (!g)
		return 0; /* etcd does not answer a cancel of an id it does not know */
	*link = g->next;
	watch_free(ws, g);
	return send_ctl(ws, id, now_rev(ws->gw), false, true, 0, NULL);
}

static int watch_progress(struct wstream *ws)
{
	int64_t rev = now_rev(ws->gw);
	/* Never claim more than every watch has delivered. */
	for (struct gwatch *g = ws->watches; g; g = g->next) {
		int64_t r = __atomic_load_n(&g->rev, __ATOMIC_ACQUIRE);
		if (r < rev)
			rev = r;
	}
	return send_ctl(ws, -1, rev, false, false, 0, NULL);
}

int grpc_watch_open(struct h2stream *st)
{
	struct wstream *ws = calloc(1, sizeof(*ws));
	if (!ws)
		return h2_stream_error(st, GRPC_RESOURCE_EXHAUSTED,
				       "etcdfs gateway: out of memory");
	ws->st = st;
	ws->gw = h2_stream_gw(st);
	h2_stream_set_data(st, ws);
	return 0;
}

int grpc_watch_msg(struct h2stream *st, const uint8_t *msg, size_t len)
{
	struct wstream *ws = h2_stream_data(st);
	V3pb__WatchRequest *r = v3pb__watch_request__unpack(NULL, len, msg);
	int ret = 0;
	if (!r)
		return h2_stream_error(st, GRPC_INTERNAL, "grpc: error unmarshalling request");
	switch (r->request_union_case) {
	case V3PB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST:
		ret = watch_create(ws, r->create_request);
		break;
	case V3PB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST:
		ret = watch_cancel(ws, r->cancel_request->watch_id);
		break;
	case V3PB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST:
		ret = watch_progress(ws);
		break;
	default:
		break; /* etcd ignores a request it does not know */
	}
	v3pb__watch_request__free_unpacked(r, NULL);
	if (ret == -ENOMEM)
		return h2_stream_error(st, GRPC_RESOURCE_EXHAUSTED,
				       "etcdfs gateway: out of memory");
	return 0;
}

#define CANCEL_THREADS 16

struct cancel_job {
	struct gw *gw;
	struct gwatch *list; /* every CANCEL_THREADS-th watch, linked through next */
	pthread_t thread;
};

static void *cancel_main(void *arg)
{
	struct cancel_job *j = arg;
	while (j->list) {
		struct gwatch *g = j->list;
		j->list = g->next;
		if (g->w)
			kv_watch_cancel(j->gw->kv, g->w);
		free(g);
	}
	return NULL;
}

/* Cancels every watch of the stream. Each cancel joins a backend thread; one after another,
 * a thousand of them take seconds (every cancel wakes the store's other watch threads), so
 * many are cancelled from a few threads at once. */
static void cancel_all(struct wstream *ws)
{
	struct cancel_job jobs[CANCEL_THREADS] = {{0}};
	size_t n = 0;
	for (struct gwatch *g = ws->watches; g; g = g->next, n++)
		__atomic_store_n(&g->stop, 1, __ATOMIC_RELEASE);
	h2_stream_wake(ws->st);
	size_t nj = n < 64 ? 1 : CANCEL_THREADS;
	for (size_t i = 0; ws->watches; i++) {
		struct gwatch *g = ws->watches;
		ws->watches = g->next;
		g->next = jobs[i % nj].list;
		jobs[i % nj].list = g;
	}
	for (size_t i = 0; i < nj; i++) {
		jobs[i].gw = ws->gw;
		if (i == 0 || pthread_create(&jobs[i].thread, NULL, cancel_main, &jobs[i]) != 0)
			jobs[i].thread = 0;
	}
	cancel_main(&jobs[0]);
	for (size_t i = 1; i < nj; i++) {
		if (jobs[i].thread)
			pthread_join(jobs[i].thread, NULL);
		else
			cancel_main(&jobs[i]);
	}
}

void grpc_watch_close(struct h2stream *st)
{
	struct wstream *ws = h2_stream_data(st);
	if (!ws)
		return;
	cancel_all(ws);
	free(ws);
	h2_stream_set_data(st, NULL);
}

/* ---- Lease.KeepAlive ---- */

int grpc_keepalive_open(struct h2stream *st)
{
	(void)st;
	return 0;
}

int grpc_keepalive_msg(struct h2stream *st, const uint8_t *msg, size_t len)
{
	struct gw *gw = h2_stream_gw(st);
	V3pb__LeaseKeepAliveRequest *r = v3pb__lease_keep_alive_request__unpack(NULL, len, msg);
	struct kv_lease l = {0};
	if (!r)
		return h2_stream_error(st, GRPC_INTERNAL, "grpc: error unmarshalling request");
	int64_t id = r->id;
	v3pb__lease_keep_alive_request__free_unpacked(r, NULL);
	int ret = kv_lease_keepalive(gw->kv, id, &l);
	if (ret == -ENOSYS)
		return h2_stream_error(st, GRPC_UNIMPLEMENTED,
				       "etcdfs gateway: this backend has no leases");
	if (ret == -ENOENT)
		l.ttl = 0; /* etcd: a lease that is gone renews to TTL 0, not an error */
	else if (ret < 0)
		return h2_stream_error(st, GRPC_UNAVAILABLE, "etcdserver: %s", strerror(-ret));
	V3pb__LeaseKeepAliveResponse o = V3PB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
	V3pb__Header h;
	grpc_header_fill(gw, &h, now_rev(gw));
	o.header = &h;
	o.id = id;
	o.ttl = l.ttl;
	h2_stream_send(st, &o.base, false, NULL);
	return 0;
}

void grpc_keepalive_close(struct h2stream *st)
{
	(void)st;
}
