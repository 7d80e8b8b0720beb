/* k8s_render_bench.c: output MB/s of the codec's renderers on stored values.
 *
 *   k8s_render_bench [-r RUNS] [-o ROW] FILE...
 *
 * FILEs hold framed stored values (a decimal byte count, '\n', the bytes), as
 * bench/run writes them for `k8s_stream decode` (bench's Pods: pods.framed). All
 * values are read first; then each run times, one after the other on the same
 * values, in CPU time of this thread (a shared machine's neighbours do not count):
 *   view          protobuf/JSON -> JSON view only (k8s_decode_view), the common part
 *   yaml-libyaml  view + YAML through libyaml's event emitter (the renderer before)
 *   yaml          view + YAML through k8s_emit.c (k8s_decode's renderer now)
 *   yaml-size     the same into a counting buffer: the size alone, as the initial
 *                 sync asks for it (its out MB are the text's, never held)
 *   json          view + JSON (k8s_json_write, indent 4)
 * and prints per row the median of RUNS (default 5) runs: seconds, µs per value,
 * MB/s of output and of stored input. The first run also compares the two YAML
 * renderers' bytes value by value and exits 1 on any difference. -o times one row only
 * (for a profiler). Each value's JSON view is built in an arena, as k8s_decode builds it.
 * Built by bench/meson.build; bench/run runs it on bench's Pods. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "k8s/k8s.h"
#include "k8s/k8s_emit.h"
#include "k8s/k8s_internal.h"

enum { R_VIEW, R_LIBYAML, R_YAML, R_YAML_SIZE, R_JSON, R_N };
static const char *const row_names[R_N] = {"view", "yaml-libyaml", "yaml", "yaml-size", "json"};

struct val {
	char *data;
	size_t len;
};

static int read_file(const char *path, struct val **vals, size_t *n, size_t *cap)
{
	FILE *f = fopen(path, "rb");
	unsigned long len;

	if (!f)
		return -errno;
	while (fscanf(f, "%lu", &len) == 1 && fgetc(f) == '\n') {
		if (*n == *cap) {
			size_t nc = *cap ? *cap * 2 : 1024;
			struct val *p = realloc(*vals, nc * sizeof(*p));
			if (!p)
				goto nomem;
			*vals = p;
			*cap = nc;
		}
		char *d = malloc(len + 1);
		if (!d)
			goto nomem;
		if (fread(d, 1, len, f) != len) {
			free(d);
			fclose(f);
			return -EINVAL;
		}
		(*vals)[(*n)++] = (struct val){d, len};
	}
	fclose(f);
	return 0;
nomem:
	fclose(f);
	return -ENOMEM;
}

/* one value through row r; *out_len the bytes it printed; out (may be NULL) keeps them.
 * The view lives in an arena, as k8s_decode builds it. */
