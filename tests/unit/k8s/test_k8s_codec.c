/* test_k8s_codec.c: behaviour of the k8s codec beyond the upstream fixtures:
 * real-cluster values (explicit zeros, a field only old releases define, a
 * JSON-stored CRD), lossless edits, validation errors, new objects, JSON-stored
 * custom resources, YAML quoting, and the formats that stay opaque.
 * Usage: test_k8s_codec SHARED_DIR (the ../shared folder). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "k8s/k8s.h"
#include "k8s/k8s_schema.h"
#include "test.h"

static const char *shared;

#define REAL_CRD                                                                                   \
	"k8s-real/values/"                                                                         \
	"registry-apiextensions.k8s.io-customresourcedefinitions-shirts.stable.example.com.json"

/* A file under the shared folder (main() checked they all exist); malloc'd. */
static char *slurp(const char *rel, size_t *len)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", shared, rel);
	char *b = test_slurp(path, len);
	REQUIRE(b, "cannot read %s", path);
	return b;
}

static bool contains(const void *hay, size_t n, const void *needle, size_t m)
{
	return memmem(hay, n, needle, m) != NULL;
}

/* replace the first occurrence of from by to in s (malloc'd result) */
static char *replace(const char *s, const char *from, const char *to)
{
	const char *at = strstr(s, from);
	char *r;

	if (!at)
		return NULL;
	r = malloc(strlen(s) - strlen(from) + strlen(to) + 1);
	memcpy(r, s, (size_t)(at - s));
	strcpy(r + (at - s), to);
	strcat(r, at + strlen(from));
	return r;
}

static char *dec(const void *v, size_t n, enum k8s_format fmt, int64_t rv)
{
	char *out = NULL, *err = NULL;
	size_t olen;
	int r = k8s_decode(v, n, fmt, rv, &out, &olen, &err);

	CHECK(r == 0, "decode: %d %s", r, err ? err : "");
	free(err);
	return out;
}

static void *enc(const void *orig, size_t olen, const char *text, const char *name, const char *ns,
		 int64_t rv, size_t *len, int *rc, char **err)
{
	void *out = NULL;
	*len = 0;
	*rc = k8s_encode(orig, olen, text, strlen(text), name, ns, rv, &out, len, err);
	return out;
}

static void test_detect(void)
{
	CHECK(k8s_detect("k8s\0\x0a", 5) == K8S_ENC_PROTOBUF, "protobuf");
	CHECK(k8s_detect("k8s:enc:aescbc:v1:key1:xxxx", 27) == K8S_ENC_ENCRYPTED, "encrypted");
	CHECK(k8s_detect("\xd9\xd9\xf7\xa1", 4) == K8S_ENC_CBOR, "cbor");
	CHECK(k8s_detect("{\"a\":1}\n", 8) == K8S_ENC_JSON, "json");
	CHECK(k8s_detect("hello", 5) == K8S_ENC_RAW, "raw");
	CHECK(k8s_detect("", 0) == K8S_ENC_RAW, "empty");

	char *out = (char *)1, *err = NULL;
	size_t n;
	CHECK(k8s_decode("k8s:enc:aescbc:v1:key1:xxxx", 27, K8S_FMT_YAML, 0, &out, &n, &err) ==
		      -ENOTSUP,
	      "encrypted is opaque");
	CHECK(out == NULL && err, "no output, a message");
	free(err);
	err = NULL;
	/* CBOR: the self-describe tag around a map decodes (more in k8s-cbor) */
	CHECK(k8s_decode("\xd9\xd9\xf7\xa1\x61\x61\x01", 7, K8S_FMT_YAML, 0, &out, &n, &err) == 0 &&
		      n == 5 && !memcmp(out, "a: 1\n", 5),
	      "cbor map decodes");
	free(out);
	out = NULL;
	static const struct {
		const char *v;
		size_t len;
		const char *what;
	} bad_cbor[] = {
		{"\xd9\xd9\xf7\x01", 4, "not a map"},
		{"\xd9\xd9\xf7\xa1\x61\x61\x01\x00", 8, "trailing byte"},
		{"\xd9\xd9\xf7\xa1\x61\x61\xc1\x01", 8, "tag 1 (epoch time)"},
		{"\xd9\xd9\xf7\xa1\x61\x61\xf7", 7, "undefined"},
		{"\xd9\xd9\xf7\xa1\x61\x61\xf9\x7e\x00", 9, "NaN"},
		{"\xd9\xd9\xf7\xa1\x61\x61\x1b\x80\0\0\0\0\0\0\0", 15, "beyond int64"},
		{"\xd9\xd9\xf7\xa2\x61\x61\x01\x61\x61\x02", 10, "duplicate key"},
		{"\xd9\xd9\xf7\xa1\x61\x61\x62\xc3\x28", 9, "invalid UTF-8"},
		{"\xd9\xd9\xf7\xbf\x61\x61\x01\xff", 8, "indefinite map"},
		{"\xd9\xd9\xf7\xa1\x61", 5, "truncated"},
		/* headers declaring more than the value holds (libcbor would
		 * allocate gigabytes for them) */
		{"\xd9\xd9\xf7\xbb\0\0\0\0\x10\0\0\0", 12, "map of 2^28 entries"},
		{"\xd9\xd9\xf7\xbb\0\0\x10\0\0\0\0\0", 12, "map of 2^44 entries"},
		{"\xd9\xd9\xf7\x9b\0\0\0\0\x10\0\0\0", 12, "array of 2^28 items"},
		{"\xd9\xd9\xf7\xa1\x61\x61\x5b\0\0\0\0\x10\0\0\0", 15, "2^28-byte string"},
	};
	/* 300 nested arrays: refused, not a deep recursion */
	char deep[310] = "\xd9\xd9\xf7\xa1\x61\x61";
	memset(deep + 6, 0x81, 300);
	deep[306] = 0x01;
	CHECK(k8s_decode(deep, 307, K8S_FMT_YAML, 0, &out, &n, &err) == -ENOTSUP && out == NULL,
	      "nested too deeply");
	free(err);
	err = NULL;
	for (size_t i = 0; i < sizeof(bad_cbor) / sizeof(bad_cbor[0]); i++) {
		CHECK(k8s_decode(bad_cbor[i].v, bad_cbor[i].len, K8S_FMT_YAML, 0, &out, &n, &err) ==
				      -ENOTSUP &&
			      out == NULL && err,
		      "%s", bad_cbor[i].what);
		free(err);
		err = NULL;
	}
	CHECK(k8s_decode("plain text", 10, K8S_FMT_YAML, 0, &out, &n, &err) == -EINVAL, "raw");
	free(err);
	err = NULL;
	/* truncated protobuf inside a valid envelope */
	static const char bad[] = "k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x05\x0a\x09nam";
	CHECK(k8s_decode(bad, sizeof(bad) - 1, K8S_FMT_YAML, 0, &out, &n, &err) == -EINVAL,
	      "malformed body: %s", err ? err : "");
	free(err);
	err = NULL;
	static const char unk[] =
		"k8s\0\x0a\x10\x0a\x07x.io/v1\x12\x05Thing\x12\x00\x1a\x00\x22\x00";
	CHECK(k8s_decode(unk, sizeof(unk) - 1, K8S_FMT_YAML, 0, &out, &n, &err) == -ENOTSUP,
	      "unknown kind");
	free(err);
}

