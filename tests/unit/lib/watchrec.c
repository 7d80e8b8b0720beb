/* watchrec.c: the recording watch callback of watchrec.h. */
#include "watchrec.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/util.h"

void watchrec_init(struct watchrec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
}

void watchrec_destroy(struct watchrec *r)
{
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
}

static void record_events(struct watchrec *r, const struct kv_watch_batch *b)
{
	if (r->n_evs && b->n_events &&
	    r->evs[r->n_evs - 1].mod_revision == b->events[0].kv.mod_revision)
		r->split_revision = true;
	for (size_t i = 0; i < b->n_events && r->n_evs < WATCHREC_MAX_EVS; i++) {
		const struct kv_kv *kv = &b->events[i].kv;
		struct watchrec_ev *e = &r->evs[r->n_evs++];
		e->type = b->events[i].type;
		snprintf(e->key, sizeof(e->key), "%.*s", (int)kv->key_len, kv->key);
		snprintf(e->value, sizeof(e->value), "%.*s", (int)(kv->value ? kv->value_len : 0),
			 kv->value ? kv->value : "");
		e->mod_revision = kv->mod_revision;
		e->batch = r->n_batches;
	}
	r->n_batches++;
}

void watchrec_cb(void *arg, const struct kv_watch_batch *b)
{
	struct watchrec *r = arg;
	pthread_mutex_lock(&r->lock);
	if (r->n_state[KV_WATCH_COMPACTED] || r->n_state[KV_WATCH_CANCELED])
		r->after_final = true;
	r->n_state[b->state]++;
	r->last_err[b->state] = b->err;
	r->last_rev[b->state] = b->revision;
	if (b->state != KV_WATCH_PROGRESS && r->n_order < 64)
		r->order[r->n_order++] = b->state;
	if (b->state == KV_WATCH_COMPACTED)
		r->compact_revision = b->compact_revision;
	if (b->state == KV_WATCH_EVENTS)
		record_events(r, b);
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

bool watchrec_wait(struct watchrec *r, int state, int n, long timeout_ms)
{
	long long deadline = util_now_ms() + timeout_ms;
	bool ok;
	pthread_mutex_lock(&r->lock);
	for (;;) {
		ok = state < 0 ? r->n_evs >= (size_t)n : r->n_state[state] >= n;
		if (ok || util_now_ms() >= deadline)
			break;
		/* A short wait: the deadline is on the monotonic clock, the wait on REALTIME. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&r->cond, &r->lock, &ts);
	}
	pthread_mutex_unlock(&r->lock);
	if (!ok)
		fprintf(stderr, "  timed out waiting for state %d x%d\n", state, n);
	return ok;
}

int64_t watchrec_get(struct watchrec *r, const int64_t *field)
{
	pthread_mutex_lock(&r->lock);
	int64_t v = *field;
	pthread_mutex_unlock(&r->lock);
	return v;
}
