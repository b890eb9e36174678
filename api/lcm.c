/*
 * lcm.c - ETSI MEC 010-2 application lifecycle management (app_lcm/v1):
 * application instances, their instantiate / operate / terminate tasks,
 * the LCM operation occurrences that track them (STARTING -> PROCESSING ->
 * COMPLETED, or FAILED_TEMP, then retry, fail or cancel as in v3.1.1), and
 * placement of an instance in a zone.
 *
 * A task is accepted at once (202 + Location of the operation occurrence)
 * and carried out on a worker by mo_run(): instantiate applies the
 * package's plan.lua with the zone's domains as inputs, operate applies it
 * again with operational_state STARTED or STOPPED, terminate destroys it.
 * Each instance has its own state database, <dataDir>/instances/<id>/
 * state.db, so `mecorch state list --state` shows what it holds, and the
 * engine's lock and journal protect it as they do for the CLI.
 */
#include "api_int.h"
#include "engine.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* ---- placement -------------------------------------------------------------------- */

double mo_api_haversine_km(double lat1, double lon1, double lat2, double lon2)
{
	const double r = 6371.0088, d2r = M_PI / 180.0;
	double dlat = (lat2 - lat1) * d2r, dlon = (lon2 - lon1) * d2r;
	double h = sin(dlat / 2) * sin(dlat / 2) +
		   cos(lat1 * d2r) * cos(lat2 * d2r) * sin(dlon / 2) * sin(dlon / 2);
	if (h > 1)
		h = 1;
	return 2 * r * asin(sqrt(h));
}

/* [lon, lat] positions of a GeoJSON Point or Polygon (or a string holding
 * one): their mean into *lat / *lon.  0, or -1 when unusable. */
static int area_center(json_t *area, double *lat, double *lon)
{
	json_t *parsed = NULL, *coords, *ring, *pos;
	double sl = 0, so = 0;
	size_t n = 0, i, last;
	int rc = -1;
	if (json_is_string(area))
		area = parsed = json_loads(json_string_value(area), 0, NULL);
	coords = json_object_get(area, "coordinates");
	if (!json_is_array(coords))
		goto done;
	if (json_is_number(json_array_get(coords, 0))) {
		/* Point */
		if (json_array_size(coords) < 2 || !json_is_number(json_array_get(coords, 1)))
			goto done;
		*lon = json_number_value(json_array_get(coords, 0));
		*lat = json_number_value(json_array_get(coords, 1));
		rc = 0;
		goto done;
	}
	ring = json_array_get(coords, 0); /* exterior ring */
	if (!json_is_array(ring) || json_array_size(ring) == 0)
		goto done;
	last = json_array_size(ring) - 1;
	json_array_foreach(ring, i, pos) {
		if (i == last && last > 0 && json_equal(pos, json_array_get(ring, 0)))
			break; /* closing position repeats the first */
		if (!json_is_number(json_array_get(pos, 0)) || !json_is_number(json_array_get(pos, 1)))
			goto done;
		so += json_number_value(json_array_get(pos, 0));
		sl += json_number_value(json_array_get(pos, 1));
		n++;
	}
	if (n == 0)
		goto done;
	*lat = sl / (double)n;
	*lon = so / (double)n;
	rc = 0;
done:
	json_decref(parsed);
	if (rc == 0 && (*lat < -90 || *lat > 90 || *lon < -180 || *lon > 180))
		rc = -1;
	return rc;
}

static const mo_api_zone *zone_by_id(const mo_api_config *cfg, const char *id)
{
	for (size_t i = 0; id && i < cfg->nzones; i++)
		if (!strcmp(cfg->zones[i].id, id))
			return &cfg->zones[i];
	return NULL;
}

const mo_api_zone *mo_api_place(const mo_api_config *cfg, json_t *req, const char **why)
{
	json_t *hosts = json_object_get(req, "selectedMECHostInfo"), *h, *lc;
	const char *cc;
	const mo_api_zone *best = NULL;
	double lat = 0, lon = 0, bestd = 0;
	size_t i;
	*why = NULL;
	if (json_is_array(hosts) && json_array_size(hosts) > 0) {
		json_array_foreach(hosts, i, h) {
			json_t *hid = json_object_get(h, "hostId");
			const char *name = mo_api_jstr(h, "hostName");
			const char *id = json_is_string(hid) ? json_string_value(hid) : mo_api_jstr(hid, "zoneId");
			const mo_api_zone *z = zone_by_id(cfg, id);
			if (!z && json_is_object(hid))
				z = zone_by_id(cfg, mo_api_jstr(hid, "id"));
			for (size_t k = 0; !z && name && k < cfg->nzones; k++)
				if (!strcmp(cfg->zones[k].id, name) || !strcmp(cfg->zones[k].name, name))
					z = &cfg->zones[k];
			if (z)
				return z;
		}
		*why = "no zone of this MEC system matches selectedMECHostInfo (give a zone id as hostId, "
		       "{\"zoneId\": ...} as hostId, or a zone id or name as hostName)";
		return NULL;
	}
	lc = json_object_get(req, "locationConstraints");
	if (!lc)
		return &cfg->zones[0];
	cc = mo_api_jstr(lc, "countryCode");
	if (json_object_get(lc, "area") && area_center(json_object_get(lc, "area"), &lat, &lon) < 0) {
		*why = "locationConstraints.area: want a GeoJSON Point or Polygon with [longitude, latitude] "
		       "positions";
		return NULL;
	}
	for (i = 0; i < cfg->nzones; i++) {
		const mo_api_zone *z = &cfg->zones[i];
		double d;
		if (cc && (!z->country || strcasecmp(cc, z->country)))
			continue;
		if (!json_object_get(lc, "area"))
			return z;
		d = mo_api_haversine_km(lat, lon, z->latitude, z->longitude);
		if (!best || d < bestd) {
			best = z;
			bestd = d;
		}
	}
	if (!best)
		*why = "no zone of this MEC system is in the requested country";
	return best;
}

