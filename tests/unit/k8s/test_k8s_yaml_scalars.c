/* test_k8s_yaml_scalars.c: kubectl's scalar rules, one table row per rule.
 *
 * Each row is a string and the exact YAML `kubectl get -o yaml` (go-yaml v2 behind
 * sigs.k8s.io/yaml) prints for it: as the value of key "k", or as a key with value
 * "v". The rows cover strings that look like numbers, booleans, null or dates (quoted),
 * leading and trailing spaces (single-quoted), multi-line strings (literal blocks and
 * their chomping and indentation indicators), non-ASCII text (plain, or escaped where
 * YAML cannot print it), YAML's indicator characters, and long lines (folded at 80
 * columns). Every row also checks that libyaml's event emitter, the renderer before,
 * prints the same, and that the output parses back with libyaml (k8s_yaml_parse) to the
 * same string. Needs nothing from ../shared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s/k8s_emit.h"
#include "k8s/k8s_internal.h"
#include "test.h"

struct row {
	const char *s;	  /* the string (NUL-terminated; no NUL inside, see test_nul) */
	const char *yaml; /* the document printed for {"k": s}, or {s: "v"} when key */
	bool key;
	const char *back; /* what it parses back to when not s (invalid UTF-8), or NULL */
};

#define W9 "aaaaaaaaa"
#define W9x4 W9 " " W9 " " W9 " " W9
#define W9x8 W9x4 " " W9x4
#define K130                                                                                       \
	"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"       \
	"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"

#define V(s, yaml)                                                                                 \
	{                                                                                          \
		s, yaml, false, NULL                                                               \
	}
#define K(s, yaml)                                                                                 \
	{                                                                                          \
		s, yaml, true, NULL                                                                \
	}

