/* test_etcd_watch.c: etcd watches against a real etcd: ordered delivery, replay from a past
 * revision, large messages, resume across an etcd restart without loss, compaction, progress,
 * the stall guard with a SIGSTOPped etcd, and prompt cancellation.
 *
 * The transport comes from ETCDFS_ETCD_TRANSPORT like in etcdfs: meson runs this file once
 * with the default (watches over gRPC) and once with "json"; main() checks which one served. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "kvtest.h"
#include "etcd.h"
#include "etcd_harness.h"
#include "watchrec.h"

static struct etcd_harness H;

static struct kv *client(const char *endpoints, long cmd_ms)
{
	struct etcd_config cfg;
	etcd_config_init(&cfg);
	if (etcd_config_from_env(&cfg) < 0)
		return NULL;
	etcd_config_set_endpoints(&cfg, endpoints);
	cfg.dial_timeout_ms = 1000;
	if (cmd_ms)
		cfg.command_timeout_ms = cmd_ms;
	return etcd_harness_client(&cfg);
}

static int start_watch(struct kv *kv, const char *prefix, int64_t start, struct watchrec *r,
		       struct kv_watch **w)
{
	static char ends[8][64];
	static int next;
	char *end = ends[next++ % 8];
	size_t end_len = kv_prefix_end(prefix, strlen(prefix), end);
	struct kv_watch_req req = {.key = prefix,
				   .key_len = strlen(prefix),
				   .range_end = end,
				   .range_end_len = end_len,
				   .start_revision = start};
	return kv_watch(kv, &req, watchrec_cb, r, w);
}

static void test_basic(struct kv *kv)
{
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/w/", 0, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
	int64_t first_rev = 0, rev;
	for (int i = 0; i < 20; i++) {
		char k[16], v[16];
		snprintf(k, sizeof(k), "/w/%02d", i);
		snprintf(v, sizeof(v), "%d", i);
		CHECK_EQ(put_s(kv, k, v, &rev), 0);
		if (!first_rev)
			first_rev = rev;
	}
	CHECK_EQ(put_s(kv, "/x/outside", "1", NULL), 0);
	CHECK_EQ(kv_delete_range(kv, "/w/05", 5, NULL, 0, NULL, NULL), 0);
	/* Two puts in one txn share a revision: they must arrive in one batch. */
	struct kv_op ops[2] = {
		{.type = KV_OP_PUT, .key = "/w/a", .key_len = 4, .value = "A", .value_len = 1},
		{.type = KV_OP_PUT, .key = "/w/b", .key_len = 4, .value = "", .value_len = 0},
	};
	struct kv_txn txn = {.success = ops, .n_success = 2};
	struct kv_txn_result tr;
	CHECK_EQ(kv_txn(kv, &txn, &tr), 0);
	int64_t txn_rev = tr.revision;
	kv_txn_result_free(&tr);
	CHECK(watchrec_wait(&r, -1, 23, 5000));
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.n_evs, 23);
	bool in_order = true;
	for (int i = 0; i < 20 && i < (int)r.n_evs; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", i);
		if (strcmp(r.evs[i].value, v) || r.evs[i].type != KV_EVENT_PUT ||
		    r.evs[i].mod_revision != first_rev + i)
			in_order = false;
	}
	CHECK(in_order);
	if (r.n_evs >= 23) {
		CHECK_EQ(r.evs[20].type, KV_EVENT_DELETE);
		CHECK(strcmp(r.evs[20].key, "/w/05") == 0);
		CHECK(strcmp(r.evs[21].key, "/w/a") == 0 && strcmp(r.evs[21].value, "A") == 0);
		CHECK(strcmp(r.evs[22].key, "/w/b") == 0 && r.evs[22].value[0] == 0);
		CHECK_EQ(r.evs[21].mod_revision, txn_rev);
		CHECK_EQ(r.evs[22].mod_revision, txn_rev);
		CHECK_EQ(r.evs[21].batch, r.evs[22].batch);
	}
	CHECK(!r.split_revision);
	CHECK_EQ(r.n_state[KV_WATCH_DISCONNECTED], 0);
	CHECK(r.n_order >= 1 && r.order[0] == KV_WATCH_CONNECTED);
	pthread_mutex_unlock(&r.lock);
	long long t0 = util_now_ms();
	kv_watch_cancel(kv, w);
	long long dt = util_now_ms() - t0;
	fprintf(stderr, "cancel of a connected watch took %lld ms\n", dt);
	CHECK(dt < 500);
	watchrec_destroy(&r);

	/* Replay from a past revision. */
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/w/", first_rev + 10, &r, &w), 0);
	CHECK(watchrec_wait(&r, -1, 13, 5000));
	pthread_mutex_lock(&r.lock);
	CHECK(r.n_evs == 13 && strcmp(r.evs[0].value, "10") == 0);
	CHECK_EQ(r.last_rev[KV_WATCH_CONNECTED], first_rev + 9);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&r);
}