/* text encoded against base gives want back, byte for byte */
static void check_gives(const void *base, size_t blen, const char *text, const void *want,
			size_t wlen, const char *who, const char *what)
{
	size_t n;
	int rc;
	char *err = NULL;
	void *b = enc(base, blen, text, NULL, NULL, 0, &n, &rc, &err);

	CHECK(rc == 0 && n == wlen && !memcmp(b, want, wlen), "%s: %s (%s)", who, what,
	      err ? err : "bytes differ");
	free(b);
	free(err);
}

/* the protobuf values from a real 1.7 cluster */
static void test_real_protobuf(const char *rel, const char *from, const char *to)
{
	size_t len;
	char *orig = slurp(rel, &len);
	char *yaml = dec(orig, len, K8S_FMT_YAML, 0);
	char *json = dec(orig, len, K8S_FMT_JSON, 0);
	char *err = NULL;
	int rc;

	if (!yaml || !json)
		goto out;
	/* unchanged text, YAML and JSON, gives the stored bytes back */
	check_gives(orig, len, yaml, orig, len, rel, "yaml round trip");
	check_gives(orig, len, json, orig, len, rel, "json round trip");

	/* the ObjectMeta field 15 (clusterName, removed after 1.24; an old field of
	 * the union schema) is in the value, empty, so not shown */
	CHECK(contains(orig, len, "\x38\x01\x7a\x00", 4) || contains(orig, len, "\x7a\x00", 2),
	      "%s: has field 15", rel);

	/* edit one field: the result decodes to the edited text, the unknown
	 * field 15 and explicit zeros survive, and reverting gives the original */
	char *edited = replace(yaml, from, to);
	CHECK(edited, "%s: edit target '%s' present", rel, from);
	if (!edited)
		goto out;
	size_t elen;
	void *eb = enc(orig, len, edited, NULL, NULL, 0, &elen, &rc, &err);
	CHECK(rc == 0, "%s: encode edit: %s", rel, err ? err : "");
	free(err);
	err = NULL;
	if (rc == 0) {
		char *back = dec(eb, elen, K8S_FMT_YAML, 0);
		CHECK(back && !strcmp(back, edited), "%s: edited bytes decode to the edit", rel);
		free(back);
		CHECK(contains(eb, elen, "\x7a\x00", 2), "%s: old field 15 kept", rel);
		/* explicit zero strings/ints of ObjectMeta (selfLink.. generation) */
		CHECK(contains(eb, elen, "\x32\x00\x38\x00", 4) ==
			      contains(orig, len, "\x32\x00\x38\x00", 4),
		      "%s: explicit zero values kept", rel);
		CHECK(elen - len == strlen(to) - strlen(from),
		      "%s: only the field grew (%zu vs %zu)", rel, elen, len);
		check_gives(eb, elen, yaml, orig, len, rel, "revert gives original");
	}
	free(eb);
	free(edited);
out:
	free(yaml);
	free(json);
	free(orig);
}

