/* k8s_yaml.c: YAML input through libyaml, and go-yaml's decisions for output.
 *
 * Output reproduces `kubectl get -o yaml`, which is sigs.k8s.io/yaml's
 * JSONToYAML: JSON numbers become YAML ints or floats, mapping keys are sorted
 * with go-yaml v2's "natural" order, and a string is quoted exactly when
 * go-yaml v2 would resolve it, unquoted, to something other than a string
 * (YAML 1.1 booleans like "yes", numbers, timestamps, null). An emitter (of
 * which go-yaml's is a port of libyaml's) then picks the final style and line
 * folding: k8s_emit.c writes what it would; the libyaml-based writer here
 * (k8s_yaml_write_libyaml) is kept to prove that. Input uses the same YAML 1.1
 * resolution, so our output parses back to the same values. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>
#include <yaml.h>

#include "k8s_emit.h"
#include "k8s_internal.h"

/* ---- go-yaml v2 scalar resolution ---- */

enum rtag { R_STR, R_NULL, R_BOOL, R_INT, R_FLOAT, R_TIMESTAMP };

struct resolved {
	enum rtag tag;
	bool b;
	bool is_uint; /* R_INT that only fits uint64 */
	int64_t i;
	uint64_t u;
	double f;
};

static const struct {
	const char *s;
	enum rtag tag;
	int val;    /* bool value, or float kind: 0 nan, 1 +inf, -1 -inf */
	size_t len; /* of s: comparing it first spares a strlen per entry and scalar */
} resolve_map[] = {
#define RM(str, tag, val)                                                                          \
	{                                                                                          \
		str, tag, val, sizeof(str) - 1                                                     \
	}
	RM("y", R_BOOL, 1),	  RM("Y", R_BOOL, 1),	    RM("yes", R_BOOL, 1),
	RM("Yes", R_BOOL, 1),	  RM("YES", R_BOOL, 1),	    RM("true", R_BOOL, 1),
	RM("True", R_BOOL, 1),	  RM("TRUE", R_BOOL, 1),    RM("on", R_BOOL, 1),
	RM("On", R_BOOL, 1),	  RM("ON", R_BOOL, 1),	    RM("n", R_BOOL, 0),
	RM("N", R_BOOL, 0),	  RM("no", R_BOOL, 0),	    RM("No", R_BOOL, 0),
	RM("NO", R_BOOL, 0),	  RM("false", R_BOOL, 0),   RM("False", R_BOOL, 0),
	RM("FALSE", R_BOOL, 0),	  RM("off", R_BOOL, 0),	    RM("Off", R_BOOL, 0),
	RM("OFF", R_BOOL, 0),	  RM("", R_NULL, 0),	    RM("~", R_NULL, 0),
	RM("null", R_NULL, 0),	  RM("Null", R_NULL, 0),    RM("NULL", R_NULL, 0),
	RM(".nan", R_FLOAT, 0),	  RM(".NaN", R_FLOAT, 0),   RM(".NAN", R_FLOAT, 0),
	RM(".inf", R_FLOAT, 1),	  RM(".Inf", R_FLOAT, 1),   RM(".INF", R_FLOAT, 1),
	RM("+.inf", R_FLOAT, 1),  RM("+.Inf", R_FLOAT, 1),  RM("+.INF", R_FLOAT, 1),
	RM("-.inf", R_FLOAT, -1), RM("-.Inf", R_FLOAT, -1), RM("-.INF", R_FLOAT, -1),
#undef RM
};

static bool isdig(char c)
{
	return c >= '0' && c <= '9';
}

/* Go strconv.ParseUint(s, base, 64) for base 0 (prefixes) or 2; s unsigned */
static bool go_parse_uint(const char *s, size_t n, int base, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (n == 0)
		return false;
	if (base == 0) {
		base = 10;
		if (s[0] == '0') {
			if (n >= 3 && (s[1] == 'x' || s[1] == 'X')) {
				base = 16;
				i = 2;
			} else if (n >= 3 && (s[1] == 'o' || s[1] == 'O')) {
				base = 8;
				i = 2;
			} else if (n >= 3 && (s[1] == 'b' || s[1] == 'B')) {
				base = 2;
				i = 2;
			} else {
				base = 8;
				i = 1;
			}
		}
	}
	if (i == n && !(i == 1 && base == 8))
		return false;
	for (; i < n; i++) {
		int d;
		char c = s[i];
		if (isdig(c))
			d = c - '0';
		else if (c >= 'a' && c <= 'z')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'Z')
			d = c - 'A' + 10;
		else
			return false;
		if (d >= base)
			return false;
		if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
			return false;
		v = v * (uint64_t)base + (uint64_t)d;
	}
	*out = v;
	return true;
}

/* Go strconv.ParseInt(s, base, 64) */
static bool go_parse_int(const char *s, size_t n, int base, int64_t *out)
{
	bool neg = false;
	uint64_t u;

	if (n && (s[0] == '+' || s[0] == '-')) {
		neg = s[0] == '-';
		s++;
		n--;
	}
	if (!go_parse_uint(s, n, base, &u))
		return false;
	if (neg) {
		if (u > (uint64_t)INT64_MAX + 1)
			return false;
		*out = (int64_t)(0 - u);
	} else {
		if (u > (uint64_t)INT64_MAX)
			return false;
		*out = (int64_t)u;
	}
	return true;
}

/* ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$ */
static bool yaml_style_float(const char *s, size_t n)
{
	size_t i = 0;

	if (i < n && (s[i] == '+' || s[i] == '-'))
		i++;
	if (i < n && s[i] == '.') {
		i++;
		size_t st = i;
		while (i < n && isdig(s[i]))
			i++;
		if (i == st)
			return false;
	} else {
		size_t st = i;
		while (i < n && isdig(s[i]))
			i++;
		if (i == st)
			return false;
		if (i < n && s[i] == '.') {
			i++;
			while (i < n && isdig(s[i]))
				i++;
		}
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		size_t st = i;
		while (i < n && isdig(s[i]))
			i++;
		if (i == st)
			return false;
	}
	return i == n;
}

/* ^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$ */
static bool is_base60_float(const char *s, size_t n)
{
	size_t i = 0;
	int groups = 0;

	if (!n || !memchr(s, ':', n))
		return false;
	if (s[i] == '+' || s[i] == '-')
		i++;
	if (i >= n || !isdig(s[i]))
		return false;
	i++;
	while (i < n && (isdig(s[i]) || s[i] == '_'))
		i++;
	while (i < n && s[i] == ':') {
		i++;
		/* [0-5]?[0-9] */
		if (i + 1 < n && s[i] >= '0' && s[i] <= '5' && isdig(s[i + 1]))
			i += 2;
		else if (i < n && isdig(s[i]))
			i++;
		else
			return false;
		groups++;
	}
	if (!groups)
		return false;
	if (i < n && s[i] == '.') {
		i++;
		while (i < n && (isdig(s[i]) || s[i] == '_'))
			i++;
	}
	return i == n;
}

/* 1 or 2 digits (Go's non-padded layout elements) */
static bool getnum12(const char *s, size_t n, size_t *i, int *v)
{
	if (*i >= n || !isdig(s[*i]))
		return false;
	*v = s[(*i)++] - '0';
	if (*i < n && isdig(s[*i]))
		*v = *v * 10 + (s[(*i)++] - '0');
	return true;
}

static int days_in(int y, int m)
{
	static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return d[m - 1];
}

/* go-yaml v2 parseTimestamp: the layouts "2006-1-2T15:4:5.999999999Z07:00",
 * the same with 't', "2006-1-2 15:4:5.999999999" and "2006-1-2" */
static bool parse_timestamp(const char *s, size_t n)
{
	size_t i = 0;
	int y, mo, d, h, mi, se;

	for (i = 0; i < n && isdig(s[i]); i++)
		;
	if (i != 4 || i == n || s[i] != '-')
		return false;
	y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
	i++;
	if (!getnum12(s, n, &i, &mo) || i >= n || s[i] != '-' || mo < 1 || mo > 12)
		return false;
	i++;
	if (!getnum12(s, n, &i, &d) || d < 1 || d > days_in(y, mo))
		return false;
	if (i == n)
		return true; /* date only */
	char sep = s[i];
	if (sep != 'T' && sep != 't' && sep != ' ')
		return false;
	i++;
	if (!getnum12(s, n, &i, &h) || i >= n || s[i] != ':' || h > 23)
		return false;
	i++;
	if (!getnum12(s, n, &i, &mi) || i >= n || s[i] != ':' || mi > 59)
		return false;
	i++;
	if (!getnum12(s, n, &i, &se) || se > 59)
		return false;
	if (i < n && s[i] == '.' && i + 1 < n && isdig(s[i + 1])) {
		i++;
		while (i < n && isdig(s[i]))
			i++;
	}
	if (sep == ' ')
		return i == n;
	if (i < n && s[i] == 'Z')
		return i + 1 == n;
	if (i < n && (s[i] == '+' || s[i] == '-')) {
		/* -07:00 */
		if (n - i != 6 || !isdig(s[i + 1]) || !isdig(s[i + 2]) || s[i + 3] != ':' ||
		    !isdig(s[i + 4]) || !isdig(s[i + 5]))
			return false;
		return true;
	}
	return false;
}

/* The class of a scalar's first byte, as go-yaml's resolve table has it: 'S'
 * sign, 'D' digit, 'M' the first letter of a word in resolve_map, '.' a dot,
 * 0 nothing that can resolve to other than a string. A table: this runs for
 * every scalar of every rendering. */
static char resolve_hint(uint8_t c)
{
	static const char hints[256] = {
		['+'] = 'S', ['-'] = 'S', ['.'] = '.', ['0' ... '9'] = 'D', ['y'] = 'M',
		['Y'] = 'M', ['n'] = 'M', ['N'] = 'M', ['t'] = 'M',	    ['T'] = 'M',
		['f'] = 'M', ['F'] = 'M', ['o'] = 'M', ['O'] = 'M',	    ['~'] = 'M',
	};
	return hints[c];
}