static const struct row rows[] = {
	/* look like numbers: quoted */
	V("123", "k: \"123\"\n"),
	V("-17", "k: \"-17\"\n"),
	V("+5", "k: \"+5\"\n"),
	V("1.5", "k: \"1.5\"\n"),
	V("1e3", "k: \"1e3\"\n"),
	V(".5", "k: \".5\"\n"),
	V("0x1F", "k: \"0x1F\"\n"),
	V("0o17", "k: \"0o17\"\n"),
	V("017", "k: \"017\"\n"),
	V("08", "k: \"08\"\n"), /* not octal, but a YAML float */
	V("1_000", "k: \"1_000\"\n"),
	V("12:30", "k: \"12:30\"\n"), /* YAML 1.1 base 60 */
	V("190:20:30", "k: \"190:20:30\"\n"),
	V(".inf", "k: \".inf\"\n"),
	V("-.Inf", "k: \"-.Inf\"\n"),
	V(".nan", "k: \".nan\"\n"),
	V("9223372036854775808", "k: \"9223372036854775808\"\n"),
	/* ... but are not numbers: plain */
	V("1.2.3", "k: 1.2.3\n"),
	V("0.0.0.0", "k: 0.0.0.0\n"),
	V("1e", "k: 1e\n"),
	V("12:60", "k: 12:60\n"), /* not base 60: a minute is [0-5]?[0-9] */
	V("v1", "k: v1\n"),
	V("100m", "k: 100m\n"),
	V("64Mi", "k: 64Mi\n"),
	/* booleans and null (YAML 1.1): quoted */
	V("true", "k: \"true\"\n"),
	V("False", "k: \"False\"\n"),
	V("TRUE", "k: \"TRUE\"\n"),
	V("yes", "k: \"yes\"\n"),
	V("No", "k: \"No\"\n"),
	V("on", "k: \"on\"\n"),
	V("OFF", "k: \"OFF\"\n"),
	V("y", "k: \"y\"\n"),
	V("n", "k: \"n\"\n"),
	V("null", "k: \"null\"\n"),
	V("Null", "k: \"Null\"\n"),
	V("~", "k: \"~\"\n"),
	V("", "k: \"\"\n"),
	V("yes!", "k: yes!\n"),
	V("nil", "k: nil\n"),
	V("tRUE", "k: tRUE\n"),
	/* dates and times: quoted */
	V("2001-12-14", "k: \"2001-12-14\"\n"),
	V("2001-12-14T21:59:43Z", "k: \"2001-12-14T21:59:43Z\"\n"),
	V("2001-12-14t21:59:43.10-05:00", "k: \"2001-12-14t21:59:43.10-05:00\"\n"),
	V("2001-12-14 21:59:43.10", "k: \"2001-12-14 21:59:43.10\"\n"),
	V("2001-1-2", "k: \"2001-1-2\"\n"),
	V("2001-13-14", "k: 2001-13-14\n"), /* no month 13 */
	V("2001-02-29", "k: 2001-02-29\n"), /* not a leap year */
	/* leading and trailing spaces: single quotes */
	V(" lead", "k: ' lead'\n"),
	V("trail ", "k: 'trail '\n"),
	V(" ", "k: ' '\n"),
	V("in  side", "k: in  side\n"),
	/* multi-line: literal blocks, chomping and indentation indicators */
	V("a\nb", "k: |-\n  a\n  b\n"),
	V("a\nb\n", "k: |\n  a\n  b\n"),
	V("a\n\n", "k: |+\n  a\n\n"),
	V(" a\nb", "k: |2-\n   a\n  b\n"),
	V("\n", "k: |2+\n\n"),
	V("a\n\nb", "k: |-\n  a\n\n  b\n"),
	V("a \nb", "k: \"a \\nb\"\n"), /* a space before a break: double quotes */
	V("a\n b", "k: |-\n  a\n   b\n"),
	V("a\r\nb", "k: \"a\\r\\nb\"\n"),
	V("a\xe2\x80\xa8"
	  "b",
	  "k: \"a\\Lb\"\n"),
	V("a\xc2\x85"
	  "b",
	  "k: \"a\\Nb\"\n"),
	V("tab\there", "k: \"tab\\there\"\n"),
	/* non-ASCII */
	V("h\xc3\xa9llo", "k: h\xc3\xa9llo\n"),
	V("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "k: \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\n"),
	V("\xf0\x9f\x98\x80", "k: \"\\U0001F600\"\n"), /* beyond U+FFFF: escaped */
	V("\xc2\xa0", "k: \xc2\xa0\n"),
	V("\xef\xbb\xbf"
	  "x",
	  "k: \"\\uFEFFx\"\n"),
	V("\xef\xbf\xbe", "k: \"\\uFFFE\"\n"),
	V("\xc2\x80", "k: \"\\x80\"\n"),
	{"caf\xc3", "k: caf\xef\xbf\xbd\n", false, "caf\xef\xbf\xbd"}, /* invalid UTF-8 */
	V("\x7f", "k: \"\\x7F\"\n"),
	V("\x1b[0m", "k: \"\\e[0m\"\n"),
	V("\x07\x08\x0b\x0c", "k: \"\\a\\b\\v\\f\"\n"),
	V("\x01", "k: \"\\x01\"\n"),
	/* indicator characters */
	V("- x", "k: '- x'\n"),
	V("-x", "k: -x\n"),
	V("-", "k: '-'\n"),
	V(": x", "k: ': x'\n"),
	V("a: b", "k: 'a: b'\n"),
	V("a:b", "k: a:b\n"),
	V("a:", "k: 'a:'\n"),
	V("http://x:80/a?b=c#d", "k: http://x:80/a?b=c#d\n"),
	V("#c", "k: '#c'\n"),
	V("a #c", "k: 'a #c'\n"),
	V("a#c", "k: a#c\n"),
	V("?x", "k: ?x\n"),
	V("? x", "k: '? x'\n"),
	V("[a]", "k: '[a]'\n"),
	V("a[0]", "k: a[0]\n"),
	V("{a}", "k: '{a}'\n"),
	V("a{b}", "k: a{b}\n"),
	V(",a", "k: ',a'\n"),
	V("a,b", "k: a,b\n"),
	V("&a", "k: '&a'\n"),
	V("*a", "k: '*a'\n"),
	V("!a", "k: '!a'\n"),
	V("|a", "k: '|a'\n"),
	V(">a", "k: '>a'\n"),
	V("%a", "k: '%a'\n"),
	V("@a", "k: '@a'\n"),
	V("`a", "k: '`a'\n"),
	V("'q'", "k: '''q'''\n"),
	V("\"q\"", "k: '\"q\"'\n"),
	V("it's", "k: it's\n"),
	V("a\\b", "k: a\\b\n"),
	V("---", "k: '---'\n"),
	V("--- x", "k: '--- x'\n"),
	V("...", "k: '...'\n"),
	V("<<", "k: <<\n"),
	V("{\"a\":1}", "k: '{\"a\":1}'\n"),
	/* long lines: folded at a space past column 80, continued 2 deeper */
	V(W9x8 " " W9x4, "k: " W9x8 "\n  " W9x4 "\n"),
	V("\t" W9x8 " " W9x4, "k: \"\\t" W9x8 "\n  " W9x4 "\"\n"),
	V("\t" W9x8 "  " W9x4, "k: \"\\t" W9x8 "\n  \\ " W9x4 "\"\n"),
	V(" " W9x8 " " W9x4, "k: ' " W9x8 "\n  " W9x4 "'\n"),
	V(K130 K130, "k: " K130 K130 "\n"), /* no space: never folded */
	/* keys */
	K("yes", "\"yes\": v\n"),
	K("", "\"\": v\n"),
	K("<<", "\"<<\": v\n"),
	K("123", "\"123\": v\n"),
	K(" lead", "' lead': v\n"),
	K("a: b", "'a: b': v\n"),
	K("app.kubernetes.io/name", "app.kubernetes.io/name: v\n"),
	K("f:metadata", "f:metadata: v\n"),
	K("k:{\"type\":\"Ready\"}", "k:{\"type\":\"Ready\"}: v\n"),
	K("a\nb", "? |-\n  a\n  b\n: v\n"),
	K(K130, "? " K130 "\n: v\n"), /* over 128 bytes: no simple key */
	K(W9x8 " " W9x4 " " W9x4, "? " W9x8 "\n  " W9x4 " " W9x4 "\n: v\n"),
};

static struct jval *doc(const struct row *r, size_t len)
{
	struct jval *o = k8s_jv_new(J_OBJ);

	REQUIRE(o);
	if (r->key)
		REQUIRE(!k8s_jv_set(o, r->s, len, k8s_jv_str("v", 1)));
	else
		REQUIRE(!k8s_jv_set(o, "k", 1, k8s_jv_str(r->s, len)));
	return o;
}

/* the YAML of one row, libyaml's the same, and back to the same string */
static void check_row(const struct row *r, size_t len)
{
	struct jval *o = doc(r, len), *back = NULL;
	struct buf b, old;
	char *err = NULL;

	k8s_buf_init(&b);
	k8s_buf_init(&old);
	REQUIRE(!k8s_yaml_write(&b, o, NULL));
	REQUIRE(!k8s_yaml_write_libyaml(&old, o, NULL));
	if (!CHECK_MEM(b.data, b.len, r->yaml, strlen(r->yaml)))
		fprintf(stderr, "  row \"%s\": got [%.*s]\n", r->s, (int)b.len, (char *)b.data);
	CHECK_MEM(old.data, old.len, b.data, b.len);
	if (CHECK(!k8s_yaml_parse((char *)b.data, b.len, &back, &err), "%s", err ? err : "")) {
		const char *want = r->back ? r->back : r->s;
		size_t wl = r->back ? strlen(r->back) : len;
		CHECK(back->t == J_OBJ && back->n == 1);
		if (back->t == J_OBJ && back->n == 1) {
			if (r->key) {
				CHECK_MEM(back->k[0], back->klen[0], want, wl);
			} else {
				CHECK(back->v[0]->t == J_STR);
				CHECK_MEM(back->v[0]->s, back->v[0]->len, want, wl);
			}
		}
	}
	k8s_jv_free(back);
	free(err);
	k8s_buf_free(&b);
	k8s_buf_free(&old);
	k8s_jv_free(o);
}

static void test_table(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		check_row(&rows[i], strlen(rows[i].s));
}

/* strings may hold NUL (Go strings do): escaped as \0 */
static void test_nul(void)
{
	const struct row r = V("a\0b", "k: \"a\\0b\"\n");

	check_row(&r, 3);
}

/* the other scalars: numbers as YAML prints them, null and booleans plain */
static void test_non_strings(void)
{
	static const struct {
		const char *num, *yaml;
	} nums[] = {
		{"0", "k: 0\n"},     {"-12", "k: -12\n"},
		{"1.5", "k: 1.5\n"}, {"1e+30", "k: 1e+30\n"},
		{"3.0", "k: 3\n"},   {"18446744073709551615", "k: 18446744073709551615\n"},
		/* at the edges of k8s_yaml_number's copy of canonical ints */
		{"-0", "k: 0\n"},
		{"123456789012345678", "k: 123456789012345678\n"},
		{"-1234567890123456789", "k: -1234567890123456789\n"},
		{"9223372036854775808", "k: 9223372036854775808\n"},
		{"-9223372036854775809", "k: -9.223372036854776e+18\n"},
	};
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		struct jval *o = k8s_jv_new(J_OBJ);
		struct buf b;
		REQUIRE(!k8s_jv_set(o, "k", 1, k8s_jv_num(nums[i].num)));
		k8s_buf_init(&b);
		REQUIRE(!k8s_yaml_write(&b, o, NULL));
		CHECK_STRN(b.data, b.len, nums[i].yaml);
		k8s_buf_free(&b);
		k8s_jv_free(o);
	}
	struct jval *o = k8s_jv_new(J_OBJ);
	struct buf b;
	REQUIRE(!k8s_jv_set(o, "b", 1, k8s_jv_bool(false)));
	REQUIRE(!k8s_jv_set(o, "a", 1, k8s_jv_new(J_NULL)));
	REQUIRE(!k8s_jv_set(o, "c", 1, k8s_jv_new(J_ARR)));
	REQUIRE(!k8s_jv_set(o, "d", 1, k8s_jv_new(J_OBJ)));
	k8s_buf_init(&b);
	REQUIRE(!k8s_yaml_write(&b, o, NULL));
	CHECK_STRN(b.data, b.len, "a: null\nb: false\nc: []\nd: {}\n");
	k8s_buf_free(&b);
	k8s_jv_free(o);
}

int main(void)
{
	TEST_RUN(test_table);
	TEST_RUN(test_nul);
	TEST_RUN(test_non_strings);
	return test_summary();
}
