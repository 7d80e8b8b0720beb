/* test.h: the one assertion and fixture header of the C unit tests.
 *
 * CHECK counts a failure, prints file:line, the expression and an optional printf-style
 * message, and lets the test go on, so one run reports every broken case. REQUIRE does the
 * same and aborts, for a failure after which going on would only crash or mislead (a NULL
 * handle, a setup step). test_summary() prints the counts and gives main()'s exit status.
 *
 *     CHECK(n == 3);
 *     CHECK(n == 3, "after %d puts", puts);
 *     CHECK_EQ(rev, 7);
 *     CHECK_MEM(kv.value, kv.value_len, "v", 1);
 *     TEST_RUN(test_paging);
 *     return test_summary();
 *
 * The counters are shared by every file of a test program and are safe to update from
 * several threads. */
#ifndef ETCDFS_TEST_H
#define ETCDFS_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"

extern unsigned long test_checks;   /* checks made, updated atomically */
extern unsigned long test_failures; /* checks that failed, updated atomically */

/* Records one check; on failure prints where and why and, when fatal, aborts. fmt is a
 * printf format (possibly empty) for what the caller adds. Returns ok. */
bool test_check(bool ok, bool fatal, const char *file, int line, const char *expr,
		const char *fmt, ...) __attribute__((format(printf, 6, 7)));
bool test_check_eq(long long a, long long b, bool fatal, const char *file, int line,
		   const char *expr_a, const char *expr_b);
bool test_check_mem(const void *p, size_t n, const void *q, size_t m, bool fatal,
		    const char *file, int line, const char *expr_p, const char *expr_q);

/* The "" before __VA_ARGS__ makes the message optional: a bare CHECK(x) passes "", which is
 * why the empty format is allowed in every file that includes this header. */
#pragma GCC diagnostic ignored "-Wformat-zero-length"
#define CHECK(cond, ...) test_check(!!(cond), false, __FILE__, __LINE__, #cond, "" __VA_ARGS__)
#define REQUIRE(cond, ...) test_check(!!(cond), true, __FILE__, __LINE__, #cond, "" __VA_ARGS__)
#define CHECK_EQ(a, b)                                                                             \
	test_check_eq((long long)(a), (long long)(b), false, __FILE__, __LINE__, #a, #b)
#define REQUIRE_EQ(a, b)                                                                           \
	test_check_eq((long long)(a), (long long)(b), true, __FILE__, __LINE__, #a, #b)
/* n bytes at p equal m bytes at q */
#define CHECK_MEM(p, n, q, m)                                                                      \
	test_check_mem((p), (size_t)(n), (q), (size_t)(m), false, __FILE__, __LINE__, #p, #q)
#define REQUIRE_MEM(p, n, q, m)                                                                    \
	test_check_mem((p), (size_t)(n), (q), (size_t)(m), true, __FILE__, __LINE__, #p, #q)
/* n bytes at p equal the C string s */
#define CHECK_STRN(p, n, s) CHECK_MEM((p), (n), (s), strlen(s))
#define REQUIRE_STRN(p, n, s) REQUIRE_MEM((p), (n), (s), strlen(s))

/* Runs one test function and prints its name with the checks it made and failed. */
#define TEST_RUN(fn) test_run(#fn, fn)
void test_run(const char *name, void (*fn)(void));

/* Prints "FILE: N checks, M failed" to stderr; returns 0 when nothing failed, else 1. A
 * program that made no check at all also returns 1: a test that asserts nothing is broken. */
int test_summary(void);

/* ---- fixtures ---- */

/* A fresh directory under $TMPDIR (or /tmp) named after tag; aborts when it cannot be made.
 * The caller frees the path and removes the tree with test_rm_rf(). */
char *test_tmpdir(const char *tag);
/* Removes a tree (no symlinks are followed). Returns 0 or a negative errno. */
int test_rm_rf(const char *path);
/* Reads a whole file into a malloc'd, NUL-terminated buffer (length in *len if len is not
 * NULL); NULL with errno set when it cannot. */
char *test_slurp(const char *path, size_t *len);
/* The names in dir that end in suffix ("" for any), with the suffix cut off, sorted and
 * NULL-terminated; names starting with '.' are left out, and so is anything but a folder
 * when dirs_only (as readdir's d_type tells). *count (may be NULL) gets how many. Aborts when
 * dir cannot be read. Free the list with test_free_names(). */
char **test_list_dir(const char *dir, const char *suffix, bool dirs_only, size_t *count);
void test_free_names(char **names);

#endif