/* ---- representation --------------------------------------------------------------------- */

static json_t *inst_links(mo_api *a, const char *id, const char *state)
{
	json_t *l = json_pack("{s:o}", "self", mo_api_link(a, "/app_lcm/v1/app_instances/%s", id));
	if (!strcmp(state, "NOT_INSTANTIATED")) {
		json_object_set_new(l, "instantiate", mo_api_link(a, "/app_lcm/v1/app_instances/%s/instantiate", id));
	} else {
		json_object_set_new(l, "terminate", mo_api_link(a, "/app_lcm/v1/app_instances/%s/terminate", id));
		json_object_set_new(l, "operate", mo_api_link(a, "/app_lcm/v1/app_instances/%s/operate", id));
	}
	return l;
}

static json_t *find_visible(mo_api *a, mo_api_req *q, mo_api_reply *r, int kind, const char *what)
{
	json_t *rec = mo_api_store_get(a->st, kind, q->params[0]);
	if (!mo_api_visible(q, rec)) {
		json_decref(rec);
		mo_api_problem(r, 404, "no %s %s", what, q->params[0]);
		return NULL;
	}
	return rec;
}

static int op_open(const json_t *op)
{
	const char *s = mo_api_jstr(mo_api_rec_doc(op), "operationState");
	return s && (!strcmp(s, "STARTING") || !strcmp(s, "PROCESSING") || !strcmp(s, "FAILED_TEMP"));
}

/* Inside a transaction: the instance's open operation occurrence, or NULL. */
static json_t *inst_open_op(mo_api *a, const json_t *inst)
{
	const char *opid = mo_api_jstr(mo_api_rec_int((json_t *)inst), "op");
	json_t *op = opid ? mo_api_store_peek(a->st, MO_K_OP, opid) : NULL;
	return op && op_open(op) ? op : NULL;
}

/* The zone an instance's resources are in (borrowed, inside a transaction):
 * the one its last successful instantiate recorded, or the one an
 * instantiate started in (recorded when it starts running), or failing
 * both the zone of its most recent INSTANTIATE operation; NULL when it was
 * never instantiated anywhere.  Terminate and delete rely on it: an
 * instantiate that failed part-way leaves resources that only a terminate
 * in that zone can destroy. */
/* A TimeStamp {seconds, nanoSeconds} as nanoseconds, for ordering. */
static long long ts_ns(const json_t *ts)
{
	return json_integer_value(json_object_get(ts, "seconds")) * 1000000000LL +
	       json_integer_value(json_object_get(ts, "nanoSeconds"));
}

/* The zone the instance's resources are in: its own record, or that of its
 * latest INSTANTIATE (by startTime: the store's order is not time order
 * after a restart). */
static const char *inst_zone(mo_api *a, const json_t *inst)
{
	const char *iid = mo_api_jstr(mo_api_rec_doc(inst), "id"), *zone;
	long long best = -1;
	json_t *all, *o;
	size_t i;
	if ((zone = mo_api_jstr(mo_api_rec_int(inst), "zone")))
		return zone;
	all = mo_api_store_all(a->st, MO_K_OP);
	json_array_foreach(all, i, o) {
		const char *z = mo_api_jstr(mo_api_rec_int(o), "zone");
		long long t = ts_ns(json_object_get(mo_api_rec_doc(o), "startTime"));
		if (z && iid && t > best && !strcmp(mo_api_jstr(mo_api_rec_int(o), "instance"), iid) &&
		    !strcmp(mo_api_jstr(mo_api_rec_doc(o), "lcmOperation"), "INSTANTIATE")) {
			zone = z; /* the store keeps o alive until the transaction ends */
			best = t;
		}
	}
	json_decref(all);
	return zone;
}

/* Update the package's usageState from its instances (inside a transaction). */
static int pkg_usage(mo_api *a, const char *pkg_id, const char *except_inst)
{
	json_t *pkg = mo_api_store_peek(a->st, MO_K_PKG, pkg_id), *all, *o, *n;
	int used = 0;
	size_t i;
	const char *want;
	if (!pkg)
		return 0;
	all = mo_api_store_all(a->st, MO_K_INST);
	json_array_foreach(all, i, o) {
		json_t *d = mo_api_rec_doc(o);
		if (!strcmp(mo_api_jstr(d, "appPkgId"), pkg_id) && (!except_inst || strcmp(mo_api_jstr(d, "id"), except_inst)))
			used = 1;
	}
	json_decref(all);
	want = used ? "IN_USE" : "NOT_IN_USE";
	if (!strcmp(mo_api_jstr(mo_api_rec_doc(pkg), "usageState"), want))
		return 0;
	n = json_deep_copy(pkg);
	json_object_set_new(mo_api_rec_doc(n), "usageState", json_string(want));
	return mo_api_store_put(a->st, MO_K_PKG, pkg_id, n);
}

/* ---- app_instances ------------------------------------------------------------------------ */

