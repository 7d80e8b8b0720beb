/* watchrec.h: a kv.h watch callback that records what it saw, for the watch tests of any
 * backend (the etcd client, the JSON gateway).
 *
 *	struct watchrec r;              // large (events inline): static or on the main stack
 *	watchrec_init(&r);
 *	kv_watch(kv, &req, watchrec_cb, &r, &w);
 *	REQUIRE(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
 *	... read r under r.lock, or one field through watchrec_get() ...
 *	kv_watch_cancel(kv, w);
 *	watchrec_destroy(&r);
 *
 * The callback runs on the backend's watch thread; every field is protected by lock. */
#ifndef ETCDFS_TEST_WATCHREC_H
#define ETCDFS_TEST_WATCHREC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"

#define WATCHREC_MAX_EVS 4096 /* events past this are dropped (n_evs stops) */
#define WATCHREC_STATES 6     /* one slot per enum kv_watch_state */

struct watchrec_ev {
	enum kv_event_type type;
	char key[64];	/* truncated copies */
	char value[64]; /* empty for a delete */
	int64_t mod_revision;
	size_t batch; /* index of the EVENTS batch it came in */
};

/* Everything the callback saw, in order. */
struct watchrec {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* protected by lock: */
	int n_state[WATCHREC_STATES]; /* batches per state */
	int last_err[WATCHREC_STATES];
	int64_t last_rev[WATCHREC_STATES];
	int64_t compact_revision;
	struct watchrec_ev evs[WATCHREC_MAX_EVS];
	size_t n_evs;
	size_t n_batches; /* EVENTS batches */
	int order[64];	  /* first states seen (PROGRESS left out), to check their order */
	size_t n_order;
	bool split_revision; /* a revision spanning two batches */
	bool after_final;    /* a callback after COMPACTED or CANCELED */
};

void watchrec_init(struct watchrec *r);
void watchrec_destroy(struct watchrec *r);
/* The kv_watch_cb; arg is the struct watchrec. */
void watchrec_cb(void *arg, const struct kv_watch_batch *b);
/* Waits up to timeout_ms until state was seen n times (state < 0: until n events arrived);
 * says on stderr what it waited for when it times out. */
bool watchrec_wait(struct watchrec *r, int state, int n, long timeout_ms);
/* Reads one int64_t field of r under its lock. */
int64_t watchrec_get(struct watchrec *r, const int64_t *field);

#endif
