/* kvmem.c: the in-memory kv.h backend of the unit tests (kvmem.h), over src/store/mvcc.c. */
#include "kvmem.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "core/log.h"
#include "core/util.h"
#include "mvcc.h"

/* etcd's defaults (--max-request-bytes, --max-txn-ops). */
#define MAX_REQUEST_BYTES (3 * 1024 * 1024 / 2)
#define MAX_TXN_OPS 128
#define MAX_FAULTS 16
/* Events per watch batch; a batch never splits a revision (mvcc_events). */
#define WATCH_BATCH 1000
#define N_KINDS (KVMEM_COMPACT + 1)

struct fault {
	enum kvmem_call which;
	unsigned left; /* matching calls still to pass before this one fires */
	int err;       /* 0 for a compare fault */
	bool applied;
	bool always;
	bool stall; /* kvmem_stall: waits for kvmem_release_stall instead */
};

struct kvmem {
	struct kv kv;	 /* first, as kv.h requires */
	struct kv other; /* kvmem_other(): the same keyspace, uncounted and never faulted */
	struct kv_ops other_ops;
	pthread_mutex_t mu;
	pthread_cond_t changed;		 /* new revision or watch control; with mu */
	struct mvcc *m;			 /* protected by mu */
	unsigned long calls[N_KINDS];	 /* protected by mu; [KVMEM_ANY] is the total */
	struct fault faults[MAX_FAULTS]; /* protected by mu, in the order armed */
	size_t n_faults;		 /* protected by mu */
	struct kv_watch *watches;	 /* protected by mu */
	pthread_cond_t stall_cv;	 /* with mu: stalled or stall_released changed */
	bool stalled, stall_released;	 /* protected by mu */
};

struct kv_watch {
	struct kvmem *mem;
	pthread_t thread;
	kv_watch_cb cb;
	void *arg;
	char *key, *end;
	size_t key_len, end_len;
	int64_t next_rev;      /* only the watch thread touches it once started */
	bool stop;	       /* protected by mem->mu */
	int cancel_err;	       /* protected by mem->mu: a pending server cancel */
	int disconnect_err;    /* protected by mem->mu: a pending stream loss */
	bool ended;	       /* protected by mem->mu: the thread has returned */
	struct kv_watch *next; /* protected by mem->mu */
};

static const char *const kind_names[N_KINDS] = {"call",	  "range", "txn",
						"status", "watch", "compact"};

static void other_destroy(struct kv *kv);

static struct kvmem *to_mem(struct kv *kv)
{
	if (kv->ops->destroy == other_destroy)
		return (struct kvmem *)((char *)kv - offsetof(struct kvmem, other));
	return (struct kvmem *)kv;
}

struct kv *kvmem_other(struct kv *kv)
{
	return &to_mem(kv)->other;
}

/* ---- faults ---- */

static bool matches(const struct fault *f, enum kvmem_call kind)
{
	if (f->err == 0 && !f->stall) /* a compare fault only means something to a txn */
		return kind == KVMEM_TXN && (f->which == KVMEM_TXN || f->which == KVMEM_ANY);
	return f->which == KVMEM_ANY || f->which == kind;
}

/* A stalled call: waits, letting other calls go on (mu is released while
 * waiting), until kvmem_release_stall. With mem->mu. */
static void stall_here(struct kvmem *mem)
{
	mem->stalled = true;
	pthread_cond_broadcast(&mem->stall_cv);
	while (!mem->stall_released)
		pthread_cond_wait(&mem->stall_cv, &mem->mu);
	mem->stalled = mem->stall_released = false;
}

/* Counts one call of kind made through kv and returns the fault it triggers, if any, in *out.
 * With mem->mu. */
static bool begin_call(struct kvmem *mem, struct kv *kv, enum kvmem_call kind, struct fault *out)
{
	if (kv == &mem->other)
		return false;
	unsigned long n = ++mem->calls[kind];
	mem->calls[KVMEM_ANY]++;
	size_t fired = mem->n_faults;
	for (size_t i = 0; i < mem->n_faults; i++) {
		struct fault *f = &mem->faults[i];
		if (!matches(f, kind))
			continue;
		if (fired == mem->n_faults && (f->always || f->left == 0))
			fired = i;
		else if (f->left > 0)
			f->left--;
	}
	if (fired == mem->n_faults)
		return false;
	*out = mem->faults[fired];
	if (!out->always) {
		memmove(&mem->faults[fired], &mem->faults[fired + 1],
			(mem->n_faults - fired - 1) * sizeof(mem->faults[0]));
		mem->n_faults--;
	}
	if (out->stall) {
		stall_here(mem);
		return false;
	}
	if (out->err)
		log_warn("kvmem: %s call %lu fails with %s (injected%s)", kind_names[kind], n,
			 strerror(-out->err), out->applied ? ", after applying it" : "");
	return true;
}