static void test_real_crd(void)
{
	size_t len, tlen;
	char *orig = slurp(REAL_CRD, &len);
	char *yaml = dec(orig, len, K8S_FMT_YAML, 0);
	char *json = dec(orig, len, K8S_FMT_JSON, 0);
	char *err = NULL;
	int rc;
	void *b;

	CHECK(orig[len - 1] == '\n', "stored JSON ends with a newline");
	if (!yaml || !json)
		goto out;
	check_gives(orig, len, yaml, orig, len, "crd", "yaml round trip");
	check_gives(orig, len, json, orig, len, "crd", "json round trip");
	/* an edit changes only that value; the rest keeps its bytes */
	char *edited = replace(yaml, "  scope: Namespaced", "  scope: Cluster");
	CHECK(edited, "scope present");
	b = edited ? enc(orig, len, edited, NULL, NULL, 0, &tlen, &rc, &err) : NULL;
	CHECK(b && rc == 0, "crd edit: %s", err ? err : "");
	if (b && rc == 0) {
		char *expect = replace(orig, "\"scope\":\"Namespaced\"", "\"scope\":\"Cluster\"");
		CHECK(expect && tlen == strlen(expect) && !memcmp(b, expect, tlen),
		      "crd edit touches only scope");
		free(expect);
	}
	free(b);
	free(edited);
	free(err);
	err = NULL;
	/* unknown field on a known kind is refused */
	edited = replace(yaml, "  scope: Namespaced", "  scope: Namespaced\n  scopes: x");
	b = edited ? enc(orig, len, edited, NULL, NULL, 0, &tlen, &rc, &err) : NULL;
	CHECK(rc == -EINVAL && err && strstr(err, "spec.scopes"), "crd unknown field: %s",
	      err ? err : "");
	free(b);
	free(edited);
	free(err);
out:
	free(yaml);
	free(json);
	free(orig);
}

/* as kubectl prints it: keys sorted, a9 before a10 */
static const char cm_yaml[] = "apiVersion: v1\n"
			      "data:\n"
			      "  a9: \"yes\"\n"
			      "  a10: x\n"
			      "  empty: \"\"\n"
			      "  num: \"0755\"\n"
			      "kind: ConfigMap\n"
			      "metadata:\n"
			      "  name: app-config\n"
			      "  namespace: default\n";

/* an edit that encode must refuse: the text, or cm_yaml with from -> to */
struct refusal {
	const char *what;
	enum { ORIG_CM, ORIG_NONE, ORIG_ENCRYPTED } orig;
	const char *text, *from, *to;
	const char *name, *ns;
	int rc;
	bool need_err;		/* err is set (implied by needles) */
	const char *needles[2]; /* what err names */
};

static const struct refusal refusals[] = {
	{.what = "kind change refused",
	 .from = "kind: ConfigMap",
	 .to = "kind: Secret",
	 .name = "app-config",
	 .ns = "default",
	 .rc = -EINVAL,
	 .needles = {"kind"}},
	{.what = "apiVersion change refused",
	 .from = "apiVersion: v1",
	 .to = "apiVersion: v2",
	 .name = "app-config",
	 .ns = "default",
	 .rc = -EINVAL},
	/* name and namespace must match the key */
	{.what = "name mismatch",
	 .text = cm_yaml,
	 .name = "other",
	 .ns = "default",
	 .rc = -EINVAL,
	 .needles = {"metadata.name"}},
	{.what = "ns mismatch",
	 .text = cm_yaml,
	 .name = "app-config",
	 .ns = "kube-system",
	 .rc = -EINVAL,
	 .needles = {"metadata.namespace"}},
	/* unknown field, with its path and line */
	{.what = "unknown field",
	 .from = "\ndata:",
	 .to = "\ndataa:",
	 .rc = -EINVAL,
	 .needles = {"\"dataa\"", "line"}},
	/* wrong type names the field and line */
	{.what = "wrong type",
	 .from = "a10: x",
	 .to = "a10: 5",
	 .rc = -EINVAL,
	 .needles = {"data.a10", "line 4"}},
	{.what = "invalid yaml",
	 .text = "apiVersion: v1\nkind: ConfigMap\nmetadata: [x\n",
	 .rc = -EINVAL,
	 .needles = {"line"}},
	/* invalid JSON falls back to YAML and still fails cleanly */
	{.what = "invalid json",
	 .text = "{\"apiVersion\": \"v1\",",
	 .rc = -EINVAL,
	 .need_err = true},
	/* duplicate keys are refused with their line */
	{.what = "duplicate key",
	 .text = "apiVersion: v1\ndata:\n  x: a\n  x: b\nkind: ConfigMap\n",
	 .rc = -EINVAL,
	 .needles = {"duplicate key", "line 4"}},
	/* kind required for new objects */
	{.what = "kind required",
	 .orig = ORIG_NONE,
	 .text = "metadata:\n  name: x\n",
	 .rc = -EINVAL},
	/* an opaque value cannot be edited */
	{.what = "encrypted values are read-only",
	 .orig = ORIG_ENCRYPTED,
	 .text = cm_yaml,
	 .rc = -ENOTSUP},
};

static void check_refusal(const struct refusal *f, const void *cm, size_t cm_len)
{
	static const char opaque[] = "k8s:enc:aescbc:v1:x";
	const void *orig = f->orig == ORIG_CM ? cm : f->orig == ORIG_ENCRYPTED ? opaque : NULL;
	size_t olen = f->orig == ORIG_CM ? cm_len : f->orig == ORIG_ENCRYPTED ? 19 : 0;
	char *t = f->text ? NULL : replace(cm_yaml, f->from, f->to);
	char *err = NULL;
	size_t n2;
	int rc;
	void *b = enc(orig, olen, f->text ? f->text : t, f->name, f->ns, 0, &n2, &rc, &err);
	bool named = !(f->need_err || f->needles[0]) || err;

	for (size_t i = 0; named && i < 2 && f->needles[i]; i++)
		named = strstr(err, f->needles[i]) != NULL;
	CHECK(rc == f->rc && named, "%s: %s", f->what, err ? err : "(null)");
	free(t);
	free(b);
	free(err);
}

