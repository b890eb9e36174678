/*
 * source_semver.c - semantic versions (semver 2.0 precedence) and the
 * version constraints a plan puts on a git module source.
 *
 * A constraint is a list of clauses joined by commas; every clause must
 * hold.  Operators: =, !=, >, >=, <, <=, ~> ("pessimistic": ~> 1.2 is
 * >= 1.2.0, < 2.0.0 and ~> 1.2.3 is >= 1.2.3, < 1.3.0); a bare version means
 * "=".  Missing minor/patch numbers count as 0.  Pre-releases never satisfy
 * a constraint unless an "=" clause names that exact pre-release, so
 * ">= 2.0" never picks 2.1.0-rc1.
 */
#include "source.h"
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	OP_EQ,
	OP_NE,
	OP_GT,
	OP_GE,
	OP_LT,
	OP_LE,
	OP_PESSIMISTIC
};

static const char *const op_names[] = { "=", "!=", ">", ">=", "<", "<=", "~>" };

typedef struct {
	int op;
	int parts; /* how many of major.minor.patch were written */
	mo_semver v;
} clause;

struct mo_constraint {
	clause *clauses;
	size_t n;
	char *text; /* normal form */
};

/* Parse up to three dot-separated numbers at *p; leading zeros are refused
 * as in semver.  Returns the count parsed (0 on error). */
static int parse_numbers(const char **p, uint64_t nums[3])
{
	const char *s = *p;
	int n = 0;
	nums[0] = nums[1] = nums[2] = 0;
	while (n < 3) {
		uint64_t v = 0;
		const char *start = s;
		if (!isdigit((unsigned char)*s))
			return 0;
		while (isdigit((unsigned char)*s)) {
			if (v > (UINT64_MAX - 9) / 10)
				return 0;
			v = v * 10 + (uint64_t)(*s - '0');
			s++;
		}
		if (s - start > 1 && *start == '0')
			return 0;
		nums[n++] = v;
		if (*s != '.')
			break;
		s++;
	}
	if (s[-1] == '.')
		return 0;
	*p = s;
	return n;
}

/* Dot-separated identifiers of [0-9A-Za-z-], none empty. */
static int valid_identifiers(const char *s, size_t len)
{
	size_t run = 0;
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (run == 0)
				return 0;
			run = 0;
		} else if (isalnum((unsigned char)s[i]) || s[i] == '-') {
			run++;
		} else {
			return 0;
		}
	}
	return run > 0;
}

/* Parse a version at *p with at least `min_parts` numbers, stopping at the
 * first character that cannot belong to it.  Returns the number of parts or
 * 0 on error. */
static int parse_version(const char **p, mo_semver *out, int min_parts)
{
	const char *s = *p, *pre, *end;
	uint64_t nums[3];
	int parts;
	if (*s == 'v' || *s == 'V')
		s++;
	parts = parse_numbers(&s, nums);
	if (parts < min_parts)
		return 0;
	out->major = nums[0];
	out->minor = nums[1];
	out->patch = nums[2];
	out->pre[0] = '\0';
	if (*s == '-') {
		if (parts != 3)
			return 0;
		pre = ++s;
		while (*s && (isalnum((unsigned char)*s) || *s == '-' || *s == '.'))
			s++;
		if (!valid_identifiers(pre, (size_t)(s - pre)) ||
		    (size_t)(s - pre) >= sizeof(out->pre))
			return 0;
		memcpy(out->pre, pre, (size_t)(s - pre));
		out->pre[s - pre] = '\0';
	}
	if (*s == '+') {
		if (parts != 3)
			return 0;
		end = ++s;
		while (*s && (isalnum((unsigned char)*s) || *s == '-' || *s == '.'))
			s++;
		if (!valid_identifiers(end, (size_t)(s - end)))
			return 0;
	}
	*p = s;
	return parts;
}

int mo_semver_parse(mo_semver *out, const char *s)
{
	mo_semver v;
	if (!s || parse_version(&s, &v, 3) != 3 || *s)
		return MO_EINVAL;
	*out = v;
	return 0;
}

static int is_numeric(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return 0;
	return n > 0;
}

/* Pre-release precedence: identifiers compared left to right, numeric ones
 * numerically and below alphanumeric ones; a longer list wins a tie. */
static int pre_cmp(const char *a, const char *b)
{
	while (*a && *b) {
		size_t la = strcspn(a, "."), lb = strcspn(b, ".");
		int na = is_numeric(a, la), nb = is_numeric(b, lb), c;
		if (na && nb) {
			if (la != lb)
				return la < lb ? -1 : 1;
			c = memcmp(a, b, la);
		} else if (na != nb) {
			return na ? -1 : 1;
		} else {
			c = memcmp(a, b, la < lb ? la : lb);
			if (c == 0 && la != lb)
				c = la < lb ? -1 : 1;
		}
		if (c)
			return c < 0 ? -1 : 1;
		a += la + (a[la] == '.');
		b += lb + (b[lb] == '.');
	}
	return *a ? 1 : *b ? -1 : 0;
}

