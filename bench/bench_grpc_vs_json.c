/* bench_grpc_vs_json.c: a benchmark, not a test (meson builds it, `meson test` does not run
 * it). It starts a private etcd with the test harness, loads 100k keys with 1 KiB values and
 * 100k keys with 100 B values, and prints, measured in the same run, the time to range each
 * whole prefix through the JSON gateway and through native gRPC (both with this client's
 * paging), `etcdctl get --prefix -w protobuf` as an outside reference, single-key get
 * latencies, and the latency of one save (etcdfs's txn: compare mod_revision, put with
 * prev_kv, failure branch a keys-only range). `--keys 1000 --runs 1` takes a few seconds. With
 * --tls the same is measured against a second etcd serving TLS with client certificates.
 *
 * Usage: bench_grpc_vs_json [--runs N] [--keys N] [--tls]   (defaults: 5 runs, 100000 keys)
 * Each figure is the median of N runs (min and max beside it). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "etcd.h"
#include "etcd_harness.h"
#include "kvtest.h"
#include "core/log.h"

static double now_ms(void)
{
	return bench_seconds(CLOCK_MONOTONIC) * 1e3;
}

static double cpu_ms(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

struct fig {
	double med, min, max, cpu_med;
};

static struct fig summarize(double *t, double *cpu, int n)
{
	struct fig f;
	qsort(t, (size_t)n, sizeof(*t), cmp_double);
	f.med = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
	f.min = t[0];
	f.max = t[n - 1];
	if (cpu) {
		qsort(cpu, (size_t)n, sizeof(*cpu), cmp_double);
		f.cpu_med = n % 2 ? cpu[n / 2] : (cpu[n / 2 - 1] + cpu[n / 2]) / 2;
	} else {
		f.cpu_med = 0;
	}
	return f;
}

static struct kv *client(const struct etcd_harness *h, enum etcd_transport t)
{
	struct etcd_config cfg;
	struct kv *kv = NULL;
	etcd_config_init(&cfg);
	etcd_config_set_endpoints(&cfg, h->endpoint);
	cfg.transport = t;
	cfg.command_timeout_ms = 60000;
	if (h->tls) {
		etcd_config_set_string(&cfg.cacert, h->ca);
		etcd_config_set_string(&cfg.cert, h->cert);
		etcd_config_set_string(&cfg.key, h->key);
	}
	if (etcd_client_new(&cfg, &kv) < 0)
		kv = NULL;
	etcd_config_free(&cfg);
	return kv;
}

static int load(struct kv *kv, const char *prefix, int n, size_t vlen)
{
	enum { BATCH = 100 };
	static char keys[BATCH][64];
	struct kv_op ops[BATCH];
	char *val = malloc(vlen);
	if (!val)
		return -ENOMEM;
	for (int base = 0; base < n; base += BATCH) {
		int m = n - base < BATCH ? n - base : BATCH;
		for (int i = 0; i < m; i++) {
			snprintf(keys[i], sizeof(keys[i]), "%sobject-%07d", prefix, base + i);
			/* Values differ per key so nothing compresses or dedups by accident. */
			for (size_t k = 0; k < vlen; k++)
				val[k] = (char)('a' + (base + i + k) % 26);
			ops[i] = (struct kv_op){.type = KV_OP_PUT,
						.key = keys[i],
						.key_len = strlen(keys[i]),
						.value = val,
						.value_len = vlen};
		}
		struct kv_txn txn = {.success = ops, .n_success = (size_t)m};
		struct kv_txn_result r;
		int ret = kv_txn(kv, &txn, &r);
		kv_txn_result_free(&r);
		if (ret < 0) {
			free(val);
			return ret;
		}
	}
	free(val);
	return 0;
}

/* Ranges the whole prefix once; returns ms or -1. */
static double range_once(struct kv *kv, const char *prefix, bool keys_only, int expect, double *cpu,
			 struct etcd_client_stats *delta)
{
	char end[64];
	size_t end_len = kv_prefix_end(prefix, strlen(prefix), end);
	struct kv_range_req req = {.key = prefix,
				   .key_len = strlen(prefix),
				   .range_end = end,
				   .range_end_len = end_len,
				   .keys_only = keys_only};
	struct kv_range_result res;
	struct etcd_client_stats s0, s1;
	etcd_client_get_stats(kv, &s0);
	double c0 = cpu_ms(), t0 = now_ms();
	int ret = kv_range(kv, &req, &res);
	double t = now_ms() - t0;
	*cpu = cpu_ms() - c0;
	etcd_client_get_stats(kv, &s1);
	delta->grpc_ranges = s1.grpc_ranges - s0.grpc_ranges;
	delta->json_ranges = s1.json_ranges - s0.json_ranges;
	delta->grpc_connects = s1.grpc_connects - s0.grpc_connects;
	delta->grpc_fallbacks = s1.grpc_fallbacks - s0.grpc_fallbacks;
	bool ok = ret == 0 && res.n_kvs == (size_t)expect;
	if (!ok)
		fprintf(stderr, "range %s: %s, %zu keys (expected %d)\n", prefix,
			ret ? strerror(-ret) : "ok", ret ? 0 : res.n_kvs, expect);
	kv_range_result_free(&res);
	return ok ? t : -1;
}