static void test_validation(void)
{
	size_t n, n2;
	int rc;
	char *err = NULL, *t;
	void *cm = enc(NULL, 0, cm_yaml, "app-config", "default", 0, &n, &rc, &err);
	void *b;

	CHECK(rc == 0 && cm, "new ConfigMap: %s", err ? err : "");
	CHECK(k8s_detect(cm, n) == K8S_ENC_PROTOBUF, "ConfigMap is stored as protobuf");
	free(err);
	err = NULL;
	if (!cm)
		return;
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
		check_refusal(&refusals[i], cm, n);
	/* resourceVersion: shown on decode, must match, cleared when stored */
	char *y42 = dec(cm, n, K8S_FMT_YAML, 42);
	CHECK(y42 && strstr(y42, "  resourceVersion: \"42\"\n"), "rv shown");
	b = enc(cm, n, y42, "app-config", "default", 42, &n2, &rc, &err);
	CHECK(rc == 0 && n2 == n && !memcmp(b, cm, n), "rv cleared, bytes unchanged");
	free(b);
	free(err);
	err = NULL;
	b = enc(cm, n, y42, "app-config", "default", 43, &n2, &rc, &err);
	CHECK(rc == -EINVAL && err && strstr(err, "resourceVersion"), "stale rv refused: %s",
	      err ? err : "(null)");
	free(b);
	free(err);
	err = NULL;
	free(y42);
	/* missing name/namespace are filled in from the key */
	t = replace(cm_yaml, "  name: app-config\n  namespace: default\n", "  labels: {a: b}\n");
	b = enc(NULL, 0, t, "app-config", "default", 0, &n2, &rc, &err);
	CHECK(rc == 0, "fill name: %s", err ? err : "");
	if (rc == 0) {
		char *y = dec(b, n2, K8S_FMT_YAML, 0);
		CHECK(y && strstr(y, "  name: app-config\n  namespace: default\n"), "filled: %s",
		      y ? y : "(null)");
		free(y);
	}
	free(t);
	free(b);
	free(err);
	err = NULL;
	free(cm);
}

static void test_new_objects(void)
{
	size_t n;
	int rc;
	char *err = NULL;
	/* Go writes every non-pointer field, even empty: the new ConfigMap has
	 * ObjectMeta's empty strings, generation 0 and a zero creationTimestamp */
	void *b = enc(NULL, 0, cm_yaml, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0 && contains(b, n, "\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00", 10),
	      "Go-style zero fields");
	char *y = b ? dec(b, n, K8S_FMT_YAML, 0) : NULL;
	CHECK(y && !strcmp(y, cm_yaml), "ConfigMap decodes back to its text:\n%s", y ? y : "");
	free(y);
	free(b);
	free(err);
	err = NULL;

	/* a Deployment with IntOrString, Quantity and a RawExtension-free spec */
	const char *dep = "apiVersion: apps/v1\n"
			  "kind: Deployment\n"
			  "metadata:\n"
			  "  name: web\n"
			  "  namespace: default\n"
			  "spec:\n"
			  "  replicas: 3\n"
			  "  selector:\n"
			  "    matchLabels:\n"
			  "      app: web\n"
			  "  strategy:\n"
			  "    rollingUpdate:\n"
			  "      maxSurge: 25%\n"
			  "      maxUnavailable: 1\n"
			  "    type: RollingUpdate\n"
			  "  template:\n"
			  "    metadata:\n"
			  "      labels:\n"
			  "        app: web\n"
			  "    spec:\n"
			  "      containers:\n"
			  "      - image: nginx:1.25\n"
			  "        name: web\n"
			  "        resources:\n"
			  "          limits:\n"
			  "            memory: 128Mi\n"
			  "          requests:\n"
			  "            cpu: 100m\n"
			  "status: {}\n";
	b = enc(NULL, 0, dep, "web", "default", 0, &n, &rc, &err);
	CHECK(rc == 0, "deployment: %s", err ? err : "");
	y = b ? dec(b, n, K8S_FMT_YAML, 0) : NULL;
	/* Go shows non-omitempty zero fields of the structs it decoded */
	CHECK(y && strstr(y, "      maxSurge: 25%\n      maxUnavailable: 1\n"), "intorstring: %s",
	      y ? y : "(null)");
	CHECK(y && strstr(y, "            memory: 128Mi\n"), "quantity");
	CHECK(y && strstr(y, "  replicas: 3\n"), "replicas");
	CHECK(y && strstr(y, "      creationTimestamp: null\n") == NULL, "omitzero time");
	free(y);
	free(b);
	free(err);
	err = NULL;

	/* a custom resource: JSON, keys sorted like Go's map marshaling */
	const char *cr = "apiVersion: stable.example.com/v1\nkind: Shirt\nmetadata:\n  name: s1\n"
			 "spec:\n  size: L\n  color: red\n";
	b = enc(NULL, 0, cr, "s1", "default", 0, &n, &rc, &err);
	const char *want =
		"{\"apiVersion\":\"stable.example.com/v1\",\"kind\":\"Shirt\",\"metadata\":"
		"{\"name\":\"s1\",\"namespace\":\"default\"},\"spec\":{\"color\":\"red\","
		"\"size\":\"L\"}}\n";
	CHECK(rc == 0 && n == strlen(want) && !memcmp(b, want, n), "custom resource: %.*s", (int)n,
	      b ? (char *)b : "");
	/* edit: changed value in place, new key where it sorts */
	if (rc == 0) {
		size_t n2;
		void *b2 = enc(b, n,
			       "apiVersion: stable.example.com/v1\nkind: Shirt\nmetadata:\n"
			       "  name: s1\n  namespace: default\nspec:\n  size: XL\n  color: "
			       "red\n  fit: slim\n",
			       "s1", "default", 0, &n2, &rc, &err);
		const char *want2 =
			"{\"apiVersion\":\"stable.example.com/v1\",\"kind\":\"Shirt\","
			"\"metadata\":{\"name\":\"s1\",\"namespace\":\"default\"},"
			"\"spec\":{\"color\":\"red\",\"fit\":\"slim\",\"size\":\"XL\"}}\n";
		CHECK(rc == 0 && n2 == strlen(want2) && !memcmp(b2, want2, n2), "cr edit: %.*s",
		      (int)n2, b2 ? (char *)b2 : "");
		free(b2);
	}
	free(b);
	free(err);
}

