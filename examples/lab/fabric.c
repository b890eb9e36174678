/*
 * fabric.c - the local lab's interconnect provider: an in-memory REST API
 * in the shape of Equinix Fabric or Megaport, with pre-provisioned ports
 * and virtual connections (an A side and a Z side, each a port and a VLAN,
 * and a bandwidth) that are provisioned asynchronously.
 *
 * A connection is created PENDING and becomes PROVISIONED after
 * --provision-delay-ms, or FAILED (with a failure_reason) for a fraction
 * --provision-fail-rate of them.  A bandwidth change puts it back to
 * PENDING; it then becomes PROVISIONED with the new bandwidth, or, when the
 * change fails, PROVISIONED with the old one and a failure_reason.  DELETE
 * moves it to DEPROVISIONING and it is gone --deprovision-delay-ms later.
 * The outcome of every transition is drawn when it starts; transitions are
 * settled lazily, at every request, which a client cannot tell from a
 * clock.  Each one is logged on stdout and counted in /_stats, as is the
 * state every GET of a connection answered.
 *
 * With --state-file the connections outlive the process: every change is
 * written to the file (a temp file renamed over it) and read back at start,
 * transitions in flight included (due times are wall-clock times), so a
 * provider killed and restarted resumes where it stopped.
 *
 * Validation follows the providers: a VLAN is 1..4094 (400), a (port, VLAN)
 * pair belongs to one live connection (409), a connection's bandwidth may
 * not exceed the speed of either port (422).  POST honours Idempotency-Key:
 * a repeated key answers the connection created with it (200).  Errors are
 * RFC 7807 problem+json with a machine-readable "code" member.
 *
 * Faults: --latency-ms, --fail-rate (500/503 before anything is done),
 * --rate-429 (with Retry-After), all changeable through PUT /_config.  The
 * control endpoints under /_ are never delayed, failed nor authenticated.
 *
 * Concurrency: one thread per connection (libmicrohttpd); one mutex guards
 * configuration, counters, ports and connections.
 *
 * A stand-alone executable: it links libmicrohttpd, jansson and pthread
 * only; labkit.c brings the command line, the HTTP plumbing and the fault
 * injection every lab emulator shares.  See examples/lab/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "labkit.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FB_MAX_BODY (64 * 1024)      /* larger request bodies get 413 */
#define FB_MAX_PORTS 4096
#define FB_MAX_NAME 255
#define FB_MAX_KEY 255
#define FB_MAX_CONNECTIONS 1024      /* HTTP connections, not fabric ones */
#define FB_THREAD_STACK (512 * 1024)

typedef enum { ST_PENDING, ST_PROVISIONED, ST_FAILED, ST_DEPROVISIONING, ST_GONE, ST_COUNT } fb_state;

static const char *const state_names[ST_COUNT] = {
	"PENDING", "PROVISIONED", "FAILED", "DEPROVISIONING", "GONE",
};

/* Locations the ports are spread over, in turn. */
static const char *const metros[] = { "AM1", "FR5", "LD8", "NY5" };

typedef struct {
	char id[24];
	char name[32];
	const char *location;
	long speed_mbps;
} fb_port;

typedef struct {
	char port_id[24];
	long vlan;
} fb_side;

typedef struct {
	char id[24];
	char name[FB_MAX_NAME + 1];
	fb_side a, z;
	long bandwidth_mbps;
	long prev_bandwidth_mbps;    /* a bandwidth change in flight: the old value */
	fb_state state;
	bool modifying;              /* PENDING because of a bandwidth change */
	bool will_fail;              /* the drawn outcome of the transition */
	int64_t due_ms;              /* when the transition completes (wall clock) */
	char failure_reason[256];
	char created_at[40], updated_at[40];
	char key[FB_MAX_KEY + 1];    /* Idempotency-Key, or "" */
	uint64_t version;
} fb_conn;

/* Provisioning behaviour that PUT /_config can change at run time. */
typedef struct {
	long provision_delay_ms;
	long deprovision_delay_ms;
	double provision_fail_rate;
} fb_config;

typedef struct {
	lk_server lk;                /* lk.lock guards everything below too */
	fb_config cfg;
	uint64_t transitions[ST_COUNT][ST_COUNT];
	uint64_t served[ST_COUNT];   /* GETs of one connection, by the state answered */
	const char *state_file;      /* --state-file, or NULL */

	fb_port *ports;
	int nports;
	fb_conn *conns;              /* live connections, in creation order */
	size_t nconns, cap;
	uint64_t id_base, id_seq;
} fb_server;

/* ---- replies ---------------------------------------------------------- */

/* 409 VLAN_IN_USE naming the connection that holds the VLAN (a
 * "connection_id" member). */