static int render_one(int row, const struct val *v, size_t *out_len, struct buf *out)
{
	struct jval *j;
	struct buf b;
	k8s_jv_arena_begin();
	int r = k8s_decode_view(v->data, v->len, 0, NULL, NULL, &j, NULL);

	if (r) {
		k8s_jv_arena_end();
		return r;
	}
	if (row == R_YAML_SIZE)
		k8s_buf_init_count(&b);
	else
		k8s_buf_init(&b);
	if (row == R_LIBYAML)
		r = k8s_yaml_write_libyaml(&b, j, NULL);
	else if (row == R_YAML || row == R_YAML_SIZE)
		r = k8s_yaml_write(&b, j, NULL);
	else if (row == R_JSON) {
		k8s_json_write(&b, j, 4);
		k8s_buf_addc(&b, '\n');
	}
	k8s_jv_free(j);
	k8s_jv_arena_end();
	*out_len = k8s_buf_size(&b);
	if (out)
		*out = b;
	else
		k8s_buf_free(&b);
	return r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct val *vals = NULL;
	size_t n = 0, cap = 0, in_bytes = 0, out_bytes[R_N] = {0};
	int runs = 5, only = -1, opt;

	while ((opt = getopt(argc, argv, "r:o:")) != -1) {
		if (opt == 'o') {
			for (int row = 0; row < R_N; row++)
				if (!strcmp(optarg, row_names[row]))
					only = row;
			if (only < 0)
				goto usage;
		} else if (opt != 'r' || (runs = atoi(optarg)) < 1) {
			goto usage;
		}
	}
	if (optind >= argc)
		goto usage;
	for (int i = optind; i < argc; i++) {
		int r = read_file(argv[i], &vals, &n, &cap);
		if (r) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(-r));
			return 1;
		}
	}
	for (size_t i = 0; i < n; i++)
		in_bytes += vals[i].len;

	/* both YAML renderers must print the same bytes for every value, and the
	 * counting one must count them */
	size_t decoded = 0, differ = 0;
	for (size_t i = 0; i < n && only < 0; i++) {
		struct buf a, b;
		size_t la, lb, lc;
		if (render_one(R_LIBYAML, &vals[i], &la, &a)) {
			k8s_buf_free(&a);
			continue; /* not decodable (raw, CBOR, ...): no row measures it */
		}
		decoded++;
		if (render_one(R_YAML, &vals[i], &lb, &b) || la != lb ||
		    memcmp(a.data, b.data, la) || render_one(R_YAML_SIZE, &vals[i], &lc, NULL) ||
		    lc != lb) {
			if (differ++ < 5)
				fprintf(stderr, "value %zu: the YAML renderers differ\n", i);
		}
		k8s_buf_free(&a);
		k8s_buf_free(&b);
	}
	if (differ) {
		fprintf(stderr, "%zu of %zu values differ\n", differ, decoded);
		return 1;
	}

	double *t[R_N];
	for (int row = 0; row < R_N; row++) {
		t[row] = calloc((size_t)runs, sizeof(double));
		if (!t[row])
			return 1;
	}
	for (int run = 0; run < runs; run++) {
		for (int row = 0; row < R_N; row++) {
			if (only >= 0 && row != only)
				continue;
			size_t total = 0, len;
			double t0 = bench_seconds(CLOCK_THREAD_CPUTIME_ID);
			for (size_t i = 0; i < n; i++)
				if (!render_one(row, &vals[i], &len, NULL))
					total += len;
			t[row][run] = bench_seconds(CLOCK_THREAD_CPUTIME_ID) - t0;
			out_bytes[row] = total;
		}
	}
	printf("%zu values (%zu decodable), %.1f MB stored; CPU time of one thread, median of %d "
	       "runs\n",
	       n, decoded, in_bytes / 1e6, runs);
	printf("%-13s %9s %9s %10s %11s %9s  %s\n", "renderer", "seconds", "us/value", "out MB",
	       "out MB/s", "in MB/s", "runs (s)");
	for (int row = 0; row < R_N; row++) {
		if (only >= 0 && row != only)
			continue;
		double sorted[runs];
		memcpy(sorted, t[row], sizeof(sorted));
		qsort(sorted, (size_t)runs, sizeof(double), cmp_double);
		double med = sorted[runs / 2];
		if (runs % 2 == 0)
			med = (sorted[runs / 2 - 1] + sorted[runs / 2]) / 2;
		if (out_bytes[row])
			printf("%-13s %9.3f %9.1f %10.1f %11.1f %9.1f  [", row_names[row], med,
			       med / (double)n * 1e6, out_bytes[row] / 1e6,
			       out_bytes[row] / med / 1e6, in_bytes / med / 1e6);
		else
			printf("%-13s %9.3f %9.1f %10s %11s %9.1f  [", row_names[row], med,
			       med / (double)n * 1e6, "-", "-", in_bytes / med / 1e6);
		for (int run = 0; run < runs; run++)
			printf("%s%.3f", run ? ", " : "", t[row][run]);
		printf("]\n");
		free(t[row]);
	}
	for (size_t i = 0; i < n; i++)
		free(vals[i].data);
	free(vals);
	return 0;
usage:
	fprintf(stderr, "usage: %s [-r RUNS] [-o view|yaml-libyaml|yaml|yaml-size|json] FILE...\n",
		argv[0]);
	return 2;
}
