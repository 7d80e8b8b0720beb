/* test_malformed.c: broken backend files give a clear error, never a crash.
 *
 * argv: DB, the real Kubernetes backend file from ../shared/k8s-real. Each
 * case writes a damaged copy to a temp file, opens it, and checks the errno,
 * that no kv came back, and that the logged line names the file and the
 * cause. Random garbage and random byte flips only need "error or a usable
 * kv": ASan/UBSan (-Db_sanitize=address,undefined) catch any bad access.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv.h"
#include "snapshot/snapshot.h"
#include "snaptest.h"

#define PS 4096

static char *base;
static size_t base_len;
static char dir[] = "/tmp/snaptest-malformed-XXXXXX";
static char path[sizeof(dir) + 32];
static uint64_t rng = 0x2545f4914f6cdd1dull;

static void put64(char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (char)(v >> (8 * i));
}

static void put32(char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (char)(v >> (8 * i));
}

/* Rewrites the checksum of the meta page at page (the 56 bytes before it). */
static void reseal_meta(char *data, int page)
{
	const unsigned char *m = (const unsigned char *)data + page * PS + 16;
	uint64_t h = 0xcbf29ce484222325ull;
	for (int i = 0; i < 56; i++) {
		h ^= m[i];
		h *= 0x100000001b3ull;
	}
	put64(data + page * PS + 16 + 56, h);
}

/* Opens data[0..len) from a file; returns the errno and what was logged. */
static int open_bytes(const char *data, size_t len, char **log, struct kv **kvp)
{
	spit(path, data, len);
	struct kv *kv = (struct kv *)1;
	capture_begin();
	int ret = snapshot_open(path, &kv);
	char *l = capture_end();
	if (ret < 0)
		CHECK(kv == NULL);
	if (log)
		*log = l;
	else
		free(l);
	if (kvp)
		*kvp = ret == 0 ? kv : NULL;
	else if (ret == 0)
		kv_destroy(kv);
	return ret;
}

/* The copy must fail with want and log a line naming the file and why. */
static void expect_error(const char *what, const char *data, size_t len, int want,
			 const char *phrase)
{
	char *log;
	int ret = open_bytes(data, len, &log, NULL);
	if (ret != want || !strstr(log, path) || !strstr(log, phrase)) {
		fprintf(stderr, "%s: got %d (%s), want %d with \"%s\"; log:\n%s", what, ret,
			strerror(-ret), want, phrase, log);
	}
	CHECK_EQ(ret, want);
	CHECK(strstr(log, path) != NULL);
	CHECK(strstr(log, phrase) != NULL);
	fprintf(stderr, "  %-34s -> %s", what, strstr(log, "snapshot "));
	free(log);
}

static char *copy(void)
{
	char *c = malloc(base_len);
	REQUIRE(c != NULL);
	memcpy(c, base, base_len);
	return c;
}

static size_t count_keys(struct kv *kv)
{
	struct kv_range_req req = {
		.key = "\0", .key_len = 1, .range_end = "\0", .range_end_len = 1};
	struct kv_range_result res;
	if (kv_range(kv, &req, &res) < 0)
		return (size_t)-1;
	size_t n = res.n_kvs;
	kv_range_result_free(&res);
	return n;
}

static void test_sound_base(void)
{
	struct kv *kv;
	REQUIRE_EQ(open_bytes(base, base_len, NULL, &kv), 0);
	CHECK_EQ(count_keys(kv), 4);
	kv_destroy(kv);
}

static void test_empty_and_missing(void)
{
	expect_error("empty file", "", 0, -EINVAL, "empty file");
	struct kv *kv;
	capture_begin();
	int ret = snapshot_open("/nonexistent/snapshot.db", &kv);
	char *log = capture_end();
	CHECK_EQ(ret, -ENOENT);
	CHECK(strstr(log, "/nonexistent/snapshot.db") && strstr(log, "cannot open"));
	free(log);
	capture_begin();
	ret = snapshot_open(dir, &kv);
	log = capture_end();
	CHECK_EQ(ret, -EINVAL);
	CHECK(strstr(log, dir) && strstr(log, "not a regular file"));
	free(log);
}

