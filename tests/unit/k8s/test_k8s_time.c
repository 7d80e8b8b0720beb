/* test_k8s_time.c: k8s_object_time over hand-built protobuf and JSON objects,
 * malformed input, and every Kubernetes round-trip fixture in ../shared
 * (expected times computed independently from the fixture's .json with
 * jansson and timegm). */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "k8s/k8s.h"
#include "test.h"

#define S 1000000000LL

/* ---- a tiny protobuf writer ---- */

struct pb {
	unsigned char b[4096];
	size_t n;
};

static void pb_varint(struct pb *p, uint64_t v)
{
	do {
		REQUIRE(p->n < sizeof(p->b));
		p->b[p->n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
}

static void pb_bytes(struct pb *p, uint32_t num, const void *d, size_t len)
{
	pb_varint(p, (uint64_t)num << 3 | 2);
	pb_varint(p, len);
	REQUIRE(p->n + len <= sizeof(p->b));
	memcpy(p->b + p->n, d, len);
	p->n += len;
}

static void pb_msg(struct pb *p, uint32_t num, const struct pb *m)
{
	pb_bytes(p, num, m->b, m->n);
}

static void pb_str(struct pb *p, uint32_t num, const char *s)
{
	pb_bytes(p, num, s, strlen(s));
}

/* a metav1.Time / MicroTime message as field num of p */
static void pb_time(struct pb *p, uint32_t num, int64_t sec, int32_t nsec)
{
	struct pb t = {.n = 0};
	pb_varint(&t, 1 << 3 | 0);
	pb_varint(&t, (uint64_t)sec);
	if (nsec) {
		pb_varint(&t, 2 << 3 | 0);
		pb_varint(&t, (uint64_t)(uint32_t)nsec);
	}
	pb_msg(p, num, &t);
}

/* k8s\0 + runtime.Unknown{typeMeta, raw, contentEncoding, contentType} */
static struct pb envelope(const char *api, const char *kind, const struct pb *raw,
			  const char *encoding)
{
	struct pb e = {.n = 0}, tm = {.n = 0};
	memcpy(e.b, "k8s\0", 4);
	e.n = 4;
	pb_str(&tm, 1, api);
	pb_str(&tm, 2, kind);
	pb_msg(&e, 1, &tm);
	pb_msg(&e, 2, raw);
	pb_str(&e, 3, encoding);
	pb_str(&e, 4, "");
	return e;
}

static int obj_time(const void *p, size_t n, int64_t *t)
{
	*t = -1;
	return k8s_object_time(p, n, t);
}

/* Every prefix of a valid value: an error or a time, never a crash (ASan). */
static void truncations(const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int64_t t;
		int r = obj_time(p, i, &t);
		CHECK(r == 0 || r == -ENOENT || r == -EINVAL || r == -ENOTSUP, "prefix %zu: %d", i,
		      r);
	}
}

/* obj wrapped as api/kind: k8s_object_time returns want_ret and, when that is 0, the time
 * want; every prefix of the value gives an error or a time. */
static void pb_case(const char *api, const char *kind, const struct pb *obj, int want_ret,
		    int64_t want)
{
	struct pb e = envelope(api, kind, obj, "");
	int64_t got;
	int r = obj_time(e.b, e.n, &got);
	CHECK(r == want_ret, "%s %s: returned %d", api, kind, r);
	if (want_ret == 0)
		CHECK(got == want, "%s %s: %lld, want %lld", api, kind, (long long)got,
		      (long long)want);
	truncations(e.b, e.n);
}

static void test_pod_managed_fields(void)
{
	struct pb meta = {.n = 0}, mf1 = {.n = 0}, mf2 = {.n = 0}, obj = {.n = 0};
	pb_str(&meta, 1, "web");
	pb_time(&meta, 8, 1000, 0); /* creationTimestamp */
	pb_str(&mf1, 1, "kubectl");
	pb_time(&mf1, 4, 3000, 0);
	pb_time(&mf2, 4, 2000, 0);
	pb_msg(&meta, 17, &mf1);
	pb_msg(&meta, 17, &mf2);
	pb_msg(&obj, 1, &meta);
	pb_time(&obj, 7, 9000, 0); /* Pod field 7 is not a time: ignored */
	pb_case("v1", "Pod", &obj, 0, 3000 * S);

	/* only a creationTimestamp */
	struct pb m2 = {.n = 0}, o2 = {.n = 0};
	pb_time(&m2, 8, 1234, 0);
	pb_msg(&o2, 1, &m2);
	pb_case("apps/v1", "Deployment", &o2, 0, 1234 * S);
	/* seconds past int64 ns are ignored, not wrapped */
	struct pb m4 = {.n = 0}, o4 = {.n = 0};
	pb_time(&m4, 8, 18850593037LL, 0);
	pb_msg(&o4, 1, &m4);
	pb_case("v1", "Pod", &o4, -ENOENT, 0);

	/* no time at all */
	struct pb m3 = {.n = 0}, o3 = {.n = 0};
	pb_str(&m3, 1, "x");
	pb_msg(&o3, 1, &m3);
	pb_case("v1", "ConfigMap", &o3, -ENOENT, 0);

	/* a contentEncoding: raw is not the object */
	struct pb e = envelope("v1", "Pod", &obj, "gzip");
	int64_t got;
	CHECK_EQ(obj_time(e.b, e.n, &got), -ENOTSUP);
}

static void test_events_pb(void)
{
	struct pb meta = {.n = 0}, obj = {.n = 0}, series = {.n = 0};
	pb_time(&meta, 8, 100, 0);
	pb_msg(&obj, 1, &meta);
	pb_time(&obj, 7, 500, 0);     /* lastTimestamp */
	pb_time(&obj, 10, 700, 5000); /* eventTime (MicroTime) */
	pb_varint(&series, 1 << 3 | 0);
	pb_varint(&series, 3);
	pb_time(&series, 2, 900, 42000);
	pb_msg(&obj, 11, &series);
	pb_case("v1", "Event", &obj, 0, 900 * S + 42000);

	/* lastTimestamp alone wins over creation */
	struct pb o2 = {.n = 0};
	pb_msg(&o2, 1, &meta);
	pb_time(&o2, 7, 555, 0);
	pb_case("v1", "Event", &o2, 0, 555 * S);
	/* the same field in another kind is not a time */
	pb_case("v1", "Pod", &o2, 0, 100 * S);

	/* events.k8s.io: eventTime 2, series 3, deprecatedLastTimestamp 14 */
	struct pb o3 = {.n = 0}, s3 = {.n = 0};
	pb_msg(&o3, 1, &meta);
	pb_time(&o3, 2, 150, 0);
	pb_time(&s3, 2, 400, 0);
	pb_msg(&o3, 3, &s3);
	pb_time(&o3, 14, 600, 0);
	pb_case("events.k8s.io/v1", "Event", &o3, 0, 600 * S);
	pb_case("events.k8s.io/v1beta1", "Event", &o3, 0, 600 * S);
	/* core numbering does not apply to events.k8s.io (7 is reason there) */
	struct pb o4 = {.n = 0};
	pb_msg(&o4, 1, &meta);
	pb_time(&o4, 7, 5000, 0);
	pb_case("events.k8s.io/v1", "Event", &o4, 0, 100 * S);
}

static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
	struct tm tm = {
		.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
	tm.tm_sec = s;
	return (int64_t)timegm(&tm) * S;
}

static void json_case(const char *js, int want_ret, int64_t want)
{
	int64_t got;
	int r = obj_time(js, strlen(js), &got);
	CHECK(r == want_ret, "%s: returned %d", js, r);
	if (want_ret == 0)
		CHECK(got == want, "%s: %lld, want %lld", js, (long long)got, (long long)want);
	truncations(js, strlen(js));
}

static void test_json(void)
{
	json_case("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\\\"b\","
		  "\"creationTimestamp\":\"2020-01-02T03:04:05Z\",\"labels\":{\"x\":\"}\"},"
		  "\"managedFields\":[{\"manager\":\"m\",\"time\":\"2021-06-07T08:09:10Z\","
		  "\"fieldsV1\":{\"f:a\":{}}},{\"time\":null},{}]},\"spec\":[1,2,{\"x\":true}]}\n",
		  0, utc(2021, 6, 7, 8, 9, 10));
	json_case("{\"kind\":\"CronTab\",\"apiVersion\":\"stable.example.com/v1\",\"metadata\":"
		  "{\"creationTimestamp\":\"2019-12-31T23:59:59+02:00\"}}",
		  0, utc(2019, 12, 31, 21, 59, 59));
	json_case("{\"metadata\":{\"creationTimestamp\":null}}", -ENOENT, 0);
	json_case("{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{\"creationTimestamp\":"
		  "\"2020-01-01T00:00:00Z\"},\"lastTimestamp\":\"2020-01-01T00:00:05Z\","
		  "\"series\":{\"count\":2,\"lastObservedTime\":\"2020-01-01T00:00:09.123456Z\"},"
		  "\"eventTime\":null}",
		  0, utc(2020, 1, 1, 0, 0, 9) + 123456000);
	/* Event times of an Event are taken even when kind comes last */
	json_case(
		"{\"eventTime\":\"2020-01-01T00:00:07.000001Z\",\"deprecatedLastTimestamp\":"
		"\"2020-01-01T00:00:03Z\",\"apiVersion\":\"events.k8s.io/v1\",\"kind\":\"Event\"}",
		0, utc(2020, 1, 1, 0, 0, 7) + 1000);
	/* ...and not for another kind */
	json_case("{\"kind\":\"Foo\",\"apiVersion\":\"v1\",\"lastTimestamp\":"
		  "\"2020-01-01T00:00:05Z\"}",
		  -ENOENT, 0);
	json_case("{\"metadata\":{\"creationTimestamp\":\"not a time\"}}", -ENOENT, 0);
	json_case("{\"metadata\":{\"creationTimestamp\":\"1969-12-31T23:59:59Z\"}}", -ENOENT, 0);
	/* past 2262 a time no longer fits int64 ns: ignored, not wrapped */
	json_case("{\"metadata\":{\"creationTimestamp\":\"2567-05-01T00:00:00Z\"}}", -ENOENT, 0);
	json_case("{\"metadata\":{\"creationTimestamp\":\"2262-01-01T00:00:00Z\"}}", 0,
		  utc(2262, 1, 1, 0, 0, 0));
	json_case("{\"metadata\":{\"creationTimestamp\":\"2020-13-01T00:00:00Z\"}}", -ENOENT, 0);
	json_case("{\"metadata\": {\"managedFields\": [ {\"time\": 3} ] } ,}", -EINVAL, 0);
	json_case("{\"metadata\":{\"creationTimestamp\":\"2020-01-01T00:00:00Z\"", -ENOTSUP, 0);
	json_case("{\"metadata\":{\"creationTimestamp\" \"2020-01-01T00:00:00Z\"}}", -EINVAL, 0);
	json_case("{]}", -EINVAL, 0);
	json_case("{\"a\":]}", -EINVAL, 0);
	json_case("{\"a\":1 2}", -EINVAL, 0);
}

static void test_garbage(void)
{
	int64_t got;
	CHECK_EQ(obj_time("hello", 5, &got), -ENOTSUP);
	CHECK_EQ(obj_time("", 0, &got), -ENOTSUP);
	CHECK_EQ(obj_time(NULL, 0, &got), -ENOTSUP);
	CHECK_EQ(obj_time("k8s\0\xff\xff", 6, &got), -EINVAL);
	CHECK_EQ(obj_time("k8s\0\x0b", 5, &got), -EINVAL); /* a group */
	CHECK_EQ(obj_time("k8s\0", 4, &got), -ENOENT);
	/* a metadata that is not a message */
	struct pb o = {.n = 0};
	pb_str(&o, 1, "\xff\xff\xff");
	struct pb e = envelope("v1", "Pod", &o, "");
	CHECK_EQ(obj_time(e.b, e.n, &got), -EINVAL);
	/* pseudo-random bytes behind the magic: an answer, no crash */
	unsigned char buf[256];
	uint32_t x = 12345;
	for (int round = 0; round < 2000; round++) {
		size_t n = 4 + (size_t)(x % 200);
		memcpy(buf, "k8s\0", 4);
		for (size_t i = 4; i < n; i++) {
			x = x * 1103515245 + 12345;
			buf[i] = (unsigned char)(x >> 16);
		}
		int r = obj_time(buf, n, &got);
		CHECK(r == 0 || r == -ENOENT || r == -EINVAL || r == -ENOTSUP, "random: %d", r);
		buf[0] = '{';
		buf[n - 1] = '}';
		r = obj_time(buf, n, &got);
		CHECK(r == 0 || r == -ENOENT || r == -EINVAL || r == -ENOTSUP, "random: %d", r);
	}
}

/* ---- the fixtures ---- */

static bool parse_time(const char *s, int64_t *ns)
{
	struct tm tm = {0};
	const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return false;
	int64_t frac = 0;
	if (*rest == '.') {
		char *end;
		double f = strtod(rest, &end);
		frac = (int64_t)(f * 1e9 + 0.5);
		rest = end;
	}
	if (strcmp(rest, "Z") != 0)
		return false;
	int64_t sec = (int64_t)timegm(&tm);
	if (sec <= 0 || sec >= INT64_MAX / S - 1)
		return false; /* not representable in ns: ignored */
	*ns = sec * S + frac;
	return true;
}

static void take(int64_t *best, json_t *v)
{
	int64_t t;
	if (json_is_string(v) && parse_time(json_string_value(v), &t) && t > *best)
		*best = t;
}

static int64_t expected(json_t *root)
{
	int64_t best = 0;
	json_t *meta = json_object_get(root, "metadata");
	take(&best, json_object_get(meta, "creationTimestamp"));
	size_t i;
	json_t *mf;
	json_array_foreach(json_object_get(meta, "managedFields"), i, mf)
		take(&best, json_object_get(mf, "time"));
	const char *kind = json_string_value(json_object_get(root, "kind"));
	const char *api = json_string_value(json_object_get(root, "apiVersion"));
	if (kind && api && !strcmp(kind, "Event") &&
	    (!strcmp(api, "v1") || !strncmp(api, "events.k8s.io/", 14))) {
		take(&best, json_object_get(root, "lastTimestamp"));
		take(&best, json_object_get(root, "deprecatedLastTimestamp"));
		take(&best, json_object_get(root, "eventTime"));
		take(&best, json_object_get(json_object_get(root, "series"), "lastObservedTime"));
	}
	return best;
}

static int fixtures_checked, fixtures_timed;

static void fixture(const char *dir, const char *base)
{
	char path[4096];
	size_t pl, jl;
	snprintf(path, sizeof(path), "%s/%s.pb", dir, base);
	char *pb = test_slurp(path, &pl);
	snprintf(path, sizeof(path), "%s/%s.json", dir, base);
	char *js = test_slurp(path, &jl);
	if (!pb || !js) {
		free(pb);
		free(js);
		return;
	}
	json_t *root = json_loadb(js, jl, 0, NULL);
	REQUIRE(root, "%s: not JSON", path);
	int64_t want = expected(root);
	/* Only objects: field 1 of meta types (WatchEvent, Status...) is not
	 * an ObjectMeta, and their answer only has to be sane. */
	bool object = json_is_object(json_object_get(root, "metadata"));
	json_decref(root);
	int64_t got_pb = -1, got_js = -1;
	int rp = k8s_object_time(pb, pl, &got_pb);
	int rj = k8s_object_time(js, jl, &got_js);
	if (object) {
		CHECK(want ? (rp == 0 && got_pb == want) : rp == -ENOENT,
		      "%s/%s.pb: %d %lld, want %lld", dir, base, rp, (long long)got_pb,
		      (long long)want);
		CHECK(want ? (rj == 0 && got_js == want) : rj == -ENOENT,
		      "%s/%s.json: %d %lld, want %lld", dir, base, rj, (long long)got_js,
		      (long long)want);
		fixtures_checked++;
		fixtures_timed += want != 0;
	} else {
		CHECK(rp == 0 || rp == -ENOENT || rp == -EINVAL, "%s.pb: %d", base, rp);
		CHECK(rj == 0 || rj == -ENOENT, "%s.json: %d", base, rj);
	}
	free(pb);
	free(js);
}

static int fixture_dir(const char *dir)
{
	if (access(dir, F_OK) != 0)
		return -errno;
	char **names = test_list_dir(dir, ".pb", false, NULL);
	for (char **p = names; *p; p++)
		fixture(dir, *p);
	test_free_names(names);
	return 0;
}

int main(int argc, char **argv)
{
	TEST_RUN(test_pod_managed_fields);
	TEST_RUN(test_events_pb);
	TEST_RUN(test_json);
	TEST_RUN(test_garbage);
	if (argc < 2)
		return test_summary();
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/HEAD", argv[1]);
	if (fixture_dir(dir) == -ENOENT) {
		printf("skip: %s missing (Kubernetes fixtures: ../shared, or tools/fetch-k8s-data.sh DIR and -Dshared_dir=DIR); the hand-built "
		       "cases passed: %s\n",
		       dir, test_failures ? "no" : "yes");
		return test_failures ? 1 : 77;
	}
	snprintf(dir, sizeof(dir), "%s/apiextensions", argv[1]);
	fixture_dir(dir);
	const char *rel[] = {"v1.15.0", "v1.20.0", "v1.24.0", "v1.28.0", "v1.32.0"};
	for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		snprintf(dir, sizeof(dir), "%s/releases/%s", argv[1], rel[i]);
		fixture_dir(dir);
	}
	printf("fixtures: %d objects checked, %d with a time\n", fixtures_checked, fixtures_timed);
	CHECK(fixtures_checked > 300, "only %d fixture objects", fixtures_checked);
	return test_summary();
}
