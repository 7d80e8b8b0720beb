/* v3json.h: etcd's v3 JSON wire form (grpc-gateway's jsonpb), written once for both of its
 * sides: the etcd client's requests and the replies it reads (src/etcd/json.c), and the
 * gateway's requests and replies (src/gateway/). Only what both sides read or write the
 * same way is here; each side keeps its own rules (the client sends int64 as numbers, the
 * gateway answers with strings; the gateway accepts lowerCamelCase names and lenient base64).
 *
 * Wire facts: bytes are base64 strings; int64 come as decimal strings or numbers; enums by
 * name or number; a field equal to its zero value is omitted, and null reads as absent.
 *
 * Readers take the field's value (NULL when absent) and return 0 or -EINVAL; writers return
 * 0 or a negative number when out of memory (callers may check only their final result).
 */
#ifndef ETCDFS_V3JSON_H
#define ETCDFS_V3JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An int64 given as a JSON integer or a whole decimal string; absent or null gives 0. */
int v3json_int64(const json_t *v, int64_t *out);
/* A bool; absent or null gives false. */
int v3json_bool(const json_t *v, bool *out);
/* An enum given by name (names[i] is value i) or by number below n; absent gives 0. */
int v3json_enum(const json_t *v, const char *const *names, int n, int *out);
/* A repeated field: *n is its length, 0 when absent or null. */
int v3json_array(const json_t *v, size_t *n);

/* Sets o[k] to the base64 of p; an empty value is omitted unless always is set (a compare's
 * key and value must be sent even when empty). */
int v3json_set_b64(json_t *o, const char *k, const void *p, size_t n, bool always);
/* Sets o[k] to true when v is set; false is the zero value and is omitted. */
int v3json_set_true(json_t *o, const char *k, bool v);
/* {k: inner} for a oneof member (a request or response inside an op); steals inner, which
 * may be NULL (a failure to build it). NULL when out of memory. */
json_t *v3json_wrap(const char *k, json_t *inner);

#endif
