/* k8s_emit.c: jval -> YAML text as `kubectl get -o yaml` prints it, written straight
 * into the output buffer.
 *
 * kubectl's YAML comes from go-yaml v2, whose emitter is a port of libyaml's. The
 * codec used libyaml's event emitter for the same reason, but an event per scalar
 * (a copy of every string, a queue, a state machine) cost more than the rest of the
 * decode. This file writes what that emitter writes for the only events the codec
 * sends: block mappings and sequences (an empty one in flow style, "{}" or "[]"),
 * scalars asking for the plain, double-quoted or literal style, no tags or anchors,
 * best indent 2, best width 80, unicode output, one implicit document. It keeps the
 * emitter's state (indent, column in characters, the whitespace and indention flags)
 * and follows the same rules for the final style of a scalar, simple keys (one line,
 * at most 128 bytes, else "? key"), line folding, escapes and block scalar
 * indicators. tests/unit/k8s/test_k8s_render.c compares it with libyaml's emitter
 * (k8s_yaml_write_libyaml) byte for byte. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_emit.h"

#define BEST_INDENT 2
#define BEST_WIDTH 80
#define SIMPLE_KEY_MAX 128

struct em {
	struct buf *b;
	int indent; /* -1 before the root collection */
	int column; /* in characters */
	bool whitespace, indention;
	int depth;
	char **err;
};

/* what libyaml's scalar analysis allows for a value */
struct sallow {
	bool multiline, block_plain, single, block;
	bool ascii; /* every byte below 0x80: a character per byte */
	bool space; /* holds a space (false only when known to hold none) */
};

enum style { S_PLAIN, S_SINGLE, S_DOUBLE, S_LITERAL };

/* ---- characters (UTF-8 input, which the caller has made valid) ---- */

static size_t cwidth(uint8_t c)
{
	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0)
		return 2;
	if ((c & 0xf0) == 0xe0)
		return 3;
	return (c & 0xf8) == 0xf0 ? 4 : 1;
}

/* byte i of s, 0 past the end (where libyaml reads its string's NUL) */
static uint8_t at(const uint8_t *s, size_t n, size_t i)
{
	return i < n ? s[i] : 0;
}

static bool is_break(const uint8_t *s, size_t n, size_t i)
{
	uint8_t c = at(s, n, i);

	if (c == '\n' || c == '\r')
		return true;
	if (c == 0xc2)
		return at(s, n, i + 1) == 0x85;
	if (c == 0xe2)
		return at(s, n, i + 1) == 0x80 &&
		       (at(s, n, i + 2) == 0xa8 || at(s, n, i + 2) == 0xa9);
	return false;
}

/* blank, break or NUL (the end) */
static bool is_blankz(const uint8_t *s, size_t n, size_t i)
{
	uint8_t c = at(s, n, i);

	return c == ' ' || c == '\t' || c == 0 || is_break(s, n, i);
}

/* printable as is in YAML: \n, 0x20-0x7e, U+00A0-U+D7FF, U+E000-U+FFFD except the
 * BOM; characters beyond U+FFFF count as not printable, as in libyaml */
static bool is_printable(const uint8_t *s, size_t n, size_t i)
{
	uint8_t c = at(s, n, i), c1 = at(s, n, i + 1), c2 = at(s, n, i + 2);

	if (c == 0x0a || (c >= 0x20 && c <= 0x7e))
		return true;
	if (c == 0xc2)
		return c1 >= 0xa0;
	if (c > 0xc2 && c < 0xed)
		return true;
	if (c == 0xed)
		return c1 < 0xa0;
	if (c == 0xee)
		return true;
	if (c == 0xef)
		return !(c1 == 0xbb && c2 == 0xbf) && !(c1 == 0xbf && (c2 == 0xbe || c2 == 0xbf));
	return false;
}

static size_t count_chars(const uint8_t *s, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += (s[i] & 0xc0) != 0x80;
	return k;
}

/* ---- output ---- */

/* Room for n more bytes, or false when they are only to be counted (a
 * counting buffer, k8s_buf_init_count: they are counted here then) or
 * memory ran out. */
static bool room(struct em *e, size_t n)
{
	if (e->b->count_only) {
		e->b->dropped += n;
		return false;
	}
	return e->b->len + n + 1 <= e->b->cap || k8s_buf_reserve(e->b, n);
}