static void test_yaml_style(void)
{
	/* quoting as go-yaml v2 (kubectl) does it */
	const char *in =
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"q\"},"
		"\"data\":{\"b1\":\"yes\",\"b2\":\"On\",\"b3\":\"y\",\"n1\":\"~\","
		"\"n2\":\"null\",\"i1\":\"0x1F\",\"i2\":\"1_000\",\"f1\":\"1e3\","
		"\"f2\":\".5\",\"f3\":\"08\",\"t1\":\"2006-1-2\",\"s60\":\"12:30\","
		"\"v\":\"1.2.3\",\"c\":\"a: b\",\"h\":\"#x\",\"star\":\"*\",\"sp\":\" x\","
		"\"ml\":\"a\\nb\",\"u\":\"h\\u00e9llo\",\"tab\":\"a\\tb\",\"lt\":\"<<\","
		"\"x10\":\"\",\"x9\":\"\",\"x09\":\"\",\"xa\":\"\",\"X\":\"\",\"_\":\"\"}}";
	const char *want = "apiVersion: v1\n"
			   "data:\n"
			   "  _: \"\"\n"
			   "  X: \"\"\n"
			   "  b1: \"yes\"\n"
			   "  b2: \"On\"\n"
			   "  b3: \"y\"\n"
			   "  c: 'a: b'\n"
			   "  f1: \"1e3\"\n"
			   "  f2: \".5\"\n"
			   "  f3: \"08\"\n"
			   "  h: '#x'\n"
			   "  i1: \"0x1F\"\n"
			   "  i2: \"1_000\"\n"
			   "  lt: <<\n"
			   "  ml: |-\n"
			   "    a\n"
			   "    b\n"
			   "  n1: \"~\"\n"
			   "  n2: \"null\"\n"
			   "  s60: \"12:30\"\n"
			   "  sp: ' x'\n"
			   "  star: '*'\n"
			   "  t1: \"2006-1-2\"\n"
			   "  tab: \"a\\tb\"\n"
			   "  u: h\xc3\xa9llo\n"
			   "  v: 1.2.3\n"
			   "  x9: \"\"\n"
			   "  x09: \"\"\n"
			   "  x10: \"\"\n"
			   "  xa: \"\"\n"
			   "kind: ConfigMap\n"
			   "metadata:\n"
			   "  name: q\n";
	size_t n, n2;
	int rc;
	char *err = NULL;
	void *b = enc(NULL, 0, in, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0, "encode: %s", err ? err : "");
	char *y = b ? dec(b, n, K8S_FMT_YAML, 0) : NULL;
	CHECK(y && !strcmp(y, want), "yaml style:\n%s", y ? y : "");
	/* and it parses back to the same value */
	if (y) {
		void *b2 = enc(b, n, y, NULL, NULL, 0, &n2, &rc, &err);
		CHECK(rc == 0 && n2 == n && !memcmp(b2, b, n), "yaml parses back");
		free(b2);
	}
	free(y);
	free(b);
	free(err);
	err = NULL;

	/* YAML 1.1 input resolution: unquoted yes is a boolean, not a string */
	b = enc(NULL, 0, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: q}\ndata: {a: yes}\n",
		NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == -EINVAL && err && strstr(err, "data.a"), "yes is a bool: %s",
	      err ? err : "(null)");
	free(b);
	free(err);
	err = NULL;
	/* numbers: int64, floats formatted as Go does */
	const char *pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
			  "  containers: [{name: c, image: i}]\n"
			  "  activeDeadlineSeconds: 9007199254740993\n"
			  "  terminationGracePeriodSeconds: 0x10\n";
	b = enc(NULL, 0, pod, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0, "pod: %s", err ? err : "");
	y = b ? dec(b, n, K8S_FMT_YAML, 0) : NULL;
	CHECK(y && strstr(y, "  activeDeadlineSeconds: 9007199254740993\n") &&
		      strstr(y, "  terminationGracePeriodSeconds: 16\n"),
	      "int64 exact, hex int: %s", y ? y : "(null)");
	free(y);
	free(b);
	free(err);
}

