/* grpc_snapshot.c: Maintenance.Snapshot: the keyspace as an etcd v3 backend file (a bbolt
 * database), streamed as etcd streams it: SnapshotResponse messages of 32 KiB blobs with the
 * bytes remaining, then the SHA-256 of the database as the last blob, so that
 * `etcdctl snapshot save` writes what it writes for etcd.
 *
 * What the file holds: kv.h serves no history, so the file has the latest version of every
 * key at the current revision (bucket "key": 17-byte revision keys [main BE]['_'][sub BE] ->
 * mvccpb.KeyValue) and says so in bucket "meta": both compaction marks are the current
 * revision, so a reader of the file refuses older revisions as compacted instead of
 * answering them wrongly. Keys written by one txn share a main revision; their sub
 * revisions are numbered in key order (etcd numbers them in op order, which is gone).
 *
 * bbolt facts used (integers little-endian): pages of PAGE bytes, each with a 16-byte header
 * {id u64, flags u16, count u16, overflow u32}, spanning 1 + overflow pages; pages 0 and 1
 * are meta pages {magic 0xED0CDAED, version 2, page size, flags, root bucket {pgid, seq},
 * freelist pgid, high-water pgid, txid, FNV-1a 64 checksum of the 56 bytes before it};
 * leaf elements {flags (1 = bucket), pos, ksize, vsize} and branch elements {pos, ksize,
 * pgid}, 16 bytes each, pos relative to the element; a bucket's value is {root pgid, seq}.
 * The whole file is built in memory (the size of the keyspace, once) and queued.
 */
#include "grpc_int.h"

#include <errno.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define PAGE 4096u
#define PAGE_HDR 16u
#define ELEM 16u
#define LEAF_MAX (64u << 10) /* bytes of items per leaf before starting another */
#define ITEMS_MAX 1000u	     /* items per leaf */
#define CHUNK (32u << 10)    /* etcd's snapshot send buffer */

struct item {
	uint8_t key[17];
	size_t klen;
	uint8_t *val;
	size_t vlen;
	bool bucket;
};

struct db {
	uint8_t *p;
	size_t len, cap;
	uint64_t pages; /* next page id */
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* Appends a page of flags with room for body bytes; returns its id, or 0 when out of
 * memory (page 0 is never handed out: it is a meta page). */
static uint64_t page_new(struct db *d, uint16_t flags, uint16_t count, size_t body, uint8_t **out)
{
	size_t n = (PAGE_HDR + body + PAGE - 1) / PAGE;
	if (!n)
		n = 1;
	if (util_grow(&d->p, &d->cap, d->len + n * PAGE, 1, 1 << 20) < 0)
		return 0;
	uint8_t *pg = d->p + d->len;
	memset(pg, 0, n * PAGE);
	uint64_t id = d->pages;
	put64(pg, id);
	put16(pg + 8, flags);
	put16(pg + 10, count);
	put32(pg + 12, (uint32_t)(n - 1));
	d->len += n * PAGE;
	d->pages += n;
	*out = pg + PAGE_HDR;
	return id;
}

/* One leaf page of items[0..n); its id, 0 when out of memory. */
static uint64_t leaf(struct db *d, const struct item *it, size_t n)
{
	size_t body = n * ELEM;
	for (size_t i = 0; i < n; i++)
		body += it[i].klen + it[i].vlen;
	uint8_t *b;
	uint64_t id = page_new(d, 0x02, (uint16_t)n, body, &b);
	if (!id)
		return 0;
	size_t data = n * ELEM;
	for (size_t i = 0; i < n; i++) {
		uint8_t *e = b + i * ELEM;
		put32(e, it[i].bucket ? 1 : 0);
		put32(e + 4, (uint32_t)(data - i * ELEM));
		put32(e + 8, (uint32_t)it[i].klen);
		put32(e + 12, (uint32_t)it[i].vlen);
		memcpy(b + data, it[i].key, it[i].klen);
		memcpy(b + data + it[i].klen, it[i].val, it[i].vlen);
		data += it[i].klen + it[i].vlen;
	}
	return id;
}

/* A tree of the sorted items: leaves, and one branch page above them when there are
 * several. Returns the root page id, 0 when out of memory. */
static uint64_t tree(struct db *d, const struct item *it, size_t n)
{
	size_t cap = n + 1, nl = 0;
	uint64_t *ids = malloc(cap * sizeof(*ids));
	size_t *first = malloc(cap * sizeof(*first));
	uint64_t root = 0;
	if (!ids || !first)
		goto out;
	for (size_t i = 0; i < n || !nl;) {
		size_t j = i, bytes = 0;
		while (j < n && j - i < ITEMS_MAX && (j == i || bytes + it[j].vlen < LEAF_MAX))
			bytes += it[j++].vlen + it[i].klen;
		first[nl] = i;
		if (!(ids[nl++] = leaf(d, it + i, j - i)))
			goto out;
		i = j;
		if (!n)
			break;
	}
	if (nl == 1) {
		root = ids[0];
		goto out;
	}
	if (nl > 0xffff)
		goto out;
	uint8_t *b;
	size_t body = nl * (ELEM + 17);
	if (!(root = page_new(d, 0x01, (uint16_t)nl, body, &b)))
		goto out;
	size_t data = nl * ELEM;
	for (size_t k = 0; k < nl; k++) {
		const struct item *f = &it[first[k]];
		uint8_t *e = b + k * ELEM;
		put32(e, (uint32_t)(data - k * ELEM));
		put32(e + 4, (uint32_t)f->klen);
		put64(e + 8, ids[k]);
		memcpy(b + data, f->key, f->klen);
		data += f->klen;
	}
out:
	free(ids);
	free(first);
	return root;
}

static void meta_page(struct db *d, uint64_t id, uint64_t root, uint64_t txid)
{
	uint8_t *pg = d->p + id * PAGE, *m = pg + PAGE_HDR;
	memset(pg, 0, PAGE);
	put64(pg, id);
	put16(pg + 8, 0x04);
	put32(m, 0xED0CDAEDu);
	put32(m + 4, 2);
	put32(m + 8, PAGE);
	put64(m + 16, root);
	put64(m + 32, 2); /* freelist page */
	put64(m + 40, d->pages);
	put64(m + 48, txid);
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < 56; i++)
		h = (h ^ m[i]) * 0x100000001b3ull;
	put64(m + 56, h);
}

