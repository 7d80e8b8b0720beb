/* test_crash.c: kill -9 the store at random moments; nothing acknowledged
 * may be lost.
 *
 * Each round forks a child that opens the store and writes from several
 * threads, reporting every acknowledged put through a pipe (a write to a pipe
 * survives the writer's death). The parent kills the child with SIGKILL at a
 * random moment: sometimes during startup (even during the very first
 * bootstrap), usually while writes, snapshots and log truncation are in full
 * swing. It then reopens the store itself and checks that every acknowledged
 * put is there with its value, that overwritten counters never went back,
 * that the revision did not go back, and that store_check passes. A fourth
 * thread grants leases with a key each and revokes every third: every
 * acknowledged grant is there with its key unless its revoke was tried, every
 * acknowledged revoke stays done. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "storetest.h"

#define ROUNDS 24
#define THREADS 3
#define MAX_ACKS 200000

/* kind 0: unique key, 1: counter, 2: lease granted and its key put, 3: that
 * lease's revoke is about to be sent, 4: the revoke was acknowledged */
struct ack {
	int32_t round, thread, seq, kind;
	int64_t rev;
};

#define LEASE_THREAD THREADS

static int64_t lease_id_of(int round, int seq)
{
	return 1000000ll * (round + 1) + seq + 1;
}

static struct ack *acks;
static size_t n_acks;
static int n_leases_checked;
static struct kv *child_kv;
static int child_fd;
static int child_round;
static pthread_mutex_t pipe_mu = PTHREAD_MUTEX_INITIALIZER;

static void report(const struct ack *a)
{
	/* One write of < PIPE_BUF bytes is atomic. */
	pthread_mutex_lock(&pipe_mu);
	ssize_t n = write(child_fd, a, sizeof(*a));
	pthread_mutex_unlock(&pipe_mu);
	if (n != (ssize_t)sizeof(*a))
		_exit(3);
}

static void *writer(void *arg)
{
	int t = (int)(long)arg;
	for (int i = 0;; i++) {
		char k[64], v[96];
		snprintf(k, sizeof(k), "/crash/%02d/t%d/%06d", child_round, t, i);
		snprintf(v, sizeof(v), "round %d thread %d seq %d %032d", child_round, t, i, i);
		int64_t rev;
		if (put_s(child_kv, k, v, &rev) == 0) {
			struct ack a = {child_round, t, i, 0, rev};
			report(&a);
		}
		/* a counter key overwritten all the time */
		snprintf(k, sizeof(k), "/crash/counter/t%d", t);
		snprintf(v, sizeof(v), "%d %d", child_round, i);
		if (put_s(child_kv, k, v, &rev) == 0) {
			struct ack a = {child_round, t, i, 1, rev};
			report(&a);
		}
		if (t == 0 && i % 97 == 96) {
			/* compaction is a log entry too; crash around it as well */
			int64_t cur;
			if (kv_status(child_kv, &cur) == 0 && cur > 200)
				kv_compact(child_kv, cur - 150, true);
		}
	}
	return NULL;
}

static void *leaser(void *arg)
{
	(void)arg;
	for (int i = 0;; i++) {
		struct kv_lease l;
		int64_t id = lease_id_of(child_round, i);
		if (kv_lease_grant(child_kv, id, 600, &l) != 0)
			continue;
		char k[64];
		snprintf(k, sizeof(k), "/crash/lease/%02d/%06d", child_round, i);
		struct kv_op op = {.type = KV_OP_PUT,
				   .key = k,
				   .key_len = strlen(k),
				   .value = "l",
				   .value_len = 1,
				   .lease = id};
		struct kv_txn t = {.success = &op, .n_success = 1};
		struct kv_txn_result r;
		if (kv_txn(child_kv, &t, &r) != 0)
			continue;
		struct ack a = {child_round, LEASE_THREAD, i, 2, r.revision};
		kv_txn_result_free(&r);
		report(&a);
		if (i % 3 == 2) {
			a.kind = 3;
			report(&a);
			if (kv_lease_revoke(child_kv, id, &a.rev) == 0) {
				a.kind = 4;
				report(&a);
			}
		}
	}
	return NULL;
}