static void put(struct em *e, char c)
{
	if (room(e, 1))
		e->b->data[e->b->len++] = (uint8_t)c;
	e->column++;
}

static void put_break(struct em *e)
{
	if (room(e, 1))
		e->b->data[e->b->len++] = '\n';
	e->column = 0;
}

/* n bytes holding chars characters, none of them a break */
static void put_text(struct em *e, const uint8_t *s, size_t n, size_t chars)
{
	if (room(e, n)) {
		memcpy(e->b->data + e->b->len, s, n);
		e->b->len += n;
	}
	e->column += (int)chars;
}

static void write_indent(struct em *e)
{
	int indent = e->indent >= 0 ? e->indent : 0;

	if (!e->indention || e->column > indent || (e->column == indent && !e->whitespace))
		put_break(e);
	if (e->column < indent) {
		if (room(e, (size_t)(indent - e->column))) {
			memset(e->b->data + e->b->len, ' ', (size_t)(indent - e->column));
			e->b->len += (size_t)(indent - e->column);
		}
		e->column = indent;
	}
	e->whitespace = true;
	e->indention = true;
}

/* the emitter's indicators are all one character here */
static void write_indicator(struct em *e, char ind, bool need_whitespace, bool is_whitespace,
			    bool is_indention)
{
	if (need_whitespace && !e->whitespace)
		put(e, ' ');
	put(e, ind);
	e->whitespace = is_whitespace;
	e->indention = e->indention && is_indention;
}

/* ---- scalars ---- */

/* characters that make a plain scalar impossible at its start */
static bool first_indicator(uint8_t c)
{
	switch (c) {
	case '#':
	case ',':
	case '[':
	case ']':
	case '{':
	case '}':
	case '&':
	case '*':
	case '!':
	case '|':
	case '>':
	case '\'':
	case '"':
	case '%':
	case '@':
	case '`':
		return true;
	default:
		return false;
	}
}

/* analyze() for strings of printable ASCII (0x20-0x7e), most of them: no breaks, no
 * special characters, and blank means a space or the end. False for any other string. */
static bool analyze_ascii(const uint8_t *s, size_t n, struct sallow *a)
{
	/* 1: not printable ASCII, 2: ':' or '#', which need a look at their
	 * neighbours, 3: a space */
	static const uint8_t cls[256] = {
		[0x00 ... 0x1f] = 1, [0x7f ... 0xff] = 1, [':'] = 2, ['#'] = 2, [' '] = 3,
	};
	bool block_ind = false, space = false;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i], k = cls[c];
		if (!k)
			continue;
		if (k == 1)
			return false;
		if (k == 3) {
			space = true;
			continue;
		}
		if ((c == ':' && (i + 1 == n || s[i + 1] == ' ')) ||
		    (c == '#' && i > 0 && s[i - 1] == ' '))
			block_ind = true;
	}
	bool followed_by_ws = n == 1 || s[1] == ' ';
	if (first_indicator(s[0]) || ((s[0] == '?' || s[0] == '-') && followed_by_ws) ||
	    (n >= 3 && ((s[0] == '-' && s[1] == '-' && s[2] == '-') ||
			(s[0] == '.' && s[1] == '.' && s[2] == '.'))))
		block_ind = true;
	bool lead = s[0] == ' ', trail = s[n - 1] == ' ';
	a->multiline = false;
	a->block_plain = !(lead || trail || block_ind);
	a->single = true;
	a->block = !trail;
	a->ascii = true;
	a->space = space;
	return true;
}

/* libyaml's yaml_emitter_analyze_scalar, for the block context (the codec writes no
 * scalar inside a flow collection) */
