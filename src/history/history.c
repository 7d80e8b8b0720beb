/* history.c: a key's retained versions, fetched by walking back through
 * range-at-revision (history.h). */
#include "history/history.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 256

struct hist;

struct ver {
	struct hist *hist;
	uint64_t ino;
	uint64_t nlookup;
	int64_t mod, create, version, lease;
	int64_t mtime_ns;
	char *text; /* rendered content, NULL once gone */
	size_t len;
	bool unreadable; /* the render said -EIO */
	bool gone;	 /* left the listing (compacted, capped, re-created) */
};

struct hist {
	struct hist *next; /* bucket chain */
	uint64_t id;
	char *key;
	size_t key_len;
	uint64_t dir_nlookup, users, ver_refs;
	struct ver **v; /* listed, newest first */
	size_t n, cap;
	struct ver **gone; /* left the listing, still looked up */
	size_t n_gone, gone_cap;
	int64_t checked_ms;
	int64_t head_mtime_ns;
	pthread_mutex_t walk_mu; /* one fetch at a time */
};

struct history {
	struct history_config cfg;
	pthread_mutex_t mu;
	struct hist *buckets[NBUCKETS];
	struct ver **by_seq; /* inode - HISTORY_INO_BASE */
	size_t seq_cap;
	uint64_t next_seq;
	uint64_t ranges, checks, compacted, n_hists, n_vers;
};

int history_new(const struct history_config *cfg, struct history **out)
{
	struct history *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->cfg = *cfg;
	if (!h->cfg.max_versions)
		h->cfg.max_versions = HISTORY_MAX_VERSIONS;
	if (!h->cfg.check_ms)
		h->cfg.check_ms = HISTORY_CHECK_MS;
	pthread_mutex_init(&h->mu, NULL);
	*out = h;
	return 0;
}

static void ver_free(struct history *h, struct ver *v)
{
	h->by_seq[v->ino - HISTORY_INO_BASE] = NULL;
	h->n_vers--;
	free(v->text);
	free(v);
}

static void hist_free(struct history *h, struct hist *x)
{
	for (size_t i = 0; i < x->n; i++)
		ver_free(h, x->v[i]);
	for (size_t i = 0; i < x->n_gone; i++)
		ver_free(h, x->gone[i]);
	free(x->v);
	free(x->gone);
	free(x->key);
	pthread_mutex_destroy(&x->walk_mu);
	h->n_hists--;
	free(x);
}

