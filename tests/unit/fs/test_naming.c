/* test_naming.c: key segment <-> file name escaping is a bijection. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/naming.h"
#include "test.h"


static void expect(const char *seg, size_t len, int ns, const char *name)
{
	char out[NAMING_NAME_MAX + 1];
	ssize_t n = naming_encode(seg, len, ns, out, sizeof(out));
	CHECK(n >= 0 && strcmp(out, name) == 0, "encode gave '%s', want '%s'",
	      n >= 0 ? out : "(err)", name);
	char back[NAMING_NAME_MAX + 1];
	int bns;
	ssize_t m = naming_decode(name, back, sizeof(back), &bns);
	CHECK(m == (ssize_t)len && memcmp(back, seg, len) == 0 && bns == ns, "decode of '%s'",
	      name);
}

static void reject(const char *name)
{
	char back[NAMING_NAME_MAX + 1];
	int ns;
	CHECK(naming_decode(name, back, sizeof(back), &ns) < 0, "'%s' must not decode", name);
}

int main(void)
{
	expect("www", 3, 0, "www");
	expect("", 0, 0, "%");
	expect(".", 1, 0, "%2E");
	expect("..", 2, 0, "%2E%2E");
	expect("...", 3, 0, "...");
	expect(".hidden", 7, 0, ".hidden");
	expect("a%b", 3, 0, "a%25b");
	expect("a\nb", 3, 0, "a%0Ab");
	expect("\0", 1, 0, "%00");
	expect("\x7f", 1, 0, "%7F");
	expect("compact_rev_key", 15, 1, "%+compact_rev_key");
	expect("", 0, 1, "%+%");
	expect("\xff\xfe", 2, 0, "\xff\xfe");

	reject(NAMING_VALUE_NAME);
	reject("%+");
	reject("%41");	/* 'A' needs no escape: not canonical */
	reject("%2e");	/* lower-case hex is not produced */
	reject("a%2E"); /* dot escaped outside "." / ".." */
	reject("%2E."); /* half-escaped ".." */
	reject("%4");
	reject("%zz");
	reject("a\x01");

	/* Too long after escaping. */
	char longseg[200];
	memset(longseg, '%', sizeof(longseg));
	char out[NAMING_NAME_MAX + 1];
	CHECK(naming_encode(longseg, sizeof(longseg), 0, out, sizeof(out)) == -ENAMETOOLONG,
	      "long name");

	/* Property: random byte strings survive encode -> decode, and every
	 * name that decodes re-encodes to itself (so the map is a bijection
	 * between segments and valid names). */
	srand(12345);
	for (int iter = 0; iter < 200000; iter++) {
		char seg[40];
		size_t len = rand() % 40;
		for (size_t i = 0; i < len; i++) {
			int r = rand() % 10;
			seg[i] = r < 3 ? "%./\x00\x1f\x7f"[rand() % 6] : (char)(rand() % 256);
			if (seg[i] == '/')
				seg[i] = 'x'; /* '/' never occurs inside a segment */
		}
		int ns = rand() % 2;
		ssize_t n = naming_encode(seg, len, ns, out, sizeof(out));
		CHECK(n >= 0, "encode failed at iteration %d", iter);
		if (n < 0)
			continue;
		CHECK(strcmp(out, NAMING_VALUE_NAME) != 0, "produced the reserved name");
		CHECK(strcmp(out, ".") && strcmp(out, ".."), "produced a dot name");
		CHECK(n > 0);
		CHECK(memchr(out, '/', n) == NULL, "produced a slash");
		char back[NAMING_NAME_MAX + 1];
		int bns;
		ssize_t m = naming_decode(out, back, sizeof(back), &bns);
		CHECK(m == (ssize_t)len && memcmp(back, seg, len) == 0 && bns == ns,
		      "round trip failed at iteration %d", iter);

		/* random names: decodable ones must re-encode identically */
		char name[12];
		size_t nl = 1 + rand() % 10;
		for (size_t i = 0; i < nl; i++)
			name[i] = "%+.2E0A5Fa/\x01z"[rand() % 14];
		name[nl] = 0;
		if (memchr(name, '/', nl) || memchr(name, 0, nl))
			continue;
		m = naming_decode(name, back, sizeof(back), &bns);
		if (m >= 0) {
			n = naming_encode(back, m, bns, out, sizeof(out));
			CHECK(n >= 0 && strcmp(out, name) == 0, "'%s' re-encodes as '%s'", name,
			      out);
		}
	}
	return test_summary();
}
