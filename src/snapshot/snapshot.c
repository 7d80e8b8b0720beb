/* snapshot.c: the read-only kv.h backend over an etcd backend file (see snapshot.h).
 *
 * etcd's mvcc layout inside the bbolt file:
 *  - bucket "key": one entry per revision. The bbolt key is the revision:
 *    8-byte big-endian main revision, '_', 8-byte big-endian sub revision,
 *    plus a trailing 't' for a tombstone (deletion). The value is an
 *    mvccpb.KeyValue protobuf: key=1 (bytes), create_revision=2,
 *    mod_revision=3, version=4 (varints), value=5 (bytes), lease=6 (varint).
 *  - bucket "meta": "finishedCompactRev" and "scheduledCompactRev" hold a
 *    revision in the same 17-byte form, "consistent_index" an 8-byte
 *    big-endian integer.
 * Compaction at C removes every revision <= C except each key's latest one
 * (and drops it too when it is a tombstone), so reads at revisions >= C are
 * exact and older ones are refused like etcd refuses them.
 *
 * The index is an array of keys in byte order, each with its records in
 * revision order; a record keeps the metadata and the file offset of the
 * value, which is read on demand.
 */
#include "snapshot/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "snapshot/bolt.h"

#define REV_KEY_LEN 17
#define MAX_REQUEST_BYTES (1536u * 1024u) /* etcd's default */
#define MAX_TXN_OPS 128			  /* etcd's default */

struct rec {
	int64_t main, sub;
	int64_t create, mod, version, lease;
	uint64_t val_off;
	uint32_t val_len;
	bool tomb;
};

struct kent {
	char *key;
	size_t key_len;
	struct rec *recs; /* ascending (main, sub) */
	size_t n, cap;
};

struct snap {
	struct kv kv; /* first: struct kv * casts to struct snap * */
	struct bolt *b;
	struct kent *keys; /* sorted by key */
	size_t n_keys;
	struct snapshot_info info;
};

static const struct kv_ops snap_ops;

/* ---- protobuf (only what mvccpb.KeyValue needs) ---- */

static int pb_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *out)
{
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (*pos >= len)
			return -1;
		uint8_t c = p[(*pos)++];
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return -1;
}

struct pb_kv {
	const uint8_t *key;
	size_t key_len;
	size_t val_pos; /* offset of the value bytes inside the message */
	size_t val_len;
	int64_t create, mod, version, lease;
};

/* Decodes an mvccpb.KeyValue; unknown fields are skipped. -1 on bad input. */
static int pb_decode_kv(const uint8_t *p, size_t len, struct pb_kv *kv, const char **why)
{
	size_t pos = 0;
	memset(kv, 0, sizeof(*kv));
	while (pos < len) {
		uint64_t tag, v;
		if (pb_varint(p, len, &pos, &tag) < 0) {
			*why = "bad field tag";
			return -1;
		}
		uint64_t field = tag >> 3;
		unsigned wt = tag & 7;
		if (field == 0 || field > 0x1fffffff) {
			*why = "bad field number";
			return -1;
		}
		switch (wt) {
		case 0:
			if (pb_varint(p, len, &pos, &v) < 0) {
				*why = "truncated varint";
				return -1;
			}
			if (field == 2)
				kv->create = (int64_t)v;
			else if (field == 3)
				kv->mod = (int64_t)v;
			else if (field == 4)
				kv->version = (int64_t)v;
			else if (field == 6)
				kv->lease = (int64_t)v;
			else if (field == 1 || field == 5)
				goto bad_type;
			break;
		case 2:
			if (pb_varint(p, len, &pos, &v) < 0 || v > len - pos) {
				*why = "length-delimited field runs past the record";
				return -1;
			}
			if (field == 1) {
				kv->key = p + pos;
				kv->key_len = (size_t)v;
			} else if (field == 5) {
				kv->val_pos = pos;
				kv->val_len = (size_t)v;
			} else if (field >= 2 && field <= 6) {
				goto bad_type;
			}
			pos += (size_t)v;
			break;
		case 1:
		case 5: {
			size_t n = wt == 1 ? 8 : 4;
			if (field <= 6)
				goto bad_type;
			if (n > len - pos) {
				*why = "truncated fixed field";
				return -1;
			}
			pos += n;
			break;
		}
		default:
			*why = "unsupported wire type";
			return -1;
		}
	}
	return 0;
bad_type:
	*why = "known field with the wrong wire type";
	return -1;
}

