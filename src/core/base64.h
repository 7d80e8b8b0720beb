/* base64.h: RFC 4648 base64, the encoding etcd's JSON API uses for every key and value.
 * One implementation for the etcd client (src/etcd/json.c) and the JSON API server of the
 * embedded store (src/gateway/). */
#ifndef ETCDFS_BASE64_H
#define ETCDFS_BASE64_H

#include <stddef.h>

/* Encodes with the standard alphabet and padding. Returns a malloc'd, NUL-terminated string
 * owned by the caller (its length in *out_len when out_len is not NULL), or NULL when out of
 * memory. */
char *base64_encode(const void *data, size_t len, size_t *out_len);

enum base64_flags {
	/* Also accept the URL-safe alphabet ('-' for '+', '_' for '/'), as a server should. */
	BASE64_URL_SAFE = 1,
	/* Accept non-zero bits after the last byte (Go's default decoder does); without this
	 * flag only the canonical encoding of a byte string is accepted. */
	BASE64_LAX = 2,
};

/* Decodes len bytes of s; padding is optional but, when present, must end the input.
 * Returns 0 with a malloc'd buffer (NUL-terminated, for convenience; owned by the caller)
 * in *out and its length in *out_len, -EINVAL for malformed input, -ENOMEM. */
int base64_decode(const char *s, size_t len, int flags, char **out, size_t *out_len);

#endif