/* Every acknowledged grant holds its key unless a revoke was tried; every
 * acknowledged revoke took the lease and its key. Returns the leases checked. */
static int verify_leases(struct kv *kv)
{
	int checked = 0;
	for (size_t i = 0; i < n_acks; i++) {
		const struct ack *a = &acks[i];
		if (a->kind != 2)
			continue;
		bool tried = false, done = false;
		/* acks arrive round by round: the revoke's are in the same round */
		for (size_t j = i + 1; j < n_acks && acks[j].round == a->round; j++) {
			const struct ack *b = &acks[j];
			if (b->seq == a->seq && b->thread == LEASE_THREAD) {
				tried = tried || b->kind == 3;
				done = done || b->kind == 4;
			}
		}
		int64_t id = lease_id_of(a->round, a->seq);
		struct kv_lease l;
		struct kv_range_result keys;
		int ret = kv_lease_ttl(kv, id, &l, &keys);
		if (done || (tried && ret == -ENOENT)) {
			REQUIRE_EQ(ret, -ENOENT);
		} else {
			if (ret != 0)
				fprintf(stderr, "acknowledged lease %lld missing\n", (long long)id);
			REQUIRE_EQ(ret, 0);
			CHECK_EQ(l.granted_ttl, 600);
			char k[64];
			snprintf(k, sizeof(k), "/crash/lease/%02d/%06d", a->round, a->seq);
			REQUIRE_EQ(keys.n_kvs, 1);
			REQUIRE_STRN(keys.kvs[0].key, keys.kvs[0].key_len, k);
			kv_range_result_free(&keys);
		}
		checked++;
	}
	return checked;
}

static void config(struct store_config *cfg, const char *dir)
{
	store_config_init(cfg);
	cfg->data_dir = dir;
	cfg->snapshot_threshold = 40;
	cfg->snapshot_trailing = 10;
	cfg->segment_size = 16 * 1024;
}

static void child_main(const char *dir, int fd, int round)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	log_set_level(LOG_WARNING);
	child_fd = fd;
	child_round = round;
	struct store_config cfg;
	config(&cfg, dir);
	if (store_open(&cfg, &child_kv) < 0)
		_exit(2);
	pthread_t th[THREADS + 1];
	for (long t = 0; t < THREADS; t++)
		pthread_create(&th[t], NULL, writer, (void *)t);
	pthread_create(&th[THREADS], NULL, leaser, NULL);
	for (;;)
		pause();
}

/* Reads acks until the deadline; with until_first, stops at the first one. */
static int read_acks(int fd, int64_t deadline, bool until_first)
{
	int got = 0;
	for (;;) {
		int64_t left = deadline - util_now_ms();
		if (deadline >= 0 && left <= 0)
			return got;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, deadline >= 0 ? (int)left : -1);
		if (r <= 0)
			continue;
		struct ack a;
		ssize_t n = read(fd, &a, sizeof(a));
		if (n == 0)
			return -1; /* EOF: the writer is gone */
		REQUIRE_EQ(n, sizeof(a));
		REQUIRE(n_acks < MAX_ACKS);
		acks[n_acks++] = a;
		got++;
		if (until_first)
			return got;
	}
}