void mo_api_h_inst_create(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	const char *appdid, *name, *descr;
	json_t *all, *o, *pkg = NULL, *doc, *rec;
	char id[37];
	size_t i;
	int rc;
	if (mo_api_want_str(r, q->json, "appDId", 1, &appdid) < 0 ||
	    mo_api_want_str(r, q->json, "appInstanceName", 0, &name) < 0 ||
	    mo_api_want_str(r, q->json, "appInstanceDescription", 0, &descr) < 0)
		return;
	mo_api_store_begin(a->st);
	all = mo_api_store_all(a->st, MO_K_PKG);
	json_array_foreach(all, i, o) {
		json_t *d = mo_api_rec_doc(o);
		if (!strcmp(mo_api_jstr(d, "appDId"), appdid) && !strcmp(mo_api_jstr(d, "onboardingState"), "ONBOARDED") &&
		    mo_api_visible(q, o))
			pkg = o;
	}
	if (!pkg) {
		mo_api_store_end(a->st, 0);
		json_decref(all);
		mo_api_problem(r, 404, "no onboarded application package with appDId %s", appdid);
		return;
	}
	if (strcmp(mo_api_jstr(mo_api_rec_doc(pkg), "operationalState"), "ENABLED")) {
		mo_api_store_end(a->st, 0);
		json_decref(all);
		mo_api_problem(r, 409, "the package of appDId %s is DISABLED", appdid);
		return;
	}
	mo_api_uuid(id);
	doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o}", "id", id, "appDId", appdid, "appProvider",
			mo_api_jstr(mo_api_rec_doc(pkg), "appProvider"), "appName",
			mo_api_jstr(mo_api_rec_doc(pkg), "appName"), "appSoftVersion",
			mo_api_jstr(mo_api_rec_doc(pkg), "appSoftwareVersion"), "appDVersion",
			mo_api_jstr(mo_api_rec_doc(pkg), "appDVersion"), "appPkgId",
			mo_api_jstr(mo_api_rec_doc(pkg), "id"), "instantiationState", "NOT_INSTANTIATED", "_links",
			inst_links(a, id, "NOT_INSTANTIATED"));
	if (doc && name)
		json_object_set_new(doc, "appInstanceName", json_string(name));
	if (doc && descr)
		json_object_set_new(doc, "appInstanceDescription", json_string(descr));
	rec = mo_api_rec_new(q->who->tenant, doc);
	rc = mo_api_store_put(a->st, MO_K_INST, id, json_incref(rec));
	if (rc == 0)
		rc = pkg_usage(a, mo_api_jstr(mo_api_rec_doc(pkg), "id"), NULL);
	json_decref(all);
	if (rc == 0)
		mo_api_notify_inst_id(a, rec, 1);
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		json_decref(rec);
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	mo_api_notify_wake(a);
	r->location = mo_sprintf("%s/app_lcm/v1/app_instances/%s", a->base, id);
	mo_api_reply_json(r, 201, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

/* AppInstanceInfo and AppLcmOpOcc for filter and selectors, with the default
 * exclusions MEC 010-2 v3.1.1 names (the op occurrence's _links is required
 * by its schema, so of "operationParams; _links" only the first goes). */
static const char *const inst_attributes[] = { "id", "appInstanceName", "appInstanceDescription", "appDId",
	"appProvider", "appName", "appSoftVersion", "appDVersion", "appPkgId", "vimConnectionInfo", "nsInstanceId",
	"vnfInstanceId", "instantiationState", "instantiatedAppState", "communicationInterface", "_links", NULL };
static const char *const inst_required[] = { "id", "appDId", "appProvider", "appName", "appSoftVersion",
	"appDVersion", "appPkgId", "instantiationState", "_links/self", NULL };
static const char *const inst_excluded[] = { "vimConnectionInfo", "_links/instantiate", "_links/terminate",
	"_links/operate", NULL };
const mo_api_shape mo_api_shape_inst = { "AppInstanceInfo", inst_attributes, inst_required, inst_excluded };

static const char *const op_attributes[] = { "id", "operationState", "stateEnteredTime", "startTime",
	"lcmOperation", "operationParams", "isCancelPending", "cancelMode", "error", "_links", NULL };
static const char *const op_required[] = { "id", "operationState", "stateEnteredTime", "startTime",
	"lcmOperation", "_links/self", "_links/appInstance", NULL };
static const char *const op_excluded[] = { "operationParams", NULL };
const mo_api_shape mo_api_shape_op = { "AppLcmOpOcc", op_attributes, op_required, op_excluded };

void mo_api_h_inst_list(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *all = mo_api_store_all(a->st, MO_K_INST), *out = json_array(), *rec;
	size_t i;
	json_array_foreach(all, i, rec)
		if (mo_api_visible(q, rec))
			json_array_append(out, mo_api_rec_doc(rec));
	json_decref(all);
	mo_api_reply_list(q, r, &mo_api_shape_inst, out);
}

void mo_api_h_inst_get(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_visible(a, q, r, MO_K_INST, "application instance");
	if (rec)
		mo_api_reply_json(r, 200, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

void mo_api_h_inst_delete(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_visible(a, q, r, MO_K_INST, "application instance"), *cur, *ops, *o;
	long long resources;
	char *dir;
	size_t i;
	int rc;
	if (!rec)
		return;
	json_decref(rec);
	mo_api_store_begin(a->st);
	cur = mo_api_store_peek(a->st, MO_K_INST, q->params[0]);
	if (!cur) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 404, "no application instance %s", q->params[0]);
		return;
	}
	resources = json_integer_value(json_object_get(mo_api_rec_int(cur), "resources"));
	if (strcmp(mo_api_jstr(mo_api_rec_doc(cur), "instantiationState"), "NOT_INSTANTIATED") ||
	    inst_open_op(a, cur) || resources > 0) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 409, "application instance %s is %s%s%s: terminate it first", q->params[0],
			       mo_api_jstr(mo_api_rec_doc(cur), "instantiationState"),
			       inst_open_op(a, cur) ? " with an operation in progress" : "",
			       resources > 0 ? " and still holds resources" : "");
		return;
	}
	mo_api_notify_inst_id(a, cur, 0);
	rc = mo_api_store_del(a->st, MO_K_INST, q->params[0]);
	ops = mo_api_store_all(a->st, MO_K_OP);
	json_array_foreach(ops, i, o)
		if (rc == 0 && !strcmp(mo_api_jstr(mo_api_rec_int(o), "instance"), q->params[0]))
			rc = mo_api_store_del(a->st, MO_K_OP, mo_api_jstr(mo_api_rec_doc(o), "id"));
	json_decref(ops);
	if (rc == 0)
		rc = pkg_usage(a, mo_api_jstr(mo_api_rec_doc(cur), "appPkgId"), q->params[0]);
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	if ((dir = mo_sprintf("%s/%s", a->inst_dir, q->params[0]))) {
		mo_api_rmtree(dir);
		mo_free(dir);
	}
	mo_api_notify_wake(a);
	r->status = 204;
}

