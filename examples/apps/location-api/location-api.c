/*
 * location-api.c - a small ETSI GS MEC 013-style Location API service: the
 * "third-party edge application" the edge-cloud modules deploy in the lab.
 *
 * It answers the query resources of MEC 013 (v2, base /location/v2) from a
 * static data set of zones, access points and users compiled in below:
 *
 *   GET /location/v2/queries/users[?zoneId=&accessPointId=&address=]
 *                                          {"userList": {"user": [...], "resourceURL"}}
 *   GET /location/v2/queries/zones         {"zoneList": {"zone": [...], "resourceURL"}}
 *   GET /location/v2/queries/zones/{zoneId}                     {"zoneInfo": {...}}
 *   GET /location/v2/queries/zones/{zoneId}/accessPoints        {"accessPointList": {...}}
 *   GET /location/v2/queries/zones/{zoneId}/accessPoints/{apId} {"accessPointInfo": {...}}
 *
 * Query parameters may repeat (zoneId=a&zoneId=b); different parameters
 * combine with AND, values of one parameter with OR, as in MEC 013.  Errors
 * are RFC 7807 ProblemDetails (application/problem+json).  resourceURL
 * values are absolute: the --root URL when given, else http://<Host header>.
 *
 * Plain POSIX sockets and libc, no other library, so it links statically
 * (gcc -static) and runs in a busybox-only container.  One request per
 * connection (Connection: close), served one at a time with a receive
 * timeout: enough for probes and tests, not a production server.  SIGTERM
 * and SIGINT stop it at once, which matters when it runs as PID 1.
 *
 * Options (environment variables in brackets, the options win):
 *   --listen ADDR:PORT   IPv4 address and port (default 0.0.0.0:8081) [LOCATION_API_LISTEN]
 *   --root URL           apiRoot used in resourceURL                   [LOCATION_API_ROOT]
 *   --port-file FILE     write the bound port to FILE (port 0 picks a free one)
 *   --help
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_REQUEST 8192
#define MAX_PARAMS 32
#define BASE "/location/v2"

/* ---- the data set ------------------------------------------------------ */

typedef struct {
	const char *id;
	const char *zone;
	const char *connection_type;   /* MEC 013 ConnectionType */
	const char *operation_status;  /* Serviceable, Unserviceable, Unknown */
	const char *timezone;
	double lat, lon;
} access_point;

typedef struct {
	const char *address;           /* acr: URI of the user's IP address */
	const char *ap;
	double lat, lon;
} user;

static const char *const zones[] = { "zone01", "zone02", "zone03" };

static const access_point access_points[] = {
	{ "ap-0101", "zone01", "Macro", "Serviceable", "+01:00", 48.8566, 2.3522 },
	{ "ap-0102", "zone01", "Smallcell", "Serviceable", "+01:00", 48.8606, 2.3376 },
	{ "ap-0201", "zone02", "Wifi", "Serviceable", "+01:00", 43.2965, 5.3698 },
	{ "ap-0202", "zone02", "Femto", "Unserviceable", "+01:00", 43.2951, 5.3750 },
	{ "ap-0301", "zone03", "Pico", "Serviceable", "+01:00", 45.7640, 4.8357 },
};

static const user users[] = {
	{ "acr:10.0.0.1", "ap-0101", 48.8570, 2.3510 },
	{ "acr:10.0.0.2", "ap-0101", 48.8559, 2.3530 },
	{ "acr:10.0.0.3", "ap-0102", 48.8610, 2.3380 },
	{ "acr:10.0.0.4", "ap-0201", 43.2960, 5.3700 },
	{ "acr:10.0.0.5", "ap-0301", 45.7645, 4.8350 },
	{ "acr:10.0.0.6", "ap-0301", 45.7638, 4.8362 },
};

static const access_point *find_ap(const char *id)
{
	for (size_t i = 0; i < ARRAY_SIZE(access_points); i++)
		if (strcmp(access_points[i].id, id) == 0)
			return &access_points[i];
	return NULL;
}

static int zone_known(const char *z)
{
	for (size_t i = 0; i < ARRAY_SIZE(zones); i++)
		if (strcmp(zones[i], z) == 0)
			return 1;
	return 0;
}

/* ---- an output buffer -------------------------------------------------- */

typedef struct {
	char *p;
	size_t len, cap;
	int oom;
} buf;