static void verify(const char *dir)
{
	struct store_config cfg;
	config(&cfg, dir);
	struct kv *kv = NULL;
	int ret = store_open(&cfg, &kv);
	if (ret < 0) {
		fprintf(stderr, "reopen after kill failed: %s\n", strerror(-ret));
		abort();
	}
	REQUIRE_EQ(store_check(kv), 0);
	int64_t rev;
	REQUIRE_EQ(kv_status(kv, &rev), 0);
	int last_counter_round[THREADS], last_counter_seq[THREADS];
	memset(last_counter_round, -1, sizeof(last_counter_round));
	memset(last_counter_seq, -1, sizeof(last_counter_seq));
	for (size_t i = 0; i < n_acks; i++) {
		const struct ack *a = &acks[i];
		REQUIRE(a->rev <= rev); /* the revision never goes back */
		if (a->kind >= 2)
			continue; /* leases: verify_leases() */
		if (a->kind == 1) {
			if (a->round > last_counter_round[a->thread] ||
			    (a->round == last_counter_round[a->thread] &&
			     a->seq > last_counter_seq[a->thread])) {
				last_counter_round[a->thread] = a->round;
				last_counter_seq[a->thread] = a->seq;
			}
			continue;
		}
		char k[64], v[96];
		snprintf(k, sizeof(k), "/crash/%02d/t%d/%06d", a->round, a->thread, a->seq);
		snprintf(v, sizeof(v), "round %d thread %d seq %d %032d", a->round, a->thread,
			 a->seq, a->seq);
		struct kv_kv got;
		ret = get_s(kv, k, &got);
		if (ret != 0)
			fprintf(stderr, "acknowledged key %s (rev %lld) missing\n", k,
				(long long)a->rev);
		REQUIRE_EQ(ret, 0);
		REQUIRE_STRN(got.value, got.value_len, v);
		REQUIRE_EQ(got.mod_revision, a->rev);
		kv_kv_free(&got);
	}
	/* counters hold the last acknowledged value or a later one */
	for (int t = 0; t < THREADS; t++) {
		if (last_counter_round[t] < 0)
			continue;
		char k[64];
		snprintf(k, sizeof(k), "/crash/counter/t%d", t);
		struct kv_kv got;
		REQUIRE_EQ(get_s(kv, k, &got), 0);
		int r, s;
		REQUIRE_EQ(sscanf(got.value, "%d %d", &r, &s), 2);
		REQUIRE(r > last_counter_round[t] ||
			(r == last_counter_round[t] && s >= last_counter_seq[t]));
		kv_kv_free(&got);
	}
	n_leases_checked = verify_leases(kv);
	kv_destroy(kv);
}

/* The test's own random stream: libraft calls srand() (verify() opens the
 * store here), so with rand() the schedule did not follow CRASH_SEED: one
 * seed gave 13 early kills of 24 in one run, failing busy_kills, and 4 in
 * the next. */
static unsigned rng;

static unsigned pick(unsigned n)
{
	return (unsigned)rand_r(&rng) % n;
}

int main(void)
{
	acks = calloc(MAX_ACKS, sizeof(*acks));
	char *dir = test_tmpdir("crash");
	unsigned seed = (unsigned)time(NULL);
	if (getenv("CRASH_SEED"))
		seed = (unsigned)atoi(getenv("CRASH_SEED"));
	fprintf(stderr, "crash test seed %u (CRASH_SEED=%u to repeat)\n", seed, seed);
	rng = seed;
	int early_kills = 0, busy_kills = 0;
	for (int round = 0; round < ROUNDS; round++) {
		int fds[2];
		REQUIRE_EQ(pipe(fds), 0);
		fflush(stderr);
		pid_t pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			child_main(dir, fds[1], round);
			_exit(1);
		}
		close(fds[1]);
		size_t before = n_acks;
		bool early = round == 0 || pick(5) == 0;
		if (early) {
			/* during startup / first writes, often before any ack */
			read_acks(fds[0], util_now_ms() + pick(60), false);
			early_kills++;
		} else {
			REQUIRE(read_acks(fds[0], util_now_ms() + 10000, true) == 1);
			read_acks(fds[0], util_now_ms() + 20 + pick(300), false);
		}
		REQUIRE_EQ(kill(pid, SIGKILL), 0);
		int status;
		REQUIRE_EQ(waitpid(pid, &status, 0), pid);
		REQUIRE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		/* acks written before the kill are still in the pipe */
		read_acks(fds[0], -1, false);
		close(fds[0]);
		if (!early && n_acks > before)
			busy_kills++;
		fprintf(stderr, "round %2d: killed %s after %zu new acks (%zu total)\n", round,
			early ? "early" : "mid-write", n_acks - before, n_acks);
		verify(dir);
	}
	/* The amount written depends on machine load; what matters is that
	 * most kills hit a store that was acknowledging writes. */
	REQUIRE(n_acks >= 200);
	REQUIRE(busy_kills >= ROUNDS / 2);
	REQUIRE(early_kills >= 1);
	test_rm_rf(dir);
	free(dir);
	free(acks);
	fprintf(stderr, "test_crash: %d kills, %zu acknowledged writes verified, %d leases\n",
		ROUNDS, n_acks, n_leases_checked);
	REQUIRE(n_leases_checked >= 20);
	return test_summary();
}
