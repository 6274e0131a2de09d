//! When batches open: one-off instants and weekly wall-clock times in any IANA time zone.
//!
//! A weekly sale is defined in the organiser's wall-clock time ("Tuesdays 12:00 Asia/Shanghai"),
//! not as a fixed UTC instant, so a zone with daylight saving keeps opening at 12:00 local time all
//! year round. Two local times need a rule:
//! - a time skipped by a spring-forward gap (02:30 on the night clocks jump from 02:00 to 03:00)
//!   opens at the same distance past the gap's start, using the offset in force before it
//!   (02:30 → 03:30), as RFC 5545 (iCalendar) prescribes;
//! - a time repeated by a fall-back overlap opens at its first occurrence.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A recurring weekly opening: weekday and wall-clock time in an IANA zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklySchedule {
    /// Day of the week, in the zone's local calendar.
    pub weekday: Weekday,
    /// Local wall-clock time, to the minute.
    pub time: NaiveTime,
    /// The IANA zone the weekday and time are read in.
    pub timezone: Tz,
}

impl WeeklySchedule {
    /// The first opening strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let local_today = after.with_timezone(&self.timezone).date_naive();
        // Start a day early so an opening later "today" in UTC but earlier in the zone is found;
        // one week plus two days always contains the next occurrence.
        let start = local_today - Days::new(1);
        (0..9)
            .map(|offset| start + Days::new(offset))
            .filter(|date| date.weekday() == self.weekday)
            .map(|date| self.resolve(date))
            .find(|opening| *opening > after)
            .expect("a weekday recurs within nine consecutive days")
    }

    /// The UTC instant of this schedule's wall-clock time on the local `date`.
    fn resolve(&self, date: NaiveDate) -> DateTime<Utc> {
        let local = NaiveDateTime::new(date, self.time);
        match self.timezone.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
            // Fall-back overlap: the first of the two instants.
            chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            // Spring-forward gap: read the local time with the offset in force before the gap.
            // No zone has a gap longer than a day, so a day earlier is safely before it.
            chrono::LocalResult::None => {
                let before_gap = self.timezone.offset_from_utc_datetime(&(local - TimeDelta::days(1)));
                let offset = chrono::Offset::fix(&before_gap);
                (local - TimeDelta::seconds(i64::from(offset.local_minus_utc()))).and_utc()
            }
        }
    }
}

/// `mon` … `sun`, the weekday spelling of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WeekdayName {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl From<WeekdayName> for Weekday {
    fn from(day: WeekdayName) -> Weekday {
        match day {
            WeekdayName::Mon => Weekday::Mon,
            WeekdayName::Tue => Weekday::Tue,
            WeekdayName::Wed => Weekday::Wed,
            WeekdayName::Thu => Weekday::Thu,
            WeekdayName::Fri => Weekday::Fri,
            WeekdayName::Sat => Weekday::Sat,
            WeekdayName::Sun => Weekday::Sun,
        }
    }
}

impl From<Weekday> for WeekdayName {
    fn from(day: Weekday) -> WeekdayName {
        match day {
            Weekday::Mon => WeekdayName::Mon,
            Weekday::Tue => WeekdayName::Tue,
            Weekday::Wed => WeekdayName::Wed,
            Weekday::Thu => WeekdayName::Thu,
            Weekday::Fri => WeekdayName::Fri,
            Weekday::Sat => WeekdayName::Sat,
            Weekday::Sun => WeekdayName::Sun,
        }
    }
}

impl WeekdayName {
    /// The three-letter spelling stored in `sales.weekly_weekday`.
    pub fn as_str(self) -> &'static str {
        match self {
            WeekdayName::Mon => "mon",
            WeekdayName::Tue => "tue",
            WeekdayName::Wed => "wed",
            WeekdayName::Thu => "thu",
            WeekdayName::Fri => "fri",
            WeekdayName::Sat => "sat",
            WeekdayName::Sun => "sun",
        }
    }
}

