/* test_persist.c: durability across close/reopen: plain log replay, then
 * snapshots taken by threshold with the log truncated behind them, history
 * and compaction surviving a restart, and the data dir lock. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storetest.h"

static void key_of(int i, char *buf, size_t len)
{
	snprintf(buf, len, "/p/%05d", i);
}

static void val_of(int i, int gen, char *buf, size_t len)
{
	snprintf(buf, len, "value-%d-gen-%d-%0*d", i, gen, 60, i);
}

/* Checks keys [0, n): key i has generation gen[i] (or is absent if < 0). */
static void verify(struct kv *kv, int n, const int *gen)
{
	for (int i = 0; i < n; i++) {
		char k[32], v[128];
		key_of(i, k, sizeof(k));
		struct kv_kv got;
		int ret = get_s(kv, k, &got);
		if (gen[i] < 0) {
			REQUIRE_EQ(ret, -ENOENT);
			continue;
		}
		REQUIRE_EQ(ret, 0);
		val_of(i, gen[i], v, sizeof(v));
		CHECK_STRN(got.value, got.value_len, v);
		kv_kv_free(&got);
	}
	REQUIRE_EQ(store_check(kv), 0);
}

static void test_reopen(void)
{
	char *dir = test_tmpdir("reopen");
	struct kv *kv = open_at(dir, NULL);
	enum { N = 200 };
	int gen[N];
	int64_t rev = 0, rev_at_100 = 0;
	for (int i = 0; i < N; i++) {
		char k[32], v[128];
		key_of(i, k, sizeof(k));
		val_of(i, 0, v, sizeof(v));
		REQUIRE_EQ(put_s(kv, k, v, &rev), 0);
		gen[i] = 0;
		if (i == 100)
			rev_at_100 = rev;
	}
	for (int i = 0; i < N; i += 3) {
		char k[32], v[128];
		key_of(i, k, sizeof(k));
		val_of(i, 1, v, sizeof(v));
		REQUIRE_EQ(put_s(kv, k, v, &rev), 0);
		gen[i] = 1;
	}
	for (int i = 1; i < N; i += 7) {
		char k[32];
		key_of(i, k, sizeof(k));
		REQUIRE_EQ(kv_delete_range(kv, k, strlen(k), NULL, 0, NULL, &rev), 0);
		gen[i] = -1;
	}
	verify(kv, N, gen);
	kv_destroy(kv);

	kv = open_at(dir, NULL);
	int64_t rev2;
	REQUIRE_EQ(kv_status(kv, &rev2), 0);
	REQUIRE_EQ(rev2, rev);
	verify(kv, N, gen);
	/* history came back too: the range at rev_at_100 sees 101 keys */
	struct kv_range_req req = {.key = "/p/",
				   .key_len = 3,
				   .range_end = "/p0",
				   .range_end_len = 3,
				   .revision = rev_at_100,
				   .count_only = true};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	CHECK_EQ(res.count, 101);
	kv_range_result_free(&res);
	/* and the revision continues where it was */
	REQUIRE_EQ(put_s(kv, "/p/next", "x", &rev2), 0);
	REQUIRE_EQ(rev2, rev + 1);
	/* the data dir is locked while open */
	struct store_config cfg;
	store_config_init(&cfg);
	cfg.data_dir = dir;
	struct kv *other = NULL;
	REQUIRE_EQ(store_open(&cfg, &other), -EBUSY);
	/* compaction is a log entry too: it survives the restart */
	REQUIRE_EQ(kv_compact(kv, rev_at_100, true), 0);
	kv_destroy(kv);
	kv = open_at(dir, NULL);
	req.revision = rev_at_100 - 1;
	REQUIRE_EQ(kv_range(kv, &req, &res), -ERANGE);
	CHECK_EQ(res.compact_revision, rev_at_100);
	kv_range_result_free(&res);
	verify(kv, N, gen);
	kv_destroy(kv);
	test_rm_rf(dir);
	free(dir);
}

struct dirstat {
	int snapshots;			/* snapshot-* data files (not .meta) */
	int closed;			/* closed segments */
	unsigned long long first_index; /* lowest start index among closed segments */
};

static void scan_raft_dir(const char *dir, struct dirstat *st)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/raft", dir);
	DIR *d = opendir(path);
	REQUIRE(d != NULL);
	memset(st, 0, sizeof(*st));
	st->first_index = ~0ull;
	struct dirent *e;
	while ((e = readdir(d))) {
		unsigned long long a, b;
		size_t l = strlen(e->d_name);
		if (!strncmp(e->d_name, "snapshot-", 9) &&
		    (l < 5 || strcmp(e->d_name + l - 5, ".meta")))
			st->snapshots++;
		else if (sscanf(e->d_name, "%llu-%llu", &a, &b) == 2) {
			st->closed++;
			if (a < st->first_index)
				st->first_index = a;
		}
	}
	closedir(d);
}

