/* test_etcd.c: snapshots made by a real etcd, checked against that etcd.
 *
 * A private etcd (tests/unit/etcd/etcd_harness.h) receives known writes over
 * its JSON gateway: binary keys and values (NUL and 0xff bytes, empty values,
 * a 300 KB value that needs overflow pages), overwrites, deletes, a range
 * delete, a multi-op txn (sub revisions), leases and a physical compaction.
 * Then `etcdctl snapshot save` writes a backup, and the backend opened on it
 * must answer like etcd did: the same keys, values and metadata at the latest
 * revision (also checked against the test's own record of what it wrote) and
 * at every revision etcd still had, -ERANGE below the compaction and -ENOENT
 * past the end. The member's own member/snap/db is refused (-EBUSY) while
 * etcd runs and gives the same answers once etcd is stopped.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_harness.h"
#include "kv.h"
#include "snapshot/snapshot.h"
#include "snaptest.h"

#define N_KEYS 200
#define BIG_VALUE 300000

static struct etcd_harness h;
static CURL *curl;

/* ---- base64 (the gateway's encoding for bytes) ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_enc(const void *data, size_t n)
{
	const unsigned char *p = data;
	char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
	REQUIRE(out != NULL);
	for (size_t i = 0; i < n; i += 3) {
		unsigned v =
			p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
		*o++ = b64[v >> 18 & 63];
		*o++ = b64[v >> 12 & 63];
		*o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? b64[v & 63] : '=';
	}
	*o = 0;
	return out;
}

static unsigned char *b64_dec(const char *s, size_t *len)
{
	size_t n = strlen(s);
	unsigned char *out = malloc(n / 4 * 3 + 1);
	size_t o = 0;
	unsigned v = 0;
	int bits = 0;
	REQUIRE(out != NULL);
	for (size_t i = 0; i < n && s[i] != '='; i++) {
		const char *c = strchr(b64, s[i]);
		if (!c || !*c) {
			fprintf(stderr, "bad base64 from etcd: %s\n", s);
			abort();
		}
		v = v << 6 | (unsigned)(c - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(v >> bits);
		}
	}
	out[o] = 0;
	*len = o;
	return out;
}

/* ---- the gateway ---- */

struct buf {
	char *p;
	size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t n = size * nmemb;
	char *np = realloc(b->p, b->n + n + 1);
	if (!np)
		return 0;
	memcpy(np + b->n, ptr, n);
	b->p = np;
	b->n += n;
	b->p[b->n] = 0;
	return n;
}

/* POSTs body (stolen) to the gateway path; returns the parsed response. */
static json_t *call(const char *path, json_t *body)
{
	char url[256];
	snprintf(url, sizeof(url), "%s%s", h.endpoint, path);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	struct buf b = {0};
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
	CURLcode rc = curl_easy_perform(curl);
	if (rc != CURLE_OK)
		fprintf(stderr, "POST %s: %s\n", url, curl_easy_strerror(rc));
	REQUIRE(rc == CURLE_OK);
	free(text);
	json_error_t err;
	json_t *res = json_loads(b.p ? b.p : "", 0, &err);
	if (!res)
		fprintf(stderr, "bad JSON from %s: %s\n", path, b.p ? b.p : "");
	REQUIRE(res != NULL);
	free(b.p);
	return res;
}

/* int64 fields come as strings; absent means 0. */
static int64_t jint(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	if (json_is_integer(v))
		return json_integer_value(v);
	return 0;
}

static int64_t header_rev(json_t *res)
{
	json_t *hd = json_object_get(res, "header");
	if (!hd)
		fprintf(stderr, "etcd error: %s\n", json_dumps(res, 0));
	REQUIRE(hd != NULL);
	return jint(hd, "revision");
}

static json_t *jbytes(const void *p, size_t n)
{
	char *e = b64_enc(p, n);
	json_t *s = json_string(e);
	free(e);
	return s;
}

/* ---- what the test wrote ---- */