static void reply_vlan_in_use(lk_reply *r, const char *conn_id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void reply_vlan_in_use(lk_reply *r, const char *conn_id, const char *fmt, ...)
{
	va_list ap;
	json_t *p;
	va_start(ap, fmt);
	p = lk_problem_v(409, NULL, "VLAN_IN_USE", fmt, ap);
	va_end(ap);
	if (p)
		json_object_set_new(p, "connection_id", json_string(conn_id));
	lk_reply_json(r, 409, p);
	r->content_type = LK_PROBLEM_JSON;
}

/* ---- ports and connections -------------------------------------------- */

static fb_port *find_port(fb_server *s, const char *id)
{
	for (int i = 0; i < s->nports; i++)
		if (strcmp(s->ports[i].id, id) == 0)
			return &s->ports[i];
	return NULL;
}

static fb_conn *find_conn(fb_server *s, const char *id)
{
	for (size_t i = 0; i < s->nconns; i++)
		if (strcmp(s->conns[i].id, id) == 0)
			return &s->conns[i];
	return NULL;
}

/* The live connection holding (port, vlan), other than except, or NULL. */
static fb_conn *vlan_holder(fb_server *s, const char *port, long vlan, const fb_conn *except)
{
	for (size_t i = 0; i < s->nconns; i++) {
		fb_conn *k = &s->conns[i];
		if (k == except)
			continue;
		if ((strcmp(k->a.port_id, port) == 0 && k->a.vlan == vlan) ||
		    (strcmp(k->z.port_id, port) == 0 && k->z.vlan == vlan))
			return k;
	}
	return NULL;
}

static void set_state(fb_server *s, fb_conn *k, fb_state to)
{
	bool why = k->failure_reason[0] && (to == ST_FAILED || to == ST_PROVISIONED);
	s->transitions[k->state][to]++;
	lk_log(&s->lk, "%s (%s): %s -> %s%s%s", k->id, k->name, state_names[k->state],
	       state_names[to], why ? ": " : "", why ? k->failure_reason : "");
	k->state = to;
	k->version++;
	lk_rfc3339_now(k->updated_at, sizeof(k->updated_at), true);
}

static void save_state(fb_server *s);

/* Complete every transition that is due; remove deprovisioned
 * connections; save the state when anything changed.  Caller holds
 * srv->lk.lock. */
static void settle_all(fb_server *s)
{
	int64_t now = lk_now_ms();
	size_t i = 0;
	bool changed = false;
	while (i < s->nconns) {
		fb_conn *k = &s->conns[i];
		if ((k->state == ST_PENDING || k->state == ST_DEPROVISIONING) && now >= k->due_ms)
			changed = true;
		if (k->state == ST_PENDING && now >= k->due_ms) {
			if (!k->will_fail) {
				if (k->modifying)
					k->failure_reason[0] = '\0';
				set_state(s, k, ST_PROVISIONED);
			} else if (k->modifying) {
				snprintf(k->failure_reason, sizeof(k->failure_reason),
					 "bandwidth change to %ld Mbps failed: no capacity between %s and "
					 "%s (injected by provision_fail_rate); %ld Mbps kept",
					 k->bandwidth_mbps, k->a.port_id, k->z.port_id,
					 k->prev_bandwidth_mbps);
				k->bandwidth_mbps = k->prev_bandwidth_mbps;
				set_state(s, k, ST_PROVISIONED);
			} else {
				snprintf(k->failure_reason, sizeof(k->failure_reason),
					 "provisioning failed: no capacity between %s vlan %ld and %s "
					 "vlan %ld (injected by provision_fail_rate)",
					 k->a.port_id, k->a.vlan, k->z.port_id, k->z.vlan);
				set_state(s, k, ST_FAILED);
			}
			k->modifying = false;
		} else if (k->state == ST_DEPROVISIONING && now >= k->due_ms) {
			set_state(s, k, ST_GONE);
			memmove(k, k + 1, (s->nconns - i - 1) * sizeof(*k));
			s->nconns--;
			continue;
		}
		i++;
	}
	if (changed)
		save_state(s);
}

static json_t *conn_json(const fb_conn *k)
{
	json_t *j = json_pack("{s:s, s:s, s:{s:s, s:I}, s:{s:s, s:I}, s:I, s:s, s:s, s:s, s:I}",
			      "id", k->id, "name", k->name,
			      "a_side", "port_id", k->a.port_id, "vlan", (json_int_t)k->a.vlan,
			      "z_side", "port_id", k->z.port_id, "vlan", (json_int_t)k->z.vlan,
			      "bandwidth_mbps", (json_int_t)k->bandwidth_mbps,
			      "state", state_names[k->state],
			      "created_at", k->created_at, "updated_at", k->updated_at,
			      "version", (json_int_t)k->version);
	if (j) {
		json_object_set_new(j, "failure_reason", k->failure_reason[0]
				    ? json_string(k->failure_reason) : json_null());
		if (k->key[0])
			json_object_set_new(j, "idempotency_key", json_string(k->key));
	}
	return j;
}

/* ---- --state-file ----------------------------------------------------- */

/* Save the connections to --state-file (a temp file renamed over it), so a
 * restarted fabric resumes where it stopped, transitions in flight
 * included.  Caller holds srv->lk.lock. */
static void save_state(fb_server *s)
{
	json_t *root, *arr;
	if (!s->state_file)
		return;
	arr = json_array();
	for (size_t i = 0; arr && i < s->nconns; i++) {
		const fb_conn *k = &s->conns[i];
		json_array_append_new(arr, json_pack(
			"{s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:s, s:b, s:b, s:I,"
			" s:s, s:s, s:s, s:s, s:I}",
			"id", k->id, "name", k->name,
			"a_port", k->a.port_id, "a_vlan", (json_int_t)k->a.vlan,
			"z_port", k->z.port_id, "z_vlan", (json_int_t)k->z.vlan,
			"bandwidth_mbps", (json_int_t)k->bandwidth_mbps,
			"prev_bandwidth_mbps", (json_int_t)k->prev_bandwidth_mbps,
			"state", state_names[k->state], "modifying", k->modifying,
			"will_fail", k->will_fail, "due_ms", (json_int_t)k->due_ms,
			"failure_reason", k->failure_reason, "created_at", k->created_at,
			"updated_at", k->updated_at, "key", k->key, "version", (json_int_t)k->version));
	}
	root = json_pack("{s:i, s:I, s:I, s:o}", "format", 1, "id_base", (json_int_t)s->id_base,
			 "id_seq", (json_int_t)s->id_seq, "connections", arr);
	lk_save_json(&s->lk, s->state_file, root);
}

static void copy_field(char *dst, size_t cap, json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));
	snprintf(dst, cap, "%s", v ? v : "");
}

