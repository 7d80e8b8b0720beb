/* k8s.c: the public codec API (k8s.h): format detection, the protobuf
 * runtime.Unknown envelope, JSON-stored objects, resourceVersion handling and
 * edit validation. The per-message work is in k8s_pbjson.c and k8s_enc.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s.h"
#include "k8s_cbor.h"
#include "k8s_internal.h"
#include "core/log.h"

static const uint8_t pb_magic[4] = {'k', '8', 's', 0};

enum k8s_encoding k8s_detect(const void *val, size_t len)
{
	const uint8_t *p = val;
	size_t i = 0, e = len;

	if (!p || !len)
		return K8S_ENC_RAW;
	if (len >= 4 && memcmp(p, pb_magic, 4) == 0)
		return K8S_ENC_PROTOBUF;
	if (len >= 8 && memcmp(p, "k8s:enc:", 8) == 0)
		return K8S_ENC_ENCRYPTED;
	if (len >= 3 && p[0] == 0xd9 && p[1] == 0xd9 && p[2] == 0xf7)
		return K8S_ENC_CBOR;
	while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
		i++;
	while (e > i &&
	       (p[e - 1] == ' ' || p[e - 1] == '\t' || p[e - 1] == '\r' || p[e - 1] == '\n'))
		e--;
	if (e > i && p[i] == '{' && p[e - 1] == '}')
		return K8S_ENC_JSON;
	return K8S_ENC_RAW;
}

static void set_err(char **err, char *msg)
{
	if (err && !*err)
		*err = msg;
	else
		free(msg);
}

/* ---- envelope ---- */

struct envelope {
	struct pbmsg fields;
	char *api_version, *kind; /* from typeMeta, NUL-terminated */
	const uint8_t *raw;
	size_t raw_len;
	bool has_raw;
	const uint8_t *content_encoding;
	size_t content_encoding_len;
	/* bytes after the last well-formed envelope field (seen in values saved
	 * with a trailing newline); kept so re-encoding is byte-exact */
	const uint8_t *trailer;
	size_t trailer_len;
};

static void envelope_free(struct envelope *e)
{
	k8s_pb_free(&e->fields);
	free(e->api_version);
	free(e->kind);
	memset(e, 0, sizeof(*e));
}

static int envelope_parse(const uint8_t *p, size_t len, struct envelope *e, char **err)
{
	struct pbmsg tm;

	memset(e, 0, sizeof(*e));
	if (len < 4 || memcmp(p, pb_magic, 4) != 0) {
		set_err(err, k8s_strdup_printf("not a Kubernetes protobuf value"));
		return -EINVAL;
	}
	size_t used = 0;
	if (k8s_pb_split_prefix(p + 4, len - 4, &e->fields, &used)) {
		set_err(err, k8s_strdup_printf("malformed runtime.Unknown envelope"));
		return -ENOMEM;
	}
	if (used < len - 4) {
		e->trailer = p + 4 + used;
		e->trailer_len = len - 4 - used;
		log_debug("k8s: %zu trailing byte(s) after the protobuf envelope kept as is",
			  e->trailer_len);
	}
	e->api_version = strdup("");
	e->kind = strdup("");
	/* Trailing bytes are kept (real values carry a stray newline), but an
	 * envelope cut before its raw object is a truncated value, not an
	 * empty object. */
	bool has_raw = false;
	for (size_t i = 0; i < e->fields.n; i++)
		if (e->fields.f[i].num == 2 && e->fields.f[i].wt == 2)
			has_raw = true;
	if (e->trailer_len && !has_raw) {
		envelope_free(e);
		set_err(err, k8s_strdup_printf("truncated runtime.Unknown envelope"));
		return -EINVAL;
	}
	if (e->fields.n == 0) {
		envelope_free(e);
		set_err(err, k8s_strdup_printf("malformed runtime.Unknown envelope"));
		return -EINVAL;
	}
	if (!e->api_version || !e->kind)
		goto nomem;
	for (size_t i = 0; i < e->fields.n; i++) {
		const struct pbf *f = &e->fields.f[i];
		if (f->wt != 2)
			continue;
		if (f->num == 1) {
			if (k8s_pb_split(f->p, f->len, &tm)) {
				envelope_free(e);
				set_err(err, k8s_strdup_printf("malformed envelope typeMeta"));
				return -EINVAL;
			}
			for (size_t k = 0; k < tm.n; k++) {
				char **dst = tm.f[k].num == 1	? &e->api_version
					     : tm.f[k].num == 2 ? &e->kind
								: NULL;
				if (!dst || tm.f[k].wt != 2)
					continue;
				struct buf sb;
				free(*dst);
				k8s_buf_init(&sb);
				k8s_utf8_sanitize(&sb, (const char *)tm.f[k].p, tm.f[k].len);
				*dst = NULL;
				if (k8s_buf_finish(&sb, dst, NULL))
					*dst = NULL;
				if (!*dst) {
					k8s_pb_free(&tm);
					goto nomem;
				}
			}
			k8s_pb_free(&tm);
		} else if (f->num == 2) {
			e->raw = f->p;
			e->raw_len = f->len;
			e->has_raw = true;
		} else if (f->num == 3) {
			e->content_encoding = f->p;
			e->content_encoding_len = f->len;
		}
	}
	return 0;
nomem:
	envelope_free(e);
	return -ENOMEM;
}