struct mkey {
	char key[64];
	size_t key_len;
	unsigned char *val;
	size_t val_len;
	bool live;
	int64_t create, mod, version, lease;
};

static struct mkey model[N_KEYS + 16];
static size_t n_model;
static int64_t lease_id;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static struct mkey *mk(const void *key, size_t len)
{
	for (size_t i = 0; i < n_model; i++)
		if (model[i].key_len == len && memcmp(model[i].key, key, len) == 0)
			return &model[i];
	REQUIRE(n_model < sizeof(model) / sizeof(model[0]) && len < sizeof(model[0].key));
	struct mkey *m = &model[n_model++];
	memcpy(m->key, key, len);
	m->key_len = len;
	return m;
}

/* A value of len bytes drawn from all 256 byte values (NULs included). */
static unsigned char *rand_value(size_t len)
{
	unsigned char *v = malloc(len + 1);
	REQUIRE(v != NULL);
	for (size_t i = 0; i < len; i++)
		v[i] = (unsigned char)snap_rand(&rng);
	return v;
}

/* Every record written (puts and tombstones), to predict what compaction keeps. */
static struct wlog {
	struct mkey *m;
	int64_t rev;
	bool tomb;
} wlog[1024];
static size_t n_wlog;

static void log_write(struct mkey *m, int64_t rev, bool tomb)
{
	REQUIRE(n_wlog < sizeof(wlog) / sizeof(wlog[0]));
	wlog[n_wlog++] = (struct wlog){m, rev, tomb};
}

static void model_del(struct mkey *m, int64_t rev)
{
	m->live = false;
	free(m->val);
	m->val = NULL;
	log_write(m, rev, true);
}

/* Records a compaction at c leaves: each key's records after c, plus its
 * latest one at or before c unless that is a tombstone. */
static size_t records_after_compaction(int64_t c)
{
	size_t n = 0;
	for (size_t i = 0; i < n_model; i++) {
		const struct wlog *last = NULL;
		for (size_t j = 0; j < n_wlog; j++) {
			if (wlog[j].m != &model[i])
				continue;
			if (wlog[j].rev > c)
				n++;
			else
				last = &wlog[j];
		}
		n += last && !last->tomb;
	}
	return n;
}

static void model_put(struct mkey *m, unsigned char *val, size_t len, int64_t rev, int64_t lease)
{
	log_write(m, rev, false);
	free(m->val);
	m->val = val;
	m->val_len = len;
	if (!m->live) {
		m->create = rev;
		m->version = 0;
	}
	m->live = true;
	m->mod = rev;
	m->version++;
	m->lease = lease;
}

static json_t *put_op(struct mkey *m, const unsigned char *val, size_t len, int64_t lease)
{
	json_t *o = json_object();
	json_object_set_new(o, "key", jbytes(m->key, m->key_len));
	json_object_set_new(o, "value", jbytes(val, len));
	if (lease)
		json_object_set_new(o, "lease", json_integer(lease));
	return o;
}

static int64_t put(const void *key, size_t key_len, unsigned char *val, size_t len, int64_t lease)
{
	struct mkey *m = mk(key, key_len);
	json_t *res = call("/v3/kv/put", put_op(m, val, len, lease));
	int64_t rev = header_rev(res);
	json_decref(res);
	model_put(m, val, len, rev, lease);
	return rev;
}

static int64_t put_str(const char *key, size_t vlen, int64_t lease)
{
	return put(key, strlen(key), rand_value(vlen), vlen, lease);
}

static int bytes_cmp(const void *a, size_t al, const void *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	return c ? c : al < bl ? -1 : al > bl;
}

