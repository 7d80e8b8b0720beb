/* mvcc.c: in-memory MVCC keyspace with etcd's semantics (see mvcc.h).
 *
 * Layout: a skip list of keys, each with its history (array of versions in
 * mod_revision order), plus a change log (every retained version at or above
 * the compaction point, in (revision, sub) order) that watches replay from.
 * A version is one heap block holding its value, shared by the key history
 * and the change log, so both stay cheap to keep in sync.
 */
#include "mvcc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "store.pb-c.h"
#include "core/util.h"

#define MAX_LEVEL 24
#define SNAPSHOT_FORMAT 2
/* Snapshots from before leases: their key leases name no lease and are dropped. */
#define SNAPSHOT_FORMAT_NO_LEASES 1

/* One version of one key. version == 0 marks a tombstone (deletion). */
struct rev {
	struct knode *key;
	int64_t main; /* mod_revision */
	int32_t sub;  /* order inside the revision */
	int64_t create;
	int64_t version;
	int64_t lease;
	size_t value_len;
	char value[]; /* value_len bytes + NUL */
};

struct lease;

struct knode {
	char *key;
	size_t key_len;
	struct rev **revs; /* ascending main */
	size_t n_revs, cap_revs;
	struct lease *lease; /* the lease the live key is attached to, or NULL */
	size_t lease_slot;   /* its index in lease->keys */
	int level;
	struct knode *next[];
};

/* A granted lease. id and ttl are replicated; keys is derived from the keys'
 * latest versions; deadline and retry_at are this node's own (see mvcc.h). */
struct lease {
	int64_t id;
	int64_t ttl;
	int64_t deadline; /* monotonic ms; atomic: renewed under the shared lock */
	int64_t retry_at; /* loop thread only: no new revoke proposal before */
	struct knode **keys;
	size_t n_keys, cap_keys;
};

struct mvcc {
	struct knode *head;
	int level;
	size_t n_keys;
	int64_t rev;
	int64_t compact_rev;
	uint64_t applied_index;
	/* change log: log[0..log_len) in (main, sub) order */
	struct rev **log;
	size_t log_len, log_cap;
	uint64_t rng;
	struct lease **leases; /* ascending id */
	size_t n_leases, cap_leases;
	/* No lease can expire before this (monotonic ms): deadlines only move later, except
	 * for new leases, which lower it. Loop thread only; spares the leader a scan of the
	 * whole table every tick. */
	int64_t next_expiry_check;
};

/* ---- keys and ranges ---- */

static bool end_is_all(const void *end, size_t end_len)
{
	return end_len == 1 && ((const char *)end)[0] == 0;
}

/* An end at or before key selects nothing (etcd answers such a range with no keys). */
static bool range_empty(const void *key, size_t key_len, const void *end, size_t end_len)
{
	return end_len && !end_is_all(end, end_len) && kv_key_cmp(end, end_len, key, key_len) <= 0;
}

/* Is k inside [key, end) in etcd's conventions (empty end = key only)? Only
 * called for k >= key, so the lower bound is not re-checked. */
static bool below_end(const void *k, size_t klen, const void *key, size_t key_len, const void *end,
		      size_t end_len)
{
	if (end_len == 0)
		return kv_key_cmp(k, klen, key, key_len) == 0;
	if (end_is_all(end, end_len))
		return true;
	return kv_key_cmp(k, klen, end, end_len) < 0;
}

/* ---- skip list ---- */

static struct knode *knode_new(int level, const void *key, size_t key_len)
{
	struct knode *n = calloc(1, sizeof(*n) + (size_t)level * sizeof(n->next[0]));
	if (!n)
		return NULL;
	n->level = level;
	if (key) {
		n->key = malloc(key_len + 1);
		if (!n->key) {
			free(n);
			return NULL;
		}
		memcpy(n->key, key, key_len);
		n->key[key_len] = 0;
		n->key_len = key_len;
	}
	return n;
}

static void rev_free(struct rev *r)
{
	free(r);
}

static void knode_free(struct knode *n)
{
	for (size_t i = 0; i < n->n_revs; i++)
		rev_free(n->revs[i]);
	free(n->revs);
	free(n->key);
	free(n);
}

static int random_level(struct mvcc *m)
{
	/* xorshift64: deterministic, which is fine (no adversarial input). */
	uint64_t x = m->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	m->rng = x;
	int level = 1;
	while (level < MAX_LEVEL && (x & 3) == 0) {
		level++;
		x >>= 2;
	}
	return level;
}

/* First node with key >= k (NULL if none). Fills update[] with the last node
 * before it at each level when update is non-NULL. */
static struct knode *lower_bound(const struct mvcc *m, const void *k, size_t klen,
				 struct knode **update)
{
	struct knode *x = m->head;
	for (int l = m->level - 1; l >= 0; l--) {
		while (x->next[l] && kv_key_cmp(x->next[l]->key, x->next[l]->key_len, k, klen) < 0)
			x = x->next[l];
		if (update)
			update[l] = x;
	}
	return x->next[0];
}

static struct knode *find_or_insert(struct mvcc *m, const void *k, size_t klen)
{
	struct knode *update[MAX_LEVEL];
	struct knode *n = lower_bound(m, k, klen, update);
	if (n && kv_key_cmp(n->key, n->key_len, k, klen) == 0)
		return n;
	int level = random_level(m);
	n = knode_new(level, k, klen);
	if (!n)
		return NULL;
	if (level > m->level) {
		for (int l = m->level; l < level; l++)
			update[l] = m->head;
		m->level = level;
	}
	for (int l = 0; l < level; l++) {
		n->next[l] = update[l]->next[l];
		update[l]->next[l] = n;
	}
	m->n_keys++;
	return n;
}

/* ---- lifecycle ---- */

struct mvcc *mvcc_new(void)
{
	struct mvcc *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->head = knode_new(MAX_LEVEL, NULL, 0);
	if (!m->head) {
		free(m);
		return NULL;
	}
	m->level = 1;
	/* Like etcd, an empty store is at revision 1; the first write is 2. */
	m->rev = 1;
	m->rng = 0x9e3779b97f4a7c15ull;
	return m;
}

void mvcc_free(struct mvcc *m)
{
	if (!m)
		return;
	struct knode *n = m->head->next[0];
	while (n) {
		struct knode *next = n->next[0];
		knode_free(n);
		n = next;
	}
	free(m->head);
	free(m->log);
	for (size_t i = 0; i < m->n_leases; i++) {
		free(m->leases[i]->keys);
		free(m->leases[i]);
	}
	free(m->leases);
	free(m);
}