/* ---- decode ---- */

/* Set obj.metadata.resourceVersion, placing it in ObjectMeta's field order. */
static int set_resource_version(struct jval *obj, int64_t rv)
{
	char tmp[32];
	struct jval *md;
	const struct k8s_msg *om =
		k8s_schema_msg("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta");
	long at;

	if (rv <= 0 || obj->t != J_OBJ)
		return 0;
	md = k8s_jv_get(obj, "metadata");
	if (!md || md->t != J_OBJ)
		return 0;
	snprintf(tmp, sizeof(tmp), "%" PRId64, rv);
	struct jval *v = k8s_jv_str(tmp, strlen(tmp));
	if (!v)
		return -ENOMEM;
	at = k8s_jv_find(md, "resourceVersion", 15);
	if (at >= 0) {
		k8s_jv_free(md->v[at]);
		md->v[at] = v;
		return 0;
	}
	/* before the first member that comes after resourceVersion in Go order */
	size_t pos = md->n;
	if (om) {
		const struct k8s_field *f = k8s_schema_fields(om);
		size_t rvi = 0;
		for (size_t i = 0; i < om->n_fields; i++)
			if (!strcmp(f[i].json, "resourceVersion"))
				rvi = i;
		for (size_t k = 0; k < md->n && pos == md->n; k++)
			for (size_t i = rvi + 1; i < om->n_fields; i++)
				if (strlen(f[i].json) == md->klen[k] &&
				    !memcmp(f[i].json, md->k[k], md->klen[k]))
					pos = k;
	}
	return k8s_jv_insert(md, pos, "resourceVersion", 15, v);
}

/* out NULL: only the size is wanted, and no text is kept */
static int render(const struct jval *v, enum k8s_format fmt, char **out, size_t *out_len,
		  char **err)
{
	struct buf b;
	int r = 0;

	if (out)
		k8s_buf_init(&b);
	else
		k8s_buf_init_count(&b);
	if (fmt == K8S_FMT_JSON) {
		k8s_json_write(&b, v, 4);
		k8s_buf_addc(&b, '\n');
	} else {
		r = k8s_yaml_write(&b, v, err);
	}
	if (!r && b.oom)
		r = -ENOMEM;
	if (r || !out) {
		if (!r && out_len)
			*out_len = k8s_buf_size(&b);
		k8s_buf_free(&b);
		return r;
	}
	return k8s_buf_finish(&b, out, out_len);
}