/* ---- index build ---- */

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint64_t hash_key(const void *k, size_t n)
{
	const uint8_t *p = k;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

struct build {
	struct snap *s;
	size_t keys_cap;
	size_t *table; /* open addressing: index into s->keys + 1, 0 = empty */
	size_t table_cap;
	int64_t last_main, last_sub;
	bool have_last;
};

static int table_grow(struct build *bd)
{
	size_t cap = bd->table_cap ? bd->table_cap * 2 : 1024;
	size_t *t = calloc(cap, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < bd->s->n_keys; i++) {
		const struct kent *k = &bd->s->keys[i];
		size_t h = (size_t)hash_key(k->key, k->key_len) & (cap - 1);
		while (t[h])
			h = (h + 1) & (cap - 1);
		t[h] = i + 1;
	}
	free(bd->table);
	bd->table = t;
	bd->table_cap = cap;
	return 0;
}

static struct kent *key_lookup(struct build *bd, const uint8_t *key, size_t len)
{
	struct snap *s = bd->s;
	if ((s->n_keys + 1) * 2 > bd->table_cap && table_grow(bd) < 0)
		return NULL;
	size_t h = (size_t)hash_key(key, len) & (bd->table_cap - 1);
	while (bd->table[h]) {
		struct kent *k = &s->keys[bd->table[h] - 1];
		if (k->key_len == len && memcmp(k->key, key, len) == 0)
			return k;
		h = (h + 1) & (bd->table_cap - 1);
	}
	if (util_grow(&s->keys, &bd->keys_cap, s->n_keys + 1, sizeof(*s->keys), 256) < 0)
		return NULL;
	struct kent *k = &s->keys[s->n_keys];
	memset(k, 0, sizeof(*k));
	k->key = malloc(len + 1);
	if (!k->key)
		return NULL;
	memcpy(k->key, key, len);
	k->key[len] = 0;
	k->key_len = len;
	bd->table[h] = ++s->n_keys;
	return k;
}

static int key_item(void *arg, const struct bolt_item *it)
{
	struct build *bd = arg;
	struct snap *s = bd->s;
	const char *name = bolt_name(s->b);
	if (it->is_bucket) {
		log_err("snapshot %s: bucket 'key' holds a nested bucket (not an etcd backend?)",
			name);
		return -EUCLEAN;
	}
	bool tomb = it->key_len == REV_KEY_LEN + 1 && it->key[REV_KEY_LEN] == 't';
	if ((it->key_len != REV_KEY_LEN && !tomb) || it->key[8] != '_') {
		log_err("snapshot %s: bucket 'key' holds a %zu-byte key that is not a revision "
			"(main '_' sub ['t'])",
			name, it->key_len);
		return -EUCLEAN;
	}
	uint64_t main = be64(it->key), sub = be64(it->key + 9);
	if (main == 0 || main > INT64_MAX || sub > INT64_MAX) {
		log_err("snapshot %s: invalid revision %" PRIu64 "_%" PRIu64, name, main, sub);
		return -EUCLEAN;
	}
	/* bbolt keeps keys sorted, so revisions must strictly increase. */
	if (bd->have_last && ((int64_t)main < bd->last_main ||
			      ((int64_t)main == bd->last_main && (int64_t)sub <= bd->last_sub))) {
		log_err("snapshot %s: revision %" PRIu64 "_%" PRIu64 " out of order after %" PRId64
			"_%" PRId64,
			name, main, sub, bd->last_main, bd->last_sub);
		return -EUCLEAN;
	}
	bd->have_last = true;
	bd->last_main = (int64_t)main;
	bd->last_sub = (int64_t)sub;
	struct pb_kv pkv;
	const char *why = NULL;
	if (pb_decode_kv(it->val, it->val_len, &pkv, &why) < 0) {
		log_err("snapshot %s: revision %" PRIu64 "_%" PRIu64
			": malformed KeyValue record: %s",
			name, main, sub, why);
		return -EUCLEAN;
	}
	if (!pkv.key_len) {
		log_err("snapshot %s: revision %" PRIu64 "_%" PRIu64 ": record has an empty key",
			name, main, sub);
		return -EUCLEAN;
	}
	if (pkv.val_len > UINT32_MAX) {
		log_err("snapshot %s: revision %" PRIu64 "_%" PRIu64 ": value too large", name,
			main, sub);
		return -EUCLEAN;
	}
	struct kent *k = key_lookup(bd, pkv.key, pkv.key_len);
	if (!k)
		return -ENOMEM;
	if (util_grow(&k->recs, &k->cap, k->n + 1, sizeof(*k->recs), 1) < 0)
		return -ENOMEM;
	struct rec *r = &k->recs[k->n++];
	*r = (struct rec){
		.main = (int64_t)main,
		.sub = (int64_t)sub,
		.create = pkv.create,
		.mod = tomb ? (int64_t)main : pkv.mod,
		.version = pkv.version,
		.lease = pkv.lease,
		.val_off = it->val_off + pkv.val_pos,
		.val_len = (uint32_t)pkv.val_len,
		.tomb = tomb,
	};
	s->info.n_records++;
	if (tomb)
		s->info.n_tombstones++;
	if ((int64_t)main > s->info.max_revision)
		s->info.max_revision = (int64_t)main;
	return 0;
}

struct meta_read {
	struct snap *s;
	int64_t finished, scheduled;
};

static int meta_item(void *arg, const struct bolt_item *it)
{
	struct meta_read *m = arg;
	int64_t *dst = NULL;
	if (it->key_len == 18 && memcmp(it->key, "finishedCompactRev", 18) == 0)
		dst = &m->finished;
	else if (it->key_len == 19 && memcmp(it->key, "scheduledCompactRev", 19) == 0)
		dst = &m->scheduled;
	else if (it->key_len == 16 && memcmp(it->key, "consistent_index", 16) == 0 &&
		 it->val_len == 8)
		m->s->info.consistent_index = be64(it->val);
	if (!dst)
		return 0;
	if (it->val_len < 8 || be64(it->val) > INT64_MAX) {
		log_err("snapshot %s: meta '%.*s' is not a revision (%zu bytes)",
			bolt_name(m->s->b), (int)it->key_len, (const char *)it->key, it->val_len);
		return -EUCLEAN;
	}
	*dst = (int64_t)be64(it->val);
	return 0;
}

static int kent_cmp(const void *a, const void *b)
{
	const struct kent *x = a, *y = b;
	return kv_key_cmp(x->key, x->key_len, y->key, y->key_len);
}

static void snap_free(struct snap *s)
{
	for (size_t i = 0; i < s->n_keys; i++) {
		free(s->keys[i].key);
		free(s->keys[i].recs);
	}
	free(s->keys);
	bolt_close(s->b);
	free(s);
}

static int build_index(struct snap *s)
{
	const char *name = bolt_name(s->b);
	struct bolt_bucket root, key = {0}, meta = {0};
	struct build bd = {.s = s};
	struct meta_read mr = {.s = s};
	bolt_root(s->b, &root);
	int ret = bolt_bucket_open(s->b, &root, "key", &key);
	if (ret == -ENOENT) {
		log_err("snapshot %s: no bucket 'key': a bbolt file, but not an etcd v3 backend",
			name);
		return -EINVAL;
	}
	if (ret < 0)
		return ret;
	ret = bolt_bucket_open(s->b, &root, "meta", &meta);
	if (ret == -ENOENT) {
		log_warn("snapshot %s: no bucket 'meta': assuming nothing was compacted", name);
	} else if (ret < 0) {
		goto out;
	} else {
		ret = bolt_bucket_foreach(s->b, &meta, meta_item, &mr);
		if (ret < 0)
			goto out;
	}
	ret = bolt_bucket_foreach(s->b, &key, key_item, &bd);
	if (ret < 0)
		goto out;
	if (s->n_keys)
		qsort(s->keys, s->n_keys, sizeof(*s->keys), kent_cmp);
	s->info.n_keys_all = s->n_keys;
	for (size_t i = 0; i < s->n_keys; i++) {
		struct kent *k = &s->keys[i];
		if (!k->recs[k->n - 1].tomb)
			s->info.n_keys++;
		/* Give back the slack of the doubling growth. */
		struct rec *fit = k->n < k->cap ? realloc(k->recs, k->n * sizeof(*fit)) : NULL;
		if (fit) {
			k->recs = fit;
			k->cap = k->n;
		}
	}
	/* A scheduled but unfinished compaction may have removed part of the
	 * history below it already: treat it as done, as etcd does on restart. */
	s->info.compact_revision = mr.finished > mr.scheduled ? mr.finished : mr.scheduled;
	s->info.revision = s->info.max_revision > s->info.compact_revision
				   ? s->info.max_revision
				   : s->info.compact_revision;
	ret = 0;
out:
	free(bd.table);
	bolt_bucket_release(&key);
	bolt_bucket_release(&meta);
	return ret;
}

int snapshot_open_fd(int fd, const char *name, struct kv **out)
{
	*out = NULL;
	struct snap *s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		return -ENOMEM;
	}
	s->kv.ops = &snap_ops;
	int ret = bolt_open_fd(fd, name, &s->b);
	if (ret < 0) {
		free(s);
		return ret;
	}
	const struct bolt_info *bi = bolt_info(s->b);
	s->info.page_size = bi->page_size;
	s->info.file_size = bi->file_size;
	s->info.sha256_verified = bi->has_sha256;
	ret = build_index(s);
	if (ret < 0) {
		snap_free(s);
		return ret;
	}
	s->info.pages_branch = bi->pages_branch;
	s->info.pages_leaf = bi->pages_leaf;
	s->info.pages_overflow = bi->pages_overflow;
	s->info.pages_inline = bi->pages_inline;
	log_info("snapshot %s: %zu keys (%zu more deleted), %zu records, store revision %" PRId64
		 ", compacted at %" PRId64 "%s",
		 bolt_name(s->b), s->info.n_keys, s->info.n_keys_all - s->info.n_keys,
		 s->info.n_records, s->info.revision, s->info.compact_revision,
		 bi->has_sha256 ? ", SHA-256 verified" : "");
	*out = &s->kv;
	return 0;
}