static void resolve(const char *s, size_t n, struct resolved *r)
{
	char hint;
	char plain[128];
	size_t pn = 0;

	memset(r, 0, sizeof(*r));
	r->tag = R_STR;
	hint = n == 0 ? 'N' : resolve_hint((uint8_t)s[0]);
	if (!hint)
		return;
	/* the table's words are at most 5 bytes long, and none starts with a digit */
	for (size_t i = 0;
	     n <= 5 && hint != 'D' && i < sizeof(resolve_map) / sizeof(resolve_map[0]); i++) {
		if (resolve_map[i].len == n && (n == 0 || resolve_map[i].s[0] == s[0]) &&
		    memcmp(resolve_map[i].s, s, n) == 0) {
			r->tag = resolve_map[i].tag;
			r->b = resolve_map[i].val;
			if (r->tag == R_FLOAT)
				r->f = resolve_map[i].val == 0
					       ? (double)NAN
					       : resolve_map[i].val * (double)INFINITY;
			return;
		}
	}
	if (hint == 'M' || hint == 'N')
		return;
	if (n >= sizeof(plain))
		goto try_float_long;
	if (hint == '.') {
		char *end;
		memcpy(plain, s, n);
		plain[n] = 0;
		/* Go's ParseFloat: decimal (or hex) float syntax, no underscores here */
		if (yaml_style_float(plain, n)) {
			r->f = strtod(plain, &end);
			r->tag = R_FLOAT;
		}
		return;
	}
	if (parse_timestamp(s, n)) {
		r->tag = R_TIMESTAMP;
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (s[i] != '_')
			plain[pn++] = s[i];
	plain[pn] = 0;
	if (go_parse_int(plain, pn, 0, &r->i)) {
		r->tag = R_INT;
		return;
	}
	if (plain[0] != '-' &&
	    go_parse_uint(plain[0] == '+' ? plain + 1 : plain, pn - (plain[0] == '+'), 0, &r->u)) {
		r->tag = R_INT;
		r->is_uint = true;
		return;
	}
	if (yaml_style_float(plain, pn)) {
		r->f = strtod(plain, NULL);
		r->tag = R_FLOAT;
		return;
	}
	if (pn > 2 && plain[0] == '0' && plain[1] == 'b') {
		if (go_parse_int(plain + 2, pn - 2, 2, &r->i)) {
			r->tag = R_INT;
		} else if (go_parse_uint(plain + 2, pn - 2, 2, &r->u)) {
			r->tag = R_INT;
			r->is_uint = true;
		}
	} else if (pn > 3 && plain[0] == '-' && plain[1] == '0' && plain[2] == 'b') {
		plain[2] = '-';
		if (go_parse_int(plain + 2, pn - 2, 2, &r->i))
			r->tag = R_INT;
	}
	return;
try_float_long:
	/* very long scalars: only a plain decimal float could still match */
	if ((hint == 'D' || hint == 'S' || hint == '.') && yaml_style_float(s, n) &&
	    !memchr(s, '_', n)) {
		char *tmp = strndup(s, n);
		if (tmp) {
			r->f = strtod(tmp, NULL);
			r->tag = R_FLOAT;
			free(tmp);
		}
	}
}

/* the decimal text of an R_INT */
static void fmt_int(char *out, size_t n, const struct resolved *r)
{
	if (r->is_uint)
		snprintf(out, n, "%llu", (unsigned long long)r->u);
	else
		snprintf(out, n, "%lld", (long long)r->i);
}

/* ---- output ---- */

static locale_t utf8_loc;
static pthread_once_t utf8_loc_once = PTHREAD_ONCE_INIT;

static void utf8_loc_init(void)
{
	/* process-wide and never freed: a locale object, not per-call state */
	utf8_loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

static locale_t utf8_locale(void)
{
	pthread_once(&utf8_loc_once, utf8_loc_init);
	return utf8_loc;
}

static bool go_is_letter(uint32_t r)
{
	if (r < 0x80)
		return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
	locale_t l = utf8_locale();
	return l ? iswalpha_l((wint_t)r, l) != 0 : true;
}

static bool go_is_digit(uint32_t r)
{
	return r >= '0' && r <= '9';
}

static size_t to_runes(const char *s, size_t n, uint32_t *out)
{
	size_t k = 0;
	const uint8_t *u = (const uint8_t *)s;

	for (size_t i = 0; i < n;) {
		uint8_t c = u[i];
		uint32_t cp = 0xfffd;
		size_t l = 1;
		if (c < 0x80) {
			cp = c;
		} else if ((c & 0xe0) == 0xc0 && i + 1 < n) {
			cp = (uint32_t)(c & 0x1f) << 6 | (u[i + 1] & 0x3f);
			l = 2;
		} else if ((c & 0xf0) == 0xe0 && i + 2 < n) {
			cp = (uint32_t)(c & 0x0f) << 12 | (uint32_t)(u[i + 1] & 0x3f) << 6 |
			     (u[i + 2] & 0x3f);
			l = 3;
		} else if ((c & 0xf8) == 0xf0 && i + 3 < n) {
			cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(u[i + 1] & 0x3f) << 12 |
			     (uint32_t)(u[i + 2] & 0x3f) << 6 | (u[i + 3] & 0x3f);
			l = 4;
		}
		out[k++] = cp;
		i += l;
	}
	return k;
}

static bool all_ascii(const char *s, size_t n)
{
	const uint8_t *u = (const uint8_t *)s;

	for (size_t i = 0; i < n; i++)
		if (u[i] >= 0x80)
			return false;
	return true;
}

/* A key's runes as go-yaml's keyList.Less reads them: the bytes themselves when the key is
 * all ASCII (decoding into rune arrays was a tenth of the renderer's time), else decoded. */
struct runes {
	const uint8_t *b; /* ASCII: rune i is b[i] */
	const uint32_t *r;
	size_t n;
};

static uint32_t rune_at(const struct runes *s, size_t i)
{
	return s->b ? s->b[i] : s->r[i];
}

/* go-yaml v2 keyList.Less */
static bool runes_less(const struct runes *a, const struct runes *b)
{
	size_t na = a->n, nb = b->n;

	for (size_t i = 0; i < na && i < nb; i++) {
		uint32_t x = rune_at(a, i), y = rune_at(b, i);
		if (x == y)
			continue;
		bool al = go_is_letter(x), bl = go_is_letter(y);
		if (al && bl)
			return x < y;
		if (al || bl)
			return bl;
		size_t ai, bi;
		int64_t an = 0, bn = 0;
		if (x == '0' || y == '0') {
			for (size_t j = i; j-- > 0 && go_is_digit(rune_at(a, j));) {
				if (rune_at(a, j) != '0') {
					an = 1;
					bn = 1;
					break;
				}
			}
		}
		for (ai = i; ai < na && go_is_digit(rune_at(a, ai)); ai++)
			an = (int64_t)((uint64_t)an * 10 + (rune_at(a, ai) - '0'));
		for (bi = i; bi < nb && go_is_digit(rune_at(b, bi)); bi++)
			bn = (int64_t)((uint64_t)bn * 10 + (rune_at(b, bi) - '0'));
		if (an != bn)
			return an < bn;
		if (ai != bi)
			return ai < bi;
		return x < y;
	}
	return na < nb;
}

/* go-yaml v2 keyList.Less for two string keys */
static bool key_less(const char *a, size_t an, const char *b, size_t bn)
{
	if (all_ascii(a, an) && all_ascii(b, bn)) {
		struct runes x = {.b = (const uint8_t *)a, .n = an};
		struct runes y = {.b = (const uint8_t *)b, .n = bn};
		return runes_less(&x, &y);
	}
	uint32_t sa[64], sb[64];
	uint32_t *ar = an <= 64 ? sa : malloc(an * sizeof(uint32_t));
	uint32_t *br = bn <= 64 ? sb : malloc(bn * sizeof(uint32_t));
	bool res;

	if (!ar || !br) {
		/* fall back to bytewise order */
		size_t l = an < bn ? an : bn;
		int c = memcmp(a, b, l);
		res = c < 0 || (c == 0 && an < bn);
	} else {
		struct runes x = {.r = ar, .n = to_runes(a, an, ar)};
		struct runes y = {.r = br, .n = to_runes(b, bn, br)};
		res = runes_less(&x, &y);
	}
	if (ar != sa)
		free(ar);
	if (br != sb)
		free(br);
	return res;
}

static int cmp_keyref(const void *x, const void *y)
{
	const struct k8s_ykey *a = x, *b = y;

	if (key_less(a->k, a->len, b->k, b->len))
		return -1;
	if (key_less(b->k, b->len, a->k, a->len))
		return 1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Without digits, key_less compares ASCII keys at their first difference, non-letters
 * (by byte) before letters (by byte), a prefix first: a total order, so every stable sort
 * gives qsort's result. With digits it compares numbers, which is not always transitive;
 * then only the same qsort and comparator give the same order. */
static uint16_t rank(uint8_t c)
{
	return go_is_letter(c) ? 0x100 | c : c;
}

static int cmp_nodigit(const struct k8s_ykey *a, const struct k8s_ykey *b)
{
	size_t n = a->len < b->len ? a->len : b->len;

	for (size_t i = 0; i < n; i++) {
		uint8_t x = (uint8_t)a->k[i], y = (uint8_t)b->k[i];
		if (x != y)
			return rank(x) < rank(y) ? -1 : 1;
	}
	return a->len < b->len ? -1 : a->len > b->len;
}

static bool ascii_no_digit(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)s[i] >= 0x80 || isdig(s[i]))
			return false;
	return true;
}

#define INSERTION_SORT_MAX 64

static void sort_keys(struct k8s_ykey *keys, size_t n, bool simple)
{
	if (!simple) {
		qsort(keys, n, sizeof(*keys), cmp_keyref);
		return;
	}
	/* stable insertion sort; struct members mostly come in few runs */
	for (size_t i = 1; i < n; i++) {
		struct k8s_ykey k = keys[i];
		size_t j = i;
		while (j > 0 && cmp_nodigit(&k, &keys[j - 1]) < 0) {
			keys[j] = keys[j - 1];
			j--;
		}
		keys[j] = k;
	}
}

/*
 * An object whose keys are all static text (a message's fields by their
 * schema names) sorts the same way whenever the same fields are present:
 * a thread keeps the orders of its recent ones, by the keys' addresses.
 * Sorting was a sixteenth of a Pod's YAML.
 */
#define SORT_MEMO_BITS 6
#define SORT_MEMO_KEYS 32

struct sort_memo {
	size_t n;
	const char *k[SORT_MEMO_KEYS];
	uint8_t order[SORT_MEMO_KEYS];
};

static __thread struct sort_memo sort_memo[1 << SORT_MEMO_BITS];

static struct sort_memo *sort_memo_slot(const struct jval *obj)
{
	uint64_t h = obj->n;

	if (obj->n == 0 || obj->n > SORT_MEMO_KEYS)
		return NULL;
	for (size_t i = 0; i < obj->n; i++) {
		if (obj->kown[i])
			return NULL;
		h = (h ^ (uintptr_t)obj->k[i]) * 0x100000001B3u;
	}
	return &sort_memo[k8s_slot(h, SORT_MEMO_BITS)];
}

void k8s_yaml_sort_keys(const struct jval *obj, struct k8s_ykey *keys)
{
	struct sort_memo *m = sort_memo_slot(obj);
	bool simple = obj->n <= INSERTION_SORT_MAX;

	if (m && m->n == obj->n && !memcmp(m->k, obj->k, obj->n * sizeof(obj->k[0]))) {
		for (size_t i = 0; i < obj->n; i++) {
			size_t o = m->order[i];
			keys[i] = (struct k8s_ykey){obj->k[o], obj->klen[o], o, true};
		}
		return;
	}
	for (size_t i = 0; i < obj->n; i++) {
		keys[i] = (struct k8s_ykey){obj->k[i], obj->klen[i], i, !obj->kown[i]};
		simple = simple && ascii_no_digit(obj->k[i], obj->klen[i]);
	}
	sort_keys(keys, obj->n, simple);
	if (!m)
		return;
	m->n = obj->n;
	memcpy(m->k, obj->k, obj->n * sizeof(obj->k[0]));
	for (size_t i = 0; i < obj->n; i++)
		m->order[i] = (uint8_t)keys[i].idx;
}

/* line breaks other than \n: YAML parsers normalize them inside block and
 * single-quoted scalars, so only double quotes (which escape them) keep them */
static bool has_odd_break(const char *s, size_t n)
{
	const uint8_t *u = (const uint8_t *)s;

	for (size_t i = 0; i < n; i++) {
		if (u[i] == '\r')
			return true;
		if (u[i] == 0xc2 && i + 1 < n && u[i + 1] == 0x85)
			return true;
		if (u[i] == 0xe2 && i + 2 < n && u[i + 1] == 0x80 &&
		    (u[i + 2] == 0xa8 || u[i + 2] == 0xa9))
			return true;
	}
	return false;
}

enum k8s_ystyle k8s_yaml_style_line(const char *s, size_t n, bool key)
{
	struct resolved r;

	if (key && n == 2 && !memcmp(s, "<<", 2))
		return K8S_Y_DOUBLE; /* lossless where go-yaml is not */
	resolve(s, n, &r);
	return r.tag == R_STR && !is_base60_float(s, n) ? K8S_Y_PLAIN : K8S_Y_DOUBLE;
}

enum k8s_ystyle k8s_yaml_style(const char *s, size_t n, bool key)
{
	if (has_odd_break(s, n))
		return K8S_Y_DOUBLE; /* lossless where go-yaml is not */
	if (memchr(s, '\n', n))
		return K8S_Y_LITERAL;
	return k8s_yaml_style_line(s, n, key);
}

/* A decimal int that go-yaml prints back as it is (no sign but '-', no
 * leading zero, no "-0", at most 18 digits: within int64): most numbers of
 * a view, which its protobuf walk wrote so, spared resolve and snprintf. */
static bool canonical_int(const char *s, size_t n)
{
	size_t i = n && s[0] == '-';

	if (n - i == 0 || n - i > 18 || (s[i] == '0' && (n - i > 1 || i)))
		return false;
	for (; i < n; i++)
		if (!isdig(s[i]))
			return false;
	return true;
}

int k8s_yaml_number(const struct jval *v, char *out, size_t n)
{
	struct resolved r;

	if (v->len < n && canonical_int(v->s, v->len)) {
		memcpy(out, v->s, v->len);
		out[v->len] = 0;
		return (int)v->len;
	}
	resolve(v->s, v->len, &r);
	switch (r.tag) {
	case R_INT:
		fmt_int(out, n, &r);
		break;
	case R_FLOAT:
		k8s_fmt_go_g(out, n, r.f);
		if (!strcmp(out, "+Inf"))
			snprintf(out, n, ".inf");
		else if (!strcmp(out, "-Inf"))
			snprintf(out, n, "-.inf");
		else if (!strcmp(out, "NaN"))
			snprintf(out, n, ".nan");
		break;
	default:
		/* not a number YAML knows: go-yaml would keep it as a string */
		return -1;
	}
	return (int)strlen(out);
}

/* The first emitter, through libyaml's event API: kept for the differential test
 * (tests/unit/k8s/test_k8s_render.c) that proves k8s_emit.c prints the same bytes. */
struct yw {
	yaml_emitter_t em;
	struct buf *out;
	char **err;
	int depth;
};

static int write_handler(void *data, unsigned char *buffer, size_t size)
{
	k8s_buf_add(data, buffer, size);
	return !((struct buf *)data)->oom;
}

static int emit(struct yw *w, yaml_event_t *ev)
{
	if (!yaml_emitter_emit(&w->em, ev)) {
		if (w->err && !*w->err)
			*w->err = k8s_strdup_printf("YAML emitter: %s",
						    w->em.problem ? w->em.problem : "error");
		return -EINVAL;
	}
	return 0;
}

static int emit_scalar(struct yw *w, const char *s, size_t n, yaml_scalar_style_t style)
{
	yaml_event_t ev;

	if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)n, 1, 1, style))
		return -ENOMEM;
	return emit(w, &ev);
}