int64_t mvcc_revision(const struct mvcc *m)
{
	return m->rev;
}

int64_t mvcc_compact_revision(const struct mvcc *m)
{
	return m->compact_rev;
}

size_t mvcc_key_count(const struct mvcc *m)
{
	return m->n_keys;
}

uint64_t mvcc_applied_index(const struct mvcc *m)
{
	return m->applied_index;
}

void mvcc_set_applied_index(struct mvcc *m, uint64_t index)
{
	m->applied_index = index;
}

/* ---- versions ---- */

/* Newest version of n with main <= rev, or NULL. */
static struct rev *rev_at(const struct knode *n, int64_t rev)
{
	size_t lo = 0, hi = n->n_revs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (n->revs[mid]->main <= rev)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? n->revs[lo - 1] : NULL;
}

static struct rev *latest_live(const struct knode *n)
{
	if (!n->n_revs)
		return NULL;
	struct rev *r = n->revs[n->n_revs - 1];
	return r->version ? r : NULL;
}

static int kv_from_rev(struct kv_kv *kv, const struct rev *r, bool keys_only)
{
	memset(kv, 0, sizeof(*kv));
	kv->key = util_memdup(r->key->key, r->key->key_len);
	if (!kv->key)
		return -ENOMEM;
	kv->key_len = r->key->key_len;
	if (!keys_only) {
		kv->value = util_memdup(r->value, r->value_len);
		if (!kv->value) {
			kv_kv_free(kv);
			return -ENOMEM;
		}
		kv->value_len = r->value_len;
	}
	kv->create_revision = r->create;
	kv->mod_revision = r->main;
	kv->version = r->version;
	kv->lease = r->lease;
	return 0;
}

static int log_append(struct mvcc *m, struct rev *r)
{
	if (util_grow(&m->log, &m->log_cap, m->log_len + 1, sizeof(*m->log), 1024) < 0)
		return -ENOMEM;
	m->log[m->log_len++] = r;
	return 0;
}

/* A key's history starts small: most keys have a few revisions. */
static int hist_append(struct knode *n, struct rev *r)
{
	if (util_grow(&n->revs, &n->cap_revs, n->n_revs + 1, sizeof(*n->revs), 2) < 0)
		return -ENOMEM;
	n->revs[n->n_revs++] = r;
	return 0;
}

static struct rev *rev_new(struct knode *n, const void *value, size_t value_len)
{
	struct rev *r = calloc(1, sizeof(*r) + value_len + 1);
	if (!r)
		return NULL;
	r->key = n;
	r->value_len = value_len;
	if (value_len)
		memcpy(r->value, value, value_len);
	return r;
}

/* Records a new version in both the key history and the change log. */
static int add_rev(struct mvcc *m, struct knode *n, struct rev *r)
{
	if (hist_append(n, r) < 0)
		return -ENOMEM;
	if (log_append(m, r) < 0) {
		n->n_revs--;
		return -ENOMEM;
	}
	return 0;
}

/* ---- lease table ---- */