static int cmp_item(const void *a, const void *b)
{
	const struct item *x = a, *y = b;
	return memcmp(x->key, y->key, 17);
}

static void rev_key(uint8_t k[17], int64_t main, int64_t sub)
{
	be64(k, (uint64_t)main);
	k[8] = '_';
	be64(k + 9, (uint64_t)sub);
}

/* The database of res at revision rev into d. 0 or -ENOMEM. */
static int build(struct db *d, const struct kv_range_result *res, int64_t rev, uint64_t index)
{
	struct item *it = calloc(res->n_kvs ? res->n_kvs : 1, sizeof(*it));
	uint8_t metav[3][17];
	int ret = -ENOMEM;
	if (!it)
		return ret;
	for (size_t i = 0; i < res->n_kvs; i++) {
		const struct kv_kv *k = &res->kvs[i];
		V3pb__KeyValue o;
		grpc_kv_fill(&o, k);
		int64_t sub = 0;
		for (size_t j = 0; j < i; j++)
			sub += res->kvs[j].mod_revision == k->mod_revision;
		rev_key(it[i].key, k->mod_revision, sub);
		it[i].klen = 17;
		it[i].vlen = protobuf_c_message_get_packed_size(&o.base);
		if (!(it[i].val = malloc(it[i].vlen ? it[i].vlen : 1)))
			goto out;
		protobuf_c_message_pack(&o.base, it[i].val);
	}
	qsort(it, res->n_kvs, sizeof(*it), cmp_item);
	d->pages = 3; /* 0, 1 meta; 2 freelist */
	if (util_grow(&d->p, &d->cap, 3 * PAGE, 1, 1 << 20) < 0)
		goto out;
	memset(d->p, 0, 3 * PAGE);
	d->len = 3 * PAGE;
	put64(d->p + 2 * PAGE, 2);
	put16(d->p + 2 * PAGE + 8, 0x10);
	uint64_t key_root = tree(d, it, res->n_kvs);
	/* bucket "meta": the consistent index and both compaction marks at rev */
	be64(metav[0], index);
	rev_key(metav[1], rev, 0);
	rev_key(metav[2], rev, 0);
	struct item meta[3] = {
		{.klen = 16, .val = metav[0], .vlen = 8},
		{.klen = 18, .val = metav[1], .vlen = 17},
		{.klen = 19, .val = metav[2], .vlen = 17},
	};
	/* struct item keys hold 17 bytes; the meta names are longer, so this leaf is built here */
	uint64_t meta_root = 0;
	{
		static const char *const names[3] = {"consistent_index", "finishedCompactRev",
						     "scheduledCompactRev"};
		size_t body = 3 * ELEM;
		for (int i = 0; i < 3; i++)
			body += strlen(names[i]) + meta[i].vlen;
		uint8_t *b;
		if (!key_root || !(meta_root = page_new(d, 0x02, 3, body, &b)))
			goto out;
		size_t data = 3 * ELEM;
		for (int i = 0; i < 3; i++) {
			size_t kl = strlen(names[i]);
			put32(b + i * ELEM + 4, (uint32_t)(data - i * ELEM));
			put32(b + i * ELEM + 8, (uint32_t)kl);
			put32(b + i * ELEM + 12, (uint32_t)meta[i].vlen);
			memcpy(b + data, names[i], kl);
			memcpy(b + data + kl, meta[i].val, meta[i].vlen);
			data += kl + meta[i].vlen;
		}
	}
	/* the root bucket: "key" and "meta", each {root pgid, sequence 0} */
	uint8_t kb[16] = {0}, mb[16] = {0};
	put64(kb, key_root);
	put64(mb, meta_root);
	struct item roots[2] = {{.key = "key", .klen = 3, .val = kb, .vlen = 16, .bucket = true},
				{.key = "meta", .klen = 4, .val = mb, .vlen = 16, .bucket = true}};
	uint64_t root = leaf(d, roots, 2);
	if (!root)
		goto out;
	meta_page(d, 0, root, 0);
	meta_page(d, 1, root, 1);
	ret = 0;
out:
	for (size_t i = 0; i < res->n_kvs; i++)
		free(it[i].val);
	free(it);
	return ret;
}