void history_destroy(struct history *h)
{
	if (!h)
		return;
	for (size_t b = 0; b < NBUCKETS; b++) {
		while (h->buckets[b]) {
			struct hist *x = h->buckets[b];
			h->buckets[b] = x->next;
			hist_free(h, x);
		}
	}
	free(h->by_seq);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

/* ---- tables (h->mu held) ---- */

static struct hist **slot_of(struct history *h, uint64_t id)
{
	struct hist **p = &h->buckets[id % NBUCKETS];
	while (*p && (*p)->id != id)
		p = &(*p)->next;
	return p;
}

static struct hist *find(struct history *h, uint64_t id)
{
	return *slot_of(h, id);
}

/* Frees x once nothing uses it. */
static void maybe_free(struct history *h, struct hist *x)
{
	if (x->dir_nlookup || x->users || x->ver_refs)
		return;
	struct hist **p = slot_of(h, x->id);
	*p = x->next;
	hist_free(h, x);
}

static struct ver *ver_of(struct history *h, uint64_t ino)
{
	if (!history_is_ino(ino) || ino - HISTORY_INO_BASE >= h->next_seq)
		return NULL;
	return h->by_seq[ino - HISTORY_INO_BASE];
}

/* Takes v out of the listing; it lives on while the kernel looks it up. */
static int retire(struct history *h, struct hist *x, struct ver *v)
{
	v->gone = true;
	free(v->text);
	v->text = NULL;
	if (!v->nlookup) {
		ver_free(h, v);
		return 0;
	}
	if (util_grow(&x->gone, &x->gone_cap, x->n_gone + 1, sizeof(*x->gone), 4) < 0)
		return -ENOMEM;
	x->gone[x->n_gone++] = v;
	return 0;
}

/* Retires the listed versions from index i on. */
static void retire_from(struct history *h, struct hist *x, size_t i)
{
	size_t keep = i;
	for (; i < x->n; i++) {
		if (retire(h, x, x->v[i]) < 0)
			x->v[keep++] = x->v[i]; /* no room to keep it gone: keep it listed */
	}
	x->n = keep;
}

static void fill_info(const struct ver *v, struct history_ver_info *o)
{
	o->ino = v->ino;
	o->id = v->hist->id;
	o->mod_revision = v->mod;
	o->create_revision = v->create;
	o->version = v->version;
	o->lease = v->lease;
	o->size = v->len;
	o->mtime_ns = v->mtime_ns;
}

/* ---- fetching (no lock) ---- */

/* One version from a range result: rendered as the mount renders its
 * files. */
static struct ver *make_ver(struct history *h, const struct kv_kv *kv)
{
	struct ver *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->mod = kv->mod_revision;
	v->create = kv->create_revision;
	v->version = kv->version;
	v->lease = kv->lease;
	const char *val = kv->value ? kv->value : "";
	int ret = -ENOTSUP;
	if (h->cfg.render)
		ret = h->cfg.render(h->cfg.render_arg, kv->key, kv->key_len, val, kv->value_len,
				    kv->mod_revision, &v->text, &v->len);
	if (ret == -EIO) {
		v->unreadable = true;
		v->text = NULL;
		v->len = 0;
	} else if (ret < 0) {
		v->text = util_memdup(val, kv->value_len);
		v->len = kv->value_len;
		if (!v->text) {
			free(v);
			return NULL;
		}
	}
	if (h->cfg.value_time)
		v->mtime_ns = h->cfg.value_time(h->cfg.value_time_arg, kv->key, kv->key_len, val,
						kv->value_len);
	return v;
}

struct walk {
	struct ver **v; /* newest first */
	size_t n, cap;
};

static void walk_free(struct walk *w)
{
	for (size_t i = 0; i < w->n; i++) {
		free(w->v[i]->text);
		free(w->v[i]);
	}
	free(w->v);
}

/* Fetches the versions of key from revision rev back, stopping above
 * stop_mod (a version already held), at version 1, at the compaction point
 * (*compacted) or at max versions. */
static int walk_back(struct history *h, const char *key, size_t key_len, int64_t rev,
		     int64_t create, int64_t stop_mod, struct walk *w, bool *compacted)
{
	*compacted = false;
	while (w->n < h->cfg.max_versions && rev > stop_mod) {
		struct kv_range_req req = {.key = key, .key_len = key_len, .revision = rev};
		struct kv_range_result res;
		__atomic_add_fetch(&h->ranges, 1, __ATOMIC_RELAXED);
		int ret = kv_range(h->cfg.kv, &req, &res);
		if (ret == -ERANGE && !w->n) {
			/* compacted at or after the key's last change: the
			 * current value is still there at the latest revision */
			kv_range_result_free(&res);
			req.revision = 0;
			__atomic_add_fetch(&h->ranges, 1, __ATOMIC_RELAXED);
			ret = kv_range(h->cfg.kv, &req, &res);
			if (ret == 0 && res.n_kvs && res.kvs[0].mod_revision != rev)
				ret = -ERANGE; /* changed since: the next lookup walks again */
		}
		if (ret == -ERANGE) {
			/* reach ends at the compaction point */
			kv_range_result_free(&res);
			*compacted = true;
			return 0;
		}
		if (ret < 0)
			return ret;
		const struct kv_kv *kv = res.n_kvs ? &res.kvs[0] : NULL;
		/* absent, or another incarnation: this one's history ends */
		if (!kv || kv->create_revision != create || kv->mod_revision <= stop_mod) {
			kv_range_result_free(&res);
			return 0;
		}
		struct ver *v = make_ver(h, kv);
		int64_t next = kv->version <= 1 ? 0 : kv->mod_revision - 1;
		kv_range_result_free(&res);
		if (!v || util_grow(&w->v, &w->cap, w->n + 1, sizeof(*w->v), 16) < 0) {
			free(v ? v->text : NULL);
			free(v);
			return -ENOMEM;
		}
		w->v[w->n++] = v;
		rev = next;
	}
	return 0;
}

/* Puts the fetched versions in front of x's listing, numbers them, and
 * keeps at most max versions. h->mu held. */
static int merge(struct history *h, struct hist *x, struct walk *w)
{
	if (util_grow(&x->v, &x->cap, x->n + w->n, sizeof(*x->v), 16) < 0 ||
	    util_grow(&h->by_seq, &h->seq_cap, h->next_seq + w->n, sizeof(*h->by_seq), 64) < 0)
		return -ENOMEM;
	memmove(x->v + w->n, x->v, x->n * sizeof(*x->v));
	for (size_t i = 0; i < w->n; i++) {
		struct ver *v = w->v[i];
		v->hist = x;
		v->ino = HISTORY_INO_BASE + h->next_seq;
		h->by_seq[h->next_seq++] = v;
		x->v[i] = v;
		h->n_vers++;
	}
	x->n += w->n;
	w->n = 0;
	if (x->n > h->cfg.max_versions)
		retire_from(h, x, h->cfg.max_versions);
	return 0;
}

/* Whether a range at rev still answers (1), was compacted (0, with *compact
 * the compaction point when the backend says it), or an error. */
static int answers(struct history *h, const char *key, size_t key_len, int64_t rev,
		   int64_t *compact)
{
	struct kv_range_req req = {
		.key = key, .key_len = key_len, .revision = rev, .count_only = true};
	struct kv_range_result res;
	__atomic_add_fetch(&h->checks, 1, __ATOMIC_RELAXED);
	int ret = kv_range(h->cfg.kv, &req, &res);
	if (ret == -ERANGE && res.compact_revision > 0)
		*compact = res.compact_revision;
	kv_range_result_free(&res);
	return ret == 0 ? 1 : ret == -ERANGE ? 0 : ret;
}

/* The first listed version a compaction took: version i is retained while
 * a range at the revision before its successor's answers (the newest
 * always is, as the key's current value). reach[i] is that revision for
 * i >= 1, decreasing; reach[n-1] is known compacted. Without the compaction
 * point, a binary search (a request per halving). */
static int first_gone(struct history *h, const char *key, size_t key_len, const int64_t *reach,
		      size_t n, int64_t compact, size_t *out)
{
	size_t good = 0, bad = n - 1;
	while (bad - good > 1) {
		size_t mid = good + (bad - good) / 2;
		int ret = compact ? reach[mid] >= compact
				  : answers(h, key, key_len, reach[mid], &compact);
		if (ret < 0)
			return ret;
		if (ret)
			good = mid;
		else
			bad = mid;
	}
	*out = bad;
	return 0;
}

/* Checks x for compaction: one range at the oldest version's reach. x->walk_mu held, so the
 * listing does not change meanwhile. */
static int check(struct history *h, struct hist *x)
{
	pthread_mutex_lock(&h->mu);
	size_t n = x->n;
	int64_t *reach = n > 1 ? calloc(n, sizeof(*reach)) : NULL;
	char *key = reach ? util_memdup(x->key, x->key_len) : NULL;
	size_t key_len = x->key_len;
	for (size_t i = 1; key && i < n; i++)
		reach[i] = x->v[i - 1]->mod - 1;
	pthread_mutex_unlock(&h->mu);
	int ret = 0;
	if (n < 2)
		goto out;
	if (!key) {
		ret = -ENOMEM;
		goto out;
	}
	int64_t compact = 0;
	ret = answers(h, key, key_len, reach[n - 1], &compact);
	size_t from = n;
	if (ret == 0)
		ret = first_gone(h, key, key_len, reach, n, compact, &from);
	else if (ret == 1)
		ret = 0;
	pthread_mutex_lock(&h->mu);
	if (ret == 0 && from < n) {
		retire_from(h, x, from);
		h->compacted += n - from;
		log_notice("history of %.*s: %zu versions compacted (no range at revision %" PRId64
			   " or before answers); their files are gone",
			   (int)key_len, key, n - from, reach[from]);
	}
	if (ret == 0)
		x->checked_ms = util_now_ms();
	pthread_mutex_unlock(&h->mu);
out:
	free(reach);
	free(key);
	return ret;
}

/* The history of head, created if new, held (users) by the caller. */
static struct hist *get_hist(struct history *h, const struct history_head *head)
{
	pthread_mutex_lock(&h->mu);
	struct hist *x = find(h, head->id);
	if (!x) {
		x = calloc(1, sizeof(*x));
		if (!x)
			goto out;
		x->id = head->id;
		pthread_mutex_init(&x->walk_mu, NULL);
		struct hist **b = &h->buckets[head->id % NBUCKETS];
		x->next = *b;
		*b = x;
		h->n_hists++;
	}
	x->users++;
out:
	pthread_mutex_unlock(&h->mu);
	return x;
}

static void put_hist(struct history *h, struct hist *x)
{
	pthread_mutex_lock(&h->mu);
	x->users--;
	maybe_free(h, x);
	pthread_mutex_unlock(&h->mu);
}

/* Fetches what x lacks of head's versions. x->walk_mu held. */
static int update(struct history *h, struct hist *x, const struct history_head *head, bool *walked)
{
	pthread_mutex_lock(&h->mu);
	x->head_mtime_ns = head->mtime_ns;
	struct ver *newest = x->n ? x->v[0] : NULL;
	/* a delete and re-create starts another history */
	if (newest && (newest->create != head->create_revision || newest->mod > head->mod_revision))
		retire_from(h, x, 0), newest = NULL;
	int64_t stop = newest ? newest->mod : 0;
	char *key = NULL;
	if (!x->key || x->key_len != head->key_len || memcmp(x->key, head->key, head->key_len)) {
		key = util_memdup(head->key, head->key_len);
		if (key) {
			free(x->key);
			x->key = key;
			x->key_len = head->key_len;
		}
	}
	pthread_mutex_unlock(&h->mu);
	if (!x->key)
		return -ENOMEM;
	*walked = false;
	if (stop >= head->mod_revision)
		return 0;
	struct walk w = {0};
	bool compacted;
	int ret = walk_back(h, head->key, head->key_len, head->mod_revision, head->create_revision,
			    stop, &w, &compacted);
	pthread_mutex_lock(&h->mu);
	/* compacted before the walk reached what was held: that is older */
	if (ret == 0 && compacted && stop)
		retire_from(h, x, 0);
	if (ret == 0)
		ret = merge(h, x, &w);
	if (ret == 0 && !stop)
		x->checked_ms = util_now_ms();
	pthread_mutex_unlock(&h->mu);
	walk_free(&w);
	*walked = ret == 0 && !stop;
	return ret;
}

static bool check_due(struct history *h, struct hist *x)
{
	pthread_mutex_lock(&h->mu);
	bool due = x->n && util_now_ms() - x->checked_ms >= h->cfg.check_ms;
	pthread_mutex_unlock(&h->mu);
	return due;
}

int history_refresh(struct history *h, const struct history_head *head, bool ref)
{
	struct hist *x = get_hist(h, head);
	if (!x)
		return -ENOMEM;
	pthread_mutex_lock(&x->walk_mu);
	bool walked;
	int ret = update(h, x, head, &walked);
	if (ret == 0 && !walked && check_due(h, x))
		ret = check(h, x);
	pthread_mutex_unlock(&x->walk_mu);
	if (ret == 0 && ref) {
		pthread_mutex_lock(&h->mu);
		x->dir_nlookup++;
		pthread_mutex_unlock(&h->mu);
	}
	put_hist(h, x);
	return ret;
}

void history_dir_unref(struct history *h, uint64_t id, uint64_t n)
{
	pthread_mutex_lock(&h->mu);
	struct hist *x = find(h, id);
	if (x) {
		x->dir_nlookup = x->dir_nlookup > n ? x->dir_nlookup - n : 0;
		maybe_free(h, x);
	}
	pthread_mutex_unlock(&h->mu);
}

int history_hold(struct history *h, uint64_t id)
{
	pthread_mutex_lock(&h->mu);
	struct hist *x = find(h, id);
	if (x)
		x->users++;
	pthread_mutex_unlock(&h->mu);
	return x ? 0 : -ENOENT;
}

void history_release(struct history *h, uint64_t id)
{
	pthread_mutex_lock(&h->mu);
	struct hist *x = find(h, id);
	if (x && x->users) {
		x->users--;
		maybe_free(h, x);
	}
	pthread_mutex_unlock(&h->mu);
}

bool history_known(struct history *h, uint64_t id)
{
	pthread_mutex_lock(&h->mu);
	bool known = find(h, id) != NULL;
	pthread_mutex_unlock(&h->mu);
	return known;
}

int history_list(struct history *h, uint64_t id, struct history_ver_info **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&h->mu);
	struct hist *x = find(h, id);
	int ret = x ? 0 : -ENOENT;
	if (x && x->n) {
		*out = calloc(x->n, sizeof(**out));
		if (!*out)
			ret = -ENOMEM;
		for (size_t i = 0; *out && i < x->n; i++)
			fill_info(x->v[i], &(*out)[i]);
		if (*out)
			*n = x->n;
	}
	pthread_mutex_unlock(&h->mu);
	return ret;
}

