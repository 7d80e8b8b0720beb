/* k8s_time.c: the latest write time a stored Kubernetes object records
 * (k8s_object_time, k8s.h).
 *
 * Called for every key at mount time, so it never decodes the object: it
 * walks only the fields that hold times, in place, without allocating.
 * Protobuf: the k8s\0 + runtime.Unknown envelope (typeMeta = 1 with
 * apiVersion = 1 and kind = 2, raw = 2, contentEncoding = 3), then in raw
 * metadata = 1 (ObjectMeta: creationTimestamp = 8, managedFields = 17, each
 * ManagedFieldsEntry with time = 4). metav1.Time and MicroTime are both
 * {seconds = 1, nanos = 2}. Events add their own times (see event_fields).
 * JSON: the same members by name.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "k8s.h"

#define NS_PER_S 1000000000LL
/* Later seconds (past 2262-04-11) would overflow int64 nanoseconds: such a
 * time is ignored. */
#define MAX_SECONDS (INT64_MAX / NS_PER_S - 1)

enum kind { KIND_OTHER, KIND_CORE_EVENT, KIND_EVENTS_EVENT };

static void take(int64_t *best, int64_t t)
{
	if (t > *best)
		*best = t;
}

static bool is(const void *s, size_t len, const char *lit)
{
	return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* core v1 Event is stored as v1; events.k8s.io Events (v1, v1beta1) keep
 * their group when written as such. */
static enum kind event_kind(const void *api, size_t api_len, const void *kind, size_t kind_len)
{
	if (!is(kind, kind_len, "Event"))
		return KIND_OTHER;
	if (is(api, api_len, "v1"))
		return KIND_CORE_EVENT;
	if (is(api, api_len, "events.k8s.io/v1") || is(api, api_len, "events.k8s.io/v1beta1"))
		return KIND_EVENTS_EVENT;
	return KIND_OTHER;
}

/* ---- protobuf ---- */

struct field {
	uint32_t num;
	int wt;
	uint64_t v;	  /* wire types 0, 1, 5 */
	const uint8_t *p; /* wire type 2 */
	size_t len;
};

static bool varint(const uint8_t **q, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; *q < end && shift < 64; shift += 7) {
		uint8_t c = *(*q)++;
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return true;
		}
	}
	return false;
}

