/* k8s_time_bench.c: the cost of k8s_object_time (what the initial sync adds
 * per key for file times) against a YAML decode of the same value (what the
 * sync already pays to know each file's size).
 *
 * Each FILE is one stored value (a .bin from etcdctl has its extra "\n"
 * dropped); a directory is read for its *.pb, *.bin and *.json files. Times
 * are CPU time of this single thread.
 * Usage: k8s_time_bench [-r ROUNDS] FILE|DIR... */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "k8s/k8s.h"

struct val {
	char *p;
	size_t len;
};

static struct val *vals;
static size_t n_vals, cap_vals;

static bool ends(const char *s, const char *suf)
{
	size_t l = strlen(s), m = strlen(suf);
	return l >= m && strcmp(s + l - m, suf) == 0;
}

static void add_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		exit(1);
	}
	char *buf = NULL;
	size_t len = 0, cap = 0, r;
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			if (!buf)
				exit(1);
		}
		r = fread(buf + len, 1, cap - len, f);
		len += r;
	} while (r > 0);
	fclose(f);
	if (ends(path, ".bin") && len && buf[len - 1] == '\n')
		len--;
	if (n_vals == cap_vals) {
		cap_vals = cap_vals ? cap_vals * 2 : 256;
		vals = realloc(vals, cap_vals * sizeof(*vals));
		if (!vals)
			exit(1);
	}
	vals[n_vals++] = (struct val){buf, len};
}

static void add(const char *path)
{
	DIR *d = opendir(path);
	if (!d) {
		add_file(path);
		return;
	}
	struct dirent *de;
	char p[4096];
	while ((de = readdir(d)))
		if (ends(de->d_name, ".pb") || ends(de->d_name, ".bin") ||
		    ends(de->d_name, ".json")) {
			snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
			add_file(p);
		}
	closedir(d);
}

int main(int argc, char **argv)
{
	int rounds = 200, opt;
	while ((opt = getopt(argc, argv, "r:")) != -1)
		rounds = opt == 'r' ? atoi(optarg) : rounds;
	for (int i = optind; i < argc; i++)
		add(argv[i]);
	if (!n_vals || rounds < 1) {
		fprintf(stderr, "usage: %s [-r ROUNDS] FILE|DIR...\n", argv[0]);
		return 2;
	}
	size_t bytes = 0, timed = 0;
	for (size_t i = 0; i < n_vals; i++) {
		int64_t t;
		bytes += vals[i].len;
		timed += k8s_object_time(vals[i].p, vals[i].len, &t) == 0;
	}
	volatile int64_t sink = 0;
	double t0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (int r = 0; r < rounds; r++)
		for (size_t i = 0; i < n_vals; i++) {
			int64_t t = 0;
			k8s_object_time(vals[i].p, vals[i].len, &t);
			sink += t;
		}
	double t1 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
	int drounds = rounds / 20 ? rounds / 20 : 1;
	for (int r = 0; r < drounds; r++)
		for (size_t i = 0; i < n_vals; i++) {
			char *out = NULL;
			size_t ol;
			if (k8s_decode(vals[i].p, vals[i].len, K8S_FMT_YAML, 1, &out, &ol, NULL) ==
			    0)
				free(out);
		}
	double t2 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
	double per_time = (t1 - t0) * 1e9 / ((double)rounds * n_vals);
	double per_yaml = (t2 - t1) * 1e9 / ((double)drounds * n_vals);
	printf("%zu values (%zu bytes, %zu with a time): k8s_object_time %.0f ns/object, "
	       "YAML decode %.0f ns/object (%.2f%%)\n",
	       n_vals, bytes, timed, per_time, per_yaml, 100.0 * per_time / per_yaml);
	return sink == 42 ? 1 : 0;
}