static void test_snapshots(void)
{
	char *dir = test_tmpdir("snap");
	struct store_config cfg;
	store_config_init(&cfg);
	cfg.snapshot_threshold = 64;
	cfg.snapshot_trailing = 16;
	cfg.segment_size = 32 * 1024;
	struct kv *kv = open_at(dir, &cfg);
	enum { N = 300, ROUNDS = 5 };
	int gen[N];
	int64_t first_rev = 0, rev = 0;
	for (int g = 0; g < ROUNDS; g++)
		for (int i = 0; i < N; i++) {
			char k[32], v[128];
			key_of(i, k, sizeof(k));
			val_of(i, g, v, sizeof(v));
			REQUIRE_EQ(put_s(kv, k, v, &rev), 0);
			gen[i] = g;
			if (!first_rev)
				first_rev = rev;
		}
	REQUIRE_EQ(kv_delete_range(kv, "/p/00000", 8, "/p/00010", 8, NULL, &rev), 0);
	for (int i = 0; i < 10; i++)
		gen[i] = -1;
	verify(kv, N, gen);
	kv_destroy(kv);

	/* snapshots were taken and the log before them is gone */
	struct dirstat st;
	scan_raft_dir(dir, &st);
	fprintf(stderr, "raft dir: %d snapshots, %d closed segments, first index %llu\n",
		st.snapshots, st.closed, st.first_index);
	REQUIRE(st.snapshots >= 1);
	REQUIRE(st.closed >= 1);
	REQUIRE(st.first_index > 1); /* the segment holding entry 1 was deleted */

	/* restart = snapshot + the log after it */
	kv = open_at(dir, &cfg);
	int64_t rev2;
	REQUIRE_EQ(kv_status(kv, &rev2), 0);
	REQUIRE_EQ(rev2, rev);
	verify(kv, N, gen);
	/* the snapshot kept the whole history: first version still readable */
	char k0[32], v0[128];
	key_of(20, k0, sizeof(k0));
	struct kv_range_req req = {.key = k0, .key_len = strlen(k0), .revision = first_rev + 20};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 1);
	val_of(20, 0, v0, sizeof(v0));
	CHECK_STRN(res.kvs[0].value, res.kvs[0].value_len, v0);
	CHECK_EQ(res.kvs[0].version, 1);
	kv_range_result_free(&res);
	key_of(20, k0, sizeof(k0));
	struct kv_kv kk;
	REQUIRE_EQ(get_s(kv, k0, &kk), 0);
	CHECK_EQ(kk.version, ROUNDS);
	CHECK_EQ(kk.create_revision, first_rev + 20);
	kv_kv_free(&kk);
	/* compact, write more (more snapshots), reopen once more */
	REQUIRE_EQ(kv_compact(kv, rev - 100, true), 0);
	for (int i = 0; i < 200; i++) {
		char k[32], v[128];
		key_of(i + 50, k, sizeof(k));
		val_of(i + 50, 9, v, sizeof(v));
		REQUIRE_EQ(put_s(kv, k, v, &rev), 0);
		gen[i + 50] = 9;
	}
	kv_destroy(kv);
	kv = open_at(dir, &cfg);
	verify(kv, N, gen);
	struct store_status ss;
	REQUIRE_EQ(store_get_status(kv, &ss), 0);
	CHECK_EQ(ss.compact_revision, rev - 200 - 100);
	CHECK_EQ(ss.revision, rev);
	kv_destroy(kv);
	test_rm_rf(dir);
	free(dir);
}

static void test_layout(void)
{
	/* data dir created with parents, mode 0700 */
	char *base = test_tmpdir("layout");
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/a/b/data", base);
	struct kv *kv = open_at(dir, NULL);
	struct stat st;
	REQUIRE_EQ(stat(dir, &st), 0);
	REQUIRE_EQ(st.st_mode & 0777, 0700);
	kv_destroy(kv);
	/* a data dir that is a file is a clear error */
	char file[512];
	snprintf(file, sizeof(file), "%s/file", base);
	FILE *f = fopen(file, "w");
	fclose(f);
	struct store_config cfg;
	store_config_init(&cfg);
	cfg.data_dir = file;
	struct kv *bad = NULL;
	REQUIRE_EQ(store_open(&cfg, &bad), -ENOTDIR);
	/* a data dir of another node id is refused */
	cfg.data_dir = dir;
	cfg.id = 2;
	REQUIRE_EQ(store_open(&cfg, &bad), -EINVAL);
	/* a single-node dir opened as part of a cluster is refused too */
	cfg.id = 1;
	cfg.peers = "1=127.0.0.1:1,2=127.0.0.1:2";
	REQUIRE_EQ(store_open(&cfg, &bad), -EINVAL);
	/* malformed peer lists */
	cfg.peers = "1=127.0.0.1";
	REQUIRE_EQ(store_open(&cfg, &bad), -EINVAL);
	cfg.peers = "2=127.0.0.1:7002,3=127.0.0.1:7003";
	REQUIRE_EQ(store_open(&cfg, &bad), -EINVAL); /* our id is not listed */
	test_rm_rf(base);
	free(base);
}