/* Index of the first lease with id >= id. */
static size_t lease_lower(const struct mvcc *m, int64_t id)
{
	size_t lo = 0, hi = m->n_leases;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->leases[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct lease *lease_find(const struct mvcc *m, int64_t id)
{
	size_t i = lease_lower(m, id);
	return i < m->n_leases && m->leases[i]->id == id ? m->leases[i] : NULL;
}

static int lease_insert(struct mvcc *m, int64_t id, int64_t ttl, int64_t now_ms)
{
	struct lease *l = calloc(1, sizeof(*l));
	if (!l ||
	    util_grow(&m->leases, &m->cap_leases, m->n_leases + 1, sizeof(*m->leases), 16) < 0) {
		free(l);
		return -ENOMEM;
	}
	l->id = id;
	l->ttl = ttl;
	l->deadline = now_ms + ttl * 1000;
	if (l->deadline < m->next_expiry_check)
		m->next_expiry_check = l->deadline;
	size_t i = lease_lower(m, id);
	memmove(&m->leases[i + 1], &m->leases[i], (m->n_leases - i) * sizeof(*m->leases));
	m->leases[i] = l;
	m->n_leases++;
	return 0;
}

static void detach(struct knode *n)
{
	struct lease *l = n->lease;
	if (!l)
		return;
	struct knode *last = l->keys[--l->n_keys];
	l->keys[n->lease_slot] = last;
	last->lease_slot = n->lease_slot;
	n->lease = NULL;
	n->lease_slot = 0;
}

/* Moves n to lease l (NULL: to none). */
static int attach(struct knode *n, struct lease *l)
{
	if (n->lease == l)
		return 0;
	if (l && util_grow(&l->keys, &l->cap_keys, l->n_keys + 1, sizeof(*l->keys), 4) < 0)
		return -ENOMEM;
	detach(n);
	if (!l)
		return 0;
	n->lease = l;
	n->lease_slot = l->n_keys;
	l->keys[l->n_keys++] = n;
	return 0;
}

/* ---- validation ---- */

int mvcc_range_validate(const struct kv_range_req *req)
{
	if (!req->key_len)
		return -EINVAL;
	if (req->sort_order > KV_SORT_DESCEND || req->sort_target > KV_SORT_VALUE)
		return -EINVAL;
	if (req->limit < 0)
		return -EINVAL;
	return 0;
}

struct interval {
	const char *key;
	size_t key_len;
	const char *end;
	size_t end_len;
};

/* Does point p fall inside delete interval d? */
static bool point_in(const struct interval *p, const struct interval *d)
{
	return kv_key_in_range(p->key, p->key_len, d->key, d->key_len, d->end, d->end_len);
}

static int validate_ops(const struct kv_op *ops, size_t n, size_t max_ops)
{
	if (n > max_ops)
		return -E2BIG;
	struct interval *puts = NULL, *dels = NULL;
	size_t np = 0, nd = 0;
	int ret = 0;
	if (n) {
		puts = calloc(n, sizeof(*puts));
		dels = calloc(n, sizeof(*dels));
		if (!puts || !dels) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct kv_op *op = &ops[i];
		if (!op->key_len) {
			ret = -EINVAL;
			goto out;
		}
		switch (op->type) {
		case KV_OP_RANGE:
			break;
		case KV_OP_PUT:
			if (op->ignore_lease && op->lease) {
				ret = -EINVAL; /* etcd: "lease is provided" */
				goto out;
			}
			puts[np++] = (struct interval){op->key, op->key_len, NULL, 0};
			break;
		case KV_OP_DELETE:
			dels[nd++] = (struct interval){op->key, op->key_len, op->range_end,
						       op->range_end_len};
			break;
		default:
			ret = -EINVAL;
			goto out;
		}
	}
	/* etcd rejects a branch that puts one key twice, or puts a key that a
	 * delete of the same branch covers ("duplicate key given in txn"). */
	for (size_t i = 0; i < np; i++) {
		for (size_t j = i + 1; j < np; j++)
			if (kv_key_cmp(puts[i].key, puts[i].key_len, puts[j].key,
				       puts[j].key_len) == 0) {
				ret = -EINVAL;
				goto out;
			}
		for (size_t j = 0; j < nd; j++)
			if (point_in(&puts[i], &dels[j])) {
				ret = -EINVAL;
				goto out;
			}
	}
out:
	free(puts);
	free(dels);
	return ret;
}

int mvcc_txn_validate(const struct kv_txn *txn, size_t max_ops)
{
	if (txn->n_compare > max_ops)
		return -E2BIG;
	for (size_t i = 0; i < txn->n_compare; i++) {
		const struct kv_compare *c = &txn->compare[i];
		if (!c->key_len || c->target > KV_CMP_LEASE || c->result > KV_CMP_NOT_EQUAL)
			return -EINVAL;
	}
	int ret = validate_ops(txn->success, txn->n_success, max_ops);
	if (ret < 0)
		return ret;
	return validate_ops(txn->failure, txn->n_failure, max_ops);
}

bool mvcc_txn_readonly(const struct kv_txn *txn)
{
	for (size_t i = 0; i < txn->n_success; i++)
		if (txn->success[i].type != KV_OP_RANGE)
			return false;
	for (size_t i = 0; i < txn->n_failure; i++)
		if (txn->failure[i].type != KV_OP_RANGE)
			return false;
	return true;
}

/* ---- range ---- */

struct sort_ctx {
	enum kv_sort_target target;
};

/* r as a kv_kv that borrows its key and value, for the kv.h helpers that read one. */
static struct kv_kv rev_view(const struct rev *r)
{
	return (struct kv_kv){
		.key = r->key->key,
		.key_len = r->key->key_len,
		.value = (char *)r->value,
		.value_len = r->value_len,
		.create_revision = r->create,
		.mod_revision = r->main,
		.version = r->version,
		.lease = r->lease,
	};
}

static int cmp_asc(const void *pa, const void *pb, void *arg)
{
	const struct sort_ctx *c = arg;
	struct kv_kv a = rev_view(*(struct rev *const *)pa), b = rev_view(*(struct rev *const *)pb);
	return kv_sort_cmp(&a, &b, c->target);
}

static int cmp_desc(const void *pa, const void *pb, void *arg)
{
	return -cmp_asc(pa, pb, arg);
}

/* Collects the live versions at rev of the keys in range. With want_all
 * false, stops storing after limit entries (still counting). */
static int collect(const struct mvcc *m, const void *key, size_t key_len, const void *end,
		   size_t end_len, int64_t rev, bool store, size_t limit, struct rev ***out,
		   size_t *n_out, int64_t *count)
{
	struct rev **arr = NULL;
	size_t n = 0, cap = 0;
	int64_t cnt = 0;
	if (range_empty(key, key_len, end, end_len))
		goto done; /* empty interval */
	for (struct knode *x = lower_bound(m, key, key_len, NULL); x; x = x->next[0]) {
		if (!below_end(x->key, x->key_len, key, key_len, end, end_len))
			break;
		struct rev *r = rev_at(x, rev);
		if (!r || !r->version)
			continue;
		cnt++;
		if (!store || (limit && n >= limit))
			continue;
		if (util_grow(&arr, &cap, n + 1, sizeof(*arr), 16) < 0) {
			free(arr);
			return -ENOMEM;
		}
		arr[n++] = r;
	}
done:
	*out = arr;
	*n_out = n;
	*count = cnt;
	return 0;
}

static int fill_kvs(struct kv_range_result *res, struct rev **revs, size_t n, bool keys_only)
{
	res->kvs = n ? calloc(n, sizeof(*res->kvs)) : NULL;
	if (n && !res->kvs)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (kv_from_rev(&res->kvs[i], revs[i], keys_only) < 0) {
			res->n_kvs = i;
			kv_range_result_free(res);
			return -ENOMEM;
		}
	}
	res->n_kvs = n;
	return 0;
}

int mvcc_range(const struct mvcc *m, const struct kv_range_req *req, struct kv_range_result *res)
{
	memset(res, 0, sizeof(*res));
	res->revision = m->rev;
	int ret = mvcc_range_validate(req);
	if (ret < 0)
		return ret;
	int64_t rev = req->revision > 0 ? req->revision : m->rev;
	if (rev > m->rev)
		return -ENOENT;
	if (rev < m->compact_rev) {
		res->compact_revision = m->compact_rev;
		return -ERANGE;
	}
	/* Like etcd: an explicit sort other than ascending key order needs the
	 * whole range before the limit applies; key order comes for free. */
	bool resort = req->sort_order == KV_SORT_DESCEND ||
		      (req->sort_order == KV_SORT_ASCEND && req->sort_target != KV_SORT_KEY);
	size_t limit = (size_t)req->limit;
	struct rev **revs;
	size_t n;
	int64_t count;
	ret = collect(m, req->key, req->key_len, req->range_end, req->range_end_len, rev,
		      !req->count_only, resort ? 0 : limit, &revs, &n, &count);
	if (ret < 0)
		return ret;
	if (resort && n > 1) {
		struct sort_ctx c = {req->sort_target};
		qsort_r(revs, n, sizeof(*revs),
			req->sort_order == KV_SORT_DESCEND ? cmp_desc : cmp_asc, &c);
	}
	if (limit && n > limit)
		n = limit;
	res->count = count;
	res->more = !req->count_only && limit && (size_t)count > limit;
	ret = fill_kvs(res, revs, n, req->keys_only);
	free(revs);
	return ret;
}

/* ---- txn ---- */

/* etcd's applyCompare: every key of the range must satisfy the compare; an
 * empty range compares the zero key-value, except VALUE which then fails. */
static bool compare_holds(const struct mvcc *m, const struct kv_compare *c)
{
	const void *key = c->key, *end = c->range_end;
	size_t key_len = c->key_len, end_len = c->range_end_len;
	bool any = false;
	if (!range_empty(key, key_len, end, end_len)) {
		for (struct knode *x = lower_bound(m, key, key_len, NULL); x; x = x->next[0]) {
			if (!below_end(x->key, x->key_len, key, key_len, end, end_len))
				break;
			struct rev *r = latest_live(x);
			if (!r)
				continue;
			any = true;
			struct kv_kv kv = rev_view(r);
			if (!kv_compare_kv(c, &kv))
				return false;
		}
	}
	return any || kv_compare_empty(c);
}

struct txn_state {
	struct mvcc *m;
	int64_t cur; /* revision of this txn's writes */
	int32_t sub;
	bool changed;
	bool legacy; /* entry from before leases: unknown leases become 0 */
};

static void begin_write(struct txn_state *t)
{
	if (!t->changed) {
		t->changed = true;
		t->m->rev = t->cur;
	}
}

static int push_kv(struct kv_range_result *rr, const struct rev *r, bool keys_only)
{
	struct kv_kv *nk = realloc(rr->kvs, (rr->n_kvs + 1) * sizeof(*nk));
	if (!nk)
		return -ENOMEM;
	rr->kvs = nk;
	if (kv_from_rev(&rr->kvs[rr->n_kvs], r, keys_only) < 0)
		return -ENOMEM;
	rr->n_kvs++;
	return 0;
}

static int do_put(struct txn_state *t, const struct kv_op *op, struct kv_op_result * or)
{
	struct mvcc *m = t->m;
	struct knode *n = find_or_insert(m, op->key, op->key_len);
	if (!n)
		return -ENOMEM;
	struct rev *prev = latest_live(n);
	struct rev *r = rev_new(n, op->value, op->value_len);
	if (!r)
		return -ENOMEM;
	if (or &&op->prev_kv && prev && push_kv(& or->range, prev, false) < 0) {
		rev_free(r);
		return -ENOMEM;
	}
	begin_write(t);
	r->main = t->cur;
	r->sub = t->sub++;
	r->create = prev ? prev->create : t->cur;
	r->version = prev ? prev->version + 1 : 1;
	r->lease = op->ignore_lease ? (prev ? prev->lease : 0) : op->lease;
	struct lease *l = r->lease ? lease_find(m, r->lease) : NULL;
	if (r->lease && !l && t->legacy)
		r->lease = 0;
	/* Room for the attachment first: after add_rev nothing may fail. */
	if (attach(n, l) < 0 || add_rev(m, n, r) < 0) {
		rev_free(r);
		return -ENOMEM;
	}
	return 0;
}

static int do_delete(struct txn_state *t, const struct kv_op *op, struct kv_op_result * or)
{
	struct mvcc *m = t->m;
	const void *key = op->key, *end = op->range_end;
	size_t key_len = op->key_len, end_len = op->range_end_len;
	if (range_empty(key, key_len, end, end_len))
		return 0;
	for (struct knode *x = lower_bound(m, key, key_len, NULL); x; x = x->next[0]) {
		if (!below_end(x->key, x->key_len, key, key_len, end, end_len))
			break;
		struct rev *prev = latest_live(x);
		if (!prev)
			continue;
		if (or &&op->prev_kv && push_kv(& or->range, prev, false) < 0)
			return -ENOMEM;
		struct rev *r = rev_new(x, NULL, 0);
		if (!r)
			return -ENOMEM;
		begin_write(t);
		r->main = t->cur;
		r->sub = t->sub++;
		if (add_rev(m, x, r) < 0) {
			rev_free(r);
			return -ENOMEM;
		}
		detach(x);
		if (or)
			or->deleted++;
	}
	return 0;
}

static int do_range_op(const struct mvcc *m, const struct kv_op *op, struct kv_op_result * or)
{
	if (! or)
		return 0;
	struct rev **revs;
	size_t n;
	int64_t count;
	int ret = collect(m, op->key, op->key_len, op->range_end, op->range_end_len, m->rev, true,
			  0, &revs, &n, &count);
	if (ret < 0)
		return ret;
	or->range.count = count;
	or->range.revision = m->rev;
	ret = fill_kvs(& or->range, revs, n, op->keys_only);
	free(revs);
	return ret;
}

/* etcd checks puts with ignore_lease against the state before the txn: the
 * key must exist, or the whole txn fails ("key not found"). */
static int check_ignore_lease(const struct mvcc *m, const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (ops[i].type != KV_OP_PUT || !ops[i].ignore_lease)
			continue;
		struct knode *x = lower_bound(m, ops[i].key, ops[i].key_len, NULL);
		if (!x || kv_key_cmp(x->key, x->key_len, ops[i].key, ops[i].key_len) != 0 ||
		    !latest_live(x))
			return -ENOENT;
	}
	return 0;
}