int snapshot_open(const char *path, struct kv **out)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		log_err("snapshot %s: cannot open: %s", path, strerror(e));
		return -e;
	}
	return snapshot_open_fd(fd, path, out);
}

int snapshot_get_info(struct kv *kv, struct snapshot_info *info)
{
	if (!kv || kv->ops != &snap_ops)
		return -EINVAL;
	*info = ((struct snap *)kv)->info;
	return 0;
}

/* ---- reads ---- */

/* The record of k visible at rev, or NULL (absent or deleted). */
static const struct rec *visible(const struct kent *k, int64_t rev)
{
	size_t lo = 0, hi = k->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (k->recs[mid].main <= rev)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!lo || k->recs[lo - 1].tomb)
		return NULL;
	return &k->recs[lo - 1];
}

/* First index whose key is >= (key, len). */
static size_t lower_bound(const struct snap *s, const void *key, size_t len)
{
	size_t lo = 0, hi = s->n_keys;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (kv_key_cmp(s->keys[mid].key, s->keys[mid].key_len, key, len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The index span [*lo, *hi) of keys selected by key/range_end (kv.h rules). */
static void key_span(const struct snap *s, const void *key, size_t key_len, const void *end,
		     size_t end_len, size_t *lo, size_t *hi)
{
	*lo = lower_bound(s, key, key_len);
	if (!end_len) {
		bool hit = *lo < s->n_keys &&
			   kv_key_cmp(s->keys[*lo].key, s->keys[*lo].key_len, key, key_len) == 0;
		*hi = *lo + hit;
	} else if (end_len == 1 && ((const char *)end)[0] == 0) {
		*hi = s->n_keys;
	} else {
		*hi = lower_bound(s, end, end_len);
		if (*hi < *lo)
			*hi = *lo;
	}
}

static int read_value(struct snap *s, const struct rec *r, char **out)
{
	char *v = malloc((size_t)r->val_len + 1);
	if (!v)
		return -ENOMEM;
	int ret = r->val_len ? bolt_pread(s->b, v, r->val_len, r->val_off) : 0;
	if (ret < 0) {
		free(v);
		return ret;
	}
	v[r->val_len] = 0;
	*out = v;
	return 0;
}

struct pick {
	const struct kent *k;
	const struct rec *r;
	char *value; /* read early only for a sort by value */
};

struct sort_ctx {
	enum kv_sort_target target;
	bool desc;
};

static int pick_cmp(const void *a, const void *b, void *arg)
{
	const struct pick *x = a, *y = b;
	const struct sort_ctx *c = arg;
	int keys = kv_key_cmp(x->k->key, x->k->key_len, y->k->key, y->k->key_len);
	int res = 0;
	int64_t vx = 0, vy = 0;
	switch (c->target) {
	case KV_SORT_KEY:
		return c->desc ? -keys : keys;
	case KV_SORT_VERSION:
		vx = x->r->version, vy = y->r->version;
		break;
	case KV_SORT_CREATE:
		vx = x->r->create, vy = y->r->create;
		break;
	case KV_SORT_MOD:
		vx = x->r->mod, vy = y->r->mod;
		break;
	case KV_SORT_VALUE:
		res = kv_key_cmp(x->value, x->r->val_len, y->value, y->r->val_len);
		break;
	}
	if (!res)
		res = vx < vy ? -1 : vx > vy;
	if (c->desc)
		res = -res;
	/* Ties keep ascending key order, so results are deterministic. */
	return res ? res : keys;
}

static int snap_range(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res)
{
	struct snap *s = (struct snap *)kv;
	memset(res, 0, sizeof(*res));
	res->revision = s->info.revision;
	if (!req->key_len || req->limit < 0 || (unsigned)req->sort_order > KV_SORT_DESCEND ||
	    (unsigned)req->sort_target > KV_SORT_VALUE)
		return -EINVAL;
	int64_t rev = req->revision > 0 ? req->revision : s->info.revision;
	if (rev > s->info.revision)
		return -ENOENT;
	if (rev < s->info.compact_revision) {
		res->compact_revision = s->info.compact_revision;
		return -ERANGE;
	}
	/* etcd: a non-key sort target with no order means ascending. */
	enum kv_sort_order order = req->sort_order;
	if (order == KV_SORT_NONE && req->sort_target != KV_SORT_KEY)
		order = KV_SORT_ASCEND;
	bool resort = order == KV_SORT_DESCEND ||
		      (order == KV_SORT_ASCEND && req->sort_target != KV_SORT_KEY);
	size_t limit = (size_t)req->limit;
	size_t lo, hi;
	key_span(s, req->key, req->key_len, req->range_end, req->range_end_len, &lo, &hi);

	struct pick *picks = NULL;
	size_t n = 0, cap = 0;
	int64_t count = 0;
	int ret = 0;
	for (size_t i = lo; i < hi; i++) {
		const struct rec *r = visible(&s->keys[i], rev);
		if (!r)
			continue;
		count++;
		if (req->count_only || (!resort && limit && n >= limit))
			continue;
		if (util_grow(&picks, &cap, n + 1, sizeof(*picks), 16) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		picks[n++] = (struct pick){.k = &s->keys[i], .r = r};
	}
	if (resort && n > 1) {
		struct sort_ctx c = {req->sort_target, order == KV_SORT_DESCEND};
		if (c.target == KV_SORT_VALUE)
			for (size_t i = 0; i < n; i++) {
				ret = read_value(s, picks[i].r, &picks[i].value);
				if (ret < 0)
					goto out;
			}
		qsort_r(picks, n, sizeof(*picks), pick_cmp, &c);
	}
	size_t keep = limit && n > limit ? limit : n;
	res->count = count;
	res->more = !req->count_only && limit && (size_t)count > limit;
	if (keep) {
		res->kvs = calloc(keep, sizeof(*res->kvs));
		if (!res->kvs) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < keep; i++) {
		struct kv_kv *o = &res->kvs[i];
		const struct rec *r = picks[i].r;
		o->key = malloc(picks[i].k->key_len + 1);
		if (!o->key) {
			ret = -ENOMEM;
			goto out;
		}
		memcpy(o->key, picks[i].k->key, picks[i].k->key_len + 1);
		o->key_len = picks[i].k->key_len;
		res->n_kvs = i + 1;
		o->create_revision = r->create;
		o->mod_revision = r->mod;
		o->version = r->version;
		o->lease = r->lease;
		if (req->keys_only)
			continue;
		if (picks[i].value) {
			o->value = picks[i].value;
			picks[i].value = NULL;
		} else {
			ret = read_value(s, r, &o->value);
			if (ret < 0) {
				log_err("snapshot %s: cannot read the value of revision %" PRId64
					" (file changed or truncated since it was opened?)",
					bolt_name(s->b), r->main);
				goto out;
			}
		}
		o->value_len = r->val_len;
	}
out:
	for (size_t i = 0; i < n; i++)
		free(picks[i].value);
	free(picks);
	if (ret < 0) {
		kv_range_result_free(res);
		res->revision = s->info.revision;
	}
	return ret;
}

/* ---- txn: reads only ---- */

/* etcd's compareKV on the record r of a key that exists; only a VALUE compare reads the
 * value. */
static int compare_one(struct snap *s, const struct kv_compare *c, const struct rec *r, bool *ok)
{
	struct kv_kv kv = {
		.create_revision = r->create,
		.mod_revision = r->mod,
		.version = r->version,
		.lease = r->lease,
	};
	if (c->target == KV_CMP_VALUE) {
		int ret = read_value(s, r, &kv.value);
		if (ret < 0)
			return ret;
		kv.value_len = r->val_len;
	}
	*ok = kv_compare_kv(c, &kv);
	free(kv.value);
	return 0;
}

/* etcd's applyCompare: every key in the range must satisfy the compare; an
 * empty range compares the zero KeyValue, except for VALUE which fails. */
static int eval_compare(struct snap *s, const struct kv_compare *c, bool *ok)
{
	size_t lo, hi, seen = 0;
	key_span(s, c->key, c->key_len, c->range_end, c->range_end_len, &lo, &hi);
	*ok = true;
	for (size_t i = lo; i < hi && *ok; i++) {
		const struct rec *r = visible(&s->keys[i], s->info.revision);
		if (!r)
			continue;
		seen++;
		int ret = compare_one(s, c, r, ok);
		if (ret < 0)
			return ret;
	}
	if (!seen)
		*ok = kv_compare_empty(c);
	return 0;
}

static int check_ops(const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (ops[i].type == KV_OP_PUT || ops[i].type == KV_OP_DELETE)
			return -EROFS;
		if (ops[i].type != KV_OP_RANGE || !ops[i].key_len)
			return -EINVAL;
	}
	return 0;
}

static int snap_txn(struct kv *kv, const struct kv_txn *txn, struct kv_txn_result *res)
{
	struct snap *s = (struct snap *)kv;
	memset(res, 0, sizeof(*res));
	res->revision = s->info.revision;
	if (txn->n_compare > MAX_TXN_OPS || txn->n_success > MAX_TXN_OPS ||
	    txn->n_failure > MAX_TXN_OPS)
		return -E2BIG;
	/* Any write, even in the branch that would not run, is refused: the
	 * answer must not depend on the data of a read-only mount. */
	int ret = check_ops(txn->success, txn->n_success);
	if (ret == 0)
		ret = check_ops(txn->failure, txn->n_failure);
	if (ret == -EROFS)
		log_debug("snapshot %s: write refused: the snapshot is read-only", bolt_name(s->b));
	if (ret < 0)
		return ret;
	bool ok = true;
	for (size_t i = 0; i < txn->n_compare && ok; i++) {
		const struct kv_compare *c = &txn->compare[i];
		if (!c->key_len || (unsigned)c->target > KV_CMP_LEASE ||
		    (unsigned)c->result > KV_CMP_NOT_EQUAL)
			return -EINVAL;
		ret = eval_compare(s, c, &ok);
		if (ret < 0)
			return ret;
	}
	const struct kv_op *ops = ok ? txn->success : txn->failure;
	size_t n = ok ? txn->n_success : txn->n_failure;
	res->succeeded = ok;
	if (n) {
		res->results = calloc(n, sizeof(*res->results));
		if (!res->results)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct kv_range_req req = {
			.key = ops[i].key,
			.key_len = ops[i].key_len,
			.range_end = ops[i].range_end,
			.range_end_len = ops[i].range_end_len,
			.keys_only = ops[i].keys_only,
		};
		res->results[i].type = KV_OP_RANGE;
		res->n_results = i + 1;
		ret = snap_range(kv, &req, &res->results[i].range);
		if (ret < 0) {
			kv_txn_result_free(res);
			return ret;
		}
	}
	return 0;
}

/* ---- the rest of the vtable ---- */

static int snap_watch(struct kv *kv, const struct kv_watch_req *req, kv_watch_cb cb, void *arg,
		      struct kv_watch **out)
{
	(void)kv, (void)req, (void)cb, (void)arg;
	*out = NULL;
	return -ENOTSUP;
}

static void snap_watch_cancel(struct kv_watch *w)
{
	(void)w; /* snap_watch never creates one */
}

static int snap_compact(struct kv *kv, int64_t revision, bool physical)
{
	(void)kv, (void)revision, (void)physical;
	return -EROFS;
}

static int snap_status(struct kv *kv, int64_t *revision)
{
	*revision = ((struct snap *)kv)->info.revision;
	return 0;
}

static size_t snap_max_request_bytes(struct kv *kv)
{
	(void)kv;
	return MAX_REQUEST_BYTES;
}

static size_t snap_max_txn_ops(struct kv *kv)
{
	(void)kv;
	return MAX_TXN_OPS;
}

static void snap_destroy(struct kv *kv)
{
	if (kv)
		snap_free((struct snap *)kv);
}

static const struct kv_ops snap_ops = {
	.name = "snapshot",
	.range = snap_range,
	.txn = snap_txn,
	.watch = snap_watch,
	.watch_cancel = snap_watch_cancel,
	.compact = snap_compact,
	.status = snap_status,
	.max_request_bytes = snap_max_request_bytes,
	.max_txn_ops = snap_max_txn_ops,
	.destroy = snap_destroy,
};