static void analyze(const uint8_t *s, size_t n, struct sallow *a)
{
	bool block_ind = false, line_breaks = false, special = false;
	bool leading_space = false, leading_break = false, trailing_space = false;
	bool trailing_break = false, break_space = false, space_break = false;
	bool preceded_by_ws = true, followed_by_ws, prev_space = false, prev_break = false;

	if (n == 0) {
		*a = (struct sallow){.block_plain = true, .single = true, .ascii = true};
		return;
	}
	a->space = true; /* not looked for here */
	if ((s[0] == '-' && at(s, n, 1) == '-' && at(s, n, 2) == '-') ||
	    (s[0] == '.' && at(s, n, 1) == '.' && at(s, n, 2) == '.'))
		block_ind = true;
	followed_by_ws = is_blankz(s, n, cwidth(s[0]));
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t w = cwidth(c);
		if (i == 0) {
			if (first_indicator(c))
				block_ind = true;
			if ((c == '?' || c == ':' || c == '-') && followed_by_ws)
				block_ind = true;
		} else if ((c == ':' && followed_by_ws) || (c == '#' && preceded_by_ws)) {
			block_ind = true;
		}
		if (!is_printable(s, n, i))
			special = true;
		bool brk = is_break(s, n, i);
		if (brk)
			line_breaks = true;
		if (c == ' ') {
			leading_space |= i == 0;
			trailing_space |= i + w == n;
			break_space |= prev_break;
			prev_space = true;
			prev_break = false;
		} else if (brk) {
			leading_break |= i == 0;
			trailing_break |= i + w == n;
			space_break |= prev_space;
			prev_space = false;
			prev_break = true;
		} else {
			prev_space = false;
			prev_break = false;
		}
		preceded_by_ws = is_blankz(s, n, i);
		i += w;
		if (i < n)
			followed_by_ws = is_blankz(s, n, i + cwidth(s[i]));
	}
	a->ascii = false;
	a->multiline = line_breaks;
	a->block_plain = !(leading_space || leading_break || trailing_space || trailing_break ||
			   break_space || space_break || special || line_breaks || block_ind);
	a->single = !(break_space || space_break || special);
	a->block = !(trailing_space || space_break || special);
}

/* yaml_emitter_select_scalar_style outside flow collections, for untagged scalars
 * that are implicit in every style */
static enum style select_style(enum k8s_ystyle req, const struct sallow *a, size_t n,
			       bool simple_key)
{
	enum style st = req == K8S_Y_PLAIN ? S_PLAIN : req == K8S_Y_DOUBLE ? S_DOUBLE : S_LITERAL;

	if (simple_key && a->multiline)
		st = S_DOUBLE;
	if (st == S_PLAIN && (!a->block_plain || (n == 0 && simple_key)))
		st = S_SINGLE;
	if (st == S_SINGLE && !a->single)
		st = S_DOUBLE;
	if (st == S_LITERAL && (!a->block || simple_key))
		st = S_DOUBLE;
	return st;
}

/* plain scalars hold no line break (analyze forbids them) */
static void write_plain(struct em *e, const uint8_t *s, size_t n, bool allow_breaks,
			const struct sallow *a)
{
	bool spaces = false, ascii = a->ascii;

	if (!e->whitespace && n)
		put(e, ' ');
	if (!a->space && n) {
		/* one word: nothing to fold (most scalars) */
		put_text(e, s, n, ascii ? n : count_chars(s, n));
		e->whitespace = false;
		e->indention = false;
		return;
	}
	for (size_t i = 0; i < n;) {
		if (s[i] == ' ') {
			if (allow_breaks && !spaces && e->column > BEST_WIDTH &&
			    at(s, n, i + 1) != ' ')
				write_indent(e);
			else
				put(e, ' ');
			i++;
			spaces = true;
			continue;
		}
		const uint8_t *sp = memchr(s + i, ' ', n - i);
		size_t end = sp ? (size_t)(sp - s) : n;
		put_text(e, s + i, end - i, ascii ? end - i : count_chars(s + i, end - i));
		e->indention = false;
		spaces = false;
		i = end;
	}
	e->whitespace = false;
	e->indention = false;
}

/* one break character at s[i]: \n as the emitter's line break, others copied */
static size_t write_break(struct em *e, const uint8_t *s, size_t i)
{
	size_t w = cwidth(s[i]);

	if (s[i] == '\n') {
		put_break(e);
	} else {
		put_text(e, s + i, w, 0);
		e->column = 0;
	}
	return w;
}