static int64_t del_range(const char *key, const char *end, int64_t want_deleted)
{
	json_t *body = json_object();
	json_object_set_new(body, "key", jbytes(key, strlen(key)));
	if (end)
		json_object_set_new(body, "range_end", jbytes(end, strlen(end)));
	json_t *res = call("/v3/kv/deleterange", body);
	int64_t rev = header_rev(res);
	CHECK_EQ(jint(res, "deleted"), want_deleted);
	json_decref(res);
	size_t kl = strlen(key);
	for (size_t i = 0; i < n_model; i++) {
		struct mkey *m = &model[i];
		bool hit = end ? (bytes_cmp(m->key, m->key_len, key, kl) >= 0 &&
				  bytes_cmp(m->key, m->key_len, end, strlen(end)) < 0)
			       : bytes_cmp(m->key, m->key_len, key, kl) == 0;
		if (hit && m->live)
			model_del(m, rev);
	}
	return rev;
}

static char *kname(int i)
{
	static char k[32];
	snprintf(k, sizeof(k), "/snap/k/%03d", i);
	return k;
}

static int64_t compact_rev, final_rev;

static void check_tiny_snapshot(void)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/tiny.db", h.dir);
	const char *args[] = {"snapshot", "save", path, NULL};
	char out[4096];
	REQUIRE_EQ(etcd_harness_etcdctl(&h, NULL, out, sizeof(out), args), 0);
	struct kv *kv;
	REQUIRE_EQ(snapshot_open(path, &kv), 0);
	struct snapshot_info info;
	REQUIRE_EQ(snapshot_get_info(kv, &info), 0);
	CHECK(info.sha256_verified);
	CHECK_EQ(info.n_keys, 2);
	CHECK_EQ(info.pages_branch, 0);
	CHECK(info.pages_inline >= 2); /* "key" and "meta" */
	for (size_t i = 0; i < n_model; i++) {
		struct kv_kv got;
		REQUIRE_EQ(kv_get(kv, model[i].key, model[i].key_len, &got), 0);
		CHECK_MEM(got.value, got.value_len, model[i].val, model[i].val_len);
		CHECK_EQ(got.mod_revision, model[i].mod);
		CHECK_EQ(got.version, 1);
		kv_kv_free(&got);
	}
	fprintf(stderr, "  tiny.db: %zu keys, %" PRIu64 " inline pages, revision %" PRId64 "\n",
		info.n_keys, info.pages_inline, info.revision);
	kv_destroy(kv);
}

