/* test_k8s_fixtures.c: conformance of the k8s codec against Kubernetes' own
 * round-trip fixtures (../shared/k8s-fixtures/{HEAD,apiextensions}).
 *
 * For every <group>.<version>.<Kind>.pb with its .json and .yaml:
 *   json     decode(.pb) as JSON equals .json (same values, same member order,
 *            same number and string text)
 *   yaml     decode(.pb) as YAML equals .yaml byte for byte
 *   rt-yaml  encode(orig=.pb, decode(.pb) YAML) equals .pb byte for byte
 *   rt-json  encode(orig=.pb, decode(.pb) JSON) equals .pb byte for byte
 *   new-pb   encode(no orig, .json) equals .pb byte for byte
 *   edit     for up to 8 string values "<x>Value" in the .yaml, one at a time,
 *            changing the last letter ("<x>Valuf") and encoding against the .pb
 *            changes exactly one byte of the .pb, and decodes to the edited YAML
 * Usage: test_k8s_fixtures DIR... ; prints per-check counts, fails on any miss, skips
 * (exit 77) when a DIR does not exist (the fixtures live outside the repo, in ../shared). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "k8s/k8s.h"
#include "k8s/k8s_internal.h"
#include "jsoncmp.h"
#include "test.h"

enum { C_JSON, C_YAML, C_RT_YAML, C_RT_JSON, C_NEW_PB, C_EDIT, C_N };
static const char *const check_names[C_N] = {"json",	"yaml",	  "rt-yaml",
					     "rt-json", "new-pb", "edit"};
static int pass[C_N], total[C_N];
static int shown, no_edit;


static void fail(const char *name, int check, const char *why)
{
	if (shown++ < 40)
		fprintf(stderr, "FAIL %-8s %s: %s\n", check_names[check], name, why);
}


/* the decoded text, encoded with the fixture as the original, is the fixture again */
static void check_round_trip(const char *base, int check, const char *pb, size_t pblen,
			     const char *text, size_t tlen, const char *av, const char *kind)
{
	void *enc = NULL;
	size_t elen = 0;
	char *err = NULL;

	if (k8s_encode_typed(pb, pblen, text, tlen, NULL, NULL, 0, av, kind, K8S_ENC_RAW, &enc,
			     &elen, &err))
		fail(base, check, err ? err : "encode failed");
	else if (elen != pblen || memcmp(enc, pb, pblen))
		fail(base, check, "bytes differ");
	else
		pass[check]++;
	free(enc);
	free(err);
}

