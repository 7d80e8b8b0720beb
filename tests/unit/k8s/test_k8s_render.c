/* test_k8s_render.c: the YAML renderer (k8s_emit.c) against libyaml's event emitter
 * (k8s_yaml_write_libyaml, the renderer before it), byte for byte.
 *
 *   test_k8s_render SHARED      every fixture in SHARED/k8s-fixtures (HEAD, apiextensions,
 *                               releases/v*) and every value in SHARED/k8s-real/values:
 *                               both renderers print the same bytes, k8s_decode prints
 *                               them, and for HEAD and apiextensions the YAML equals the
 *                               fixture's .yaml and the JSON its .json, byte for byte.
 *                               Skips (exit 77) naming the first missing path.
 *   test_k8s_render --synthetic Pods shaped like bench's (built with k8s_encode, then
 *                               decoded), and random value trees made of the characters
 *                               that change a scalar's style: every indicator, quotes,
 *                               breaks of every kind, tabs, NUL, control and non-ASCII
 *                               characters, invalid UTF-8, long lines, long and
 *                               multi-line keys, nested and empty collections. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "k8s/k8s.h"
#include "k8s/k8s_emit.h"
#include "k8s/k8s_internal.h"
#include "jsoncmp.h"
#include "test.h"

static int compared, differ, fixture_yaml, fixture_json;

static void show_diff(const char *what, const struct buf *a, const struct buf *b)
{
	size_t i = 0;

	while (i < a->len && i < b->len && a->data[i] == b->data[i])
		i++;
	size_t ls = i;
	while (ls > 0 && a->data[ls - 1] != '\n')
		ls--;
	fprintf(stderr,
		"%s: renderers differ at byte %zu (%zu vs %zu bytes)\n  libyaml: %.100s\n  new:    "
		" %.100s\n",
		what, i, a->len, b->len, (const char *)a->data + ls,
		b->data ? (const char *)b->data + ls : "");
}

/* renders v both ways; returns the new renderer's text in *out (caller frees) */
static bool same_yaml(const char *what, const struct jval *v, struct buf *out)
{
	struct buf a, b;
	char *ea = NULL, *eb = NULL;

	k8s_buf_init(&a);
	k8s_buf_init(&b);
	int ra = k8s_yaml_write_libyaml(&a, v, &ea);
	int rb = k8s_yaml_write(&b, v, &eb);
	bool ok = ra == rb && (ra || (a.len == b.len && !memcmp(a.data, b.data, a.len)));
	/* a size-only render (the initial sync's) measures the same text */
	struct buf c;
	k8s_buf_init_count(&c);
	int rc = k8s_yaml_write(&c, v, NULL);
	if (!CHECK(rc == rb && (rb || k8s_buf_size(&c) == b.len),
		   "%s: counted %zu bytes, wrote %zu", what, k8s_buf_size(&c), b.len))
		ok = false;
	k8s_buf_free(&c);
	compared++;
	if (!ok) {
		if (differ++ < 10) {
			if (ra != rb)
				fprintf(stderr, "%s: libyaml returned %d (%s), new %d (%s)\n", what,
					ra, ea ? ea : "", rb, eb ? eb : "");
			else
				show_diff(what, &a, &b);
		}
	}
	free(ea);
	free(eb);
	k8s_buf_free(&a);
	if (out)
		*out = b;
	else
		k8s_buf_free(&b);
	return ok;
}

/* ---- fixtures and real values ---- */

static bool file_is(const char *path, const struct buf *b)
{
	size_t n = 0;
	char *f = test_slurp(path, &n);
	bool eq = f && n == b->len && !memcmp(f, b->data, n);

	free(f);
	return eq;
}

/* k8s_decode asked for the size alone (out NULL) gives the text's length,
 * in YAML (yaml_len) and in JSON */