static int emit_string(struct yw *w, const char *s0, size_t n0, bool key)
{
	static const yaml_scalar_style_t styles[] = {
		[K8S_Y_PLAIN] = YAML_PLAIN_SCALAR_STYLE,
		[K8S_Y_DOUBLE] = YAML_DOUBLE_QUOTED_SCALAR_STYLE,
		[K8S_Y_LITERAL] = YAML_LITERAL_SCALAR_STYLE,
	};
	struct buf sb;
	size_t n;
	char *s;
	int ret;

	/* Go's JSON round trip turns invalid UTF-8 into U+FFFD; do the same */
	k8s_buf_init(&sb);
	if (k8s_utf8_valid(s0, n0)) {
		s = (char *)s0;
		n = n0;
	} else {
		k8s_utf8_sanitize(&sb, s0, n0);
		if (k8s_buf_finish(&sb, &s, &n))
			return -ENOMEM;
	}
	ret = emit_scalar(w, s, n, styles[k8s_yaml_style(s, n, key)]);
	if (s != s0)
		free(s);
	return ret;
}

static int emit_number(struct yw *w, const struct jval *v)
{
	char tmp[64];
	int n = k8s_yaml_number(v, tmp, sizeof(tmp));

	if (n < 0)
		return emit_string(w, v->s, v->len, false);
	return emit_scalar(w, tmp, (size_t)n, YAML_PLAIN_SCALAR_STYLE);
}

