/* cache.c: key tree, value LRU, initial sync and watch consumer (cache.h). */
#include "cache.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

/* A key this mount deleted (or is about to delete: held) at rev: events
 * and listings of it at rev or before are old news and must not bring it
 * back. An ordinary tomb expires once the watch is past rev; a held one
 * stays until cache_release_key_locked (docs/writes.md, unlink). */
struct cache_tomb {
	char *key;
	size_t key_len;
	int64_t rev;
	bool held;
	struct cache_tomb *next;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t name_hash(uint64_t pid, int ns, const char *seg, size_t len)
{
	uint64_t h = 14695981039346656037ULL;
	h = fnv(h, &pid, sizeof(pid));
	h = fnv(h, &ns, sizeof(ns));
	return fnv(h, seg, len);
}

/* ---- the id table and the name hash (lock held for write when modifying) ---- */

/* A slot's generation stays below 2^30, so 4 * id + 3 fits 64 bits. */
#define ID_GEN_LIMIT (1u << 30)

static uint32_t idx_of(const struct cache_node *n)
{
	return (uint32_t)n->id;
}

static uint64_t *id_slot(const struct cache *c, uint32_t i)
{
	return &c->ids[i / CACHE_ID_CHUNK][i % CACHE_ID_CHUNK];
}

/* The node in slot i; NULL for a free slot or one past the table. A node's
 * pointer is even; a free slot holds (next free << 32) | (gen << 1) | 1. */
static struct cache_node *node_at(const struct cache *c, uint32_t i)
{
	if (i >= c->n_ids)
		return NULL;
	uint64_t s = *id_slot(c, i);
	return s & 1 ? NULL : (struct cache_node *)(uintptr_t)s;
}

/* Gives n a slot: the first free one (its next generation), else a new one.
 * Freed slots are reused so the table stays as dense as the tree: a slot is
 * freed only once the kernel forgot the node and no handle holds it, and
 * the generation in the id keeps old ids (forgotten inodes, queued
 * notifications, directory listings) from naming the new node. */
static int id_take(struct cache *c, struct cache_node *n)
{
	uint32_t i, gen = 0;
	if (c->id_free) {
		i = c->id_free;
		uint64_t s = *id_slot(c, i);
		c->id_free = (uint32_t)(s >> 32);
		gen = (uint32_t)s >> 1;
	} else {
		if (c->n_ids == UINT32_MAX)
			return -ENOMEM;
		i = c->n_ids;
		size_t ch = i / CACHE_ID_CHUNK;
		if (i % CACHE_ID_CHUNK == 0) {
			if (util_grow(&c->ids, &c->ids_cap, ch + 1, sizeof(*c->ids), 16) < 0)
				return -ENOMEM;
			c->ids[ch] = malloc(CACHE_ID_CHUNK * sizeof(**c->ids));
			if (!c->ids[ch])
				return -ENOMEM;
		}
		c->n_ids++;
	}
	n->id = (uint64_t)gen << 32 | i;
	*id_slot(c, i) = (uint64_t)(uintptr_t)n;
	return 0;
}

static void id_put(struct cache *c, struct cache_node *n)
{
	uint32_t gen = (uint32_t)(n->id >> 32) + 1;
	if (gen == ID_GEN_LIMIT)
		gen = 0;
	*id_slot(c, idx_of(n)) = (uint64_t)c->id_free << 32 | (uint64_t)gen << 1 | 1;
	c->id_free = idx_of(n);
}

struct cache_node *cache_node_by_id(struct cache *c, uint64_t id)
{
	struct cache_node *n = node_at(c, (uint32_t)id);
	return n && n->id == id ? n : NULL;
}

struct cache_node *cache_next_node(const struct cache *c, uint32_t *i)
{
	while (*i < c->n_ids) {
		struct cache_node *n = node_at(c, (*i)++);
		if (n)
			return n;
	}
	return NULL;
}

static int grow_names(struct cache *c)
{
	/* Load factor up to 1: 4 to 8 bytes of heads per node. */
	if (c->n_nodes < c->by_name_cap)
		return 0;
	size_t ncap = c->by_name_cap ? c->by_name_cap * 2 : 1024;
	uint32_t *bn = calloc(ncap, sizeof(*bn));
	if (!bn)
		return -ENOMEM;
	for (size_t b = 0; b < c->by_name_cap; b++) {
		uint32_t i = c->by_name[b];
		while (i) {
			struct cache_node *n = node_at(c, i);
			uint32_t next = n->hnext;
			size_t nb = name_hash(n->parent->id, n->ns, cache_node_seg(n), n->seg_len) &
				    (ncap - 1);
			n->hnext = bn[nb];
			bn[nb] = i;
			i = next;
		}
	}
	free(c->by_name);
	c->by_name = bn;
	c->by_name_cap = ncap;
	return 0;
}

struct cache_node *cache_child(struct cache *c, struct cache_node *dir, int ns, const char *seg,
			       size_t seg_len)
{
	if (!c->by_name_cap || dir->detached)
		return NULL;
	size_t b = name_hash(dir->id, ns, seg, seg_len) & (c->by_name_cap - 1);
	for (uint32_t i = c->by_name[b]; i;) {
		struct cache_node *n = node_at(c, i);
		if (n->parent == dir && n->ns == ns && n->seg_len == seg_len &&
		    memcmp(cache_node_seg(n), seg, seg_len) == 0)
			return n;
		i = n->hnext;
	}
	return NULL;
}

struct cache_node *cache_next_child(const struct cache *c, const struct cache_node *dir,
				    uint32_t *i)
{
	const struct cache_node_x *x = cache_node_x(dir);
	while (x && *i < x->n_slots) {
		uint32_t k = x->kids[(*i)++];
		if (k)
			return node_at(c, k);
	}
	return NULL;
}

/* ---- side records ---- */

/* n's side record, made on first use. Under the read lock several threads
 * may race to make it: the first one's stays. NULL when out of memory. */
static struct cache_node_x *x_get(struct cache_node *n)
{
	struct cache_node_x *x = cache_node_x(n);
	if (x)
		return x;
	struct cache_node_x *nx = calloc(1, sizeof(*nx));
	if (!nx)
		return NULL;
	if (__atomic_compare_exchange_n(&n->x, &x, nx, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return nx;
	free(nx);
	return x;
}

/* For a reference: one that could not be counted would let the node be
 * freed while the kernel or a handle still names it, so running out of
 * memory for this record (tens of bytes) stops the daemon. */
static struct cache_node_x *x_must(struct cache_node *n)
{
	struct cache_node_x *x = x_get(n);
	if (!x) {
		log_err("cache: out of memory counting a reference; stopping");
		abort();
	}
	return x;
}

/* Frees n's record once nothing in it is needed: no reference, write-path
 * state, children or renamed segment. The kernel-view fields go with it:
 * without a lookup the kernel holds no inode, so no size or page of n.
 * Lock held for write. */
static void x_trim(struct cache_node *n)
{
	struct cache_node_x *x = n->x;
	if (!x || x->nlookup || x->nopen || x->rep_val || x->kids || x->local || n->seg_out)
		return;
	n->x = NULL;
	free(x);
}

int cache_node_set_local(struct cache_node *n, struct cache_local *l)
{
	struct cache_node_x *x = x_get(n);
	if (!x)
		return -ENOMEM;
	__atomic_store_n(&x->local, l, __ATOMIC_RELEASE);
	return 0;
}

void cache_set_kernel_rev(struct cache_node *n, int64_t rev)
{
	if (!rev && !cache_node_x(n))
		return; /* already the default */
	__atomic_store_n(&x_must(n)->kernel_rev, rev, __ATOMIC_RELAXED);
}

int64_t cache_changed_ms(const struct cache_node *n)
{
	uint32_t ch = __atomic_load_n(&n->changed, __ATOMIC_RELAXED);
	if (!ch)
		return 0;
	int64_t now = util_now_ms();
	int64_t t = now - (uint32_t)((uint32_t)now - ch);
	return t > 0 ? t : 1;
}

/* n's content changed now. lru_lock held. */
static void mark_changed(struct cache_node *n)
{
	uint32_t t = (uint32_t)util_now_ms();
	__atomic_store_n(&n->changed, t ? t : 1, __ATOMIC_RELAXED);
}

static void emit(struct cache *c, enum cache_change_kind kind, uint64_t parent_ino, uint64_t ino,
		 const struct cache_node *named)
{
	if (!c->cfg.notify || c->quiet)
		return;
	struct cache_change chg = {.kind = kind, .parent_ino = parent_ino, .ino = ino};
	if (named) {
		chg.seg = cache_node_seg(named);
		chg.seg_len = named->seg_len;
		chg.ns = named->ns;
	}
	c->cfg.notify(c->cfg.notify_arg, &chg);
}

/* n's content changed (up to its mod_revision): the kernel drops its pages
 * and attributes. Lock held. */
static void emit_content(struct cache *c, struct cache_node *n)
{
	if (!c->cfg.notify || c->quiet)
		return;
	struct cache_change chg = {
		.kind = CACHE_CHG_CONTENT, .ino = cache_file_ino(n), .rev = n->mod_revision};
	c->cfg.notify(c->cfg.notify_arg, &chg);
}

/* The %value entry of a directory that is also a key. */
static void emit_value_entry(struct cache *c, enum cache_change_kind kind, struct cache_node *n)
{
	if (!c->cfg.notify || c->quiet)
		return;
	struct cache_change chg = {.kind = kind,
				   .parent_ino = cache_dir_ino(n),
				   .ino = cache_file_ino(n),
				   .seg = NULL,
				   .seg_len = 0,
				   .ns = -1};
	c->cfg.notify(c->cfg.notify_arg, &chg);
}

/* ---- value cache (lru_lock held) ---- */

/* The stored bytes of one version of a key, and (text) their rendering
 * when kept. Immutable once made, but for the links. A node that leaves
 * the tree while handles still read it keeps its key after the value
 * (key_len > 0), since a rendering needs the key. */
struct cache_val {
	struct cache_lru lru;	 /* first; next is NULL when out of the LRU */
	struct cache_node *node; /* whose n->val it is, while in the LRU */
	struct cache_text *text; /* its rendering, NULL if none */
	int64_t rev;
	uint32_t shown;	  /* the size reads show for this version */
	uint32_t len;	  /* of the stored value */
	uint32_t key_len; /* of the key after it, when detached */
	bool as_stored;	  /* the render function declined: shown as stored */
	char data[];
};

/* The rendered content of one version, in the text LRU. */
struct cache_text {
	struct cache_text *prev, *next; /* NULL when out of the LRU */
	struct cache_val *owner;
	size_t len;
	char *data;
};

/* NULL when the value cannot be cached (out of memory, or sizes over
 * 4 GiB: etcd's values are below 2 GiB, but a rendering may be larger). */
static struct cache_val *val_new(const struct kv_kv *kv, size_t shown, bool as_stored)
{
	if (kv->value_len > UINT32_MAX || shown > UINT32_MAX)
		return NULL;
	struct cache_val *v = malloc(offsetof(struct cache_val, data) + kv->value_len);
	if (!v)
		return NULL;
	/* field by field: the allocation may end inside the struct's padding */
	v->lru.prev = v->lru.next = NULL;
	v->node = NULL;
	v->text = NULL;
	v->rev = kv->mod_revision;
	v->shown = (uint32_t)shown;
	v->len = (uint32_t)kv->value_len;
	v->key_len = 0;
	v->as_stored = as_stored;
	if (kv->value_len)
		memcpy(v->data, kv->value, kv->value_len);
	return v;
}

static void lru_unlink(struct cache *c, struct cache_val *v)
{
	if (!v || !v->lru.next)
		return;
	v->lru.prev->next = v->lru.next;
	v->lru.next->prev = v->lru.prev;
	v->lru.prev = v->lru.next = NULL;
	c->lru_bytes -= v->len;
}

static void lru_front(struct cache *c, struct cache_val *v)
{
	if (v->lru.next) {
		v->lru.prev->next = v->lru.next;
		v->lru.next->prev = v->lru.prev;
	} else {
		c->lru_bytes += v->len;
	}
	v->lru.next = c->lru_head.next;
	v->lru.prev = &c->lru_head;
	c->lru_head.next->prev = &v->lru;
	c->lru_head.next = &v->lru;
}

static void text_unlink(struct cache *c, struct cache_text *t)
{
	if (!t || !t->next)
		return;
	if (t->next == t) {
		c->text_mru = NULL;
	} else {
		t->prev->next = t->next;
		t->next->prev = t->prev;
		if (c->text_mru == t)
			c->text_mru = t->next;
	}
	t->prev = t->next = NULL;
	c->text_bytes -= t->len;
}

static void text_front(struct cache *c, struct cache_text *t)
{
	if (c->text_mru == t)
		return;
	text_unlink(c, t);
	struct cache_text *h = c->text_mru;
	if (!h) {
		t->prev = t->next = t;
	} else {
		t->next = h;
		t->prev = h->prev;
		h->prev->next = t;
		h->prev = t;
	}
	c->text_mru = t;
	c->text_bytes += t->len;
}

static void text_drop(struct cache *c, struct cache_val *v)
{
	struct cache_text *t = v->text;
	if (!t)
		return;
	text_unlink(c, t);
	free(t->data);
	free(t);
	v->text = NULL;
}

/* Frees v (out of the LRU) and its text. */
static void val_free(struct cache *c, struct cache_val *v)
{
	if (!v)
		return;
	text_drop(c, v);
	free(v);
}

/* Keeps data (owned) as v's text, evicting the least recently used texts
 * beyond the bound. The newest stays even when larger than the bound
 * (alone then): a file read in several requests renders once, not once per
 * request. */
static void text_set(struct cache *c, struct cache_val *v, char *data, size_t len)
{
	text_drop(c, v);
	struct cache_text *t = c->text_max ? malloc(sizeof(*t)) : NULL;
	if (!t) {
		free(data);
		return;
	}
	*t = (struct cache_text){.owner = v, .len = len, .data = data};
	v->text = t;
	text_front(c, t);
	while (c->text_bytes > c->text_max && c->text_mru->prev != t)
		text_drop(c, c->text_mru->prev->owner);
}

static void drop_rendered(struct cache *c, struct cache_node *n)
{
	pthread_mutex_lock(&c->lru_lock);
	lru_unlink(c, n->val);
	val_free(c, n->val);
	n->val = NULL;
	if (n->x) {
		val_free(c, n->x->rep_val);
		n->x->rep_val = NULL;
	}
	pthread_mutex_unlock(&c->lru_lock);
}

/* Makes val (owned, may be NULL) n's cached version rev, with its
 * rendering text (owned, may be NULL). Evicts from the tail to stay under
 * the bound. */
static void set_value(struct cache *c, struct cache_node *n, struct cache_val *val, char *text,
		      size_t text_len, int64_t rev)
{
	pthread_mutex_lock(&c->lru_lock);
	struct cache_node_x *x = n->x;
	struct cache_val *old = n->val;
	n->val = NULL;
	lru_unlink(c, old);
	if (val && val->len > c->val_max) {
		free(val);
		val = NULL;
	}
	if (old && x && old->rev == x->rep_rev && rev != x->rep_rev && !x->rep_val) {
		/* The kernel still believes in this version: keep it (and its
		 * text) for reads until it asks for attributes again. */
		x->rep_val = old;
	} else {
		if (x && rev == x->rep_rev) {
			val_free(c, x->rep_val);
			x->rep_val = NULL;
		}
		if (old && old->text && old->rev == rev && val && !text) {
			/* the same version again: its text still holds */
			val->text = old->text;
			val->text->owner = val;
			old->text = NULL;
		}
		val_free(c, old);
	}
	n->val = val;
	if (!val) {
		free(text); /* reads serve texts of cached versions only */
		pthread_mutex_unlock(&c->lru_lock);
		return;
	}
	val->node = n;
	if (text)
		text_set(c, val, text, text_len);
	lru_front(c, val);
	while (c->lru_bytes > c->val_max) {
		struct cache_val *t = (struct cache_val *)c->lru_head.prev;
		if (t == val || &t->lru == &c->lru_head)
			break;
		lru_unlink(c, t);
		t->node->val = NULL;
		val_free(c, t);
	}
	pthread_mutex_unlock(&c->lru_lock);
}

/* ---- tree ---- */

/* Node times are wall-clock (st_mtime), unlike changed. */
static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* An entry appeared in or vanished from dir. The initial load leaves the
 * times to the values (load_time). */
static void dir_changed(struct cache *c, struct cache_node *dir)
{
	if (!c->quiet && !c->own_change)
		dir->mtime_ns = now_ns();
}

/* Initial load: n's time is what its value records, and each directory
 * takes the latest time below it. Ancestors are never earlier than their
 * descendants here, so the walk stops at the first one already as late. */
static void load_time(struct cache_node *n, int64_t t)
{
	n->mtime_ns = t;
	for (struct cache_node *p = n->parent; p && p->mtime_ns < t; p = p->parent)
		p->mtime_ns = t;
}

/* The segment is stored at the end of the node, in the same allocation; a
 * rename moves it to the side record (seg_out). */
static struct cache_node *node_alloc(struct cache *c, const char *seg, size_t len, int ns)
{
	if (len >= UINT32_MAX)
		return NULL;
	struct cache_node *n = calloc(1, offsetof(struct cache_node, seg) + len + 1);
	if (!n)
		return NULL;
	memcpy(n->seg, seg, len);
	n->seg_len = (uint32_t)len;
	n->ns = (int8_t)ns;
	if (id_take(c, n) < 0) {
		free(n);
		return NULL;
	}
	return n;
}

/* Frees n and all it holds; its slot stays taken (cache_destroy). */
static void node_release(struct cache *c, struct cache_node *n)
{
	drop_rendered(c, n);
	struct cache_node_x *x = n->x;
	if (x) {
		if (x->local && c->local_ops)
			c->local_ops->free(x->local);
		free(x->seg);
		free(x->kids);
		free(x);
	}
	free(n);
}

static void node_free(struct cache *c, struct cache_node *n)
{
	id_put(c, n);
	node_release(c, n);
}

/* Squeezes the holes out of x's children, keeping their order. */
static void kids_compact(struct cache *c, struct cache_node_x *x)
{
	uint32_t j = 0;
	for (uint32_t i = 0; i < x->n_slots; i++) {
		if (!x->kids[i])
			continue;
		x->kids[j] = x->kids[i];
		node_at(c, x->kids[j])->pos = j;
		j++;
	}
	x->n_slots = j;
}

/* Makes room in dir for one more child, so that link_child cannot fail.
 * 0 or -ENOMEM. */
static int kids_reserve(struct cache *c, struct cache_node *dir)
{
	struct cache_node_x *x = x_get(dir);
	if (!x)
		return -ENOMEM;
	if (x->n_slots < x->cap)
		return 0;
	if (x->n_slots && x->n_kids <= x->n_slots / 2) {
		kids_compact(c, x);
		return 0;
	}
	size_t cap = x->cap;
	if (x->cap == UINT32_MAX ||
	    util_grow(&x->kids, &cap, (size_t)x->n_slots + 1, sizeof(*x->kids), 4) < 0)
		return -ENOMEM;
	x->cap = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
	return 0;
}

/* dir lost a child: an empty directory drops its array, and a record left
 * with nothing goes. Lock held for write. */
static void kids_settle(struct cache_node *dir)
{
	struct cache_node_x *x = dir->x;
	if (!x || x->n_kids)
		return;
	free(x->kids);
	x->kids = NULL;
	x->n_slots = x->cap = 0;
	x_trim(dir);
}

/* Puts n (its name set) last among dir's children (room reserved) and in
 * the name hash. */
static void link_child(struct cache *c, struct cache_node *dir, struct cache_node *n)
{
	n->parent = dir;
	size_t b = name_hash(dir->id, n->ns, cache_node_seg(n), n->seg_len) & (c->by_name_cap - 1);
	n->hnext = c->by_name[b];
	c->by_name[b] = idx_of(n);
	struct cache_node_x *x = dir->x;
	n->pos = x->n_slots;
	x->kids[x->n_slots++] = idx_of(n);
	x->n_kids++;
}

static struct cache_node *child_create(struct cache *c, struct cache_node *dir, int ns,
				       const char *seg, size_t len)
{
	if (grow_names(c) < 0 || kids_reserve(c, dir) < 0)
		return NULL;
	struct cache_node *n = node_alloc(c, seg, len, ns);
	if (!n) {
		kids_settle(dir);
		return NULL;
	}
	bool was_dir = cache_is_dir(dir);
	link_child(c, dir, n);
	c->n_nodes++;
	if (!was_dir && dir->parent) {
		/* A file grew a child: it is now a directory (new inode). */
		emit(c, CACHE_CHG_RETYPE, cache_dir_ino(dir->parent), cache_file_ino(dir), dir);
	}
	/* NEW clears negative dentries of a name that appeared in etcd. The
	 * mount's own mkdir or create needs none: the kernel takes the entry
	 * from its reply, and a late invalidation would unhash that fresh
	 * dentry under a process that already chdir'd into it (getcwd then
	 * fails with ENOENT). */
	if (!c->own_change)
		emit(c, CACHE_CHG_NEW, cache_dir_ino(dir), 0, n);
	dir_changed(c, dir);
	dir_changed(c, n); /* a new directory on a key's path is new now */
	return n;
}

/* Takes n out of its parent's children and the name hash (lock held for
 * write); n itself is untouched otherwise, and the parent keeps its array
 * (kids_settle). */
static void unlink_child(struct cache *c, struct cache_node *n)
{
	struct cache_node *dir = n->parent;
	size_t b = name_hash(dir->id, n->ns, cache_node_seg(n), n->seg_len) & (c->by_name_cap - 1);
	uint32_t *pp = &c->by_name[b];
	while (*pp && *pp != idx_of(n))
		pp = &node_at(c, *pp)->hnext;
	if (*pp)
		*pp = n->hnext;
	n->hnext = 0;
	struct cache_node_x *x = dir->x;
	x->kids[n->pos] = 0;
	x->n_kids--;
	while (x->n_slots && !x->kids[x->n_slots - 1])
		x->n_slots--;
	/* Holes are squeezed out once they outnumber the children: removals
	 * stay O(1) amortized and listings keep their order. */
	if (x->n_slots >= 8 && x->n_kids < x->n_slots / 2)
		kids_compact(c, x);
}

/* A node leaving the tree while handles read it can no longer name its
 * key, which a rendering needs: its cached version (out of the LRU now)
 * takes a copy of the key. Without one, reads of it that find no text
 * fail with ENOENT, as they do once the value was evicted. lru_lock
 * held, n still in the tree. */
static void keep_key(struct cache *c, struct cache_node *n)
{
	struct cache_val *v = n->val;
	if (!v || v->as_stored || v->text)
		return;
	size_t klen;
	char *key = cache_node_key(c, n, &klen);
	struct cache_val *nv =
		key && klen <= UINT32_MAX
			? realloc(v, offsetof(struct cache_val, data) + v->len + klen)
			: NULL;
	if (nv) {
		memcpy(nv->data + nv->len, key, klen);
		nv->key_len = (uint32_t)klen;
		n->val = nv;
	}
	free(key);
}

/* Unlinks n from its parent and the name hash (the parent's array stays:
 * kids_settle). Frees it unless referenced. */
static void node_detach(struct cache *c, struct cache_node *n)
{
	unlink_child(c, n);
	n->detached = true;
	c->n_nodes--;
	if (!cache_nlookup(n) && !cache_nopen(n)) {
		node_free(c, n);
	} else {
		/* Keep the content for handles that still read it, out of the
		 * LRUs so it cannot be evicted. */
		pthread_mutex_lock(&c->lru_lock);
		lru_unlink(c, n->val);
		if (n->val)
			text_unlink(c, n->val->text);
		if (n->x && n->x->rep_val)
			text_unlink(c, n->x->rep_val->text);
		if (cache_nopen(n) && c->cfg.render)
			keep_key(c, n);
		pthread_mutex_unlock(&c->lru_lock);
		n->parent = NULL;
	}
}

/* Removes n (which has no value and no children) and empty ancestors. */
static void prune(struct cache *c, struct cache_node *n)
{
	for (;;) {
		struct cache_local *l = cache_node_local(n);
		if (!n->parent || n->has_value || cache_n_children(n) || n->local_dir ||
		    (l && c->local_ops && c->local_ops->keep(l)))
			return;
		struct cache_node *dir = n->parent;
		bool file = !cache_is_dir(n);
		emit(c, CACHE_CHG_DELETE, cache_dir_ino(dir),
		     file ? cache_file_ino(n) : cache_dir_ino(n), n);
		node_detach(c, n);
		kids_settle(dir);
		dir_changed(c, dir);
		if (dir->parent && !cache_n_children(dir) && !dir->local_dir && dir->has_value) {
			/* Directory shrank back to a plain key. */
			emit(c, CACHE_CHG_RETYPE, cache_dir_ino(dir->parent), cache_dir_ino(dir),
			     dir);
			return;
		}
		n = dir;
	}
}

/* Splits a relative key into its namespace and first segment position. */
static const char *rel_key(const struct cache *c, const char *key, size_t key_len, size_t *rlen,
			   int *ns)
{
	const char *r = key + c->cfg.prefix_len;
	*rlen = key_len - c->cfg.prefix_len;
	*ns = 0;
	if (c->cfg.prefix_len == 0) {
		if (*rlen > 0 && r[0] == '/') {
			r++;
			(*rlen)--;
		} else {
			*ns = 1;
		}
	}
	return r;
}

bool cache_key_in_prefix(const struct cache *c, const char *key, size_t key_len)
{
	return key_len >= c->cfg.prefix_len && memcmp(key, c->cfg.prefix, c->cfg.prefix_len) == 0 &&
	       (key_len > c->cfg.prefix_len || c->cfg.prefix_len == 0);
}

/* Finds (create=false) or creates the node of a key. Lock held for write
 * when creating. */
static struct cache_node *walk(struct cache *c, const char *key, size_t key_len, bool create)
{
	if (!cache_key_in_prefix(c, key, key_len))
		return NULL;
	size_t rlen;
	int ns;
	const char *r = rel_key(c, key, key_len, &rlen, &ns);
	struct cache_node *n = c->root;
	size_t pos = 0;
	for (;;) {
		const char *slash = memchr(r + pos, '/', rlen - pos);
		size_t end = slash ? (size_t)(slash - r) : rlen;
		struct cache_node *ch = cache_child(c, n, ns, r + pos, end - pos);
		if (!ch) {
			if (!create)
				return NULL;
			ch = child_create(c, n, ns, r + pos, end - pos);
			if (!ch)
				return NULL;
		}
		n = ch;
		ns = 0;
		if (!slash)
			return n;
		pos = end + 1;
	}
}

char *cache_node_key(struct cache *c, const struct cache_node *n, size_t *len)
{
	size_t total = c->cfg.prefix_len;
	int depth = 0;
	for (const struct cache_node *p = n; p && p->parent; p = p->parent) {
		total += p->seg_len + 1;
		depth++;
	}
	if (depth == 0) {
		char *k = malloc(c->cfg.prefix_len + 1);
		if (!k)
			return NULL;
		memcpy(k, c->cfg.prefix, c->cfg.prefix_len);
		k[c->cfg.prefix_len] = 0;
		*len = c->cfg.prefix_len;
		return k;
	}
	total -= 1; /* no separator after the last segment */
	const struct cache_node *top = n;
	while (top->parent && top->parent->parent)
		top = top->parent;
	bool slash = c->cfg.prefix_len == 0 && top->ns == 0;
	if (slash)
		total += 1;
	char *k = malloc(total + 1);
	if (!k)
		return NULL;
	size_t pos = total;
	k[pos] = 0;
	for (const struct cache_node *p = n; p && p->parent; p = p->parent) {
		pos -= p->seg_len;
		memcpy(k + pos, cache_node_seg(p), p->seg_len);
		if (p->parent->parent)
			k[--pos] = '/';
	}
	if (slash)
		k[--pos] = '/';
	memcpy(k, c->cfg.prefix, c->cfg.prefix_len);
	*len = total;
	return k;
}

static bool tombstoned(struct cache *c, const char *key, size_t len, int64_t rev)
{
	for (struct cache_tomb *t = c->tombs; t; t = t->next)
		if (t->key_len == len && memcmp(t->key, key, len) == 0 && rev <= t->rev)
			return true;
	return false;
}

/* Even a resync's listing may not bring back a key held for a pending
 * delete: the delete has not reached etcd yet. */
static bool held(struct cache *c, const char *key, size_t len, int64_t rev)
{
	for (struct cache_tomb *t = c->tombs; t; t = t->next)
		if (t->held && t->key_len == len && memcmp(t->key, key, len) == 0 && rev <= t->rev)
			return true;
	return false;
}

static int add_tomb(struct cache *c, const char *key, size_t key_len, int64_t rev, bool hold)
{
	struct cache_tomb *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->key = malloc(key_len ? key_len : 1);
	if (!t->key) {
		free(t);
		return -ENOMEM;
	}
	memcpy(t->key, key, key_len);
	t->key_len = key_len;
	t->rev = rev;
	t->held = hold;
	t->next = c->tombs;
	c->tombs = t;
	return 0;
}

static void expire_tombs(struct cache *c)
{
	struct cache_tomb **pp = &c->tombs;
	while (*pp) {
		struct cache_tomb *t = *pp;
		if (!t->held && t->rev <= c->revision) {
			*pp = t->next;
			free(t->key);
			free(t);
		} else {
			pp = &t->next;
		}
	}
}

/* Raises seen_rev to rev (it only grows). */
static void bump_seen(struct cache *c, int64_t rev)
{
	int64_t cur = __atomic_load_n(&c->seen_rev, __ATOMIC_SEQ_CST);
	while (rev > cur && !__atomic_compare_exchange_n(&c->seen_rev, &cur, rev, false,
							 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		;
}

/* What a put brings: its size as shown, and (owned, may be NULL) its
 * stored bytes to cache and its rendering. */
struct shown {
	size_t size;
	struct cache_val *val;
	char *text;
	bool eio; /* the value must not be shown (render()) */
};

static void shown_free(struct shown *sh)
{
	free(sh->val);
	free(sh->text);
}

/* Applies a put, loaded_ns the time its value records (used by the
 * initial load only). Lock held for write. */
static void apply_put(struct cache *c, const struct kv_kv *kv, struct shown sh, bool force,
		      int64_t loaded_ns)
{
	bump_seen(c, kv->mod_revision);
	struct cache_node *n = walk(c, kv->key, kv->key_len, false);
	if (n && n->has_value && kv->mod_revision <= n->mod_revision && !force) {
		shown_free(&sh);
		return;
	}
	if (!force ? tombstoned(c, kv->key, kv->key_len, kv->mod_revision)
		   : held(c, kv->key, kv->key_len, kv->mod_revision)) {
		shown_free(&sh);
		return;
	}
	if (!n)
		n = walk(c, kv->key, kv->key_len, true);
	if (!n) {
		log_err("cache: out of memory adding a key");
		shown_free(&sh);
		return;
	}
	bool had = n->has_value;
	bool changed = !had || n->mod_revision != kv->mod_revision;
	if (!had) {
		n->has_value = true;
		c->n_keys++;
		if (cache_is_dir(n))
			emit_value_entry(c, CACHE_CHG_NEW, n);
	}
	n->create_revision = kv->create_revision;
	n->mod_revision = kv->mod_revision;
	n->version = kv->version;
	n->lease = kv->lease;
	n->raw_size = (uint32_t)kv->value_len;
	if (c->quiet)
		load_time(n, loaded_ns);
	else if (changed && !c->own_change)
		n->mtime_ns = now_ns();
	n->rendered_size = (uint32_t)sh.size;
	set_value(c, n, sh.val, sh.text, sh.size, kv->mod_revision);
	if (!had && !c->quiet) {
		/* a new key is as unsettled as a changed one */
		pthread_mutex_lock(&c->lru_lock);
		mark_changed(n);
		pthread_mutex_unlock(&c->lru_lock);
	}
	if (changed && had) {
		pthread_mutex_lock(&c->lru_lock);
		/* Without a record the kernel holds no inode of n: nothing
		 * pending, and no version kept for it (set_value). */
		if (n->x)
			n->x->pending_inval = kv->mod_revision;
		mark_changed(n);
		pthread_mutex_unlock(&c->lru_lock);
		emit_content(c, n);
	}
}

static void apply_delete(struct cache *c, const char *key, size_t key_len, int64_t rev, bool force)
{
	bump_seen(c, rev);
	struct cache_node *n = walk(c, key, key_len, false);
	if (!n || !n->has_value)
		return;
	if (!force && rev <= n->mod_revision)
		return;
	n->has_value = false;
	c->n_keys--;
	n->mod_revision = rev;
	if (!cache_nopen(n))
		drop_rendered(c, n);
	if (cache_is_dir(n)) {
		emit_value_entry(c, CACHE_CHG_DELETE, n);
		emit(c, CACHE_CHG_CONTENT, 0, cache_file_ino(n), NULL);
		dir_changed(c, n); /* its %value entry vanished */
	} else {
		prune(c, n);
	}
}

/* ---- rendering ---- */

/* The content kv's value shows: *len is its size, and *text, when text is
 * not NULL, its rendering (malloc'd; NULL asks for the size alone, which
 * the renderer finds without holding the text). *as_stored: it is shown as
 * stored (no render function, one that declined it, or a rendering of 4
 * GiB or more: node sizes are 32-bit), and *text is NULL. -EIO: the value
 * must not be shown at all (an encrypted value the key does not open):
 * reads render it again, and fail. */
static int render(struct cache *c, const struct kv_kv *kv, char **text, size_t *len,
		  bool *as_stored)
{
	*as_stored = true;
	if (text)
		*text = NULL;
	*len = kv->value_len;
	if (!kv->value || !c->cfg.render)
		return 0;
	int r = c->cfg.render(c->cfg.render_arg, kv->key, kv->key_len, kv->value, kv->value_len,
			      kv->mod_revision, text, len);
	if (r == 0 && *len <= UINT32_MAX) {
		*as_stored = false;
		return 0;
	}
	if (text) {
		if (r == 0)
			free(*text);
		*text = NULL;
	}
	*len = kv->value_len;
	return r == -EIO ? -EIO : 0;
}

/* Renders kv for a put: its size, its stored bytes to cache and, when
 * keep_text, its rendering too. The initial sync keeps no text: a YAML
 * view would hold two to three times the stored bytes (docs/design.md,
 * Memory), so it asks for the size alone. */
static struct shown render_put(struct cache *c, const struct kv_kv *kv, bool keep_text)
{
	struct shown sh = {0};
	bool as_stored;
	int r = render(c, kv, keep_text ? &sh.text : NULL, &sh.size, &as_stored);
	sh.eio = r == -EIO;
	sh.val = val_new(kv, sh.size, r == 0 && as_stored);
	return sh;
}

/*
 * Renders a page of a listing. A YAML rendering costs 0.1-0.4 ms per object
 * (bench/run: 316 us per Pod), so with a render function it is nearly all of
 * an initial sync's time: 10,000 Pods take 3 s on one core against 0.2 s to
 * fetch them. Rendering is pure (the codec keeps no shared state), so the
 * page is shared among up to RENDER_THREADS helper threads and the caller;
 * items are handed out one at a time because their costs vary 100-fold.
 */
#define RENDER_THREADS 8
#define RENDER_MIN_PARALLEL 16 /* keys per helper thread at least */

struct render_job {
	struct cache *c;
	const struct kv_kv *kvs;
	struct shown *shs;
	int64_t *times; /* NULL, or the time each value records (initial load) */
	size_t n;
	size_t next; /* next item to take (atomic) */
};

static void *render_worker(void *arg)
{
	struct render_job *j = arg;
	for (;;) {
		size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
		if (i >= j->n)
			break;
		j->shs[i] = render_put(j->c, &j->kvs[i], false);
		const struct kv_kv *kv = &j->kvs[i];
		if (j->times && kv->value)
			j->times[i] = j->c->cfg.value_time(j->c->cfg.value_time_arg, kv->key,
							   kv->key_len, kv->value, kv->value_len);
	}
	return NULL;
}

static size_t usable_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (size_t)CPU_COUNT(&set);
	return 1;
}

/*
 * The next page of a listing. The listing's own thread fetches it while
 * helpers render this one (render_page), so a YAML view's sync takes about
 * the longer of the two, not their sum (bench/run: 100k Pods fetch in 1.8 s
 * and render in about as long on two cores). It is fetched here, not on a
 * thread of its own, so that a page's memory is allocated and freed by the
 * same thread: a page fetched by a short-lived thread lives in that thread's
 * malloc arena, which glibc shrinks back to the kernel once the page is
 * freed and the next page faults in again (docs/performance.md, mount
 * time). At most one range is in flight, so etcd sees no more load than
 * from a sequential listing.
 */
struct next_page {
	struct kv *kv;
	struct kv_range_req req;
	struct kv_range_result res;
	int ret;
	int tries;		  /* see range_page */
	int64_t took_us, done_us; /* the fetch's span and end (util_now_us) */
};

static void next_page_fetch(struct next_page *f);

/* Helper threads for a page of n keys. The caller renders too, but when it
 * fetches the next page first, the helpers get the CPUs meanwhile; a view
 * without rendering then still copies its values on one helper. A paced
 * listing (alone) renders on its own thread only. */
static size_t render_helpers(const struct cache *c, size_t n, bool fetching, bool alone)
{
	size_t want = 0;
	if (alone)
		return 0;
	if (c->cfg.render)
		want = fetching ? c->render_threads : c->render_threads - 1;
	else if (fetching)
		want = 1;
	if (want > n / RENDER_MIN_PARALLEL)
		want = n / RENDER_MIN_PARALLEL; /* smaller: thread start-up would dominate */
	return want;
}

/* Renders kvs into shs (and times); next, when not NULL, is fetched on this
 * thread meanwhile. alone: no helper threads. */
static void render_page(struct cache *c, const struct kv_kv *kvs, size_t n, struct shown *shs,
			int64_t *times, struct next_page *next, bool alone)
{
	struct render_job j = {.c = c, .kvs = kvs, .shs = shs, .times = times, .n = n};
	pthread_t th[RENDER_THREADS];
	size_t nt = 0, want = render_helpers(c, n, next != NULL, alone);
	/* A thread that cannot start just leaves more work to us. */
	while (nt < want && pthread_create(&th[nt], NULL, render_worker, &j) == 0)
		nt++;
	if (next)
		next_page_fetch(next);
	render_worker(&j);
	for (size_t i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	__atomic_add_fetch(&c->render_helpers_used, nt, __ATOMIC_RELAXED);
}

/* ---- sync ---- */

/* Doubles the victim arrays of a resync sweep. -ENOMEM leaves them as
 * they were. */
static int grow_victims(char ***vk, size_t **vl, size_t *cap)
{
	size_t ncap = *cap ? *cap * 2 : 64;
	char **nk = realloc(*vk, ncap * sizeof(*nk));
	if (!nk)
		return -ENOMEM;
	*vk = nk;
	size_t *nl = realloc(*vl, ncap * sizeof(*nl));
	if (!nl)
		return -ENOMEM;
	*vl = nl;
	*cap = ncap;
	return 0;
}

/*
 * Pages of a big listing end at a window, not at the prefix's end. etcd 3.4
 * serves a range with a limit by first collecting the revision of every key
 * from the start key to range_end, holding its index's read lock, and only
 * then cutting at the limit (mvcc treeIndex.Revisions). Paging a 1M-key
 * prefix to its end so costs each page a walk of all that is left: quadratic
 * in all, and every walk holds off every write to etcd while it runs (the
 * stall of etcd-io/etcd#7719). So only the first page spans the whole prefix
 * (its count is the progress total); each later page ends 2^-bits of the key
 * space (keys read as base-256 fractions) after its start key: bits is the
 * span of the page before when that one was full, else the window before
 * widened by how far short of a page it fell. Walks stay near the keys
 * listed, plus one per jump into a denser part of the key space.
 */

/* Bits two keys share from their first byte on. */
static unsigned common_bits(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen, i = 0;
	while (i < n && a[i] == b[i])
		i++;
	if (i == n)
		return (unsigned)(8 * i);
	unsigned x = (unsigned char)(a[i] ^ b[i]);
	return (unsigned)(8 * i) + (unsigned)__builtin_clz(x) - 24;
}

/* 64 bits of a key from bit off on, zeros past its end. */
static uint64_t key_bits64(const char *k, size_t len, unsigned off)
{
	size_t b = off / 8;
	unsigned sh = off % 8;
	uint64_t v = 0;
	for (size_t i = 0; i < 9; i++) {
		uint64_t byte = b + i < len ? (unsigned char)k[b + i] : 0;
		v = i < 8 ? v << 8 | byte : sh ? v << sh | byte >> (8 - sh) : v;
	}
	return v;
}

/* The largest power of two under the span from a to b (a < b), as bits. */
static unsigned span_bits(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned cb = common_bits(a, alen, b, blen);
	uint64_t d = key_bits64(b, blen, cb) - key_bits64(a, alen, cb);
	return cb + 1 + (d ? (unsigned)__builtin_clzll(d) : 63);
}

/* The end of the window of 2^-bits from key: key cut to bits, plus one at
 * the last bit. Always above key. *out is NULL when the window reaches end
 * (end "\0" of length 1: no end). */
static int window_end(const char *key, size_t len, unsigned bits, const char *end, size_t end_len,
		      char **out, size_t *out_len)
{
	size_t n = (bits + 7) / 8;
	unsigned char *w = malloc(n);
	*out = NULL;
	if (!w)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		w[i] = i < len ? (unsigned char)key[i] : 0;
	unsigned add = 1u << (7 - (bits - 1) % 8);
	bool carry = true;
	for (size_t i = n; carry && i-- > 0; add = 1) {
		unsigned v = w[i] + add;
		w[i] = (unsigned char)v;
		carry = v > 255;
	}
	bool to_end = carry;
	if (!carry && !(end_len == 1 && end[0] == 0)) {
		int d = memcmp(w, end, n < end_len ? n : end_len);
		to_end = d > 0 || (d == 0 && n >= end_len);
	}
	if (to_end) {
		free(w);
		return 0;
	}
	*out = (char *)w;
	*out_len = n;
	return 0;
}

/* One listing's pages: where the next one starts, and its window. */
struct pager {
	char *start, *end;
	size_t start_len, end_len;
	unsigned bits; /* the next page's window; 0: to the end */
	char *wend;    /* its end; NULL: end */
	size_t wend_len;
	int64_t rev; /* 0 until the first page fixes it */
	size_t page_size;
};

static int pager_init(struct pager *p, const struct cache *c, int64_t rev)
{
	*p = (struct pager){.rev = rev, .page_size = c->cfg.page_size};
	p->end = malloc(c->cfg.prefix_len + 1);
	p->start = malloc(c->cfg.prefix_len + 1);
	if (!p->end || !p->start)
		return -ENOMEM;
	p->end_len = kv_prefix_end(c->cfg.prefix, c->cfg.prefix_len, p->end);
	memcpy(p->start, c->cfg.prefix, c->cfg.prefix_len);
	p->start_len = c->cfg.prefix_len;
	if (p->start_len == 0) {
		p->start[0] = 0;
		p->start_len = 1; /* etcd: key "\0" with range_end "\0" = everything */
	}
	return 0;
}

static void pager_free(struct pager *p)
{
	free(p->start);
	free(p->end);
	free(p->wend);
}

/* The next page's request; it points into p until pager_advance. */
static int pager_req(struct pager *p, struct kv_range_req *req)
{
	if (p->bits) {
		int ret = window_end(p->start, p->start_len, p->bits, p->end, p->end_len, &p->wend,
				     &p->wend_len);
		if (ret < 0)
			return ret;
	}
	*req = (struct kv_range_req){.key = p->start,
				     .key_len = p->start_len,
				     .range_end = p->wend ? p->wend : p->end,
				     .range_end_len = p->wend ? p->wend_len : p->end_len,
				     .revision = p->rev,
				     .limit = (int64_t)p->page_size,
				     .serializable = false};
	return 0;
}

/* Moves p past the page res; *more: whether a page is left. */
static int pager_advance(struct pager *p, const struct kv_range_result *res, bool *more)
{
	*more = res->more && res->n_kvs > 0;
	if (*more) {
		const struct kv_kv *first = &res->kvs[0], *last = &res->kvs[res->n_kvs - 1];
		char *s = malloc(last->key_len + 1);
		if (!s)
			return -ENOMEM;
		memcpy(s, last->key, last->key_len);
		s[last->key_len] = 0; /* the smallest key after last */
		free(p->start);
		p->start = s;
		p->start_len = last->key_len + 1;
		/* the next window: about as wide as this full page */
		p->bits = span_bits(first->key, first->key_len, last->key, last->key_len);
	} else if (p->wend) {
		/* the window is done, not the listing */
		free(p->start);
		p->start = p->wend;
		p->start_len = p->wend_len;
		p->wend = NULL;
		*more = true;
		/* short of a page: wider by the shortfall, 4x at most, 2x past
		 * an empty one (a denser part may lie ahead) */
		unsigned wider = res->n_kvs ? 0 : 1;
		while (res->n_kvs && wider < 2 && (res->n_kvs << (wider + 1)) <= p->page_size)
			wider++;
		p->bits = p->bits > wider ? p->bits - wider : 1;
	}
	free(p->wend);
	p->wend = NULL;
	return 0;
}

/*
 * The initial sync asks a page that timed out again, after 1, 2 and 4 s: a
 * busy etcd (its compaction, or a loaded machine: bench/run --huge once saw
 * one range of tree-1m take over the 5 s request timeout) must not fail a
 * mount that has listed most of a big prefix. A resync tries once: the
 * health thread already starts a failed one again.
 */
#define SYNC_PAGE_TRIES 4

static int range_page(struct kv *kv, const struct kv_range_req *req, struct kv_range_result *res,
		      int tries)
{
	for (int i = 1;; i++) {
		int ret = kv_range(kv, req, res);
		if (ret != -ETIMEDOUT || i >= tries)
			return ret;
		log_warn("sync: a page of the listing timed out; asking again in %d s (try %d of "
			 "%d)",
			 1 << (i - 1), i + 1, tries);
		sleep(1u << (i - 1));
	}
}

static void next_page_fetch(struct next_page *f)
{
	int64_t t = util_now_us();
	f->ret = range_page(f->kv, &f->req, &f->res, f->tries);
	f->done_us = util_now_us();
	f->took_us = f->done_us - t;
}

/*
 * A big listing is paced (cache_config.sync_pace). On two CPUs, measured with
 * a closed-loop writer of small puts (docs/performance.md, "Pacing"): while
 * etcd serves page after page, the writer's put p99 is 4-6x its p99 alone;
 * while both CPUs merely run busy loops, even at SCHED_IDLE, about 3x; with
 * one CPU busy at nice +10, 1.2x. So a paced listing renders on one thread
 * (the listing's, nice) and asks for its next page only once etcd has been
 * idle pace times as long as it took to serve the last one: at most one CPU
 * works for the listing at a time, and etcd serves it a 1/(1+pace) share of
 * the time. A page that took long (a retry after a timeout) pauses at most
 * PACE_MAX_MS. The first page decides, by its count, whether "auto" paces: a
 * small prefix is listed at full speed, its burst over in seconds.
 */
#define PACE_MAX_MS 1000

static double sync_pace(const struct cache *c, const struct kv_range_result *first)
{
	if (c->cfg.sync_pace >= 0)
		return c->cfg.sync_pace;
	uint64_t above = c->cfg.pace_above ? c->cfg.pace_above : CACHE_PACE_ABOVE;
	return first->count > 0 && (uint64_t)first->count > above ? CACHE_PACE_AUTO : 0;
}

/* Waits out the pause after f's last fetch; -ECANCELED when the cache stops
 * meanwhile (a resync must not hold up an unmount for its whole listing). */
static int pace_pause(struct cache *c, const struct next_page *f, double pace)
{
	int64_t idle_us = (int64_t)(pace * (double)f->took_us);
	if (idle_us > PACE_MAX_MS * 1000)
		idle_us = PACE_MAX_MS * 1000;
	int64_t left_us = f->done_us + idle_us - util_now_us();
	pthread_mutex_lock(&c->health_mu);
	if (left_us > 0) {
		struct timespec ts;
		util_deadline_ts(CLOCK_REALTIME, (long)((left_us + 999) / 1000), &ts);
		/* health_cv also wakes for resync requests: wait on */
		while (!c->stopping &&
		       pthread_cond_timedwait(&c->health_cv, &c->health_mu, &ts) == 0)
			;
	}
	int ret = c->stopping ? -ECANCELED : 0;
	pthread_mutex_unlock(&c->health_mu);
	return ret;
}

/* Renders a listed page (without the lock: a YAML rendering may be slow),
 * then applies it. mark: a resync's, whose sweep keeps the keys seen.
 * next, when not NULL, is fetched meanwhile; its ret is left alone if
 * this fails first. alone: render on this thread only (a paced listing). */
static int apply_page(struct cache *c, const struct kv_range_result *res, bool mark,
		      struct next_page *next, bool alone)
{
	size_t n = res->n_kvs ? res->n_kvs : 1;
	struct shown *shs = calloc(n, sizeof(*shs));
	/* Only the initial load reads times out of values: later, a key's
	 * time is when we saw it change. */
	bool want_times = c->quiet && c->cfg.value_time;
	int64_t *times = want_times ? calloc(n, sizeof(*times)) : NULL;
	int ret = 0;
	if (!shs || (want_times && !times)) {
		ret = -ENOMEM;
		goto out;
	}
	render_page(c, res->kvs, res->n_kvs, shs, times, next, alone);
	cache_wrlock(c);
	for (size_t i = 0; i < res->n_kvs; i++) {
		const struct kv_kv *kv = &res->kvs[i];
		if (!cache_key_in_prefix(c, kv->key, kv->key_len)) {
			shown_free(&shs[i]);
			continue;
		}
		struct cache_node *nd = walk(c, kv->key, kv->key_len, false);
		if (nd && nd->has_value && nd->mod_revision == kv->mod_revision) {
			shown_free(&shs[i]);
		} else {
			/* force: a resync may legitimately go "back" after a
			 * restore; the listing is the truth at rev. */
			apply_put(c, kv, shs[i], mark, times ? times[i] : 0);
			nd = walk(c, kv->key, kv->key_len, false);
		}
		if (mark && nd)
			nd->seen = true;
	}
	cache_unlock(c);
out:
	free(shs);
	free(times);
	return ret;
}

/* Clears every node's seen bit before a resync's listing (a failed one
 * before may have left some set). */
static void unsee_all(struct cache *c)
{
	cache_wrlock(c);
	uint32_t i = 0;
	for (struct cache_node *n; (n = cache_next_node(c, &i));)
		n->seen = false;
	cache_unlock(c);
}

/* A resync's sweep: deletes every key the listing did not see (sort-free:
 * the listing set the seen bit of the others), and clears the bits. */
static int sweep(struct cache *c, int64_t rev)
{
	int ret = 0;
	cache_wrlock(c);
	size_t n_victims = 0, cap = 0;
	char **vk = NULL;
	size_t *vl = NULL;
	uint32_t it = 0;
	for (struct cache_node *n; (n = cache_next_node(c, &it));) {
		bool seen = n->seen;
		n->seen = false;
		if (!n->has_value || n->detached || seen)
			continue;
		if (n_victims == cap && grow_victims(&vk, &vl, &cap) < 0) {
			ret = -ENOMEM;
			goto out;
		}
		vk[n_victims] = cache_node_key(c, n, &vl[n_victims]);
		n_victims++;
	}
	for (size_t i = 0; i < n_victims; i++)
		if (vk[i])
			apply_delete(c, vk[i], vl[i], rev, true);
	if (n_victims)
		log_info("resync: %zu keys deleted while the watch was away", n_victims);
out:
	for (size_t i = 0; i < n_victims; i++)
		free(vk[i]);
	free(vk);
	free(vl);
	cache_unlock(c);
	if (ret < 0)
		log_err("resync: out of memory listing the keys deleted while the watch was away");
	return ret;
}

/* Publishes a listing's progress, and logs it every 2 s. */
static void sync_progress(struct cache *c, uint64_t total, const struct kv_range_result *res,
			  int64_t t0, int64_t *last_report)
{
	/* each page's count is what is left from its first key on */
	if (total == res->n_kvs && res->count > 0)
		__atomic_store_n(&c->sync_total, (uint64_t)res->count, __ATOMIC_RELAXED);
	__atomic_store_n(&c->sync_done, total, __ATOMIC_RELAXED);
	int64_t t = util_now_ms();
	if (t - *last_report <= 2000)
		return;
	char line[160];
	cache_progress_text(line, sizeof(line), total,
			    __atomic_load_n(&c->sync_total, __ATOMIC_RELAXED), t - t0, false);
	log_info("sync: %s", line);
	*last_report = t;
}

/* Lists the prefix at rev (0 = latest) and makes the tree equal to it;
 * *at: the revision listed. mark_sweep (a resync) also deletes the keys
 * not in the listing. */
static int list_all(struct cache *c, int64_t rev, bool mark_sweep, int64_t *at)
{
	struct pager pg;
	struct next_page f = {.kv = c->cfg.kv, .tries = mark_sweep ? 1 : SYNC_PAGE_TRIES};
	struct kv_range_result res;
	uint64_t total = 0;
	int64_t t0 = util_now_ms(), last_report = t0;
	__atomic_store_n(&c->sync_done, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&c->sync_total, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&c->sync_t0_ms, t0, __ATOMIC_RELAXED);
	__atomic_store_n(&c->syncing, true, __ATOMIC_RELAXED);
	if (mark_sweep)
		unsee_all(c);
	int ret = pager_init(&pg, c, rev);
	if (ret == 0)
		ret = pager_req(&pg, &f.req);
	if (ret == 0) {
		next_page_fetch(&f);
		ret = f.ret;
		res = f.res;
	}
	double pace = ret == 0 ? sync_pace(c, &res) : 0;
	bool paced = pace > 0;
	if (paced)
		log_info("sync: %lld keys: paced, etcd idle %.1f times as long as each page takes "
			 "(--sync-pace)",
			 (long long)res.count, pace);
	for (bool more = true; ret == 0 && more;) {
		if (pg.rev == 0)
			pg.rev = res.revision;
		bool pending = false;
		ret = pager_advance(&pg, &res, &more);
		if (ret == 0 && more && (ret = pager_req(&pg, &f.req)) == 0)
			pending = true;
		f.ret = -ECANCELED; /* not fetched */
		if (ret == 0)
			ret = apply_page(c, &res, mark_sweep, pending && !paced ? &f : NULL, paced);
		total += res.n_kvs;
		sync_progress(c, total, &res, t0, &last_report);
		kv_range_result_free(&res);
		if (pending && paced && ret == 0 && (ret = pace_pause(c, &f, pace)) == 0)
			next_page_fetch(&f);
		if (pending && f.ret == 0 && ret == 0)
			res = f.res;
		else if (pending && f.ret == 0)
			kv_range_result_free(&f.res);
		else if (pending && ret == 0)
			ret = f.ret;
	}
	if (ret == 0 && mark_sweep)
		ret = sweep(c, pg.rev);
	if (ret == 0) {
		log_info("sync: %llu keys at revision %lld in %.2f s", (unsigned long long)total,
			 (long long)pg.rev, (util_now_ms() - t0) / 1000.0);
		*at = pg.rev;
		__atomic_store_n(&c->sync_total, total, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&c->syncing, false, __ATOMIC_RELAXED);
	pager_free(&pg);
	return ret;
}

void cache_progress_text(char *buf, size_t size, uint64_t done, uint64_t total, int64_t elapsed_ms,
			 bool finished)
{
	if (finished) {
		snprintf(buf, size, "%llu keys", (unsigned long long)done);
		return;
	}
	int n = total ? snprintf(buf, size, "%llu of %llu keys (%llu%%)", (unsigned long long)done,
				 (unsigned long long)total,
				 (unsigned long long)(done * 100 / total))
		      : snprintf(buf, size, "%llu keys", (unsigned long long)done);
	if (n < 0 || (size_t)n >= size || elapsed_ms < 1000 || !done)
		return;
	double rate = done * 1000.0 / elapsed_ms;
	int m = snprintf(buf + n, size - n, ", %.0f keys/s", rate);
	if (m < 0 || (size_t)(n + m) >= size || total <= done)
		return;
	snprintf(buf + n + m, size - n - m, ", about %.0f s left", (total - done) / rate);
}

/* ---- watch ---- */

static void set_health(struct cache *c, int h)
{
	int old = __atomic_exchange_n(&c->health, h, __ATOMIC_SEQ_CST);
	if (old == h)
		return;
	log_info("watch: %s", h == CACHE_HEALTHY    ? "healthy"
			      : h == CACHE_DEGRADED ? "degraded (serving with revalidation)"
						    : "syncing");
	if (h != CACHE_HEALTHY) {
		/* Long kernel attribute/entry lifetimes are only safe while
		 * the watch keeps them true. */
		cache_rdlock(c);
		emit(c, CACHE_CHG_ALL_ATTRS, 0, 0, NULL);
		cache_unlock(c);
	}
}

static void request_resync(struct cache *c);

static void watch_cb(void *arg, const struct kv_watch_batch *b)
{
	struct cache *c = arg;
	switch (b->state) {
	case KV_WATCH_EVENTS: {
		struct shown *shs = calloc(b->n_events ? b->n_events : 1, sizeof(*shs));
		if (!shs) {
			log_err("watch: out of memory; resyncing");
			request_resync(c);
			return;
		}
		for (size_t i = 0; i < b->n_events; i++)
			if (b->events[i].type == KV_EVENT_PUT)
				shs[i] = render_put(c, &b->events[i].kv, true);
		cache_wrlock(c);
		int64_t maxrev = c->revision;
		for (size_t i = 0; i < b->n_events; i++) {
			const struct kv_event *e = &b->events[i];
			if (!cache_key_in_prefix(c, e->kv.key, e->kv.key_len)) {
				shown_free(&shs[i]);
				continue;
			}
			if (e->type == KV_EVENT_PUT)
				apply_put(c, &e->kv, shs[i], false, 0);
			else if (!tombstoned(c, e->kv.key, e->kv.key_len, e->kv.mod_revision))
				apply_delete(c, e->kv.key, e->kv.key_len, e->kv.mod_revision,
					     false);
			if (e->kv.mod_revision > maxrev)
				maxrev = e->kv.mod_revision;
			__atomic_add_fetch(&c->events, 1, __ATOMIC_RELAXED);
		}
		if (b->revision > maxrev)
			maxrev = b->revision;
		__atomic_store_n(&c->revision, maxrev, __ATOMIC_SEQ_CST);
		bump_seen(c, maxrev);
		expire_tombs(c);
		cache_unlock(c);
		free(shs);
		__atomic_store_n(&c->last_ok_ms, util_now_ms(), __ATOMIC_SEQ_CST);
		break;
	}
	case KV_WATCH_PROGRESS:
		if (b->revision > __atomic_load_n(&c->revision, __ATOMIC_SEQ_CST))
			__atomic_store_n(&c->revision, b->revision, __ATOMIC_SEQ_CST);
		__atomic_store_n(&c->last_ok_ms, util_now_ms(), __ATOMIC_SEQ_CST);
		break;
	case KV_WATCH_CONNECTED:
		__atomic_store_n(&c->last_ok_ms, util_now_ms(), __ATOMIC_SEQ_CST);
		set_health(c, CACHE_HEALTHY);
		break;
	case KV_WATCH_DISCONNECTED:
		log_warn("watch: disconnected (%s); reconnecting", strerror(-b->err));
		set_health(c, CACHE_DEGRADED);
		break;
	case KV_WATCH_COMPACTED:
		log_warn("watch: revision %lld was compacted (compact revision %lld); re-listing",
			 (long long)(c->revision + 1), (long long)b->compact_revision);
		set_health(c, CACHE_DEGRADED);
		request_resync(c);
		break;
	case KV_WATCH_CANCELED:
		log_warn("watch: canceled (%s); re-listing", strerror(b->err ? -b->err : EIO));
		set_health(c, CACHE_DEGRADED);
		request_resync(c);
		break;
	}
}

static void request_resync(struct cache *c)
{
	pthread_mutex_lock(&c->health_mu);
	c->resync_wanted = true;
	pthread_cond_signal(&c->health_cv);
	pthread_mutex_unlock(&c->health_mu);
}

static int start_watch(struct cache *c)
{
	char *end = malloc(c->cfg.prefix_len + 1);
	if (!end)
		return -ENOMEM;
	size_t end_len = kv_prefix_end(c->cfg.prefix, c->cfg.prefix_len, end);
	struct kv_watch_req req = {
		.key = c->cfg.prefix_len ? c->cfg.prefix : "\0",
		.key_len = c->cfg.prefix_len ? c->cfg.prefix_len : 1,
		.range_end = end,
		.range_end_len = end_len,
		.start_revision = c->revision + 1,
	};
	int ret = kv_watch(c->cfg.kv, &req, watch_cb, c, &c->watch);
	free(end);
	if (ret < 0)
		log_err("watch: cannot start: %s", strerror(-ret));
	return ret;
}

static void *health_main(void *arg)
{
	struct cache *c = arg;
	pthread_mutex_lock(&c->health_mu);
	while (!c->stopping) {
		if (c->resync_wanted) {
			c->resync_wanted = false;
			pthread_mutex_unlock(&c->health_mu);
			if (c->watch) {
				kv_watch_cancel(c->cfg.kv, c->watch);
				c->watch = NULL;
			}
			int64_t rev;
			int ret = list_all(c, 0, true, &rev);
			if (ret == 0) {
				__atomic_store_n(&c->revision, rev, __ATOMIC_SEQ_CST);
				__atomic_add_fetch(&c->resyncs, 1, __ATOMIC_RELAXED);
				ret = start_watch(c);
			}
			pthread_mutex_lock(&c->health_mu);
			if (ret < 0 && !c->stopping) {
				log_warn("resync failed (%s); retrying", strerror(-ret));
				c->resync_wanted = true;
			}
			continue;
		}
		struct timespec ts;
		util_deadline_ts(CLOCK_REALTIME, 1000, &ts);
		pthread_cond_timedwait(&c->health_cv, &c->health_mu, &ts);
		if (c->stopping || c->resync_wanted)
			continue;
		pthread_mutex_unlock(&c->health_mu);
		/* A stalled server keeps the watch stream open but silent; a
		 * cheap probe tells. */
		int64_t rev;
		int ret = kv_status(c->cfg.kv, &rev);
		if (ret < 0) {
			set_health(c, CACHE_DEGRADED);
		} else if (__atomic_load_n(&c->health, __ATOMIC_SEQ_CST) == CACHE_HEALTHY) {
			__atomic_store_n(&c->last_ok_ms, util_now_ms(), __ATOMIC_SEQ_CST);
		} else if (c->watch &&
			   __atomic_load_n(&c->health, __ATOMIC_SEQ_CST) == CACHE_DEGRADED &&
			   util_now_ms() - __atomic_load_n(&c->last_ok_ms, __ATOMIC_SEQ_CST) <
				   60000) {
			/* The server answers again and the stream was
			 * connected; events resume from where they stopped. */
			set_health(c, CACHE_HEALTHY);
		}
		pthread_mutex_lock(&c->health_mu);
	}
	pthread_mutex_unlock(&c->health_mu);
	return NULL;
}

/* ---- public ---- */

void cache_rdlock(struct cache *c)
{
	pthread_rwlock_rdlock(&c->lock);
}

void cache_wrlock(struct cache *c)
{
	pthread_rwlock_wrlock(&c->lock);
}

void cache_unlock(struct cache *c)
{
	pthread_rwlock_unlock(&c->lock);
}

/*
 * The initial listing runs on a thread of its own, SYNC_NICE steps nicer
 * than the process (its render helpers inherit that): on a
 * machine it shares with etcd, a big sync otherwise takes CPU from etcd
 * and its writers. bench/run --huge measured a concurrent writer's put p99
 * at 4.30x its p99 alone during the raw sync of tree-1m, and 1.77x during
 * etcdctl's own fetch of the same keys (docs/performance.md). CPU nobody
 * else wants is still all the sync's. A thread of its own because an
 * unprivileged process cannot become less nice again, and the FUSE threads
 * started after the sync must not inherit it.
 */
#define SYNC_NICE 10

struct initial_sync {
	struct cache *c;
	int64_t rev; /* in: the revision asked for; out: the one listed */
	int ret;
};

static void *initial_sync_main(void *arg)
{
	struct initial_sync *in = arg;
	id_t tid = (id_t)gettid();
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, tid);
	if (errno == 0 && nice < 19)
		setpriority(PRIO_PROCESS, tid, nice + SYNC_NICE > 19 ? 19 : nice + SYNC_NICE);
	in->ret = list_all(in->c, in->rev, false, &in->rev);
	return NULL;
}

static int initial_sync(struct cache *c, int64_t rev, int64_t *at)
{
	struct initial_sync in = {.c = c, .rev = rev};
	pthread_t th;
	if (pthread_create(&th, NULL, initial_sync_main, &in) != 0)
		return list_all(c, rev, false, at); /* no thread: here, as nice as we are */
	pthread_join(th, NULL);
	*at = in.rev;
	return in.ret;
}

int cache_new(const struct cache_config *cfg, struct cache **out)
{
	struct cache *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cfg = *cfg;
	if (!c->cfg.page_size)
		c->cfg.page_size = 1000;
	c->render_threads = usable_cpus();
	if (c->render_threads > RENDER_THREADS)
		c->render_threads = RENDER_THREADS;
	if (!c->cfg.stale_ms)
		c->cfg.stale_ms = 1000;
	/* Rendered texts are few (recently read versions): the pages the
	 * kernel keeps serve most reads again. */
	c->text_max = c->cfg.render ? c->cfg.max_bytes / 16 : 0;
	c->val_max = c->cfg.max_bytes - c->text_max;
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	/* Writers (the watch) must not starve behind a stream of readers. */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&c->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&c->lru_lock, NULL);
	pthread_mutex_init(&c->health_mu, NULL);
	pthread_cond_init(&c->health_cv, NULL);
	c->lru_head.next = c->lru_head.prev = &c->lru_head;
	int ret = grow_names(c);
	if (ret < 0)
		goto out_free;
	c->root = node_alloc(c, "", 0, 0); /* slot 0: id 0 */
	if (!c->root) {
		ret = -ENOMEM;
		goto out_free;
	}
	c->health = CACHE_SYNCING;
	int64_t rev;
	c->quiet = true; /* nothing is mounted yet: no kernel state to invalidate */
	ret = initial_sync(c, cfg->revision, &rev);
	c->quiet = false;
	if (ret < 0)
		goto out_free;
	c->revision = rev;
	c->seen_rev = rev;
	c->last_ok_ms = util_now_ms();
	if (!cfg->no_watch) {
		ret = start_watch(c);
		if (ret < 0)
			goto out_free;
		if (pthread_create(&c->health_thread, NULL, health_main, c) == 0)
			c->health_running = true;
	} else {
		c->health = CACHE_HEALTHY;
	}
	*out = c;
	return 0;
out_free:
	cache_destroy(c);
	return ret;
}

void cache_destroy(struct cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->health_mu);
	c->stopping = true;
	pthread_cond_broadcast(&c->health_cv);
	pthread_mutex_unlock(&c->health_mu);
	if (c->health_running)
		pthread_join(c->health_thread, NULL);
	if (c->watch)
		kv_watch_cancel(c->cfg.kv, c->watch);
	uint32_t i = 0;
	for (struct cache_node *n; (n = cache_next_node(c, &i));)
		node_release(c, n);
	for (size_t ch = 0; ch * CACHE_ID_CHUNK < c->n_ids; ch++)
		free(c->ids[ch]);
	free(c->ids);
	while (c->tombs) {
		struct cache_tomb *t = c->tombs;
		c->tombs = t->next;
		free(t->key);
		free(t);
	}
	free(c->by_name);
	pthread_rwlock_destroy(&c->lock);
	pthread_mutex_destroy(&c->lru_lock);
	free(c);
}

bool cache_fresh(struct cache *c)
{
	return __atomic_load_n(&c->health, __ATOMIC_SEQ_CST) == CACHE_HEALTHY;
}

int64_t cache_seen_rev(struct cache *c)
{
	return __atomic_load_n(&c->seen_rev, __ATOMIC_SEQ_CST);
}

int cache_probe(struct cache *c)
{
	if (cache_fresh(c))
		return 0;
	/* One failed probe answers for the next second: the kernel retries a
	 * failed lookup once, and a system call must not wait out the
	 * timeout twice. */
	int64_t now = util_now_ms();
	int64_t failed_at = __atomic_load_n(&c->probe_failed_ms, __ATOMIC_RELAXED);
	if (failed_at && now - failed_at < 1000)
		return __atomic_load_n(&c->probe_err, __ATOMIC_RELAXED);
	int64_t rev;
	int ret = kv_status(c->cfg.kv, &rev);
	if (ret < 0) {
		log_warn("etcd unreachable (%s); failing the request", strerror(-ret));
		ret = ret == -ETIMEDOUT ? -ETIMEDOUT : -EIO;
		__atomic_store_n(&c->probe_err, ret, __ATOMIC_RELAXED);
		__atomic_store_n(&c->probe_failed_ms, util_now_ms(), __ATOMIC_RELAXED);
		return ret;
	}
	__atomic_store_n(&c->probe_failed_ms, 0, __ATOMIC_RELAXED);
	return 0;
}

void cache_get_stats(struct cache *c, struct cache_stats *st)
{
	st->health = __atomic_load_n(&c->health, __ATOMIC_SEQ_CST);
	st->revision = __atomic_load_n(&c->revision, __ATOMIC_SEQ_CST);
	st->keys = c->n_keys;
	pthread_mutex_lock(&c->lru_lock);
	st->value_bytes = c->lru_bytes + c->text_bytes;
	pthread_mutex_unlock(&c->lru_lock);
	st->hits = c->hits;
	st->misses = c->misses;
	st->read_ahead = __atomic_load_n(&c->read_ahead, __ATOMIC_RELAXED);
	st->fetch_errors = c->fetch_errors;
	st->events = c->events;
	st->resyncs = c->resyncs;
	int64_t ok = __atomic_load_n(&c->last_ok_ms, __ATOMIC_SEQ_CST);
	st->watch_age_ms = ok ? (uint64_t)(util_now_ms() - ok) : 0;
	st->sync_done = __atomic_load_n(&c->sync_done, __ATOMIC_RELAXED);
	st->sync_total = __atomic_load_n(&c->sync_total, __ATOMIC_RELAXED);
	st->syncing = __atomic_load_n(&c->syncing, __ATOMIC_RELAXED);
	st->sync_elapsed_ms = util_now_ms() - __atomic_load_n(&c->sync_t0_ms, __ATOMIC_RELAXED);
}

/* Caches a fetched version of n (sh owned) unless n went, or a newer one
 * arrived meanwhile. Without locks. */
static void keep_fetched(struct cache *c, struct cache_node *n, const struct kv_kv *kv,
			 struct shown sh)
{
	cache_wrlock(c);
	if (!n->detached && kv->mod_revision >= n->mod_revision)
		apply_put(c, kv, sh, true, 0);
	else
		shown_free(&sh);
	cache_unlock(c);
}

/* ---- read-ahead ----
 *
 * grep -r, diff -r, tar and rsync read a directory's files one after the
 * other in readdir order. When they are not cached (a keyspace bigger than
 * --cache-size, or a cache emptied by eviction) each would cost a Range of
 * its own: at tree-1m, a million ranges and 17.5 min of grep. As the
 * kernel does for a file's pages, a miss that follows the previous miss in
 * the same directory fetches the files after it too, in the same range:
 * RA_MIN more, doubling up to RA_MAX (and RA_BYTES of stored values, at
 * most an eighth of the value cache) while the misses stay sequential,
 * into the next directories too; any other miss fetches its key alone. */
#define RA_MIN 4
#define RA_MAX 256
#define RA_BYTES (1u << 20)

/* How many siblings after n the miss of n fetches too (lock held). */
static uint32_t ahead_window(struct cache *c, const struct cache_node *n)
{
	if (!n->parent)
		return 0;
	uint32_t dir = idx_of(n->parent), w = 0;
	pthread_mutex_lock(&c->lru_lock);
	/* Sequential: after the last miss, past at most what it fetched and
	 * as many again (files cached since, holes in the children). */
	if (dir == c->ra_dir && n->pos > c->ra_pos &&
	    n->pos - c->ra_pos <= 2 * c->ra_window + RA_MIN)
		w = c->ra_window ? c->ra_window * 2 : RA_MIN;
	/* The first files of another directory, while a scan was going on:
	 * the scan went on there (tree-1m has 125 keys a directory; starting
	 * each again from one key took 21 reads a range instead of 60). */
	else if (dir != c->ra_dir && n->pos < RA_MIN)
		w = c->ra_window;
	if (w > RA_MAX)
		w = RA_MAX;
	c->ra_dir = dir;
	c->ra_pos = n->pos;
	c->ra_window = w;
	pthread_mutex_unlock(&c->lru_lock);
	return w;
}

static bool seg_before(const struct cache_node *a, const struct cache_node *b)
{
	return kv_key_cmp(cache_node_seg(a), a->seg_len, cache_node_seg(b), b->seg_len) < 0;
}

/* The last of the up to w siblings after n that a range from n's key
 * brings along (lock held): keys not cached at their revision, not being
 * written here, in key order; cached ones between them come too, up to w
 * of them (*spanned: how many in all). NULL: none. */
static struct cache_node *ahead_last(struct cache *c, const struct cache_node *n, uint32_t w,
				     uint32_t *spanned)
{
	struct cache_node *last = NULL;
	const struct cache_node *prev = n;
	size_t bytes = n->raw_size;
	/* what a read-ahead brings must not push out much of the cache */
	size_t most = c->val_max / 8 < RA_BYTES ? c->val_max / 8 : RA_BYTES;
	uint32_t i = n->pos + 1, taken = 0, seen = 0;
	pthread_mutex_lock(&c->lru_lock);
	for (struct cache_node *s;
	     taken < w && seen < 2 * w && (s = cache_next_child(c, n->parent, &i));) {
		if (!s->has_value || s->ns != n->ns || cache_node_local(s) ||
		    !seg_before(prev, s) || bytes + s->raw_size > most)
			break;
		bytes += s->raw_size;
		prev = s;
		seen++;
		if (s->val && s->val->rev == s->mod_revision)
			continue;
		last = s;
		taken++;
		*spanned = seen;
	}
	pthread_mutex_unlock(&c->lru_lock);
	return last;
}

/* Plans n's fetch (lock held): the range from key through the last
 * sibling worth bringing along, into *req (its range_end allocated). */
static void plan_fetch(struct cache *c, struct cache_node *n, const char *key, size_t klen,
		       bool ahead, struct kv_range_req *req)
{
	*req = (struct kv_range_req){.key = key, .key_len = klen, .revision = c->cfg.revision};
	uint32_t w = ahead ? ahead_window(c, n) : 0, spanned = 0;
	struct cache_node *last = w ? ahead_last(c, n, w, &spanned) : NULL;
	if (!last)
		return;
	size_t elen;
	char *end = cache_node_key(c, last, &elen);
	char *e = end ? realloc(end, elen + 1) : NULL;
	if (!e) {
		free(end);
		return; /* the key alone, then */
	}
	e[elen] = 0; /* just after last's key */
	req->range_end = e;
	req->range_end_len = elen + 1;
	/* keys of subdirectories between siblings come too: bounded */
	req->limit = 2 * (int64_t)spanned + 2;
}

/* Whether a read-ahead's kv is its key's current version, not cached yet
 * and not being written here (lock held). */
static bool wanted(struct cache *c, const struct kv_kv *kv)
{
	struct cache_node *s = walk(c, kv->key, kv->key_len, false);
	if (!s || !s->has_value || s->mod_revision != kv->mod_revision || cache_node_local(s))
		return false;
	pthread_mutex_lock(&c->lru_lock);
	bool cached = s->val && s->val->rev == s->mod_revision;
	pthread_mutex_unlock(&c->lru_lock);
	return !cached;
}

/* Caches the versions a read-ahead brought that are wanted(). Renders
 * without locks. */
static void keep_ahead(struct cache *c, struct kv_kv *kvs, size_t n_kvs)
{
	for (size_t i = 0; i < n_kvs; i++) {
		cache_rdlock(c);
		bool want = wanted(c, &kvs[i]);
		cache_unlock(c);
		if (!want)
			continue;
		struct shown sh = render_put(c, &kvs[i], true);
		cache_wrlock(c);
		if (!sh.eio && wanted(c, &kvs[i])) {
			apply_put(c, &kvs[i], sh, true, 0);
			__atomic_add_fetch(&c->read_ahead, 1, __ATOMIC_RELAXED);
		} else {
			shown_free(&sh);
		}
		cache_unlock(c);
	}
}

/* Caches n's fetched version kv (taken) and copies its content to *out. */
static int keep_own(struct cache *c, struct cache_node *n, struct kv_kv *kv, char **out,
		    size_t *out_len, int64_t *rev)
{
	struct shown sh = render_put(c, kv, true);
	if (sh.eio) {
		/* the stat size follows the value even when it cannot be shown */
		keep_fetched(c, n, kv, sh);
		return -EIO;
	}
	size_t len = sh.size;
	char *copy = malloc(len + 1);
	if (!copy) {
		shown_free(&sh);
		return -ENOMEM;
	}
	if (len)
		memcpy(copy, sh.text ? sh.text : kv->value, len);
	copy[len] = 0;
	keep_fetched(c, n, kv, sh);
	*rev = kv->mod_revision;
	*out = copy;
	*out_len = len;
	return 0;
}

/* Fetches n's value from the backend and caches it, with the siblings a
 * sequential reader will want next when ahead. Without locks. */
static int fetch(struct cache *c, struct cache_node *n, bool ahead, char **out, size_t *out_len,
		 int64_t *rev)
{
	struct kv_range_req req;
	cache_rdlock(c);
	size_t klen;
	char *key = cache_node_key(c, n, &klen);
	if (key)
		plan_fetch(c, n, key, klen, ahead, &req);
	cache_unlock(c);
	if (!key)
		return -ENOMEM;
	struct kv_range_result res;
	int ret = kv_range(c->cfg.kv, &req, &res);
	free((void *)req.range_end);
	if (ret == 0 &&
	    (res.n_kvs == 0 || kv_key_cmp(res.kvs[0].key, res.kvs[0].key_len, key, klen) != 0))
		ret = -ENOENT;
	if (ret == -ENOENT) {
		cache_wrlock(c);
		if (!n->detached)
			apply_delete(c, key, klen, n->mod_revision + 1, true);
		cache_unlock(c);
	} else if (ret < 0) {
		__atomic_add_fetch(&c->fetch_errors, 1, __ATOMIC_RELAXED);
	} else {
		ret = keep_own(c, n, &res.kvs[0], out, out_len, rev);
		/* the others' renders are what their reads would cost */
		keep_ahead(c, res.kvs + 1, res.n_kvs - 1);
	}
	free(key);
	kv_range_result_free(&res);
	return ret;
}

/* The version reads serve (lru_lock held): while the kernel has not yet
 * dropped the pages of the version it was told of, that one (kernel
 * true), else the current one, when cached. */
static bool serve_rep(struct cache *c, struct cache_node *n);

static struct cache_val *served(struct cache *c, struct cache_node *n, bool kernel)
{
	if (kernel && serve_rep(c, n))
		return n->x->rep_val;
	if (n->val && (n->val->rev == n->mod_revision || n->detached))
		return n->val;
	return NULL;
}

/* Copies [off, off + size) of content t into buf (whole NULL), or all of
 * it into a new *whole. Returns the bytes copied, 0 or -ENOMEM. */
static ssize_t deliver(const char *t, size_t len, char *buf, size_t size, off_t off, char **whole,
		       size_t *whole_len)
{
	if (whole) {
		*whole = malloc(len + 1);
		if (!*whole)
			return -ENOMEM;
		if (len)
			memcpy(*whole, t, len);
		(*whole)[len] = 0;
		*whole_len = len;
		return 0;
	}
	size_t cnt = (size_t)off < len ? len - off : 0;
	if (cnt > size)
		cnt = size;
	if (cnt)
		memcpy(buf, t + off, cnt);
	return cnt;
}

/* Renders v (n's version) again, without locks; keeps the text for the
 * next reads while that version is still n's. The text must have the
 * size the kernel was told: a rendering that changed (it cannot, unless
 * it failed for want of memory at sync) fails the read instead. */
static ssize_t render_again(struct cache *c, struct cache_node *n, struct kv_kv *kv, size_t shown,
			    char *buf, size_t size, off_t off, char **whole, size_t *whole_len)
{
	char *text;
	size_t len;
	bool as_stored;
	int ret = render(c, kv, &text, &len, &as_stored);
	if (ret < 0)
		return ret;
	if (!text || len != shown) {
		log_warn("%.*s: revision %lld renders to %zu bytes, not the %zu its size says",
			 (int)kv->key_len, kv->key, (long long)kv->mod_revision, len, shown);
		free(text);
		return -EIO;
	}
	ssize_t r = deliver(text, len, buf, size, off, whole, whole_len);
	cache_rdlock(c);
	pthread_mutex_lock(&c->lru_lock);
	struct cache_val *v = n->val;
	if (!v || v->rev != kv->mod_revision)
		v = n->x && n->x->rep_val && n->x->rep_val->rev == kv->mod_revision ? n->x->rep_val
										    : NULL;
	if (v) {
		text_set(c, v, text, len);
		/* a detached node's stays with it, out of the LRU */
		if (n->detached)
			text_unlink(c, v->text);
	} else {
		free(text);
	}
	pthread_mutex_unlock(&c->lru_lock);
	cache_unlock(c);
	return r;
}

/* n's content as reads see it (kernel: as the page cache must, see
 * served()), into buf or a new *whole (see deliver()). -EAGAIN when no
 * version is cached: the caller fetches. Without the lock. */
static ssize_t serve(struct cache *c, struct cache_node *n, bool kernel, char *buf, size_t size,
		     off_t off, char **whole, size_t *whole_len, int64_t *rev)
{
	cache_rdlock(c);
	pthread_mutex_lock(&c->lru_lock);
	struct cache_val *v = served(c, n, kernel);
	ssize_t r = -EAGAIN;
	bool again = false;
	if (!v)
		goto out;
	/* The pages this fills hold the older version: they go again (an
	 * invalidation waits for a page being read), and until then no
	 * getattr tells the kernel the newer size (cache_report_size).
	 * Always, even with one pending: the pending one may have dropped the
	 * pages already, which is why this read came, and only be marked done
	 * after it. */
	again = n->x && v == n->x->rep_val;
	if (again)
		n->x->pending_inval = n->mod_revision;
	if (v == n->val && v->lru.next)
		lru_front(c, v);
	if (rev)
		*rev = v->rev;
	__atomic_add_fetch(&c->hits, 1, __ATOMIC_RELAXED);
	if (!c->cfg.render || v->as_stored) {
		r = deliver(v->data, v->len, buf, size, off, whole, whole_len);
		goto out;
	}
	if (v->text) {
		if (v->text->next)
			text_front(c, v->text);
		r = deliver(v->text->data, v->text->len, buf, size, off, whole, whole_len);
		goto out;
	}
	/* Render outside the locks, from a copy: rendering takes time. */
	struct kv_kv kv = {.mod_revision = v->rev, .value_len = v->len};
	size_t shown = v->shown;
	char *key;
	if (n->detached) {
		kv.key_len = v->key_len;
		key = v->key_len ? util_memdup(v->data + v->len, v->key_len) : NULL;
	} else {
		key = cache_node_key(c, n, &kv.key_len);
	}
	char *val = util_memdup(v->data, v->len);
	pthread_mutex_unlock(&c->lru_lock);
	if (again)
		emit_content(c, n);
	cache_unlock(c);
	if (!key || !val) {
		r = n->detached && !key ? -ENOENT : -ENOMEM;
	} else {
		kv.key = key;
		kv.value = val;
		r = render_again(c, n, &kv, shown, buf, size, off, whole, whole_len);
	}
	free(key);
	free(val);
	return r;
out:
	pthread_mutex_unlock(&c->lru_lock);
	if (again)
		emit_content(c, n);
	cache_unlock(c);
	return r;
}

int cache_get_content(struct cache *c, struct cache_node *n, char **out, size_t *len,
		      int64_t *mod_revision)
{
	ssize_t r = serve(c, n, false, NULL, 0, 0, out, len, mod_revision);
	if (r != -EAGAIN)
		return (int)r;
	cache_rdlock(c);
	bool detached = n->detached, has = n->has_value;
	cache_unlock(c);
	if (detached || !has)
		return -ENOENT;
	__atomic_add_fetch(&c->misses, 1, __ATOMIC_RELAXED);
	return fetch(c, n, true, out, len, mod_revision);
}

size_t cache_report_size(struct cache *c, struct cache_node *n)
{
	size_t size;
	pthread_mutex_lock(&c->lru_lock);
	struct cache_node_x *x = n->x;
	if (x && x->pending_inval && x->rep_val) {
		size = x->rep_val->shown;
		x->rep_told++;
	} else {
		/* Without a record, the lookup that counts this telling
		 * records it (cache_ref_lookup); an entry of a plain READDIR
		 * is not one the kernel keeps. */
		if (x) {
			x->rep_rev = n->mod_revision;
			val_free(c, x->rep_val);
			x->rep_val = NULL;
		}
		size = n->rendered_size;
	}
	pthread_mutex_unlock(&c->lru_lock);
	return size;
}

void cache_set_rep_grace(struct cache *c, int ms)
{
	__atomic_store_n(&c->rep_grace_ms, ms, __ATOMIC_RELAXED);
}

/* Whether reads still serve rep_val, the version whose size the kernel
 * holds: while its pages may be of it (an invalidation pending), and for
 * rep_grace_ms after the change: the invalidation drops pages and marks
 * attributes stale, but the kernel's i_size stays rep's until a getattr
 * (cache_report_size) tells it another, so a read that sampled it before
 * needs rep's bytes. After that, rep goes: a mapping, which never asks for
 * attributes, moves on. lru_lock held. */
static bool serve_rep(struct cache *c, struct cache_node *n)
{
	struct cache_node_x *x = n->x;
	if (!x || !x->rep_val)
		return false;
	int grace = __atomic_load_n(&c->rep_grace_ms, __ATOMIC_RELAXED);
	if (x->pending_inval || util_now_ms() - cache_changed_ms(n) < grace)
		return true;
	val_free(c, x->rep_val);
	x->rep_val = NULL;
	return false;
}

size_t cache_held_size(struct cache *c, struct cache_node *n)
{
	pthread_mutex_lock(&c->lru_lock);
	size_t size = n->rendered_size;
	if (serve_rep(c, n)) {
		size = n->x->rep_val->shown;
		n->x->rep_told++;
	}
	pthread_mutex_unlock(&c->lru_lock);
	return size;
}

uint32_t cache_inval_begin(struct cache *c, struct cache_node *n)
{
	pthread_mutex_lock(&c->lru_lock);
	uint32_t told = n->x ? n->x->rep_told : 0;
	pthread_mutex_unlock(&c->lru_lock);
	return told;
}

void cache_inval_done(struct cache *c, struct cache_node *n, int64_t rev, uint32_t told)
{
	pthread_mutex_lock(&c->lru_lock);
	struct cache_node_x *x = n->x;
	if (!x) {
		pthread_mutex_unlock(&c->lru_lock);
		return;
	}
	/* A getattr or lookup that told rep's size while this invalidation
	 * was on its way may have reached the kernel after it: the kernel
	 * then holds that size as fresh, and a read filling pages of the
	 * current version would be cut at it. Like a read of rep (serve), it
	 * keeps rep and takes another invalidation. */
	bool again = x->pending_inval && x->rep_val && x->rep_told != told;
	if (again) {
		x->pending_inval = n->mod_revision;
		pthread_mutex_unlock(&c->lru_lock);
		emit_content(c, n);
		return;
	}
	if (x->pending_inval && x->pending_inval <= rev)
		x->pending_inval = 0;
	/* The kernel dropped every page and size older than rev: the version
	 * it was told of before is believed by nobody now. Serving it while a
	 * still newer change is pending would send readers back in time, as
	 * far as the last getattr that found nothing pending. A mount with a
	 * grace (no OPEN) keeps it for that long, as serve_rep says. */
	if (x->rep_val && x->rep_rev < rev &&
	    !__atomic_load_n(&c->rep_grace_ms, __ATOMIC_RELAXED)) {
		val_free(c, x->rep_val);
		x->rep_val = NULL;
	}
	(void)serve_rep(c, n); /* frees rep once its grace is over */
	pthread_mutex_unlock(&c->lru_lock);
}

ssize_t cache_read(struct cache *c, struct cache_node *n, char *buf, size_t size, off_t off)
{
	ssize_t r = serve(c, n, true, buf, size, off, NULL, NULL, NULL);
	if (r != -EAGAIN)
		return r;
	char *content;
	size_t len;
	int64_t rev;
	int ret = cache_get_content(c, n, &content, &len, &rev);
	if (ret < 0)
		return ret;
	r = deliver(content, len, buf, size, off, NULL, NULL);
	free(content);
	return r;
}

int cache_get_raw(struct cache *c, struct cache_node *n, char **out, size_t *len)
{
	cache_rdlock(c);
	size_t klen;
	char *key = cache_node_key(c, n, &klen);
	cache_unlock(c);
	if (!key)
		return -ENOMEM;
	struct kv_range_req req = {.key = key, .key_len = klen, .revision = c->cfg.revision};
	struct kv_range_result res;
	int ret = kv_range(c->cfg.kv, &req, &res);
	free(key);
	if (ret < 0)
		return ret;
	if (res.n_kvs == 0) {
		kv_range_result_free(&res);
		return -ENOENT;
	}
	*out = res.kvs[0].value;
	*len = res.kvs[0].value_len;
	res.kvs[0].value = NULL;
	kv_range_result_free(&res);
	if (!*out) {
		*out = strdup("");
		*len = 0;
	}
	return *out ? 0 : -ENOMEM;
}

int cache_revalidate(struct cache *c, struct cache_node *n)
{
	char *content;
	size_t len;
	int64_t rev;
	int ret = fetch(c, n, false, &content, &len, &rev);
	if (ret == 0)
		free(content);
	return ret;
}

void cache_apply_local(struct cache *c, const char *key, size_t key_len, const struct kv_kv *kv,
		       int64_t rev)
{
	struct shown sh = {0};
	if (kv)
		sh = render_put(c, kv, true);
	cache_wrlock(c);
	c->own_change = true;
	if (kv) {
		apply_put(c, kv, sh, false, 0);
	} else {
		apply_delete(c, key, key_len, rev, false);
		if (rev > c->revision && add_tomb(c, key, key_len, rev, false) < 0)
			log_warn("cache: out of memory remembering a deletion");
	}
	c->own_change = false;
	cache_unlock(c);
}

int cache_hold_key_locked(struct cache *c, const char *key, size_t key_len, int64_t rev)
{
	return add_tomb(c, key, key_len, rev, true);
}

void cache_release_key_locked(struct cache *c, const char *key, size_t key_len, int64_t rev,
			      bool forget)
{
	for (struct cache_tomb **pp = &c->tombs; *pp; pp = &(*pp)->next) {
		struct cache_tomb *t = *pp;
		if (!t->held || t->rev != rev || t->key_len != key_len ||
		    memcmp(t->key, key, key_len) != 0)
			continue;
		if (forget) {
			*pp = t->next;
			free(t->key);
			free(t);
		} else {
			t->held = false; /* expires once the watch is past rev */
		}
		return;
	}
}

void cache_unlink_locked(struct cache *c, struct cache_node *n, const char *key, size_t key_len)
{
	if (!n->has_value || n->detached)
		return;
	c->own_change = true;
	apply_delete(c, key, key_len, n->mod_revision, true);
	c->own_change = false;
}

int cache_mknode_locked(struct cache *c, struct cache_node *parent, int ns, const char *seg,
			size_t seg_len, bool dir, struct cache_node **out)
{
	if (parent->detached)
		return -ENOENT;
	if (cache_child(c, parent, ns, seg, seg_len))
		return -EEXIST;
	c->own_change = true;
	struct cache_node *n = child_create(c, parent, ns, seg, seg_len);
	c->own_change = false;
	if (!n)
		return -ENOMEM;
	if (dir)
		n->local_dir = true;
	*out = n;
	return 0;
}

int cache_move_locked(struct cache *c, struct cache_node *n, struct cache_node *newparent, int ns,
		      const char *seg, size_t seg_len)
{
	struct cache_node *old = cache_child(c, newparent, ns, seg, seg_len);
	if (old == n)
		return 0;
	/* everything that can fail first */
	char *nseg = seg_len < UINT32_MAX ? util_memdup(seg, seg_len) : NULL;
	struct cache_node_x *x = nseg ? x_get(n) : NULL;
	if (!x || grow_names(c) < 0 || kids_reserve(c, newparent) < 0) {
		free(nseg);
		return -ENOMEM;
	}
	if (old) {
		if (old->has_value)
			c->n_keys--;
		old->has_value = false;
		node_detach(c, old);
	}
	struct cache_node *oldparent = n->parent;
	/* unlink from the old place, keeping the node */
	unlink_child(c, n);
	free(x->seg);
	x->seg = nseg;
	n->seg_out = true;
	n->seg_len = (uint32_t)seg_len;
	n->ns = (int8_t)ns;
	link_child(c, newparent, n);
	/* a local rename: src/save stamps both directories */
	/* A name moved away through the mount leaves its directory in place,
	 * as on any filesystem (it is local until a key appears in it). */
	if (oldparent != c->root && !cache_n_children(oldparent))
		oldparent->local_dir = true;
	if (oldparent != newparent)
		kids_settle(oldparent);
	return 0;
}

void cache_set_local_ops(struct cache *c, const struct cache_local_ops *ops)
{
	cache_wrlock(c);
	c->local_ops = ops;
	cache_unlock(c);
}

void cache_drop_rendered_locked(struct cache *c, struct cache_node *n)
{
	drop_rendered(c, n);
}

void cache_forget_key_locked(struct cache *c, struct cache_node *n)
{
	if (n->has_value)
		c->n_keys--;
	n->has_value = false;
}

void cache_told_locked(struct cache *c, struct cache_node *n)
{
	struct cache_node_x *x = x_must(n);
	pthread_mutex_lock(&c->lru_lock);
	x->rep_rev = n->mod_revision;
	val_free(c, x->rep_val);
	x->rep_val = NULL;
	pthread_mutex_unlock(&c->lru_lock);
	__atomic_store_n(&x->kernel_rev, n->mod_revision, __ATOMIC_RELAXED);
}

void cache_set_key_locked(struct cache *c, struct cache_node *n, const struct cache_key_meta *m)
{
	if (!n->has_value)
		c->n_keys++;
	n->has_value = true;
	n->create_revision = m->create_revision;
	n->mod_revision = m->mod_revision;
	n->version = m->version;
	n->lease = m->lease;
	n->raw_size = (uint32_t)m->raw_size;
	n->rendered_size = (uint32_t)m->rendered_size;
}

void cache_prune_locked(struct cache *c, struct cache_node *n)
{
	c->own_change = true;
	if (n->parent)
		prune(c, n);
	c->own_change = false;
}

int cache_mkdir(struct cache *c, struct cache_node *parent, int ns, const char *seg, size_t seg_len,
		struct cache_node **out)
{
	int ret = 0;
	cache_wrlock(c);
	if (parent->detached) {
		ret = -ENOENT;
		goto out;
	}
	struct cache_node *n = cache_child(c, parent, ns, seg, seg_len);
	if (n) {
		ret = -EEXIST;
		goto out;
	}
	n = child_create(c, parent, ns, seg, seg_len);
	if (!n) {
		ret = -ENOMEM;
		goto out;
	}
	n->local_dir = true;
	*out = n;
out:
	cache_unlock(c);
	return ret;
}

int cache_rmdir(struct cache *c, struct cache_node *parent, int ns, const char *seg, size_t seg_len)
{
	int ret = 0;
	cache_wrlock(c);
	struct cache_node *n = cache_child(c, parent, ns, seg, seg_len);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	if (!cache_is_dir(n)) {
		ret = -ENOTDIR;
		goto out;
	}
	if (cache_n_children(n) || n->has_value) {
		ret = -ENOTEMPTY;
		goto out;
	}
	n->local_dir = false;
	prune(c, n);
out:
	cache_unlock(c);
	return ret;
}

void cache_ref_lookup(struct cache *c, struct cache_node *n)
{
	struct cache_node_x *x = x_must(n);
	if (__atomic_fetch_add(&x->nlookup, 1, __ATOMIC_RELAXED))
		return;
	/* The kernel now keeps an inode of n, with the size it was just told
	 * in this same lock hold (cache_report_size, which records nothing
	 * without a record): the current version's, unless a change is
	 * pending and the one it was told before still held. */
	pthread_mutex_lock(&c->lru_lock);
	if (!(x->pending_inval && x->rep_val)) {
		x->rep_rev = n->mod_revision;
		val_free(c, x->rep_val);
		x->rep_val = NULL;
	}
	pthread_mutex_unlock(&c->lru_lock);
}

/* Frees n once detached and unreferenced; else, once the kernel forgot it
 * and no handle holds it, drops its kernel view, and its record if that
 * is all it held. Lock held for write. */
static void maybe_free(struct cache *c, struct cache_node *n)
{
	struct cache_node_x *x = n->x;
	if (x && (x->nlookup || x->nopen))
		return;
	if (n->detached) {
		node_free(c, n);
		return;
	}
	if (!x)
		return;
	pthread_mutex_lock(&c->lru_lock);
	val_free(c, x->rep_val);
	x->rep_val = NULL;
	x->rep_rev = x->pending_inval = x->kernel_rev = 0;
	pthread_mutex_unlock(&c->lru_lock);
	x_trim(n);
}

void cache_unref_lookup(struct cache *c, struct cache_node *n, uint64_t nlookup)
{
	struct cache_node_x *x = n->x;
	if (x)
		x->nlookup = nlookup > x->nlookup ? 0 : x->nlookup - nlookup;
	maybe_free(c, n);
}

void cache_ref_open(struct cache *c, struct cache_node *n)
{
	(void)c;
	__atomic_add_fetch(&x_must(n)->nopen, 1, __ATOMIC_RELAXED);
}

void cache_unref_open(struct cache *c, struct cache_node *n)
{
	struct cache_node_x *x = n->x;
	if (x && x->nopen)
		x->nopen--;
	maybe_free(c, n);
}