/* Create an operation occurrence for inst and queue it (inside a transaction);
 * params (operationParams) is stolen. */
static int new_op(mo_api *a, json_t *inst, const char *lcmop, json_t *params, const char *zone, char id[37])
{
	json_t *doc, *op, *ni;
	const char *iid = mo_api_jstr(mo_api_rec_doc(inst), "id");
	int rc;
	mo_api_uuid(id);
	doc = json_pack("{s:s,s:s,s:o,s:o,s:s,s:o,s:b,s:{s:o,s:o}}", "id", id, "operationState", "STARTING",
			"stateEnteredTime", mo_api_timestamp(), "startTime", mo_api_timestamp(), "lcmOperation",
			lcmop, "operationParams", params, "isCancelPending", 0, "_links", "self",
			mo_api_link(a, "/app_lcm/v1/app_lcm_op_occs/%s", id), "appInstance",
			mo_api_link(a, "/app_lcm/v1/app_instances/%s", iid));
	op = mo_api_rec_new(mo_api_rec_tenant(inst), doc);
	if (!op)
		return mo_error_set(MO_ENOMEM, "out of memory");
	json_object_set_new(mo_api_rec_int(op), "instance", json_string(iid));
	if (zone)
		json_object_set_new(mo_api_rec_int(op), "zone", json_string(zone));
	if ((rc = mo_api_store_put(a->st, MO_K_OP, id, json_incref(op))) < 0) {
		json_decref(op);
		return rc;
	}
	ni = json_deep_copy(inst);
	json_object_set_new(mo_api_rec_int(ni), "op", json_string(id));
	rc = mo_api_store_put(a->st, MO_K_INST, iid, ni);
	if (rc == 0)
		mo_api_notify_op(a, op, inst);
	json_decref(op);
	return rc;
}

typedef int (*task_check)(mo_api *a, mo_api_req *q, mo_api_reply *r, json_t *inst, const char **zone);

static void task(mo_api *a, mo_api_req *q, mo_api_reply *r, const char *lcmop, task_check check)
{
	json_t *rec = find_visible(a, q, r, MO_K_INST, "application instance"), *cur;
	const char *zone = NULL;
	char id[37];
	int rc;
	if (!rec)
		return;
	json_decref(rec);
	mo_api_store_begin(a->st);
	cur = mo_api_store_peek(a->st, MO_K_INST, q->params[0]);
	if (!cur) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 404, "no application instance %s", q->params[0]);
		return;
	}
	if (inst_open_op(a, cur)) {
		json_t *op = inst_open_op(a, cur);
		mo_api_problem(r, 409, "application instance %s has an operation in progress (%s, %s): wait for it, "
			       "or retry, fail or cancel it", q->params[0], mo_api_jstr(mo_api_rec_doc(op), "id"),
			       mo_api_jstr(mo_api_rec_doc(op), "operationState"));
		mo_api_store_end(a->st, 0);
		return;
	}
	if (check(a, q, r, cur, &zone) < 0) {
		mo_api_store_end(a->st, 0);
		return;
	}
	rc = new_op(a, cur, lcmop, json_incref(q->json), zone, id);
	rc = mo_api_store_end(a->st, rc == 0);
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	mo_api_job_push(a, MO_JOB_LCM, id, NULL);
	mo_api_notify_wake(a);
	r->status = 202;
	r->location = mo_sprintf("%s/app_lcm/v1/app_lcm_op_occs/%s", a->base, id);
}

/* The package behind an instance, if still onboarded (borrowed, in a transaction). */
static json_t *inst_pkg(mo_api *a, json_t *inst)
{
	return mo_api_store_peek(a->st, MO_K_PKG, mo_api_jstr(mo_api_rec_doc(inst), "appPkgId"));
}

static int plan_declares(json_t *pkg, const char *var)
{
	json_t *vars = json_object_get(mo_api_rec_int(pkg), "vars"), *v;
	size_t i;
	json_array_foreach(vars, i, v)
		if (!strcmp(json_string_value(v), var))
			return 1;
	return 0;
}