static void run_one(const char *dir, const char *base)
{
	char path[4096], av[256], kind[256], why[512];
	size_t pblen = 0, jlen = 0, ylen = 0;
	char *pb, *js, *ya;
	char *out = NULL, *err = NULL;
	size_t olen = 0;
	void *enc = NULL;
	size_t elen = 0;
	int r;

	snprintf(path, sizeof(path), "%s/%s.pb", dir, base);
	pb = test_slurp(path, &pblen);
	snprintf(path, sizeof(path), "%s/%s.json", dir, base);
	js = test_slurp(path, &jlen);
	snprintf(path, sizeof(path), "%s/%s.yaml", dir, base);
	ya = test_slurp(path, &ylen);
	k8s_test_type_of(base, av, sizeof(av), kind, sizeof(kind));
	if (!pb || !js || !ya) {
		fprintf(stderr, "missing files for %s\n", base);
		for (int c = 0; c < C_N; c++)
			total[c]++;
		goto out;
	}

	/* json */
	total[C_JSON]++;
	r = k8s_decode_typed(pb, pblen, K8S_FMT_JSON, 0, av, kind, &out, &olen, &err);
	if (r) {
		fail(base, C_JSON, err ? err : "decode failed");
	} else {
		struct jval *a = NULL, *b = NULL;
		char *e1 = NULL, *e2 = NULL;
		if (k8s_json_parse(out, olen, &a, &e1) || k8s_json_parse(js, jlen, &b, &e2)) {
			fail(base, C_JSON, "unparsable JSON");
		} else {
			why[0] = 0;
			if (k8s_test_same_json(a, b, why, sizeof(why)))
				pass[C_JSON]++;
			else
				fail(base, C_JSON, why);
		}
		k8s_jv_free(a);
		k8s_jv_free(b);
		free(e1);
		free(e2);
	}
	/* rt-json */
	total[C_RT_JSON]++;
	if (!r)
		check_round_trip(base, C_RT_JSON, pb, pblen, out, olen, av, kind);
	free(out);
	out = NULL;
	free(err);
	err = NULL;

	/* yaml */
	total[C_YAML]++;
	total[C_RT_YAML]++;
	r = k8s_decode_typed(pb, pblen, K8S_FMT_YAML, 0, av, kind, &out, &olen, &err);
	if (r) {
		fail(base, C_YAML, err ? err : "decode failed");
	} else {
		if (olen == ylen && !memcmp(out, ya, ylen)) {
			pass[C_YAML]++;
		} else {
			size_t i = 0;
			while (i < olen && i < ylen && out[i] == ya[i])
				i++;
			size_t ls = i;
			while (ls > 0 && ya[ls - 1] != '\n')
				ls--;
			snprintf(why, sizeof(why), "differs at byte %zu, line: %.60s", i, ya + ls);
			fail(base, C_YAML, why);
		}
		check_round_trip(base, C_RT_YAML, pb, pblen, out, olen, av, kind);
	}
	free(err);
	err = NULL;

	/* edit: every edit of one value changes one byte and reads back */
	total[C_EDIT]++;
	{
		int edits = 0, good = 0;
		for (const char *q = ya; (q = strstr(q, "Value\n")) && edits < 8; q += 6) {
			/* the value must be a mapping value or list item on its line */
			const char *ls = q;
			while (ls > ya && ls[-1] != '\n')
				ls--;
			const char *colon = memchr(ls, ':', (size_t)(q - ls));
			if (!colon && !(strncmp(ls, "- ", 2) == 0))
				continue;
			edits++;
			char *ed = strdup(ya);
			ed[q - ya + 4] = 'f';
			void *eb = NULL;
			size_t eblen = 0;
			char *ee = NULL, *back = NULL;
			size_t blen = 0;
			if (k8s_encode_typed(pb, pblen, ed, ylen, NULL, NULL, 0, av, kind,
					     K8S_ENC_RAW, &eb, &eblen, &ee) == 0 &&
			    eblen == pblen) {
				size_t diff = 0;
				for (size_t i = 0; i < pblen; i++)
					diff += ((char *)eb)[i] != pb[i];
				if (diff == 1 &&
				    k8s_decode_typed(eb, eblen, K8S_FMT_YAML, 0, av, kind, &back,
						     &blen, NULL) == 0 &&
				    blen == ylen && !memcmp(back, ed, ylen))
					good++;
			}
			if (good != edits && shown < 40) {
				int ln = 1;
				for (const char *z = ya; z < q; z++)
					ln += *z == '\n';
				snprintf(why, sizeof(why), "edit at yaml line %d: %s", ln,
					 ee ? ee : "not a one-byte change");
			}
			free(ed);
			free(eb);
			free(ee);
			free(back);
			if (good != edits)
				break;
		}
		if (!edits) {
			/* e.g. only integers: not applicable */
			total[C_EDIT]--;
			no_edit++;
		} else if (good == edits) {
			pass[C_EDIT]++;
		} else {
			fail(base, C_EDIT, why);
		}
	}

	/* new-pb */
	total[C_NEW_PB]++;
	if (k8s_encode_typed(NULL, 0, js, jlen, NULL, NULL, 0, av, kind, K8S_ENC_PROTOBUF, &enc,
			     &elen, &err)) {
		fail(base, C_NEW_PB, err ? err : "encode failed");
	} else if (!k8s_test_same_bytes(enc, elen, pb, pblen, why, sizeof(why))) {
		fail(base, C_NEW_PB, why);
	} else {
		pass[C_NEW_PB]++;
	}
	free(enc);
out:
	free(out);
	free(err);
	free(pb);
	free(js);
	free(ya);
}

int main(int argc, char **argv)
{
	int files = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FIXTURE_DIR...\n", argv[0]);
		return 2;
	}
	for (int a = 1; a < argc; a++) {
		if (access(argv[a], F_OK) != 0 && errno == ENOENT) {
			printf("skip: %s missing (Kubernetes fixtures: ../shared, or tools/fetch-k8s-data.sh DIR and -Dshared_dir=DIR)\n",
			       argv[a]);
			return 77;
		}
		char **names = test_list_dir(argv[a], ".pb", false, NULL);
		for (char **p = names; *p; p++) {
			run_one(argv[a], *p);
			files++;
		}
		test_free_names(names);
	}
	printf("%d fixtures (x3 files = %d):", files, files * 3);
	for (int c = 0; c < C_N; c++)
		printf(" %s %d/%d", check_names[c], pass[c], total[c]);
	printf(" (%d kind(s) without a string value to edit)\n", no_edit);
	CHECK(files > 0, "no fixtures found");
	for (int c = 0; c < C_N; c++)
		CHECK(pass[c] == total[c], "%s: %d of %d fixtures fail", check_names[c],
		      total[c] - pass[c], total[c]);
	return test_summary();
}
