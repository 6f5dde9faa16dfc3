//! Free slots, computed on demand: a pure function of the provider's rules, overrides,
//! the appointment type, what is already booked or held, and the clock.
//!
//! Time zones are handled in the provider's wall-clock time: slots are laid out from
//! each window's start in local time, so a 09:00 rule means 09:00 local on both sides
//! of a DST change. A local start that does not exist (the spring-forward gap) is
//! skipped; one that exists twice (the fall-back hour) is offered once, at its first
//! occurrence. A slot must also end, in local time, by the end of its window.

use std::collections::{BTreeMap, HashMap};

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::Serialize;

/// Weekly hours: a window on a weekday, in local time; an end not after the start
/// runs past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyWindow {
    pub weekday: Weekday,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideKind {
    Extra,
    Blocked,
}

/// Dated extra hours or blocked time, in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub kind: OverrideKind,
    pub starts_local: NaiveDateTime,
    pub ends_local: NaiveDateTime,
}

/// What the appointment type asks of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeRules {
    pub duration: Duration,
    pub buffer_before: Duration,
    pub buffer_after: Duration,
    pub min_notice: Duration,
    pub horizon: Duration,
    pub max_per_day: Option<u32>,
}

/// Time already taken: an appointment's occupied range (buffers included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A free slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Slot {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// The start in the provider's time zone, with its offset (RFC 3339).
    pub local_start: String,
}

/// Everything the computation reads.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub time_zone: Tz,
    pub weekly: &'a [WeeklyWindow],
    pub overrides: &'a [Override],
    pub rules: TypeRules,
    pub busy: &'a [Busy],
    /// Bookings of this type already made, per local date (for `max_per_day`).
    pub booked_per_day: &'a HashMap<NaiveDate, u32>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// The local windows that could hold slots starting in [from, to).
fn windows(input: &Input<'_>) -> Vec<(NaiveDateTime, NaiveDateTime)> {
    let tz = input.time_zone;
    let first = input.from.with_timezone(&tz).date_naive() - Duration::days(1);
    let last = input.to.with_timezone(&tz).date_naive() + Duration::days(1);
    let mut windows = Vec::new();
    let mut day = first;
    while day <= last {
        for w in input.weekly.iter().filter(|w| w.weekday == day.weekday()) {
            let start = day.and_time(w.start);
            let end = if w.end > w.start {
                day.and_time(w.end)
            } else {
                (day + Duration::days(1)).and_time(w.end)
            };
            windows.push((start, end));
        }
        day += Duration::days(1);
    }
    for o in input.overrides.iter().filter(|o| o.kind == OverrideKind::Extra) {
        windows.push((o.starts_local, o.ends_local));
    }
    windows
}