static int emit_node(struct yw *w, const struct jval *v)
{
	yaml_event_t ev;
	int r = 0;

	if (++w->depth > K8S_YAML_MAX_DEPTH) {
		if (w->err && !*w->err)
			*w->err = k8s_strdup_printf("value nested too deeply for YAML");
		return -EINVAL;
	}
	switch (v->t) {
	case J_NULL:
		r = emit_scalar(w, "null", 4, YAML_PLAIN_SCALAR_STYLE);
		break;
	case J_BOOL:
		r = v->b ? emit_scalar(w, "true", 4, YAML_PLAIN_SCALAR_STYLE)
			 : emit_scalar(w, "false", 5, YAML_PLAIN_SCALAR_STYLE);
		break;
	case J_NUM:
		r = emit_number(w, v);
		break;
	case J_STR:
		r = emit_string(w, v->s, v->len, false);
		break;
	case J_ARR:
		if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
							  YAML_BLOCK_SEQUENCE_STYLE))
			return -ENOMEM;
		if ((r = emit(w, &ev)))
			break;
		for (size_t i = 0; i < v->n && !r; i++)
			r = emit_node(w, v->v[i]);
		if (r)
			break;
		yaml_sequence_end_event_initialize(&ev);
		r = emit(w, &ev);
		break;
	case J_OBJ: {
		struct k8s_ykey *keys = calloc(v->n ? v->n : 1, sizeof(*keys));
		if (!keys)
			return -ENOMEM;
		k8s_yaml_sort_keys(v, keys);
		if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
							 YAML_BLOCK_MAPPING_STYLE)) {
			free(keys);
			return -ENOMEM;
		}
		r = emit(w, &ev);
		for (size_t i = 0; i < v->n && !r; i++) {
			r = emit_string(w, keys[i].k, keys[i].len, true);
			if (!r)
				r = emit_node(w, v->v[keys[i].idx]);
		}
		free(keys);
		if (r)
			break;
		yaml_mapping_end_event_initialize(&ev);
		r = emit(w, &ev);
		break;
	}
	}
	w->depth--;
	return r;
}