/* A damaged log is reported, not "recovered" by dropping data: libraft's
 * auto-recovery (renaming the segment away) is off. */
static void test_corrupt_log(void)
{
	char *dir = test_tmpdir("corrupt");
	struct kv *kv = open_at(dir, NULL);
	for (int i = 0; i < 100; i++) {
		char k[32];
		key_of(i, k, sizeof(k));
		REQUIRE_EQ(put_s(kv, k, "some value that fills the segment", NULL), 0);
	}
	kv_destroy(kv);
	char raft[512], seg[1024] = "";
	snprintf(raft, sizeof(raft), "%s/raft", dir);
	DIR *d = opendir(raft);
	REQUIRE(d != NULL);
	struct dirent *e;
	while ((e = readdir(d))) {
		unsigned long long a, b;
		if (sscanf(e->d_name, "%llu-%llu", &a, &b) == 2 && b > 50)
			snprintf(seg, sizeof(seg), "%s/%s", raft, e->d_name);
	}
	closedir(d);
	REQUIRE(seg[0] != 0);
	FILE *f = fopen(seg, "r+b");
	REQUIRE(f != NULL);
	REQUIRE_EQ(fseek(f, 0, SEEK_END), 0);
	long size = ftell(f);
	REQUIRE_EQ(fseek(f, size / 2, SEEK_SET), 0);
	int c = fgetc(f);
	REQUIRE_EQ(fseek(f, size / 2, SEEK_SET), 0);
	fputc(c ^ 0x5a, f);
	fclose(f);
	/* libraft 0.15 leaks the batch it failed to load (fixed upstream in
	 * "uv_segment: fix leak in uvLoadClosedSegment"): open in a child that
	 * leaves with _exit, so LeakSanitizer does not blame this test. */
	fflush(stderr);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct store_config cfg;
		store_config_init(&cfg);
		cfg.data_dir = dir;
		struct kv *bad = NULL;
		_exit(store_open(&cfg, &bad) == -EUCLEAN ? 0 : 1);
	}
	int st;
	REQUIRE_EQ(waitpid(pid, &st, 0), pid);
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* -EUCLEAN */
	REQUIRE_EQ(access(seg, F_OK), 0);		/* still there, under its own name */
	test_rm_rf(dir);
	free(dir);
}

static void test_auto_compact(void)
{
	char *dir = test_tmpdir("autocompact");
	struct store_config cfg;
	store_config_init(&cfg);
	cfg.auto_compact_retain = 10;
	struct kv *kv = open_at(dir, &cfg);
	int64_t rev = 0;
	for (int i = 0; i < 25; i++)
		REQUIRE_EQ(put_s(kv, "/ac/k", "v", &rev), 0);
	/* the leader notices within its 50 ms poll */
	struct store_status st;
	for (int i = 0; i < 100; i++) {
		REQUIRE_EQ(store_get_status(kv, &st), 0);
		if (st.compact_revision)
			break;
		usleep(20000);
	}
	/* Where exactly depends on when the 50 ms poll ran, but at least 10
	 * revisions stay and at most twice that many accumulate. */
	REQUIRE(st.compact_revision > 0);
	REQUIRE(st.compact_revision <= rev - 10);
	REQUIRE(st.compact_revision >= rev - 20);
	struct kv_range_req req = {
		.key = "/ac/k", .key_len = 5, .revision = st.compact_revision - 1};
	struct kv_range_result res;
	REQUIRE_EQ(kv_range(kv, &req, &res), -ERANGE);
	CHECK_EQ(res.compact_revision, st.compact_revision);
	kv_range_result_free(&res);
	req.revision = rev - 10;
	REQUIRE_EQ(kv_range(kv, &req, &res), 0);
	REQUIRE_EQ(res.n_kvs, 1);
	kv_range_result_free(&res);
	REQUIRE_EQ(store_check(kv), 0);
	kv_destroy(kv);
	test_rm_rf(dir);
	free(dir);
}

int main(void)
{
	TEST_RUN(test_reopen);
	TEST_RUN(test_snapshots);
	TEST_RUN(test_layout);
	TEST_RUN(test_auto_compact);
	TEST_RUN(test_corrupt_log);
	return test_summary();
}