/* etcd fails a txn whose executed branch puts with a lease that does not
 * exist ("requested lease not found"), before anything is written. */
static int check_leases(const struct mvcc *m, const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ops[i].type == KV_OP_PUT && ops[i].lease && !lease_find(m, ops[i].lease))
			return -ENOENT;
	return 0;
}

static int run_txn(struct mvcc *m, const struct kv_txn *txn, bool legacy, struct kv_txn_result *res)
{
	bool ok = true;
	for (size_t i = 0; i < txn->n_compare && ok; i++)
		ok = compare_holds(m, &txn->compare[i]);
	const struct kv_op *ops = ok ? txn->success : txn->failure;
	size_t n_ops = ok ? txn->n_success : txn->n_failure;
	int ret = check_ignore_lease(m, ops, n_ops);
	if (ret == 0 && !legacy)
		ret = check_leases(m, ops, n_ops);
	if (ret < 0)
		return ret;
	if (res) {
		res->succeeded = ok;
		if (n_ops) {
			res->results = calloc(n_ops, sizeof(*res->results));
			if (!res->results)
				return -ENOMEM;
			res->n_results = n_ops;
		}
	}
	struct txn_state t = {.m = m, .cur = m->rev + 1, .legacy = legacy};
	for (size_t i = 0; i < n_ops; i++) {
		struct kv_op_result * or = res ? &res->results[i] : NULL;
		if (or)
			or->type = ops[i].type;
		switch (ops[i].type) {
		case KV_OP_PUT:
			ret = do_put(&t, &ops[i], or);
			break;
		case KV_OP_DELETE:
			ret = do_delete(&t, &ops[i], or);
			break;
		default:
			ret = do_range_op(m, &ops[i], or);
			break;
		}
		if (ret < 0)
			return ret;
	}
	if (res) {
		res->revision = m->rev;
		for (size_t i = 0; i < res->n_results; i++)
			res->results[i].range.revision = m->rev;
	}
	return 0;
}