int k8s_yaml_write_libyaml(struct buf *b, const struct jval *v, char **err)
{
	struct yw w = {.out = b, .err = err};
	yaml_event_t ev;
	int r;

	if (!yaml_emitter_initialize(&w.em))
		return -ENOMEM;
	yaml_emitter_set_output(&w.em, write_handler, b);
	yaml_emitter_set_unicode(&w.em, 1);
	yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
	if ((r = emit(&w, &ev)))
		goto out;
	yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
	if ((r = emit(&w, &ev)))
		goto out;
	if ((r = emit_node(&w, v)))
		goto out;
	yaml_document_end_event_initialize(&ev, 1);
	if ((r = emit(&w, &ev)))
		goto out;
	/* go-yaml clears open_ended before the stream end: no "..." marker */
	w.em.open_ended = 0;
	yaml_stream_end_event_initialize(&ev);
	r = emit(&w, &ev);
	if (!r && !yaml_emitter_flush(&w.em))
		r = -EIO;
out:
	yaml_emitter_delete(&w.em);
	if (!r && b->oom)
		r = -ENOMEM;
	return r;
}

/* ---- input ---- */

#define YAML_MAX_DEPTH 2000
#define YAML_MAX_ALIAS_NODES 1000000

struct anchor {
	char *name;
	struct jval *v; /* borrowed: lives in the tree being built */
};