static void arm(struct kv *kv, struct fault f)
{
	struct kvmem *mem = to_mem(kv);
	pthread_mutex_lock(&mem->mu);
	if (mem->n_faults == MAX_FAULTS) {
		/* A fault quietly not armed would let a test pass that tests nothing. */
		log_err("kvmem: more than %d faults armed", MAX_FAULTS);
		abort();
	}
	mem->faults[mem->n_faults++] = f;
	pthread_mutex_unlock(&mem->mu);
}

void kvmem_fail(struct kv *kv, enum kvmem_call which, unsigned after, int err, bool applied)
{
	if (err >= 0 || which >= N_KINDS) {
		log_err("kvmem: kvmem_fail needs a negative errno and a call kind");
		abort();
	}
	arm(kv, (struct fault){.which = which, .left = after, .err = err, .applied = applied});
}

void kvmem_fail_always(struct kv *kv, enum kvmem_call which, int err)
{
	if (err >= 0 || which >= N_KINDS) {
		log_err("kvmem: kvmem_fail_always needs a negative errno and a call kind");
		abort();
	}
	arm(kv, (struct fault){.which = which, .err = err, .always = true});
}

void kvmem_fail_compare(struct kv *kv, unsigned after)
{
	arm(kv, (struct fault){.which = KVMEM_TXN, .left = after});
}

void kvmem_stall(struct kv *kv, enum kvmem_call which, unsigned after)
{
	arm(kv, (struct fault){.which = which, .left = after, .stall = true});
}

void kvmem_wait_stalled(struct kv *kv)
{
	struct kvmem *mem = to_mem(kv);
	pthread_mutex_lock(&mem->mu);
	while (!mem->stalled)
		pthread_cond_wait(&mem->stall_cv, &mem->mu);
	pthread_mutex_unlock(&mem->mu);
}

void kvmem_release_stall(struct kv *kv)
{
	struct kvmem *mem = to_mem(kv);
	pthread_mutex_lock(&mem->mu);
	mem->stall_released = true;
	pthread_cond_broadcast(&mem->stall_cv);
	pthread_mutex_unlock(&mem->mu);
}

void kvmem_fail_clear(struct kv *kv)
{
	struct kvmem *mem = to_mem(kv);
	pthread_mutex_lock(&mem->mu);
	mem->n_faults = 0;
	pthread_mutex_unlock(&mem->mu);
}

unsigned long kvmem_calls(struct kv *kv, enum kvmem_call which)
{
	struct kvmem *mem = to_mem(kv);
	if (which >= N_KINDS)
		return 0;
	pthread_mutex_lock(&mem->mu);
	unsigned long n = mem->calls[which];
	pthread_mutex_unlock(&mem->mu);
	return n;
}

int64_t kvmem_revision(struct kv *kv)
{
	struct kvmem *mem = to_mem(kv);
	pthread_mutex_lock(&mem->mu);
	int64_t rev = mvcc_revision(mem->m);
	pthread_mutex_unlock(&mem->mu);
	return rev;
}

/* ---- range, txn, compact, status ---- */

static int mem_range(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res)
{
	struct kvmem *mem = to_mem(kv);
	struct fault f;
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&mem->mu);
	int ret = begin_call(mem, kv, KVMEM_RANGE, &f) ? f.err : mvcc_range(mem->m, req, res);
	pthread_mutex_unlock(&mem->mu);
	return ret;
}

static int check_txn(const struct kv_txn *txn)
{
	int ret = mvcc_txn_validate(txn, MAX_TXN_OPS);
	if (ret < 0)
		return ret;
	struct codec_cmd cmd = {.kind = CODEC_CMD_TXN, .txn = *txn};
	size_t sz = codec_cmd_size(&cmd);
	if (sz > MAX_REQUEST_BYTES) {
		log_warn("kvmem: request of %zu bytes exceeds the %d byte limit", sz,
			 MAX_REQUEST_BYTES);
		return -EFBIG;
	}
	return 0;
}

