// SPDX-License-Identifier: MIT
/*
 * audit_window: the table of open windows, through a fake sink that keeps
 * what would have been written and can be told to fail.  Time is given to
 * every call, so windows end when a test says, not when a clock does.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_window.h"
#include "helpers.h"

#define WINDOW_MS 1000
#define MAX_RECORDS 100000

/* One record the sink took. */
struct rec {
	bool repeat;
	uint64_t seq;
	struct kf_caller who;
	char path[32];
	uint64_t count, first_seq;
	int64_t from_ms, to_ms;
};

/* The fake log: records in order, seq from 1; fails while told to. */
struct sink {
	pthread_mutex_t lock;
	struct rec recs[MAX_RECORDS];
	size_t n;
	bool fail_first, fail_repeat;
	size_t first_calls, repeat_calls;
};

static int fake_first(void *ctx, const struct kf_caller *who, const char *path,
		      uint64_t *ret_seq, char err[KF_ERR_MAX])
{
	struct sink *s = ctx;
	struct rec *r;
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	s->first_calls++;
	if (s->fail_first || s->n == MAX_RECORDS) {
		kf_err_set(err, "disk full");
		ret = -ENOSPC;
	} else {
		r = &s->recs[s->n++];
		memset(r, 0, sizeof(*r));
		r->seq = s->n;
		r->who = *who;
		snprintf(r->path, sizeof(r->path), "%s", path);
		*ret_seq = r->seq;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int fake_repeat(void *ctx, const struct kf_window_repeat *rep,
		       char err[KF_ERR_MAX])
{
	struct sink *s = ctx;
	struct rec *r;
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	s->repeat_calls++;
	if (s->fail_repeat || s->n == MAX_RECORDS) {
		kf_err_set(err, "disk full");
		ret = -ENOSPC;
	} else {
		r = &s->recs[s->n++];
		memset(r, 0, sizeof(*r));
		r->repeat = true;
		r->seq = s->n;
		r->who = rep->who;
		snprintf(r->path, sizeof(r->path), "%s", rep->path);
		r->count = rep->count;
		r->first_seq = rep->first_seq;
		r->from_ms = rep->from_ms;
		r->to_ms = rep->to_ms;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static struct sink *sink_new(void)
{
	struct sink *s = calloc(1, sizeof(*s));

	cr_assert_not_null(s);
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

static struct kf_window *window_on(struct sink *s, int64_t window_ms)
{
	struct kf_window_sink k = {fake_first, fake_repeat, s};
	struct kf_window *w = NULL;

	cr_assert(kf_window_new(window_ms, &k, &w) == 0);
	return w;
}

static struct kf_window_time at(int64_t ms)
{
	/* The wall clock runs a fixed distance ahead of the monotonic one. */
	struct kf_window_time t = {ms, ms + 1700000000000};

	return t;
}

static int open_at(struct kf_window *w, const struct kf_caller *who,
		   const char *path, int64_t ms)
{
	struct kf_window_time t = at(ms);
	char err[KF_ERR_MAX] = "";

	return kf_window_open(w, who, path, &t, err);
}

static int flush_at(struct kf_window *w, int64_t ms, bool all,
		    uint64_t *unwritten)
{
	struct kf_window_time t = at(ms);
	char err[KF_ERR_MAX] = "";

	return kf_window_flush(w, &t, all, unwritten, err);
}

static const struct kf_caller alice = {1001, 2001, 500};

Test(audit_window, a_window_of_zero_or_less_is_refused)
{
	struct kf_window_sink k = {fake_first, fake_repeat, NULL};
	struct kf_window *w = NULL;

	cr_expect(kf_window_new(0, &k, &w) == -EINVAL);
	cr_expect(kf_window_new(-5, &k, &w) == -EINVAL);
	cr_expect_null(w);
}

Test(audit_window, first_open_is_recorded_and_repeats_are_counted)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, WINDOW_MS);
	struct kf_window_stats st;

	cr_assert(open_at(w, &alice, "current", 0) == KF_WINDOW_RECORDED);
	cr_assert(s->n == 1, "the first open was not recorded at once");
	cr_expect(!s->recs[0].repeat && s->recs[0].who.pid == alice.pid &&
		  strcmp(s->recs[0].path, "current") == 0);
	for (int i = 1; i < 100; i++)
		cr_assert(open_at(w, &alice, "current", i * 9) ==
			  KF_WINDOW_COUNTED);
	cr_expect(s->n == 1, "a repeat in the window wrote a record");
	kf_window_stats(w, &st);
	cr_expect(st.counted == 99 && st.held == 1 && st.records == 0);

	/* Not over yet: nothing to write. */
	cr_assert(flush_at(w, WINDOW_MS - 1, false, NULL) == 0);
	cr_expect(s->n == 1, "a window was recorded before it ended");
	cr_assert(flush_at(w, WINDOW_MS, false, NULL) == 0);
	cr_assert(s->n == 2, "the ended window was not recorded");
	cr_expect(s->recs[1].repeat);
	cr_expect(s->recs[1].count == 99, "count %llu, want 99",
		  (unsigned long long)s->recs[1].count);
	cr_expect(s->recs[1].first_seq == s->recs[0].seq);
	cr_expect(s->recs[1].who.uid == alice.uid &&
		  s->recs[1].who.gid == alice.gid &&
		  s->recs[1].who.pid == alice.pid);
	cr_expect(s->recs[1].from_ms == at(0).wall_ms);
	cr_expect(s->recs[1].to_ms == at(99 * 9).wall_ms,
		  "to is not the last repeat's time");
	kf_window_stats(w, &st);
	cr_expect(st.held == 0 && st.records == 1);
	kf_window_free(w);
	free(s);
}

Test(audit_window, a_window_without_repeats_writes_nothing_more)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, WINDOW_MS);
	struct kf_window_stats st;

	cr_assert(open_at(w, &alice, "current", 0) == KF_WINDOW_RECORDED);
	cr_assert(flush_at(w, 5 * WINDOW_MS, false, NULL) == 0);
	cr_expect(s->n == 1, "a window of one open wrote a repeat record");
	kf_window_stats(w, &st);
	cr_expect(st.held == 0, "the ended window is still held");
	kf_window_free(w);
	free(s);
}

Test(audit_window, caller_ids_and_path_each_make_a_window)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, WINDOW_MS);
	struct kf_caller other_pid = alice, other_uid = alice,
			 other_gid = alice;

	other_pid.pid++;
	other_uid.uid++;
	other_gid.gid++;
	cr_assert(open_at(w, &alice, "current", 0) == KF_WINDOW_RECORDED);
	cr_expect(open_at(w, &alice, "previous", 1) == KF_WINDOW_RECORDED);
	cr_expect(open_at(w, &other_pid, "current", 2) == KF_WINDOW_RECORDED);
	cr_expect(open_at(w, &other_uid, "current", 3) == KF_WINDOW_RECORDED);
	cr_expect(open_at(w, &other_gid, "current", 4) == KF_WINDOW_RECORDED);
	cr_expect(open_at(w, &other_gid, "current", 5) == KF_WINDOW_COUNTED);
	cr_expect(s->n == 5);
	kf_window_free(w);
	free(s);
}