static int txn_common(struct mvcc *m, const struct kv_txn *txn, bool legacy,
		      struct kv_txn_result *res)
{
	if (res)
		memset(res, 0, sizeof(*res));
	int ret = run_txn(m, txn, legacy, res);
	if (ret < 0 && res)
		kv_txn_result_free(res);
	return ret;
}

int mvcc_txn(struct mvcc *m, const struct kv_txn *txn, struct kv_txn_result *res)
{
	return txn_common(m, txn, false, res);
}

int mvcc_txn_legacy(struct mvcc *m, const struct kv_txn *txn, struct kv_txn_result *res)
{
	return txn_common(m, txn, true, res);
}

int mvcc_txn_readonly_eval(const struct mvcc *m, const struct kv_txn *txn,
			   struct kv_txn_result *res)
{
	if (!mvcc_txn_readonly(txn))
		return -EINVAL;
	/* A read-only txn never writes, so run_txn leaves m untouched. */
	return mvcc_txn((struct mvcc *)m, txn, res);
}

/* ---- compaction ---- */

int mvcc_compact(struct mvcc *m, int64_t rev)
{
	if (rev <= m->compact_rev)
		return -ERANGE;
	if (rev > m->rev)
		return -ENOENT;
	/* The change log keeps what a watch from rev can still see: everything
	 * after rev, and the surviving (non-tombstone) versions at rev. Filter it
	 * before any version is freed. */
	size_t w = 0;
	for (size_t i = 0; i < m->log_len; i++) {
		struct rev *r = m->log[i];
		if (r->main > rev || (r->main == rev && r->version))
			m->log[w++] = r;
	}
	m->log_len = w;
	/* Walk every key once, dropping dead history and relinking the skip
	 * list around keys that vanish entirely. */
	struct knode *update[MAX_LEVEL];
	for (int l = 0; l < MAX_LEVEL; l++)
		update[l] = m->head;
	struct knode *x = m->head->next[0];
	while (x) {
		struct knode *next = x->next[0];
		size_t keep_from = 0;
		size_t lo = 0, hi = x->n_revs;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (x->revs[mid]->main <= rev)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo) {
			/* revs[lo-1] is the newest version at or below rev. */
			keep_from = x->revs[lo - 1]->version ? lo - 1 : lo;
		}
		if (keep_from) {
			for (size_t i = 0; i < keep_from; i++)
				rev_free(x->revs[i]);
			memmove(x->revs, x->revs + keep_from,
				(x->n_revs - keep_from) * sizeof(x->revs[0]));
			x->n_revs -= keep_from;
		}
		if (!x->n_revs) {
			for (int l = 0; l < x->level; l++)
				update[l]->next[l] = x->next[l];
			knode_free(x);
			m->n_keys--;
		} else {
			for (int l = 0; l < x->level; l++)
				update[l] = x;
		}
		x = next;
	}
	while (m->level > 1 && !m->head->next[m->level - 1])
		m->level--;
	m->compact_rev = rev;
	return 0;
}

/* ---- leases ---- */

static int64_t load_deadline(const struct lease *l)
{
	return __atomic_load_n(&l->deadline, __ATOMIC_RELAXED);
}

static void store_deadline(struct lease *l, int64_t ms)
{
	__atomic_store_n(&l->deadline, ms, __ATOMIC_RELAXED);
}

/* splitmix64: spreads consecutive raft indexes over the id space. */
static int64_t id_from_seed(uint64_t seed)
{
	uint64_t z = seed + 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (int64_t)(z & INT64_MAX);
}

int mvcc_lease_grant(struct mvcc *m, int64_t id, int64_t ttl, uint64_t seed, int64_t now_ms,
		     int64_t *out_id)
{
	if (ttl <= 0)
		return -EINVAL;
	if (id == 0) {
		/* Deterministic, so every node picks the same one. */
		id = id_from_seed(seed);
		while (id == 0 || lease_find(m, id))
			id = id == INT64_MAX ? 1 : id + 1;
	} else if (lease_find(m, id)) {
		return -EEXIST;
	}
	int ret = lease_insert(m, id, ttl, now_ms);
	if (ret == 0 && out_id)
		*out_id = id;
	return ret;
}

static int cmp_knode_key(const void *pa, const void *pb)
{
	const struct knode *a = *(struct knode *const *)pa, *b = *(struct knode *const *)pb;
	return kv_key_cmp(a->key, a->key_len, b->key, b->key_len);
}

/* The lease's keys in key order (etcd revokes in that order), malloc'd. */
static struct knode **sorted_keys(const struct lease *l)
{
	struct knode **ks = malloc((l->n_keys ? l->n_keys : 1) * sizeof(*ks));
	if (!ks)
		return NULL;
	if (l->n_keys) /* keys is NULL for a lease without keys */
		memcpy(ks, l->keys, l->n_keys * sizeof(*ks));
	qsort(ks, l->n_keys, sizeof(*ks), cmp_knode_key);
	return ks;
}

int mvcc_lease_revoke(struct mvcc *m, int64_t id, int64_t *revision)
{
	size_t i = lease_lower(m, id);
	if (i >= m->n_leases || m->leases[i]->id != id)
		return -ENOENT;
	struct lease *l = m->leases[i];
	struct knode **ks = sorted_keys(l);
	if (!ks)
		return -ENOMEM;
	/* Every tombstone first, so that the lease goes only once all of them
	 * are in: one revision for all its keys. */
	struct txn_state t = {.m = m, .cur = m->rev + 1};
	int ret = 0;
	for (size_t k = 0; k < l->n_keys; k++) {
		struct rev *r = rev_new(ks[k], NULL, 0);
		if (!r) {
			ret = -ENOMEM;
			goto out;
		}
		begin_write(&t);
		r->main = t.cur;
		r->sub = t.sub++;
		if (add_rev(m, ks[k], r) < 0) {
			rev_free(r);
			ret = -ENOMEM;
			goto out;
		}
	}
	for (size_t k = 0; k < l->n_keys; k++)
		ks[k]->lease = NULL;
	memmove(&m->leases[i], &m->leases[i + 1], (m->n_leases - i - 1) * sizeof(*m->leases));
	m->n_leases--;
	free(l->keys);
	free(l);
	if (revision)
		*revision = m->rev;
out:
	free(ks);
	return ret;
}