static void test_truncated(void)
{
	static const size_t cuts[] = {
		1,  15,	     19,	 20,	 79,	       80,     100,    PS - 1,
		PS, PS + 80, 2 * PS - 1, 2 * PS, 2 * PS + 100, 3 * PS, 4 * PS, 5 * PS - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		char what[64];
		snprintf(what, sizeof(what), "truncated to %zu bytes", cuts[i]);
		/* Too short to even show the magic: "not a bbolt file" (-EINVAL). */
		expect_error(what, base, cuts[i], cuts[i] < 20 ? -EINVAL : -EUCLEAN, "truncated");
	}
}

/* one field set in both meta pages (resealed), and what opening must say */
static const struct meta_case {
	const char *what;
	int off; /* in the meta page's body */
	int width;
	uint64_t v;
	int err;
	const char *msg;
} meta_cases[] = {
	{"bbolt version 1", 4, 4, 1, -EINVAL, "unsupported version"},
	{"page size 1000", 8, 4, 1000, -EUCLEAN, "invalid page size"},
	{"root page beyond the end", 16, 8, 99, -EUCLEAN, "root page 99"}, /* root bucket page */
	{"meta claims 1000 pages", 40, 8, 1000, -EUCLEAN, "truncated"},	   /* pages in use */
	{"no bucket 'key'", 16, 8, 3, -EINVAL, "no bucket 'key'"}, /* an empty leaf: no buckets */
};

static void test_meta_pages(void)
{
	char *c = copy();
	struct kv *kv;
	char *log;

	/* One meta page lost: bbolt falls back to the other, and so do we. */
	for (int lost = 0; lost < 2; lost++) {
		char want[64];

		snprintf(want, sizeof(want), "meta page %d is bad magic; using meta page %d", lost,
			 1 - lost);
		memcpy(c, base, base_len);
		memset(c + lost * PS, 0, PS);
		REQUIRE_EQ(open_bytes(c, base_len, &log, &kv), 0);
		CHECK(strstr(log, want) != NULL);
		CHECK_EQ(count_keys(kv), 4);
		kv_destroy(kv);
		free(log);
	}

	memset(c, 0, 2 * PS);
	expect_error("both meta pages zeroed", c, base_len, -EINVAL, "bad magic");

	memcpy(c, base, base_len);
	c[16 + 48] ^= 1; /* txid of meta 0 */
	c[PS + 16 + 48] ^= 1;
	expect_error("both meta checksums wrong", c, base_len, -EUCLEAN, "bad checksum");

	for (size_t i = 0; i < sizeof(meta_cases) / sizeof(meta_cases[0]); i++) {
		const struct meta_case *m = &meta_cases[i];

		memcpy(c, base, base_len);
		for (int p = 0; p < 2; p++) {
			if (m->width == 4)
				put32(c + p * PS + 16 + m->off, (uint32_t)m->v);
			else
				put64(c + p * PS + 16 + m->off, m->v);
			reseal_meta(c, p);
		}
		expect_error(m->what, c, base_len, m->err, m->msg);
	}
	free(c);
}

/* Offset in page 4 (the root bucket's leaf) of the bucket "key"'s header. */
static size_t key_bucket_header(void)
{
	const char *p = base + 4 * PS;
	unsigned count = (unsigned char)p[10] | (unsigned char)p[11] << 8;
	for (unsigned i = 0; i < count; i++) {
		size_t e = 16 + 16 * i;
		uint32_t pos, ksize;
		memcpy(&pos, p + e + 4, 4);
		memcpy(&ksize, p + e + 8, 4);
		if (ksize == 3 && memcmp(p + e + pos, "key", 3) == 0)
			return 4 * PS + e + pos + ksize;
	}
	REQUIRE(!"bucket 'key' not found in page 4");
	return 0;
}

