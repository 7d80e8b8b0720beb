/* k8s_float.c: float64 formatting as Go's strconv does it (shortest round-trip digits):
 * encoding/json's form and %v's. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_internal.h"

/* digits: shortest decimal digits of |d| (no dot), exp10: value = 0.digits*10^exp10
 * ("dp" in Go's decimal type). */
static void shortest_digits(double d, char *digits, int *nd, int *dp)
{
	char tmp[40];

	d = fabs(d);
	if (d == 0) {
		strcpy(digits, "0");
		*nd = 1;
		*dp = 1;
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
		if (strtod(tmp, NULL) == d || prec == 17)
			break;
	}
	/* tmp = "d.ddde[+-]xx" */
	char *e = strchr(tmp, 'e');
	int x = atoi(e + 1);
	int n = 0;
	for (char *q = tmp; q < e; q++)
		if (*q >= '0' && *q <= '9')
			digits[n++] = *q;
	while (n > 1 && digits[n - 1] == '0')
		n--;
	digits[n] = 0;
	*nd = n;
	*dp = x + 1;
}

static void fmt_e(char *out, size_t sz, bool neg, const char *dg, int nd, int dp)
{
	int x = dp - 1;
	int o = 0;

	if (neg)
		o += snprintf(out + o, sz - (size_t)o, "-");
	o += snprintf(out + o, sz - (size_t)o, "%c", dg[0]);
	if (nd > 1)
		o += snprintf(out + o, sz - (size_t)o, ".%s", dg + 1);
	snprintf(out + o, sz - (size_t)o, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
}

static void fmt_f(char *out, size_t sz, bool neg, const char *dg, int nd, int dp)
{
	struct buf b;
	char *s;

	k8s_buf_init(&b);
	if (neg)
		k8s_buf_addc(&b, '-');
	if (dp > 0) {
		for (int i = 0; i < dp; i++)
			k8s_buf_addc(&b, i < nd ? dg[i] : '0');
		if (nd > dp) {
			k8s_buf_addc(&b, '.');
			k8s_buf_adds(&b, dg + dp);
		}
	} else {
		k8s_buf_adds(&b, "0.");
		for (int i = 0; i < -dp; i++)
			k8s_buf_addc(&b, '0');
		k8s_buf_adds(&b, dg);
	}
	if (k8s_buf_finish(&b, &s, NULL) == 0) {
		snprintf(out, sz, "%s", s);
		free(s);
	} else {
		snprintf(out, sz, "0");
	}
}

void k8s_fmt_json_float(char *out, size_t n, double d)
{
	char dg[32];
	int nd, dp;
	double a = fabs(d);

	shortest_digits(d, dg, &nd, &dp);
	if (a != 0 && (a < 1e-6 || a >= 1e21)) {
		fmt_e(out, n, d < 0, dg, nd, dp);
		/* Go cleans up e-09 to e-9 */
		size_t l = strlen(out);
		if (l >= 4 && out[l - 4] == 'e' && out[l - 3] == '-' && out[l - 2] == '0') {
			out[l - 2] = out[l - 1];
			out[l - 1] = 0;
		}
	} else {
		fmt_f(out, n, signbit(d) && d != 0, dg, nd, dp);
	}
}

void k8s_fmt_go_g(char *out, size_t n, double d)
{
	char dg[32];
	int nd, dp;

	if (isnan(d)) {
		snprintf(out, n, "NaN");
		return;
	}
	if (isinf(d)) {
		snprintf(out, n, d > 0 ? "+Inf" : "-Inf");
		return;
	}
	shortest_digits(d, dg, &nd, &dp);
	/* strconv 'g' with shortest precision: %e when exp < -4 || exp >= 6 */
	int x = dp - 1;
	if (x < -4 || x >= 6)
		fmt_e(out, n, signbit(d), dg, nd, dp);
	else
		fmt_f(out, n, signbit(d), dg, nd, dp);
}
