//! `herald capacity`: the scaling brief's capacity plan. A straight line is fitted to the daily active users
//! of the history (least squares), extended month by month, given 20 % headroom, and turned into what the
//! peak needs: connections, messages per second (the day's messages at 3 times the average rate), servers
//! (whichever of connections and messages needs more), and the storage the messages fill.
//!
//! The brief gives 80 messages per user per day, the x3 peak, 1,000 messages per server per second and
//! 2,000-5,000 connections per server. It gives no share of daily users connected at once nor bytes per
//! message: those defaults are Herald's (10 % connected at an average moment, 1 KiB stored per message with
//! its indexes, 3 replicas as the brief's Cassandra ring keeps). Every figure is a flag.

use std::fmt::Write;

/// Days in a planning month.
pub const DAYS_PER_MONTH: u64 = 30;

/// The figures a plan is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Assumptions {
    /// Added on top of the forecast of daily users (0.2: 20 %).
    pub headroom: f64,
    /// Peak rate over the day's average rate (3).
    pub peak_multiplier: f64,
    pub messages_per_user_per_day: f64,
    /// Share of the daily users connected at an average moment (the peak multiplier applies on top).
    pub concurrent_share: f64,
    pub connections_per_server: f64,
    pub messages_per_server_per_second: f64,
    /// Bytes one stored message takes, indexes included, in one replica.
    pub bytes_per_message: f64,
    /// Copies of every message the store keeps.
    pub replicas: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Self {
            headroom: 0.2,
            peak_multiplier: 3.0,
            messages_per_user_per_day: 80.0,
            concurrent_share: 0.1,
            connections_per_server: 5_000.0,
            messages_per_server_per_second: 1_000.0,
            bytes_per_message: 1_024.0,
            replicas: 3.0,
        }
    }
}

impl Assumptions {
    /// Figures a plan can be made of: per-server capacities above zero, the rest not negative.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("connections per server", self.connections_per_server),
            ("messages per server per second", self.messages_per_server_per_second),
        ];
        let not_negative = [
            ("headroom", self.headroom),
            ("peak multiplier", self.peak_multiplier),
            ("messages per user per day", self.messages_per_user_per_day),
            ("concurrent share", self.concurrent_share),
            ("bytes per message", self.bytes_per_message),
            ("replicas", self.replicas),
        ];
        for (name, value) in positive {
            if !(value > 0.0 && value.is_finite()) {
                return Err(format!("{name} must be above 0, got {value}"));
            }
        }
        for (name, value) in not_negative {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(format!("{name} must be 0 or more, got {value}"));
            }
        }
        Ok(())
    }
}

/// A straight line through the history: users = intercept + slope x day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    pub intercept: f64,
    pub slope: f64,
}

impl Trend {
    /// The least-squares line through `(day, users)` points; needs two distinct days.
    pub fn fit(points: &[(f64, f64)]) -> Result<Trend, String> {
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        if points.len() < 2 || sxx == 0.0 {
            return Err("the history needs at least two different days".into());
        }
        let slope = sxy / sxx;
        Ok(Trend { intercept: mean_y - slope * mean_x, slope })
    }

    pub fn at(&self, day: f64) -> f64 {
        (self.intercept + self.slope * day).max(0.0)
    }
}

/// What one month of the plan needs, at its last day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Month {
    pub month: u64,
    /// Days after the last day of the history.
    pub day: u64,
    /// The forecast of daily users, headroom included.
    pub users: f64,
    pub peak_connections: f64,
    pub peak_messages_per_second: f64,
    pub servers_for_connections: u64,
    pub servers_for_messages: u64,
    pub servers: u64,
    /// Bytes the messages sent from the end of the history to this month's end fill, every replica counted.
    pub storage_bytes: f64,
}

/// The plan for `months` months after the history's last day (`last_day`).
pub fn plan(trend: Trend, last_day: f64, months: u64, a: &Assumptions) -> Vec<Month> {
    let with_headroom = |day: f64| trend.at(day) * (1.0 + a.headroom);
    let mut stored_messages = 0.0;
    let mut day = 0;
    (1..=months)
        .map(|month| {
            // Storage grows with every day's messages, not only the month's last.
            while day < month * DAYS_PER_MONTH {
                day += 1;
                stored_messages += with_headroom(last_day + day as f64) * a.messages_per_user_per_day;
            }
            let users = with_headroom(last_day + day as f64);
            let peak_connections = users * a.concurrent_share * a.peak_multiplier;
            let peak_messages_per_second = users * a.messages_per_user_per_day * a.peak_multiplier / 86_400.0;
            let servers_for_connections = (peak_connections / a.connections_per_server).ceil() as u64;
            let servers_for_messages = (peak_messages_per_second / a.messages_per_server_per_second).ceil() as u64;
            Month {
                month,
                day,
                users,
                peak_connections,
                peak_messages_per_second,
                servers_for_connections,
                servers_for_messages,
                servers: servers_for_connections.max(servers_for_messages),
                storage_bytes: stored_messages * a.bytes_per_message * a.replicas,
            }
        })
        .collect()
}

