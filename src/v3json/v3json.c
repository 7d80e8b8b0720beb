/* v3json.c: etcd's v3 JSON wire form, shared by the client and the gateway (see v3json.h). */
#include "v3json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"

int v3json_int64(const json_t *v, int64_t *out)
{
	*out = 0;
	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return -EINVAL;
	const char *s = json_string_value(v);
	char *end;
	errno = 0;
	long long x = strtoll(s, &end, 10);
	/* A NUL inside the string would end the number early: refuse it like any junk. */
	if (!*s || *end || errno || strlen(s) != json_string_length(v))
		return -EINVAL;
	*out = (int64_t)x;
	return 0;
}

int v3json_bool(const json_t *v, bool *out)
{
	*out = false;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return -EINVAL;
	*out = json_is_true(v);
	return 0;
}

int v3json_enum(const json_t *v, const char *const *names, int n, int *out)
{
	*out = 0;
	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		json_int_t x = json_integer_value(v);
		if (x < 0 || x >= n)
			return -EINVAL;
		*out = (int)x;
		return 0;
	}
	if (!json_is_string(v))
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		if (strcmp(json_string_value(v), names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

int v3json_array(const json_t *v, size_t *n)
{
	*n = 0;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return -EINVAL;
	*n = json_array_size(v);
	return 0;
}

int v3json_set_b64(json_t *o, const char *k, const void *p, size_t n, bool always)
{
	if (!n && !always)
		return 0;
	size_t len;
	char *s = base64_encode(p, n, &len);
	if (!s)
		return -ENOMEM;
	json_t *v = json_stringn_nocheck(s, len);
	free(s);
	if (!v || json_object_set_new(o, k, v) < 0)
		return -ENOMEM;
	return 0;
}

int v3json_set_true(json_t *o, const char *k, bool v)
{
	if (!v)
		return 0;
	return json_object_set_new(o, k, json_true()) < 0 ? -ENOMEM : 0;
}

json_t *v3json_wrap(const char *k, json_t *inner)
{
	json_t *o = json_object();
	if (!inner || !o) {
		json_decref(inner);
		json_decref(o);
		return NULL;
	}
	/* json_object_set_new() drops inner itself when it fails. */
	if (json_object_set_new(o, k, inner) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}