int mo_semver_cmp(const mo_semver *a, const mo_semver *b)
{
	if (a->major != b->major)
		return a->major < b->major ? -1 : 1;
	if (a->minor != b->minor)
		return a->minor < b->minor ? -1 : 1;
	if (a->patch != b->patch)
		return a->patch < b->patch ? -1 : 1;
	if (!a->pre[0] || !b->pre[0])
		return a->pre[0] ? -1 : b->pre[0] ? 1 : 0;
	return pre_cmp(a->pre, b->pre);
}

static int clause_holds(const clause *c, const mo_semver *v)
{
	int r = mo_semver_cmp(v, &c->v);
	mo_semver upper;
	switch (c->op) {
	case OP_EQ:
		return r == 0;
	case OP_NE:
		return r != 0;
	case OP_GT:
		return r > 0;
	case OP_GE:
		return r >= 0;
	case OP_LT:
		return r < 0;
	case OP_LE:
		return r <= 0;
	case OP_PESSIMISTIC:
		if (r < 0)
			return 0;
		memset(&upper, 0, sizeof(upper));
		if (c->parts <= 2) {
			upper.major = c->v.major + 1;
		} else {
			upper.major = c->v.major;
			upper.minor = c->v.minor + 1;
		}
		return mo_semver_cmp(v, &upper) < 0;
	}
	return 0;
}

int mo_constraint_match(const mo_constraint *c, const mo_semver *v)
{
	int exact_pre = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (!clause_holds(&c->clauses[i], v))
			return 0;
		if (c->clauses[i].op == OP_EQ && c->clauses[i].v.pre[0])
			exact_pre = 1;
	}
	return v->pre[0] ? exact_pre : 1;
}

const char *mo_constraint_string(const mo_constraint *c)
{
	return c->text;
}

void mo_constraint_free(mo_constraint *c)
{
	if (!c)
		return;
	mo_free(c->clauses);
	mo_free(c->text);
	mo_free(c);
}

static int append_clause(mo_buf *b, const clause *c)
{
	if (b->len && mo_buf_puts(b, ", ") < 0)
		return MO_ENOMEM;
	if (mo_buf_printf(b, "%s %llu", op_names[c->op], (unsigned long long)c->v.major) < 0)
		return MO_ENOMEM;
	if (c->parts >= 2 && mo_buf_printf(b, ".%llu", (unsigned long long)c->v.minor) < 0)
		return MO_ENOMEM;
	if (c->parts >= 3 && mo_buf_printf(b, ".%llu", (unsigned long long)c->v.patch) < 0)
		return MO_ENOMEM;
	if (c->v.pre[0] && mo_buf_printf(b, "-%s", c->v.pre) < 0)
		return MO_ENOMEM;
	return 0;
}

int mo_constraint_parse(mo_constraint **out, const char *s)
{
	mo_constraint *c = NULL;
	mo_buf text = MO_BUF_INIT;
	const char *p = s;
	size_t cap = 0;
	int rc = 0;

	if (!s)
		return mo_error_set(MO_EINVAL, "empty version constraint");
	if (!(c = mo_calloc(1, sizeof(*c))))
		return mo_error_set(MO_ENOMEM, "out of memory");
	for (;;) {
		clause cl;
		memset(&cl, 0, sizeof(cl));
		while (isspace((unsigned char)*p))
			p++;
		if (!strncmp(p, "~>", 2)) {
			cl.op = OP_PESSIMISTIC;
			p += 2;
		} else if (!strncmp(p, ">=", 2)) {
			cl.op = OP_GE;
			p += 2;
		} else if (!strncmp(p, "<=", 2)) {
			cl.op = OP_LE;
			p += 2;
		} else if (!strncmp(p, "!=", 2)) {
			cl.op = OP_NE;
			p += 2;
		} else if (*p == '>') {
			cl.op = OP_GT;
			p++;
		} else if (*p == '<') {
			cl.op = OP_LT;
			p++;
		} else if (*p == '=') {
			cl.op = OP_EQ;
			p++;
		} else
			cl.op = OP_EQ;
		while (isspace((unsigned char)*p))
			p++;
		cl.parts = parse_version(&p, &cl.v, 1);
		if (!cl.parts) {
			rc = mo_error_set(MO_EINVAL, "invalid version constraint '%s'", s);
			goto done;
		}
		if (cl.v.pre[0] && cl.op == OP_PESSIMISTIC) {
			rc = mo_error_set(
				MO_EINVAL,
				"invalid version constraint '%s': ~> takes no pre-release", s);
			goto done;
		}
		if (c->n == cap) {
			size_t ncap = cap ? cap * 2 : 4;
			clause *nc = mo_realloc(c->clauses, ncap * sizeof(*nc));
			if (!nc) {
				rc = mo_error_set(MO_ENOMEM, "out of memory");
				goto done;
			}
			c->clauses = nc;
			cap = ncap;
		}
		c->clauses[c->n++] = cl;
		if ((rc = append_clause(&text, &cl)) < 0) {
			mo_error_set(rc, "out of memory");
			goto done;
		}
		while (isspace((unsigned char)*p))
			p++;
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p) {
			rc = mo_error_set(MO_EINVAL, "invalid version constraint '%s'", s);
			goto done;
		}
		break;
	}
	c->text = text.ptr;
	text.ptr = NULL;
	*out = c;
	c = NULL;
done:
	mo_buf_free(&text);
	mo_constraint_free(c);
	return rc;
}