static struct fig bench_range(struct kv *kv, const char *prefix, bool keys_only, int expect,
			      int runs, struct etcd_client_stats *last)
{
	double t[64], cpu[64];
	for (int i = 0; i < runs; i++)
		if ((t[i] = range_once(kv, prefix, keys_only, expect, &cpu[i], last)) < 0)
			exit(1);
	return summarize(t, cpu, runs);
}

/* etcdctl get --prefix -w protobuf > /dev/null, process start included. */
static struct fig bench_etcdctl(struct etcd_harness *h, const char *prefix, int runs)
{
	double t[64];
	const char *args[] = {"get", "--prefix", "-w", "protobuf", prefix, NULL};
	for (int i = 0; i < runs; i++) {
		double t0 = now_ms();
		int ret = etcd_harness_etcdctl(h, NULL, NULL, 0, args);
		t[i] = now_ms() - t0;
		if (ret != 0) {
			fprintf(stderr, "etcdctl failed: %d\n", ret);
			exit(1);
		}
	}
	return summarize(t, NULL, runs);
}

/* Mean latency of n single-key gets, in microseconds. */
static double bench_get(struct kv *kv, const char *prefix, int n)
{
	struct kv_kv got;
	char k[64];
	double t0 = now_ms();
	for (int i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "%sobject-%07d", prefix, (i * 7919) % 1000);
		if (kv_get(kv, k, strlen(k), &got) < 0) {
			fprintf(stderr, "get %s failed\n", k);
			exit(1);
		}
		kv_kv_free(&got);
	}
	return (now_ms() - t0) * 1e3 / n;
}

/* Mean latency of n saves of one key, in microseconds, in blocks of n / 4 (*us accumulates the
 * block times, so that alternating two clients spreads any drift over both). */
static int bench_save_block(struct kv *kv, const char *key, int n, int64_t *mod, double *us)
{
	struct kvtest_save save;
	kvtest_save_init(&save, KV_CMP_MOD, key, "saved by bench_grpc_vs_json", 27);
	double t0 = now_ms();
	for (int i = 0; i < n; i++) {
		struct kv_txn_result r;
		save.cmp.number = *mod;
		int ret = kv_txn(kv, &save.txn, &r);
		bool ok = ret == 0 && r.succeeded;
		*mod = r.revision;
		kv_txn_result_free(&r);
		if (!ok) {
			fprintf(stderr, "save of %s failed: %d\n", key, ret);
			return -1;
		}
	}
	*us += (now_ms() - t0) * 1e3;
	return 0;
}

static void bench_saves(struct kv *j, struct kv *g, const char *prefix, int n)
{
	char kj[64], kg[64];
	int64_t mj, mg;
	struct kv_kv got;
	double uj = 0, ug = 0;
	snprintf(kj, sizeof(kj), "%sobject-%07d", prefix, 1);
	snprintf(kg, sizeof(kg), "%sobject-%07d", prefix, 2);
	if (kv_get(j, kj, strlen(kj), &got) < 0)
		exit(1);
	mj = got.mod_revision;
	kv_kv_free(&got);
	if (kv_get(g, kg, strlen(kg), &got) < 0)
		exit(1);
	mg = got.mod_revision;
	kv_kv_free(&got);
	struct etcd_client_stats s0, s1;
	etcd_client_get_stats(g, &s0);
	for (int b = 0; b < 4; b++)
		if (bench_save_block(j, kj, n / 4, &mj, &uj) < 0 ||
		    bench_save_block(g, kg, n / 4, &mg, &ug) < 0)
			exit(1);
	etcd_client_get_stats(g, &s1);
	printf("%-44s %9.0f %9.0f us  (gRPC txns: %llu)\n", "save (one txn), mean of 4 x 250",
	       uj / (n / 4 * 4), ug / (n / 4 * 4),
	       (unsigned long long)(s1.grpc_txns - s0.grpc_txns));
}

static void row(const char *what, struct fig j, struct fig g)
{
	printf("%-44s %9.0f %9.0f %7.2fx   (JSON %.0f..%.0f, gRPC %.0f..%.0f; client CPU %.0f vs "
	       "%.0f ms)\n",
	       what, j.med, g.med, j.med / g.med, j.min, j.max, g.min, g.max, j.cpu_med, g.cpu_med);
}

