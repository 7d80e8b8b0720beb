/* util.h: the small helpers every module needs, written once.
 *
 * No module writes its own clock reader, byte-string copy or hex digit parser:
 * they come from here, so a fix to one is a fix to all.
 */
#ifndef ETCDFS_UTIL_H
#define ETCDFS_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC: for timeouts, ages and rate limits, never for times a user
 * sees (those are CLOCK_REALTIME). */
int64_t util_now_ms(void);

/* The same in microseconds: for spans of a few milliseconds. */
int64_t util_now_us(void);

/* The time ms milliseconds from now on clock (CLOCK_REALTIME or CLOCK_MONOTONIC, matching
 * the condition variable's clock), for pthread_cond_timedwait. */
void util_deadline_ts(clockid_t clock, long ms, struct timespec *ts);

/* A malloc'd copy of n bytes of p with a NUL byte after them (not counted), so byte strings
 * can also be used as C strings. p may be NULL when n is 0. Returns NULL when out of memory;
 * the caller owns the copy. */
char *util_memdup(const void *p, size_t n);

/* Makes the array at *arr (arr is the address of the array pointer, of any element type),
 * which has room for *cap elements of size bytes, hold at least need elements. The room
 * doubles (from first when there is none yet) or jumps to need when that is more, so that
 * appending one element at a time stays linear. 0, or -ENOMEM with *arr and *cap unchanged. */
int util_grow(void *arr, size_t *cap, size_t need, size_t size, size_t first);

/* Sends all n bytes of p on the socket fd, going on after EINTR and short sends; never raises
 * SIGPIPE. 0 or a negative errno (-EPIPE, -EAGAIN once the socket's send timeout passed, ...). */
int util_send_all(int fd, const void *p, size_t n);

/* The value of one hexadecimal digit (either case), or -1 for any other character. */
int util_hexval(char c);

#endif
