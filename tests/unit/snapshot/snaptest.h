/* snaptest.h: file helpers for the snapshot backend's unit tests (assertions: test.h).
 *
 * snap_rand() is a repeatable random sequence for generated inputs;
 * capture_begin()/capture_end() redirect stderr (where log.h writes) to a
 * temp file so a test can assert what was logged.
 */
#ifndef ETCDFS_TEST_SNAPSHOT_H
#define ETCDFS_TEST_SNAPSHOT_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

/* Reads a whole file into a NUL-terminated heap buffer; aborts when it cannot. */
static inline char *slurp(const char *path, size_t *len)
{
	char *buf = test_slurp(path, len);
	REQUIRE(buf, "cannot read %s: %s", path, strerror(errno));
	return buf;
}

/* For a test that reads path from ../shared: true, after saying why, when path is
 * missing and the test is to be skipped (main returns 77, meson's "skipped"). */
static inline bool skip_without(const char *path)
{
	if (access(path, R_OK) == 0)
		return false;
	printf("skip: %s missing (a real cluster's backend file: only in ../shared, not public)\n", path);
	return true;
}

/* xorshift64: the same pseudo-random sequence on every run, from a non-zero *state */
static inline uint64_t snap_rand(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

static inline void spit(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	bool ok = f && (!len || fwrite(data, 1, len, f) == len);
	ok = f && fclose(f) == 0 && ok;
	REQUIRE(ok, "cannot write %s: %s", path, strerror(errno));
}

static int capture_saved_fd __attribute__((unused)) = -1;
static char capture_path[64] __attribute__((unused));

static inline void capture_begin(void)
{
	fflush(stderr);
	snprintf(capture_path, sizeof(capture_path), "/tmp/snaptest-log-XXXXXX");
	int fd = mkstemp(capture_path);
	REQUIRE(fd >= 0, "mkstemp: %s", strerror(errno));
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
