/* k8s_pb.c: protobuf wire-format splitting. A message is cut into fields, each
 * keeping a pointer to its exact bytes (tag included), so that the encoder can
 * copy unchanged and unknown fields verbatim and re-encoding is lossless. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_internal.h"

int k8s_pb_wire_type(uint8_t t)
{
	switch (t) {
	case K8S_T_DOUBLE:
	case K8S_T_FIXED64:
	case K8S_T_SFIXED64:
		return 1;
	case K8S_T_FLOAT:
	case K8S_T_FIXED32:
	case K8S_T_SFIXED32:
		return 5;
	case K8S_T_STRING:
	case K8S_T_BYTES:
	case K8S_T_MESSAGE:
		return 2;
	default:
		return 0;
	}
}

bool k8s_pb_read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	int shift = 0;
	const uint8_t *q = *p;

	while (q < end && shift < 64) {
		uint8_t c = *q++;
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*p = q;
			*v = x;
			return true;
		}
		shift += 7;
	}
	return false;
}

int k8s_pb_split(const uint8_t *p, size_t len, struct pbmsg *m)
{
	return k8s_pb_split_prefix(p, len, m, NULL);
}

/* a little-endian fixed64 (n 8) or fixed32 (n 4) at *q; false when it is cut short */
static bool read_fixed(const uint8_t **q, const uint8_t *end, int n, uint64_t *v)
{
	if (end - *q < n)
		return false;
	for (int i = n - 1; i >= 0; i--)
		*v = *v << 8 | (*q)[i];
	*q += n;
	return true;
}

static int split(const uint8_t *p, size_t len, struct pbmsg *m, size_t *consumed);

int k8s_pb_split_prefix(const uint8_t *p, size_t len, struct pbmsg *m, size_t *consumed)
{
	memset(m, 0, sizeof(*m));
	return split(p, len, m, consumed);
}

int k8s_pb_split_reuse(const uint8_t *p, size_t len, struct pbmsg *m)
{
	m->n = 0;
	return split(p, len, m, NULL);
}

/* k8s_pb_read_varint with the one-byte case inline: nearly every tag and
 * length of a Kubernetes object is one byte, and splitting is a tenth of a
 * view */
static inline bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	if (*p < end && **p < 0x80) {
		*v = *(*p)++;
		return true;
	}
	return k8s_pb_read_varint(p, end, v);
}

/* room for one more field; -ENOMEM frees m */
static int grow(struct pbmsg *m)
{
	size_t cap = m->cap ? m->cap * 2 : 16;
	struct pbf *nf = realloc(m->f, cap * sizeof(*nf));
	if (!nf) {
		k8s_pb_free(m);
		return -ENOMEM;
	}
	m->f = nf;
	m->cap = cap;
	return 0;
}

static int split(const uint8_t *p, size_t len, struct pbmsg *m, size_t *consumed)
{
	const uint8_t *q = p, *end = p + len;

	m->nums = 0;
	m->indexed = true;
	while (q < end) {
		uint64_t tag, l;

		if (m->n == m->cap && grow(m))
			return -ENOMEM;
		/* filled in place: a field built on the stack and then copied
		 * was read back before its stores landed, a third of split */
		struct pbf *f = &m->f[m->n];
		*f = (struct pbf){.raw = q};
		if (!read_varint(&q, end, &tag))
			goto bad;
		if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
			goto bad;
		f->num = (uint32_t)(tag >> 3);
		f->wt = tag & 7;
		switch (f->wt) {
		case 0:
			if (!read_varint(&q, end, &f->v))
				goto bad;
			break;
		case 1:
		case 5:
			if (!read_fixed(&q, end, f->wt == 1 ? 8 : 4, &f->v))
				goto bad;
			break;
		case 2:
			if (!read_varint(&q, end, &l) || l > (uint64_t)(end - q))
				goto bad;
			f->p = q;
			f->len = (size_t)l;
			q += l;
			break;
		default:
			/* groups (3, 4) are not used by Kubernetes */
			goto bad;
		}
		f->raw_len = (size_t)(q - f->raw);
		m->n++;
		m->nums |= 1ULL << (f->num < 63 ? f->num : 63);
	}
	if (consumed)
		*consumed = len;
	return 0;
bad:
	if (consumed) {
		/* stop before the malformed field; the caller keeps the rest */
		*consumed = (size_t)(q - p);
		if (m->n)
			*consumed = (size_t)(m->f[m->n - 1].raw + m->f[m->n - 1].raw_len - p);
		else
			*consumed = 0;
		return 0;
	}
	k8s_pb_free(m);
	return -EINVAL;
}

void k8s_pb_free(struct pbmsg *m)
{
	free(m->f);
	memset(m, 0, sizeof(*m));
}
