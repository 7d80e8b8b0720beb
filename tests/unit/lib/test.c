/* test.c: see test.h. */
#include "test.h"

#include <errno.h>
#include <dirent.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>

unsigned long test_checks;
unsigned long test_failures;

static bool record(bool ok, bool fatal)
{
	__atomic_add_fetch(&test_checks, 1, __ATOMIC_RELAXED);
	if (ok)
		return true;
	__atomic_add_fetch(&test_failures, 1, __ATOMIC_RELAXED);
	if (fatal) {
		fflush(stderr);
		abort();
	}
	return false;
}

bool test_check(bool ok, bool fatal, const char *file, int line, const char *expr,
		const char *fmt, ...)
{
	if (!ok) {
		/* one fprintf per piece; stderr is unbuffered, so keep the line together */
		char msg[1024] = "";
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof msg, fmt, ap);
		va_end(ap);
		fprintf(stderr, "FAIL %s:%d: %s%s%s\n", file, line, expr, *msg ? ": " : "", msg);
	}
	return record(ok, fatal);
}

bool test_check_eq(long long a, long long b, bool fatal, const char *file, int line,
		   const char *expr_a, const char *expr_b)
{
	if (a != b)
		fprintf(stderr, "FAIL %s:%d: %s == %s (%lld != %lld)\n", file, line, expr_a, expr_b,
			a, b);
	return record(a == b, fatal);
}

bool test_check_mem(const void *p, size_t n, const void *q, size_t m, bool fatal,
		    const char *file, int line, const char *expr_p, const char *expr_q)
{
	bool ok = n == m && (n == 0 || (p && q && memcmp(p, q, n) == 0));
	if (!ok)
		fprintf(stderr, "FAIL %s:%d: %s (%zu bytes, \"%.*s\") != %s (%zu bytes, \"%.*s\")\n",
			file, line, expr_p, n, p ? (int)(n > 80 ? 80 : n) : 0,
			p ? (const char *)p : "", expr_q, m, q ? (int)(m > 80 ? 80 : m) : 0,
			q ? (const char *)q : "");
	return record(ok, fatal);
}

void test_run(const char *name, void (*fn)(void))
{
	unsigned long c0 = __atomic_load_n(&test_checks, __ATOMIC_RELAXED);
	unsigned long f0 = __atomic_load_n(&test_failures, __ATOMIC_RELAXED);
	fn();
	unsigned long c = __atomic_load_n(&test_checks, __ATOMIC_RELAXED) - c0;
	unsigned long f = __atomic_load_n(&test_failures, __ATOMIC_RELAXED) - f0;
	fprintf(stderr, "%s %-40s %lu checks%s\n", f ? "FAIL" : "ok", name, c,
		f ? ", some failed" : "");
}

int test_summary(void)
{
	unsigned long c = __atomic_load_n(&test_checks, __ATOMIC_RELAXED);
	unsigned long f = __atomic_load_n(&test_failures, __ATOMIC_RELAXED);
	fprintf(stderr, "%lu checks, %lu failed\n", c, f);
	if (c == 0)
		fprintf(stderr, "FAIL: no check was made\n");
	return f || c == 0 ? 1 : 0;
}

char *test_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char *p;
	if (asprintf(&p, "%s/etcdfs-test-%s-XXXXXX", base && *base ? base : "/tmp", tag) < 0)
		abort();
	if (!mkdtemp(p)) {
		fprintf(stderr, "mkdtemp(%s): %s\n", p, strerror(errno));
		abort();
	}
	return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

int test_rm_rf(const char *path)
{
	return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0 ? -errno : 0;
}

char *test_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap + 1);
	while (buf) {
		n += fread(buf + n, 1, cap - n, f);
		if (n < cap)
			break;
		char *nb = realloc(buf, 2 * cap + 1);
		if (!nb) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = nb;
		cap *= 2;
	}
	int bad = ferror(f);
	fclose(f);
	if (!buf || bad) {
		free(buf);
		errno = bad ? EIO : ENOMEM;
		return NULL;
	}
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char **test_list_dir(const char *dir, const char *suffix, bool dirs_only, size_t *count)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0, sl = strlen(suffix);
	char **names = malloc(sizeof(*names));

	REQUIRE(d, "%s: %s", dir, strerror(errno));
	REQUIRE(names);
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (de->d_name[0] == '.' || l <= sl || strcmp(de->d_name + l - sl, suffix))
			continue;
		if (dirs_only && de->d_type != DT_DIR)
			continue;
		names = realloc(names, (n + 2) * sizeof(*names));
		REQUIRE(names);
		names[n] = strndup(de->d_name, l - sl);
		REQUIRE(names[n]);
		n++;
	}
	closedir(d);
	names[n] = NULL;
	qsort(names, n, sizeof(*names), cmp_name);
	if (count)
		*count = n;
	return names;
}

void test_free_names(char **names)
{
	for (char **p = names; p && *p; p++)
		free(*p);
	free(names);
}
