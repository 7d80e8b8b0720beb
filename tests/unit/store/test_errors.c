/* test_errors.c: storage failures give clear errors and never damage what is
 * already stored: an unwritable data dir (permissions, read-only file
 * system) and a full disk. Mount-based cases run in a child process inside a
 * private mount namespace on a small tmpfs, so nothing leaks to the host; if
 * the namespace cannot be created (not root) they are reported as skipped. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "storetest.h"

/* Runs fn in a child; returns its exit status (77 = skipped). */
static int in_child(void (*fn)(const char *), const char *arg)
{
	fflush(stderr);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		fn(arg);
		_exit(0);
	}
	int status;
	REQUIRE_EQ(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "child died with signal %d\n", WTERMSIG(status));
		return 128 + WTERMSIG(status);
	}
	return WEXITSTATUS(status);
}

static bool private_mounts(void)
{
	if (unshare(CLONE_NEWNS) < 0)
		return false;
	return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
}

static void expect_open_error(const char *dir, int want)
{
	struct store_config cfg;
	store_config_init(&cfg);
	cfg.data_dir = dir;
	struct kv *kv = NULL;
	unsigned long errs = log_error_count();
	int ret = store_open(&cfg, &kv);
	if (ret != want) {
		fprintf(stderr, "store_open(%s) = %s, want %s\n", dir, strerror(-ret),
			strerror(-want));
		_exit(1);
	}
	if (log_error_count() == errs) {
		fprintf(stderr, "store_open failed without logging why\n");
		_exit(1);
	}
}

static void child_noperm(const char *base)
{
	/* Root bypasses permission bits: drop to nobody first. */
	if (geteuid() == 0 &&
	    (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0))
		_exit(1);
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/locked/data", base);
	expect_open_error(dir, -EACCES); /* cannot create */
	snprintf(dir, sizeof(dir), "%s/existing", base);
	expect_open_error(dir, -EACCES); /* exists, not ours */
}