/// Reads `day,users` lines: the day as a number or a date (YYYY-MM-DD), an optional header, `#` comments.
/// Returns (day, users) points, days counted from the first line's (so the trend's intercept is the users of
/// the history's first day, whichever way days are written).
pub fn parse_history(csv: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut points = Vec::new();
    for (number, line) in csv.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [day, users] = fields[..] else {
            return Err(format!("line {number}: expected day,users, got {line:?}"));
        };
        let day = day.parse::<f64>().ok().or_else(|| days_since_epoch(day).map(|d| d as f64));
        match (day, users.parse::<f64>()) {
            (Some(day), Ok(users)) if users >= 0.0 && users.is_finite() => points.push((day, users)),
            _ if points.is_empty() && day.is_none() => continue, // the header
            _ => return Err(format!("line {number}: expected a day and a number of users, got {line:?}")),
        }
    }
    if points.len() < 2 {
        return Err("the history needs at least two days".into());
    }
    let first = points[0].0;
    Ok(points.into_iter().map(|(day, users)| (day - first, users)).collect())
}

/// Days from 1970-01-01 to a YYYY-MM-DD date of the proleptic Gregorian calendar.
fn days_since_epoch(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let (y, m, d): (i64, i64, i64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil: years start in March, so the leap day is the year's last.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

fn si(value: f64, unit: &str) -> String {
    let (scaled, prefix) = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| value >= *scale)
        .map_or((value, ""), |(scale, prefix)| (value / scale, prefix));
    format!("{scaled:.2} {prefix}{unit}")
}

/// The plan as a table, with the trend and the assumptions it rests on.
pub fn report(trend: Trend, a: &Assumptions, months: &[Month]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trend: {:.0} daily users on the history's first day, {:+.1} a day; headroom {:.0}%, peak x{}, {} messages/user/day, {:.0}% of daily \
         users connected, {} connections and {} messages/s per server, {} bytes/message x{} replicas\n",
        trend.intercept,
        trend.slope,
        a.headroom * 100.0,
        a.peak_multiplier,
        a.messages_per_user_per_day,
        a.concurrent_share * 100.0,
        a.connections_per_server,
        a.messages_per_server_per_second,
        a.bytes_per_message,
        a.replicas
    );
    let _ = writeln!(
        out,
        "{:>5} {:>5} {:>14} {:>16} {:>14} {:>8} {:>20} {:>14}",
        "month", "+days", "daily users", "peak connections", "peak msgs/s", "servers", "(conns / msgs)", "storage"
    );
    for m in months {
        let _ = writeln!(
            out,
            "{:>5} {:>5} {:>14.0} {:>16.0} {:>14.0} {:>8} {:>20} {:>14}",
            m.month,
            m.day,
            m.users,
            m.peak_connections,
            m.peak_messages_per_second,
            m.servers,
            format!("({} / {})", m.servers_for_connections, m.servers_for_messages),
            si(m.storage_bytes, "B")
        );
    }
    out
}

