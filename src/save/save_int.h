/* save_int.h: the save module's state and txn builder, shared by its files
 * and its unit tests (not a public API). */
#ifndef ETCDFS_SAVE_INT_H
#define ETCDFS_SAVE_INT_H

#include <pthread.h>

#include "save/save.h"

struct deferred_del;
struct save_why;

struct save {
	struct save_config cfg;
	/* deferred deletes (defer.c): protected by dd_lock */
	pthread_mutex_t dd_lock;
	pthread_cond_t dd_cv;
	pthread_cond_t dd_done; /* a delete in flight ended */
	struct deferred_del *dd_head;
	struct deferred_del *dd_run; /* taken off the list, being carried out */
	bool dd_stop, dd_running_thread;
	pthread_t dd_thread;
	/* why saves were refused (why.c): protected by why_lock */
	pthread_mutex_t why_lock;
	struct save_why *why_head;
	size_t n_why;
	char *why_last;
};

/* Logs a refused save or delete of key (an error line) and keeps the
 * sentence for save_why_get / save_why_last. s may be NULL (log only). */
void save_refuse(struct save *s, const char *key, size_t klen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A successful save or delete: the key's refusal is over. */
void save_why_clear(struct save *s, const char *key, size_t klen);
void save_why_destroy(struct save *s);
/* Keeps the conflict directory dir bounded (kept.c): removes the oldest
 * kept copies beyond SAVE_KEPT_MAX, and those older than SAVE_KEPT_DAYS. */
#define SAVE_KEPT_MAX 200
#define SAVE_KEPT_DAYS 14
void save_prune_kept(struct save *s, const char *dir);

extern const struct cache_local_ops save_local_ops;

/* Frees the deletes left parked at the end (their keys stay). */
void save_drop_parked(struct save *s);
/* Returns once no deferred delete of key is being sent (defer.c). Without
 * the cache lock. */
void save_wait_delete(struct save *s, const char *key, size_t klen);

/* Stores buf under key as one txn: compare (absent ? create_revision == 0 :
 * mod_revision == base) plus xcmp, then extra, then the put keeping the
 * lease. More than SAVE_MAX_COMPARES compares in all or SAVE_MAX_EXTRA_OPS
 * extra ops is -E2BIG (logged, nothing sent). On success applies the put to
 * the cache. */
int save_put_txn(struct save *s, const char *key, size_t klen, const char *buf, size_t len,
		 int64_t base, bool absent, const struct kv_op *extra, size_t n_extra,
		 const struct kv_compare *xcmp, size_t n_xcmp, int64_t *rev);

#endif