static void write_history(void)
{
	json_t *grant = json_object();
	json_object_set_new(grant, "TTL", json_integer(3600));
	json_t *res = call("/v3/lease/grant", grant);
	lease_id = jint(res, "ID");
	REQUIRE(lease_id != 0);
	json_decref(res);

	/* A first backup while the keyspace is tiny: bbolt keeps the bucket
	 * "key" inline in its parent's page. */
	put_str("/snap/a/1", 3, 0);
	put_str("/snap/a/2", 0, 0);
	check_tiny_snapshot();

	/* Before the compaction: creates, overwrites, deletes. */
	for (int i = 0; i < N_KEYS; i++) {
		size_t len = i % 10 == 0 ? 0 : i == 7 ? BIG_VALUE : 1 + snap_rand(&rng) % 2500;
		put_str(kname(i), len, i >= 190 ? lease_id : 0);
	}
	static const char bin1[] = "/snap/bin/\0\x01\xff", bin2[] = "/snap/bin/\xff\xfe";
	put(bin1, sizeof(bin1) - 1, rand_value(40), 40, 0);
	put(bin2, sizeof(bin2) - 1, rand_value(0), 0, 0);
	for (int i = 0; i < 120; i += 3)
		put_str(kname(i), 1 + snap_rand(&rng) % 800, 0);
	for (int i = 120; i < 140; i++)
		del_range(kname(i), NULL, 1);
	int64_t mid = del_range("/snap/k/15", "/snap/k/16", 10);

	/* Compact physically: older versions and tombstones go away. */
	compact_rev = mid - 5;
	json_t *cbody = json_object();
	json_object_set_new(cbody, "revision", json_integer(compact_rev));
	json_object_set_new(cbody, "physical", json_true());
	res = call("/v3/kv/compaction", cbody);
	header_rev(res);
	json_decref(res);

	/* After it: history that must read back at every revision. */
	for (int i = 1; i < 120; i += 2)
		put_str(kname(i), snap_rand(&rng) % 300, 0);
	for (int i = 120; i < 126; i++)
		put_str(kname(i), 33, 0); /* re-created: version 1, new create revision */
	for (int i = 60; i < 70; i++)
		del_range(kname(i), NULL, 1);
	/* One txn: three puts and a delete share a main revision. */
	json_t *txn = json_object(), *ops = json_array();
	const char *tk[] = {"/snap/t/a", "/snap/t/b", "/snap/k/000"};
	unsigned char *tv[3];
	size_t tl[3];
	for (int i = 0; i < 3; i++) {
		tl[i] = 5 + i;
		tv[i] = rand_value(tl[i]);
		json_t *op = json_object();
		json_object_set_new(op, "request_put",
				    put_op(mk(tk[i], strlen(tk[i])), tv[i], tl[i], 0));
		json_array_append_new(ops, op);
	}
	json_t *dop = json_object(), *dreq = json_object();
	json_object_set_new(dreq, "key", jbytes("/snap/k/160", 11));
	json_object_set_new(dop, "request_delete_range", dreq);
	json_array_append_new(ops, dop);
	json_object_set_new(txn, "success", ops);
	res = call("/v3/kv/txn", txn);
	int64_t trev = header_rev(res);
	CHECK(json_is_true(json_object_get(res, "succeeded")));
	json_decref(res);
	for (int i = 0; i < 3; i++)
		model_put(mk(tk[i], strlen(tk[i])), tv[i], tl[i], trev, 0);
	model_del(mk("/snap/k/160", 11), trev);
	put_str(kname(3), 44, 0);	  /* third version */
	put_str(kname(161), 1, lease_id); /* overwrite, now with a lease */
	final_rev = put_str("/snap/z/last", 3, 0);
	fprintf(stderr,
		"  etcd at revision %" PRId64 ", compacted at %" PRId64 ", %zu records written\n",
		final_rev, compact_rev, n_wlog);
}

/* ---- etcd's own answers ---- */

struct oracle {
	int64_t rev;
	bool values; /* kvs holds values too */
	json_t *kvs; /* etcd's kvs at rev, or NULL where etcd refused the revision */
};

static struct oracle *oracles;
static size_t n_oracles;

static json_t *etcd_range(int64_t rev, bool keys_only)
{
	json_t *body = json_object();
	json_object_set_new(body, "key", jbytes("\0", 1));
	json_object_set_new(body, "range_end", jbytes("\0", 1));
	json_object_set_new(body, "revision", json_integer(rev));
	if (keys_only)
		json_object_set_new(body, "keys_only", json_true());
	return call("/v3/kv/range", body);
}

/* Every revision etcd still serves, plus one on each side it refuses. Values
 * at every 10th and the last revisions (the rest compare keys and metadata:
 * all values at every revision would be a few hundred MB of JSON). */
static void collect_oracles(void)
{
	oracles = calloc((size_t)final_rev + 2, sizeof(*oracles));
	REQUIRE(oracles != NULL);
	for (int64_t r = compact_rev - 1; r <= final_rev + 1; r++) {
		struct oracle *o = &oracles[n_oracles++];
		o->rev = r;
		o->values = r % 10 == 0 || r > final_rev - 5 || r == compact_rev;
		json_t *res = etcd_range(r, !o->values);
		if (r < compact_rev || r > final_rev) {
			/* etcd refuses: compacted / future revision. */
			CHECK(json_object_get(res, "error") != NULL);
			json_decref(res);
			continue;
		}
		CHECK_EQ(header_rev(res), final_rev);
		o->kvs = json_incref(json_object_get(res, "kvs"));
		if (!o->kvs)
			o->kvs = json_array();
		CHECK_EQ(jint(res, "count"), (int64_t)json_array_size(o->kvs));
		json_decref(res);
	}
}

