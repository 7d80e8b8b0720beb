/* snaptest.h: assertion and file helpers for the snapshot backend's unit tests.
 *
 * CHECK() reports file:line and the failed expression and aborts, so a failure
 * is never silent; every check is counted and each test prints its count.
 * capture_begin()/capture_end() redirect stderr (where log.h writes) to a
 * temp file so a test can assert what was logged.
 */
#ifndef ETCDFS_TEST_SNAPSHOT_H
#define ETCDFS_TEST_SNAPSHOT_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long test_checks __attribute__((unused));

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		test_checks++;                                                                     \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define CHECK_EQ(a, b)                                                                             \
	do {                                                                                       \
		long long va_ = (long long)(a), vb_ = (long long)(b);                              \
		test_checks++;                                                                     \
		if (va_ != vb_) {                                                                  \
			fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n",        \
				__FILE__, __LINE__, #a, va_, #b, vb_);                             \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define CHECK_BYTES(p, n, q, m)                                                                    \
	do {                                                                                       \
		test_checks++;                                                                     \
		if ((size_t)(n) != (size_t)(m) || ((n) && memcmp((p), (q), (n)) != 0)) {           \
			fprintf(stderr, "%s:%d: CHECK_BYTES failed: %s (%zu bytes) != %s (%zu)\n", \
				__FILE__, __LINE__, #p, (size_t)(n), #q, (size_t)(m));             \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define RUN(fn)                                                                                    \
	do {                                                                                       \
		unsigned long before_ = test_checks;                                               \
		fn();                                                                              \
		fprintf(stderr, "ok %-40s %lu checks\n", #fn, test_checks - before_);              \
	} while (0)

/* Reads a whole file into a NUL-terminated heap buffer; aborts on error. */
static inline char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
		abort();
	}
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	size_t r;
	while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
		}
	}
	fclose(f);
	if (!buf)
		abort();
	buf[n] = 0;
	*len = n;
	return buf;
}

static inline void spit(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
		fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
		abort();
	}
}

static int capture_saved_fd __attribute__((unused)) = -1;
static char capture_path[64] __attribute__((unused));

static inline void capture_begin(void)
{
	fflush(stderr);
	snprintf(capture_path, sizeof(capture_path), "/tmp/snaptest-log-XXXXXX");
	int fd = mkstemp(capture_path);
	if (fd < 0)
		abort();
	capture_saved_fd = dup(2);
	dup2(fd, 2);
	close(fd);
}

/* Restores stderr and returns what was logged meanwhile (heap, NUL-terminated). */
static inline char *capture_end(void)
{
	fflush(stderr);
	dup2(capture_saved_fd, 2);
	close(capture_saved_fd);
	size_t n;
	char *out = slurp(capture_path, &n);
	unlink(capture_path);
	return out;
}

#endif