/// The instant of a local time: `None` in a spring-forward gap, the first occurrence in
/// a fall-back hour.
pub fn instant(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

fn overlaps(a_from: DateTime<Utc>, a_to: DateTime<Utc>, b_from: DateTime<Utc>, b_to: DateTime<Utc>) -> bool {
    a_from < b_to && b_from < a_to
}

/// Every free slot starting in [from, to), in order.
pub fn compute(input: &Input<'_>) -> Vec<Slot> {
    let tz = input.time_zone;
    let rules = input.rules;
    let earliest = input.now + rules.min_notice;
    let latest = input.now + rules.horizon;
    let blocked: Vec<(NaiveDateTime, NaiveDateTime)> = input
        .overrides
        .iter()
        .filter(|o| o.kind == OverrideKind::Blocked)
        .map(|o| (o.starts_local, o.ends_local))
        .collect();
    let mut free: BTreeMap<DateTime<Utc>, Slot> = BTreeMap::new();
    for (window_start, window_end) in windows(input) {
        let mut local = window_start;
        while local + rules.duration <= window_end {
            let candidate = local;
            local += rules.duration;
            let Some(starts_at) = instant(tz, candidate) else {
                continue; // does not exist on this day
            };
            let ends_at = starts_at + rules.duration;
            let local_end = ends_at.with_timezone(&tz).naive_local();
            if local_end > window_end || starts_at < input.from || starts_at >= input.to {
                continue;
            }
            if starts_at < earliest || starts_at > latest {
                continue;
            }
            if blocked
                .iter()
                .any(|(b_from, b_to)| candidate < *b_to && *b_from < local_end)
            {
                continue;
            }
            let (occupied_from, occupied_to) =
                (starts_at - rules.buffer_before, ends_at + rules.buffer_after);
            if input
                .busy
                .iter()
                .any(|b| overlaps(occupied_from, occupied_to, b.from, b.to))
            {
                continue;
            }
            if let Some(max) = rules.max_per_day
                && input.booked_per_day.get(&candidate.date()).copied().unwrap_or(0) >= max
            {
                continue;
            }
            free.entry(starts_at).or_insert_with(|| Slot {
                starts_at,
                ends_at,
                local_start: starts_at.with_timezone(&tz).to_rfc3339(),
            });
        }
    }
    free.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rules(minutes: i64) -> TypeRules {
        TypeRules {
            duration: Duration::minutes(minutes),
            buffer_before: Duration::zero(),
            buffer_after: Duration::zero(),
            min_notice: Duration::zero(),
            horizon: Duration::days(400),
            max_per_day: None,
        }
    }

    fn every_day(start: NaiveTime, end: NaiveTime) -> Vec<WeeklyWindow> {
        [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ]
        .into_iter()
        .map(|weekday| WeeklyWindow { weekday, start, end })
        .collect()
    }

    fn slots(tz: Tz, weekly: &[WeeklyWindow], rules: TypeRules, from: &str, to: &str) -> Vec<Slot> {
        compute(&Input {
            time_zone: tz,
            weekly,
            overrides: &[],
            rules,
            busy: &[],
            booked_per_day: &HashMap::new(),
            from: utc(from),
            to: utc(to),
            now: utc("2026-01-01T00:00:00Z"),
        })
    }

    fn local_starts(slots: &[Slot]) -> Vec<String> {
        slots.iter().map(|s| s.local_start.clone()).collect()
    }

    #[test]
    fn nine_oclock_stays_nine_oclock_across_the_spring_change_in_new_york() {
        let weekly = every_day(t(9, 0), t(10, 0));
        let found = slots(
            chrono_tz::America::New_York,
            &weekly,
            rules(60),
            "2026-03-07T00:00:00Z",
            "2026-03-10T00:00:00Z",
        );
        assert_eq!(
            found.iter().map(|s| s.starts_at).collect::<Vec<_>>(),
            vec![
                utc("2026-03-07T14:00:00Z"),
                utc("2026-03-08T13:00:00Z"),
                utc("2026-03-09T13:00:00Z")
            ]
        );
        assert!(local_starts(&found).iter().all(|l| l.contains("T09:00:00")));
    }

    #[test]
    fn nine_oclock_stays_nine_oclock_across_the_autumn_change_in_berlin() {
        let weekly = every_day(t(9, 0), t(10, 0));
        let found = slots(
            chrono_tz::Europe::Berlin,
            &weekly,
            rules(60),
            "2026-10-24T00:00:00Z",
            "2026-10-27T00:00:00Z",
        );
        assert_eq!(
            found.iter().map(|s| s.starts_at).collect::<Vec<_>>(),
            vec![
                utc("2026-10-24T07:00:00Z"),
                utc("2026-10-25T08:00:00Z"),
                utc("2026-10-26T08:00:00Z")
            ]
        );
    }

    #[test]
    fn local_times_that_do_not_exist_are_skipped_in_new_york() {
        // 2026-03-08: 02:00 jumps to 03:00.
        let weekly = every_day(t(1, 0), t(4, 0));
        let found = slots(
            chrono_tz::America::New_York,
            &weekly,
            rules(30),
            "2026-03-08T05:00:00Z",
            "2026-03-08T09:00:00Z",
        );
        let starts = local_starts(&found);
        assert!(!starts.iter().any(|s| s.contains("T02:")), "{starts:?}");
        assert_eq!(
            starts,
            vec![
                "2026-03-08T01:00:00-05:00",
                "2026-03-08T01:30:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-08T03:30:00-04:00"
            ]
        );
    }

    #[test]
    fn local_times_that_exist_twice_are_offered_once_in_berlin() {
        // 2026-10-25: 03:00 falls back to 02:00, so 02:00 and 02:30 happen twice.
        let weekly = every_day(t(1, 0), t(4, 0));
        let found = slots(
            chrono_tz::Europe::Berlin,
            &weekly,
            rules(30),
            "2026-10-24T22:00:00Z",
            "2026-10-25T04:00:00Z",
        );
        let starts = local_starts(&found);
        assert_eq!(
            starts.iter().filter(|s| s.contains("T02:00:00")).count(),
            1,
            "{starts:?}"
        );
        assert_eq!(
            starts.iter().filter(|s| s.contains("T02:30:00")).count(),
            1,
            "{starts:?}"
        );
        assert_eq!(starts.len(), 6);
    }

    #[test]
    fn the_spring_change_in_berlin_and_the_autumn_change_in_new_york() {
        let weekly = every_day(t(1, 0), t(4, 0));
        let berlin = slots(
            chrono_tz::Europe::Berlin,
            &weekly,
            rules(60),
            "2026-03-28T23:00:00Z",
            "2026-03-29T03:00:00Z",
        );
        assert_eq!(
            local_starts(&berlin),
            vec!["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"]
        );
        let new_york = slots(
            chrono_tz::America::New_York,
            &weekly,
            rules(60),
            "2026-11-01T04:00:00Z",
            "2026-11-01T10:00:00Z",
        );
        assert_eq!(
            local_starts(&new_york),
            vec![
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T02:00:00-05:00",
                "2026-11-01T03:00:00-05:00"
            ]
        );
    }

    #[test]
    fn a_window_past_midnight_runs_into_the_next_day() {
        let weekly = vec![WeeklyWindow {
            weekday: Weekday::Fri,
            start: t(22, 0),
            end: t(1, 0),
        }];
        let found = slots(
            chrono_tz::UTC,
            &weekly,
            rules(60),
            "2026-01-02T00:00:00Z",
            "2026-01-04T00:00:00Z",
        );
        assert_eq!(
            local_starts(&found),
            vec![
                "2026-01-02T22:00:00+00:00",
                "2026-01-02T23:00:00+00:00",
                "2026-01-03T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn blocked_time_extra_hours_and_the_daily_limit_apply() {
        let weekly = every_day(t(9, 0), t(12, 0));
        let day = NaiveDate::from_ymd_opt(2026, 2, 2).unwrap();
        let overrides = [
            Override {
                kind: OverrideKind::Blocked,
                starts_local: day.and_time(t(10, 0)),
                ends_local: day.and_time(t(11, 0)),
            },
            Override {
                kind: OverrideKind::Extra,
                starts_local: day.and_time(t(18, 0)),
                ends_local: day.and_time(t(19, 0)),
            },
        ];
        let mut booked = HashMap::new();
        booked.insert(day + Duration::days(1), 2);
        let mut r = rules(60);
        r.max_per_day = Some(2);
        let found = compute(&Input {
            time_zone: chrono_tz::UTC,
            weekly: &weekly,
            overrides: &overrides,
            rules: r,
            busy: &[],
            booked_per_day: &booked,
            from: utc("2026-02-02T00:00:00Z"),
            to: utc("2026-02-04T00:00:00Z"),
            now: utc("2026-01-01T00:00:00Z"),
        });
        assert_eq!(
            local_starts(&found),
            vec![
                "2026-02-02T09:00:00+00:00",
                "2026-02-02T11:00:00+00:00",
                "2026-02-02T18:00:00+00:00"
            ],
            "10:00 is blocked, 18:00 is extra, and 3 February is full"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// No slot overlaps a booking plus buffers, every slot lies inside a rule's
        /// window in local time, none starts before the minimum notice.
        #[test]
        fn slots_respect_bookings_rules_and_notice(
            start_hour in 0u32..23,
            length_hours in 1u32..10,
            duration in prop::sample::select(vec![15i64, 20, 30, 45, 60]),
            before in 0i64..30,
            after in 0i64..30,
            notice_hours in 0i64..72,
            busy in prop::collection::vec((0i64..(14 * 24 * 60), 10i64..180), 0..20),
            zone in prop::sample::select(vec![chrono_tz::America::New_York, chrono_tz::Europe::Berlin, chrono_tz::Asia::Kolkata]),
        ) {
            let start = t(start_hour, 0);
            let end = t((start_hour + length_hours) % 24, 0);
            let weekly = every_day(start, end);
            let base = utc("2026-03-01T00:00:00Z");
            let busy: Vec<Busy> = busy
                .iter()
                .map(|(offset, len)| Busy { from: base + Duration::minutes(*offset), to: base + Duration::minutes(offset + len) })
                .collect();
            let rules = TypeRules {
                duration: Duration::minutes(duration),
                buffer_before: Duration::minutes(before),
                buffer_after: Duration::minutes(after),
                min_notice: Duration::hours(notice_hours),
                horizon: Duration::days(60),
                max_per_day: None,
            };
            let now = base + Duration::hours(5);
            let found = compute(&Input {
                time_zone: zone,
                weekly: &weekly,
                overrides: &[],
                rules,
                busy: &busy,
                booked_per_day: &HashMap::new(),
                from: base,
                to: base + Duration::days(14),
                now,
            });
            for slot in &found {
                prop_assert_eq!(slot.ends_at - slot.starts_at, rules.duration);
                prop_assert!(slot.starts_at >= now + rules.min_notice);
                for b in &busy {
                    prop_assert!(!overlaps(slot.starts_at - rules.buffer_before, slot.ends_at + rules.buffer_after, b.from, b.to));
                }
                let local_start = slot.starts_at.with_timezone(&zone).naive_local();
                let local_end = slot.ends_at.with_timezone(&zone).naive_local();
                let inside = [local_start.date() - Duration::days(1), local_start.date()].iter().any(|day| {
                    let w_start = day.and_time(start);
                    let w_end = if end > start { day.and_time(end) } else { (*day + Duration::days(1)).and_time(end) };
                    local_start >= w_start && local_end <= w_end
                });
                prop_assert!(inside, "slot {} is outside the rules", slot.local_start);
            }
            let mut sorted = found.clone();
            sorted.dedup_by_key(|s| s.starts_at);
            prop_assert_eq!(sorted.len(), found.len());
        }
    }
}