Test(audit_window, an_open_after_the_window_records_the_old_one_first)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, WINDOW_MS);

	cr_assert(open_at(w, &alice, "current", 0) == KF_WINDOW_RECORDED);
	cr_assert(open_at(w, &alice, "current", 10) == KF_WINDOW_COUNTED);
	cr_assert(open_at(w, &alice, "current", 20) == KF_WINDOW_COUNTED);
	/* The thread has not flushed yet; the caller's next open comes. */
	cr_assert(open_at(w, &alice, "current", WINDOW_MS + 5) ==
		  KF_WINDOW_RECORDED);
	cr_assert(s->n == 3);
	cr_expect(!s->recs[0].repeat && s->recs[1].repeat && !s->recs[2].repeat,
		  "records out of order: the old window's repeats must come "
		  "before the new window's first open");
	cr_expect(s->recs[1].count == 2 && s->recs[1].first_seq == 1);
	/* The new window counts from the new first open. */
	cr_assert(open_at(w, &alice, "current", WINDOW_MS + 6) ==
		  KF_WINDOW_COUNTED);
	cr_assert(flush_at(w, 3 * WINDOW_MS, false, NULL) == 0);
	cr_assert(s->n == 4);
	cr_expect(s->recs[3].count == 1 && s->recs[3].first_seq == 3);
	kf_window_free(w);
	free(s);
}

