// SPDX-License-Identifier: MIT
/*
 * auditing: the audit log's upkeep, one part of the manager
 * (manager_private.h; README: Audit, "Volume, shipping and disk space").
 *
 *   - the open window (audit_window.h), whose sink writes key_open and
 *     key_open_repeat records;
 *   - shipping (audit_ship.h), hooked on the log: every line written, by
 *     any thread, goes to syslog too, in seq order;
 *   - the free-space alarm (audit_space.h);
 *   - one thread for what has to happen with no request to trigger it:
 *     records the windows that ended (a few times per window), measures
 *     free space (at once, then every minute), alerts when syslog drops
 *     lines (at most hourly), closes a segment that is due and applies
 *     audit_keep (every minute).
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "log.h"
#include "manager_private.h"

#define TICKS_PER_WINDOW 4
#define TICK_MIN_MS 50
#define TICK_MAX_MS 1000
#define ROTATE_CHECK_MS (60 * 1000)
#define DROP_ALERT_MS (3600 * 1000)
#define FLUSH_ALERT_MS (60 * 1000)

/* --- the window's records ------------------------------------------------ */

/* {"event": event, "uid", "gid", "pid"}: kf_event_record's order. */
static json_t *record_of(const char *event, const struct kf_caller *who)
{
	json_t *r = json_object();

	json_object_set_new(r, "event", json_string(event));
	json_object_set_new(r, "uid", json_integer(who->uid));
	json_object_set_new(r, "gid", json_integer(who->gid));
	json_object_set_new(r, "pid", json_integer(who->pid));
	return r;
}

static json_t *time_json(int64_t t)
{
	char buf[KF_RFC3339_LEN + 1];

	kf_time_rfc3339(t, buf);
	return json_string(buf);
}

/* The sink's first: a key_open record, as with no window. */
static int write_first(void *ctx, const struct kf_caller *who, const char *path,
		       uint64_t *ret_seq, char err[KF_ERR_MAX])
{
	struct kf_manager *m = ctx;
	struct kf_audit_anchor anchor;
	json_t *rec = kf_event_record(KF_EVENT_KEY_OPEN, who);
	int r;

	json_object_set_new(rec, "path", json_string(path));
	r = kf_audit_append_anchored(m->audit, rec, &anchor, err);
	json_decref(rec);
	if (r == 0)
		*ret_seq = anchor.seq;
	return r;
}

/* The sink's repeat: a key_open_repeat record. */
static int write_repeat(void *ctx, const struct kf_window_repeat *rep,
			char err[KF_ERR_MAX])
{
	struct kf_manager *m = ctx;
	json_t *rec = record_of("key_open_repeat", &rep->who);
	int r;

	json_object_set_new(rec, "path", json_string(rep->path));
	json_object_set_new(rec, "count", json_integer((json_int_t)rep->count));
	json_object_set_new(rec, "first_seq",
			    json_integer((json_int_t)rep->first_seq));
	json_object_set_new(rec, "from", time_json(rep->from_ms / 1000));
	json_object_set_new(rec, "to", time_json(rep->to_ms / 1000));
	r = kf_audit_append(m->audit, rec, false, err);
	json_decref(rec);
	return r;
}

/*
 * Records the windows that ended (all: every one); logs what could not be
 * written -- at most once a minute while running; at stop, alerted as lost
 * (once, however often stop and close try again).
 */