/* The newest version shows the key's own time unless it records one. */
static void newest_time(const struct hist *x, const struct ver *v, struct history_ver_info *o)
{
	if (!o->mtime_ns && x->n && x->v[0] == v)
		o->mtime_ns = x->head_mtime_ns;
}

int history_lookup(struct history *h, uint64_t id, int64_t mod_revision, bool ref,
		   struct history_ver_info *out)
{
	pthread_mutex_lock(&h->mu);
	struct hist *x = find(h, id);
	struct ver *v = NULL;
	for (size_t i = 0; x && i < x->n && !v; i++)
		if (x->v[i]->mod == mod_revision)
			v = x->v[i];
	if (v) {
		fill_info(v, out);
		newest_time(x, v, out);
		if (ref) {
			v->nlookup++;
			x->ver_refs++;
		}
	}
	pthread_mutex_unlock(&h->mu);
	return v ? 0 : -ENOENT;
}

int history_stat(struct history *h, uint64_t ino, struct history_ver_info *out)
{
	pthread_mutex_lock(&h->mu);
	struct ver *v = ver_of(h, ino);
	bool ok = v && !v->gone;
	if (ok) {
		fill_info(v, out);
		newest_time(v->hist, v, out);
	}
	pthread_mutex_unlock(&h->mu);
	return ok ? 0 : -ENOENT;
}

