/* k8s_cbor.c: CBOR values to jval trees (k8s_cbor.h), over libcbor. */
#include "k8s_cbor.h"

#include <cbor.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/base64.h"
#include "k8s_internal.h"

#define SELF_DESCRIBE 55799
#define TAG_RFC3339 0
#define TAG_LATER_BASE64 22
#define MAX_DEPTH 200

static int refuse(char **err, const char *what)
{
	if (err && !*err)
		*err = k8s_strdup_printf("CBOR value not shown decoded: %s", what);
	return -ENOTSUP;
}

/* The bytes of a definite text or byte string. */
static int str_bytes(const cbor_item_t *it, const char **s, size_t *len, char **err)
{
	if (cbor_isa_bytestring(it) && cbor_bytestring_is_definite(it)) {
		*s = (const char *)cbor_bytestring_handle(it);
		*len = cbor_bytestring_length(it);
	} else if (cbor_isa_string(it) && cbor_string_is_definite(it)) {
		*s = (const char *)cbor_string_handle(it);
		*len = cbor_string_length(it);
	} else {
		return refuse(err, "a string of indefinite length or a non-string key");
	}
	if (!*s)
		*s = "";
	if (!k8s_utf8_valid(*s, *len))
		return refuse(err, "a string that is not UTF-8");
	return 0;
}

static int conv(const cbor_item_t *it, int depth, struct jval **out, char **err);

static int conv_map(const cbor_item_t *it, int depth, struct jval **out, char **err)
{
	if (!cbor_map_is_definite(it))
		return refuse(err, "a map of indefinite length");
	struct jval *o = k8s_jv_new(J_OBJ);
	if (!o)
		return -ENOMEM;
	struct cbor_pair *p = cbor_map_handle(it);
	for (size_t i = 0; i < cbor_map_size(it); i++) {
		const char *k;
		size_t kl;
		struct jval *v = NULL;
		int r = str_bytes(p[i].key, &k, &kl, err);
		if (r == 0)
			r = conv(p[i].value, depth + 1, &v, err);
		if (r == 0)
			r = k8s_jv_set(o, k, kl, v);
		if (r) {
			k8s_jv_free(o);
			return r;
		}
	}
	*out = o;
	return 0;
}

static int conv_array(const cbor_item_t *it, int depth, struct jval **out, char **err)
{
	if (!cbor_array_is_definite(it))
		return refuse(err, "an array of indefinite length");
	struct jval *a = k8s_jv_new(J_ARR);
	if (!a)
		return -ENOMEM;
	cbor_item_t **items = cbor_array_handle(it);
	for (size_t i = 0; i < cbor_array_size(it); i++) {
		struct jval *v = NULL;
		int r = conv(items[i], depth + 1, &v, err);
		if (r == 0)
			r = k8s_jv_push(a, v);
		if (r) {
			k8s_jv_free(a);
			return r;
		}
	}
	*out = a;
	return 0;
}

static int conv_tag(const cbor_item_t *it, int depth, struct jval **out, char **err)
{
	uint64_t tag = cbor_tag_value(it);
	cbor_item_t *in = cbor_tag_item(it);
	const char *s;
	size_t len;
	int r;
	if (tag == TAG_LATER_BASE64 && cbor_isa_bytestring(in) && cbor_bytestring_is_definite(in)) {
		/* []byte: JSON shows it as base64 */
		size_t bl;
		char *b =
			base64_encode(cbor_bytestring_handle(in), cbor_bytestring_length(in), &bl);
		r = -ENOMEM;
		if (b && (*out = k8s_jv_str(b, bl)))
			r = 0;
		free(b);
	} else if (tag == TAG_RFC3339 && cbor_isa_string(in)) {
		r = str_bytes(in, &s, &len, err);
		if (r == 0)
			r = (*out = k8s_jv_str(s, len)) ? 0 : -ENOMEM;
	} else if (tag == SELF_DESCRIBE && depth == 0) {
		r = conv(in, depth + 1, out, err);
	} else {
		char what[64];
		snprintf(what, sizeof(what), "tag %" PRIu64, tag);
		r = refuse(err, what);
	}
	cbor_decref(&in);
	return r;
}

static int conv_number(const cbor_item_t *it, struct jval **out, char **err)
{
	char t[40];
	if (cbor_isa_uint(it) || cbor_isa_negint(it)) {
		uint64_t u = cbor_get_int(it);
		if (u > INT64_MAX)
			return refuse(err, "an integer beyond int64");
		/* a negative integer n is stored as -1 - n */
		if (cbor_isa_negint(it))
			snprintf(t, sizeof(t), "%" PRId64, -(int64_t)u - 1);
		else
			snprintf(t, sizeof(t), "%" PRIu64, u);
	} else {
		double d = cbor_float_get_float(it);
		if (!isfinite(d))
			return refuse(err, "NaN or infinity");
		k8s_fmt_json_float(t, sizeof(t), d);
	}
	return (*out = k8s_jv_num(t)) ? 0 : -ENOMEM;
}

