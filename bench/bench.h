/* bench.h: what the benchmark programs in bench/ share.
 *
 * Benchmarks time microseconds, which util_now_ms() (whole milliseconds) cannot, so they read
 * the clock here instead.
 */
#ifndef ETCDFS_BENCH_H
#define ETCDFS_BENCH_H

#include <time.h>

/* Seconds on clock, as a double: CLOCK_MONOTONIC for elapsed time, CLOCK_PROCESS_CPUTIME_ID
 * for the CPU time of this process. */
static inline double bench_seconds(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