static void bput(buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *np;
		while (cap < b->len + n + 1)
			cap *= 2;
		if (!(np = realloc(b->p, cap))) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void bputs(buf *b, const char *s)
{
	bput(b, s, strlen(s));
}

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	bput(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A JSON string literal of s. */
static void bjson(buf *b, const char *s)
{
	bputs(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			bprintf(b, "\\%c", c);
		else if (c < 0x20)
			bprintf(b, "\\u%04x", c);
		else
			bput(b, (const char *)&c, 1);
	}
	bputs(b, "\"");
}

/* Percent-encode s for a query value (RFC 3986 unreserved kept). */
static void bquery(buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~')
			bput(b, (const char *)&c, 1);
		else
			bprintf(b, "%%%02X", c);
	}
}

/* ---- requests ---------------------------------------------------------- */

typedef struct {
	char method[16];
	char path[1024];               /* decoded path, without the query */
	char raw_target[2048];         /* as sent: path and query */
	char host[256];
	char *key[MAX_PARAMS];
	char *value[MAX_PARAMS];
	int nparams;
	char qbuf[2048];               /* storage of the decoded parameters */
} request;

typedef struct {
	int status;
	const char *ctype;
	buf body;
} response;

static const char *api_root;       /* --root, or NULL: from the Host header */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode %XX (and '+' as space when form is set) in place.  -1 on a bad
 * escape or an encoded NUL. */
static int pct_decode(char *s, int form)
{
	char *o = s;
	for (; *s; s++) {
		if (*s == '%') {
			int h = hexval((unsigned char)s[1]), l = h < 0 ? -1 : hexval((unsigned char)s[2]);
			if (h < 0 || l < 0 || (h == 0 && l == 0))
				return -1;
			*o++ = (char)(h * 16 + l);
			s += 2;
		} else if (form && *s == '+') {
			*o++ = ' ';
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return 0;
}

/* Parse the request line and the headers we use.  0, or the status to
 * answer (400, 414). */
static int parse_request(char *text, request *rq)
{
	char *line_end = strstr(text, "\r\n"), *target, *sp, *q, *h;
	size_t n;

	if (!line_end)
		return 400;
	*line_end = '\0';
	if (!(sp = strchr(text, ' ')) || (size_t)(sp - text) >= sizeof(rq->method))
		return 400;
	memcpy(rq->method, text, (size_t)(sp - text));
	rq->method[sp - text] = '\0';
	target = sp + 1;
	if (!(sp = strchr(target, ' ')) || strncmp(sp + 1, "HTTP/1.", 7) != 0)
		return 400;
	*sp = '\0';
	if (strlen(target) >= sizeof(rq->raw_target))
		return 414;
	strcpy(rq->raw_target, target);

	q = strchr(target, '?');
	if (q)
		*q++ = '\0';
	if ((n = strlen(target)) >= sizeof(rq->path) || target[0] != '/')
		return n >= sizeof(rq->path) ? 414 : 400;
	strcpy(rq->path, target);
	if (pct_decode(rq->path, 0) != 0)
		return 400;
	if (q) {
		char *save = NULL, *pair;
		if (strlen(q) >= sizeof(rq->qbuf))
			return 414;
		strcpy(rq->qbuf, q);
		for (pair = strtok_r(rq->qbuf, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
			char *eq = strchr(pair, '=');
			if (rq->nparams == MAX_PARAMS)
				return 400;
			if (eq)
				*eq++ = '\0';
			if (pct_decode(pair, 1) != 0 || (eq && pct_decode(eq, 1) != 0))
				return 400;
			rq->key[rq->nparams] = pair;
			rq->value[rq->nparams] = eq ? eq : (char *)"";
			rq->nparams++;
		}
	}

	/* Headers: only Host matters. */
	for (h = line_end + 2; *h && strncmp(h, "\r\n", 2) != 0;) {
		char *e = strstr(h, "\r\n");
		if (!e)
			break;
		*e = '\0';
		if (strncasecmp(h, "Host:", 5) == 0) {
			const char *v = h + 5;
			while (*v == ' ' || *v == '\t')
				v++;
			snprintf(rq->host, sizeof(rq->host), "%s", v);
		}
		h = e + 2;
	}
	return 0;
}

/* The apiRoot of resourceURLs, without a trailing slash. */
static void put_root(buf *b, const request *rq)
{
	if (api_root) {
		size_t n = strlen(api_root);
		while (n > 0 && api_root[n - 1] == '/')
			n--;
		bput(b, api_root, n);
	} else {
		bputs(b, "http://");
		bputs(b, rq->host[0] ? rq->host : "localhost");
	}
}

/* ---- answers ----------------------------------------------------------- */

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 414: return "URI Too Long";
	case 500: return "Internal Server Error";
	default: return "Error";
	}
}

static void problem(response *rs, const request *rq, int status, const char *detail)
{
	rs->status = status;
	rs->ctype = "application/problem+json";
	rs->body.len = 0;
	bprintf(&rs->body, "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,\"detail\":",
		reason(status), status);
	bjson(&rs->body, detail);
	if (rq && rq->raw_target[0]) {
		bputs(&rs->body, ",\"instance\":");
		bjson(&rs->body, rq->raw_target);
	}
	bputs(&rs->body, "}");
}

static void location_info(buf *b, double lat, double lon)
{
	/* shape 2: ELLIPSOID_POINT */
	bprintf(b, "{\"latitude\":[%.6f],\"longitude\":[%.6f],\"shape\":2}", lat, lon);
}

static int count_users(const char *zone, const char *ap)
{
	int n = 0;
	for (size_t i = 0; i < ARRAY_SIZE(users); i++) {
		const access_point *a = find_ap(users[i].ap);
		if ((ap && strcmp(users[i].ap, ap) == 0) || (!ap && a && strcmp(a->zone, zone) == 0))
			n++;
	}
	return n;
}

static void zone_info(buf *b, const request *rq, const char *zone)
{
	int naps = 0, nunserv = 0;
	for (size_t i = 0; i < ARRAY_SIZE(access_points); i++) {
		if (strcmp(access_points[i].zone, zone) != 0)
			continue;
		naps++;
		if (strcmp(access_points[i].operation_status, "Serviceable") != 0)
			nunserv++;
	}
	bputs(b, "{\"zoneId\":");
	bjson(b, zone);
	bprintf(b, ",\"numberOfAccessPoints\":%d,\"numberOfUnserviceableAccessPoints\":%d,"
		"\"numberOfUsers\":%d,\"resourceURL\":\"", naps, nunserv, count_users(zone, NULL));
	put_root(b, rq);
	bputs(b, BASE "/queries/zones/");
	bputs(b, zone);
	bputs(b, "\"}");
}

static void ap_info(buf *b, const request *rq, const access_point *a)
{
	bputs(b, "{\"accessPointId\":");
	bjson(b, a->id);
	bputs(b, ",\"locationInfo\":");
	location_info(b, a->lat, a->lon);
	bprintf(b, ",\"connectionType\":\"%s\",\"operationStatus\":\"%s\",\"numberOfUsers\":%d,"
		"\"timezone\":\"%s\",\"resourceURL\":\"", a->connection_type, a->operation_status,
		count_users(a->zone, a->id), a->timezone);
	put_root(b, rq);
	bprintf(b, BASE "/queries/zones/%s/accessPoints/%s\"}", a->zone, a->id);
}

/* Does any value of parameter key equal v?  1 when the parameter is absent. */
static int param_allows(const request *rq, const char *key, const char *v)
{
	int seen = 0;
	for (int i = 0; i < rq->nparams; i++) {
		if (strcmp(rq->key[i], key) != 0)
			continue;
		seen = 1;
		if (strcmp(rq->value[i], v) == 0)
			return 1;
	}
	return !seen;
}

static void q_users(const request *rq, response *rs)
{
	static const char *const known[] = { "zoneId", "accessPointId", "address" };
	struct timespec now;
	buf *b = &rs->body;
	int first = 1;

	for (int i = 0; i < rq->nparams; i++) {
		size_t k;
		for (k = 0; k < ARRAY_SIZE(known); k++)
			if (strcmp(rq->key[i], known[k]) == 0)
				break;
		if (k == ARRAY_SIZE(known)) {
			char d[200];
			snprintf(d, sizeof(d), "unknown query parameter %.100s "
				 "(use zoneId, accessPointId, address)", rq->key[i]);
			problem(rs, rq, 400, d);
			return;
		}
	}
	clock_gettime(CLOCK_REALTIME, &now);
	bputs(b, "{\"userList\":{\"user\":[");
	for (size_t i = 0; i < ARRAY_SIZE(users); i++) {
		const user *u = &users[i];
		const access_point *a = find_ap(u->ap);
		if (!a || !param_allows(rq, "zoneId", a->zone) ||
		    !param_allows(rq, "accessPointId", a->id) ||
		    !param_allows(rq, "address", u->address))
			continue;
		bputs(b, first ? "{" : ",{");
		first = 0;
		bputs(b, "\"address\":");
		bjson(b, u->address);
		bputs(b, ",\"accessPointId\":");
		bjson(b, a->id);
		bputs(b, ",\"zoneId\":");
		bjson(b, a->zone);
		bputs(b, ",\"resourceURL\":\"");
		put_root(b, rq);
		bputs(b, BASE "/queries/users?address=");
		bquery(b, u->address);
		bprintf(b, "\",\"timestamp\":{\"seconds\":%lld,\"nanoSeconds\":%ld},\"locationInfo\":",
			(long long)now.tv_sec, now.tv_nsec);
		location_info(b, u->lat, u->lon);
		bputs(b, "}");
	}
	bputs(b, "],\"resourceURL\":");
	{
		buf url = { 0 };
		put_root(&url, rq);
		bputs(&url, rq->raw_target);
		bjson(b, url.p ? url.p : "");
		free(url.p);
	}
	bputs(b, "}}");
	rs->status = 200;
}

static void q_zones(const request *rq, response *rs)
{
	buf *b = &rs->body;
	bputs(b, "{\"zoneList\":{\"zone\":[");
	for (size_t i = 0; i < ARRAY_SIZE(zones); i++) {
		if (i)
			bputs(b, ",");
		zone_info(b, rq, zones[i]);
	}
	bputs(b, "],\"resourceURL\":\"");
	put_root(b, rq);
	bputs(b, BASE "/queries/zones\"}}");
	rs->status = 200;
}

static void q_zone(const request *rq, response *rs, const char *zone)
{
	bputs(&rs->body, "{\"zoneInfo\":");
	zone_info(&rs->body, rq, zone);
	bputs(&rs->body, "}");
	rs->status = 200;
}

static void q_aps(const request *rq, response *rs, const char *zone)
{
	buf *b = &rs->body;
	int first = 1;
	bputs(b, "{\"accessPointList\":{\"zoneId\":");
	bjson(b, zone);
	bputs(b, ",\"accessPoint\":[");
	for (size_t i = 0; i < ARRAY_SIZE(access_points); i++) {
		if (strcmp(access_points[i].zone, zone) != 0)
			continue;
		if (!first)
			bputs(b, ",");
		first = 0;
		ap_info(b, rq, &access_points[i]);
	}
	bputs(b, "],\"resourceURL\":\"");
	put_root(b, rq);
	bprintf(b, BASE "/queries/zones/%s/accessPoints\"}}", zone);
	rs->status = 200;
}

/* Route rq: fills rs. */
static void route(const request *rq, response *rs)
{
	const char *p = rq->path, *rest;
	char zone[128], ap[128];
	size_t n;

	if (strcmp(rq->method, "GET") != 0 && strcmp(rq->method, "HEAD") != 0) {
		problem(rs, rq, 405, "only GET is supported");
		return;
	}
	if (strcmp(p, BASE "/queries/users") == 0) {
		q_users(rq, rs);
		return;
	}
	if (strcmp(p, BASE "/queries/zones") == 0) {
		q_zones(rq, rs);
		return;
	}
	if (strncmp(p, BASE "/queries/zones/", strlen(BASE "/queries/zones/")) != 0) {
		problem(rs, rq, 404, "no such resource");
		return;
	}
	p += strlen(BASE "/queries/zones/");
	rest = strchr(p, '/');
	n = rest ? (size_t)(rest - p) : strlen(p);
	if (n == 0 || n >= sizeof(zone)) {
		problem(rs, rq, 404, "no such resource");
		return;
	}
	memcpy(zone, p, n);
	zone[n] = '\0';
	if (!zone_known(zone)) {
		char d[200];
		snprintf(d, sizeof(d), "no zone %s", zone);
		problem(rs, rq, 404, d);
		return;
	}
	if (!rest) {
		q_zone(rq, rs, zone);
		return;
	}
	if (strcmp(rest, "/accessPoints") == 0) {
		q_aps(rq, rs, zone);
		return;
	}
	if (strncmp(rest, "/accessPoints/", 14) == 0 && rest[14] && !strchr(rest + 14, '/') &&
	    strlen(rest + 14) < sizeof(ap)) {
		const access_point *a;
		strcpy(ap, rest + 14);
		a = find_ap(ap);
		if (a && strcmp(a->zone, zone) == 0) {
			bputs(&rs->body, "{\"accessPointInfo\":");
			ap_info(&rs->body, rq, a);
			bputs(&rs->body, "}");
			rs->status = 200;
		} else {
			char d[300];
			snprintf(d, sizeof(d), "no access point %s in zone %s", ap, zone);
			problem(rs, rq, 404, d);
		}
		return;
	}
	problem(rs, rq, 404, "no such resource");
}

/* ---- the server -------------------------------------------------------- */

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void serve(int fd)
{
	char text[MAX_REQUEST + 1];
	size_t len = 0;
	request rq;
	response rs = { .status = 500, .ctype = "application/json" };
	char head[256];
	int hn, st;

	memset(&rq, 0, sizeof(rq));
	/* Read up to the end of the headers; bodies are not used. */
	while (len < MAX_REQUEST) {
		ssize_t r = read(fd, text + len, MAX_REQUEST - len);
		if (r <= 0) {
			if (r < 0 && errno == EINTR && !stopping)
				continue;
			return;
		}
		len += (size_t)r;
		text[len] = '\0';
		if (strstr(text, "\r\n\r\n"))
			break;
	}
	text[len] = '\0';
	if (!strstr(text, "\r\n\r\n"))
		problem(&rs, NULL, 400, "request headers too large or incomplete");
	else if ((st = parse_request(text, &rq)) != 0)
		problem(&rs, NULL, st, "malformed request");
	else
		route(&rq, &rs);
	if (rs.body.oom) {
		free(rs.body.p);
		rs.body = (buf){ 0 };
		rs.status = 500;
	}
	hn = snprintf(head, sizeof(head),
		      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		      "Connection: close\r\n\r\n",
		      rs.status, reason(rs.status), rs.ctype, rs.body.len);
	if (write_all(fd, head, (size_t)hn) == 0 && strcmp(rq.method, "HEAD") != 0 && rs.body.len)
		write_all(fd, rs.body.p, rs.body.len);
	free(rs.body.p);
}

static void usage(FILE *f)
{
	fputs("usage: location-api [--listen ADDR:PORT] [--root URL] [--port-file FILE]\n"
	      "A MEC 013-style Location API (GET /location/v2/queries/{users,zones})\n"
	      "over a static data set.\n"
	      "\n"
	      "  --listen ADDR:PORT  IPv4 address and port (default 0.0.0.0:8081; env LOCATION_API_LISTEN)\n"
	      "  --root URL          apiRoot of resourceURL values (default http://<Host header>;\n"
	      "                      env LOCATION_API_ROOT)\n"
	      "  --port-file FILE    write the bound port to FILE once listening\n"
	      "  --help              show this help\n", f);
}

int main(int argc, char **argv)
{
	const char *listen_spec = getenv("LOCATION_API_LISTEN");
	const char *port_file = NULL;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	struct sigaction sig = { .sa_handler = on_signal };
	char host[64];
	const char *colon;
	char *end;
	long port;
	int ls, one = 1;

	api_root = getenv("LOCATION_API_ROOT");
	if (api_root && !*api_root)
		api_root = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
			listen_spec = argv[++i];
		} else if (strcmp(argv[i], "--root") == 0 && i + 1 < argc) {
			api_root = argv[++i];
		} else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
			port_file = argv[++i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!listen_spec || !*listen_spec)
		listen_spec = "0.0.0.0:8081";
	colon = strrchr(listen_spec, ':');
	if (!colon || (size_t)(colon - listen_spec) >= sizeof(host)) {
		fprintf(stderr, "location-api: --listen wants ADDR:PORT, got %s\n", listen_spec);
		return 2;
	}
	memcpy(host, listen_spec, (size_t)(colon - listen_spec));
	host[colon - listen_spec] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || port < 0 || port > 65535 ||
	    inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa.sin_addr) != 1) {
		fprintf(stderr, "location-api: bad --listen %s (IPv4 ADDR:PORT)\n", listen_spec);
		return 2;
	}
	sa.sin_port = htons((unsigned short)port);

	sigemptyset(&sig.sa_mask);
	sigaction(SIGTERM, &sig, NULL); /* no SA_RESTART: accept() returns EINTR */
	sigaction(SIGINT, &sig, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(ls, 64) != 0 ||
	    getsockname(ls, (struct sockaddr *)&sa, &sl) != 0) {
		fprintf(stderr, "location-api: cannot listen on %s: %s\n", listen_spec, strerror(errno));
		return 1;
	}
	if (port_file) {
		FILE *f = fopen(port_file, "w");
		if (!f || fprintf(f, "%u\n", ntohs(sa.sin_port)) < 0 || fclose(f) != 0) {
			fprintf(stderr, "location-api: cannot write %s\n", port_file);
			return 1;
		}
	}
	printf("location-api listening on %s:%u\n", host[0] ? host : "0.0.0.0", ntohs(sa.sin_port));
	fflush(stdout);

	while (!stopping) {
		struct timeval tv = { 5, 0 };
		int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			fprintf(stderr, "location-api: accept: %s\n", strerror(errno));
			break;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		serve(fd);
		close(fd);
	}
	close(ls);
	return 0;
}