/* a big map: one changed value touches one entry; added and removed keys */
static void test_map_edits(void)
{
	char *y = NULL, *y2, *y3;
	size_t len = 0, n, n2, n3;
	FILE *f = open_memstream(&y, &len);
	int rc;
	char *err = NULL;

	fprintf(f, "apiVersion: v1\ndata:\n");
	for (int i = 0; i < 5000; i++)
		fprintf(f, "  k%05d: v%d\n", i, i);
	fprintf(f, "kind: ConfigMap\nmetadata:\n  name: big\n");
	fclose(f);
	void *b = enc(NULL, 0, y, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0, "big map: %s", err ? err : "");
	y2 = replace(y, "  k02500: v2500\n", "  k02500: changed\n");
	void *b2 = enc(b, n, y2, NULL, NULL, 0, &n2, &rc, &err);
	CHECK(rc == 0 && n2 == n + 2, "one value changed: %zu vs %zu", n2, n);
	/* only the envelope's length and that entry differ: the middle and the
	 * tail are byte for byte the original */
	const char *at = memmem(b, n, "k02500", 6);
	if (at && rc == 0) {
		size_t start = (size_t)(at - (const char *)b) - 4; /* entry tag, len, key tag */
		size_t tail = n - (start + 4 + 6 + 7);
		CHECK(!memcmp((char *)b + 24, (char *)b2 + 24, start - 24), "middle unchanged");
		CHECK(!memcmp((char *)b + n - tail, (char *)b2 + n2 - tail, tail),
		      "tail unchanged");
		CHECK(memmem(b2, n2,
			     "\x12\x07"
			     "changed",
			     9),
		      "new value present");
	}
	/* remove one key, add one */
	y3 = replace(y2, "  k00007: v7\n", "");
	char *y4 = replace(y3, "  k04999: v4999\n", "  k04999: v4999\n  zz: new\n");
	void *b3 = enc(b2, n2, y4, NULL, NULL, 0, &n3, &rc, &err);
	CHECK(rc == 0, "add/remove: %s", err ? err : "");
	char *back = b3 ? dec(b3, n3, K8S_FMT_YAML, 0) : NULL;
	CHECK(back && !strcmp(back, y4), "map edits decode back");
	free(back);
	free(b);
	free(b2);
	free(b3);
	free(y);
	free(y2);
	free(y3);
	free(y4);
	free(err);
}

/* hand-made protobuf helpers */
struct pbuf {
	unsigned char b[512];
	size_t n;
};

static void pb_raw(struct pbuf *p, const void *d, size_t n)
{
	memcpy(p->b + p->n, d, n);
	p->n += n;
}

static void pb_len(struct pbuf *p, unsigned num, const void *d, size_t n)
{
	unsigned char t[2] = {(unsigned char)(num << 3 | 2), (unsigned char)n};
	pb_raw(p, t, 2); /* small numbers and lengths only */
	pb_raw(p, d, n);
}

static size_t count(const void *hay, size_t n, const void *needle, size_t m)
{
	size_t c = 0;
	for (const char *p = hay; (p = memmem(p, n - (size_t)(p - (const char *)hay), needle, m));
	     p++)
		c++;
	return c;
}

/* an unknown field inside a list element stays with that element when other
 * elements are inserted before it or removed */
static void test_list_unknown(void)
{
	static const unsigned char unk[] = {0xb8, 0x3e, 0x01}; /* field 999 = 1 */
	struct pbuf ca = {0}, cb = {0}, spec = {0}, md = {0}, pod = {0}, tm = {0}, env = {0};
	size_t n;
	int rc;
	char *err = NULL;

	pb_len(&ca, 1, "a", 1);
	pb_len(&ca, 2, "img", 3);
	pb_len(&cb, 1, "b", 1);
	pb_len(&cb, 2, "img", 3);
	pb_raw(&cb, unk, 3);
	pb_len(&spec, 2, ca.b, ca.n);
	pb_len(&spec, 2, cb.b, cb.n);
	pb_len(&md, 1, "p", 1);
	pb_len(&pod, 1, md.b, md.n);
	pb_len(&pod, 2, spec.b, spec.n);
	pb_len(&tm, 1, "v1", 2);
	pb_len(&tm, 2, "Pod", 3);
	pb_raw(&env, "k8s\0", 4);
	pb_len(&env, 1, tm.b, tm.n);
	pb_len(&env, 2, pod.b, pod.n);
	pb_raw(&env, "\x1a\x00\x22\x00", 4);

	char *y = dec(env.b, env.n, K8S_FMT_YAML, 0);
	CHECK(y && strstr(y, "  - image: img\n    name: b\n"), "list decoded: %s",
	      y ? y : "(null)");
	if (!y)
		return;
	/* unchanged: exact */
	void *b = enc(env.b, env.n, y, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0 && n == env.n && !memcmp(b, env.b, n), "list round trip");
	free(b);
	/* insert an element in front */
	char *ins = replace(y, "  - image: img\n    name: a\n",
			    "  - image: img\n    name: z\n    resources: {}\n"
			    "  - image: img\n    name: a\n");
	b = enc(env.b, env.n, ins, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0 && count(b, n, unk, 3) == 1 && memmem(b, n, cb.b, cb.n),
	      "insert: unknown field stays with b");
	free(b);
	free(ins);
	/* remove the first element */
	char *del = replace(y, "  - image: img\n    name: a\n    resources: {}\n", "");
	b = enc(env.b, env.n, del, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0 && count(b, n, unk, 3) == 1 && memmem(b, n, cb.b, cb.n),
	      "remove: unknown field stays with b");
	free(b);
	free(del);
	/* change b and insert before it: the edit pairs b with b by name */
	char *chg = replace(y, "  - image: img\n    name: b\n", "  - image: img2\n    name: b\n");
	char *chg2 = replace(chg, "  - image: img\n    name: a\n    resources: {}\n", "");
	b = enc(env.b, env.n, chg2, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0 && count(b, n, unk, 3) == 1, "edit + remove: unknown field kept");
	char *back = b ? dec(b, n, K8S_FMT_YAML, 0) : NULL;
	CHECK(back && !strcmp(back, chg2), "edit + remove decodes back");
	free(back);
	free(b);
	free(chg);
	free(chg2);
	free(y);
	free(err);
}