int mvcc_lease_renew(const struct mvcc *m, int64_t id, int64_t now_ms, struct kv_lease *out)
{
	struct lease *l = lease_find(m, id);
	if (!l || load_deadline(l) <= now_ms)
		return -ENOENT;
	store_deadline(l, now_ms + l->ttl * 1000);
	*out = (struct kv_lease){.id = id, .ttl = l->ttl, .granted_ttl = l->ttl};
	return 0;
}

static int lease_keys(const struct lease *l, struct kv_range_result *keys)
{
	struct knode **ks = sorted_keys(l);
	if (!ks)
		return -ENOMEM;
	int ret = 0;
	if (l->n_keys) {
		keys->kvs = calloc(l->n_keys, sizeof(*keys->kvs));
		if (!keys->kvs) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (size_t k = 0; k < l->n_keys; k++) {
		ret = kv_from_rev(&keys->kvs[k], ks[k]->revs[ks[k]->n_revs - 1], true);
		if (ret < 0) {
			kv_range_result_free(keys);
			goto out;
		}
		keys->n_kvs = k + 1;
	}
	keys->count = (int64_t)l->n_keys;
out:
	free(ks);
	return ret;
}

int mvcc_lease_get(const struct mvcc *m, int64_t id, int64_t now_ms, struct kv_lease *out,
		   struct kv_range_result *keys)
{
	if (keys)
		memset(keys, 0, sizeof(*keys));
	struct lease *l = lease_find(m, id);
	int64_t left = l ? load_deadline(l) - now_ms : 0;
	if (!l || left <= 0)
		return -ENOENT;
	/* etcd truncates the remaining time to whole seconds. */
	*out = (struct kv_lease){.id = id, .ttl = left / 1000, .granted_ttl = l->ttl};
	if (!keys)
		return 0;
	keys->revision = m->rev;
	return lease_keys(l, keys);
}

int mvcc_lease_list(const struct mvcc *m, int64_t **ids, size_t *n)
{
	*ids = NULL;
	*n = 0;
	if (!m->n_leases)
		return 0;
	int64_t *a = malloc(m->n_leases * sizeof(*a));
	if (!a)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_leases; i++)
		a[i] = m->leases[i]->id;
	*ids = a;
	*n = m->n_leases;
	return 0;
}

size_t mvcc_lease_count(const struct mvcc *m)
{
	return m->n_leases;
}

void mvcc_lease_promote(struct mvcc *m, int64_t now_ms)
{
	for (size_t i = 0; i < m->n_leases; i++) {
		store_deadline(m->leases[i], now_ms + m->leases[i]->ttl * 1000);
		m->leases[i]->retry_at = 0;
	}
	m->next_expiry_check = 0;
}

size_t mvcc_lease_expired(struct mvcc *m, int64_t now_ms, int64_t retry_ms, int64_t *ids,
			  size_t max)
{
	if (now_ms < m->next_expiry_check)
		return 0;
	size_t n = 0;
	int64_t next = INT64_MAX;
	for (size_t i = 0; i < m->n_leases; i++) {
		struct lease *l = m->leases[i];
		int64_t deadline = load_deadline(l);
		if (deadline > now_ms || l->retry_at > now_ms) {
			int64_t due = deadline > now_ms ? deadline : l->retry_at;
			next = due < next ? due : next;
			continue;
		}
		if (n == max) {
			next = now_ms; /* more to revoke: look again next time */
			break;
		}
		l->retry_at = now_ms + retry_ms;
		next = l->retry_at < next ? l->retry_at : next;
		ids[n++] = l->id;
	}
	m->next_expiry_check = next;
	return n;
}

/* ---- watch support ---- */

void mvcc_events_free(struct kv_event *evs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kv_kv_free(&evs[i].kv);
	free(evs);
}

/* Index of the first change-log entry with main >= rev. */
static size_t log_lower(const struct mvcc *m, int64_t rev)
{
	size_t lo = 0, hi = m->log_len;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->log[mid]->main < rev)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int mvcc_events(const struct mvcc *m, const void *key, size_t key_len, const void *range_end,
		size_t range_end_len, int64_t from_rev, size_t max_events, struct kv_event **evs,
		size_t *n_evs, int64_t *next_rev)
{
	*evs = NULL;
	*n_evs = 0;
	*next_rev = from_rev;
	if (from_rev < m->compact_rev)
		return -ERANGE;
	struct kv_event *arr = NULL;
	size_t n = 0, cap = 0;
	size_t i = log_lower(m, from_rev);
	int64_t last_main = 0;
	for (; i < m->log_len; i++) {
		const struct rev *r = m->log[i];
		if (n >= max_events && r->main != last_main)
			break;
		last_main = r->main;
		if (!kv_key_in_range(r->key->key, r->key->key_len, key, key_len, range_end,
				     range_end_len))
			continue;
		if (util_grow(&arr, &cap, n + 1, sizeof(*arr), 16) < 0)
			goto nomem;
		struct kv_event *e = &arr[n];
		memset(e, 0, sizeof(*e));
		if (r->version) {
			e->type = KV_EVENT_PUT;
			if (kv_from_rev(&e->kv, r, false) < 0)
				goto nomem;
		} else {
			e->type = KV_EVENT_DELETE;
			e->kv.key = util_memdup(r->key->key, r->key->key_len);
			if (!e->kv.key)
				goto nomem;
			e->kv.key_len = r->key->key_len;
			e->kv.mod_revision = r->main;
		}
		n++;
	}
	/* Everything before log[i] has been examined. */
	*next_rev = i < m->log_len ? m->log[i]->main : m->rev + 1;
	if (*next_rev < from_rev)
		*next_rev = from_rev;
	*evs = arr;
	*n_evs = n;
	return 0;
nomem:
	mvcc_events_free(arr, n);
	return -ENOMEM;
}

/* ---- snapshot ---- */