int k8s_decode_view(const void *val, size_t len, int64_t resource_version, const char *api_version,
		    const char *kind, struct jval **out, char **err)
{
	struct jval *v = NULL;
	int r;

	*out = NULL;
	switch (k8s_detect(val, len)) {
	case K8S_ENC_PROTOBUF: {
		struct envelope e;
		const struct k8s_msg *m;
		struct k8s_typemeta tm;

		r = envelope_parse(val, len, &e, err);
		if (r)
			return r;
		if (e.content_encoding_len) {
			set_err(err, k8s_strdup_printf("unsupported contentEncoding %.*s",
						       (int)e.content_encoding_len,
						       (const char *)e.content_encoding));
			envelope_free(&e);
			return -ENOTSUP;
		}
		if (*e.kind)
			m = k8s_schema_kind(e.api_version, e.kind);
		else
			m = k8s_schema_kind(api_version, kind);
		if (!m) {
			set_err(err, k8s_strdup_printf("kind %s %s is not in the schema",
						       *e.api_version ? e.api_version : "?",
						       *e.kind ? e.kind : "?"));
			envelope_free(&e);
			return -ENOTSUP;
		}
		tm.api_version = e.api_version;
		tm.kind = e.kind;
		r = k8s_pbjson_message(m, e.raw ? e.raw : (const uint8_t *)"", e.raw_len, &tm, &v,
				       err);
		envelope_free(&e);
		if (r)
			return r;
		break;
	}
	case K8S_ENC_JSON:
		r = k8s_json_parse(val, len, &v, err);
		if (r)
			return r;
		if (v->t != J_OBJ) {
			k8s_jv_free(v);
			set_err(err, k8s_strdup_printf("stored JSON is not an object"));
			return -EINVAL;
		}
		{
			char *why = NULL;
			if (!k8s_jv_showable(v, &why)) {
				k8s_jv_free(v);
				set_err(err, why);
				return -EINVAL;
			}
		}
		/* views never point into the caller's buffer */
		{
			struct jval *d = k8s_jv_dup(v);
			k8s_jv_free(v);
			v = d;
			if (!v)
				return -ENOMEM;
		}
		break;
	case K8S_ENC_CBOR: {
		char *why = NULL;
		r = k8s_cbor_to_jval(val, len, &v, err);
		if (r)
			return r;
		if (!k8s_jv_showable(v, &why)) {
			k8s_jv_free(v);
			set_err(err, why);
			return -ENOTSUP;
		}
		break;
	}
	case K8S_ENC_ENCRYPTED:
		set_err(err, k8s_strdup_printf("encrypted value (k8s:enc:) cannot be decoded"));
		return -ENOTSUP;
	default:
		set_err(err, k8s_strdup_printf("not a Kubernetes value"));
		return -EINVAL;
	}
	r = set_resource_version(v, resource_version);
	if (r) {
		k8s_jv_free(v);
		return r;
	}
	*out = v;
	return 0;
}

int k8s_decode_typed(const void *val, size_t len, enum k8s_format fmt, int64_t resource_version,
		     const char *api_version, const char *kind, char **out, size_t *out_len,
		     char **err)
{
	struct jval *v;
	int r;

	if (out)
		*out = NULL;
	if (out_len)
		*out_len = 0;
	k8s_jv_arena_begin(); /* the view lives only for this call */
	r = k8s_decode_view(val, len, resource_version, api_version, kind, &v, err);
	if (r == 0)
		r = render(v, fmt, out, out_len, err);
	k8s_jv_arena_end();
	return r;
}

int k8s_decode(const void *val, size_t len, enum k8s_format fmt, int64_t resource_version,
	       char **out, size_t *out_len, char **err)
{
	return k8s_decode_typed(val, len, fmt, resource_version, NULL, NULL, out, out_len, err);
}

/* ---- encode ---- */

static const char *str_member(const struct jval *o, const char *key)
{
	const struct jval *v = k8s_jv_get(o, key);

	return v && v->t == J_STR ? v->s : NULL;
}