Test(audit_window, a_first_open_that_cannot_be_recorded_is_refused)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, WINDOW_MS);
	struct kf_window_time t = at(0);
	char err[KF_ERR_MAX] = "";

	s->fail_first = true;
	cr_expect(kf_window_open(w, &alice, "current", &t, err) == -ENOSPC);
	cr_expect(strstr(err, "disk full"), "err: %s", err);
	/* No window was opened: the next open is a first open again. */
	cr_expect(open_at(w, &alice, "current", 1) == -ENOSPC);
	cr_expect(s->first_calls == 2, "the second open was counted");
	s->fail_first = false;
	cr_expect(open_at(w, &alice, "current", 2) == KF_WINDOW_RECORDED);
	cr_expect(open_at(w, &alice, "current", 3) == KF_WINDOW_COUNTED);
	kf_window_free(w);
	free(s);
}

Test(audit_window, repeats_that_cannot_be_written_are_kept_and_retried)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, WINDOW_MS);
	uint64_t unwritten = 0;

	cr_assert(open_at(w, &alice, "current", 0) == KF_WINDOW_RECORDED);
	for (int i = 1; i <= 7; i++)
		cr_assert(open_at(w, &alice, "current", i) ==
			  KF_WINDOW_COUNTED);
	s->fail_repeat = true;
	cr_expect(flush_at(w, 2 * WINDOW_MS, false, &unwritten) == -ENOSPC);
	cr_expect(unwritten == 7, "unwritten %llu, want 7",
		  (unsigned long long)unwritten);
	/* The caller's next open must not pass while they are unrecorded. */
	cr_expect(open_at(w, &alice, "current", 2 * WINDOW_MS + 1) == -ENOSPC);
	cr_expect(s->n == 1);
	s->fail_repeat = false;
	cr_assert(flush_at(w, 3 * WINDOW_MS, false, &unwritten) == 0);
	cr_expect(unwritten == 0);
	cr_assert(s->n == 2);
	cr_expect(s->recs[1].repeat && s->recs[1].count == 7);
	kf_window_free(w);
	free(s);
}

Test(audit_window, flush_all_records_open_windows_and_closes_the_table)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, 3600 * 1000);
	uint64_t unwritten = 1;

	cr_assert(open_at(w, &alice, "current", 0) == KF_WINDOW_RECORDED);
	cr_assert(open_at(w, &alice, "current", 1) == KF_WINDOW_COUNTED);
	cr_assert(open_at(w, &alice, "current", 2) == KF_WINDOW_COUNTED);
	cr_assert(flush_at(w, 3, true, &unwritten) == 0);
	cr_expect(unwritten == 0);
	cr_assert(s->n == 2, "the open window was not recorded at stop");
	cr_expect(s->recs[1].count == 2);
	/* After the last flush, nothing may wait in memory. */
	cr_expect(open_at(w, &alice, "current", 4) == KF_WINDOW_RECORDED);
	cr_expect(open_at(w, &alice, "current", 5) == KF_WINDOW_RECORDED);
	cr_expect(s->n == 4);
	kf_window_free(w);
	free(s);
}

Test(audit_window, a_full_table_records_opens_one_by_one)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, WINDOW_MS);
	const int callers = KF_WINDOW_MAX + 1000;
	struct kf_window_stats st;
	size_t recorded = 0, counted = 0;

	/* Two opens each of more callers than the table holds. */
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < callers; i++) {
			struct kf_caller who = {0, 0, 10000 + i};
			int r = open_at(w, &who, "current", round);

			cr_assert(r >= 0);
			if (r == KF_WINDOW_RECORDED)
				recorded++;
			else
				counted++;
		}
	}
	kf_window_stats(w, &st);
	cr_expect(st.held <= KF_WINDOW_MAX, "%llu windows held",
		  (unsigned long long)st.held);
	cr_expect(st.overflow > 0, "no open was left out of a full table");
	cr_expect(recorded + counted == 2 * (size_t)callers);
	cr_expect(recorded == (size_t)callers + st.overflow / 2,
		  "%zu recorded, %llu overflowed", recorded,
		  (unsigned long long)st.overflow);
	cr_expect(counted == st.held);
	cr_assert(flush_at(w, 10 * WINDOW_MS, false, NULL) == 0);
	/* Every open is in a record: first opens plus the counts. */
	{
		size_t opens = 0;

		for (size_t i = 0; i < s->n; i++)
			opens += s->recs[i].repeat ? s->recs[i].count : 1;
		cr_expect(opens == 2 * (size_t)callers,
			  "%zu opens in the records, %d made", opens,
			  2 * callers);
	}
	kf_window_free(w);
	free(s);
}

