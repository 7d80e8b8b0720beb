/* k8s_schema.c: lookups over the generated schema table (k8s_schema_data.c). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_schema.h"

/* k8s_msgs is sorted by name (the generator sorts it), so bsearch works. */
static int cmp_msg(const void *key, const void *elem)
{
	return strcmp(key, ((const struct k8s_msg *)elem)->name);
}

const struct k8s_msg *k8s_schema_msg(const char *name)
{
	return bsearch(name, k8s_msgs, k8s_n_msgs, sizeof(k8s_msgs[0]), cmp_msg);
}

struct kind_key {
	const char *api_version;
	const char *kind;
};

static int cmp_kind(const void *key, const void *elem)
{
	const struct kind_key *k = key;
	const struct k8s_kind *e = elem;
	int r = strcmp(k->api_version, e->api_version);

	return r ? r : strcmp(k->kind, e->kind);
}

static int cmp_api_version(const void *key, const void *elem)
{
	return strcmp(key, ((const struct k8s_kind *)elem)->api_version);
}

/* Does any kind in the table live in this apiVersion? */
static bool known_api_version(const char *api_version)
{
	return bsearch(api_version, k8s_kinds, k8s_n_kinds, sizeof(k8s_kinds[0]),
		       cmp_api_version) != NULL;
}

static const struct k8s_kind *find_kind(const char *api_version, const char *kind)
{
	struct kind_key k = {api_version, kind};
	const struct k8s_kind *e;

	if (!api_version || !kind)
		return NULL;
	e = bsearch(&k, k8s_kinds, k8s_n_kinds, sizeof(k8s_kinds[0]), cmp_kind);
	if (!e && known_api_version(api_version)) {
		/* meta/v1 types (Status, ListOptions, WatchEvent...) are registered
		 * in every built-in group version (not in custom resource groups) */
		k.api_version = "meta.k8s.io/v1";
		e = bsearch(&k, k8s_kinds, k8s_n_kinds, sizeof(k8s_kinds[0]), cmp_kind);
	}
	return e;
}

const struct k8s_msg *k8s_schema_kind(const char *api_version, const char *kind)
{
	const struct k8s_kind *e = find_kind(api_version, kind);

	return e ? &k8s_msgs[e->msg] : NULL;
}

const char *k8s_schema_removed_in(const char *api_version, const char *kind)
{
	const struct k8s_kind *e = find_kind(api_version, kind);

	return e ? e->removed_in : NULL;
}

const struct k8s_field *k8s_schema_field_by_num(const struct k8s_msg *m, uint32_t num)
{
	const uint16_t *ord = &k8s_field_order[m->order_first];
	size_t lo = 0, hi = m->n_order;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct k8s_field *f = &k8s_fields[m->first + ord[mid]];

		if (f->num == num)
			return f;
		if (f->num < num)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct k8s_field *k8s_schema_field_by_json(const struct k8s_msg *m, const char *name,
						 size_t len)
{
	const struct k8s_field *f = k8s_schema_fields(m);

	for (size_t i = 0; i < m->n_fields; i++) {
		if (f[i].flags & (K8S_F_INLINE | K8S_F_TYPEMETA | K8S_F_NOJSON))
			continue;
		if (strlen(f[i].json) == len && memcmp(f[i].json, name, len) == 0)
			return &f[i];
	}
	return NULL;
}
