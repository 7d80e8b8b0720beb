/* naming.h: the bijection between raw key segments and file names.
 *
 * See docs/naming.md. In short: '%' escapes as %25, control bytes (0x00-0x1f,
 * 0x7f) as %XX (upper-case hex), a segment "." or ".." has its dots escaped
 * (%2E), and an empty segment is the name "%". Names of namespace-1 keys
 * (top-level keys without a leading '/' when the whole keyspace is mounted)
 * start with "%+". The value of a key that is also a directory is shown
 * inside that directory as NAMING_VALUE_NAME, which escaping never produces.
 * Pure functions, no allocation, thread-safe.
 */
#ifndef ETCDFS_NAMING_H
#define ETCDFS_NAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define NAMING_VALUE_NAME "%value"
#define NAMING_NAME_MAX 255

/* Escapes seg into out (size outsz). Returns the name length, or
 * -ENAMETOOLONG if the name would exceed NAMING_NAME_MAX or outsz-1. */
ssize_t naming_encode(const char *seg, size_t seg_len, int ns, char *out, size_t outsz);

/* Parses a file name. Returns the segment length written to out (size
 * outsz >= strlen(name)+1) and sets *ns; -EINVAL if the name is not one the
 * escaping produces (including NAMING_VALUE_NAME, checked separately). */
ssize_t naming_decode(const char *name, char *out, size_t outsz, int *ns);

#endif