/* Load --state-file when it exists; -1 (with a message) when it is not a
 * state this program saved. */
static int load_state(fb_server *s)
{
	json_error_t err;
	json_t *root, *arr, *o;
	size_t i;
	if (access(s->state_file, F_OK) != 0)
		return 0;
	if (!(root = json_load_file(s->state_file, 0, &err))) {
		fprintf(stderr, "fabric: %s: %s\n", s->state_file, err.text);
		return -1;
	}
	arr = json_object_get(root, "connections");
	if (json_integer_value(json_object_get(root, "format")) != 1 || !json_is_array(arr) ||
	    !(s->conns = calloc(json_array_size(arr) + 1, sizeof(*s->conns)))) {
		fprintf(stderr, "fabric: %s is not a fabric state file\n", s->state_file);
		json_decref(root);
		return -1;
	}
	s->cap = json_array_size(arr) + 1;
	s->id_base = (uint64_t)json_integer_value(json_object_get(root, "id_base"));
	s->id_seq = (uint64_t)json_integer_value(json_object_get(root, "id_seq"));
	json_array_foreach(arr, i, o) {
		fb_conn *k = &s->conns[s->nconns++];
		const char *st = json_string_value(json_object_get(o, "state"));
		copy_field(k->id, sizeof(k->id), o, "id");
		copy_field(k->name, sizeof(k->name), o, "name");
		copy_field(k->a.port_id, sizeof(k->a.port_id), o, "a_port");
		copy_field(k->z.port_id, sizeof(k->z.port_id), o, "z_port");
		copy_field(k->failure_reason, sizeof(k->failure_reason), o, "failure_reason");
		copy_field(k->created_at, sizeof(k->created_at), o, "created_at");
		copy_field(k->updated_at, sizeof(k->updated_at), o, "updated_at");
		copy_field(k->key, sizeof(k->key), o, "key");
		k->a.vlan = (long)json_integer_value(json_object_get(o, "a_vlan"));
		k->z.vlan = (long)json_integer_value(json_object_get(o, "z_vlan"));
		k->bandwidth_mbps = (long)json_integer_value(json_object_get(o, "bandwidth_mbps"));
		k->prev_bandwidth_mbps = (long)json_integer_value(json_object_get(o, "prev_bandwidth_mbps"));
		k->modifying = json_is_true(json_object_get(o, "modifying"));
		k->will_fail = json_is_true(json_object_get(o, "will_fail"));
		k->due_ms = (int64_t)json_integer_value(json_object_get(o, "due_ms"));
		k->version = (uint64_t)json_integer_value(json_object_get(o, "version"));
		k->state = ST_GONE;
		for (int j = 0; st && j < ST_GONE; j++)
			if (strcmp(st, state_names[j]) == 0)
				k->state = (fb_state)j;
		if (!k->id[0] || k->state == ST_GONE) {
			fprintf(stderr, "fabric: %s: connection %zu is malformed\n", s->state_file, i);
			json_decref(root);
			return -1;
		}
	}
	json_decref(root);
	return 0;
}

static json_t *port_json(const fb_server *s, const fb_port *p)
{
	json_t *vlans = json_array();
	for (size_t i = 0; i < s->nconns; i++) {
		const fb_conn *k = &s->conns[i];
		if (strcmp(k->a.port_id, p->id) == 0)
			json_array_append_new(vlans, json_integer(k->a.vlan));
		if (strcmp(k->z.port_id, p->id) == 0 &&
		    !(strcmp(k->a.port_id, p->id) == 0 && k->a.vlan == k->z.vlan))
			json_array_append_new(vlans, json_integer(k->z.vlan));
	}
	return json_pack("{s:s, s:s, s:s, s:I, s:s, s:o}", "id", p->id, "name", p->name,
			 "location", p->location, "speed_mbps", (json_int_t)p->speed_mbps,
			 "state", "ACTIVE", "vlans_in_use", vlans);
}