struct yp {
	yaml_parser_t p;
	char **err;
	struct anchor *anchors;
	size_t n_anchors, cap_anchors;
	size_t alias_nodes;
};

static int yperr(struct yp *y, int line, const char *what, const char *detail)
{
	if (y->err && !*y->err) {
		if (detail)
			*y->err = k8s_strdup_printf("invalid YAML at line %d: %s \"%s\"", line,
						    what, detail);
		else
			*y->err = k8s_strdup_printf("invalid YAML at line %d: %s", line, what);
	}
	return -EINVAL;
}

static int next_event(struct yp *y, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&y->p, ev)) {
		if (y->err && !*y->err)
			*y->err = k8s_strdup_printf(
				"invalid YAML at line %zu: %s%s%s", y->p.problem_mark.line + 1,
				y->p.problem ? y->p.problem : "error", y->p.context ? " " : "",
				y->p.context ? y->p.context : "");
		return -EINVAL;
	}
	return 0;
}

static int add_anchor(struct yp *y, const yaml_char_t *name, struct jval *v)
{
	if (!name)
		return 0;
	if (y->n_anchors == y->cap_anchors) {
		size_t cap = y->cap_anchors ? y->cap_anchors * 2 : 8;
		struct anchor *a = realloc(y->anchors, cap * sizeof(*a));
		if (!a)
			return -ENOMEM;
		y->anchors = a;
		y->cap_anchors = cap;
	}
	y->anchors[y->n_anchors].name = strdup((const char *)name);
	if (!y->anchors[y->n_anchors].name)
		return -ENOMEM;
	y->anchors[y->n_anchors++].v = v;
	return 0;
}

static size_t count_nodes(const struct jval *v)
{
	size_t n = 1;
	for (size_t i = 0; i < v->n; i++)
		n += count_nodes(v->v[i]);
	return n;
}

/* scalar event -> value, as go-yaml + sigs.k8s.io/yaml YAMLToJSON would */
static int scalar_value2(struct yp *y, yaml_event_t *ev, struct jval **out);

static int scalar_value(struct yp *y, yaml_event_t *ev, struct jval **out)
{
	int r = scalar_value2(y, ev, out);

	if (!r)
		(*out)->line = (int)ev->start_mark.line + 1;
	return r;
}

static int scalar_value2(struct yp *y, yaml_event_t *ev, struct jval **out)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t n = ev->data.scalar.length;
	const char *tag = (const char *)ev->data.scalar.tag;
	int line = (int)ev->start_mark.line + 1;
	struct resolved r;
	char tmp[64];

	if (tag && (!strcmp(tag, "tag:yaml.org,2002:str") || !strcmp(tag, "!!str") ||
		    !strcmp(tag, "tag:yaml.org,2002:binary"))) {
		*out = k8s_jv_str(s, n);
		return *out ? 0 : -ENOMEM;
	}
	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE && !tag) {
		*out = k8s_jv_str(s, n);
		return *out ? 0 : -ENOMEM;
	}
	resolve(s, n, &r);
	switch (r.tag) {
	case R_NULL:
		*out = k8s_jv_new(J_NULL);
		break;
	case R_BOOL:
		*out = k8s_jv_bool(r.b);
		break;
	case R_INT:
		fmt_int(tmp, sizeof(tmp), &r);
		*out = k8s_jv_num(tmp);
		break;
	case R_FLOAT:
		if (r.f != r.f || r.f - r.f != 0)
			return yperr(y, line, "NaN and infinity cannot be represented in JSON", s);
		k8s_fmt_json_float(tmp, sizeof(tmp), r.f);
		*out = k8s_jv_num(tmp);
		break;
	default: /* strings and timestamps (kept as their text) */
		*out = k8s_jv_str(s, n);
		break;
	}
	if (*out)
		(*out)->line = line;
	return *out ? 0 : -ENOMEM;
}