static void check_sizes(const char *path, const char *data, size_t len, const char *av,
			const char *kind, size_t yaml_len)
{
	char *json = NULL;
	size_t ylen = 0, jlen = 0, counted = 0;

	CHECK(k8s_decode_typed(data, len, K8S_FMT_YAML, 0, av, kind, NULL, &ylen, NULL) == 0 &&
		      ylen == yaml_len,
	      "size-only YAML of %s: %zu, text %zu", path, ylen, yaml_len);
	REQUIRE(k8s_decode_typed(data, len, K8S_FMT_JSON, 0, av, kind, &json, &jlen, NULL) == 0);
	CHECK(k8s_decode_typed(data, len, K8S_FMT_JSON, 0, av, kind, NULL, &counted, NULL) == 0 &&
		      counted == jlen,
	      "size-only JSON of %s: %zu, text %zu", path, counted, jlen);
	free(json);
}

/* one stored value: both renderers, and k8s_decode's text equal to the new one */
static void check_value(const char *path, const char *data, size_t len, const char *av,
			const char *kind, bool exact_fixture)
{
	struct jval *v = NULL;
	struct buf y;
	char *err = NULL, *out = NULL;
	size_t olen = 0;
	int r = k8s_decode_view(data, len, 0, av, kind, &v, &err);

	free(err);
	err = NULL;
	if (r) {
		/* not decodable (a kind missing from the schema): neither renderer runs;
		 * k8s_decode must fail the same way */
		CHECK(k8s_decode_typed(data, len, K8S_FMT_YAML, 0, av, kind, &out, &olen, NULL) ==
			      r,
		      "%s", path);
		free(out);
		return;
	}
	if (!same_yaml(path, v, &y))
		goto out;
	r = k8s_decode_typed(data, len, K8S_FMT_YAML, 0, av, kind, &out, &olen, &err);
	CHECK(r == 0 && olen == y.len && !memcmp(out, y.data, olen), "k8s_decode %s", path);
	check_sizes(path, data, len, av, kind, olen);
	if (exact_fixture) {
		char fx[4096];
		size_t pl = strlen(path) - 3; /* ".pb" */
		snprintf(fx, sizeof(fx), "%.*s.yaml", (int)pl, path);
		if (CHECK(file_is(fx, &y), "%s", fx))
			fixture_yaml++;
		struct buf j;
		k8s_buf_init(&j);
		/* the fixtures are indented by 2 and have no final newline */
		k8s_json_write(&j, v, 2);
		snprintf(fx, sizeof(fx), "%.*s.json", (int)pl, path);
		if (CHECK(file_is(fx, &j), "%s", fx))
			fixture_json++;
		k8s_buf_free(&j);
	}
out:
	k8s_buf_free(&y);
	free(out);
	free(err);
	k8s_jv_free(v);
}

static int run_fixture_dir(const char *dir, bool exact)
{
	char **names = test_list_dir(dir, ".pb", false, NULL);
	int n = 0;

	for (char **p = names; *p; p++, n++) {
		char path[4096], av[256], kind[256];
		size_t len = 0;
		snprintf(path, sizeof(path), "%s/%s.pb", dir, *p);
		char *data = test_slurp(path, &len);
		REQUIRE(data, "%s", path);
		k8s_test_type_of(*p, av, sizeof(av), kind, sizeof(kind));
		check_value(path, data, len, av, kind, exact);
		free(data);
	}
	test_free_names(names);
	return n;
}

