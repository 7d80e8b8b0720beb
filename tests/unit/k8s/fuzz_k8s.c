/* fuzz_k8s.c: libFuzzer target for the k8s codec (built only with clang).
 *
 * The first input byte picks what the rest is fed to:
 *   even: a stored value -> k8s_decode (YAML and JSON); when it decodes, the
 *         decoded text must re-encode against it to exactly the same bytes
 *         (the lossless property), else we abort;
 *   odd:  edited text (YAML or JSON) -> k8s_encode as a new object and as an
 *         edit of a fixed protobuf Pod, exercising the YAML/JSON parsers and
 *         the validating encoder; what encodes must decode, and that text must
 *         encode back to the same bytes.
 * Crashes, ASan reports and leaks are failures. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s/k8s.h"

/* a small protobuf Pod, made once from YAML */
static void *pod;
static size_t pod_len;

static void init_pod(void)
{
	static const char y[] =
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: d\n"
		"  labels: {a: b}\nspec:\n  containers:\n  - name: c\n    image: i\n"
		"    resources: {limits: {cpu: 100m}}\n";
	char *err = NULL;

	if (k8s_encode(NULL, 0, y, sizeof(y) - 1, NULL, NULL, 0, &pod, &pod_len, &err)) {
		fprintf(stderr, "fuzz init: %s\n", err ? err : "?");
		abort();
	}
}

/* frees what one decode or encode left, for the next */
static void reset(char **out, char **err, void **b)
{
	free(*out);
	free(*err);
	free(*b);
	*out = *err = NULL;
	*b = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *out = NULL, *err = NULL;
	size_t olen = 0;
	void *b = NULL;
	size_t blen = 0;

	if (!pod)
		init_pod();
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	data++;
	size--;
	if (!(mode & 1)) {
		/* the sync's time scan reads every stored value too */
		int64_t t;
		int tr = k8s_object_time(data, size, &t);
		if (tr != 0 && tr != -ENOENT && tr != -EINVAL && tr != -ENOTSUP)
			abort();
		for (int fmt = 0; fmt < 2; fmt++) {
			int r = k8s_decode_typed(data, size, fmt ? K8S_FMT_JSON : K8S_FMT_YAML,
						 mode & 2 ? 7 : 0, "v1", "WatchEvent", &out, &olen,
						 &err);
			/* CBOR values are read-only: no encoder to round-trip */
			if (r == 0 && !(mode & 2) && k8s_detect(data, size) != K8S_ENC_CBOR) {
				int e = k8s_encode_typed(data, size, out, olen, NULL, NULL, 0, "v1",
							 "WatchEvent", K8S_ENC_RAW, &b, &blen,
							 &err);
				if (e != 0 || blen != size || memcmp(b, data, size) != 0) {
					fprintf(stderr, "lossless property broken (%d: %s)\n", e,
						err ? err : "bytes differ");
					abort();
				}
			}
			reset(&out, &err, &b);
		}
		return 0;
	}
	/* as a new object, then as an edit of the Pod; whatever encodes must
	 * decode, and that text must re-encode to the same bytes */
	for (int edit = 0; edit < 2; edit++) {
		int r = edit ? k8s_encode(pod, pod_len, (const char *)data, size, "p", "d",
					  mode & 2 ? 5 : 0, &b, &blen, &err)
			     : k8s_encode(NULL, 0, (const char *)data, size, NULL, NULL, 0, &b,
					  &blen, &err);
		if (r == 0) {
			void *b2 = NULL;
			size_t b2len = 0;
			if (k8s_decode(b, blen, K8S_FMT_YAML, 0, &out, &olen, &err) != 0 ||
			    k8s_encode(b, blen, out, olen, NULL, NULL, 0, &b2, &b2len, &err) != 0 ||
			    b2len != blen || memcmp(b2, b, blen) != 0) {
				fprintf(stderr, "encoded text does not round trip (%s)\n",
					err ? err : "bytes differ");
				abort();
			}
			free(b2);
		}
		reset(&out, &err, &b);
	}
	return 0;
}