static int parse_text(const char *text, size_t len, struct jval **out, char **err)
{
	size_t i = 0;

	/* Blank lines and '#' comments first: a copy of a refused save starts
	 * with a comment block saying why (src/save), also before JSON. */
	for (;;) {
		while (i < len &&
		       (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
			i++;
		if (i >= len || text[i] != '#')
			break;
		while (i < len && text[i] != '\n')
			i++;
	}
	if (i < len && text[i] == '{') {
		/* JSON is YAML too, but the JSON parser keeps numbers exact */
		int r = k8s_json_parse(text + i, len - i, out, NULL);
		if (r == 0)
			return 0;
		if (r == -ENOMEM)
			return r;
	}
	return k8s_yaml_parse(text, len, out, err);
}

/* metadata.name / namespace against the key; fill in missing ones */
static int check_meta(struct jval *obj, const char *field, const char *expect, char **err)
{
	struct jval *md;
	struct jval *v;

	if (!expect)
		return 0;
	md = k8s_jv_get(obj, "metadata");
	if (!md) {
		md = k8s_jv_new(J_OBJ);
		if (!md || k8s_jv_set(obj, "metadata", 8, md))
			return -ENOMEM;
	}
	if (md->t != J_OBJ) {
		set_err(err, k8s_strdup_printf("field \"metadata\": expected object"));
		return -EINVAL;
	}
	v = k8s_jv_get(md, field);
	if (!v || v->t == J_NULL) {
		if (!*expect)
			return 0;
		long at = k8s_jv_find(md, field, strlen(field));
		if (at >= 0)
			k8s_jv_remove(md, (size_t)at);
		/* name goes first, namespace after generateName (Go order) */
		size_t pos = 0;
		if (!strcmp(field, "namespace")) {
			for (size_t i = 0; i < md->n; i++)
				if ((md->klen[i] == 4 && !memcmp(md->k[i], "name", 4)) ||
				    (md->klen[i] == 12 && !memcmp(md->k[i], "generateName", 12)))
					pos = i + 1;
		}
		return k8s_jv_insert(md, pos, field, strlen(field),
				     k8s_jv_str(expect, strlen(expect)));
	}
	if (v->t != J_STR || strcmp(v->s, expect) != 0) {
		set_err(err,
			k8s_strdup_printf("field \"metadata.%s\"%s: must be \"%s\" (it names the "
					  "key), got %s%s%s",
					  field, "", expect, v->t == J_STR ? "\"" : "",
					  v->t == J_STR ? v->s : "a non-string",
					  v->t == J_STR ? "\"" : ""));
		return -EINVAL;
	}
	return 0;
}

static int check_resource_version(struct jval *obj, int64_t rv, char **err)
{
	struct jval *md = k8s_jv_get(obj, "metadata");
	char tmp[32];
	long at;

	if (rv <= 0 || !md || md->t != J_OBJ)
		return 0;
	at = k8s_jv_find(md, "resourceVersion", 15);
	if (at < 0)
		return 0;
	const struct jval *v = md->v[at];
	snprintf(tmp, sizeof(tmp), "%" PRId64, rv);
	if (v->t != J_NULL && v->t != J_STR) {
		set_err(err, k8s_strdup_printf("field \"metadata.resourceVersion\"%s: expected "
					       "string (quote it: \"%s\")",
					       "", tmp));
		return -EINVAL;
	}
	if (v->t != J_NULL && (v->t != J_STR || strcmp(v->s, tmp) != 0)) {
		set_err(err,
			k8s_strdup_printf(
				"field \"metadata.resourceVersion\": %s%s%s does not match the "
				"current revision %s (the object changed since it was read)",
				v->t == J_STR ? "\"" : "", v->t == J_STR ? v->s : "value",
				v->t == J_STR ? "\"" : "", tmp));
		return -EINVAL;
	}
	/* the apiserver stores objects with resourceVersion cleared */
	k8s_jv_remove(md, (size_t)at);
	return 0;
}

static bool has_typemeta(const struct k8s_msg *m)
{
	const struct k8s_field *f = k8s_schema_fields(m);

	for (size_t i = 0; i < m->n_fields; i++)
		if (f[i].flags & K8S_F_TYPEMETA)
			return true;
	return false;
}

static bool stored_as_json(const char *api_version)
{
	return api_version && (!strncmp(api_version, "apiextensions.k8s.io/", 21) ||
			       !strncmp(api_version, "apiregistration.k8s.io/", 23));
}

static int encode_protobuf(const struct k8s_msg *m, const struct envelope *oe,
			   const char *api_version, const char *kind, const struct jval *obj,
			   unsigned release, struct buf *out, char **err)
{
	struct buf raw;
	int r;

	k8s_buf_init(&raw);
	r = k8s_encode_message_as(m, obj, oe ? (oe->raw ? oe->raw : (const uint8_t *)"") : NULL,
				  oe ? oe->raw_len : 0, release, &raw, err);
	if (r) {
		k8s_buf_free(&raw);
		return r;
	}
	k8s_buf_add(out, pb_magic, 4);
	if (oe && raw.len == oe->raw_len && (!raw.len || !memcmp(raw.data, oe->raw, raw.len))) {
		/* unchanged object: the envelope as it was, byte for byte */
		k8s_buf_add(out, oe->fields.n ? oe->fields.f[0].raw : NULL,
			    oe->fields.n ? (size_t)(oe->fields.f[oe->fields.n - 1].raw +
						    oe->fields.f[oe->fields.n - 1].raw_len -
						    oe->fields.f[0].raw)
					 : 0);
		k8s_buf_add(out, oe->trailer, oe->trailer_len);
	} else if (oe) {
		bool done = false;
		for (size_t i = 0; i < oe->fields.n; i++) {
			const struct pbf *f = &oe->fields.f[i];
			if (f->num == 2 && f->wt == 2 && !done) {
				if (f->len == raw.len &&
				    (!raw.len || !memcmp(f->p, raw.data, raw.len)))
					k8s_buf_add(out, f->raw, f->raw_len);
				else {
					k8s_buf_varint(out, 2 << 3 | 2);
					k8s_buf_varint(out, raw.len);
					k8s_buf_add(out, raw.data, raw.len);
				}
				done = true;
			} else if (f->num == 2 && f->wt == 2) {
				continue; /* merged into the one above */
			} else {
				k8s_buf_add(out, f->raw, f->raw_len);
			}
		}
		if (!done) {
			k8s_buf_varint(out, 2 << 3 | 2);
			k8s_buf_varint(out, raw.len);
			k8s_buf_add(out, raw.data, raw.len);
		}
		k8s_buf_add(out, oe->trailer, oe->trailer_len);
	} else {
		struct buf tm;
		k8s_buf_init(&tm);
		k8s_buf_varint(&tm, 1 << 3 | 2);
		k8s_buf_varint(&tm, strlen(api_version));
		k8s_buf_adds(&tm, api_version);
		k8s_buf_varint(&tm, 2 << 3 | 2);
		k8s_buf_varint(&tm, strlen(kind));
		k8s_buf_adds(&tm, kind);
		k8s_buf_varint(out, 1 << 3 | 2);
		k8s_buf_varint(out, tm.len);
		k8s_buf_add(out, tm.data, tm.len);
		k8s_buf_free(&tm);
		k8s_buf_varint(out, 2 << 3 | 2);
		k8s_buf_varint(out, raw.len);
		k8s_buf_add(out, raw.data, raw.len);
		/* contentEncoding and contentType, always written (empty) */
		k8s_buf_add(out, "\x1a\x00\x22\x00", 4);
	}
	k8s_buf_free(&raw);
	return out->oom ? -ENOMEM : 0;
}

/* JSON-stored objects: a new known kind in Go struct order, a new unknown kind
 * with sorted keys, an edit merged into the original JSON */
static int encode_json(const struct jval *ojson, const char *orig, size_t orig_len, const char *tav,
		       const char *tkind, const struct jval *obj, struct buf *b, char **err)
{
	const struct k8s_msg *km = k8s_schema_kind(tav, tkind);
	struct buf pb;
	int r = 0;

	k8s_buf_init(&pb);
	if (!ojson && km) {
		/* validate and put it in Go order by going through the protobuf form */
		struct jval *view = NULL;
		struct k8s_typemeta tm = {tav, tkind};
		r = k8s_encode_message(km, obj, NULL, 0, &pb, err);
		if (!r)
			r = k8s_pbjson_message(km, pb.data ? pb.data : (const uint8_t *)"", pb.len,
					       &tm, &view, err);
		if (!r) {
			k8s_json_write(b, view, 0);
			k8s_buf_addc(b, '\n');
		}
		k8s_jv_free(view);
		goto out;
	}
	if (ojson && km) {
		/* validate edits of known kinds against the schema, unless the stored
		 * object itself does not fit it (written by another version): then its
		 * extra members must survive */
		char *oerr = NULL;
		bool orig_fits = k8s_encode_message(km, ojson, NULL, 0, &pb, &oerr) == 0;
		if (!orig_fits)
			log_debug("k8s: stored %s does not fit the schema (%s); edit not "
				  "schema-checked",
				  tkind, oerr ? oerr : "?");
		free(oerr);
		pb.len = 0;
		if (orig_fits && (r = k8s_encode_message(km, obj, NULL, 0, &pb, err)))
			goto out;
	}
	if (ojson) {
		/* keep the original's surrounding whitespace (the final newline) */
		k8s_buf_add(b, orig, ojson->src_off);
		k8s_json_merge(b, ojson, obj);
		size_t end = ojson->src_off + ojson->src_len;
		k8s_buf_add(b, orig + end, orig_len - end);
	} else {
		k8s_json_merge(b, NULL, obj);
		k8s_buf_addc(b, '\n');
	}
out:
	k8s_buf_free(&pb);
	if (!r && b->oom)
		r = -ENOMEM;
	return r;
}

static int encode_typed(const void *orig, size_t orig_len, const char *text, size_t text_len,
			const char *expect_name, const char *expect_namespace,
			int64_t resource_version, const char *api_version, const char *kind,
			enum k8s_encoding new_encoding, unsigned release, void **out,
			size_t *out_len, char **err)
{
	enum k8s_encoding enc = orig ? k8s_detect(orig, orig_len) : K8S_ENC_RAW;
	struct jval *obj = NULL, *ojson = NULL;
	struct envelope oe;
	bool have_env = false;
	struct buf b;
	const char *tav, *tkind;
	int r;

	*out = NULL;
	if (out_len)
		*out_len = 0;
	memset(&oe, 0, sizeof(oe));
	k8s_buf_init(&b);
	if (orig && enc == K8S_ENC_CBOR) {
		set_err(err, k8s_strdup_printf("CBOR values are read-only: their round trip "
					       "through YAML/JSON is not yet proven lossless"));
		return -ENOTSUP;
	}
	if (orig && enc != K8S_ENC_PROTOBUF && enc != K8S_ENC_JSON) {
		set_err(err, k8s_strdup_printf("the stored value is not protobuf or JSON; it is "
					       "read-only"));
		return -ENOTSUP;
	}
	r = parse_text(text, text_len, &obj, err);
	if (r)
		return r;
	if (obj->t != J_OBJ) {
		set_err(err, k8s_strdup_printf("the document must be a mapping (an object)"));
		r = -EINVAL;
		goto out;
	}
	tav = str_member(obj, "apiVersion");
	tkind = str_member(obj, "kind");
	if (enc == K8S_ENC_PROTOBUF) {
		r = envelope_parse(orig, orig_len, &oe, err);
		if (r)
			goto out;
		have_env = true;
		const struct k8s_msg *em = k8s_schema_kind(*oe.kind ? oe.api_version : api_version,
							   *oe.kind ? oe.kind : kind);
		/* kinds without TypeMeta (WatchEvent) show no apiVersion/kind to compare */
		bool shows = !em || has_typemeta(em) || tav || tkind;
		if (shows && (strcmp(tav ? tav : "", oe.api_version) ||
			      strcmp(tkind ? tkind : "", oe.kind))) {
			set_err(err,
				k8s_strdup_printf("apiVersion/kind must stay %s/%s (got %s/%s)",
						  oe.api_version, oe.kind, tav ? tav : "(none)",
						  tkind ? tkind : "(none)"));
			r = -EINVAL;
			goto out;
		}
	} else if (enc == K8S_ENC_JSON) {
		r = k8s_json_parse(orig, orig_len, &ojson, err);
		if (r)
			goto out;
		const char *oav = str_member(ojson, "apiVersion");
		const char *okind = str_member(ojson, "kind");
		if (strcmp(tav ? tav : "", oav ? oav : "") ||
		    strcmp(tkind ? tkind : "", okind ? okind : "")) {
			set_err(err,
				k8s_strdup_printf("apiVersion/kind must stay %s/%s (got %s/%s)",
						  oav ? oav : "(none)", okind ? okind : "(none)",
						  tav ? tav : "(none)", tkind ? tkind : "(none)"));
			r = -EINVAL;
			goto out;
		}
	} else if (!tav || !tkind) {
		if (!api_version || !kind) {
			set_err(err, k8s_strdup_printf("apiVersion and kind are required"));
			r = -EINVAL;
			goto out;
		}
	}
	if ((r = check_meta(obj, "name", expect_name, err)) ||
	    (r = check_meta(obj, "namespace", expect_namespace, err)) ||
	    (r = check_resource_version(obj, resource_version, err)))
		goto out;

	bool as_json;
	if (orig)
		as_json = enc == K8S_ENC_JSON;
	else if (new_encoding == K8S_ENC_JSON || new_encoding == K8S_ENC_PROTOBUF)
		as_json = new_encoding == K8S_ENC_JSON;
	else
		as_json = stored_as_json(tav) ||
			  !k8s_schema_kind(tav ? tav : api_version, tkind ? tkind : kind);
	if (as_json) {
		r = encode_json(ojson, orig, orig_len, tav, tkind, obj, &b, err);
	} else {
		const char *av = tav ? tav : api_version, *kd = tkind ? tkind : kind;
		const struct k8s_msg *m =
			k8s_schema_kind(have_env && *oe.kind ? oe.api_version : av,
					have_env && *oe.kind ? oe.kind : kd);
		if (!m && have_env && !*oe.kind)
			m = k8s_schema_kind(av, kd);
		if (!m) {
			set_err(err, k8s_strdup_printf("kind %s %s is not in the schema",
						       av ? av : "?", kd ? kd : "?"));
			r = -ENOTSUP;
			goto out;
		}
		/* the envelope names the type unless the kind has no TypeMeta */
		bool tm = has_typemeta(m);
		r = encode_protobuf(m, have_env ? &oe : NULL, tm && av ? av : "",
				    tm && kd ? kd : "", obj, release, &b, err);
	}
	if (r)
		goto out;
	{
		char *o;
		r = k8s_buf_finish(&b, &o, out_len);
		if (!r)
			*out = o;
	}
out:
	if (r && err && *err)
		log_debug("k8s: encode failed: %s", *err);
	k8s_buf_free(&b);
	k8s_jv_free(obj);
	k8s_jv_free(ojson);
	if (have_env)
		envelope_free(&oe);
	return r;
}

int k8s_encode_typed(const void *orig, size_t orig_len, const char *text, size_t text_len,
		     const char *expect_name, const char *expect_namespace,
		     int64_t resource_version, const char *api_version, const char *kind,
		     enum k8s_encoding new_encoding, void **out, size_t *out_len, char **err)
{
	return encode_typed(orig, orig_len, text, text_len, expect_name, expect_namespace,
			    resource_version, api_version, kind, new_encoding, 0, out, out_len,
			    err);
}

int k8s_encode_release(const char *release, const void *orig, size_t orig_len, const char *text,
		       size_t text_len, const char *expect_name, const char *expect_namespace,
		       int64_t resource_version, const char *api_version, const char *kind,
		       enum k8s_encoding new_encoding, void **out, size_t *out_len, char **err)
{
	unsigned minor;
	int n = 0;

	/* digits only after "1." (sscanf alone would take " 15" or "+15") */
	if (!release || strncmp(release, "1.", 2) || release[2] < '0' || release[2] > '9' ||
	    sscanf(release, "1.%u%n", &minor, &n) != 1 || release[n] || !minor || minor > 254) {
		*out = NULL;
		set_err(err, k8s_strdup_printf("release %s is not 1.N", release ? release : "?"));
		return -EINVAL;
	}
	/* an edit keeps what the original has: the release matters for new objects */
	return encode_typed(orig, orig_len, text, text_len, expect_name, expect_namespace,
			    resource_version, api_version, kind, new_encoding, orig ? 0 : minor,
			    out, out_len, err);
}

const char *k8s_removed_in(const void *val, size_t len)
{
	const char *r = NULL;

	switch (k8s_detect(val, len)) {
	case K8S_ENC_PROTOBUF: {
		struct envelope e;
		if (envelope_parse(val, len, &e, NULL))
			return NULL;
		r = k8s_schema_removed_in(e.api_version, e.kind);
		envelope_free(&e);
		return r;
	}
	case K8S_ENC_JSON: {
		/* e.g. apiextensions.k8s.io/v1beta1 CRDs that old clusters stored */
		struct jval *v = NULL;
		if (k8s_json_parse(val, len, &v, NULL))
			return NULL;
		if (v->t == J_OBJ)
			r = k8s_schema_removed_in(str_member(v, "apiVersion"),
						  str_member(v, "kind"));
		k8s_jv_free(v);
		return r;
	}
	default:
		return NULL;
	}
}

int k8s_encode(const void *orig, size_t orig_len, const char *text, size_t text_len,
	       const char *expect_name, const char *expect_namespace, int64_t resource_version,
	       void **out, size_t *out_len, char **err)
{
	return k8s_encode_typed(orig, orig_len, text, text_len, expect_name, expect_namespace,
				resource_version, NULL, NULL, K8S_ENC_RAW, out, out_len, err);
}