static int send_blob(struct h2stream *st, struct gw *gw, int64_t rev, const uint8_t *p, size_t n,
		     uint64_t remaining)
{
	V3pb__SnapshotResponse o = V3PB__SNAPSHOT_RESPONSE__INIT;
	V3pb__Header h;
	grpc_header_fill(gw, &h, rev);
	o.header = &h;
	o.remaining_bytes = remaining;
	o.blob.data = (uint8_t *)p;
	o.blob.len = n;
	return h2_stream_send(st, &o.base, false, NULL);
}

int grpc_snapshot_open(struct h2stream *st)
{
	(void)st;
	return 0;
}

int grpc_snapshot_msg(struct h2stream *st, const uint8_t *msg, size_t len)
{
	struct gw *gw = h2_stream_gw(st);
	struct kv_range_req q = {.key = "\0", .key_len = 1, .range_end = "\0", .range_end_len = 1};
	struct kv_range_result res;
	struct gw_node node = {0};
	struct db d = {0};
	uint8_t sha[SHA256_DIGEST_LENGTH];
	(void)msg;
	(void)len;
	int ret = kv_range(gw->kv, &q, &res);
	if (ret < 0)
		return h2_stream_error(st, GRPC_UNAVAILABLE, "etcdserver: %s", strerror(-ret));
	if (gw->node_fn)
		gw->node_fn(gw->node_arg, &node);
	int64_t rev = res.revision;
	ret = build(&d, &res, rev, node.raft_index ? node.raft_index : (uint64_t)rev);
	kv_range_result_free(&res);
	if (ret < 0) {
		free(d.p);
		return h2_stream_error(st, GRPC_RESOURCE_EXHAUSTED,
				       "etcdfs gateway: out of memory");
	}
	SHA256(d.p, d.len, sha);
	for (size_t off = 0; off < d.len && !ret; off += CHUNK) {
		size_t n = d.len - off < CHUNK ? d.len - off : CHUNK;
		ret = send_blob(st, gw, rev, d.p + off, n, d.len - off - n);
	}
	free(d.p);
	if (!ret)
		ret = send_blob(st, gw, rev, sha, sizeof(sha), 0);
	if (ret < 0)
		return h2_stream_error(st, GRPC_RESOURCE_EXHAUSTED,
				       "etcdfs gateway: out of memory");
	h2_stream_finish(st, GRPC_OK, "");
	return 0;
}
