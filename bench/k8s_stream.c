/* k8s_stream.c: batch encoder/decoder for the benchmark harness (bench/run).
 *
 *   k8s_stream encode   JSON objects -> storage bytes (protobuf in the "k8s\0"
 *                       envelope, as the apiserver writes them)
 *   k8s_stream decode   storage bytes -> YAML; prints the timing of the decode
 *                       loop only (no I/O) on stderr:
 *                       "decoded N objects, B bytes in, Y bytes out, S seconds"
 *
 * `etcdfs-k8s encode` does the same for one object per process; for 100k
 * objects process start-up would dominate, so this runs the same library
 * calls (k8s_encode for a new object, k8s_decode to YAML) over a stream.
 *
 * Framing, in and out: a decimal byte count, '\n', then that many bytes.
 * On a codec error it prints the record number and the codec's message and
 * exits 1, so bad generator output is never loaded silently. Built by
 * bench/meson.build (ninja -C BUILD bench/k8s_stream), which bench/run runs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "k8s/k8s.h"

struct rec {
	char *data;
	size_t len;
};

static int read_record(char **buf, size_t *len)
{
	unsigned long n;

	*buf = NULL;
	if (scanf("%lu", &n) != 1)
		return feof(stdin) ? 1 : -EINVAL;
	if (getchar() != '\n')
		return -EINVAL;
	*buf = malloc(n + 1);
	if (!*buf)
		return -ENOMEM;
	if (fread(*buf, 1, n, stdin) != n) {
		free(*buf);
		*buf = NULL;
		return -EINVAL;
	}
	(*buf)[n] = 0;
	*len = n;
	return 0;
}

/* Encodes record by record: the generator streams, so nothing is kept. */
static int run_encode(void)
{
	char *buf;
	size_t len;
	unsigned long rec = 0;
	int r;

	while ((r = read_record(&buf, &len)) == 0) {
		void *out = NULL;
		size_t out_len = 0;
		char *err = NULL;

		r = k8s_encode(NULL, 0, buf, len, NULL, NULL, 0, &out, &out_len, &err);
		free(buf);
		if (r < 0) {
			fprintf(stderr, "k8s_stream: record %lu: %s\n", rec,
				err ? err : strerror(-r));
			free(err);
			return 1;
		}
		printf("%zu\n", out_len);
		fwrite(out, 1, out_len, stdout);
		free(out);
		rec++;
	}
	if (r < 0) {
		fprintf(stderr, "k8s_stream: bad framing at record %lu\n", rec);
		return 1;
	}
	return fflush(stdout) != 0;
}

/* Reads everything first so that the timed loop is the codec alone. */
static int run_decode(void)
{
	struct rec *recs = NULL;
	size_t n = 0, cap = 0, in_bytes = 0, out_bytes = 0;
	char *buf;
	size_t len;
	int r, ret = 1;

	while ((r = read_record(&buf, &len)) == 0) {
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 1024;
			struct rec *p = realloc(recs, ncap * sizeof(*p));

			if (!p) {
				free(buf);
				goto out_free;
			}
			recs = p;
			cap = ncap;
		}
		recs[n].data = buf;
		recs[n].len = len;
		in_bytes += len;
		n++;
	}
	if (r < 0) {
		fprintf(stderr, "k8s_stream: bad framing at record %zu\n", n);
		goto out_free;
	}
	double t0 = bench_seconds(CLOCK_MONOTONIC);
	for (size_t i = 0; i < n; i++) {
		char *out = NULL, *err = NULL;
		size_t out_len = 0;

		r = k8s_decode(recs[i].data, recs[i].len, K8S_FMT_YAML, 0, &out, &out_len, &err);
		if (r < 0) {
			fprintf(stderr, "k8s_stream: decode record %zu: %s\n", i,
				err ? err : strerror(-r));
			free(err);
			goto out_free;
		}
		out_bytes += out_len;
		free(out);
	}
	double t = bench_seconds(CLOCK_MONOTONIC) - t0;
	fprintf(stderr, "decoded %zu objects, %zu bytes in, %zu bytes out, %.6f seconds\n", n,
		in_bytes, out_bytes, t);
	ret = 0;
out_free:
	for (size_t i = 0; i < n; i++)
		free(recs[i].data);
	free(recs);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "encode") == 0)
		return run_encode();
	if (argc == 2 && strcmp(argv[1], "decode") == 0)
		return run_decode();
	fprintf(stderr, "usage: %s encode|decode < framed records\n", argv[0]);
	return 2;
}