/* Runs txn with mem->mu held; lost_race runs the failure branch whatever the compares say. */
static int apply_txn(struct kvmem *mem, const struct kv_txn *txn, bool lost_race,
		     struct kv_txn_result *res)
{
	int ret = check_txn(txn);
	if (ret < 0)
		return ret;
	struct kv_txn forced = {.success = txn->failure, .n_success = txn->n_failure};
	int64_t before = mvcc_revision(mem->m);
	ret = mvcc_txn(mem->m, lost_race ? &forced : txn, res);
	if (ret == 0 && lost_race)
		res->succeeded = false;
	if (mvcc_revision(mem->m) != before)
		pthread_cond_broadcast(&mem->changed);
	return ret;
}

static int mem_txn(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res)
{
	struct kvmem *mem = to_mem(kv);
	struct fault f = {0};
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&mem->mu);
	bool fault = begin_call(mem, kv, KVMEM_TXN, &f);
	int ret;
	if (fault && f.err && !f.applied)
		ret = f.err;
	else
		ret = apply_txn(mem, txn, fault && !f.err, res);
	pthread_mutex_unlock(&mem->mu);
	if (ret == 0 && fault && f.applied) {
		kv_txn_result_free(res);
		memset(res, 0, sizeof(*res));
		ret = f.err;
	}
	return ret;
}

int kvmem_external_txn(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res)
{
	return kv_txn(kvmem_other(kv), txn, res);
}

int kvmem_external_put(struct kv *kv, const void *key, size_t key_len, const void *val,
		       size_t val_len, int64_t *revision)
{
	return kv_put(kvmem_other(kv), key, key_len, val, val_len, revision);
}

int kvmem_external_delete(struct kv *kv, const void *key, size_t key_len, int64_t *revision)
{
	return kv_delete_range(kvmem_other(kv), key, key_len, NULL, 0, NULL, revision);
}

static int mem_compact(struct kv *kv, int64_t revision, bool physical)
{
	struct kvmem *mem = to_mem(kv);
	struct fault f = {0};
	(void)physical; /* mvcc frees compacted history at once */
	pthread_mutex_lock(&mem->mu);
	bool fault = begin_call(mem, kv, KVMEM_COMPACT, &f);
	int ret = fault && !f.applied ? f.err : mvcc_compact(mem->m, revision);
	if (ret == 0 && fault)
		ret = f.err;
	pthread_mutex_unlock(&mem->mu);
	return ret;
}

static int mem_status(struct kv *kv, int64_t *revision)
{
	struct kvmem *mem = to_mem(kv);
	struct fault f;
	pthread_mutex_lock(&mem->mu);
	int ret = 0;
	if (begin_call(mem, kv, KVMEM_STATUS, &f))
		ret = f.err;
	else
		*revision = mvcc_revision(mem->m);
	pthread_mutex_unlock(&mem->mu);
	return ret;
}

static size_t mem_max_request_bytes(struct kv *kv)
{
	(void)kv;
	return MAX_REQUEST_BYTES;
}

static size_t mem_max_txn_ops(struct kv *kv)
{
	(void)kv;
	return MAX_TXN_OPS;
}

/* ---- watches ---- */

static void deliver(struct kv_watch *w, enum kv_watch_state state, int64_t rev,
		    const struct kv_event *evs, size_t n, int64_t compact_rev, int err)
{
	struct kv_watch_batch b = {.state = state,
				   .events = evs,
				   .n_events = n,
				   .revision = rev,
				   .compact_revision = compact_rev,
				   .err = err};
	w->cb(w->arg, &b);
}

enum wake { WAKE_STOP, WAKE_CANCEL, WAKE_DISCONNECT, WAKE_EVENTS };