static void write_single(struct em *e, const uint8_t *s, size_t n, bool allow_breaks)
{
	bool spaces = false, breaks = false;

	write_indicator(e, '\'', true, false, false);
	for (size_t i = 0; i < n;) {
		if (s[i] == ' ') {
			if (allow_breaks && !spaces && e->column > BEST_WIDTH && i != 0 &&
			    i != n - 1 && at(s, n, i + 1) != ' ')
				write_indent(e);
			else
				put(e, ' ');
			i++;
			spaces = true;
		} else if (is_break(s, n, i)) {
			if (!breaks && s[i] == '\n')
				put_break(e);
			i += write_break(e, s, i);
			e->indention = true;
			breaks = true;
		} else {
			if (breaks)
				write_indent(e);
			if (s[i] == '\'')
				put(e, '\'');
			size_t w = cwidth(s[i]);
			put_text(e, s + i, w, 1);
			i += w;
			e->indention = false;
			spaces = false;
			breaks = false;
		}
	}
	if (breaks)
		write_indent(e);
	write_indicator(e, '\'', false, false, false);
	e->whitespace = false;
	e->indention = false;
}

static void write_escape(struct em *e, uint32_t v)
{
	static const char hex[] = "0123456789ABCDEF";
	char esc = 0;
	int digits;

	put(e, '\\');
	switch (v) {
	case 0x00:
		esc = '0';
		break;
	case 0x07:
		esc = 'a';
		break;
	case 0x08:
		esc = 'b';
		break;
	case 0x09:
		esc = 't';
		break;
	case 0x0a:
		esc = 'n';
		break;
	case 0x0b:
		esc = 'v';
		break;
	case 0x0c:
		esc = 'f';
		break;
	case 0x0d:
		esc = 'r';
		break;
	case 0x1b:
		esc = 'e';
		break;
	case 0x22:
		esc = '"';
		break;
	case 0x5c:
		esc = '\\';
		break;
	case 0x85:
		esc = 'N';
		break;
	case 0xa0:
		esc = '_';
		break;
	case 0x2028:
		esc = 'L';
		break;
	case 0x2029:
		esc = 'P';
		break;
	default:
		break;
	}
	if (esc) {
		put(e, esc);
		return;
	}
	if (v <= 0xff) {
		put(e, 'x');
		digits = 2;
	} else if (v <= 0xffff) {
		put(e, 'u');
		digits = 4;
	} else {
		put(e, 'U');
		digits = 8;
	}
	for (int k = (digits - 1) * 4; k >= 0; k -= 4)
		put(e, hex[(v >> k) & 0x0f]);
}

static void write_double(struct em *e, const uint8_t *s, size_t n, bool allow_breaks)
{
	bool spaces = false;

	write_indicator(e, '"', true, false, false);
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t w = cwidth(c);
		if (!is_printable(s, n, i) || is_break(s, n, i) || c == '"' || c == '\\') {
			/* the BOM is not printable, so it is escaped here too */
			uint32_t v = c < 0x80 ? c : (uint32_t)(c & (0xff >> (w + 1)));
			for (size_t k = 1; k < w; k++)
				v = v << 6 | (at(s, n, i + k) & 0x3f);
			write_escape(e, v);
			i += w;
			spaces = false;
		} else if (c == ' ') {
			if (allow_breaks && !spaces && e->column > BEST_WIDTH && i != 0 &&
			    i != n - 1) {
				write_indent(e);
				if (at(s, n, i + 1) == ' ')
					put(e, '\\');
			} else {
				put(e, ' ');
			}
			i++;
			spaces = true;
		} else {
			put_text(e, s + i, w, 1);
			i += w;
			spaces = false;
		}
	}
	write_indicator(e, '"', false, false, false);
	e->whitespace = false;
	e->indention = false;
}

/* start of the character before position i */
static size_t prev_char(const uint8_t *s, size_t i)
{
	do
		i--;
	while (i > 0 && (s[i] & 0xc0) == 0x80);
	return i;
}

/* literal scalars hold only \n breaks: k8s_yaml_style asks for double quotes when
 * there is another one */
static void write_literal(struct em *e, const uint8_t *s, size_t n)
{
	bool breaks = true;

	write_indicator(e, '|', true, false, false);
	if (n && (s[0] == ' ' || is_break(s, n, 0)))
		write_indicator(e, '2', false, false, false); /* BEST_INDENT */
	if (n == 0) {
		write_indicator(e, '-', false, false, false);
	} else {
		size_t last = prev_char(s, n);
		if (!is_break(s, n, last))
			write_indicator(e, '-', false, false, false);
		else if (last == 0 || is_break(s, n, prev_char(s, last)))
			write_indicator(e, '+', false, false, false);
	}
	put_break(e);
	e->indention = true;
	e->whitespace = true;
	for (size_t i = 0; i < n;) {
		if (is_break(s, n, i)) {
			i += write_break(e, s, i);
			e->indention = true;
			breaks = true;
			continue;
		}
		if (breaks)
			write_indent(e);
		const uint8_t *nl = memchr(s + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - s) : n;
		put_text(e, s + i, end - i, count_chars(s + i, end - i));
		e->indention = false;
		breaks = false;
		i = end;
	}
}