static int check_instantiate(mo_api *a, mo_api_req *q, mo_api_reply *r, json_t *inst, const char **zone)
{
	json_t *hosts, *lc, *pkg;
	const mo_api_zone *z;
	const char *why, *held;
	if (mo_api_want_arr(r, q->json, "selectedMECHostInfo", 0, &hosts) < 0 ||
	    mo_api_want_obj(r, q->json, "locationConstraints", 0, &lc) < 0)
		return -1;
	if (strcmp(mo_api_jstr(mo_api_rec_doc(inst), "instantiationState"), "NOT_INSTANTIATED")) {
		mo_api_problem(r, 409, "application instance %s is INSTANTIATED already", q->params[0]);
		return -1;
	}
	pkg = inst_pkg(a, inst);
	if (!pkg || strcmp(mo_api_jstr(mo_api_rec_doc(pkg), "operationalState"), "ENABLED")) {
		mo_api_problem(r, 409, "the application package of instance %s is %s", q->params[0],
			       pkg ? "DISABLED" : "gone");
		return -1;
	}
	if (!(z = mo_api_place(a->cfg, q->json, &why))) {
		mo_api_problem(r, 400, "%s", why);
		return -1;
	}
	held = json_integer_value(json_object_get(mo_api_rec_int(inst), "resources")) > 0 ? inst_zone(a, inst) : NULL;
	if (held && strcmp(held, z->id)) {
		/* what a failed instantiate left is in another zone: the plan's
		 * state would move it, or lose track of it */
		mo_api_problem(r, 409, "application instance %s still holds resources in zone %s from a failed "
			       "instantiate: terminate it first, or instantiate it in %s", q->params[0], held, held);
		return -1;
	}
	*zone = z->id;
	return 0;
}

static int check_terminate(mo_api *a, mo_api_req *q, mo_api_reply *r, json_t *inst, const char **zone)
{
	static const char *const types[] = { "FORCEFUL", "GRACEFUL", NULL };
	const char *t;
	json_t *g = json_object_get(q->json, "gracefulTerminationTimeout");
	if (mo_api_want_enum(r, q->json, "terminationType", 0, types, &t) < 0)
		return -1;
	if (g && (!json_is_integer(g) || json_integer_value(g) < 0)) {
		mo_api_problem(r, 400, "'gracefulTerminationTimeout' must be a non-negative integer (seconds)");
		return -1;
	}
	if (!strcmp(mo_api_jstr(mo_api_rec_doc(inst), "instantiationState"), "NOT_INSTANTIATED") &&
	    json_integer_value(json_object_get(mo_api_rec_int(inst), "resources")) == 0) {
		mo_api_problem(r, 409, "application instance %s is NOT_INSTANTIATED", q->params[0]);
		return -1;
	}
	if (!inst_pkg(a, inst)) {
		mo_api_problem(r, 409, "the application package of instance %s is gone", q->params[0]);
		return -1;
	}
	/* the operation records where it destroys, for an instance whose
	 * instantiate failed as for one that completed */
	*zone = inst_zone(a, inst);
	return 0;
}

static int check_operate(mo_api *a, mo_api_req *q, mo_api_reply *r, json_t *inst, const char **zone)
{
	static const char *const states[] = { "STARTED", "STOPPED", NULL };
	static const char *const stops[] = { "FORCEFUL", "GRACEFUL", NULL };
	const char *to, *stop, *now;
	json_t *g = json_object_get(q->json, "gracefulStopTimeout"), *pkg;
	(void)zone;
	if (mo_api_want_enum(r, q->json, "changeStateTo", 1, states, &to) < 0 ||
	    mo_api_want_enum(r, q->json, "stopType", 0, stops, &stop) < 0)
		return -1;
	if (g && (!json_is_integer(g) || json_integer_value(g) < 0)) {
		mo_api_problem(r, 400, "'gracefulStopTimeout' must be a non-negative integer (seconds)");
		return -1;
	}
	if (strcmp(mo_api_jstr(mo_api_rec_doc(inst), "instantiationState"), "INSTANTIATED")) {
		mo_api_problem(r, 409, "application instance %s is NOT_INSTANTIATED", q->params[0]);
		return -1;
	}
	now = mo_api_jstr(json_object_get(mo_api_rec_doc(inst), "instantiatedAppState"), "operationalState");
	if (now && !strcmp(now, to)) {
		mo_api_problem(r, 409, "application instance %s is %s already", q->params[0], to);
		return -1;
	}
	pkg = inst_pkg(a, inst);
	if (!pkg || !plan_declares(pkg, "operational_state")) {
		mo_api_problem(r, 409, "the plan of this application's package does not declare the variable "
			       "operational_state, so it cannot be started or stopped");
		return -1;
	}
	return 0;
}

void mo_api_h_inst_instantiate(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	task(a, q, r, "INSTANTIATE", check_instantiate);
}

void mo_api_h_inst_terminate(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	task(a, q, r, "TERMINATE", check_terminate);
}

void mo_api_h_inst_operate(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	task(a, q, r, "OPERATE", check_operate);
}

/* ---- app_lcm_op_occs -------------------------------------------------------------------------- */

void mo_api_h_op_list(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *all = mo_api_store_all(a->st, MO_K_OP), *out = json_array(), *rec;
	const char *inst = mo_api_query(q, "appInstanceId");
	size_t i;
	json_array_foreach(all, i, rec)
		if (mo_api_visible(q, rec) && (!inst || !strcmp(inst, mo_api_jstr(mo_api_rec_int(rec), "instance"))))
			json_array_append(out, mo_api_rec_doc(rec));
	json_decref(all);
	mo_api_reply_list(q, r, &mo_api_shape_op, out);
}

void mo_api_h_op_get(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_visible(a, q, r, MO_K_OP, "LCM operation occurrence");
	if (rec)
		mo_api_reply_json(r, 200, json_incref(mo_api_rec_doc(rec)));
	json_decref(rec);
}