/* mapping keys become strings as sigs.k8s.io/yaml does */
static int key_text(struct yp *y, yaml_event_t *ev, struct buf *key)
{
	struct jval *v = NULL;
	int r = scalar_value(y, ev, &v);

	if (r)
		return r;
	size_t n;
	const char *t = k8s_jv_scalar_text(v, &n);
	k8s_buf_add(key, t, n);
	k8s_jv_free(v);
	return key->oom ? -ENOMEM : 0;
}

static int parse_node(struct yp *y, yaml_event_t *ev, struct jval **out, int depth)
{
	int line = (int)ev->start_mark.line + 1;
	struct jval *v = NULL;
	int r;

	*out = NULL;
	if (depth > YAML_MAX_DEPTH)
		return yperr(y, line, "nesting too deep", NULL);
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		r = scalar_value(y, ev, &v);
		if (r)
			return r;
		if ((r = add_anchor(y, ev->data.scalar.anchor, v))) {
			k8s_jv_free(v);
			return r;
		}
		*out = v;
		return 0;
	case YAML_ALIAS_EVENT:
		for (size_t i = y->n_anchors; i-- > 0;) {
			if (!strcmp(y->anchors[i].name, (const char *)ev->data.alias.anchor)) {
				y->alias_nodes += count_nodes(y->anchors[i].v);
				if (y->alias_nodes > YAML_MAX_ALIAS_NODES)
					return yperr(y, line, "too many alias expansions", NULL);
				*out = k8s_jv_dup(y->anchors[i].v);
				if (*out)
					(*out)->line = line;
				return *out ? 0 : -ENOMEM;
			}
		}
		return yperr(y, line, "unknown alias", (const char *)ev->data.alias.anchor);
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT: {
		bool map = ev->type == YAML_MAPPING_START_EVENT;
		const yaml_char_t *anchor =
			map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
		v = k8s_jv_new(map ? J_OBJ : J_ARR);
		if (!v)
			return -ENOMEM;
		v->line = line;
		if ((r = add_anchor(y, anchor, v)))
			goto fail;
		for (;;) {
			yaml_event_t kev, vev;
			struct jval *item = NULL;
			struct buf key;

			if ((r = next_event(y, &kev)))
				goto fail;
			if (kev.type == (map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT)) {
				yaml_event_delete(&kev);
				size_t dup;
				if (map && k8s_jv_dup_key(v, &dup)) {
					r = yperr(y, v->v[dup]->line, "duplicate key", v->k[dup]);
					goto fail;
				}
				break;
			}
			if (!map) {
				r = parse_node(y, &kev, &item, depth + 1);
				yaml_event_delete(&kev);
				if (r || (r = k8s_jv_push(v, item)))
					goto fail;
				continue;
			}
			int kline = (int)kev.start_mark.line + 1;
			if (kev.type != YAML_SCALAR_EVENT) {
				yaml_event_delete(&kev);
				r = yperr(y, kline, "mapping keys must be scalars", NULL);
				goto fail;
			}
			k8s_buf_init(&key);
			r = key_text(y, &kev, &key);
			if (!r && kev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
			    key.len == 2 && !memcmp(key.data, "<<", 2))
				r = yperr(y, kline, "merge keys (<<) are not supported", NULL);
			yaml_event_delete(&kev);
			if (r) {
				k8s_buf_free(&key);
				goto fail;
			}
			const char *kd = key.data ? (const char *)key.data : "";
			if ((r = next_event(y, &vev))) {
				k8s_buf_free(&key);
				goto fail;
			}
			r = parse_node(y, &vev, &item, depth + 1);
			yaml_event_delete(&vev);
			if (!r)
				r = k8s_jv_set(v, kd, key.len, item);
			k8s_buf_free(&key);
			if (r)
				goto fail;
		}
		*out = v;
		return 0;
	}
	default:
		return yperr(y, line, "unexpected YAML event", NULL);
	}
fail:
	/* anchors may still point into v; any failure aborts the whole parse,
	 * so they are never used again */
	k8s_jv_free(v);
	return r;
}

int k8s_yaml_parse(const char *text, size_t len, struct jval **out, char **err)
{
	struct yp y = {.err = err};
	yaml_event_t ev;
	struct jval *v = NULL;
	int r;
	bool done = false;

	*out = NULL;
	if (!yaml_parser_initialize(&y.p))
		return -ENOMEM;
	yaml_parser_set_input_string(&y.p, (const unsigned char *)text, len);
	while (!done) {
		if ((r = next_event(&y, &ev)))
			goto out;
		switch (ev.type) {
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (v) {
				r = yperr(&y, (int)ev.start_mark.line + 1,
					  "only one YAML document is allowed", NULL);
				yaml_event_delete(&ev);
				goto out;
			}
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			r = parse_node(&y, &ev, &v, 0);
			if (r) {
				yaml_event_delete(&ev);
				goto out;
			}
		}
		yaml_event_delete(&ev);
	}
	if (!v) {
		r = yperr(&y, 1, "empty document", NULL);
		goto out;
	}
	*out = v;
	v = NULL;
	r = 0;
out:
	k8s_jv_free(v);
	for (size_t i = 0; i < y.n_anchors; i++)
		free(y.anchors[i].name);
	free(y.anchors);
	yaml_parser_delete(&y.p);
	return r;
}