static void test_tree_damage(void)
{
	char *c = copy();
	size_t kb = key_bucket_header();
	REQUIRE_EQ((unsigned char)c[kb], 2); /* the key bucket's root is page 2 */

	put64(c + kb, 77);
	expect_error("child page out of range", c, base_len, -EUCLEAN, "page 77 out of range");

	memcpy(c, base, base_len);
	put64(c + kb, 0); /* claims to be inline, but the value has no page */
	expect_error("bogus inline bucket", c, base_len, -EUCLEAN, "shorter than a page header");

	memcpy(c, base, base_len);
	put64(c + 2 * PS, 9);
	expect_error("page id mismatch", c, base_len, -EUCLEAN, "header says it is page 9");

	/* Page 2 turned into a branch whose only child is itself. */
	memcpy(c, base, base_len);
	c[2 * PS + 8] = 0x01;
	c[2 * PS + 10] = 1;
	c[2 * PS + 11] = 0;
	put64(c + 2 * PS + 16 + 8, 2);
	expect_error("cycle", c, base_len, -EUCLEAN, "reached twice");

	memcpy(c, base, base_len);
	c[2 * PS + 8] = 0x10; /* freelist flag */
	expect_error("unexpected page type", c, base_len, -EUCLEAN, "unexpected page flags");

	memcpy(c, base, base_len);
	put32(c + 2 * PS + 12, 40); /* overflow past the end */
	expect_error("overflow past the end", c, base_len, -EUCLEAN, "runs past the 5 pages");

	memcpy(c, base, base_len);
	c[2 * PS + 10] = (char)0xff; /* 65535 elements */
	c[2 * PS + 11] = (char)0xff;
	expect_error("too many elements", c, base_len, -EUCLEAN, "do not fit");

	memcpy(c, base, base_len);
	put32(c + 2 * PS + 16 + 4, 5000); /* element 0's pos */
	expect_error("element past the page", c, base_len, -EUCLEAN, "runs past the page");

	memcpy(c, base, base_len);
	put32(c + 2 * PS + 16 + 8, 16); /* element 0's key is 16 bytes */
	expect_error("not a revision key", c, base_len, -EUCLEAN, "not a revision");

	memcpy(c, base, base_len);
	put32(c + 2 * PS + 16, 1); /* element 0 marked as a nested bucket */
	expect_error("nested bucket in 'key'", c, base_len, -EUCLEAN, "nested bucket");

	/* Element 0's value starts with tag 0x0a (key, bytes): make it field 0. */
	memcpy(c, base, base_len);
	uint32_t pos;
	memcpy(&pos, c + 2 * PS + 16 + 4, 4);
	size_t v0 = 2 * PS + 16 + pos + 17;
	REQUIRE_EQ((unsigned char)c[v0], 0x0a);
	c[v0] = 0x02;
	expect_error("bad protobuf", c, base_len, -EUCLEAN, "malformed KeyValue");

	memcpy(c, base, base_len);
	c[v0 + 1] = (char)0xff; /* key length (with the next byte) runs past the record */
	expect_error("protobuf length", c, base_len, -EUCLEAN, "runs past the record");

	/* Revisions out of order: swap the revision keys of elements 0 and 1. */
	memcpy(c, base, base_len);
	uint32_t pos1;
	memcpy(&pos1, c + 2 * PS + 32 + 4, 4);
	char tmp[17];
	memcpy(tmp, c + 2 * PS + 16 + pos, 17);
	memcpy(c + 2 * PS + 16 + pos, c + 2 * PS + 32 + pos1, 17);
	memcpy(c + 2 * PS + 32 + pos1, tmp, 17);
	expect_error("revisions out of order", c, base_len, -EUCLEAN, "out of order");
	free(c);
}

