/* k8s_internal.h: shared internals of the Kubernetes codec (not a public API).
 *
 * jval: an ordered JSON value tree. Objects keep member order, numbers keep
 * their text, every node remembers its source line (for error messages) and,
 * when parsed from JSON text, its byte span in that text (so unchanged parts of
 * stored JSON can be re-emitted byte for byte). A jval tree owns all its
 * children and strings; free it with k8s_jv_free().
 *
 * buf: a growable byte buffer (data is malloc'd; buf_free releases it).
 *
 * pb: a protobuf wire reader that splits a message into fields while keeping
 * each field's exact bytes, so the encoder can copy unchanged fields verbatim.
 */
#ifndef ETCDFS_K8S_INTERNAL_H
#define ETCDFS_K8S_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "k8s_schema.h"

/* The slot of a 64-bit key (an address, or a hash of several) in a table of
 * 2^bits entries, by Fibonacci hashing: the codec's per-thread caches
 * (k8s_emit.c, k8s_yaml.c). */
static inline size_t k8s_slot(uint64_t key, unsigned bits)
{
	return (size_t)((key * 0x9E3779B97F4A7C15u) >> (64 - bits));
}

/* ---- growable buffer ---- */

struct buf {
	uint8_t *data;
	size_t len, cap;
	bool oom;	 /* an allocation failed; further appends are dropped */
	bool count_only; /* k8s_buf_init_count: bytes are counted, not kept */
	size_t dropped;	 /* count_only: bytes written before data[0] */
};

void k8s_buf_init(struct buf *b);
/* A buffer that only counts what is written (k8s_buf_size): when it would
 * grow, it forgets what it holds instead, so a writer that only reserves and
 * appends (never reads back) measures a text without holding it. */
void k8s_buf_init_count(struct buf *b);
/* bytes written so far, the forgotten ones of a counting buffer included */
size_t k8s_buf_size(const struct buf *b);
void k8s_buf_free(struct buf *b);
void k8s_buf_add(struct buf *b, const void *p, size_t n);
void k8s_buf_addc(struct buf *b, char c);
void k8s_buf_adds(struct buf *b, const char *s);
void k8s_buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void k8s_buf_varint(struct buf *b, uint64_t v);
/* room for n more bytes and a NUL after them; false (and oom set) when out of memory */
bool k8s_buf_reserve(struct buf *b, size_t n);
/* NUL-terminate and hand the data over (*out malloc'd); returns -ENOMEM on oom */
int k8s_buf_finish(struct buf *b, char **out, size_t *out_len);

/* UTF-8: one sequence decoded as Go's utf8.DecodeRune (returns the length consumed;
 * invalid input yields U+FFFD and 1), validity, and a copy with invalid bytes replaced
 * by U+FFFD (as Go's encoding/json does on both ends) */
size_t k8s_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
bool k8s_utf8_valid(const char *s, size_t n);
void k8s_utf8_sanitize(struct buf *b, const char *s, size_t n);

/* ---- JSON values ---- */

enum jtype { J_NULL = 0, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
	enum jtype t;
	bool b;		 /* J_BOOL */
	char *s;	 /* J_STR: bytes (NUL-terminated), J_NUM: number text */
	size_t len;	 /* of s */
	size_t n, cap;	 /* J_ARR, J_OBJ: element count */
	struct jval **v; /* elements / member values */
	char **k;	 /* J_OBJ member keys (NUL-terminated) */
	size_t *klen;
	uint8_t *kown;	 /* J_OBJ: key i is owned (else borrowed static text) */
	int line;	 /* 1-based source line, 0 if unknown */
	const char *src; /* J text this node was parsed from (borrowed), or NULL */
	size_t src_off, src_len;
	bool s_inline; /* s lives in the same allocation as the node */
	bool arena;    /* the node and all it holds live in a render's arena */
};

/* Between begin and end, this thread's new nodes (and their strings, keys
 * and member arrays) come from one arena, freed at once by end; freeing
 * such a node does nothing. For a tree built and dropped in one call, as
 * k8s_decode_typed's: malloc and free were a fifth of a YAML view's initial
 * sync. Calls nest; only the outermost end frees. */