/* ---- the API ---------------------------------------------------------- */

static void api_ports(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	json_t *items = json_array();
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	for (int i = 0; i < s->nports; i++)
		json_array_append_new(items, port_json(s, &s->ports[i]));
	lk_reply_json(r, 200, json_pack("{s:o, s:i}", "items", items, "count", s->nports));
	pthread_mutex_unlock(&s->lk.lock);
}

static void api_port_get(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	fb_port *p;
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	if ((p = find_port(s, c->param)))
		lk_reply_json(r, 200, port_json(s, p));
	else
		lk_reply_problem(r, 404, "NOT_FOUND", "no port %s", c->param);
	pthread_mutex_unlock(&s->lk.lock);
}

/* Connections, optionally filtered by ?name=, ?idempotency_key=, ?state=. */
static void api_conns(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	const char *name = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "name");
	const char *key = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND,
						      "idempotency_key");
	const char *state = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "state");
	json_t *items = json_array();
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	for (size_t i = 0; i < s->nconns; i++) {
		const fb_conn *k = &s->conns[i];
		if ((name && strcmp(name, k->name) != 0) || (key && strcmp(key, k->key) != 0) ||
		    (state && strcmp(state, state_names[k->state]) != 0))
			continue;
		json_array_append_new(items, conn_json(k));
	}
	lk_reply_json(r, 200, json_pack("{s:o, s:I}", "items", items,
					"count", (json_int_t)json_array_size(items)));
	pthread_mutex_unlock(&s->lk.lock);
}

/* Parse one side ({"port_id": string, "vlan": integer}) of a POST body;
 * false with a problem in r. */
static bool parse_side(json_t *body, const char *name, fb_side *out, lk_reply *r)
{
	json_t *side = json_object_get(body, name), *port, *vlan, *v;
	const char *k;
	if (!json_is_object(side)) {
		lk_reply_problem(r, 400, "INVALID_FIELD", "%s must be an object {port_id, vlan}",
				 name);
		return false;
	}
	json_object_foreach(side, k, v) {
		if (strcmp(k, "port_id") != 0 && strcmp(k, "vlan") != 0) {
			lk_reply_problem(r, 400, "INVALID_FIELD", "%s.%s: unknown field", name, k);
			return false;
		}
	}
	port = json_object_get(side, "port_id");
	vlan = json_object_get(side, "vlan");
	if (!json_is_string(port) || json_string_length(port) == 0 ||
	    json_string_length(port) >= sizeof(out->port_id)) {
		lk_reply_problem(r, 400, "INVALID_FIELD", "%s.port_id must be a port id", name);
		return false;
	}
	if (!json_is_integer(vlan)) {
		lk_reply_problem(r, 400, "INVALID_VLAN", "%s.vlan must be an integer 1..4094",
				 name);
		return false;
	}
	if (json_integer_value(vlan) < 1 || json_integer_value(vlan) > 4094) {
		lk_reply_problem(r, 400, "INVALID_VLAN",
				 "%s.vlan %lld is out of range: VLANs are 1..4094", name,
				 (long long)json_integer_value(vlan));
		return false;
	}
	snprintf(out->port_id, sizeof(out->port_id), "%s", json_string_value(port));
	out->vlan = (long)json_integer_value(vlan);
	return true;
}

/* Check bandwidth against both ports' speeds; false with a 422 in r. */
static bool check_bandwidth(fb_server *s, const fb_side *a, const fb_side *z, long bw,
			    lk_reply *r)
{
	const fb_side *sides[2] = { a, z };
	for (int i = 0; i < 2; i++) {
		fb_port *p = find_port(s, sides[i]->port_id);
		if (p && bw > p->speed_mbps) {
			lk_reply_problem(r, 422, "BANDWIDTH_EXCEEDS_PORT_SPEED",
					 "bandwidth_mbps %ld exceeds the speed of %s port %s "
					 "(%ld Mbps)", bw, i == 0 ? "a_side" : "z_side", p->id,
					 p->speed_mbps);
			return false;
		}
	}
	return true;
}

static bool parse_bandwidth(json_t *v, long *out, lk_reply *r)
{
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > 100000000) {
		lk_reply_problem(r, 400, "INVALID_FIELD",
				 "bandwidth_mbps must be a positive integer");
		return false;
	}
	*out = (long)json_integer_value(v);
	return true;
}

