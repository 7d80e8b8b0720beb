/* store_vs_etcd.c: put and range throughput through kv.h, embedded store vs
 * a local single-node etcd (fsync on, etcd's default), measured in one run.
 *
 * Both backends get the same workload through the same kv.h calls: puts of
 * distinct keys from 1 and from several threads, then single-key gets,
 * 100-key ranges and full listings over the keys written. etcd is started by
 * the test harness (tests/unit/etcd/etcd_harness.h) on free loopback ports
 * with a temp data dir; the store lives in a temp dir too. Prints a markdown
 * table. Usage: store_vs_etcd [--puts N] [--threads T] [--gets N]
 * [--value-size B] */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "etcd.h"
#include "etcd_harness.h"
#include "kv.h"
#include "core/log.h"
#include "store/store.h"

static int n_puts = 2000, n_threads = 8, n_gets = 5000, value_size = 256;

struct job {
	struct kv *kv;
	const char *tag;
	int from, to;
	int failed;
};

static void *put_worker(void *arg)
{
	struct job *j = arg;
	char *val = malloc((size_t)value_size);
	memset(val, 'v', (size_t)value_size);
	for (int i = j->from; i < j->to; i++) {
		char k[64];
		snprintf(k, sizeof(k), "/bench/%s/%08d", j->tag, i);
		if (kv_put(j->kv, k, strlen(k), val, (size_t)value_size, NULL) != 0)
			j->failed++;
	}
	free(val);
	return NULL;
}

/* Puts n keys /bench/<tag>/... from t threads; returns ops/s (0 on failure). */
static double bench_puts(struct kv *kv, const char *tag, int n, int t)
{
	pthread_t th[64];
	struct job jobs[64];
	double t0 = bench_seconds(CLOCK_MONOTONIC);
	for (int i = 0; i < t; i++) {
		jobs[i] = (struct job){kv, tag, n * i / t, n * (i + 1) / t, 0};
		pthread_create(&th[i], NULL, put_worker, &jobs[i]);
	}
	int failed = 0;
	for (int i = 0; i < t; i++) {
		pthread_join(th[i], NULL);
		failed += jobs[i].failed;
	}
	double dt = bench_seconds(CLOCK_MONOTONIC) - t0;
	if (failed) {
		fprintf(stderr, "%d of %d puts failed\n", failed, n);
		return 0;
	}
	return n / dt;
}

/* Gets single random keys of /bench/<tag>/ [0, n_keys). */
static double bench_gets(struct kv *kv, const char *tag, int n_keys, int n)
{
	unsigned seed = 42;
	double t0 = bench_seconds(CLOCK_MONOTONIC);
	for (int i = 0; i < n; i++) {
		char k[64];
		snprintf(k, sizeof(k), "/bench/%s/%08d", tag, rand_r(&seed) % n_keys);
		struct kv_kv out;
		if (kv_get(kv, k, strlen(k), &out) != 0) {
			fprintf(stderr, "get %s failed\n", k);
			return 0;
		}
		kv_kv_free(&out);
	}
	return n / (bench_seconds(CLOCK_MONOTONIC) - t0);
}

/* Ranges of `limit` keys from random starting points (limit 0 = the whole
 * prefix); checks the number of keys returned. */
static double bench_ranges(struct kv *kv, const char *tag, int n_keys, int limit, int n)
{
	unsigned seed = 7;
	char prefix[64], end[64];
	snprintf(prefix, sizeof(prefix), "/bench/%s/", tag);
	size_t end_len = kv_prefix_end(prefix, strlen(prefix), end);
	double t0 = bench_seconds(CLOCK_MONOTONIC);
	for (int i = 0; i < n; i++) {
		char k[64];
		int start = limit ? rand_r(&seed) % (n_keys - limit) : 0;
		snprintf(k, sizeof(k), "/bench/%s/%08d", tag, start);
		struct kv_range_req req = {.key = k,
					   .key_len = strlen(k),
					   .range_end = end,
					   .range_end_len = end_len,
					   .limit = limit};
		struct kv_range_result res;
		int ret = kv_range(kv, &req, &res);
		size_t want = limit ? (size_t)limit : (size_t)n_keys;
		if (ret != 0 || res.n_kvs != want) {
			fprintf(stderr, "range failed: %s, %zu keys\n", strerror(-ret), res.n_kvs);
			kv_range_result_free(&res);
			return 0;
		}
		kv_range_result_free(&res);
	}
	return n / (bench_seconds(CLOCK_MONOTONIC) - t0);
}