/* a scalar node: the final style, then the text one indentation level deeper */
static void emit_scalar(struct em *e, const char *str, size_t n, enum k8s_ystyle req,
			const struct sallow *a, bool simple_key)
{
	const uint8_t *s = (const uint8_t *)str;
	int saved = e->indent;

	e->indent = e->indent < 0 ? BEST_INDENT : e->indent + BEST_INDENT;
	switch (select_style(req, a, n, simple_key)) {
	case S_PLAIN:
		write_plain(e, s, n, !simple_key, a);
		break;
	case S_SINGLE:
		write_single(e, s, n, !simple_key);
		break;
	case S_DOUBLE:
		write_double(e, s, n, !simple_key);
		break;
	case S_LITERAL:
		write_literal(e, s, n);
		break;
	}
	e->indent = saved;
}

/* string bytes as Go's JSON round trip leaves them: invalid UTF-8 becomes U+FFFD
 * (*tofree is then the copy) */
static int valid_text(const char *s, size_t n, const char **out, size_t *out_n, char **tofree)
{
	struct buf sb;

	*tofree = NULL;
	if (k8s_utf8_valid(s, n)) {
		*out = s;
		*out_n = n;
		return 0;
	}
	k8s_buf_init(&sb);
	k8s_utf8_sanitize(&sb, s, n);
	if (k8s_buf_finish(&sb, tofree, out_n))
		return -ENOMEM;
	*out = *tofree;
	return 0;
}

/* A string ready to be written: valid UTF-8 (tofree holds the copy when it had to be
 * made valid), what its text allows and the style its content asks for. */
struct scalar {
	const char *s;
	size_t n;
	char *tofree;
	struct sallow a;
	enum k8s_ystyle req;
};

static int prepare(const char *s0, size_t n0, bool key, struct scalar *sc)
{
	sc->tofree = NULL;
	if (n0 && analyze_ascii((const uint8_t *)s0, n0, &sc->a)) {
		/* printable ASCII: valid, and without line breaks */
		sc->s = s0;
		sc->n = n0;
		sc->req = k8s_yaml_style_line(s0, n0, key);
		return 0;
	}
	if (valid_text(s0, n0, &sc->s, &sc->n, &sc->tofree))
		return -ENOMEM;
	analyze((const uint8_t *)sc->s, sc->n, &sc->a);
	sc->req = k8s_yaml_style(sc->s, sc->n, key);
	return 0;
}

static int emit_string(struct em *e, const char *s0, size_t n0)
{
	struct scalar sc;

	if (prepare(s0, n0, false, &sc))
		return -ENOMEM;
	emit_scalar(e, sc.s, sc.n, sc.req, &sc.a, false);
	free(sc.tofree);
	return 0;
}

/*
 * The analysis of a key that is static text (a schema field's name) is the
 * same every time: a thread keeps its recent ones by address. Keys are half
 * of a Pod's scalars, and nearly all of them are such names.
 */
#define KEY_MEMO_BITS 8

struct key_memo {
	const char *k;
	size_t n;
	struct sallow a;
	enum k8s_ystyle req;
};

static __thread struct key_memo key_memo[1 << KEY_MEMO_BITS];

static int prepare_key(const struct k8s_ykey *k, struct scalar *sc)
{
	if (!k->fixed)
		return prepare(k->k, k->len, true, sc);
	struct key_memo *m = &key_memo[k8s_slot((uintptr_t)k->k, KEY_MEMO_BITS)];
	if (m->k == k->k && m->n == k->len) {
		*sc = (struct scalar){.s = k->k, .n = k->len, .a = m->a, .req = m->req};
		return 0;
	}
	int r = prepare(k->k, k->len, true, sc);
	if (!r && !sc->tofree)
		*m = (struct key_memo){.k = k->k, .n = k->len, .a = sc->a, .req = sc->req};
	return r;
}