static void api_conn_create(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	const char *key = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Idempotency-Key");
	json_t *body, *name, *v;
	const char *k;
	fb_conn n, *held;
	const fb_side *sides[2];

	if (key && (!*key || strlen(key) > FB_MAX_KEY || !lk_utf8_valid(key))) {
		lk_reply_problem(r, 400, "INVALID_IDEMPOTENCY_KEY",
				 "Idempotency-Key must be 1 to %d bytes of UTF-8", FB_MAX_KEY);
		return;
	}
	if (!(body = lk_body_object(c, r, "INVALID_BODY")))
		return;
	memset(&n, 0, sizeof(n));
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	/* A repeated key answers the first connection, before any validation:
	 * the retry of a create must not meet its own VLANs. */
	if (key) {
		for (size_t i = 0; i < s->nconns; i++) {
			if (strcmp(s->conns[i].key, key) == 0) {
				lk_reply_json(r, 200, conn_json(&s->conns[i]));
				goto done;
			}
		}
	}
	json_object_foreach(body, k, v) {
		if (strcmp(k, "name") && strcmp(k, "a_side") && strcmp(k, "z_side") &&
		    strcmp(k, "bandwidth_mbps")) {
			lk_reply_problem(r, 400, "INVALID_FIELD", "unknown field %s", k);
			goto done;
		}
	}
	name = json_object_get(body, "name");
	if (!json_is_string(name) || json_string_length(name) == 0 ||
	    json_string_length(name) > FB_MAX_NAME) {
		lk_reply_problem(r, 400, "INVALID_FIELD", "name must be a string of 1 to %d bytes",
				 FB_MAX_NAME);
		goto done;
	}
	if (!parse_side(body, "a_side", &n.a, r) || !parse_side(body, "z_side", &n.z, r) ||
	    !parse_bandwidth(json_object_get(body, "bandwidth_mbps"), &n.bandwidth_mbps, r))
		goto done;
	sides[0] = &n.a;
	sides[1] = &n.z;
	for (int i = 0; i < 2; i++) {
		if (!find_port(s, sides[i]->port_id)) {
			lk_reply_problem(r, 422, "UNKNOWN_PORT", "%s.port_id: no port %s",
					 i ? "z_side" : "a_side", sides[i]->port_id);
			goto done;
		}
		if ((held = vlan_holder(s, sides[i]->port_id, sides[i]->vlan, NULL))) {
			reply_vlan_in_use(r, held->id,
					  "vlan %ld on port %s is already used by connection %s (%s, %s)",
					  sides[i]->vlan, sides[i]->port_id, held->id, held->name,
					  state_names[held->state]);
			goto done;
		}
	}
	if (strcmp(n.a.port_id, n.z.port_id) == 0 && n.a.vlan == n.z.vlan) {
		lk_reply_problem(r, 409, "VLAN_IN_USE",
				 "a_side and z_side are the same vlan %ld on port %s", n.a.vlan,
				 n.a.port_id);
		goto done;
	}
	if (!check_bandwidth(s, &n.a, &n.z, n.bandwidth_mbps, r))
		goto done;
	if (s->nconns == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		fb_conn *p = realloc(s->conns, cap * sizeof(*p));
		if (!p) {
			lk_reply_empty(r, 500);
			goto done;
		}
		s->conns = p;
		s->cap = cap;
	}
	snprintf(n.id, sizeof(n.id), "conn-%016llx",
		 (unsigned long long)lk_mix64(s->id_base + s->id_seq++));
	snprintf(n.name, sizeof(n.name), "%s", json_string_value(name));
	snprintf(n.key, sizeof(n.key), "%s", key ? key : "");
	n.state = ST_PENDING;
	n.will_fail = s->cfg.provision_fail_rate > 0 &&
		      lk_rng_next(&s->lk.rng) < s->cfg.provision_fail_rate;
	n.due_ms = lk_now_ms() + s->cfg.provision_delay_ms;
	n.version = 1;
	lk_rfc3339_now(n.created_at, sizeof(n.created_at), true);
	snprintf(n.updated_at, sizeof(n.updated_at), "%s", n.created_at);
	s->conns[s->nconns++] = n;
	save_state(s);
	lk_log(&s->lk, "%s (%s): created PENDING: %s vlan %ld <-> %s vlan %ld, %ld Mbps", n.id,
	       n.name, n.a.port_id, n.a.vlan, n.z.port_id, n.z.vlan, n.bandwidth_mbps);
	lk_reply_json(r, 201, conn_json(&n));
	lk_reply_header(r, MHD_HTTP_HEADER_LOCATION, "/v1/connections/%s", n.id);
	settle_all(s); /* a zero delay completes at once (after the 201 body was built) */
done:
	pthread_mutex_unlock(&s->lk.lock);
	json_decref(body);
}

static void api_conn_get(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	fb_conn *k;
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	if ((k = find_conn(s, c->param))) {
		s->served[k->state]++;
		lk_reply_json(r, 200, conn_json(k));
	} else {
		lk_reply_problem(r, 404, "NOT_FOUND", "no connection %s", c->param);
	}
	pthread_mutex_unlock(&s->lk.lock);
}

/* PATCH {"bandwidth_mbps"?, "name"?}: a name changes at once; a bandwidth
 * change needs a PROVISIONED connection and re-provisions it. */