void history_ver_ref(struct history *h, uint64_t ino)
{
	pthread_mutex_lock(&h->mu);
	struct ver *v = ver_of(h, ino);
	if (v) {
		v->nlookup++;
		v->hist->ver_refs++;
	}
	pthread_mutex_unlock(&h->mu);
}

void history_ver_unref(struct history *h, uint64_t ino, uint64_t n)
{
	pthread_mutex_lock(&h->mu);
	struct ver *v = ver_of(h, ino);
	if (v) {
		struct hist *x = v->hist;
		if (n > v->nlookup)
			n = v->nlookup;
		v->nlookup -= n;
		x->ver_refs -= n;
		if (v->gone && !v->nlookup) {
			for (size_t i = 0; i < x->n_gone; i++) {
				if (x->gone[i] == v) {
					x->gone[i] = x->gone[--x->n_gone];
					break;
				}
			}
			ver_free(h, v);
		}
		maybe_free(h, x);
	}
	pthread_mutex_unlock(&h->mu);
}

int history_check(struct history *h, uint64_t ino)
{
	pthread_mutex_lock(&h->mu);
	struct ver *v = ver_of(h, ino);
	struct hist *x = v && !v->gone ? v->hist : NULL;
	if (x)
		x->users++;
	pthread_mutex_unlock(&h->mu);
	if (!x)
		return -ENOENT;
	pthread_mutex_lock(&x->walk_mu);
	int ret = check_due(h, x) ? check(h, x) : 0;
	pthread_mutex_unlock(&x->walk_mu);
	pthread_mutex_lock(&h->mu);
	v = ver_of(h, ino);
	if (ret == 0 && (!v || v->gone))
		ret = -ENOENT;
	x->users--;
	maybe_free(h, x);
	pthread_mutex_unlock(&h->mu);
	return ret;
}