/* Ranges the whole prefix through both clients and prints their row ("range Nk keys" and what);
 * full ranges also get a line with the pages each client asked for. */
static void range_row(struct kv *j, struct kv *g, const char *prefix, bool keys_only, int n_keys,
		      int runs, const char *what)
{
	struct etcd_client_stats sj, sg;
	struct fig fj = bench_range(j, prefix, keys_only, n_keys, runs, &sj);
	struct fig fg = bench_range(g, prefix, keys_only, n_keys, runs, &sg);
	char label[128];

	snprintf(label, sizeof(label), "range %dk keys%s", n_keys / 1000, what);
	row(label, fj, fg);
	if (!keys_only)
		printf("%-44s JSON %llu pages; gRPC %llu pages, %llu new connection(s)\n", "",
		       (unsigned long long)sj.json_ranges, (unsigned long long)sg.grpc_ranges,
		       (unsigned long long)sg.grpc_connects);
}

static int run_suite(struct etcd_harness *h, int n_keys, int runs)
{
	struct kv *j = client(h, ETCD_TRANSPORT_JSON), *g = client(h, ETCD_TRANSPORT_GRPC);
	if (!j || !g)
		return -1;
	double t0 = now_ms();
	if (load(j, "/b1k/", n_keys, 1024) < 0 || load(j, "/b100/", n_keys, 100) < 0) {
		fprintf(stderr, "loading failed\n");
		return -1;
	}
	printf("loaded 2 x %d keys in %.1f s (%s)\n", n_keys, (now_ms() - t0) / 1e3, h->endpoint);
	/* Warm etcd's caches and both clients' connections once. */
	struct etcd_client_stats sj, sg;
	double cpu;
	range_once(j, "/b1k/", false, n_keys, &cpu, &sj);
	range_once(g, "/b1k/", false, n_keys, &cpu, &sg);

	printf("%-44s %9s %9s %8s\n", "scenario (median ms)", "JSON", "gRPC", "JSON/gRPC");
	range_row(j, g, "/b1k/", false, n_keys, runs, " x 1 KiB values");
	range_row(j, g, "/b100/", false, n_keys, runs, " x 100 B values");
	range_row(j, g, "/b1k/", true, n_keys, runs, ", keys only");

	struct fig e1 = bench_etcdctl(h, "/b1k/", runs), e2 = bench_etcdctl(h, "/b100/", runs);
	printf("%-44s %9.0f ms (1 KiB), %.0f ms (100 B)   (process start included)\n",
	       "etcdctl get --prefix -w protobuf >/dev/null", e1.med, e2.med);

	/* Single keys: what AUTO sends through JSON. */
	double gj = bench_get(j, "/b100/", 2000), gg = bench_get(g, "/b100/", 2000);
	etcd_client_get_stats(g, &sg);
	printf("%-44s %9.0f %9.0f us  (gRPC connections so far: %llu)\n",
	       "single-key get, mean of 2000", gj, gg, (unsigned long long)sg.grpc_connects);
	bench_saves(j, g, "/b100/", 1000);
	kv_destroy(j);
	kv_destroy(g);
	return 0;
}

int main(int argc, char **argv)
{
	int runs = 5, n_keys = 100000;
	bool tls = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
			n_keys = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--tls"))
			tls = true;
		else {
			fprintf(stderr, "usage: %s [--runs N] [--keys N] [--tls]\n", argv[0]);
			return 2;
		}
	}
	if (runs < 1 || runs > 64 || n_keys < 1000) {
		fprintf(stderr, "runs must be 1..64, keys at least 1000\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0); /* figures appear as they are measured */
	log_set_level(LOG_WARNING);
	struct utsname u;
	uname(&u);
	printf("machine: %ld CPUs, %s %s; etcd from the test harness; %d runs per figure\n",
	       sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, runs);
	struct etcd_harness h;
	/* Room for 2 x 100k keys and their history. */
	const char *args[] = {"--quota-backend-bytes=4294967296", NULL};
	struct etcd_harness_opts ho = {.extra_args = args};
	if (etcd_harness_start(&h, &ho) < 0)
		return 1;
	printf("\n== cleartext (JSON: HTTP/1.1 keep-alive; gRPC: h2c) ==\n");
	int ret = run_suite(&h, n_keys, runs);
	etcd_harness_destroy(&h);
	if (ret == 0 && tls) {
		ho.tls = true;
		if (etcd_harness_start(&h, &ho) < 0)
			return 1;
		printf("\n== TLS with client certificates (gRPC: h2 via ALPN) ==\n");
		ret = run_suite(&h, n_keys, runs);
		etcd_harness_destroy(&h);
	}
	return ret ? 1 : 0;
}