/* The field at *q: 1, 0 at the end of the message, -1 when malformed. */
static int next_field(const uint8_t **q, const uint8_t *end, struct field *f)
{
	uint64_t tag;
	if (*q >= end)
		return 0;
	if (!varint(q, end, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
		return -1;
	f->num = (uint32_t)(tag >> 3);
	f->wt = (int)(tag & 7);
	f->v = 0;
	switch (f->wt) {
	case 0:
		return varint(q, end, &f->v) ? 1 : -1;
	case 1:
	case 5: {
		size_t n = f->wt == 1 ? 8 : 4;
		if ((size_t)(end - *q) < n)
			return -1;
		*q += n;
		return 1;
	}
	case 2:
		if (!varint(q, end, &f->v) || f->v > (uint64_t)(end - *q))
			return -1;
		f->p = *q;
		f->len = (size_t)f->v;
		*q += f->len;
		return 1;
	default:
		return -1; /* groups: Kubernetes never writes them */
	}
}

/* A Time or MicroTime message; 0 (no time) when zero or out of range. */
static int pb_time(const struct field *f, int64_t *best)
{
	if (f->wt != 2)
		return 0; /* not what the schema says: nothing to take */
	const uint8_t *q = f->p, *end = f->p + f->len;
	int64_t sec = 0, nsec = 0;
	struct field g;
	int r;
	while ((r = next_field(&q, end, &g)) > 0) {
		if (g.num == 1 && g.wt == 0)
			sec = (int64_t)g.v;
		else if (g.num == 2 && g.wt == 0)
			nsec = (int64_t)(int32_t)g.v;
	}
	if (r < 0)
		return -EINVAL;
	if (sec > 0 && sec <= MAX_SECONDS && nsec >= 0 && nsec < NS_PER_S)
		take(best, sec * NS_PER_S + nsec);
	return 0;
}

/* The first time field numbered num inside the message in f (an
 * EventSeries' lastObservedTime, a ManagedFieldsEntry's time). */
static int pb_nested_time(const struct field *f, uint32_t num, int64_t *best)
{
	if (f->wt != 2)
		return 0;
	const uint8_t *q = f->p, *end = f->p + f->len;
	struct field g = {0}; /* -O3 cannot see next_field fill it */
	int r;
	while ((r = next_field(&q, end, &g)) > 0)
		if (g.num == num && (r = pb_time(&g, best)) < 0)
			return r;
	return r < 0 ? -EINVAL : 0;
}

static int pb_metadata(const struct field *f, int64_t *best)
{
	if (f->wt != 2)
		return 0;
	const uint8_t *q = f->p, *end = f->p + f->len;
	struct field g;
	int r;
	while ((r = next_field(&q, end, &g)) > 0) {
		if (g.num == 8)
			r = pb_time(&g, best); /* creationTimestamp */
		else if (g.num == 17)
			r = pb_nested_time(&g, 4, best); /* managedFields[].time */
		if (r < 0)
			return r;
	}
	return r < 0 ? -EINVAL : 0;
}

/* The Event fields that record when it last happened, by kind:
 * core v1 lastTimestamp = 7, eventTime = 10, series = 11;
 * events.k8s.io eventTime = 2, series = 3, deprecatedLastTimestamp = 14;
 * EventSeries.lastObservedTime = 2 in both. */
static int pb_event_field(enum kind k, const struct field *g, int64_t *best)
{
	bool core = k == KIND_CORE_EVENT;
	if ((core && (g->num == 7 || g->num == 10)) || (!core && (g->num == 2 || g->num == 14)))
		return pb_time(g, best);
	if (g->num == (core ? 11u : 3u))
		return pb_nested_time(g, 2, best);
	return 0;
}

static int pb_object(const uint8_t *p, size_t len, enum kind k, int64_t *best)
{
	const uint8_t *q = p, *end = p + len;
	struct field g;
	int r;
	while ((r = next_field(&q, end, &g)) > 0) {
		if (g.num == 1)
			r = pb_metadata(&g, best);
		else if (k != KIND_OTHER)
			r = pb_event_field(k, &g, best);
		if (r < 0)
			return r;
	}
	return r < 0 ? -EINVAL : 0;
}

static int pb_envelope(const uint8_t *p, size_t len, int64_t *best)
{
	const uint8_t *q = p + 4, *end = p + len;
	const uint8_t *api = NULL, *kind = NULL, *raw = NULL;
	size_t api_len = 0, kind_len = 0, raw_len = 0;
	struct field f, g;
	int r;
	while ((r = next_field(&q, end, &f)) > 0) {
		if (f.num == 1 && f.wt == 2) {
			const uint8_t *tq = f.p, *tend = f.p + f.len;
			while ((r = next_field(&tq, tend, &g)) > 0) {
				if (g.num == 1 && g.wt == 2)
					api = g.p, api_len = g.len;
				else if (g.num == 2 && g.wt == 2)
					kind = g.p, kind_len = g.len;
			}
			if (r < 0)
				return -EINVAL;
		} else if (f.num == 2 && f.wt == 2) {
			raw = f.p, raw_len = f.len;
		} else if (f.num == 3 && f.wt == 2 && f.len) {
			return -ENOTSUP; /* a contentEncoding: raw is not the object */
		}
	}
	if (r < 0)
		return -EINVAL;
	if (!raw)
		return 0;
	return pb_object(raw, raw_len, event_kind(api, api_len, kind, kind_len), best);
}

/* ---- JSON ---- */

struct js {
	const char *p, *end;
};

static void ws(struct js *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* Whether the next value starts with c ('{', '[' or '"'); a member of another type than the
 * one looked for is skipped by the caller. */
static bool at(struct js *s, char c)
{
	ws(s);
	return s->p < s->end && *s->p == c;
}

static bool eat(struct js *s, char c)
{
	ws(s);
	if (s->p < s->end && *s->p == c) {
		s->p++;
		return true;
	}
	return false;
}

/* A string's bytes between the quotes, escapes left as they are (the
 * names and times looked for never need one). */
static bool str(struct js *s, const char **out, size_t *len)
{
	if (!eat(s, '"'))
		return false;
	const char *b = s->p;
	while (s->p < s->end && *s->p != '"') {
		if (*s->p == '\\' && ++s->p == s->end)
			return false;
		s->p++;
	}
	if (s->p == s->end)
		return false;
	*out = b;
	*len = (size_t)(s->p - b);
	s->p++;
	return true;
}

/* Skips one value. Brackets are only counted, not matched: the scan needs
 * the value's end, not a proof that the text is valid JSON. */
static bool skip(struct js *s)
{
	ws(s);
	size_t depth = 0;
	do {
		if (s->p >= s->end)
			return false;
		char c = *s->p;
		if (c == '"') {
			const char *x;
			size_t xl;
			if (!str(s, &x, &xl))
				return false;
			continue;
		}
		if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return false;
			depth--;
		} else if (depth == 0 && (c == ',' || c == ':')) {
			return false;
		}
		s->p++;
		if (depth == 0 && c != '}' && c != ']') {
			/* a bare scalar: runs to the next delimiter */
			while (s->p < s->end && !strchr(",}] \t\r\n", *s->p))
				s->p++;
		}
	} while (depth > 0);
	return true;
}

/* Where member() is in an object: first is true before the first call; k and kl are the
 * key of the member whose value is next. */
struct memb {
	bool first;
	const char *k;
	size_t kl;
};

/* Iterates an object's members: 1 with m->k set (the value is next), 0 after the closing
 * brace, -1 on error. */
static int member(struct js *s, struct memb *m)
{
	if (m->first) {
		m->first = false;
		if (!eat(s, '{'))
			return -1;
		if (eat(s, '}'))
			return 0;
	} else if (!eat(s, ',')) {
		return eat(s, '}') ? 0 : -1;
	}
	return str(s, &m->k, &m->kl) && eat(s, ':') ? 1 : -1;
}

static bool digits(const char *p, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		*v = *v * 10 + (p[i] - '0');
	}
	return true;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian), counting in eras of
 * 400 years (146097 days) from a March-based year so leap days come last. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* RFC 3339 as Go writes metav1.Time and MicroTime: 2006-01-02T15:04:05Z,
 * an optional fraction, Z or a +hh:mm / -hh:mm offset. */
static bool rfc3339(const char *p, size_t len, int64_t *ns)
{
	int y, mo, d, h, mi, sec;
	if (len < 20 || !digits(p, 4, &y) || p[4] != '-' || !digits(p + 5, 2, &mo) || p[7] != '-' ||
	    !digits(p + 8, 2, &d) || (p[10] != 'T' && p[10] != 't') || !digits(p + 11, 2, &h) ||
	    p[13] != ':' || !digits(p + 14, 2, &mi) || p[16] != ':' || !digits(p + 17, 2, &sec))
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return false;
	size_t i = 19;
	int64_t frac = 0, scale = NS_PER_S;
	if (i < len && p[i] == '.') {
		for (i++; i < len && p[i] >= '0' && p[i] <= '9'; i++)
			if (scale > 1) {
				scale /= 10;
				frac += (p[i] - '0') * scale;
			}
	}
	int64_t off = 0;
	if (i + 1 == len && (p[i] == 'Z' || p[i] == 'z')) {
		off = 0;
	} else if (i + 6 == len && (p[i] == '+' || p[i] == '-') && p[i + 3] == ':') {
		int oh, om;
		if (!digits(p + i + 1, 2, &oh) || !digits(p + i + 4, 2, &om) || oh > 23 || om > 59)
			return false;
		off = (oh * 3600 + om * 60) * (p[i] == '-' ? -1 : 1);
	} else {
		return false;
	}
	int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
	if (t <= 0 || t > MAX_SECONDS)
		return false;
	*ns = t * NS_PER_S + frac;
	return true;
}

/* A member value that should be a time: a string is taken when it parses,
 * anything else (null for a zero time) is skipped. */
static bool js_time(struct js *s, int64_t *best)
{
	if (at(s, '"')) {
		const char *v;
		size_t vl;
		int64_t t;
		if (!str(s, &v, &vl))
			return false;
		if (rfc3339(v, vl, &t))
			take(best, t);
		return true;
	}
	return skip(s);
}

/* The time member named name inside an object value (EventSeries). */
static bool js_nested_time(struct js *s, const char *name, int64_t *best)
{
	if (!at(s, '{'))
		return skip(s);
	struct memb m = {.first = true};
	int r;
	while ((r = member(s, &m)) > 0)
		if (!(is(m.k, m.kl, name) ? js_time(s, best) : skip(s)))
			return false;
	return r == 0;
}

static bool js_managed_fields(struct js *s, int64_t *best)
{
	if (!at(s, '['))
		return skip(s);
	s->p++;
	if (eat(s, ']'))
		return true;
	do {
		if (!js_nested_time(s, "time", best))
			return false;
	} while (eat(s, ','));
	return eat(s, ']');
}

static bool js_metadata(struct js *s, int64_t *best)
{
	if (!at(s, '{'))
		return skip(s);
	struct memb m = {.first = true};
	int r;
	while ((r = member(s, &m)) > 0) {
		bool ok;
		if (is(m.k, m.kl, "creationTimestamp"))
			ok = js_time(s, best);
		else if (is(m.k, m.kl, "managedFields"))
			ok = js_managed_fields(s, best);
		else
			ok = skip(s);
		if (!ok)
			return false;
	}
	return r == 0;
}

static int json_object(const char *p, size_t len, int64_t *best)
{
	struct js s = {p, p + len};
	struct memb m = {.first = true};
	const char *api = NULL, *kind = NULL;
	size_t api_len = 0, kind_len = 0;
	int64_t ev = 0; /* Event times, taken once kind says it is one */
	int r;
	while ((r = member(&s, &m)) > 0) {
		bool ok;
		if (is(m.k, m.kl, "metadata"))
			ok = js_metadata(&s, best);
		else if (is(m.k, m.kl, "apiVersion"))
			ok = str(&s, &api, &api_len) || skip(&s);
		else if (is(m.k, m.kl, "kind"))
			ok = str(&s, &kind, &kind_len) || skip(&s);
		else if (is(m.k, m.kl, "lastTimestamp") || is(m.k, m.kl, "eventTime") ||
			 is(m.k, m.kl, "deprecatedLastTimestamp"))
			ok = js_time(&s, &ev);
		else if (is(m.k, m.kl, "series"))
			ok = js_nested_time(&s, "lastObservedTime", &ev);
		else
			ok = skip(&s);
		if (!ok)
			return -EINVAL;
	}
	if (r < 0)
		return -EINVAL;
	if (event_kind(api, api_len, kind, kind_len) != KIND_OTHER)
		take(best, ev);
	return 0;
}

int k8s_object_time(const void *val, size_t len, int64_t *ns)
{
	int64_t best = 0;
	int r;
	switch (k8s_detect(val, len)) {
	case K8S_ENC_PROTOBUF:
		r = pb_envelope(val, len, &best);
		break;
	case K8S_ENC_JSON:
		r = json_object(val, len, &best);
		break;
	default:
		return -ENOTSUP;
	}
	if (r < 0)
		return r;
	if (!best)
		return -ENOENT;
	*ns = best;
	return 0;
}