impl fmt::Display for WeekdayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every IANA time zone name a weekly sale accepts (for the API description).
pub fn time_zone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

impl FromStr for WeekdayName {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekly(day: Weekday, hm: &str, tz: &str) -> WeeklySchedule {
        WeeklySchedule {
            weekday: day,
            time: NaiveTime::parse_from_str(hm, "%H:%M").unwrap(),
            timezone: tz.parse().unwrap(),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn tuesday_noon_in_shanghai_is_four_utc() {
        let s = weekly(Weekday::Tue, "12:00", "Asia/Shanghai");
        // 2026-11-22 is a Sunday.
        let cases = [
            ("2026-11-22T10:00:00Z", "2026-11-24T04:00:00Z"), // Sunday: this week's Tuesday
            ("2026-11-24T03:59:59Z", "2026-11-24T04:00:00Z"), // a second before the opening
            ("2026-11-24T04:00:00Z", "2026-12-01T04:00:00Z"), // at the opening: strictly after
            ("2026-11-24T04:00:01Z", "2026-12-01T04:00:00Z"), // just after: next week
            ("2026-11-23T17:30:00Z", "2026-11-24T04:00:00Z"), // Tuesday 01:30 local, Monday UTC
            ("2026-12-29T12:00:00Z", "2027-01-05T04:00:00Z"), // across the new year
        ];
        for (after, expected) in cases {
            assert_eq!(s.next_after(utc(after)), utc(expected), "after {after}");
        }
    }

    #[test]
    fn weekly_openings_keep_local_time_across_daylight_saving() {
        // New York: EDT (UTC-4) until 2026-11-01, EST (UTC-5) after; DST resumes 2027-03-14.
        let s = weekly(Weekday::Tue, "12:00", "America/New_York");
        assert_eq!(s.next_after(utc("2026-10-25T00:00:00Z")), utc("2026-10-27T16:00:00Z"));
        assert_eq!(s.next_after(utc("2026-10-28T00:00:00Z")), utc("2026-11-03T17:00:00Z"));
        assert_eq!(s.next_after(utc("2027-03-10T00:00:00Z")), utc("2027-03-16T16:00:00Z"));
    }

    #[test]
    fn a_time_in_the_spring_gap_opens_just_after_it() {
        // Europe/Berlin skips 02:00–03:00 on Sunday 2027-03-28: 02:30 becomes 03:30 CEST (01:30Z).
        let s = weekly(Weekday::Sun, "02:30", "Europe/Berlin");
        assert_eq!(s.next_after(utc("2027-03-22T00:00:00Z")), utc("2027-03-28T01:30:00Z"));
    }

    #[test]
    fn a_repeated_time_in_the_autumn_overlap_opens_at_its_first_occurrence() {
        // Europe/Berlin repeats 02:00–03:00 on Sunday 2026-10-25; 02:30 CEST is 00:30Z.
        let s = weekly(Weekday::Sun, "02:30", "Europe/Berlin");
        assert_eq!(s.next_after(utc("2026-10-20T00:00:00Z")), utc("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn zones_east_of_utc_find_the_local_weekday() {
        // Monday 23:00 in Kiritimati (UTC+14) is Monday 09:00 UTC.
        let s = weekly(Weekday::Mon, "23:00", "Pacific/Kiritimati");
        assert_eq!(s.next_after(utc("2026-11-22T00:00:00Z")), utc("2026-11-23T09:00:00Z"));
        assert_eq!(s.next_after(utc("2026-11-23T09:00:00Z")), utc("2026-11-30T09:00:00Z"));
    }

    #[test]
    fn weekday_names_round_trip() {
        for name in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] {
            let day: WeekdayName = name.parse().unwrap();
            assert_eq!(WeekdayName::from(Weekday::from(day)).as_str(), name);
        }
        assert!("tuesday".parse::<WeekdayName>().is_err());
    }
}
