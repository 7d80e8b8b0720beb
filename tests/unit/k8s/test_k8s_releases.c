/* test_k8s_releases.c: conformance of the k8s codec against the round-trip fixtures
 * that earlier Kubernetes releases wrote (../shared/k8s-fixtures/releases/vX.Y.Z/).
 *
 * For every <group>.<version>.<Kind>.pb with its .json, per release folder:
 *   decode   decode(.pb) succeeds; a kind whose envelope names no type (never stored
 *            in etcd, e.g. WatchEvent) is decoded with the type its file name gives,
 *            as `etcdfs-k8s decode --type` does (counted apart as "typed")
 *   json     decode(.pb) as JSON equals .json once every member whose value is null
 *            is dropped on both sides (old Go wrote `creationTimestamp: null`); member
 *            order and scalar text must match
 *   encode   encode(no orig, .json) as that release (k8s_encode_release) equals .pb
 *            byte for byte
 *   orig     encode(orig=.pb, decode(.pb)) equals .pb byte for byte, for the YAML and
 *            the JSON view both (`etcdfs-k8s encode --orig`)
 * Usage: test_k8s_releases RELEASES_DIR [--table]. Prints one table row per release;
 * fails on any miss unless --table (measure only). Skips (exit 77) when RELEASES_DIR does not exist:
 * the fixtures live outside the repository, in ../shared. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "k8s/k8s.h"
#include "k8s/k8s_internal.h"
#include "jsoncmp.h"
#include "test.h"

enum { C_DECODE, C_JSON, C_ENCODE, C_ORIG, C_N };
static const char *const check_names[C_N] = {"decode", "json", "encode", "orig"};
static int shown;

struct tally {
	int kinds, typed;
	int pass[C_N];
};

static void fail(const char *rel, const char *name, int check, const char *why)
{
	if (shown++ < 60)
		fprintf(stderr, "FAIL %-6s %s/%s: %s\n", check_names[check], rel, name, why);
}

/* drops every object member whose value is null, at any depth */
static void drop_nulls(struct jval *v)
{
	if (v->t != J_ARR && v->t != J_OBJ)
		return;
	for (size_t i = v->n; i-- > 0;) {
		if (v->t == J_OBJ && v->v[i]->t == J_NULL)
			k8s_jv_remove(v, i);
		else
			drop_nulls(v->v[i]);
	}
}

static bool json_equal(const char *rel, const char *base, const char *out, size_t olen,
		       const char *js, size_t jlen)
{
	struct jval *a = NULL, *b = NULL;
	char *e1 = NULL, *e2 = NULL, why[512] = "";
	bool ok = false;

	if (k8s_json_parse(out, olen, &a, &e1) || k8s_json_parse(js, jlen, &b, &e2)) {
		fail(rel, base, C_JSON, e1 ? e1 : e2 ? e2 : "unparsable JSON");
		goto out;
	}
	drop_nulls(a);
	drop_nulls(b);
	ok = k8s_test_same_json(a, b, why, sizeof(why));
	if (!ok)
		fail(rel, base, C_JSON, why);
out:
	k8s_jv_free(a);
	k8s_jv_free(b);
	free(e1);
	free(e2);
	return ok;
}

/* encode(orig=pb, decode(pb) in fmt) == pb */
static bool orig_round_trip(const char *rel, const char *base, const char *pb, size_t pblen,
			    enum k8s_format fmt, const char *av, const char *kind)
{
	char *text = NULL, *err = NULL;
	size_t tlen = 0, elen = 0;
	void *enc = NULL;
	bool ok = false;

	if (k8s_decode_typed(pb, pblen, fmt, 0, av, kind, &text, &tlen, &err))
		goto out;
	if (k8s_encode_typed(pb, pblen, text, tlen, NULL, NULL, 0, av, kind, K8S_ENC_RAW, &enc,
			     &elen, &err))
		fail(rel, base, C_ORIG, err ? err : "encode failed");
	else if (!(ok = elen == pblen && !memcmp(enc, pb, pblen)))
		fail(rel, base, C_ORIG,
		     fmt == K8S_FMT_YAML ? "YAML: bytes differ" : "JSON: bytes differ");
out:
	free(text);
	free(err);
	free(enc);
	return ok;
}