/// Servers and storage month by month.
pub fn chart(months: &[Month]) -> String {
    let series = |f: fn(&Month) -> f64| months.iter().map(|m| (m.month as f64, f(m))).collect::<Vec<_>>();
    crate::chart::stack(
        "Capacity plan",
        "months ahead",
        &[
            ("servers", series(|m| m.servers as f64)),
            ("peak connections", series(|m| m.peak_connections)),
            ("peak messages/s", series(|m| m.peak_messages_per_second)),
            ("storage, TB", series(|m| m.storage_bytes / 1e12)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn the_line_through_points_on_a_line_is_that_line() {
        let points: Vec<(f64, f64)> = (0..10).map(|d| (d as f64, 1_000.0 + 50.0 * d as f64)).collect();
        let trend = Trend::fit(&points).expect("fit");
        assert!(close(trend.intercept, 1_000.0) && close(trend.slope, 50.0), "{trend:?}");
    }

    #[test]
    fn the_least_squares_line_of_scattered_points() {
        // (0,1) (1,3) (2,2) (3,6): mean x 1.5, mean y 3; Sxy = (-1.5)(-2) + (-0.5)(0) + (0.5)(-1) + (1.5)(3) = 7,
        // Sxx = 5; slope 1.4, intercept 3 - 1.4 x 1.5 = 0.9.
        let trend = Trend::fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 2.0), (3.0, 6.0)]).expect("fit");
        assert!(close(trend.slope, 1.4) && close(trend.intercept, 0.9), "{trend:?}");
        assert!(Trend::fit(&[(1.0, 1.0), (1.0, 2.0)]).is_err());
    }

    #[test]
    fn a_month_of_the_plan_computed_by_hand() {
        // 100 M daily users growing by 1 M a day; the history ends on day 9. Month 1 ends on day 39:
        // 139 M users, x 1.2 = 166.8 M.
        // Peak connections: 166.8 M x 10 % x 3 = 50.04 M -> 50.04 M / 5,000 = 10,008 servers.
        // Peak messages/s: 166.8 M x 80 x 3 / 86,400 = 463,333.3 -> / 1,000 = 464 servers.
        // Storage: days 10..=39 hold sum(100 M + 1 M x d) = 30 x 100 M + 1 M x (10 + 39) x 30 / 2 = 3,735 M
        // user-days, x 1.2 x 80 messages x 1,024 bytes x 3 replicas = 1,101,496,320 M bytes (1.10 PB).
        let trend = Trend { intercept: 100e6, slope: 1e6 };
        let months = plan(trend, 9.0, 2, &Assumptions::default());
        let m = months[0];
        assert_eq!((m.month, m.day), (1, 30));
        assert!(close(m.users, 166.8e6), "{}", m.users);
        assert!(close(m.peak_connections, 50.04e6), "{}", m.peak_connections);
        assert_eq!(m.servers_for_connections, 10_008);
        assert!(close(m.peak_messages_per_second, 166.8e6 * 240.0 / 86_400.0));
        assert_eq!(m.servers_for_messages, 464);
        assert_eq!(m.servers, 10_008);
        assert!(close(m.storage_bytes, 3_735e6 * 1.2 * 80.0 * 1_024.0 * 3.0), "{}", m.storage_bytes);
        // Month 2 (day 69): 169 M x 1.2 = 202.8 M; storage adds days 40..=69: 30 x 100 M + 1 M x (40 + 69) x 15.
        let m2 = months[1];
        assert!(close(m2.users, 202.8e6));
        assert!(close(m2.storage_bytes, (3_735e6 + 4_635e6) * 1.2 * 80.0 * 1_024.0 * 3.0));
    }

    #[test]
    fn messages_decide_when_users_send_much_and_connect_little() {
        // 1.2 M users with headroom; 1,000 messages a day each: 1.2e9 x 3 / 86,400 = 41,666.7/s -> 42 servers;
        // 1 % connected x 3 = 36,000 connections -> 8 servers.
        let a = Assumptions { messages_per_user_per_day: 1_000.0, concurrent_share: 0.01, ..Assumptions::default() };
        let m = plan(Trend { intercept: 1e6, slope: 0.0 }, 0.0, 1, &a)[0];
        assert_eq!((m.servers_for_messages, m.servers_for_connections, m.servers), (42, 8, 42));
    }

    #[test]
    fn a_shrinking_trend_never_plans_negative_users() {
        // At 0 from day 1 on: no users, no servers, nothing stored.
        let m = plan(Trend { intercept: 1_000.0, slope: -1_000.0 }, 0.0, 1, &Assumptions::default())[0];
        assert_eq!((m.users, m.servers, m.storage_bytes), (0.0, 0, 0.0));
    }

    #[test]
    fn assumptions_that_cannot_plan_are_refused() {
        assert!(Assumptions::default().validate().is_ok());
        assert!(Assumptions { connections_per_server: 0.0, ..Assumptions::default() }.validate().is_err());
        assert!(Assumptions { headroom: -0.1, ..Assumptions::default() }.validate().is_err());
        assert!(Assumptions { replicas: f64::NAN, ..Assumptions::default() }.validate().is_err());
    }

    #[test]
    fn history_reads_days_as_numbers_or_dates() {
        let h = parse_history("day,users\n10,100\n11, 110\n").expect("numbers");
        assert_eq!(h, [(0.0, 100.0), (1.0, 110.0)]);
        let h = parse_history("date,daily_active_users\n2024-02-28,5\n2024-03-01,7\n# note\n").expect("dates");
        // 2024 is a leap year: 03-01 is two days after 02-28.
        assert_eq!(h, [(0.0, 5.0), (2.0, 7.0)]);
        // 2024-02-28 is day 19,781 since 1970-01-01.
        assert_eq!(days_since_epoch("2024-02-28"), Some(19_781));
        assert_eq!(days_since_epoch("1970-01-01"), Some(0));
        assert_eq!(days_since_epoch("2000-03-01"), Some(11_017));
        assert!(parse_history("0,100\n").is_err());
        assert!(parse_history("0,100\n1,-5\n").is_err());
        assert!(parse_history("0,100\nx,5\n").is_err());
        assert!(days_since_epoch("2024-13-01").is_none());
    }

    #[test]
    fn the_report_and_the_chart_show_the_plan() {
        let trend = Trend { intercept: 100e6, slope: 1e6 };
        let a = Assumptions::default();
        let months = plan(trend, 9.0, 3, &a);
        let text = report(trend, &a, &months);
        assert!(text.contains("10008") && text.contains("(10008 / 464)") && text.contains("1.10 PB"), "{text}");
        let svg = chart(&months);
        assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 4);
    }
}