static void api_conn_patch(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	json_t *body, *v, *bw_v, *name_v;
	const char *k;
	fb_conn *conn;
	long bw = 0;

	if (!(body = lk_body_object(c, r, "INVALID_BODY")))
		return;
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	if (!(conn = find_conn(s, c->param))) {
		lk_reply_problem(r, 404, "NOT_FOUND", "no connection %s", c->param);
		goto done;
	}
	json_object_foreach(body, k, v) {
		if (!strcmp(k, "a_side") || !strcmp(k, "z_side")) {
			lk_reply_problem(r, 400, "IMMUTABLE_FIELD",
					 "%s cannot be changed: create a new connection", k);
			goto done;
		}
		if (strcmp(k, "bandwidth_mbps") && strcmp(k, "name")) {
			lk_reply_problem(r, 400, "INVALID_FIELD", "%s cannot be changed", k);
			goto done;
		}
	}
	name_v = json_object_get(body, "name");
	bw_v = json_object_get(body, "bandwidth_mbps");
	if (name_v && (!json_is_string(name_v) || json_string_length(name_v) == 0 ||
		       json_string_length(name_v) > FB_MAX_NAME)) {
		lk_reply_problem(r, 400, "INVALID_FIELD", "name must be a string of 1 to %d bytes",
				 FB_MAX_NAME);
		goto done;
	}
	if (bw_v && !parse_bandwidth(bw_v, &bw, r))
		goto done;
	if (conn->state == ST_DEPROVISIONING || conn->state == ST_FAILED ||
	    (bw_v && bw != conn->bandwidth_mbps && conn->state != ST_PROVISIONED)) {
		lk_reply_problem(r, 409, "INVALID_STATE",
				 "connection %s is %s: it can be changed when PROVISIONED",
				 conn->id, state_names[conn->state]);
		goto done;
	}
	if (bw_v && !check_bandwidth(s, &conn->a, &conn->z, bw, r))
		goto done;
	if (name_v && strcmp(json_string_value(name_v), conn->name) != 0) {
		snprintf(conn->name, sizeof(conn->name), "%s", json_string_value(name_v));
		conn->version++;
		lk_rfc3339_now(conn->updated_at, sizeof(conn->updated_at), true);
		lk_log(&s->lk, "%s: renamed %s", conn->id, conn->name);
	}
	if (bw_v && bw != conn->bandwidth_mbps) {
		conn->prev_bandwidth_mbps = conn->bandwidth_mbps;
		conn->bandwidth_mbps = bw;
		conn->modifying = true;
		conn->will_fail = s->cfg.provision_fail_rate > 0 &&
				  lk_rng_next(&s->lk.rng) < s->cfg.provision_fail_rate;
		conn->due_ms = lk_now_ms() + s->cfg.provision_delay_ms;
		lk_log(&s->lk, "%s (%s): bandwidth %ld -> %ld Mbps requested", conn->id, conn->name,
		       conn->prev_bandwidth_mbps, bw);
		set_state(s, conn, ST_PENDING);
	}
	save_state(s);
	lk_reply_json(r, 200, conn_json(conn));
	settle_all(s);
done:
	pthread_mutex_unlock(&s->lk.lock);
	json_decref(body);
}

/* DELETE: 202 with the connection DEPROVISIONING; gone after the delay. */
static void api_conn_delete(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	fb_conn *k;
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	if (!(k = find_conn(s, c->param))) {
		lk_reply_problem(r, 404, "NOT_FOUND", "no connection %s", c->param);
	} else {
		if (k->state != ST_DEPROVISIONING) {
			k->modifying = false;
			k->due_ms = lk_now_ms() + s->cfg.deprovision_delay_ms;
			set_state(s, k, ST_DEPROVISIONING);
			save_state(s);
		}
		lk_reply_json(r, 202, conn_json(k));
		settle_all(s);
	}
	pthread_mutex_unlock(&s->lk.lock);
}


static const lk_route api_routes[] = {
	{ LK_GET, "/v1/ports", api_ports, 0 },
	{ LK_GET, "/v1/ports/{}", api_port_get, 0 },
	{ LK_GET, "/v1/connections", api_conns, 0 },
	{ LK_POST, "/v1/connections", api_conn_create, 0 },
	{ LK_GET, "/v1/connections/{}", api_conn_get, 0 },
	{ LK_PATCH, "/v1/connections/{}", api_conn_patch, 0 },
	{ LK_DELETE, "/v1/connections/{}", api_conn_delete, 0 },
};

/* ---- control endpoints ------------------------------------------------ */

static json_t *config_json(const fb_server *s)
{
	const lk_faults *f = &s->lk.faults;
	return json_pack("{s:I, s:f, s:f, s:I, s:I, s:I, s:f, s:b, s:i}",
			 "latency_ms", (json_int_t)f->latency_ms,
			 "fail_rate", f->fail_rate,
			 "rate_429", f->rate_429,
			 "retry_after", (json_int_t)f->retry_after,
			 "provision_delay_ms", (json_int_t)s->cfg.provision_delay_ms,
			 "deprovision_delay_ms", (json_int_t)s->cfg.deprovision_delay_ms,
			 "provision_fail_rate", s->cfg.provision_fail_rate,
			 "token_required", s->lk.token != NULL,
			 "ports", s->nports);
}