static void flush_windows(struct kf_manager *m, bool all)
{
	struct kf_mgr_audit *a = &m->aud;
	struct kf_window_time now;
	uint64_t unwritten = 0;
	char err[KF_ERR_MAX], msg[2 * KF_ERR_MAX];
	json_t *rec;
	struct kf_caller self;

	if (kf_window_flush(a->window, kf_window_now(&now), all, &unwritten,
			    err) == 0) {
		if (a->lost_alerted > 0)
			kf_log(LOG_NOTICE,
			       "audit log: the %" PRIu64 " repeated key opens "
			       "are recorded after all",
			       a->lost_alerted);
		a->lost_alerted = 0;
		return;
	}
	if (!all) {
		if (a->flush_alerted_ms != 0 &&
		    now.mono_ms - a->flush_alerted_ms < FLUSH_ALERT_MS)
			return;
		a->flush_alerted_ms = now.mono_ms;
		kf_log(LOG_ALERT,
		       "audit log: %" PRIu64 " repeated key opens not recorded "
		       "yet (retrying): %s",
		       unwritten, err);
		return;
	}
	/* Stop, then close, both try: the same loss is told once. */
	if (unwritten == a->lost_alerted)
		return;
	a->lost_alerted = unwritten;
	/* The last chance: they are lost to the log; say so everywhere. */
	snprintf(msg, sizeof(msg),
		 "audit log: %" PRIu64 " repeated key opens could not be "
		 "recorded before the log closed: %s",
		 unwritten, err);
	rec = record_of("key_open_repeat", kf_event_self(&self));
	json_object_set_new(rec, "unrecorded",
			    json_integer((json_int_t)unwritten));
	json_object_set_new(rec, "success", json_false());
	json_object_set_new(rec, "error", json_string(err));
	kf_mgr_alert(m, LOG_ALERT, rec, msg);
}

/* --- syslog's drops and free space --------------------------------------- */

/* Alerts when lines were dropped since the last look, at most hourly. */
static void check_drops(struct kf_manager *m, int64_t now_ms)
{
	const struct kf_audit_settings *s = &m->cfg->auditing;
	struct kf_mgr_audit *a = &m->aud;
	struct kf_ship_stats st;
	struct kf_caller self;
	char msg[KF_ERR_MAX + 256], why[128];
	json_t *rec;

	kf_ship_stats(a->ship, &st);
	if (st.dropped == a->drops_seen)
		return;
	a->drops_seen = st.dropped;
	if (a->drop_alerted_ms != 0 &&
	    now_ms - a->drop_alerted_ms < DROP_ALERT_MS)
		return;
	a->drop_alerted_ms = now_ms;
	snprintf(why, sizeof(why), "%s",
		 st.last_error ? strerror(st.last_error) : "unknown error");
	snprintf(msg, sizeof(msg),
		 "audit_syslog: %" PRIu64 " audit line%s not sent to %s "
		 "since start (%s); the audit log holds every line",
		 st.dropped, st.dropped == 1 ? "" : "s", s->syslog_socket, why);
	rec = record_of("audit_syslog", kf_event_self(&self));
	json_object_set_new(rec, "socket", json_string(s->syslog_socket));
	json_object_set_new(rec, "sent", json_integer((json_int_t)st.sent));
	json_object_set_new(rec, "dropped",
			    json_integer((json_int_t)st.dropped));
	json_object_set_new(rec, "success", json_false());
	json_object_set_new(rec, "error", json_string(why));
	kf_mgr_alert(m, LOG_ALERT, rec, msg);
}

/* One statvfs of the log's folder; alerts on a change (audit_space.h). */
static void check_space(struct kf_manager *m)
{
	struct kf_mgr_audit *a = &m->aud;
	unsigned pct = 0, min_free = a->space.min_free;
	enum kf_space_event ev;
	struct kf_caller self;
	char err[KF_ERR_MAX], msg[KF_ERR_MAX + 256];
	json_t *rec;

	if (kf_space_measure(a->folder, &pct, err) < 0) {
		if (!a->space_failed)
			kf_log(LOG_WARNING, "audit_min_free: %s", err);
		a->space_failed = true;
		return;
	}
	a->space_failed = false;
	pthread_mutex_lock(&a->lock);
	ev = kf_space_update(&a->space, pct, kf_time_now());
	pthread_mutex_unlock(&a->lock);
	if (ev == KF_SPACE_QUIET)
		return;
	rec = record_of("audit_space", kf_event_self(&self));
	json_object_set_new(rec, "folder", json_string(a->folder));
	json_object_set_new(rec, "free_percent", json_integer(pct));
	json_object_set_new(rec, "min_free", json_integer(min_free));
	json_object_set_new(rec, "low_space",
			    json_boolean(ev != KF_SPACE_RECOVERED));
	if (ev == KF_SPACE_RECOVERED) {
		snprintf(msg, sizeof(msg),
			 "audit log folder %s has %u%% free again "
			 "(audit_min_free %u%%)",
			 a->folder, pct, min_free);
		json_object_set_new(rec, "success", json_true());
		kf_mgr_alert(m, LOG_NOTICE, rec, msg);
		return;
	}
	snprintf(msg, sizeof(msg),
		 "audit log folder %s has %u%% free, below audit_min_free "
		 "(%u%%)%s: free space before opens fail",
		 a->folder, pct, min_free,
		 ev == KF_SPACE_STILL_LOW ? ", still" : "");
	json_object_set_new(rec, "success", json_false());
	json_object_set_new(rec, "error",
			    json_string("free space below audit_min_free"));
	kf_mgr_alert(m, LOG_ALERT, rec, msg);
}