ssize_t history_read(struct history *h, uint64_t ino, char *buf, size_t size, off_t off)
{
	pthread_mutex_lock(&h->mu);
	struct ver *v = ver_of(h, ino);
	ssize_t ret;
	if (!v || v->gone) {
		ret = -ENOENT;
	} else if (v->unreadable) {
		ret = -EIO;
	} else {
		size_t cnt = (size_t)off < v->len ? v->len - off : 0;
		if (cnt > size)
			cnt = size;
		if (cnt)
			memcpy(buf, v->text + off, cnt);
		ret = (ssize_t)cnt;
	}
	pthread_mutex_unlock(&h->mu);
	return ret;
}

int history_key(struct history *h, uint64_t ino, char **key, size_t *len)
{
	pthread_mutex_lock(&h->mu);
	struct ver *v = ver_of(h, ino);
	int ret = -ENOENT;
	if (v && !v->gone) {
		*key = util_memdup(v->hist->key, v->hist->key_len);
		*len = v->hist->key_len;
		ret = *key ? 0 : -ENOMEM;
	}
	pthread_mutex_unlock(&h->mu);
	return ret;
}

void history_get_stats(struct history *h, struct history_stats *st)
{
	pthread_mutex_lock(&h->mu);
	st->ranges = __atomic_load_n(&h->ranges, __ATOMIC_RELAXED);
	st->checks = __atomic_load_n(&h->checks, __ATOMIC_RELAXED);
	st->compacted = h->compacted;
	st->histories = h->n_hists;
	st->versions = h->n_vers;
	pthread_mutex_unlock(&h->mu);
}