static void ctl_stats(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	json_t *by_state = json_object(), *trans = json_object(), *served = json_object();
	char name[48];
	pthread_mutex_lock(&s->lk.lock);
	settle_all(s);
	for (int i = 0; i < ST_GONE; i++) {
		json_int_t n = 0;
		for (size_t j = 0; j < s->nconns; j++)
			n += s->conns[j].state == (fb_state)i;
		json_object_set_new(by_state, state_names[i], json_integer(n));
		json_object_set_new(served, state_names[i], json_integer((json_int_t)s->served[i]));
	}
	for (int i = 0; i < ST_COUNT; i++) {
		for (int j = 0; j < ST_COUNT; j++) {
			if (!s->transitions[i][j])
				continue;
			snprintf(name, sizeof(name), "%s->%s", state_names[i], state_names[j]);
			json_object_set_new(trans, name, json_integer((json_int_t)s->transitions[i][j]));
		}
	}
	lk_reply_json(r, 200, json_pack("{s:o, s:o, s:o, s:I, s:o, s:o, s:I, s:I}",
					"requests", lk_requests_json(&s->lk, true),
					"responses", lk_responses_json(&s->lk),
					"connections", by_state,
					"total_connections", (json_int_t)s->nconns,
					"transitions", trans, "served", served,
					"in_flight", (json_int_t)s->lk.in_flight,
					"max_in_flight", (json_int_t)s->lk.max_in_flight));
	pthread_mutex_unlock(&s->lk.lock);
}

static void ctl_stats_reset(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	pthread_mutex_lock(&s->lk.lock);
	lk_stats_reset(&s->lk);
	memset(s->transitions, 0, sizeof(s->transitions));
	memset(s->served, 0, sizeof(s->served));
	pthread_mutex_unlock(&s->lk.lock);
	lk_reply_empty(r, 204);
}

static void ctl_config_get(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	pthread_mutex_lock(&s->lk.lock);
	lk_reply_json(r, 200, config_json(s));
	pthread_mutex_unlock(&s->lk.lock);
}

static void ctl_config_put(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	lk_faults *f = &s->lk.faults;
	const lk_setting settings[] = {
		{ "latency_ms", 0, 3600000, &f->latency_ms, NULL },
		{ "fail_rate", 0, 1, NULL, &f->fail_rate },
		{ "rate_429", 0, 1, NULL, &f->rate_429 },
		{ "retry_after", 0, 86400, &f->retry_after, NULL },
		{ "provision_delay_ms", 0, 3600000, &s->cfg.provision_delay_ms, NULL },
		{ "deprovision_delay_ms", 0, 3600000, &s->cfg.deprovision_delay_ms, NULL },
		{ "provision_fail_rate", 0, 1, NULL, &s->cfg.provision_fail_rate },
	};
	json_t *body;
	char why[512];

	if (!(body = lk_body_object(c, r, "INVALID_BODY")))
		return;
	pthread_mutex_lock(&s->lk.lock);
	if (lk_settings_apply(body, settings, LK_ARRAY_SIZE(settings), why, sizeof(why)) != 0)
		lk_reply_problem(r, 400, "INVALID_FIELD", "%s", why);
	else
		lk_reply_json(r, 200, config_json(s));
	pthread_mutex_unlock(&s->lk.lock);
	json_decref(body);
}

static void ctl_conns_delete(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	json_int_t n;
	pthread_mutex_lock(&s->lk.lock);
	n = (json_int_t)s->nconns;
	s->nconns = 0;
	save_state(s);
	pthread_mutex_unlock(&s->lk.lock);
	lk_reply_json(r, 200, json_pack("{s:I}", "deleted", n));
}

static const lk_route ctl_routes[] = {
	{ LK_GET, "/_stats", ctl_stats, 0 },
	{ LK_POST, "/_stats/reset", ctl_stats_reset, 0 },
	{ LK_GET, "/_config", ctl_config_get, 0 },
	{ LK_PUT, "/_config", ctl_config_put, 0 },
	{ LK_DELETE, "/_connections", ctl_conns_delete, 0 },
};

/* ---- request handling ------------------------------------------------- */

/* Every request: a control endpoint, or an API request (counted, delayed,
 * maybe failed, authenticated, then routed). */
static void handle(lk_call *c, lk_reply *r)
{
	fb_server *s = c->srv;
	if (strncmp(c->path, "/_", 2) == 0) {
		if (c->too_large)
			lk_reply_problem(r, 413, "BODY_TOO_LARGE",
					 "the request body exceeds %d bytes", FB_MAX_BODY);
		else
			lk_route_dispatch(ctl_routes, LK_ARRAY_SIZE(ctl_routes), c, c->path, r,
					  LK_CODES);
		return;
	}
	if (lk_api_guard(&s->lk, c, r, LK_CODES))
		lk_route_dispatch(api_routes, LK_ARRAY_SIZE(api_routes), c, c->path, r,
				  LK_ALLOW | LK_CODES);
	lk_api_end(&s->lk, r->status);
}