/*
 * Closes the active segment when audit_rotate (or audit_max_size) says it
 * is due: an idle log is rotated on time too.  Then, with audit_keep,
 * retention: the anchor sealed first, so the segment it names stays.
 */
static void rotate_due(struct kf_manager *m)
{
	char err[KF_ERR_MAX];

	if (kf_audit_rotate_if_due(m->audit, err) < 0)
		kf_log(LOG_ALERT,
		       "audit log: closing the active segment: %s; retrying "
		       "in a minute",
		       err);
	/* Without audit_keep nothing is deleted: no seal needed for it. */
	if (m->cfg->auditing.keep > 0 && kf_manager_audit_retain(m, err) < 0)
		kf_log(LOG_ALERT,
		       "audit log: retention: %s; retrying in a minute", err);
}

/* --- the thread ---------------------------------------------------------- */

/* A few times per window, at least once a second. */
static int64_t tick_ms(const struct kf_manager *m)
{
	int64_t w = m->cfg->auditing.open_window * 1000 / TICKS_PER_WINDOW;

	if (w <= 0 || w > TICK_MAX_MS)
		return TICK_MAX_MS;
	return w < TICK_MIN_MS ? TICK_MIN_MS : w;
}

static void tick(struct kf_manager *m)
{
	struct kf_mgr_audit *a = &m->aud;
	int64_t now = kf_time_mono_ms();

	if (a->window)
		flush_windows(m, false);
	if (a->ship)
		check_drops(m, now);
	if (now >= a->next_space_ms) {
		check_space(m);
		a->next_space_ms = now + KF_SPACE_CHECK_S * 1000;
	}
	if (now >= a->next_rotate_ms) {
		rotate_due(m);
		a->next_rotate_ms = now + ROTATE_CHECK_MS;
	}
}