/* ---- checks ---- */

/* Our range at rev equals etcd's answer, field by field. */
static void check_against_etcd(struct kv *kv, const struct oracle *o, size_t *n_kvs, size_t *n_vals)
{
	struct kv_range_req req = {.key = "\0",
				   .key_len = 1,
				   .range_end = "\0",
				   .range_end_len = 1,
				   .revision = o->rev,
				   .keys_only = !o->values};
	struct kv_range_result res;
	int ret = kv_range(kv, &req, &res);
	if (!o->kvs) {
		CHECK_EQ(ret, o->rev < compact_rev ? -ERANGE : -ENOENT);
		if (ret == -ERANGE)
			CHECK_EQ(res.compact_revision, compact_rev);
		kv_range_result_free(&res);
		return;
	}
	REQUIRE_EQ(ret, 0);
	CHECK_EQ(res.revision, final_rev);
	REQUIRE_EQ(res.n_kvs, json_array_size(o->kvs));
	CHECK_EQ(res.count, (int64_t)res.n_kvs);
	for (size_t i = 0; i < res.n_kvs; i++) {
		json_t *e = json_array_get(o->kvs, i);
		const struct kv_kv *k = &res.kvs[i];
		size_t kl, vl;
		unsigned char *key = b64_dec(json_string_value(json_object_get(e, "key")), &kl);
		json_t *jv = json_object_get(e, "value");
		unsigned char *val = b64_dec(jv ? json_string_value(jv) : "", &vl);
		CHECK_MEM(k->key, k->key_len, key, kl);
		if (o->values) {
			CHECK_MEM(k->value, k->value_len, val, vl);
			(*n_vals)++;
		} else {
			CHECK(k->value == NULL && jv == NULL);
		}
		CHECK_EQ(k->create_revision, jint(e, "create_revision"));
		CHECK_EQ(k->mod_revision, jint(e, "mod_revision"));
		CHECK_EQ(k->version, jint(e, "version"));
		CHECK_EQ(k->lease, jint(e, "lease"));
		free(key);
		free(val);
	}
	*n_kvs += res.n_kvs;
	kv_range_result_free(&res);
}

/* The latest state equals what the test wrote. */
static void check_against_model(struct kv *kv)
{
	size_t live = 0;
	for (size_t i = 0; i < n_model; i++) {
		const struct mkey *m = &model[i];
		struct kv_kv got;
		int ret = kv_get(kv, m->key, m->key_len, &got);
		if (!m->live) {
			CHECK_EQ(ret, -ENOENT);
			continue;
		}
		live++;
		REQUIRE_EQ(ret, 0);
		CHECK_MEM(got.value, got.value_len, m->val, m->val_len);
		CHECK_EQ(got.create_revision, m->create);
		CHECK_EQ(got.mod_revision, m->mod);
		CHECK_EQ(got.version, m->version);
		CHECK_EQ(got.lease, m->lease);
		kv_kv_free(&got);
	}
	struct snapshot_info info;
	REQUIRE_EQ(snapshot_get_info(kv, &info), 0);
	CHECK_EQ(info.n_keys, live);
	int64_t rev;
	CHECK_EQ(kv_status(kv, &rev), 0);
	CHECK_EQ(rev, final_rev);
	CHECK_EQ(info.compact_revision, compact_rev);
	CHECK(records_after_compaction(compact_rev) < n_wlog); /* it did remove some */
	CHECK_EQ(info.n_records, records_after_compaction(compact_rev));
	fprintf(stderr, "  %zu live keys as written (of %zu written), %zu records in the file\n",
		live, n_model, info.n_records);
}

