/* config.c: struct etcd_config: defaults, ETCDCTL_* environment variables, durations,
 * transport names. */
#include "etcd.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

static void free_endpoints(struct etcd_config *cfg)
{
	for (size_t i = 0; i < cfg->n_endpoints; i++)
		free(cfg->endpoints[i]);
	free(cfg->endpoints);
	cfg->endpoints = NULL;
	cfg->n_endpoints = 0;
}

void etcd_config_init(struct etcd_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->dial_timeout_ms = ETCD_DEFAULT_DIAL_TIMEOUT_MS;
	cfg->command_timeout_ms = ETCD_DEFAULT_COMMAND_TIMEOUT_MS;
	cfg->max_request_bytes = ETCD_DEFAULT_MAX_REQUEST_BYTES;
	cfg->max_txn_ops = ETCD_DEFAULT_MAX_TXN_OPS;
	if (etcd_config_set_endpoints(cfg, ETCD_DEFAULT_ENDPOINT) < 0)
		abort(); /* only ENOMEM can fail here */
}

void etcd_config_free(struct etcd_config *cfg)
{
	free_endpoints(cfg);
	free(cfg->cacert);
	free(cfg->cert);
	free(cfg->key);
	free(cfg->user);
	if (cfg->password) {
		/* Do not leave the secret in freed heap memory. */
		explicit_bzero(cfg->password, strlen(cfg->password));
		free(cfg->password);
	}
	memset(cfg, 0, sizeof(*cfg));
}

int etcd_config_set_string(char **str, const char *val)
{
	char *copy = NULL;
	if (val && !(copy = strdup(val)))
		return -ENOMEM;
	free(*str);
	*str = copy;
	return 0;
}

int etcd_config_set_endpoints(struct etcd_config *cfg, const char *comma_list)
{
	char **eps = NULL;
	size_t n = 0;
	const char *p = comma_list;
	int ret = -EINVAL;
	while (p && *p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		/* Tolerate spaces around commas, as people write "a, b". */
		while (len && isspace((unsigned char)*p)) {
			p++;
			len--;
		}
		while (len && isspace((unsigned char)p[len - 1]))
			len--;
		if (len) {
			char **grown = realloc(eps, (n + 1) * sizeof(*eps));
			if (!grown || !(grown[n] = strndup(p, len))) {
				eps = grown ? grown : eps;
				ret = -ENOMEM;
				goto out_free;
			}
			eps = grown;
			n++;
		}
		p = end ? end + 1 : NULL;
	}
	if (!n) {
		log_err("etcd: empty endpoint list '%s'", comma_list ? comma_list : "");
		goto out_free;
	}
	free_endpoints(cfg);
	cfg->endpoints = eps;
	cfg->n_endpoints = n;
	return 0;
out_free:
	for (size_t i = 0; i < n; i++)
		free(eps[i]);
	free(eps);
	return ret;
}

int etcd_parse_duration_ms(const char *s, long *ms)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = {
		/* Longest first so that "ms" is not read as "m". */
		{"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ms", 1},
		{"s", 1000},  {"m", 60000}, {"h", 3600000},
	};
	double total = 0;
	const char *p = s;
	if (!s || !*s)
		return -EINVAL;
	while (*p) {
		char *end;
		if (!isdigit((unsigned char)*p) && *p != '.')
			return -EINVAL;
		errno = 0;
		double v = strtod(p, &end);
		if (errno || end == p || !isfinite(v))
			return -EINVAL;
		p = end;
		if (!*p) {
			/* A bare number means seconds, but only as the whole string. */
			if (p != s && total == 0 && strspn(s, "0123456789.") == strlen(s)) {
				total = v * 1000;
				break;
			}
			return -EINVAL;
		}
		size_t i;
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t ul = strlen(units[i].unit);
			if (strncmp(p, units[i].unit, ul) == 0) {
				total += v * units[i].ms;
				p += ul;
				break;
			}
		}
		if (i == sizeof(units) / sizeof(units[0]))
			return -EINVAL;
	}
	if (total > 1e12)
		return -EINVAL;
	long r = (long)total;
	if ((double)r < total)
		r++; /* round sub-millisecond remainders up: never a zero timeout by accident */
	*ms = r;
	return 0;
}