static int conv(const cbor_item_t *it, int depth, struct jval **out, char **err)
{
	const char *s;
	size_t len;
	if (depth > MAX_DEPTH)
		return refuse(err, "nested too deeply");
	switch (cbor_typeof(it)) {
	case CBOR_TYPE_UINT:
	case CBOR_TYPE_NEGINT:
		return conv_number(it, out, err);
	case CBOR_TYPE_BYTESTRING:
	case CBOR_TYPE_STRING: {
		int r = str_bytes(it, &s, &len, err);
		if (r)
			return r;
		return (*out = k8s_jv_str(s, len)) ? 0 : -ENOMEM;
	}
	case CBOR_TYPE_ARRAY:
		return conv_array(it, depth, out, err);
	case CBOR_TYPE_MAP:
		return conv_map(it, depth, out, err);
	case CBOR_TYPE_TAG:
		return conv_tag(it, depth, out, err);
	case CBOR_TYPE_FLOAT_CTRL:
		if (!cbor_float_ctrl_is_ctrl(it))
			return conv_number(it, out, err);
		switch (cbor_ctrl_value(it)) {
		case CBOR_CTRL_TRUE:
		case CBOR_CTRL_FALSE:
			return (*out = k8s_jv_bool(cbor_ctrl_value(it) == CBOR_CTRL_TRUE))
				       ? 0
				       : -ENOMEM;
		case CBOR_CTRL_NULL:
			return (*out = k8s_jv_new(J_NULL)) ? 0 : -ENOMEM;
		default:
			return refuse(err, "undefined or another simple value");
		}
	}
	return refuse(err, "an unknown item");
}

/*
 * Checks one item's shape at *p without allocating: every declared length fits
 * in the bytes left (an array element takes at least one byte, a map entry
 * two), lengths are definite, nesting is bounded. libcbor allocates what a
 * header declares before it reads the items, so without this a 12-byte value
 * declaring 2^28 map entries costs gigabytes. Returns 0 or -1.
 */
static int scan(const uint8_t **p, const uint8_t *end, int depth)
{
	if (depth > MAX_DEPTH || *p >= end)
		return -1;
	uint8_t ib = *(*p)++;
	unsigned major = ib >> 5, info = ib & 31;
	uint64_t v = info;
	if (info >= 28)
		return -1; /* reserved, or indefinite length / break */
	if (info >= 24) {
		size_t n = (size_t)1 << (info - 24);
		if ((size_t)(end - *p) < n)
			return -1;
		v = 0;
		for (size_t i = 0; i < n; i++)
			v = v << 8 | *(*p)++;
	}
	uint64_t left = (uint64_t)(end - *p);
	switch (major) {
	case 2: /* byte string */
	case 3: /* text string */
		if (v > left)
			return -1;
		*p += v;
		return 0;
	case 4: /* array */
	case 5: /* map */
		if (v > left || (major == 5 && v > left / 2))
			return -1;
		for (uint64_t i = 0; i < (major == 5 ? 2 * v : v); i++)
			if (scan(p, end, depth + 1) < 0)
				return -1;
		return 0;
	case 6: /* tag */
		return scan(p, end, depth + 1);
	default: /* integers, floats, simple values: the header is all */
		return 0;
	}
}

int k8s_cbor_to_jval(const void *val, size_t len, struct jval **out, char **err)
{
	struct cbor_load_result res;
	*out = NULL;
	const uint8_t *p = val;
	if (scan(&p, p + len, 0) < 0 || p != (const uint8_t *)val + len)
		return refuse(err, "malformed, of indefinite length, too deeply nested, or "
				   "followed by other bytes");
	cbor_item_t *it = cbor_load(val, len, &res);
	if (!it) {
		if (res.error.code == CBOR_ERR_MEMERROR)
			return -ENOMEM;
		if (err && !*err)
			*err = k8s_strdup_printf("invalid CBOR at byte %zu", res.error.position);
		return -ENOTSUP;
	}
	int r;
	if (res.read != len)
		r = refuse(err, "bytes after the value");
	else if (!cbor_isa_tag(it) || cbor_tag_value(it) != SELF_DESCRIBE)
		r = refuse(err, "no self-describe tag");
	else
		r = conv(it, 0, out, err);
	cbor_decref(&it);
	if (r == 0 && (*out)->t != J_OBJ) {
		k8s_jv_free(*out);
		*out = NULL;
		r = refuse(err, "not a map");
	}
	return r;
}