static void run_one(const char *dir, const char *rel, const char *base, struct tally *t)
{
	char path[4096], av[256], kind[256], why[256], release[32];
	size_t pblen = 0, jlen = 0, olen = 0, elen = 0;
	char *pb, *js, *out = NULL, *err = NULL;
	void *enc = NULL;
	int r;

	t->kinds++;
	pb = (size_t)snprintf(path, sizeof(path), "%s/%s.pb", dir, base) < sizeof(path)
		     ? test_slurp(path, &pblen)
		     : NULL;
	js = (size_t)snprintf(path, sizeof(path), "%s/%s.json", dir, base) < sizeof(path)
		     ? test_slurp(path, &jlen)
		     : NULL;
	if (!pb || !js) {
		fail(rel, base, C_DECODE, "missing .pb or .json");
		goto out;
	}
	k8s_test_type_of(base, av, sizeof(av), kind, sizeof(kind));

	r = k8s_decode(pb, pblen, K8S_FMT_JSON, 0, &out, &olen, &err);
	if (r) {
		/* the envelope may name no type: decode as --type does */
		free(err);
		err = NULL;
		r = k8s_decode_typed(pb, pblen, K8S_FMT_JSON, 0, av, kind, &out, &olen, &err);
		t->typed += !r;
	}
	if (r) {
		fail(rel, base, C_DECODE, err ? err : "decode failed");
	} else {
		t->pass[C_DECODE]++;
		t->pass[C_JSON] += json_equal(rel, base, out, olen, js, jlen);
		t->pass[C_ORIG] += orig_round_trip(rel, base, pb, pblen, K8S_FMT_YAML, av, kind) &&
				   orig_round_trip(rel, base, pb, pblen, K8S_FMT_JSON, av, kind);
	}
	free(err);
	err = NULL;

	/* as the release wrote it: "v1.15.0" -> "1.15" */
	snprintf(release, sizeof(release), "%s", rel[0] == 'v' ? rel + 1 : rel);
	if (strrchr(release, '.') != strchr(release, '.'))
		*strrchr(release, '.') = 0;
	if (k8s_encode_release(release, NULL, 0, js, jlen, NULL, NULL, 0, av, kind,
			       K8S_ENC_PROTOBUF, &enc, &elen, &err)) {
		fail(rel, base, C_ENCODE, err ? err : "encode failed");
	} else if (!k8s_test_same_bytes(enc, elen, pb, pblen, why, sizeof(why))) {
		fail(rel, base, C_ENCODE, why);
	} else {
		t->pass[C_ENCODE]++;
	}
out:
	free(enc);
	free(out);
	free(err);
	free(pb);
	free(js);
}

int main(int argc, char **argv)
{
	bool measure_only = argc > 2 && !strcmp(argv[2], "--table");
	size_t nrel = 0;
	char **rels;

	if (argc < 2) {
		fprintf(stderr, "usage: %s RELEASES_DIR [--table]\n", argv[0]);
		return 2;
	}
	if (access(argv[1], F_OK) != 0) {
		printf("skip: %s missing (the Kubernetes release fixtures in ../shared)\n",
		       argv[1]);
		return 77;
	}
	rels = test_list_dir(argv[1], "", true, &nrel);
	REQUIRE(nrel > 0, "no release folders in %s", argv[1]);
	printf("| release | kinds | decode ok (typed) | JSON equal | encode equal | orig equal "
	       "|\n");
	printf("|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < nrel; i++) {
		char dir[4096];
		struct tally t = {0};
		char **names;

		REQUIRE((size_t)snprintf(dir, sizeof(dir), "%s/%s", argv[1], rels[i]) <
			sizeof(dir));
		names = test_list_dir(dir, ".pb", false, NULL);
		for (char **p = names; *p; p++)
			run_one(dir, rels[i], *p, &t);
		test_free_names(names);
		printf("| %s | %d | %d (%d) | %d | %d | %d |\n", rels[i], t.kinds,
		       t.pass[C_DECODE], t.typed, t.pass[C_JSON], t.pass[C_ENCODE], t.pass[C_ORIG]);
		fflush(stdout);
		CHECK(t.kinds > 0, "%s: no fixtures", rels[i]);
		for (int c = 0; c < C_N && !measure_only; c++)
			CHECK(t.pass[c] == t.kinds,
			      "%s: %s: %d of %d kinds fail", rels[i], check_names[c],
			      t.kinds - t.pass[c], t.kinds);
	}
	test_free_names(rels);
	return test_summary();
}