void k8s_jv_arena_begin(void);
void k8s_jv_arena_end(void);
struct jval *k8s_jv_new(enum jtype t);
void k8s_jv_free(struct jval *v);
struct jval *k8s_jv_str(const char *s, size_t len);
struct jval *k8s_jv_num(const char *text);
struct jval *k8s_jv_bool(bool b);
struct jval *k8s_jv_dup(const struct jval *v); /* deep copy without source spans */
/* append to an array / object; take ownership of val (freed on failure) */
int k8s_jv_push(struct jval *arr, struct jval *val);
int k8s_jv_set(struct jval *obj, const char *key, size_t klen, struct jval *val);
int k8s_jv_insert(struct jval *obj, size_t pos, const char *key, size_t klen, struct jval *val);
/* as k8s_jv_set, but the key is borrowed: it must outlive the tree (schema names) */
int k8s_jv_set_static(struct jval *obj, const char *key, size_t klen, struct jval *val);
/* make room for cap elements/members */
bool k8s_jv_reserve(struct jval *v, size_t cap);
void k8s_jv_remove(struct jval *obj, size_t idx);
/* index of member key in obj, or -1 */
long k8s_jv_find(const struct jval *obj, const char *key, size_t klen);
struct jval *k8s_jv_get(const struct jval *obj, const char *key);
/* byte order of two keys, a shorter one first when it is a prefix (memcmp-style result) */
static inline int k8s_key_cmp(const void *a, size_t al, const void *b, size_t bl)
{
	size_t l = al < bl ? al : bl;
	int c = l ? memcmp(a, b, l) : 0; /* a or b may be NULL when empty */

	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}
/* member indices of object o sorted by key bytes, ties by position (malloc'd,
 * NULL on oom); lookup through such an index (the last of equal keys), -1 if
 * absent; and whether o has a duplicate key (*dup = its index) */
size_t *k8s_jv_sorted_keys(const struct jval *o);
long k8s_jv_find_sorted(const struct jval *o, const size_t *idx, const char *key, size_t klen);
bool k8s_jv_dup_key(const struct jval *o, size_t *dup);
/* the JSON text of a null, bool or number, or a string's bytes (unquoted); borrowed from
 * v or static, *len its length. Not for arrays or objects. */
const char *k8s_jv_scalar_text(const struct jval *v, size_t *len);
/* deep equality; numbers compare by value, object member order is ignored */
bool k8s_jv_equal(const struct jval *a, const struct jval *b);
/* hash consistent with k8s_jv_equal (equal values hash the same) */
uint64_t k8s_jv_hash(const struct jval *v);
/* JSON number text as int64; false if not an integer in range */
bool k8s_jv_int(const struct jval *v, int64_t *out);
bool k8s_jv_double(const struct jval *v, double *out);
/* A stored JSON value we can show losslessly: no duplicate object keys and
 * only finite numbers. Sets a malloc'd *err when not. */
bool k8s_jv_showable(const struct jval *v, char **err);

/* Parse JSON text (RFC 8259; one value, surrounding whitespace allowed).
 * On error returns -EINVAL and a malloc'd message naming the line in *err. */
int k8s_json_parse(const char *text, size_t len, struct jval **out, char **err);
/* JSON's one-letter escapes (a backslash and a letter): the byte that letter stands
 * for, and the letter that escapes byte c when writing; -1 when there is none
 * ('/' is read, never written). */
int k8s_json_unescape(unsigned char letter);
int k8s_json_escape_letter(unsigned char c);
/* Serialize like Go's encoding/json (HTML-safe escaping). indent 0 = compact. */
void k8s_json_write(struct buf *b, const struct jval *v, int indent);
/* Go's float64 formatting: JSON ('f' or 'e' per encoding/json) and %v ('g'). */
void k8s_fmt_json_float(char *out, size_t n, double d);
void k8s_fmt_go_g(char *out, size_t n, double d);

/* YAML output the way kubectl -o yaml prints (sigs.k8s.io/yaml + go-yaml v2): k8s_emit.c,
 * with the style decisions of k8s_yaml.c. */
int k8s_yaml_write(struct buf *b, const struct jval *v, char **err);
/* Parse one YAML document into a jval (YAML 1.1 scalar resolution as go-yaml). */
int k8s_yaml_parse(const char *text, size_t len, struct jval **out, char **err);