static int run_shared(const char *shared)
{
	char head[2048], apiext[2048], releases[2048], values[2048];
	const char *need[] = {head, apiext, releases, values};
	struct stat st;

	snprintf(head, sizeof(head), "%s/k8s-fixtures/HEAD", shared);
	snprintf(apiext, sizeof(apiext), "%s/k8s-fixtures/apiextensions", shared);
	snprintf(releases, sizeof(releases), "%s/k8s-fixtures/releases", shared);
	snprintf(values, sizeof(values), "%s/k8s-real/values", shared);
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		if (stat(need[i], &st) || !S_ISDIR(st.st_mode)) {
			printf("skip: %s missing (the Kubernetes fixtures in ../shared)\n",
			       need[i]);
			return 77;
		}
	}
	int nhead = run_fixture_dir(head, true);
	int napi = run_fixture_dir(apiext, true);
	int nrel = 0;
	char **rels = test_list_dir(releases, "", false, NULL);
	for (char **p = rels; *p; p++) {
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s/%s", releases, *p);
		nrel += run_fixture_dir(dir, false);
	}
	test_free_names(rels);
	int nreal = 0;
	const char *suffixes[] = {".bin", ".json"};
	for (size_t s = 0; s < 2; s++) {
		char **names = test_list_dir(values, suffixes[s], false, NULL);
		for (char **p = names; *p; p++, nreal++) {
			char path[4096];
			size_t len = 0;
			snprintf(path, sizeof(path), "%s/%s%s", values, *p, suffixes[s]);
			char *data = test_slurp(path, &len);
			REQUIRE(data, "%s", path);
			check_value(path, data, len, NULL, NULL, false);
			free(data);
		}
		test_free_names(names);
	}
	printf("fixtures: %d HEAD, %d apiextensions, %d from releases, %d real values; %d "
	       "renderings compared, %d differ; %d of %d .yaml and %d .json equal byte for "
	       "byte\n",
	       nhead, napi, nrel, nreal, compared, differ, fixture_yaml, nhead + napi,
	       fixture_json);
	CHECK(nhead > 0 && napi > 0 && nrel > 0 && nreal > 0);
	CHECK_EQ(differ, 0);
	return test_summary();
}

/* ---- synthetic ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 32) % n;
}

/* pieces that decide a scalar's style, and some ordinary text */
static const char *const atoms[] = {
	"a",
	"b",
	"Z",
	"word",
	"x1",
	"0",
	"7",
	" ",
	" ",
	"  ",
	":",
	": ",
	"#",
	" #",
	"-",
	"- ",
	"?",
	"? ",
	",",
	"[",
	"]",
	"{",
	"}",
	"&",
	"*",
	"!",
	"|",
	">",
	"'",
	"\"",
	"%",
	"@",
	"`",
	"\\",
	"\n",
	"\n",
	"\n\n",
	"\r",
	"\r\n",
	"\t",
	"\x00",
	"\x7f",
	"\x1b",
	"\x07",
	"é",
	"日本",
	"\xf0\x9f\x98\x80",
	"\xc2\xa0",
	"\xc2\x85",
	"\xe2\x80\xa8",
	"\xe2\x80\xa9",
	"\xef\xbb\xbf",
	"\xef\xbf\xbf",
	"\xef\xbf\xbe",
	"\xc2\x80",
	"\xed\x9f\xbf",
	"\xee\x80\x80",
	"\xff",
	"\xc3",
	"\xe2\x80",
	"---",
	"...",
	"=",
	"<<",
	".",
	"_",
	"/",
	"~",
};

/* whole strings that YAML 1.1 reads as something else */
static const char *const specials[] = {
	"",
	"true",
	"False",
	"yes",
	"No",
	"on",
	"OFF",
	"y",
	"n",
	"null",
	"~",
	"NULL",
	"123",
	"-17",
	"+5",
	"0x1F",
	"0o17",
	"0b101",
	"017",
	"1_000",
	"1.5",
	"1e3",
	".5",
	"-.inf",
	".NaN",
	"2001-12-14",
	"2001-12-14t21:59:43.10-05:00",
	"2001-12-14 21:59:43.10",
	"12:30",
	"190:20:30",
	"1:2",
	"<<",
	"=",
	"-",
	"?",
	":",
	"- ",
	"---",
	"...",
	"#",
	"a #b",
	"a: b",
	"a:b",
	" lead",
	"trail ",
	"multi\nline",
	"end\n",
	"\n",
	"\n\n",
	" \n",
	"a \nb",
	"a\n b",
	"a\n\n",
	"9223372036854775808",
	"18446744073709551616",
};