int mvcc_snapshot(const struct mvcc *m, void **buf, size_t *len)
{
	Etcdfs__Store__Snapshot snap = ETCDFS__STORE__SNAPSHOT__INIT;
	Etcdfs__Store__KeyHistory *khs = NULL, **khp = NULL;
	Etcdfs__Store__Version *vs = NULL, **vp = NULL;
	Etcdfs__Store__Lease *ls = NULL, **lp = NULL;
	size_t n_versions = 0;
	int ret = -ENOMEM;
	for (struct knode *x = m->head->next[0]; x; x = x->next[0])
		n_versions += x->n_revs;
	snap.format = SNAPSHOT_FORMAT;
	snap.revision = m->rev;
	snap.compact_revision = m->compact_rev;
	snap.applied_index = m->applied_index;
	if (m->n_keys) {
		khs = calloc(m->n_keys, sizeof(*khs));
		khp = calloc(m->n_keys, sizeof(*khp));
		vs = calloc(n_versions, sizeof(*vs));
		vp = calloc(n_versions, sizeof(*vp));
		if (!khs || !khp || !vs || !vp)
			goto out;
	}
	size_t k = 0, v = 0;
	for (struct knode *x = m->head->next[0]; x; x = x->next[0], k++) {
		Etcdfs__Store__KeyHistory *kh = &khs[k];
		etcdfs__store__key_history__init(kh);
		kh->key.data = (uint8_t *)x->key;
		kh->key.len = x->key_len;
		kh->versions = &vp[v];
		kh->n_versions = x->n_revs;
		for (size_t i = 0; i < x->n_revs; i++, v++) {
			const struct rev *r = x->revs[i];
			etcdfs__store__version__init(&vs[v]);
			vs[v].mod_revision = r->main;
			vs[v].sub = r->sub;
			vs[v].create_revision = r->create;
			vs[v].version = r->version;
			vs[v].lease = r->lease;
			vs[v].value.data = (uint8_t *)r->value;
			vs[v].value.len = r->value_len;
			vs[v].tombstone = r->version == 0;
			vp[v] = &vs[v];
		}
		khp[k] = kh;
	}
	snap.keys = khp;
	snap.n_keys = m->n_keys;
	if (m->n_leases) {
		ls = calloc(m->n_leases, sizeof(*ls));
		lp = calloc(m->n_leases, sizeof(*lp));
		if (!ls || !lp)
			goto out;
	}
	for (size_t i = 0; i < m->n_leases; i++) {
		etcdfs__store__lease__init(&ls[i]);
		ls[i].id = m->leases[i]->id;
		ls[i].ttl = m->leases[i]->ttl;
		lp[i] = &ls[i];
	}
	snap.leases = lp;
	snap.n_leases = m->n_leases;
	size_t sz = etcdfs__store__snapshot__get_packed_size(&snap);
	void *out = malloc(sz ? sz : 1);
	if (!out)
		goto out;
	etcdfs__store__snapshot__pack(&snap, out);
	*buf = out;
	*len = sz;
	ret = 0;
out:
	free(khs);
	free(khp);
	free(vs);
	free(vp);
	free(ls);
	free(lp);
	return ret;
}

static int cmp_log(const void *pa, const void *pb)
{
	const struct rev *a = *(struct rev *const *)pa, *b = *(struct rev *const *)pb;
	if (a->main != b->main)
		return a->main < b->main ? -1 : 1;
	return a->sub < b->sub ? -1 : a->sub > b->sub;
}

