/* testutil.h: minimal assertion helpers for the store's unit tests.
 *
 * CHECK() reports file:line and the failed expression and aborts the test
 * program, so a failure is never silent; tests count their checks so the
 * summary line shows how much was verified.
 */
#ifndef ETCDFS_TEST_STORE_UTIL_H
#define ETCDFS_TEST_STORE_UTIL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long test_checks;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		__atomic_fetch_add(&test_checks, 1, __ATOMIC_RELAXED);                             \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define CHECK_EQ(a, b)                                                                             \
	do {                                                                                       \
		long long va_ = (long long)(a), vb_ = (long long)(b);                              \
		__atomic_fetch_add(&test_checks, 1, __ATOMIC_RELAXED);                             \
		if (va_ != vb_) {                                                                  \
			fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n",        \
				__FILE__, __LINE__, #a, va_, #b, vb_);                             \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define CHECK_MEM(p, n, s)                                                                         \
	do {                                                                                       \
		__atomic_fetch_add(&test_checks, 1, __ATOMIC_RELAXED);                             \
		size_t ln_ = strlen(s);                                                            \
		if ((size_t)(n) != ln_ || memcmp((p), (s), ln_) != 0) {                            \
			fprintf(stderr, "%s:%d: CHECK_MEM failed: %s is \"%.*s\", want \"%s\"\n",  \
				__FILE__, __LINE__, #p, (int)(n), (const char *)(p), (s));         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define RUN(fn)                                                                                    \
	do {                                                                                       \
		unsigned long before_ = test_checks;                                               \
		fn();                                                                              \
		fprintf(stderr, "ok %-40s %lu checks\n", #fn, test_checks - before_);              \
	} while (0)

#endif