static void gen_string(struct buf *b)
{
	b->len = 0;
	if (rnd(4) == 0) {
		k8s_buf_adds(b, specials[rnd(sizeof(specials) / sizeof(specials[0]))]);
		if (b->len == 0 && rnd(2))
			return;
		if (rnd(2))
			return;
	}
	/* mostly short; sometimes long lines that the emitter folds */
	uint32_t n = rnd(8) == 0 ? 20 + rnd(120) : rnd(8);
	for (uint32_t i = 0; i < n; i++) {
		const char *a = atoms[rnd(sizeof(atoms) / sizeof(atoms[0]))];
		k8s_buf_add(b, a, a[0] ? strlen(a) : 1); /* "\x00" is one NUL byte */
	}
}

static struct jval *gen_value(int depth, struct buf *tmp)
{
	static const char *const nums[] = {"0",
					   "-1",
					   "42",
					   "1.5",
					   "-0.25",
					   "1e+30",
					   "1e400",
					   "0x10",
					   "12345678901234567890",
					   "1_0",
					   "abc",
					   "3.0",
					   "-9223372036854775808"};
	uint32_t t = depth >= 6 ? rnd(4) : rnd(7);
	struct jval *v;

	switch (t) {
	case 0:
		return k8s_jv_new(J_NULL);
	case 1:
		return k8s_jv_bool(rnd(2));
	case 2:
		return k8s_jv_num(nums[rnd(sizeof(nums) / sizeof(nums[0]))]);
	case 3:
		gen_string(tmp);
		return k8s_jv_str(tmp->data ? (char *)tmp->data : "", tmp->len);
	case 4: {
		v = k8s_jv_new(J_ARR);
		uint32_t n = rnd(4);
		for (uint32_t i = 0; i < n; i++)
			REQUIRE(!k8s_jv_push(v, gen_value(depth + 1, tmp)));
		return v;
	}
	default: {
		v = k8s_jv_new(J_OBJ);
		uint32_t n = rnd(6);
		for (uint32_t i = 0; i < n; i++) {
			struct buf k;
			k8s_buf_init(&k);
			if (rnd(10) == 0) {
				/* a key over 128 bytes: "? key" */
				for (int j = 0; j < 14; j++)
					k8s_buf_adds(&k, j % 3 ? "longkey-x " : "k9");
			} else {
				gen_string(&k);
			}
			struct jval *c = gen_value(depth + 1, tmp);
			REQUIRE(!k8s_jv_set(v, k.data ? (char *)k.data : "", k.len, c));
			k8s_buf_free(&k);
		}
		return v;
	}
	}
}

static void test_random_trees(void)
{
	struct buf tmp;
	int before = differ;

	k8s_buf_init(&tmp);
	for (int i = 0; i < 20000; i++) {
		char what[64];
		struct jval *v = gen_value(0, &tmp);
		REQUIRE(v);
		snprintf(what, sizeof(what), "random tree %d", i);
		if (!same_yaml(what, v, NULL) && differ - before <= 3) {
			struct buf j;
			k8s_buf_init(&j);
			k8s_json_write(&j, v, 0);
			fprintf(stderr, "  tree: %.*s\n", (int)j.len, (char *)j.data);
			k8s_buf_free(&j);
		}
		k8s_jv_free(v);
	}
	k8s_buf_free(&tmp);
	CHECK_EQ(differ - before, 0);
}

/* a deep value: both fail the same way past the depth limit */
static void test_too_deep(void)
{
	struct jval *root = k8s_jv_new(J_ARR), *v = root;

	for (int i = 0; i < K8S_YAML_MAX_DEPTH + 5; i++) {
		struct jval *c = k8s_jv_new(J_ARR);
		REQUIRE(!k8s_jv_push(v, c));
		v = c;
	}
	CHECK(same_yaml("too deep", root, NULL));
	struct buf b;
	k8s_buf_init(&b);
	char *err = NULL;
	CHECK_EQ(k8s_yaml_write(&b, root, &err), -EINVAL);
	CHECK(err && strstr(err, "too deeply"));
	free(err);
	k8s_buf_free(&b);
	k8s_jv_free(root);
}