/* Waits, with mem->mu held, until the watch has something to do. */
static enum wake wait_for_work(struct kv_watch *w, int *err)
{
	struct kvmem *mem = w->mem;
	for (;;) {
		if (w->stop)
			return WAKE_STOP;
		if (w->cancel_err) {
			*err = w->cancel_err;
			return WAKE_CANCEL;
		}
		if (w->disconnect_err) {
			*err = w->disconnect_err;
			w->disconnect_err = 0;
			return WAKE_DISCONNECT;
		}
		/* The compaction point never passes the revision, so a watch that
		 * fell behind it always has a revision to read (and -ERANGE). */
		if (mvcc_revision(mem->m) >= w->next_rev)
			return WAKE_EVENTS;
		pthread_cond_wait(&mem->changed, &mem->mu);
	}
}

/* What one read of the change log gave, taken under mem->mu and delivered without it. */
struct batch {
	int ret;
	struct kv_event *evs;
	size_t n;
	int64_t next, cur, comp;
};

static void read_batch(struct kv_watch *w, struct batch *b)
{
	struct kvmem *mem = w->mem;
	b->ret = mvcc_events(mem->m, w->key, w->key_len, w->end, w->end_len, w->next_rev,
			     WATCH_BATCH, &b->evs, &b->n, &b->next);
	b->cur = mvcc_revision(mem->m);
	b->comp = mvcc_compact_revision(mem->m);
	/* Ended before COMPACTED is delivered, so that no one signals it afterwards. */
	if (b->ret == -ERANGE)
		w->ended = true;
}

/* Returns false when the watch has ended. */
static bool deliver_batch(struct kv_watch *w, struct batch *b)
{
	if (b->ret == -ERANGE) {
		deliver(w, KV_WATCH_COMPACTED, b->cur, NULL, 0, b->comp, 0);
		return false;
	}
	if (b->ret < 0) {
		log_warn("kvmem: watch could not read events: %s; retrying", strerror(-b->ret));
		usleep(10000);
		return true;
	}
	if (b->n)
		deliver(w, KV_WATCH_EVENTS, b->next - 1, b->evs, b->n, 0, 0);
	else
		deliver(w, KV_WATCH_PROGRESS, b->next - 1, NULL, 0, 0, 0);
	mvcc_events_free(b->evs, b->n);
	w->next_rev = b->next;
	return true;
}

static void *watch_main(void *arg)
{
	struct kv_watch *w = arg;
	struct kvmem *mem = w->mem;
	deliver(w, KV_WATCH_CONNECTED, w->next_rev - 1, NULL, 0, 0, 0);
	for (bool more = true; more;) {
		int err = 0;
		struct batch b;
		pthread_mutex_lock(&mem->mu);
		enum wake why = wait_for_work(w, &err);
		if (why == WAKE_EVENTS)
			read_batch(w, &b);
		pthread_mutex_unlock(&mem->mu);
		switch (why) {
		case WAKE_STOP:
			more = false;
			break;
		case WAKE_CANCEL:
			deliver(w, KV_WATCH_CANCELED, w->next_rev - 1, NULL, 0, 0, err);
			more = false;
			break;
		case WAKE_DISCONNECT:
			deliver(w, KV_WATCH_DISCONNECTED, 0, NULL, 0, 0, err);
			deliver(w, KV_WATCH_CONNECTED, w->next_rev - 1, NULL, 0, 0, 0);
			break;
		case WAKE_EVENTS:
			more = deliver_batch(w, &b);
			break;
		}
	}
	pthread_mutex_lock(&mem->mu);
	w->ended = true;
	pthread_mutex_unlock(&mem->mu);
	return NULL;
}

static void watch_free(struct kv_watch *w)
{
	free(w->key);
	free(w->end);
	free(w);
}

static int watch_start(struct kvmem *mem, struct kv_watch *w, int64_t start_rev)
{
	pthread_mutex_lock(&mem->mu);
	/* etcd: start 0 means "after now"; a future start simply waits. */
	w->next_rev = start_rev > 0 ? start_rev : mvcc_revision(mem->m) + 1;
	int ret = -pthread_create(&w->thread, NULL, watch_main, w);
	if (ret == 0) {
		w->next = mem->watches;
		mem->watches = w;
	}
	pthread_mutex_unlock(&mem->mu);
	if (ret < 0)
		log_err("kvmem: cannot start a watch thread: %s", strerror(-ret));
	return ret;
}