/* Set an operation's state (and more doc fields), notify (inside a transaction). */
static json_t *op_set(mo_api *a, json_t *op, const char *state, ...)
{
	json_t *n = json_deep_copy(op), *doc = mo_api_rec_doc(n), *inst;
	const char *k;
	va_list ap;
	if (strcmp(mo_api_jstr(doc, "operationState"), state)) {
		json_object_set_new(doc, "operationState", json_string(state));
		json_object_set_new(doc, "stateEnteredTime", mo_api_timestamp());
	}
	va_start(ap, state);
	while ((k = va_arg(ap, const char *))) {
		json_t *v = va_arg(ap, json_t *);
		if (v)
			json_object_set_new(doc, k, v);
		else
			json_object_del(doc, k);
	}
	va_end(ap);
	if (mo_api_store_put(a->st, MO_K_OP, mo_api_jstr(doc, "id"), json_incref(n)) < 0) {
		json_decref(n);
		return NULL;
	}
	inst = mo_api_store_peek(a->st, MO_K_INST, mo_api_jstr(mo_api_rec_int(n), "instance"));
	mo_api_notify_op(a, n, inst);
	return n;
}

static json_t *find_op_tx(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *rec = find_visible(a, q, r, MO_K_OP, "LCM operation occurrence");
	if (!rec)
		return NULL;
	json_decref(rec);
	mo_api_store_begin(a->st);
	rec = mo_api_store_peek(a->st, MO_K_OP, q->params[0]);
	if (!rec) {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 404, "no LCM operation occurrence %s", q->params[0]);
	}
	return rec;
}

void mo_api_h_op_cancel(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	static const char *const modes[] = { "GRACEFUL", "FORCEFUL", NULL };
	const char *mode = NULL, *state;
	json_t *op, *n, *wrapped = json_object_get(q->json, "CancelMode");
	int rc;
	if (mo_api_want_enum(r, json_is_object(wrapped) ? wrapped : q->json, "cancelMode", 0, modes, &mode) < 0)
		return;
	if (!mode)
		mode = "GRACEFUL";
	if (!(op = find_op_tx(a, q, r)))
		return;
	state = mo_api_jstr(mo_api_rec_doc(op), "operationState");
	if (!strcmp(state, "STARTING") && mo_api_job_unqueue(a, q->params[0])) {
		n = op_set(a, op, "FAILED_TEMP", "error",
			   json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title", "Cancelled", "status", 409,
				     "detail", "the operation was cancelled before it started"), NULL);
		rc = mo_api_store_end(a->st, n != NULL);
		json_decref(n);
	} else if (!strcmp(state, "PROCESSING") || !strcmp(state, "STARTING")) {
		n = op_set(a, op, state, "isCancelPending", json_true(), "cancelMode", json_string(mode), NULL);
		rc = mo_api_store_end(a->st, n != NULL);
		json_decref(n);
		if (rc == 0)
			mo_api_job_interrupt(a, q->params[0]);
	} else {
		mo_api_store_end(a->st, 0);
		mo_api_problem(r, 409, "operation %s is %s: only STARTING or PROCESSING operations can be cancelled",
			       q->params[0], state);
		return;
	}
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	mo_api_notify_wake(a);
	r->status = 202;
}

void mo_api_h_op_fail(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *op = find_op_tx(a, q, r), *n, *inst;
	int rc = 0;
	if (!op)
		return;
	if (strcmp(mo_api_jstr(mo_api_rec_doc(op), "operationState"), "FAILED_TEMP")) {
		mo_api_problem(r, 409, "operation %s is %s: only FAILED_TEMP operations can be failed", q->params[0],
			       mo_api_jstr(mo_api_rec_doc(op), "operationState"));
		mo_api_store_end(a->st, 0);
		return;
	}
	n = op_set(a, op, "FAILED", "isCancelPending", json_false(), "cancelMode", NULL, NULL);
	inst = mo_api_store_peek(a->st, MO_K_INST, mo_api_jstr(mo_api_rec_int(op), "instance"));
	if (inst) {
		json_t *ni = json_deep_copy(inst);
		json_object_del(mo_api_rec_int(ni), "op");
		rc = mo_api_store_put(a->st, MO_K_INST, mo_api_jstr(mo_api_rec_doc(ni), "id"), ni);
	}
	rc = mo_api_store_end(a->st, n != NULL && rc == 0);
	if (rc < 0)
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
	else
		mo_api_reply_json(r, 200, json_incref(mo_api_rec_doc(n)));
	json_decref(n);
	mo_api_notify_wake(a);
}

void mo_api_h_op_retry(mo_api *a, mo_api_req *q, mo_api_reply *r)
{
	json_t *op = find_op_tx(a, q, r), *n;
	int rc;
	if (!op)
		return;
	if (strcmp(mo_api_jstr(mo_api_rec_doc(op), "operationState"), "FAILED_TEMP")) {
		mo_api_problem(r, 409, "operation %s is %s: only FAILED_TEMP operations can be retried", q->params[0],
			       mo_api_jstr(mo_api_rec_doc(op), "operationState"));
		mo_api_store_end(a->st, 0);
		return;
	}
	n = op_set(a, op, "PROCESSING", "error", NULL, "isCancelPending", json_false(), "cancelMode", NULL, NULL);
	rc = mo_api_store_end(a->st, n != NULL);
	json_decref(n);
	if (rc < 0) {
		mo_api_problem(r, 500, "%s", mo_error_last()->message);
		return;
	}
	mo_api_job_push(a, MO_JOB_LCM, q->params[0], NULL);
	mo_api_notify_wake(a);
	r->status = 202;
}

/* ---- carrying an operation out ---------------------------------------------------------------- */

typedef struct {
	mo_api *a;
	const char *owner;
} run_ctx;

static void on_event(void *ud, const mo_event *ev)
{
	run_ctx *c = ud;
	mo_api_store_run_event(c->a->st, c->owner, ev);
}

static void on_log(void *ud, const char *who, const char *level, const char *msg)
{
	run_ctx *c = ud;
	mo_api_store_run_log(c->a->st, c->owner, who, level, msg);
}