/* Big messages: 100 puts of 8 KiB in one txn (one ~800 KiB response, one revision) and a
 * 1 MiB value with binary bytes; decoded across many reads. */
static void test_bulk(struct kv *kv)
{
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/bulk/", 0, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
	static char keys[100][16];
	static char vals[100][8192];
	struct kv_op ops[100];
	for (int i = 0; i < 100; i++) {
		snprintf(keys[i], sizeof(keys[i]), "/bulk/%03d", i);
		memset(vals[i], 'a' + i % 26, sizeof(vals[i]));
		snprintf(vals[i], 16, "%d", i); /* the recorder keeps the first 63 bytes */
		ops[i] = kvtest_put(keys[i], strlen(keys[i]), vals[i], sizeof(vals[i]));
	}
	struct kv_txn txn = {.success = ops, .n_success = 100};
	struct kv_txn_result tr;
	CHECK_EQ(kv_txn(kv, &txn, &tr), 0);
	kv_txn_result_free(&tr);
	size_t big_len = 1 << 20;
	char *big = malloc(big_len);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)(i * 131);
	memcpy(big, "big", 4); /* "big\0" then binary */
	CHECK_EQ(kv_put(kv, "/bulk/zz", 8, big, big_len, NULL), 0);
	free(big);
	CHECK(watchrec_wait(&r, -1, 101, 10000));
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.n_evs, 101);
	bool ok = r.n_evs == 101;
	for (int i = 0; ok && i < 100; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", i);
		if (strcmp(r.evs[i].value, v) || r.evs[i].batch != r.evs[0].batch)
			ok = false;
	}
	CHECK(ok);
	CHECK(r.n_evs == 101 && strcmp(r.evs[100].value, "big") == 0);
	CHECK(!r.split_revision);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&r);
	CHECK_EQ(kv_delete_range(kv, "/bulk/", 6, "/bulk0", 6, NULL, NULL), 0);
}