/* ---- command line ----------------------------------------------------- */

enum { O_PORTS = LK_OPT_OWN, O_SPEED, O_PDELAY, O_DDELAY, O_PFAIL, O_STATE };

/* What the command line sets beyond lk's options. */
typedef struct {
	fb_server *srv;
	long nports, speed;
} fb_options;

static void usage(FILE *f)
{
	fputs("usage: fabric [options]\n"
	      "An in-memory interconnect provider API: ports and asynchronously\n"
	      "provisioned virtual connections.\n"
	      "\n"
	      "  --listen HOST:PORT          address to listen on (default 127.0.0.1:0, a free port)\n"
	      "  --port-file FILE            write the bound port to FILE once listening\n"
	      "  --ports N                   pre-provisioned ports port-1..port-N (default 4)\n"
	      "  --port-speed-mbps N         speed of every port (default 10000)\n"
	      "  --provision-delay-ms N      PENDING lasts N ms (default 0)\n"
	      "  --deprovision-delay-ms N    DEPROVISIONING lasts N ms (default 0)\n"
	      "  --provision-fail-rate F     a fraction F of provisionings fail (default 0)\n"
	      "  --latency-ms N              delay every API request by N ms (default 0)\n"
	      "  --fail-rate F               answer a fraction F of API requests 500/503 (default 0)\n"
	      "  --rate-429 F                answer a fraction F of API requests 429 (default 0)\n"
	      "  --retry-after S             Retry-After seconds sent with 429 (default 1)\n"
	      "  --seed N                    seed of the fault RNG (default: random)\n"
	      "  --token T                   require 'Authorization: Bearer T' on the API\n"
	      "  --state-file FILE           keep the connections in FILE across restarts\n"
	      "  --help                      show this help\n"
	      "\n"
	      "See examples/lab/README.md for the API.\n", f);
}

static bool own_option(void *cls, int opt, const char *arg)
{
	fb_options *o = cls;
	fb_config *cfg = &o->srv->cfg;
	switch (opt) {
	case O_PORTS: return lk_parse_long(arg, 1, FB_MAX_PORTS, &o->nports);
	case O_SPEED: return lk_parse_long(arg, 1, 100000000, &o->speed);
	case O_PDELAY: return lk_parse_long(arg, 0, 3600000, &cfg->provision_delay_ms);
	case O_DDELAY: return lk_parse_long(arg, 0, 3600000, &cfg->deprovision_delay_ms);
	case O_PFAIL: return lk_parse_rate(arg, &cfg->provision_fail_rate);
	case O_STATE:
		o->srv->state_file = arg;
		return *arg != '\0';
	default: return false;
	}
}

/* The pre-provisioned ports port-1..port-n, spread over the metros. */
static int make_ports(fb_server *s, long n, long speed)
{
	if (!(s->ports = calloc((size_t)n, sizeof(*s->ports))))
		return -1;
	s->nports = (int)n;
	for (int i = 0; i < s->nports; i++) {
		fb_port *p = &s->ports[i];
		snprintf(p->id, sizeof(p->id), "port-%d", i + 1);
		snprintf(p->name, sizeof(p->name), "lab-port-%d", i + 1);
		p->location = metros[i % LK_ARRAY_SIZE(metros)];
		p->speed_mbps = speed;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		LK_OPTIONS_BASE,
		{ "ports", required_argument, NULL, O_PORTS },
		{ "port-speed-mbps", required_argument, NULL, O_SPEED },
		{ "provision-delay-ms", required_argument, NULL, O_PDELAY },
		{ "deprovision-delay-ms", required_argument, NULL, O_DDELAY },
		{ "provision-fail-rate", required_argument, NULL, O_PFAIL },
		LK_OPTIONS_FAULTS,
		LK_OPTION_TOKEN,
		{ "state-file", required_argument, NULL, O_STATE },
		{ NULL, 0, NULL, 0 },
	};
	static fb_server srv;
	fb_options o = { .srv = &srv, .nports = 4, .speed = 10000 };
	char what[32];
	int rc;

	lk_init(&srv.lk, "fabric");
	srv.lk.max_body = FB_MAX_BODY;
	srv.lk.max_connections = FB_MAX_CONNECTIONS;
	srv.lk.thread_stack = FB_THREAD_STACK;
	srv.lk.timeout_s = 120;
	if ((rc = lk_parse_args(&srv.lk, argc, argv, opts, own_option, &o, usage)) >= 0)
		return rc;
	if (lk_resolve(&srv.lk) != 0)
		return 2;

	rc = 1;
	srv.id_base = lk_random_u64();
	if (srv.state_file && load_state(&srv) != 0) {
		/* load_state() said why */
	} else if (make_ports(&srv, o.nports, o.speed) != 0) {
		fprintf(stderr, "fabric: out of memory\n");
	} else {
		snprintf(what, sizeof(what), " (%d ports)", srv.nports);
		rc = lk_run(&srv.lk, handle, &srv, what);
	}
	lk_free(&srv.lk);
	free(srv.ports);
	free(srv.conns);
	return rc;
}