/* a big custom resource (JSON): an edit and an added key, linear time */
static void test_big_cr(void)
{
	char *y = NULL;
	size_t len = 0, n, n2;
	FILE *f = open_memstream(&y, &len);
	int rc;
	char *err = NULL;

	fprintf(f, "apiVersion: x.example.com/v1\nkind: Big\nmetadata:\n  name: b\nspec:\n");
	for (int i = 0; i < 20000; i++)
		fprintf(f, "  k%d: %d\n", i, i);
	fclose(f);
	void *b = enc(NULL, 0, y, NULL, NULL, 0, &n, &rc, &err);
	CHECK(rc == 0 && k8s_detect(b, n) == K8S_ENC_JSON, "big cr: %s", err ? err : "");
	char *y2 = replace(y, "  k777: 777\n", "  k777: 778\n  k777a: new\n");
	void *b2 = enc(b, n, y2, NULL, NULL, 0, &n2, &rc, &err);
	CHECK(rc == 0 && n2 == n + strlen(",\"k777a\":\"new\""), "big cr edit: %zu vs %zu", n2, n);
	static const char want[] = "\"k7779\":7779,\"k777a\":\"new\",\"k778\":778";
	CHECK(b2 && memmem(b2, n2, want, sizeof(want) - 1),
	      "edit in place, new key where it sorts");
	free(b);
	free(b2);
	free(y);
	free(y2);
	free(err);
}

static void test_typed(void)
{
	size_t len;
	char *pb = slurp("k8s-fixtures/HEAD/core.v1.WatchEvent.pb", &len);
	char *out = NULL, *err = NULL;
	size_t n;

	/* the envelope of a WatchEvent has no type: the caller names it */
	CHECK(k8s_decode(pb, len, K8S_FMT_YAML, 0, &out, &n, &err) == -ENOTSUP, "untyped");
	free(out);
	free(err);
	out = err = NULL;
	CHECK(k8s_decode_typed(pb, len, K8S_FMT_YAML, 0, "v1", "WatchEvent", &out, &n, &err) == 0,
	      "typed: %s", err ? err : "");
	CHECK(out && strstr(out, "type: typeValue\n"), "watch event decoded");
	free(out);
	free(err);
	free(pb);

	/* text without apiVersion/kind, typed by the caller: the envelope names it */
	void *b = NULL;
	size_t bn;
	const char *t = "metadata:\n  name: p\nspec:\n  containers: [{name: c, image: i}]\n";
	err = NULL;
	CHECK(k8s_encode_typed(NULL, 0, t, strlen(t), NULL, NULL, 0, "v1", "Pod", K8S_ENC_RAW, &b,
			       &bn, &err) == 0,
	      "typed encode: %s", err ? err : "");
	out = b ? dec(b, bn, K8S_FMT_YAML, 0) : NULL;
	CHECK(out && strstr(out, "apiVersion: v1\n") && strstr(out, "kind: Pod\n"),
	      "typed envelope");
	free(out);
	free(b);
	free(err);
}