/* Resources recorded in a state database: 0 when there is none, -1 when
 * it cannot be read (then what the instance recorded before stands, so a
 * passing failure cannot make it deletable while it holds resources). */
static long long count_resources(const char *state_path)
{
	mo_state *st = NULL;
	mo_resource **list = NULL;
	size_t n = 0;
	long long count;
	struct stat sb;
	if (!state_path)
		return -1;
	if (stat(state_path, &sb) != 0)
		return errno == ENOENT ? 0 : -1;
	if (mo_state_open(&st, state_path) < 0)
		return -1;
	count = mo_state_list(st, &list, &n) < 0 ? -1 : (long long)n;
	mo_resource_list_free(list, n);
	mo_state_close(st);
	return count;
}

/* The message of a failed run: the error and each failed action. */
static char *run_error(int rc, const mo_run_result *res)
{
	mo_buf b = MO_BUF_INIT;
	size_t i;
	json_t *e;
	const mo_error *err = mo_error_last();
	mo_buf_puts(&b, err->message[0] ? err->message : mo_code_name(rc));
	json_array_foreach(res->exec.errors, i, e) {
		if (i >= 5)
			break;
		mo_buf_printf(&b, "; %s: %s", mo_api_jstr(e, "address") ? mo_api_jstr(e, "address") : "?",
			      mo_api_jstr(e, "message") ? mo_api_jstr(e, "message") : "failed");
	}
	return b.ptr;
}

