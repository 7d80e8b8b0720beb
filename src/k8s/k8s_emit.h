/* k8s_emit.h: the YAML output side of the codec (not a public API).
 *
 * k8s_yaml.c decides what go-yaml v2 decides before its emitter runs (the key
 * order, the style each string asks for, a number's text); k8s_emit.c then
 * writes the text libyaml's emitter would write for those requests (the final
 * style, quoting, escapes, line folding at 80 columns, indentation), directly
 * into the output buffer. The libyaml-based writer stays for the differential
 * test, which shows both print the same bytes.
 */
#ifndef ETCDFS_K8S_EMIT_H
#define ETCDFS_K8S_EMIT_H

#include <stdbool.h>
#include <stddef.h>

#include "k8s_internal.h"

/* deeper values fail with -EINVAL ("value nested too deeply for YAML") */
#define K8S_YAML_MAX_DEPTH 10000

/* the scalar style go-yaml requests from its emitter for a string */
enum k8s_ystyle { K8S_Y_PLAIN, K8S_Y_DOUBLE, K8S_Y_LITERAL };

/* s (valid UTF-8) as a mapping key (key) or a value */
enum k8s_ystyle k8s_yaml_style(const char *s, size_t n, bool key);
/* the same for an s that holds no line break of any kind */
enum k8s_ystyle k8s_yaml_style_line(const char *s, size_t n, bool key);

/* The YAML text of JSON number v in out (NUL-terminated) and its length, or -1 when
 * YAML knows no such number and v is shown as a string. */
int k8s_yaml_number(const struct jval *v, char *out, size_t n);

/* An object's members in go-yaml's key order (its "natural" order, ties by position). */
struct k8s_ykey {
	const char *k;
	size_t len;
	size_t idx; /* member index in the object */
	bool fixed; /* k is static text (a schema field's name), never freed or changed */
};
void k8s_yaml_sort_keys(const struct jval *obj, struct k8s_ykey *keys);

/* The libyaml event emitter behind k8s_yaml_write until it was replaced; the same
 * output, several times slower. For tests and benchmarks only. */
int k8s_yaml_write_libyaml(struct buf *b, const struct jval *v, char **err);

#endif
