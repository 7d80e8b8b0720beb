/* k8s_mount.c: Kubernetes decoding and encoding for the files of a mount (k8s_mount.h). */
#include "k8s_mount.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s.h"

#define REGISTRY "/registry/"

static bool under_registry(const char *key, size_t len)
{
	return len > strlen(REGISTRY) && memcmp(key, REGISTRY, strlen(REGISTRY)) == 0;
}

bool k8s_mount_applies(void *arg, const char *key, size_t key_len)
{
	struct k8s_mount *m = arg;
	return m->format != K8S_MOUNT_RAW && under_registry(key, key_len);
}

int k8s_mount_render(void *arg, const char *key, size_t key_len, const char *val, size_t val_len,
		     int64_t mod_revision, char **out, size_t *out_len)
{
	struct k8s_mount *m = arg;
	if (m->format == K8S_MOUNT_RAW || !under_registry(key, key_len))
		return -ENOTSUP;
	enum k8s_encoding enc = k8s_detect(val, val_len);
	if (enc != K8S_ENC_PROTOBUF && enc != K8S_ENC_JSON)
		return -ENOTSUP;
	return k8s_decode(val, val_len, m->format == K8S_MOUNT_JSON ? K8S_FMT_JSON : K8S_FMT_YAML,
			  mod_revision, out, out_len, NULL);
}

int64_t k8s_mount_value_time(void *arg, const char *key, size_t key_len, const char *val,
			     size_t val_len)
{
	(void)arg;
	int64_t ns;
	if (!under_registry(key, key_len) || k8s_object_time(val, val_len, &ns) < 0)
		return 0;
	return ns;
}

/* The segments of key after /registry/: resource path, namespace, name. */
static int split_key(const char *key, size_t len, char **name, char **ns_guess, int *depth)
{
	const char *end = key + len;
	const char *last = NULL, *prev = NULL;
	*depth = 0;
	for (const char *p = key; p < end; p++) {
		if (*p == '/') {
			prev = last;
			last = p;
			(*depth)++;
		}
	}
	if (!last || last + 1 >= end)
		return -EINVAL;
	*name = strndup(last + 1, end - last - 1);
	*ns_guess = prev ? strndup(prev + 1, last - prev - 1) : NULL;
	return *name ? 0 : -ENOMEM;
}

/* Cluster-scoped built-in resources: their keys are /registry/RES/NAME. */
static const char *const cluster_scoped[] = {
	"namespaces",
	"minions",
	"nodes",
	"persistentvolumes",
	"clusterroles",
	"clusterrolebindings",
	"storageclasses",
	"priorityclasses",
	"csidrivers",
	"csinodes",
	"volumeattachments",
	"mutatingwebhookconfigurations",
	"validatingwebhookconfigurations",
	"runtimeclasses",
	"certificatesigningrequests",
	"ingressclasses",
	"podsecuritypolicy",
	"apiextensions.k8s.io",
	"apiregistration.k8s.io",
	"flowschemas",
	"prioritylevelconfigurations",
	"validatingadmissionpolicies",
	"validatingadmissionpolicybindings",
	"ranges",
	NULL,
};

static bool resource_is_cluster_scoped(const char *key, size_t len)
{
	const char *res = key + strlen(REGISTRY);
	const char *slash = memchr(res, '/', len - strlen(REGISTRY));
	size_t rl = slash ? (size_t)(slash - res) : len - strlen(REGISTRY);
	for (int i = 0; cluster_scoped[i]; i++)
		if (strlen(cluster_scoped[i]) == rl && memcmp(cluster_scoped[i], res, rl) == 0)
			return true;
	return false;
}

/* The namespace of the original object, or NULL if it has none. */
static char *orig_namespace(const char *orig, size_t orig_len)
{
	char *js = NULL;
	size_t jl;
	if (k8s_decode(orig, orig_len, K8S_FMT_JSON, 0, &js, &jl, NULL) < 0)
		return NULL;
	json_t *root = json_loadb(js, jl, 0, NULL);
	free(js);
	if (!root)
		return NULL;
	const char *ns =
		json_string_value(json_object_get(json_object_get(root, "metadata"), "namespace"));
	char *r = ns && *ns ? strdup(ns) : NULL;
	json_decref(root);
	return r;
}

int k8s_mount_encode(void *arg, const char *key, size_t key_len, const char *orig, size_t orig_len,
		     int64_t orig_rev, const char *text, size_t text_len, char **out,
		     size_t *out_len, char **err)
{
	struct k8s_mount *m = arg;
	if (m->format == K8S_MOUNT_RAW || !under_registry(key, key_len))
		return -ENOTSUP;
	if (orig) {
		enum k8s_encoding enc = k8s_detect(orig, orig_len);
		if (enc == K8S_ENC_ENCRYPTED || enc == K8S_ENC_CBOR) {
			if (err)
				*err = strdup(enc == K8S_ENC_ENCRYPTED
						      ? "the value is encrypted (k8s:enc:); it is "
							"shown raw and cannot be edited here"
						      : "CBOR values are shown raw and cannot be "
							"edited here");
			return -EPERM;
		}
		if (enc != K8S_ENC_PROTOBUF && enc != K8S_ENC_JSON)
			return -ENOTSUP; /* shown raw, stored raw */
		/* A value shown decoded must have been rendered: re-check it
		 * decodes, else it was shown raw and is stored raw. */
		char *probe = NULL;
		size_t pl;
		if (k8s_decode(orig, orig_len, K8S_FMT_JSON, 0, &probe, &pl, NULL) < 0)
			return -ENOTSUP;
		free(probe);
	}
	char *name = NULL, *ns_guess = NULL;
	int depth;
	int ret = split_key(key, key_len, &name, &ns_guess, &depth);
	if (ret < 0)
		return ret;
	char *expect_ns = NULL;
	if (orig) {
		expect_ns = orig_namespace(orig, orig_len);
	} else if (depth >= 4 && !resource_is_cluster_scoped(key, key_len)) {
		/* /registry/RES/NS/NAME (or deeper, for groups) */
		expect_ns = ns_guess ? strdup(ns_guess) : NULL;
	}
	void *o = NULL;
	ret = k8s_encode(orig, orig_len, text, text_len, name, expect_ns, orig ? orig_rev : 0, &o,
			 out_len, err);
	if (ret == 0)
		*out = o;
	free(name);
	free(ns_guess);
	free(expect_ns);
	return ret;
}