static void check_file(const char *path, bool want_sha)
{
	struct kv *kv;
	REQUIRE_EQ(snapshot_open(path, &kv), 0);
	struct snapshot_info info;
	REQUIRE_EQ(snapshot_get_info(kv, &info), 0);
	CHECK_EQ(info.sha256_verified, want_sha);
	fprintf(stderr,
		"  %s: %" PRIu64 " bytes, page size %" PRIu32 ", pages read: %" PRIu64
		" branch, %" PRIu64 " leaf, %" PRIu64 " overflow, %" PRIu64 " inline\n",
		path, info.file_size, info.page_size, info.pages_branch, info.pages_leaf,
		info.pages_overflow, info.pages_inline);
	/* The history is big enough for a multi-level tree and overflow pages. */
	CHECK(info.pages_branch > 0);
	CHECK(info.pages_leaf > 1);
	CHECK(info.pages_overflow >= BIG_VALUE / info.page_size);
	check_against_model(kv);
	size_t n_kvs = 0, n_vals = 0, n_revs = 0;
	for (size_t i = 0; i < n_oracles; i++) {
		check_against_etcd(kv, &oracles[i], &n_kvs, &n_vals);
		n_revs += oracles[i].kvs != NULL;
	}
	fprintf(stderr,
		"  matched etcd at %zu revisions (%zu key-values with metadata, %zu values "
		"compared), same refusals below the compaction and past the end\n",
		n_revs, n_kvs, n_vals);
	kv_destroy(kv);
}

static char snap_path[PATH_MAX + 32];

static void test_snapshot_save(void)
{
	write_history();
	collect_oracles();
	snprintf(snap_path, sizeof(snap_path), "%s/backup.db", h.dir);
	const char *args[] = {"snapshot", "save", snap_path, NULL};
	char out[4096];
	int st = etcd_harness_etcdctl(&h, NULL, out, sizeof(out), args);
	if (st != 0)
		fprintf(stderr, "etcdctl: %s\n", out);
	REQUIRE_EQ(st, 0);
	check_file(snap_path, true);
}

/* A running member's db is locked by etcd: refused, with a clear log line. */
static void test_member_db_busy(void)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/member/snap/db", h.data_dir);
	struct kv *kv = NULL;
	capture_begin();
	int ret = snapshot_open(path, &kv);
	char *log = capture_end();
	CHECK_EQ(ret, -EBUSY);
	CHECK(kv == NULL);
	CHECK(strstr(log, path) && strstr(log, "locked"));
	free(log);
}

static void test_member_db_stopped(void)
{
	REQUIRE_EQ(etcd_harness_stop(&h), 0);
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/member/snap/db", h.data_dir);
	check_file(path, false);
}

/* The etcdctl trailer guards the data: one flipped byte is caught. Without
 * the trailer the file is a plain bbolt file and still opens. */
static void test_snapshot_trailer(void)
{
	size_t len;
	char *data = slurp(snap_path, &len);
	REQUIRE_EQ(len % 512, 32);
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/flipped.db", h.dir);
	data[len / 2] ^= 0x40;
	spit(path, data, len);
	struct kv *kv = NULL;
	capture_begin();
	int ret = snapshot_open(path, &kv);
	char *log = capture_end();
	CHECK_EQ(ret, -EUCLEAN);
	CHECK(strstr(log, path) && strstr(log, "SHA-256"));
	free(log);

	data[len / 2] ^= 0x40;
	snprintf(path, sizeof(path), "%s/notrailer.db", h.dir);
	spit(path, data, len - 32);
	check_file(path, false);
	free(data);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	curl = curl_easy_init();
	REQUIRE(curl != NULL);
	struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
	if (etcd_harness_start(&h, NULL) < 0) {
		fprintf(stderr, "cannot start etcd\n");
		return 1;
	}
	TEST_RUN(test_snapshot_save);
	TEST_RUN(test_member_db_busy);
	TEST_RUN(test_member_db_stopped);
	TEST_RUN(test_snapshot_trailer);
	etcd_harness_destroy(&h);
	for (size_t i = 0; i < n_oracles; i++)
		json_decref(oracles[i].kvs);
	free(oracles);
	for (size_t i = 0; i < n_model; i++)
		free(model[i].val);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(curl);
	curl_global_cleanup();
	return test_summary();
}