/* Pods with what bench's generator puts in them: labels, annotations (one holding
 * multi-line JSON), owner references, containers with env, probes, resources and long
 * command lines, volumes, tolerations, status with conditions and container states,
 * and managedFields. */
static char *gen_pod(unsigned i)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	unsigned nc = 1 + i % 3;

	REQUIRE(f);
	fprintf(f,
		"{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web-%u-%05u\","
		"\"generateName\":\"web-%u-\",\"namespace\":\"%s\",\"uid\":\"%08x-aaaa-bbbb-cccc-%"
		"012x\","
		"\"creationTimestamp\":\"2024-03-%02uT09:%02u:%02uZ\","
		"\"labels\":{\"app\":\"web-%u\",\"pod-template-hash\":\"%08x\",\"tier\":\"%s\","
		"\"version\":\"%u.%u\",\"enabled\":\"%s\"},"
		"\"annotations\":{\"kubectl.kubernetes.io/last-applied-configuration\":"
		"\"{\\\"apiVersion\\\":\\\"v1\\\",\\\"kind\\\":\\\"Pod\\\"}\\n\","
		"\"note\":\"  padded: %u #%u  \",\"prometheus.io/port\":\"%u\"},"
		"\"ownerReferences\":[{\"apiVersion\":\"apps/v1\",\"kind\":\"ReplicaSet\","
		"\"name\":\"web-%u-%08x\",\"uid\":\"%08x-1111\",\"controller\":true,"
		"\"blockOwnerDeletion\":true}],"
		"\"managedFields\":[{\"manager\":\"kube-controller-manager\",\"operation\":"
		"\"Update\","
		"\"apiVersion\":\"v1\",\"time\":\"2024-03-01T10:00:00Z\",\"fieldsType\":"
		"\"FieldsV1\","
		"\"fieldsV1\":{\"f:metadata\":{\"f:labels\":{\".\":{},\"f:app\":{}},"
		"\"f:ownerReferences\":{\"k:{\\\"uid\\\":\\\"%08x\\\"}\":{}}},"
		"\"f:spec\":{\"f:containers\":{\"k:{\\\"name\\\":\\\"c0\\\"}\":{\".\":{},"
		"\"f:image\":{}}}}}}]},\"spec\":{\"containers\":[",
		i % 97, i, i % 97, i % 5 ? "default" : "kube-system", i * 13u, i, 1 + i % 28,
		i % 24, i % 60, i % 97, i * 2654435761u, i % 2 ? "frontend" : "backend", i % 3,
		i % 10, i % 4 ? "true" : "yes", i, i % 7, 9000 + i % 100, i % 97, i * 40503u,
		i * 7u, i * 7u);
	for (unsigned c = 0; c < nc; c++) {
		fprintf(f,
			"%s{\"name\":\"c%u\",\"image\":\"registry.example.com/team/app-%u:v1.%u\","
			"\"command\":[\"/bin/sh\",\"-c\",\"exec /app/server --listen=:%u "
			"--log-level=info --config=/etc/app/config.yaml --cache-size=%u "
			"--feature-gates=Alpha=true,Beta=false --extra-long-argument-to-wrap=%u\"],"
			"\"env\":[{\"name\":\"LOG_LEVEL\",\"value\":\"info\"},"
			"{\"name\":\"REPLICA\",\"value\":\"%u\"},{\"name\":\"EMPTY\",\"value\":"
			"\"\"},"
			"{\"name\":\"MOTD\",\"value\":\"line one\\nline two\\n\"},"
			"{\"name\":\"POD_NAME\",\"valueFrom\":{\"fieldRef\":{\"apiVersion\":\"v1\","
			"\"fieldPath\":\"metadata.name\"}}}],"
			"\"ports\":[{\"name\":\"http\",\"containerPort\":%u,\"protocol\":\"TCP\"}],"
			"\"resources\":{\"limits\":{\"cpu\":\"%u\",\"memory\":\"%uMi\"},"
			"\"requests\":{\"cpu\":\"%um\",\"memory\":\"%uMi\"}},"
			"\"livenessProbe\":{\"httpGet\":{\"path\":\"/healthz\",\"port\":%u,"
			"\"scheme\":\"HTTP\"},\"periodSeconds\":10,\"timeoutSeconds\":1,"
			"\"successThreshold\":1,\"failureThreshold\":3},"
			"\"volumeMounts\":[{\"name\":\"kube-api-access-%05u\",\"readOnly\":true,"
			"\"mountPath\":\"/var/run/secrets/kubernetes.io/serviceaccount\"}],"
			"\"imagePullPolicy\":\"IfNotPresent\"}",
			c ? "," : "", c, i % 11, c, 8080 + c, 64 << (i % 4), i, c, 8080 + c, 1 + c,
			128 << (i % 3), 100 + 50 * c, 64 << (c % 3), 8080 + c, i);
	}
	fprintf(f,
		"],\"volumes\":[{\"name\":\"kube-api-access-%05u\",\"projected\":{\"sources\":[{"
		"\"serviceAccountToken\":{\"expirationSeconds\":3607,\"path\":\"token\"}}],"
		"\"defaultMode\":420}}],\"nodeName\":\"node-%u\",\"restartPolicy\":\"Always\","
		"\"tolerations\":[{\"key\":\"node.kubernetes.io/"
		"not-ready\",\"operator\":\"Exists\","
		"\"effect\":\"NoExecute\",\"tolerationSeconds\":300}],\"nodeSelector\":{}},"
		"\"status\":{\"phase\":\"Running\",\"hostIP\":\"10.0.%u.%u\",\"podIP\":\"10.244.%u."
		"%u\","
		"\"startTime\":\"2024-03-01T10:00:00Z\",\"qosClass\":\"Burstable\","
		"\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\","
		"\"lastTransitionTime\":\"2024-03-01T10:00:05Z\"},{\"type\":\"PodScheduled\","
		"\"status\":\"True\",\"lastTransitionTime\":null}],"
		"\"containerStatuses\":[{\"name\":\"c0\",\"ready\":true,\"restartCount\":%u,"
		"\"image\":\"registry.example.com/team/app:v1\",\"imageID\":\"sha256:%08x\","
		"\"state\":{\"running\":{\"startedAt\":\"2024-03-01T10:00:03Z\"}},"
		"\"lastState\":{\"terminated\":{\"exitCode\":137,\"reason\":\"OOMKilled\","
		"\"message\":\"Container c0 was using %uMi, which exceeds its request of 0. "
		"Container c0 exceeded its memory limit and was killed by the kernel's OOM killer "
		"at 2024-03-01T09:59:59Z.\"}}}]}}",
		i, i % 7, i % 256, i % 250, i % 256, i % 250, i % 5, i * 31u, 100 + i % 900);
	fclose(f);
	return buf;
}

static void test_pods(void)
{
	int before = differ;

	for (unsigned i = 0; i < 400; i++) {
		char *json = gen_pod(i), *err = NULL, what[64];
		void *pb = NULL;
		size_t pblen = 0;
		struct jval *v = NULL;
		int r = k8s_encode(NULL, 0, json, strlen(json), NULL, NULL, 0, &pb, &pblen, &err);
		REQUIRE(r == 0, "pod %u: %s", i, err ? err : "");
		REQUIRE(!k8s_decode_view(pb, pblen, 1000 + i, NULL, NULL, &v, NULL));
		snprintf(what, sizeof(what), "pod %u", i);
		same_yaml(what, v, NULL);
		k8s_jv_free(v);
		free(pb);
		free(json);
		free(err);
	}
	CHECK_EQ(differ - before, 0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s SHARED | --synthetic\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "--synthetic"))
		return run_shared(argv[1]);
	TEST_RUN(test_too_deep);
	TEST_RUN(test_pods);
	TEST_RUN(test_random_trees);
	printf("%d renderings compared, %d differ\n", compared, differ);
	return test_summary();
}