#define N_ROWS 5
static const char *row_names[N_ROWS] = {
	"put, 1 thread",
	"put, T threads",
	"get (1 key)",
	"range (100 keys)",
	"range (all keys; the etcd client pages it)",
};

static void run(struct kv *kv, double *out)
{
	out[0] = bench_puts(kv, "p1", n_puts, 1);
	out[1] = bench_puts(kv, "pt", n_puts, n_threads);
	out[2] = bench_gets(kv, "p1", n_puts, n_gets);
	out[3] = bench_ranges(kv, "p1", n_puts, 100, n_gets / 10);
	out[4] = bench_ranges(kv, "p1", n_puts, 0, 20);
}

int main(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--puts"))
			n_puts = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--threads"))
			n_threads = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--gets"))
			n_gets = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--value-size"))
			value_size = atoi(argv[i + 1]);
		else {
			fprintf(stderr,
				"usage: %s [--puts N] [--threads T] [--gets N] "
				"[--value-size B]\n",
				argv[0]);
			return 2;
		}
	}
	if (n_puts < 200 || n_threads < 1 || n_threads > 64 || n_gets < 100 || value_size < 1) {
		fprintf(stderr, "need --puts >= 200, 1 <= --threads <= 64, --gets >= 100\n");
		return 2;
	}
	log_set_level(LOG_WARNING);
	double store_r[N_ROWS], etcd_r[N_ROWS];

	/* embedded store */
	char dir[] = "/tmp/etcdfs-bench-store-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	struct store_config scfg;
	store_config_init(&scfg);
	scfg.data_dir = dir;
	struct kv *kv;
	int ret = store_open(&scfg, &kv);
	if (ret < 0) {
		fprintf(stderr, "store_open: %s\n", strerror(-ret));
		return 1;
	}
	run(kv, store_r);
	kv_destroy(kv);
	etcd_harness_rmtree(dir);

	/* etcd */
	struct etcd_harness h;
	if (etcd_harness_start(&h, NULL) < 0)
		return 1;
	struct etcd_config ecfg;
	etcd_config_init(&ecfg);
	if (etcd_config_set_endpoints(&ecfg, h.endpoint) < 0 || etcd_client_new(&ecfg, &kv) < 0) {
		etcd_harness_destroy(&h);
		return 1;
	}
	etcd_config_free(&ecfg);
	run(kv, etcd_r);
	kv_destroy(kv);
	etcd_harness_destroy(&h);

	printf("\n%d puts of %d-byte values, T = %d threads, %d gets, %d 100-key ranges, "
	       "20 full listings of %d keys\n\n",
	       n_puts, value_size, n_threads, n_gets, n_gets / 10, n_puts);
	printf("| operation (through kv.h) | store ops/s | etcd ops/s | store / etcd |\n");
	printf("| --- | ---: | ---: | ---: |\n");
	for (int i = 0; i < N_ROWS; i++)
		printf("| %s | %.0f | %.0f | %.1fx |\n", row_names[i], store_r[i], etcd_r[i],
		       etcd_r[i] > 0 ? store_r[i] / etcd_r[i] : 0.0);
	for (int i = 0; i < N_ROWS; i++)
		if (store_r[i] <= 0 || etcd_r[i] <= 0)
			return 1;
	return 0;
}
