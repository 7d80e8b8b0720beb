/* jsoncmp.h: what the k8s conformance tests share: ordered structural equality of two
 * parsed JSON trees with exact scalar text, where *where says what differs first (a member's
 * value, then a member's name, then the member count); byte equality saying where bytes
 * differ; a fixture's type from its name. */
#ifndef ETCDFS_TEST_JSONCMP_H
#define ETCDFS_TEST_JSONCMP_H

#include <stdbool.h>
#include <stddef.h>

#include "k8s/k8s_internal.h"

bool k8s_test_same_json(const struct jval *a, const struct jval *b, char *where, size_t wn);
/* Whether an bytes at a equal bn bytes at b; when not, *why says at which byte they first
 * differ and gives both lengths. */
bool k8s_test_same_bytes(const void *a, size_t an, const void *b, size_t bn, char *why, size_t wn);
/* A fixture's base name <group>.<version>.<Kind> (the core group spelled
 * "core") as apiVersion and kind. */
void k8s_test_type_of(const char *base, char *av, size_t avn, char *kind, size_t kn);

#endif
