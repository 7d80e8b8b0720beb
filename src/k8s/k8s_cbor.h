/* k8s_cbor.h: CBOR-stored objects (KEP-4222, the apiserver's CBORServingAndStorage
 * gate) as JSON value trees, so they show like JSON-stored objects.
 *
 * Only what the apiserver's CBOR serializer writes is accepted: the
 * self-describe tag 55799 around one map; definite-length maps, arrays and
 * strings (keys and strings as text or byte strings; the apiserver writes
 * byte strings); integers within int64; finite floats of any width; true,
 * false, null; tag 22 around a byte string ([]byte: shown as base64, as JSON
 * shows it) and tag 0 around a text string (an RFC 3339 time: shown as that
 * string). Anything else (other tags, undefined, indefinite lengths, invalid
 * UTF-8, trailing bytes) is refused with -ENOTSUP, so the value is shown raw.
 * No encoder: CBOR values are read-only (k8s.h).
 */
#ifndef ETCDFS_K8S_CBOR_H
#define ETCDFS_K8S_CBOR_H

#include <stddef.h>

struct jval;

/* 0 and a jval tree (free with k8s_jv_free), -ENOTSUP with *err (malloc'd)
 * saying what is not supported, or -ENOMEM. */
int k8s_cbor_to_jval(const void *val, size_t len, struct jval **out, char **err);

#endif