static void *audit_main(void *arg)
{
	struct kf_manager *m = arg;
	struct kf_mgr_audit *a = &m->aud;
	int64_t every = tick_ms(m);
	struct timespec until;

	pthread_mutex_lock(&a->lock);
	while (!a->stop) {
		pthread_mutex_unlock(&a->lock);
		tick(m);
		pthread_mutex_lock(&a->lock);
		if (a->stop)
			break;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += every / 1000;
		until.tv_nsec += every % 1000 * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&a->wake, &a->lock, &until);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int kf_manager_start_audit(struct kf_manager *m, char err[KF_ERR_MAX])
{
	struct kf_mgr_audit *a = &m->aud;
	int64_t now = kf_time_mono_ms();
	int e;

	if (!a->ready || a->started)
		return 0;
	a->stop = false;
	a->next_space_ms = now; /* at once: a start on a full disk alerts */
	a->next_rotate_ms = now + ROTATE_CHECK_MS;
	e = pthread_create(&a->thread, NULL, audit_main, m);
	if (e != 0) {
		kf_err_set(err, "audit thread: %s", strerror(e));
		return -e;
	}
	a->started = true;
	return 0;
}

void kf_manager_stop_audit(struct kf_manager *m)
{
	struct kf_mgr_audit *a = &m->aud;

	if (!a->ready)
		return;
	if (a->started) {
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		pthread_cond_broadcast(&a->wake);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
		a->started = false;
	}
	if (a->window && m->audit)
		flush_windows(m, true);
}

/* --- life cycle and status ----------------------------------------------- */

int kf_mgr_audit_setup(struct kf_manager *m, char err[KF_ERR_MAX])
{
	const struct kf_audit_settings *s = &m->cfg->auditing;
	struct kf_mgr_audit *a = &m->aud;
	struct kf_window_sink sink = {write_first, write_repeat, m};
	pthread_condattr_t ca;
	char *copy;
	int r;

	pthread_mutex_init(&a->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->wake, &ca);
	pthread_condattr_destroy(&ca);
	a->ready = true;
	kf_space_init(&a->space, s->min_free);
	copy = strdup(m->cfg->audit_log);
	a->folder = copy ? strdup(dirname(copy)) : NULL;
	free(copy);
	if (!a->folder) {
		kf_err_set(err, "out of memory");
		return -ENOMEM;
	}
	if (s->open_window > 0) {
		r = kf_window_new(s->open_window * 1000, &sink, &a->window);
		if (r < 0) {
			kf_err_set(err, "out of memory");
			return r;
		}
	}
	if (s->syslog) {
		r = kf_ship_new(s->syslog_socket, s->syslog_facility,
				s->syslog_tag, &a->ship, err);
		if (r < 0)
			return r;
		kf_audit_on_line(m->audit, kf_ship_line, a->ship);
	}
	return 0;
}

void kf_mgr_audit_free(struct kf_manager *m)
{
	struct kf_mgr_audit *a = &m->aud;

	if (a->ship && m->audit)
		kf_audit_on_line(m->audit, NULL, NULL);
	a->ship = kf_ship_free(a->ship);
	a->window = kf_window_free(a->window);
	free(a->folder);
	a->folder = NULL;
	if (a->ready) {
		pthread_cond_destroy(&a->wake);
		pthread_mutex_destroy(&a->lock);
		a->ready = false;
	}
}

json_t *kf_mgr_audit_info(struct kf_manager *m)
{
	const struct kf_audit_settings *s = &m->cfg->auditing;
	struct kf_mgr_audit *a = &m->aud;
	json_t *o = json_object(), *sl = json_object();
	struct kf_audit_stats st;
	struct kf_space space;

	json_object_set_new(o, "open_window", json_integer(s->open_window));
	if (a->window) {
		struct kf_window_stats ws;

		kf_window_stats(a->window, &ws);
		json_object_set_new(o, "opens_counted",
				    json_integer((json_int_t)ws.counted));
		json_object_set_new(o, "repeat_records",
				    json_integer((json_int_t)ws.records));
	}
	json_object_set_new(sl, "enabled", json_boolean(s->syslog));
	json_object_set_new(
	    sl, "facility",
	    json_string(kf_config_facility_name(s->syslog_facility)));
	json_object_set_new(sl, "tag", json_string(s->syslog_tag));
	if (a->ship) {
		struct kf_ship_stats ss;

		kf_ship_stats(a->ship, &ss);
		json_object_set_new(sl, "sent",
				    json_integer((json_int_t)ss.sent));
		json_object_set_new(sl, "dropped",
				    json_integer((json_int_t)ss.dropped));
	} else {
		json_object_set_new(sl, "sent", json_integer(0));
		json_object_set_new(sl, "dropped", json_integer(0));
	}
	json_object_set_new(o, "syslog", sl);
	if (a->ready) {
		pthread_mutex_lock(&a->lock);
		space = a->space;
		pthread_mutex_unlock(&a->lock);
	} else {
		kf_space_init(&space, s->min_free);
	}
	json_object_set_new(o, "free_percent",
			    space.measured ? json_integer(space.percent)
					   : json_null());
	json_object_set_new(o, "low_space", json_boolean(space.low));
	json_object_set_new(o, "min_free", json_integer(s->min_free));
	kf_audit_stats(m->audit, &st);
	json_object_set_new(o, "active_bytes",
			    json_integer((json_int_t)st.active_bytes));
	json_object_set_new(o, "closed_segments",
			    json_integer((json_int_t)st.closed));
	json_object_set_new(o, "rotations",
			    json_integer((json_int_t)st.rotations));
	json_object_set_new(o, "rotate_failures",
			    json_integer((json_int_t)st.rotate_failures));
	json_object_set_new(o, "write_failures",
			    json_integer((json_int_t)st.write_failures));
	return o;
}