static int mem_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
		     struct kv_watch **out)
{
	struct kvmem *mem = to_mem(kv);
	struct fault f;
	pthread_mutex_lock(&mem->mu);
	bool fault = begin_call(mem, kv, KVMEM_WATCH, &f);
	pthread_mutex_unlock(&mem->mu);
	if (fault)
		return f.err;
	if (!req->key_len || !cb)
		return -EINVAL;
	struct kv_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->mem = mem;
	w->cb = cb;
	w->arg = arg;
	w->key = util_memdup(req->key, req->key_len);
	w->end = util_memdup(req->range_end, req->range_end_len);
	w->key_len = req->key_len;
	w->end_len = req->range_end_len;
	int ret = w->key && w->end ? watch_start(mem, w, req->start_revision) : -ENOMEM;
	if (ret < 0) {
		watch_free(w);
		return ret;
	}
	*out = w;
	return 0;
}

static void mem_watch_cancel(struct kv_watch *w)
{
	if (!w)
		return;
	struct kvmem *mem = w->mem;
	pthread_mutex_lock(&mem->mu);
	w->stop = true;
	pthread_cond_broadcast(&mem->changed);
	for (struct kv_watch **pp = &mem->watches; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	pthread_mutex_unlock(&mem->mu);
	if (pthread_equal(pthread_self(), w->thread)) {
		/* kv.h forbids this; joining ourselves would deadlock, so the watch leaks. */
		log_err("kvmem: kv_watch_cancel called from its own callback");
		pthread_detach(w->thread);
		return;
	}
	pthread_join(w->thread, NULL);
	watch_free(w);
}

/* Gives every watch still running a pending cancel (or disconnect) with err. */
static size_t signal_watches(struct kv *kv, bool cancel, int err)
{
	struct kvmem *mem = to_mem(kv);
	size_t n = 0;
	pthread_mutex_lock(&mem->mu);
	for (struct kv_watch *w = mem->watches; w; w = w->next) {
		if (w->ended || w->cancel_err)
			continue;
		*(cancel ? &w->cancel_err : &w->disconnect_err) = err < 0 ? err : -EIO;
		n++;
	}
	pthread_cond_broadcast(&mem->changed);
	pthread_mutex_unlock(&mem->mu);
	return n;
}

size_t kvmem_watch_cancel_all(struct kv *kv, int err)
{
	return signal_watches(kv, true, err);
}

size_t kvmem_watch_disconnect_all(struct kv *kv, int err)
{
	return signal_watches(kv, false, err);
}

/* ---- lifecycle ---- */

static void mem_destroy(struct kv *kv)
{
	struct kvmem *mem = to_mem(kv);
	for (;;) {
		pthread_mutex_lock(&mem->mu);
		struct kv_watch *w = mem->watches;
		pthread_mutex_unlock(&mem->mu);
		if (!w)
			break;
		log_warn("kvmem: destroyed with a watch still open; stopping it");
		mem_watch_cancel(w);
	}
	mvcc_free(mem->m);
	pthread_cond_destroy(&mem->changed);
	pthread_cond_destroy(&mem->stall_cv);
	pthread_mutex_destroy(&mem->mu);
	free(mem);
}

static const struct kv_ops kvmem_ops = {
	.name = "kvmem",
	.range = mem_range,
	.txn = mem_txn,
	.watch = mem_watch,
	.watch_cancel = mem_watch_cancel,
	.compact = mem_compact,
	.status = mem_status,
	.max_request_bytes = mem_max_request_bytes,
	.max_txn_ops = mem_max_txn_ops,
	.destroy = mem_destroy,
};

/* The other handle lives and dies with the first one. */
static void other_destroy(struct kv *kv)
{
	(void)kv;
	log_err("kvmem: kv_destroy on the handle of kvmem_other(); destroy the kvmem_new() one");
}

struct kv *kvmem_new(void)
{
	struct kvmem *mem = calloc(1, sizeof(*mem));
	if (!mem)
		return NULL;
	mem->m = mvcc_new();
	if (!mem->m) {
		free(mem);
		return NULL;
	}
	mem->kv.ops = &kvmem_ops;
	/* The other handle differs only in its name and in not destroying anything. */
	mem->other_ops = kvmem_ops;
	mem->other_ops.name = "kvmem-other";
	mem->other_ops.destroy = other_destroy;
	mem->other.ops = &mem->other_ops;
	pthread_mutex_init(&mem->mu, NULL);
	pthread_cond_init(&mem->changed, NULL);
	pthread_cond_init(&mem->stall_cv, NULL);
	return &mem->kv;
}