int etcd_config_read_password_file(struct etcd_config *cfg, const char *path)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	int ret;
	if (!f) {
		ret = -errno;
		log_err("etcd: cannot open password file %s: %s", path, strerror(errno));
		return ret;
	}
	ssize_t n = getline(&line, &cap, f);
	if (n < 0) {
		ret = ferror(f) ? -EIO : -EINVAL;
		log_err("etcd: cannot read a password from %s", path);
		goto out;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = 0;
	ret = etcd_config_set_string(&cfg->password, line);
out:
	if (line) {
		explicit_bzero(line, cap);
		free(line);
	}
	fclose(f);
	return ret;
}

static int env_bool(const char *name, const char *v, bool *out)
{
	if (!strcasecmp(v, "true") || !strcmp(v, "1")) {
		*out = true;
		return 0;
	}
	if (!strcasecmp(v, "false") || !strcmp(v, "0") || !*v) {
		*out = false;
		return 0;
	}
	log_err("etcd: %s: expected true or false, got '%s'", name, v);
	return -EINVAL;
}

static int env_duration(const char *name, const char *v, long *out)
{
	if (etcd_parse_duration_ms(v, out) < 0) {
		log_err("etcd: %s: bad duration '%s' (expected e.g. 5s or 500ms)", name, v);
		return -EINVAL;
	}
	return 0;
}

int etcd_config_from_env(struct etcd_config *cfg)
{
	const char *v;
	int ret = 0;
	if ((v = getenv("ETCDCTL_ENDPOINTS")) && *v)
		ret = etcd_config_set_endpoints(cfg, v);
	if (!ret && (v = getenv("ETCDCTL_CACERT")) && *v)
		ret = etcd_config_set_string(&cfg->cacert, v);
	if (!ret && (v = getenv("ETCDCTL_CERT")) && *v)
		ret = etcd_config_set_string(&cfg->cert, v);
	if (!ret && (v = getenv("ETCDCTL_KEY")) && *v)
		ret = etcd_config_set_string(&cfg->key, v);
	if (!ret && (v = getenv("ETCDCTL_USER")) && *v)
		ret = etcd_config_set_string(&cfg->user, v);
	if (!ret && (v = getenv("ETCDCTL_PASSWORD")) && *v)
		ret = etcd_config_set_string(&cfg->password, v);
	if (!ret && (v = getenv("ETCDCTL_INSECURE_SKIP_TLS_VERIFY")))
		ret = env_bool("ETCDCTL_INSECURE_SKIP_TLS_VERIFY", v,
			       &cfg->insecure_skip_tls_verify);
	if (!ret && (v = getenv("ETCDCTL_DIAL_TIMEOUT")) && *v)
		ret = env_duration("ETCDCTL_DIAL_TIMEOUT", v, &cfg->dial_timeout_ms);
	if (!ret && (v = getenv("ETCDCTL_COMMAND_TIMEOUT")) && *v)
		ret = env_duration("ETCDCTL_COMMAND_TIMEOUT", v, &cfg->command_timeout_ms);
	if (!ret && (v = getenv("ETCDFS_ETCD_TRANSPORT")) && *v &&
	    (ret = etcd_parse_transport(v, &cfg->transport)) < 0)
		log_err("etcd: ETCDFS_ETCD_TRANSPORT: expected auto, json or grpc, got '%s'", v);
	return ret;
}

int etcd_parse_transport(const char *s, enum etcd_transport *out)
{
	static const struct {
		const char *name;
		enum etcd_transport t;
	} names[] = {{"auto", ETCD_TRANSPORT_AUTO},
		     {"json", ETCD_TRANSPORT_JSON},
		     {"grpc", ETCD_TRANSPORT_GRPC}};
	for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcasecmp(s, names[i].name)) {
			*out = names[i].t;
			return 0;
		}
	}
	return -EINVAL;
}
