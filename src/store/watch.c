/* watch.c: the store's watches: one thread per watch replays the MVCC change
 * log from its next revision, in batches that never split a revision, and
 * sends progress while nothing changes. */
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

#define WATCH_BATCH 1000
#define PROGRESS_MS 500

struct kv_watch {
	struct store *s;
	pthread_t thread;
	kv_watch_cb cb;
	void *arg;
	char *key, *end;
	size_t key_len, end_len;
	int64_t next_rev;
	bool stop;	       /* protected by s->wmu */
	bool finished;	       /* thread ended by itself (compacted) */
	struct kv_watch *next; /* s->watches list, protected by s->wmu */
};

static void deliver(struct kv_watch *w, enum kv_watch_state state, int64_t rev,
		    const struct kv_event *evs, size_t n, int64_t compact_rev)
{
	struct kv_watch_batch b = {.state = state,
				   .events = evs,
				   .n_events = n,
				   .revision = rev,
				   .compact_revision = compact_rev};
	w->cb(w->arg, &b);
}

/* One thread per watch. Batch revisions follow kv.h: everything up to
 * b.revision has been delivered, so a batch cut short by WATCH_BATCH reports
 * the last revision it covers, not the store's. Revisions that bring nothing
 * for this watch are reported as PROGRESS, at most every PROGRESS_MS. */
static void *watch_main(void *arg)
{
	struct kv_watch *w = arg;
	struct store *s = w->s;
	int64_t owed = 0, last_progress = 0;
	deliver(w, KV_WATCH_CONNECTED, w->next_rev - 1, NULL, 0, 0);
	for (;;) {
		pthread_mutex_lock(&s->wmu);
		while (!w->stop && s->published_rev < w->next_rev) {
			if (!owed) {
				pthread_cond_wait(&s->wcond, &s->wmu);
				continue;
			}
			struct timespec ts;
			store_ms_to_timespec(last_progress + PROGRESS_MS, &ts);
			if (pthread_cond_timedwait(&s->wcond, &s->wmu, &ts) == ETIMEDOUT)
				break;
		}
		bool stop = w->stop, fresh = s->published_rev >= w->next_rev;
		pthread_mutex_unlock(&s->wmu);
		if (stop)
			break;
		if (!fresh) {
			deliver(w, KV_WATCH_PROGRESS, owed, NULL, 0, 0);
			owed = 0;
			last_progress = util_now_ms();
			continue;
		}
		struct kv_event *evs;
		size_t n;
		int64_t next;
		pthread_rwlock_rdlock(&s->state_lock);
		int ret = mvcc_events(s->m, w->key, w->key_len, w->end, w->end_len, w->next_rev,
				      WATCH_BATCH, &evs, &n, &next);
		int64_t cur = mvcc_revision(s->m), comp = mvcc_compact_revision(s->m);
		pthread_rwlock_unlock(&s->state_lock);
		if (ret == -ERANGE) {
			deliver(w, KV_WATCH_COMPACTED, cur, NULL, 0, comp);
			break;
		}
		if (ret < 0) {
			log_warn("store: watch could not read events: %s; retrying",
				 strerror(-ret));
			usleep(100000);
			continue;
		}
		if (n) {
			deliver(w, KV_WATCH_EVENTS, next - 1, evs, n, 0);
			owed = 0;
		} else if (next > w->next_rev) {
			owed = next - 1;
			int64_t now = util_now_ms();
			if (now - last_progress >= PROGRESS_MS) {
				deliver(w, KV_WATCH_PROGRESS, owed, NULL, 0, 0);
				owed = 0;
				last_progress = now;
			}
		}
		mvcc_events_free(evs, n);
		w->next_rev = next;
	}
	pthread_mutex_lock(&s->wmu);
	w->finished = true;
	pthread_mutex_unlock(&s->wmu);
	return NULL;
}

int store_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
		struct kv_watch **out)
{
	struct store *s = ((struct store *)kv);
	if (!req->key_len || !cb)
		return -EINVAL;
	struct kv_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->s = s;
	w->cb = cb;
	w->arg = arg;
	w->key = util_memdup(req->key, req->key_len);
	w->end = util_memdup(req->range_end, req->range_end_len);
	if (!w->key || !w->end) {
		free(w->key);
		free(w->end);
		free(w);
		return -ENOMEM;
	}
	w->key_len = req->key_len;
	w->end_len = req->range_end_len;
	pthread_rwlock_rdlock(&s->state_lock);
	int64_t cur = mvcc_revision(s->m);
	pthread_rwlock_unlock(&s->state_lock);
	/* etcd: start 0 means "after now"; a future start simply waits. A
	 * compacted start is reported through KV_WATCH_COMPACTED. */
	w->next_rev = req->start_revision > 0 ? req->start_revision : cur + 1;
	pthread_mutex_lock(&s->wmu);
	int ret = pthread_create(&w->thread, NULL, watch_main, w);
	if (ret == 0) {
		w->next = s->watches;
		s->watches = w;
	}
	pthread_mutex_unlock(&s->wmu);
	if (ret != 0) {
		free(w->key);
		free(w->end);
		free(w);
		return -ret;
	}
	*out = w;
	return 0;
}

static void watch_stop_join(struct kv_watch *w)
{
	struct store *s = w->s;
	pthread_mutex_lock(&s->wmu);
	w->stop = true;
	pthread_cond_broadcast(&s->wcond);
	for (struct kv_watch **pp = &s->watches; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	pthread_mutex_unlock(&s->wmu);
	if (pthread_equal(pthread_self(), w->thread)) {
		/* kv.h forbids this; joining ourselves would deadlock. */
		log_err("store: kv_watch_cancel called from its own callback");
		pthread_detach(w->thread);
		return;
	}
	pthread_join(w->thread, NULL);
}

void store_watch_cancel(struct kv_watch *w)
{
	if (!w)
		return;
	watch_stop_join(w);
	if (pthread_equal(pthread_self(), w->thread))
		return; /* leaked deliberately: the thread still uses it */
	free(w->key);
	free(w->end);
	free(w);
}

/* ---- lifecycle ---- */