static int restore_leases(struct mvcc *m, const Etcdfs__Store__Snapshot *snap)
{
	int64_t now = util_now_ms();
	for (size_t i = 0; i < snap->n_leases; i++) {
		const Etcdfs__Store__Lease *l = snap->leases[i];
		if (l->id == 0 || l->ttl <= 0 || (i && snap->leases[i - 1]->id >= l->id)) {
			log_err("store: snapshot lease %zu is invalid or out of order", i);
			return -EINVAL;
		}
		/* A restart gives every lease its full TTL again, as etcd does. */
		if (lease_insert(m, l->id, l->ttl, now) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Attaches a restored key to the lease of its live version. */
static int restore_attach(struct mvcc *m, struct knode *x)
{
	struct rev *r = latest_live(x);
	if (!r || !r->lease)
		return 0;
	struct lease *l = lease_find(m, r->lease);
	if (!l) {
		log_err("store: snapshot key is attached to lease %lld, which it does not hold",
			(long long)r->lease);
		return -EINVAL;
	}
	return attach(x, l);
}

int mvcc_restore(const void *buf, size_t len, struct mvcc **out)
{
	Etcdfs__Store__Snapshot *snap = etcdfs__store__snapshot__unpack(NULL, len, buf);
	if (!snap) {
		log_err("store: snapshot is not a valid protobuf Snapshot message (%zu bytes)",
			len);
		return -EINVAL;
	}
	int ret = -EINVAL;
	struct mvcc *m = NULL;
	if (snap->format != SNAPSHOT_FORMAT && snap->format != SNAPSHOT_FORMAT_NO_LEASES) {
		log_err("store: snapshot format %u is not supported (expected %d)", snap->format,
			SNAPSHOT_FORMAT);
		goto out;
	}
	bool no_leases = snap->format == SNAPSHOT_FORMAT_NO_LEASES;
	m = mvcc_new();
	if (!m) {
		ret = -ENOMEM;
		goto out;
	}
	m->rev = snap->revision;
	m->compact_rev = snap->compact_revision;
	m->applied_index = snap->applied_index;
	ret = restore_leases(m, snap);
	if (ret < 0)
		goto out;
	ret = -EINVAL;
	struct knode *update[MAX_LEVEL];
	for (int l = 0; l < MAX_LEVEL; l++)
		update[l] = m->head;
	const struct knode *prev = NULL;
	for (size_t k = 0; k < snap->n_keys; k++) {
		const Etcdfs__Store__KeyHistory *kh = snap->keys[k];
		if (!kh->key.len || !kh->n_versions ||
		    (prev &&
		     kv_key_cmp(prev->key, prev->key_len, kh->key.data, kh->key.len) >= 0)) {
			log_err("store: snapshot key %zu is empty or out of order", k);
			goto out;
		}
		/* Keys arrive sorted: append at the tail of every level. */
		int level = random_level(m);
		struct knode *x = knode_new(level, kh->key.data, kh->key.len);
		if (!x) {
			ret = -ENOMEM;
			goto out;
		}
		if (level > m->level)
			m->level = level;
		for (int l = 0; l < level; l++) {
			update[l]->next[l] = x;
			update[l] = x;
		}
		m->n_keys++;
		prev = x;
		for (size_t i = 0; i < kh->n_versions; i++) {
			const Etcdfs__Store__Version *v = kh->versions[i];
			if (v->tombstone != (v->version == 0)) {
				log_err("store: snapshot version of key %zu is inconsistent", k);
				goto out;
			}
			struct rev *r = rev_new(x, v->value.data, v->value.len);
			if (!r || hist_append(x, r) < 0) {
				free(r);
				ret = -ENOMEM;
				goto out;
			}
			r->main = v->mod_revision;
			r->sub = v->sub;
			r->create = v->create_revision;
			r->version = v->version;
			/* Before leases existed a lease number named nothing; log
			 * entries of that time are replayed the same way. */
			r->lease = no_leases ? 0 : v->lease;
			if (r->main >= m->compact_rev && log_append(m, r) < 0) {
				ret = -ENOMEM;
				goto out;
			}
		}
		ret = restore_attach(m, x);
		if (ret < 0)
			goto out;
		ret = -EINVAL;
	}
	if (m->log_len > 1)
		qsort(m->log, m->log_len, sizeof(m->log[0]), cmp_log);
	if (mvcc_check(m) < 0) {
		log_err("store: snapshot failed the integrity check");
		goto out;
	}
	*out = m;
	m = NULL;
	ret = 0;
out:
	mvcc_free(m);
	etcdfs__store__snapshot__free_unpacked(snap, NULL);
	return ret;
}

/* ---- integrity ---- */

#define BAD(...)                                                                                   \
	do {                                                                                       \
		log_err("store: integrity check failed: " __VA_ARGS__);                            \
		return -EUCLEAN;                                                                   \
	} while (0)

static int check_key(const struct mvcc *m, const struct knode *x, size_t *n_logged)
{
	if (!x->n_revs)
		BAD("key with no history");
	const struct rev *first = x->revs[0];
	if (!first->version)
		BAD("history starts with a tombstone");
	if (m->compact_rev == 0 && (first->version != 1 || first->create != first->main))
		BAD("first version of a never-compacted key is not a creation");
	for (size_t i = 0; i < x->n_revs; i++) {
		const struct rev *r = x->revs[i];
		if (r->key != x)
			BAD("version points to the wrong key");
		if (r->main <= 0 || r->main > m->rev)
			BAD("mod_revision %lld outside (0, %lld]", (long long)r->main,
			    (long long)m->rev);
		if (r->sub < 0)
			BAD("negative sub-revision");
		if (i == 0) {
			if (r->create <= 0 || r->create > r->main)
				BAD("create_revision after mod_revision");
		} else {
			const struct rev *p = x->revs[i - 1];
			if (r->main <= p->main)
				BAD("history not in revision order");
			if (i > 0 && x->revs[i - 1]->main < m->compact_rev &&
			    r->main < m->compact_rev)
				BAD("two versions below the compaction point survived");
			if (!r->version) {
				if (!p->version)
					BAD("tombstone after tombstone");
				if (r->create || r->lease || r->value_len)
					BAD("tombstone carries data");
			} else if (!p->version) {
				if (r->version != 1 || r->create != r->main)
					BAD("recreated key has version %lld",
					    (long long)r->version);
			} else if (r->version != p->version + 1 || r->create != p->create) {
				BAD("version sequence broken (%lld after %lld)",
				    (long long)r->version, (long long)p->version);
			}
		}
		if (r->main >= m->compact_rev)
			(*n_logged)++;
	}
	return 0;
}

static int check_leases_attached(const struct mvcc *m)
{
	size_t attached = 0;
	for (size_t i = 0; i < m->n_leases; i++) {
		const struct lease *l = m->leases[i];
		if (l->id == 0 || l->ttl <= 0 || (i && m->leases[i - 1]->id >= l->id))
			BAD("lease table out of order or holding an invalid lease");
		for (size_t k = 0; k < l->n_keys; k++) {
			const struct knode *x = l->keys[k];
			const struct rev *r = latest_live(x);
			if (x->lease != l || x->lease_slot != k || !r || r->lease != l->id)
				BAD("lease %lld lists a key not attached to it", (long long)l->id);
		}
		attached += l->n_keys;
	}
	size_t leased = 0;
	for (const struct knode *x = m->head->next[0]; x; x = x->next[0]) {
		const struct rev *r = latest_live(x);
		if (r && r->lease) {
			if (x->lease == NULL || x->lease->id != r->lease)
				BAD("a live key's lease %lld does not exist or does not list it",
				    (long long)r->lease);
			leased++;
		} else if (x->lease) {
			BAD("a key without a lease is listed by lease %lld",
			    (long long)x->lease->id);
		}
	}
	if (leased != attached)
		BAD("%zu leased keys, leases list %zu", leased, attached);
	return 0;
}

int mvcc_check(const struct mvcc *m)
{
	if (m->rev < 1 || m->compact_rev < 0 || m->compact_rev > m->rev)
		BAD("revision %lld, compact revision %lld", (long long)m->rev,
		    (long long)m->compact_rev);
	/* Every level is sorted and a subsequence of level 0. */
	for (int l = 1; l < m->level; l++) {
		const struct knode *y = m->head->next[0];
		for (const struct knode *x = m->head->next[l]; x; x = x->next[l]) {
			while (y && y != x)
				y = y->next[0];
			if (!y)
				BAD("skip list level %d not a subsequence of level 0", l);
		}
	}
	size_t n_keys = 0, n_logged = 0;
	const struct knode *prev = NULL;
	for (const struct knode *x = m->head->next[0]; x; x = x->next[0]) {
		if (!x->key_len)
			BAD("empty key in index");
		if (prev && kv_key_cmp(prev->key, prev->key_len, x->key, x->key_len) >= 0)
			BAD("index not in key order");
		int ret = check_key(m, x, &n_logged);
		if (ret < 0)
			return ret;
		prev = x;
		n_keys++;
	}
	if (n_keys != m->n_keys)
		BAD("key count %zu, index holds %zu", m->n_keys, n_keys);
	if (n_logged != m->log_len)
		BAD("change log holds %zu versions, history %zu", m->log_len, n_logged);
	/* The change log is ordered, each entry is in its key's history, and
	 * every revision after the compaction point has at least one change
	 * (except revision 1, the empty initial state). */
	int64_t expect = m->compact_rev + 1 > 2 ? m->compact_rev + 1 : 2;
	for (size_t i = 0; i < m->log_len; i++) {
		const struct rev *r = m->log[i];
		if (i && cmp_log(&m->log[i - 1], &m->log[i]) >= 0)
			BAD("change log out of order at %zu", i);
		if (rev_at(r->key, r->main) != r)
			BAD("change log entry not in its key's history");
		if (r->main > m->compact_rev) {
			if (r->main == expect)
				expect++;
			else if (r->main != expect - 1)
				BAD("revision %lld has no change", (long long)expect);
		}
	}
	if (expect != m->rev + 1)
		BAD("revisions %lld..%lld have no change", (long long)expect, (long long)m->rev);
	return check_leases_attached(m);
}