/* A file that shrinks after open gives -EIO on read, not SIGBUS. */
static void test_truncated_after_open(void)
{
	struct kv *kv;
	REQUIRE_EQ(open_bytes(base, base_len, NULL, &kv), 0);
	REQUIRE_EQ(truncate(path, 2 * PS), 0);
	struct kv_range_req req = {
		.key = "\0", .key_len = 1, .range_end = "\0", .range_end_len = 1};
	struct kv_range_result res;
	capture_begin();
	int ret = kv_range(kv, &req, &res);
	char *log = capture_end();
	CHECK_EQ(ret, -EIO);
	CHECK_EQ(res.n_kvs, 0);
	CHECK(strstr(log, path) && strstr(log, "truncated"));
	free(log);
	kv_destroy(kv);
}

static void test_garbage(void)
{
	size_t ok = 0, failed = 0;
	char *g = malloc(6 * PS);
	REQUIRE(g != NULL);
	for (int i = 0; i < 300; i++) {
		size_t len = 1 + snap_rand(&rng) % (6 * PS);
		for (size_t j = 0; j < len; j++)
			g[j] = (char)snap_rand(&rng);
		/* Half of them get a sound meta page, so the tree walk sees garbage. */
		if (i % 2 && len >= 2 * PS) {
			memset(g, 0, 16 + 64);
			put32(g + 16, 0xED0CDAED);
			put32(g + 20, 2);
			put32(g + 24, PS);
			put64(g + 32, 2 + snap_rand(&rng) % 5); /* root */
			put64(g + 56, 3 + snap_rand(&rng) % 4); /* pages in use */
			put64(g + 64, snap_rand(&rng) % 10);	/* txid */
			reseal_meta(g, 0);
		}
		int ret = open_bytes(g, len, NULL, NULL);
		CHECK(ret == 0 || ret == -EINVAL || ret == -EUCLEAN);
		ret == 0 ? ok++ : failed++;
	}
	free(g);
	fprintf(stderr,
		"  random garbage (half behind a sound meta page): %zu refused, %zu opened\n",
		failed, ok);
	CHECK(failed > 0);
}

static void test_flips(void)
{
	size_t ok = 0, failed = 0, kvs = 0;
	char *c = copy();
	for (int i = 0; i < 1500; i++) {
		memcpy(c, base, base_len);
		int n = 1 + (int)(snap_rand(&rng) % 8);
		for (int j = 0; j < n; j++) {
			/* Mostly the pages that hold data, sometimes anywhere. */
			size_t at = j % 2 ? snap_rand(&rng) % base_len
					  : 2 * PS + snap_rand(&rng) % (3 * PS);
			c[at] ^= (char)(1 + snap_rand(&rng) % 255);
		}
		struct kv *kv;
		int ret = open_bytes(c, base_len, NULL, &kv);
		CHECK(ret == 0 || ret == -EINVAL || ret == -EUCLEAN);
		if (ret < 0) {
			failed++;
			continue;
		}
		ok++;
		size_t k = count_keys(kv);
		REQUIRE(k != (size_t)-1);
		kvs += k;
		kv_destroy(kv);
	}
	free(c);
	fprintf(stderr, "  byte flips: %zu refused, %zu opened (%zu keys read back)\n", failed, ok,
		kvs);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DB\n", argv[0]);
		return 2;
	}
	if (skip_without(argv[1]))
		return 77;
	base = slurp(argv[1], &base_len);
	REQUIRE_EQ(base_len, 5 * PS);
	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/broken.db", dir);
	TEST_RUN(test_sound_base);
	TEST_RUN(test_empty_and_missing);
	TEST_RUN(test_truncated);
	TEST_RUN(test_meta_pages);
	TEST_RUN(test_tree_damage);
	TEST_RUN(test_truncated_after_open);
	TEST_RUN(test_garbage);
	TEST_RUN(test_flips);
	unlink(path);
	rmdir(dir);
	free(base);
	return test_summary();
}