static void test_unwritable(void)
{
	char *base = test_tmpdir("perm");
	char p[512];
	snprintf(p, sizeof(p), "%s/locked", base);
	REQUIRE_EQ(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/existing", base);
	REQUIRE_EQ(mkdir(p, 0700), 0);
	REQUIRE_EQ(chmod(base, 0755), 0);
	if (geteuid() != 0) {
		/* not root: the child cannot switch users, take the rights away */
		snprintf(p, sizeof(p), "%s/locked", base);
		REQUIRE_EQ(chmod(p, 0555), 0);
		snprintf(p, sizeof(p), "%s/existing", base);
		REQUIRE_EQ(chmod(p, 0500), 0);
	}
	REQUIRE_EQ(in_child(child_noperm, base), 0);
	test_rm_rf(base);
	free(base);
}

/* A store written normally, then its file system turns read-only: opening
 * fails with EROFS and the data is intact once writable again. */
static void child_rofs(const char *base)
{
	if (!private_mounts())
		_exit(77);
	if (mount("tmpfs", base, "tmpfs", 0, "size=16m,mode=0755") < 0)
		_exit(77);
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/data", base);
	struct kv *kv = open_at(dir, NULL);
	for (int i = 0; i < 50; i++) {
		char k[32];
		snprintf(k, sizeof(k), "/ro/%d", i);
		REQUIRE_EQ(put_s(kv, k, "v", NULL), 0);
	}
	kv_destroy(kv);
	REQUIRE_EQ(mount(NULL, base, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
	expect_open_error(dir, -EROFS);
	REQUIRE_EQ(mount(NULL, base, NULL, MS_REMOUNT, "size=16m"), 0);
	kv = open_at(dir, NULL);
	for (int i = 0; i < 50; i++) {
		char k[32];
		snprintf(k, sizeof(k), "/ro/%d", i);
		struct kv_kv got;
		REQUIRE_EQ(get_s(kv, k, &got), 0);
		kv_kv_free(&got);
	}
	REQUIRE_EQ(store_check(kv), 0);
	kv_destroy(kv);
	/* a fresh data dir on a read-only file system */
	REQUIRE_EQ(mount(NULL, base, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
	snprintf(dir, sizeof(dir), "%s/fresh", base);
	expect_open_error(dir, -EROFS);
	umount(base);
}

static void test_readonly_fs(void)
{
	char *base = test_tmpdir("rofs");
	int st = in_child(child_rofs, base);
	if (st == 77)
		fprintf(stderr, "SKIP read-only file system case: no private mount namespace\n");
	else
		REQUIRE_EQ(st, 0);
	test_rm_rf(base);
	free(base);
}

/* Fill a small tmpfs until a put fails: it must fail with ENOSPC, be logged,
 * leave everything acknowledged readable, recover once space is back, and
 * survive a restart. */
static void child_full(const char *base)
{
	if (!private_mounts())
		_exit(77);
	if (mount("tmpfs", base, "tmpfs", 0, "size=1m,mode=0755") < 0)
		_exit(77);
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/data", base);
	struct store_config cfg;
	store_config_init(&cfg);
	cfg.data_dir = dir;
	cfg.segment_size = 64 * 1024;
	cfg.snapshot_threshold = 64;
	cfg.snapshot_trailing = 8;
	cfg.apply_timeout_ms = 3000;
	struct kv *kv = open_at(dir, &cfg);
	char val[4096];
	memset(val, 'x', sizeof(val));
	int acked = 0, ret = 0;
	unsigned long errs = log_error_count();
	for (int i = 0; i < 2000; i++) {
		char k[32];
		snprintf(k, sizeof(k), "/full/%05d", i);
		/* incompressible: libraft compresses snapshots */
		for (size_t j = 0; j < sizeof(val); j++)
			val[j] = (char)rand();
		ret = kv_put(kv, k, strlen(k), val, sizeof(val), NULL);
		if (ret < 0)
			break;
		acked++;
	}
	fprintf(stderr, "disk full after %d acknowledged puts: %s\n", acked, strerror(-ret));
	REQUIRE_EQ(ret, -ENOSPC);
	REQUIRE(acked > 10);
	REQUIRE(log_error_count() > errs);
	/* everything acknowledged is still served */
	for (int i = 0; i < acked; i++) {
		char k[32];
		snprintf(k, sizeof(k), "/full/%05d", i);
		struct kv_kv got;
		REQUIRE_EQ(get_s(kv, k, &got), 0);
		REQUIRE_EQ(got.value_len, sizeof(val));
		kv_kv_free(&got);
	}
	REQUIRE_EQ(store_check(kv), 0);
	/* more space: writes work again (raft restarts from disk meanwhile) */
	REQUIRE_EQ(mount(NULL, base, NULL, MS_REMOUNT, "size=64m"), 0);
	for (int tries = 0; tries < 100; tries++) {
		ret = put_s(kv, "/full/after", "ok", NULL);
		if (ret == 0)
			break;
		usleep(100000);
	}
	REQUIRE_EQ(ret, 0);
	kv_destroy(kv);
	/* and after a restart, nothing acknowledged is missing */
	kv = open_at(dir, &cfg);
	for (int i = 0; i < acked; i++) {
		char k[32];
		snprintf(k, sizeof(k), "/full/%05d", i);
		struct kv_kv got;
		REQUIRE_EQ(get_s(kv, k, &got), 0);
		kv_kv_free(&got);
	}
	struct kv_kv got;
	REQUIRE_EQ(get_s(kv, "/full/after", &got), 0);
	kv_kv_free(&got);
	REQUIRE_EQ(store_check(kv), 0);
	kv_destroy(kv);
	umount(base);
}

static void test_disk_full(void)
{
	char *base = test_tmpdir("full");
	int st = in_child(child_full, base);
	if (st == 77)
		fprintf(stderr, "SKIP disk-full case: no private mount namespace\n");
	else
		REQUIRE_EQ(st, 0);
	test_rm_rf(base);
	free(base);
}

int main(void)
{
	TEST_RUN(test_unwritable);
	TEST_RUN(test_readonly_fs);
	TEST_RUN(test_disk_full);
	return test_summary();
}
