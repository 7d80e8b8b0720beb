/* check.h: minimal assertions for the etcd unit tests: count failures, keep going, and make
 * main() return non-zero when anything failed. */
#ifndef ETCDFS_TEST_CHECK_H
#define ETCDFS_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		check_count++;                                                                     \
		if (!(cond)) {                                                                     \
			check_failures++;                                                          \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
		}                                                                                  \
	} while (0)

/* Compares two integers and prints both on failure. */
#define CHECK_EQ(a, b)                                                                             \
	do {                                                                                       \
		long long check_a_ = (long long)(a), check_b_ = (long long)(b);                    \
		check_count++;                                                                     \
		if (check_a_ != check_b_) {                                                        \
			check_failures++;                                                          \
			fprintf(stderr, "FAIL %s:%d: %s == %s (%lld != %lld)\n", __FILE__,         \
				__LINE__, #a, #b, check_a_, check_b_);                             \
		}                                                                                  \
	} while (0)

#define CHECK_MEM(p, n, q, m)                                                                      \
	CHECK((size_t)(n) == (size_t)(m) && ((n) == 0 || memcmp((p), (q), (n)) == 0))

#define CHECK_SUMMARY()                                                                            \
	(fprintf(stderr, "%s: %d checks, %d failed\n", __FILE__, check_count, check_failures),     \
	 check_failures ? 1 : 0)

#endif