/* base64 (standard alphabet, padded) appended to b; a failed allocation sets b->oom */
void k8s_base64_encode(struct buf *b, const uint8_t *p, size_t n);
/* Decodes s (standard alphabet; \r and \n skipped, padding optional) and appends the bytes
 * to out. Returns 0, -EINVAL for malformed input (out unchanged) or -ENOMEM. */
int k8s_base64_decode(const char *s, size_t n, struct buf *out);

/* ---- protobuf wire ---- */

struct pbf {
	uint32_t num;
	uint8_t wt;	    /* wire type 0, 1, 2, 5 */
	uint64_t v;	    /* varint / fixed value */
	const uint8_t *p;   /* wire type 2 payload */
	size_t len;	    /* payload length */
	const uint8_t *raw; /* whole field: tag .. end */
	size_t raw_len;
};

struct pbmsg {
	struct pbf *f;
	size_t n, cap;
	/* set by the split functions: bit k when field number k < 63 occurs, bit 63 for
	 * any larger number (a message built otherwise leaves indexed false) */
	uint64_t nums;
	bool indexed;
};

/* false only when field number num certainly does not occur in m */
static inline bool k8s_pb_may_have(const struct pbmsg *m, uint32_t num)
{
	if (!m->indexed)
		return true;
	return (m->nums >> (num < 63 ? num : 63)) & 1;
}

/* Split a message into fields; -EINVAL on malformed input. Fields point into p. */
int k8s_pb_split(const uint8_t *p, size_t len, struct pbmsg *m);
/* As k8s_pb_split, but stops before a malformed field instead of failing;
 * *consumed is the length of the well-formed prefix. */
int k8s_pb_split_prefix(const uint8_t *p, size_t len, struct pbmsg *m, size_t *consumed);
/* As k8s_pb_split into a message already split before (or zeroed), keeping its
 * array: a walk that splits many messages allocates once per level. */
int k8s_pb_split_reuse(const uint8_t *p, size_t len, struct pbmsg *m);
void k8s_pb_free(struct pbmsg *m);
/* The wire type a (non-packed) value of schema type t (K8S_T_*) uses: 0, 1, 2 or 5. */
int k8s_pb_wire_type(uint8_t t);
bool k8s_pb_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);

/* ---- codec core ---- */

struct k8s_typemeta {
	const char *api_version, *kind; /* NUL-terminated, may be "" */
};

/* Decode a protobuf message of type m into its JSON view (Go struct order). tm,
 * if non-NULL, fills the TypeMeta pseudo field. */
int k8s_pbjson_message(const struct k8s_msg *m, const uint8_t *p, size_t len,
		       const struct k8s_typemeta *tm, struct jval **out, char **err);
/* JSON view of one field from its occurrences in a split message;
 * *out = NULL when Go's encoding/json would omit it. */
int k8s_pbjson_field(const struct k8s_field *f, const struct pbmsg *m, struct jval **out,
		     char **err);

/* Does wire field f belong to schema field fd (number and usable wire type)? */
bool k8s_occ_matches(const struct k8s_field *fd, const struct pbf *f);

/* The JSON view k8s_decode_typed renders (protobuf or stored JSON, with the
 * resourceVersion set); *out is the caller's to free with k8s_jv_free. Same errors. */
int k8s_decode_view(const void *val, size_t len, int64_t resource_version, const char *api_version,
		    const char *kind, struct jval **out, char **err);

/* Encode the JSON object j as message m. orig (may be NULL) is the original
 * payload: fields whose JSON view is unchanged are copied from it verbatim,
 * unknown fields survive, changed fields take the place of the old ones. */
int k8s_encode_message(const struct k8s_msg *m, const struct jval *j, const uint8_t *orig,
		       size_t orig_len, struct buf *out, char **err);
/* As k8s_encode_message; fields absent from j are written as Kubernetes 1.<release>
 * wrote them (release 0: the newest), see the since/until of k8s_field. */
int k8s_encode_message_as(const struct k8s_msg *m, const struct jval *j, const uint8_t *orig,
			  size_t orig_len, unsigned release, struct buf *out, char **err);

/* Merge edited JSON into original stored JSON (compact, Go style); unchanged
 * values keep their original bytes. orig may be NULL. */
void k8s_json_merge(struct buf *b, const struct jval *orig, const struct jval *edit);

char *k8s_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