static void test_restart(struct kv *kv)
{
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/r/", 0, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
	for (int i = 0; i < 5; i++) {
		char k[16], v[16];
		snprintf(k, sizeof(k), "/r/%02d", i);
		snprintf(v, sizeof(v), "%d", i);
		CHECK_EQ(put_s(kv, k, v, NULL), 0);
	}
	CHECK(watchrec_wait(&r, -1, 5, 5000));
	CHECK_EQ(etcd_harness_stop(&H), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_DISCONNECTED, 1, 5000));
	CHECK_EQ(etcd_harness_restart(&H), 0);
	/* Write right away: these may land before the watch is back; none may be lost. */
	for (int i = 5; i < 10; i++) {
		char k[16], v[16];
		snprintf(k, sizeof(k), "/r/%02d", i);
		snprintf(v, sizeof(v), "%d", i);
		int ret = -1;
		for (int tries = 0; tries < 50 && ret; tries++)
			if ((ret = put_s(kv, k, v, NULL)))
				usleep(100000);
		CHECK_EQ(ret, 0);
	}
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 2, 10000));
	CHECK(watchrec_wait(&r, -1, 10, 5000));
	usleep(300000); /* anything extra (a duplicate) would arrive now */
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.n_evs, 10);
	bool ok = true;
	for (size_t i = 0; i < r.n_evs; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", (int)i);
		if (strcmp(r.evs[i].value, v) ||
		    (i && r.evs[i].mod_revision <= r.evs[i - 1].mod_revision))
			ok = false;
	}
	CHECK(ok);
	/* Exactly one DISCONNECTED for the outage, then CONNECTED. */
	CHECK_EQ(r.n_state[KV_WATCH_DISCONNECTED], 1);
	CHECK(r.n_order >= 3 && r.order[0] == KV_WATCH_CONNECTED);
	int idx_d = -1, idx_c2 = -1, seen_c = 0;
	for (size_t i = 0; i < r.n_order; i++) {
		if (r.order[i] == KV_WATCH_DISCONNECTED && idx_d < 0)
			idx_d = (int)i;
		if (r.order[i] == KV_WATCH_CONNECTED && ++seen_c == 2)
			idx_c2 = (int)i;
	}
	CHECK(idx_d > 0 && idx_c2 > idx_d);
	CHECK(r.last_err[KV_WATCH_DISCONNECTED] < 0);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&r);
}

static void test_compacted(struct kv *kv)
{
	int64_t r1, r2, r3;
	CHECK_EQ(put_s(kv, "/k/c", "1", &r1), 0);
	CHECK_EQ(put_s(kv, "/k/c", "2", &r2), 0);
	CHECK_EQ(put_s(kv, "/k/c", "3", &r3), 0);
	CHECK_EQ(kv_compact(kv, r2, true), 0);
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/k/", r1, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_COMPACTED, 1, 5000));
	CHECK_EQ(put_s(kv, "/k/c", "4", NULL), 0);
	usleep(300000);
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.compact_revision, r2);
	CHECK_EQ(r.n_evs, 0);
	CHECK(!r.after_final);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&r);
	/* From the compaction revision itself the history is still there. */
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/k/", r2, &r, &w), 0);
	CHECK(watchrec_wait(&r, -1, 3, 5000));
	pthread_mutex_lock(&r.lock);
	CHECK(r.n_evs == 3 && strcmp(r.evs[0].value, "2") == 0);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&r);
}

static void test_cancel_while_down(void)
{
	char dead[64];
	snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", etcd_harness_free_port());
	struct kv *kv = client(dead, 1000);
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/d/", 0, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_DISCONNECTED, 1, 5000));
	usleep(1500000); /* let the backoff grow */
	long long t0 = util_now_ms();
	kv_watch_cancel(kv, w);
	long long dt = util_now_ms() - t0;
	fprintf(stderr, "cancel during reconnect backoff took %lld ms\n", dt);
	CHECK(dt < 500);
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.n_state[KV_WATCH_DISCONNECTED], 1); /* once per outage */
	CHECK_EQ(r.last_err[KV_WATCH_DISCONNECTED], -ECONNREFUSED);
	CHECK_EQ(r.n_state[KV_WATCH_CONNECTED], 0);
	pthread_mutex_unlock(&r.lock);
	watchrec_destroy(&r);
	kv_destroy(kv);
}