void mo_api_lcm_run(mo_api *a, const char *op_id, mo_api_running *run)
{
	json_t *op, *inst, *pkg, *vars = NULL, *declared, *n, *all_vars = NULL;
	const mo_api_zone *z = NULL;
	mo_run_opts o;
	mo_run_result res;
	run_ctx ctx = { a, op_id };
	char *plan = NULL, *state = NULL, *dir = NULL, *msg = NULL;
	const char *lcmop, *opstate = "STARTED", *iid;
	long long resources;
	int rc, started;
	memset(&res, 0, sizeof(res));

	/* STARTING -> PROCESSING; the zone the run works in */
	mo_api_store_begin(a->st);
	op = mo_api_store_peek(a->st, MO_K_OP, op_id);
	if (!op || (strcmp(mo_api_jstr(mo_api_rec_doc(op), "operationState"), "STARTING") &&
		    strcmp(mo_api_jstr(mo_api_rec_doc(op), "operationState"), "PROCESSING"))) {
		mo_api_store_end(a->st, 0);
		return;
	}
	if (!strcmp(mo_api_jstr(mo_api_rec_doc(op), "operationState"), "STARTING"))
		op = op_set(a, op, "PROCESSING", NULL);
	else
		json_incref(op);
	started = op != NULL;
	iid = started ? mo_api_jstr(mo_api_rec_int(op), "instance") : NULL;
	lcmop = started ? mo_api_jstr(mo_api_rec_doc(op), "lcmOperation") : NULL;
	if (started && (n = mo_api_store_peek(a->st, MO_K_INST, iid))) {
		const char *zid = mo_api_jstr(mo_api_rec_int(op), "zone"), *had;
		if (!zid)
			zid = inst_zone(a, n);
		for (size_t i = 0; zid && i < a->cfg->nzones; i++)
			if (!strcmp(a->cfg->zones[i].id, zid))
				z = &a->cfg->zones[i];
		had = mo_api_jstr(mo_api_rec_int(n), "zone");
		if (z && !strcmp(lcmop, "INSTANTIATE") && (!had || strcmp(had, z->id))) {
			/* from now on the instance may hold resources there, whatever
			 * becomes of this operation: terminate must find them (an
			 * instance holding resources elsewhere does not get here:
			 * check_instantiate refuses another zone) */
			n = json_deep_copy(n);
			json_object_set_new(mo_api_rec_int(n), "zone", json_string(z->id));
			started = mo_api_store_put(a->st, MO_K_INST, iid, n) == 0;
		}
	}
	if (mo_api_store_end(a->st, started) < 0 || !started) {
		json_decref(op);
		return;
	}
	mo_api_notify_wake(a);
	inst = mo_api_store_get(a->st, MO_K_INST, iid);
	pkg = inst ? mo_api_store_get(a->st, MO_K_PKG, mo_api_jstr(mo_api_rec_doc(inst), "appPkgId")) : NULL;
	if (!inst || !pkg || !z) {
		rc = mo_error_set(MO_EINVAL, "%s", !inst ? "the application instance is gone"
						  : !pkg ? "the application package is gone"
							 : "the instance's zone is no longer configured");
		goto finish;
	}
	if (!strcmp(lcmop, "OPERATE"))
		opstate = mo_api_jstr(json_object_get(mo_api_rec_doc(op), "operationParams"), "changeStateTo");
	else if (!strcmp(lcmop, "TERMINATE"))
		opstate = "STOPPED";
	all_vars = mo_api_plan_vars(z, inst, opstate);
	vars = json_object();
	declared = json_object_get(mo_api_rec_int(pkg), "vars");
	{
		size_t i;
		json_t *v;
		json_array_foreach(declared, i, v)
			if (json_object_get(all_vars, json_string_value(v)))
				json_object_set(vars, json_string_value(v),
						json_object_get(all_vars, json_string_value(v)));
	}
	plan = mo_sprintf("%s/plan.lua", mo_api_jstr(mo_api_rec_int(pkg), "root"));
	dir = mo_sprintf("%s/%s", a->inst_dir, iid);
	state = mo_sprintf("%s/%s/state.db", a->inst_dir, iid);
	if (!plan || !dir || !state || !vars) {
		rc = mo_error_set(MO_ENOMEM, "out of memory");
		goto finish;
	}
	if ((rc = mo_api_mkdirs(dir)) < 0)
		goto finish;
	mo_run_opts_defaults(&o);
	o.mode = !strcmp(lcmop, "TERMINATE") ? MO_RUN_DESTROY : MO_RUN_APPLY;
	o.plan_path = plan;
	o.state_path = state;
	o.vars = vars;
	o.cache_dir = a->cache_dir;
	o.operation = !strcmp(lcmop, "TERMINATE") ? "terminate" : !strcmp(lcmop, "OPERATE") ? "operate" : "instantiate";
	o.parallelism = a->cfg->run_parallelism;
	o.on_event = on_event;
	o.log = on_log;
	o.ud = &ctx;
	o.interrupted = &run->interrupted;
	{
		json_t *ev = json_pack("{s:s,s:s,s:s,s:o}", "type", "run", "message", o.operation, "zone", z->id,
				       "timeStamp", mo_api_timestamp());
		mo_api_store_event_add(a->st, op_id, ev);
		json_decref(ev);
	}
	rc = mo_run(&o, &res);
	if (rc < 0)
		msg = run_error(rc, &res);

finish:
	if (rc < 0 && !msg)
		msg = mo_strdup(mo_error_last()->message);
	resources = count_resources(state);
	if (rc == MO_EINTR && a->stopping && !run->cancelled) {
		/* shutting down: stays PROCESSING, resumed at the next start */
		mo_api_store_begin(a->st);
		if (inst && resources >= 0 && (n = mo_api_store_peek(a->st, MO_K_INST, iid))) {
			n = json_deep_copy(n);
			json_object_set_new(mo_api_rec_int(n), "resources", json_integer(resources));
			mo_api_store_put(a->st, MO_K_INST, iid, n);
		}
		mo_api_store_end(a->st, 1);
		goto done;
	}
	mo_api_store_begin(a->st);
	{
		json_t *cur_op = mo_api_store_peek(a->st, MO_K_OP, op_id);
		json_t *cur_inst = iid ? mo_api_store_peek(a->st, MO_K_INST, iid) : NULL;
		json_t *ni = cur_inst ? json_deep_copy(cur_inst) : NULL, *nop = NULL;
		const char *new_inst_state = NULL;
		int ok = cur_op != NULL;
		if (ni && resources >= 0)
			json_object_set_new(mo_api_rec_int(ni), "resources", json_integer(resources));
		if (ni) {
			resources = json_integer_value(json_object_get(mo_api_rec_int(ni), "resources"));
			if (resources > 0 && z && !mo_api_jstr(mo_api_rec_int(ni), "zone"))
				json_object_set_new(mo_api_rec_int(ni), "zone", json_string(z->id));
		}
		if (ok && rc == 0) {
			nop = op_set(a, cur_op, "COMPLETED", "isCancelPending", json_false(), "cancelMode", NULL, NULL);
			if (ni) {
				json_t *d = mo_api_rec_doc(ni);
				json_object_del(mo_api_rec_int(ni), "op");
				if (!strcmp(lcmop, "TERMINATE")) {
					json_object_set_new(d, "instantiationState", json_string("NOT_INSTANTIATED"));
					json_object_del(d, "instantiatedAppState");
					json_object_del(mo_api_rec_int(ni), "zone");
					json_object_set_new(d, "_links", inst_links(a, iid, "NOT_INSTANTIATED"));
					new_inst_state = "NOT_INSTANTIATED";
				} else {
					json_t *ias = json_pack("{s:s,s:{s:{s:s},s:s}}", "operationalState", opstate,
								"mecHostInfo", "hostId", "zoneId", z->id, "hostName",
								z->name);
					if (z->country)
						json_object_set_new(ias, "appInstLocation",
								    json_pack("{s:s}", "countryCode", z->country));
					json_object_set_new(d, "instantiationState", json_string("INSTANTIATED"));
					json_object_set_new(d, "instantiatedAppState", ias);
					json_object_set_new(mo_api_rec_int(ni), "zone", json_string(z->id));
					json_object_set_new(d, "_links", inst_links(a, iid, "INSTANTIATED"));
					new_inst_state = opstate;
				}
				if (res.exec.outputs) {
					json_t *outs = json_object(), *v;
					const char *k;
					json_object_foreach(res.exec.outputs, k, v)
						if (!json_is_true(json_object_get(v, "sensitive")))
							json_object_set(outs, k, json_object_get(v, "value"));
					json_object_set_new(mo_api_rec_int(ni), "outputs", outs);
				}
			}
		} else if (ok) {
			json_t *pd = json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title",
					       run->cancelled ? "Cancelled" : "LCM operation failed", "status",
					       run->cancelled ? 409 : 500, "detail",
					       msg ? msg : "the operation failed");
			nop = op_set(a, cur_op, "FAILED_TEMP", "error", pd, "isCancelPending", json_false(),
				     "cancelMode", NULL, NULL);
		}
		if (ni && mo_api_store_put(a->st, MO_K_INST, iid, json_incref(ni)) == 0 && new_inst_state)
			mo_api_notify_inst(a, ni, new_inst_state);
		mo_api_store_end(a->st, ok && (nop != NULL));
		json_decref(nop);
		json_decref(ni);
	}
	mo_api_notify_wake(a);
done:
	mo_run_result_clear(&res);
	json_decref(op);
	json_decref(inst);
	json_decref(pkg);
	json_decref(vars);
	json_decref(all_vars);
	mo_free(plan);
	mo_free(dir);
	mo_free(state);
	mo_free(msg);
}