/* a key: "key:" when it is a simple key, else "? key" and ":" on the next line */
static int emit_key(struct em *e, const struct k8s_ykey *k)
{
	struct scalar sc;

	if (prepare_key(k, &sc))
		return -ENOMEM;
	if (!sc.a.multiline && sc.n <= SIMPLE_KEY_MAX) {
		emit_scalar(e, sc.s, sc.n, sc.req, &sc.a, true);
		write_indicator(e, ':', false, false, false);
	} else {
		write_indicator(e, '?', true, false, true);
		emit_scalar(e, sc.s, sc.n, sc.req, &sc.a, false);
		write_indent(e);
		write_indicator(e, ':', true, false, true);
	}
	free(sc.tofree);
	return 0;
}

static void emit_fixed(struct em *e, const char *s, size_t n)
{
	static const struct sallow plain = {
		.block_plain = true, .single = true, .block = true, .ascii = true, .space = false};

	emit_scalar(e, s, n, K8S_Y_PLAIN, &plain, false);
}

static int emit_node(struct em *e, const struct jval *v, bool mapping_ctx);

static int emit_seq(struct em *e, const struct jval *v, bool mapping_ctx)
{
	int saved = e->indent, r = 0;

	if (e->indent < 0)
		e->indent = 0;
	else if (!(mapping_ctx && !e->indention))
		e->indent += BEST_INDENT; /* else indentless: "- " under its key */
	for (size_t i = 0; i < v->n && !r; i++) {
		write_indent(e);
		write_indicator(e, '-', true, false, true);
		r = emit_node(e, v->v[i], false);
	}
	e->indent = saved;
	return r;
}

static int emit_map(struct em *e, const struct jval *v)
{
	struct k8s_ykey stack_keys[32], *keys = stack_keys;
	int saved = e->indent, r = 0;

	if (v->n > sizeof(stack_keys) / sizeof(stack_keys[0])) {
		keys = malloc(v->n * sizeof(*keys));
		if (!keys)
			return -ENOMEM;
	}
	k8s_yaml_sort_keys(v, keys);
	e->indent = e->indent < 0 ? 0 : e->indent + BEST_INDENT;
	for (size_t i = 0; i < v->n && !r; i++) {
		write_indent(e);
		r = emit_key(e, &keys[i]);
		if (!r)
			r = emit_node(e, v->v[keys[i].idx], true);
	}
	e->indent = saved;
	if (keys != stack_keys)
		free(keys);
	return r;
}

static int emit_node(struct em *e, const struct jval *v, bool mapping_ctx)
{
	char tmp[64];
	int r = 0, n;

	if (++e->depth > K8S_YAML_MAX_DEPTH) {
		if (e->err && !*e->err)
			*e->err = k8s_strdup_printf("value nested too deeply for YAML");
		return -EINVAL;
	}
	switch (v->t) {
	case J_NULL:
		emit_fixed(e, "null", 4);
		break;
	case J_BOOL:
		if (v->b)
			emit_fixed(e, "true", 4);
		else
			emit_fixed(e, "false", 5);
		break;
	case J_NUM:
		n = k8s_yaml_number(v, tmp, sizeof(tmp));
		if (n < 0)
			r = emit_string(e, v->s, v->len);
		else
			emit_fixed(e, tmp, (size_t)n);
		break;
	case J_STR:
		r = emit_string(e, v->s, v->len);
		break;
	case J_ARR:
	case J_OBJ:
		if (v->n == 0) {
			/* the emitter writes an empty collection in flow style */
			write_indicator(e, v->t == J_ARR ? '[' : '{', true, true, false);
			write_indicator(e, v->t == J_ARR ? ']' : '}', false, false, false);
		} else {
			r = v->t == J_ARR ? emit_seq(e, v, mapping_ctx) : emit_map(e, v);
		}
		break;
	}
	e->depth--;
	return r;
}

int k8s_yaml_write(struct buf *b, const struct jval *v, char **err)
{
	struct em e = {.b = b, .indent = -1, .whitespace = true, .indention = true, .err = err};
	int r = emit_node(&e, v, false);

	if (!r)
		write_indent(&e); /* the implicit document end */
	if (!r && b->oom)
		r = -ENOMEM;
	return r;
}