/* --- every open accounted for -------------------------------------------- */

#define THREADS 4
#define OPENS_PER_THREAD 20000

struct opener {
	struct kf_window *w;
	pid_t pid;
	size_t refused;
};

static void *opener_main(void *arg)
{
	struct opener *o = arg;
	struct kf_caller who = {0, 0, o->pid};
	const char *paths[] = {"current", "previous", "derived/phi"};

	for (int i = 0; i < OPENS_PER_THREAD; i++) {
		struct kf_window_time t;
		char err[KF_ERR_MAX];

		kf_window_now(&t);
		if (kf_window_open(o->w, &who, paths[i % 3], &t, err) < 0)
			o->refused++;
	}
	return NULL;
}

/* A flusher running alongside, as the manager's thread does. */
struct flusher {
	struct kf_window *w;
	volatile bool stop;
};

static void *flusher_main(void *arg)
{
	struct flusher *f = arg;

	while (!f->stop) {
		struct kf_window_time t;
		char err[KF_ERR_MAX];

		/* The sink never fails here; the openers check the rest. */
		cr_assert(kf_window_flush(f->w, kf_window_now(&t), false, NULL,
					  err) == 0);
		kt_sleep_ms(1);
	}
	return NULL;
}

Test(audit_window, threads_opening_at_once_lose_no_open, .timeout = 120)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, 5); /* many windows end */
	struct opener o[THREADS];
	struct flusher f = {w, false};
	pthread_t t[THREADS], ft;
	uint64_t unwritten = 1, opens = 0;

	pthread_create(&ft, NULL, flusher_main, &f);
	for (int i = 0; i < THREADS; i++) {
		o[i] = (struct opener){w, 700 + i, 0};
		pthread_create(&t[i], NULL, opener_main, &o[i]);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		cr_expect(o[i].refused == 0);
	}
	f.stop = true;
	pthread_join(ft, NULL);
	cr_assert(flush_at(w, kf_time_mono_ms(), true, &unwritten) == 0);
	cr_expect(unwritten == 0);
	for (size_t i = 0; i < s->n; i++) {
		struct rec *r = &s->recs[i];

		opens += r->repeat ? r->count : 1;
		if (r->repeat) {
			/* first_seq names this caller's key_open of path. */
			struct rec *first = &s->recs[r->first_seq - 1];

			cr_assert(r->first_seq < r->seq && !first->repeat &&
				  first->who.pid == r->who.pid &&
				  strcmp(first->path, r->path) == 0);
		}
	}
	cr_expect(opens == THREADS * OPENS_PER_THREAD,
		  "%llu opens in the records, %d made",
		  (unsigned long long)opens, THREADS * OPENS_PER_THREAD);
	kf_window_free(w);
	free(s);
}

/*
 * Random opens, clock steps, flushes and failures of the log: whatever
 * happens, every open that was answered is in a record once the last
 * flush has gone through, and no refused open is in one.
 */
Test(audit_window, random_runs_record_every_answered_open)
{
	struct sink *s = sink_new();
	struct kf_window *w = window_on(s, 100);
	const char *paths[] = {"current", "previous"};
	uint64_t answered = 0, opens = 0, unwritten = 0;
	int64_t now = 0;

	kt_seed();
	for (int i = 0; i < 20000; i++) {
		int dice = rand() % 100;

		if (dice < 2)
			s->fail_first = !s->fail_first;
		else if (dice < 4)
			s->fail_repeat = !s->fail_repeat;
		else if (dice < 10)
			(void)flush_at(w, now, false, NULL);
		else if (dice < 20)
			now += rand() % 60;
		else {
			struct kf_caller who = {0, 0, 1 + rand() % 5};

			if (open_at(w, &who, paths[rand() % 2], now) >= 0)
				answered++;
		}
	}
	s->fail_first = s->fail_repeat = false;
	cr_assert(flush_at(w, now, true, &unwritten) == 0);
	cr_expect(unwritten == 0);
	for (size_t i = 0; i < s->n; i++)
		opens += s->recs[i].repeat ? s->recs[i].count : 1;
	cr_expect(opens == answered, "%llu opens answered, %llu in the records",
		  (unsigned long long)answered, (unsigned long long)opens);
	kf_window_free(w);
	free(s);
}