static void test_stall_guard(struct kv *kv_unused)
{
	(void)kv_unused;
	struct kv *kv = client(H.endpoint, 1000);
	etcd_client_set_watch_stall_ms(kv, 1000);
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/s/", 0, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 1, 5000));
	/* Idle but healthy: silent re-establishment, no DISCONNECTED, events still flow. */
	usleep(2600000);
	CHECK_EQ(put_s(kv, "/s/1", "1", NULL), 0);
	CHECK(watchrec_wait(&r, -1, 1, 5000));
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.n_state[KV_WATCH_DISCONNECTED], 0);
	CHECK_EQ(r.n_state[KV_WATCH_CONNECTED], 1);
	pthread_mutex_unlock(&r.lock);
	/* A hung server: the stream stalls, the probe times out, DISCONNECTED follows. */
	CHECK_EQ(etcd_harness_signal(&H, SIGSTOP), 0);
	long long t0 = util_now_ms();
	CHECK(watchrec_wait(&r, KV_WATCH_DISCONNECTED, 1, 10000));
	long long dt = util_now_ms() - t0;
	fprintf(stderr, "stalled watch reported DISCONNECTED after %lld ms\n", dt);
	CHECK(dt < 5000);
	pthread_mutex_lock(&r.lock);
	CHECK_EQ(r.last_err[KV_WATCH_DISCONNECTED], -ETIMEDOUT);
	pthread_mutex_unlock(&r.lock);
	CHECK_EQ(etcd_harness_signal(&H, SIGCONT), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_CONNECTED, 2, 15000));
	int ret = -1;
	for (int tries = 0; tries < 30 && ret; tries++)
		if ((ret = put_s(kv, "/s/2", "2", NULL)))
			usleep(100000);
	CHECK_EQ(ret, 0);
	CHECK(watchrec_wait(&r, -1, 2, 5000));
	pthread_mutex_lock(&r.lock);
	CHECK(r.n_evs == 2 && strcmp(r.evs[1].value, "2") == 0);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&r);
	kv_destroy(kv);
}

static void test_progress(void)
{
	struct etcd_harness h2;
	const char *args[] = {"--experimental-watch-progress-notify-interval=500ms", NULL};
	struct etcd_harness_opts o = {.extra_args = args};
	if (etcd_harness_start(&h2, &o) < 0) {
		CHECK(!"second etcd did not start");
		return;
	}
	struct kv *kv = client(h2.endpoint, 0);
	int64_t rev;
	CHECK_EQ(put_s(kv, "/other", "x", &rev), 0);
	struct watchrec r;
	struct kv_watch *w;
	watchrec_init(&r);
	CHECK_EQ(start_watch(kv, "/p/", 0, &r, &w), 0);
	CHECK(watchrec_wait(&r, KV_WATCH_PROGRESS, 2, 5000));
	pthread_mutex_lock(&r.lock);
	CHECK(r.last_rev[KV_WATCH_PROGRESS] >= rev);
	CHECK_EQ(r.n_evs, 0);
	pthread_mutex_unlock(&r.lock);
	kv_watch_cancel(kv, w);
	watchrec_destroy(&r);
	kv_destroy(kv);
	etcd_harness_destroy(&h2);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (etcd_harness_start(&H, NULL) < 0) {
		fprintf(stderr, "cannot start etcd\n");
		return 1;
	}
	struct kv *kv = client(H.endpoint, 0);
	CHECK(kv != NULL);
	if (kv) {
		test_basic(kv);
		test_bulk(kv);
		test_compacted(kv);
		test_cancel_while_down();
		test_progress();
		test_stall_guard(kv);
		test_restart(kv);
		/* Which transport served the watches of this client. */
		struct etcd_config cfg;
		etcd_config_init(&cfg);
		etcd_config_from_env(&cfg);
		struct etcd_client_stats s;
		etcd_client_get_stats(kv, &s);
		fprintf(stderr, "watch streams created: %llu over gRPC, %llu over JSON\n",
			(unsigned long long)s.grpc_watch_streams,
			(unsigned long long)s.json_watch_streams);
		if (cfg.transport == ETCD_TRANSPORT_JSON) {
			CHECK(s.json_watch_streams >= 5);
			CHECK_EQ(s.grpc_watch_streams, 0);
		} else {
			CHECK(s.grpc_watch_streams >= 5);
			CHECK_EQ(s.json_watch_streams, 0);
			CHECK_EQ(s.grpc_fallbacks, 0);
		}
		etcd_config_free(&cfg);
		kv_destroy(kv);
	}
	etcd_harness_destroy(&H);
	return test_summary();
}