/* union schema: kinds and fields only old releases define (docs/k8s.md) */
static void test_union_schema(void)
{
	const char *psp = "{\"apiVersion\":\"policy/v1beta1\",\"kind\":\"PodSecurityPolicy\","
			  "\"metadata\":{\"name\":\"p\"}}";
	const char *cm = "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
			 "\"metadata\":{\"name\":\"c\"},\"data\":{\"k\":\"v\"}}";
	const char *cm_old = "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
			     "\"metadata\":{\"name\":\"c\",\"clusterName\":\"east\"}}";
	/* ObjectMeta.clusterName is field 15: tag 0x7a */
	static const char empty_cluster[] = {0x7a, 0x00};
	void *b = NULL, *b2 = NULL;
	size_t bn = 0, bn2 = 0;
	char *err = NULL, *out;

	CHECK_STRN(k8s_schema_removed_in("policy/v1beta1", "PodSecurityPolicy"), 4, "1.25");
	CHECK_STRN(k8s_schema_removed_in("autoscaling/v2beta2", "HorizontalPodAutoscaler"), 4,
		   "1.26");
	CHECK_STRN(k8s_schema_removed_in("batch/v2alpha1", "CronJob"), 4, "1.21");
	CHECK(k8s_schema_removed_in("apps/v1", "Deployment") == NULL);
	CHECK(k8s_schema_removed_in("nope/v1", "Nothing") == NULL);
	/* a kind removed from k8s.io/api decodes, and says since when it is gone */
	CHECK(k8s_encode(NULL, 0, psp, strlen(psp), NULL, NULL, 0, &b, &bn, &err) == 0, "%s",
	      err ? err : "");
	CHECK(b && k8s_detect(b, bn) == K8S_ENC_PROTOBUF);
	CHECK(b && k8s_removed_in(b, bn) && !strcmp(k8s_removed_in(b, bn), "1.25"));
	out = b ? dec(b, bn, K8S_FMT_YAML, 0) : NULL;
	CHECK(out && strstr(out, "kind: PodSecurityPolicy\n"), "%s", out ? out : "");
	free(out);
	free(b);
	b = NULL;

	/* JSON-stored: a v1beta1 CRD as old clusters stored it */
	const char *crd =
		"{\"apiVersion\":\"apiextensions.k8s.io/v1beta1\","
		"\"kind\":\"CustomResourceDefinition\",\"metadata\":{\"name\":\"a.b\"}}\n";
	CHECK(k8s_removed_in(crd, strlen(crd)) &&
	      !strcmp(k8s_removed_in(crd, strlen(crd)), "1.22"));
	CHECK(k8s_removed_in("{}\n", 3) == NULL);
	CHECK(k8s_removed_in("k8s\0", 4) == NULL);

	/* a current kind: no removed-in; an old field is neither written nor shown
	 * when absent, as the newest release writes it */
	CHECK(k8s_encode(NULL, 0, cm, strlen(cm), NULL, NULL, 0, &b, &bn, &err) == 0);
	CHECK(b && k8s_removed_in(b, bn) == NULL);
	CHECK(b && !contains(b, bn, empty_cluster, 2), "no clusterName written");
	out = b ? dec(b, bn, K8S_FMT_YAML, 0) : NULL;
	CHECK(out && !strstr(out, "clusterName"), "%s", out ? out : "");
	free(out);
	/* as 1.15 wrote it: clusterName (non-pointer string then) is written empty */
	CHECK(k8s_encode_release("1.15", NULL, 0, cm, strlen(cm), NULL, NULL, 0, NULL, NULL,
				 K8S_ENC_PROTOBUF, &b2, &bn2, &err) == 0,
	      "%s", err ? err : "");
	CHECK(b2 && bn2 == bn + 2 && contains(b2, bn2, empty_cluster, 2), "1.15 form");
	/* which decodes as the same object (empty strings are omitempty) */
	out = b2 ? dec(b2, bn2, K8S_FMT_YAML, 0) : NULL;
	CHECK(out && !strstr(out, "clusterName"), "%s", out ? out : "");
	free(out);
	free(b2);
	b2 = NULL;
	CHECK(k8s_encode_release("2.0", NULL, 0, cm, strlen(cm), NULL, NULL, 0, NULL, NULL,
				 K8S_ENC_PROTOBUF, &b2, &bn2, &err) == -EINVAL);
	free(err);
	err = NULL;
	CHECK(k8s_encode_release("1.+15", NULL, 0, cm, strlen(cm), NULL, NULL, 0, NULL, NULL,
				 K8S_ENC_PROTOBUF, &b2, &bn2, &err) == -EINVAL);
	free(err);
	err = NULL;
	free(b);
	b = NULL;

	/* an old field that is stored is shown, and an edit elsewhere keeps it */
	CHECK(k8s_encode(NULL, 0, cm_old, strlen(cm_old), NULL, NULL, 0, &b, &bn, &err) == 0, "%s",
	      err ? err : "");
	out = b ? dec(b, bn, K8S_FMT_YAML, 0) : NULL;
	CHECK(out && strstr(out, "  clusterName: east\n"), "%s", out ? out : "");
	if (out && b) {
		char *ed = replace(out, "name: c\n", "name: c\n  labels: {a: b}\n");
		CHECK(k8s_encode(b, bn, ed, strlen(ed), NULL, NULL, 0, &b2, &bn2, &err) == 0, "%s",
		      err ? err : "");
		char *back = b2 ? dec(b2, bn2, K8S_FMT_YAML, 0) : NULL;
		CHECK(back && strstr(back, "  clusterName: east\n") && strstr(back, "a: b"), "%s",
		      back ? back : "");
		free(back);
		free(ed);
	}
	free(out);
	free(b);
	free(b2);
	free(err);
}

static void test_real_pod(void)
{
	test_real_protobuf("k8s-real/values/registry-pods-default-pi-dqtsw.bin", "image: perl\n",
			   "image: perl:5.36\n");
}

static void test_real_job(void)
{
	test_real_protobuf("k8s-real/values/registry-jobs-default-pi.bin", "    job-name: pi\n",
			   "    job-name: pi-edited\n");
}

/* The files of the shared folder the tests read. */
static const char *const shared_files[] = {
	"k8s-real/values/registry-pods-default-pi-dqtsw.bin",
	"k8s-real/values/registry-jobs-default-pi.bin",
	REAL_CRD,
	"k8s-fixtures/HEAD/core.v1.WatchEvent.pb",
};

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s SHARED_DIR\n", argv[0]);
		return 2;
	}
	shared = argv[1];
	for (size_t i = 0; i < sizeof(shared_files) / sizeof(shared_files[0]); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", shared, shared_files[i]);
		if (access(path, R_OK) != 0) {
			printf("skip: %s missing (%s)\n", path,
			       strstr(path, "k8s-real")
				       ? "a real cluster's values: only in ../shared, not public"
				       : "Kubernetes fixtures: ../shared, or tools/fetch-k8s-data.sh DIR "
					 "and -Dshared_dir=DIR");
			return 77;
		}
	}
	TEST_RUN(test_detect);
	TEST_RUN(test_real_pod);
	TEST_RUN(test_real_job);
	TEST_RUN(test_real_crd);
	TEST_RUN(test_validation);
	TEST_RUN(test_new_objects);
	TEST_RUN(test_yaml_style);
	TEST_RUN(test_map_edits);
	TEST_RUN(test_list_unknown);
	TEST_RUN(test_big_cr);
	TEST_RUN(test_typed);
	TEST_RUN(test_union_schema);
	return test_summary();
}
