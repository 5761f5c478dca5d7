//! `soak`: groups traffic for a set time, sampled every interval: the server's resident memory and open
//! descriptors beside deliveries per second and latency, so a leak shows as a slope after the warm-up. With
//! the churn options it is mixed traffic: devices reconnecting and resuming, history read, photos uploaded
//! (see `churn`), each with its own rate and latency in every sample.

use super::churn::{Churn, ChurnArgs, ChurnUsers, Interval};
use super::fleet::{Fleet, Traffic};
use super::node::Target;
use anyhow::bail;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub churn: ChurnArgs,
    /// Seconds to send for.
    #[arg(long, default_value_t = 1800)]
    pub duration: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 60)]
    pub interval: u64,
}

/// One interval of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Minutes since sending started, at the end of this interval.
    pub minute: f64,
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// The server's resident memory at the end of the interval (when it is the bench's child).
    pub rss_mb: Option<f64>,
    /// The server's open file descriptors at the end of the interval (when it is the bench's child).
    pub open_fds: Option<u64>,
    /// What the churn did in the interval, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<Interval>,
}

#[derive(Debug, serde::Serialize)]
pub struct SoakReport {
    pub rooms: usize,
    pub members: usize,
    pub rate: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The churn's settings, when there was churn.
    pub churn: Option<ChurnArgs>,
    /// Resident memory once every member is connected, before the first message.
    pub rss_mb_connected: Option<f64>,
    pub samples: Vec<Sample>,
}

impl SoakReport {
    fn title(&self) -> String {
        let mut title = format!("{} rooms x {} members, {} msg/s", self.rooms, self.members, self.rate);
        if let Some(c) = &self.churn {
            title.push_str(&format!(
                "; {} devices reconnecting every {} s, {} history pages/s, {} uploads/s",
                c.reconnecting,
                2 * c.online_seconds,
                c.history_per_second,
                c.uploads_per_second
            ));
        }
        title
    }

    /// How much resident memory grew over the samples after the first (the warm-up), in MB.
    pub fn growth_after_warmup_mb(&self) -> Option<f64> {
        let first = self.samples.first()?.rss_mb?;
        let last = self.samples.last()?.rss_mb?;
        Some(last - first)
    }

    pub fn table(&self) -> String {
        let churn = self.churn.is_some();
        let mut out = format!(
            "scenario soak: {}\n\
             | minute | deliveries/s | p50 ms | p99 ms | max ms | server RSS MB | open fds |{}\n\
             |---|---|---|---|---|---|---|{}\n",
            self.title(),
            if churn {
                " reconnects/s | reconnect p99 ms | caught up | history/s | history p99 ms | uploads/s | upload p99 ms \
                 | failed |"
            } else {
                ""
            },
            if churn { "---|---|---|---|---|---|---|---|" } else { "" }
        );
        let mb = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
        out.push_str(&format!(
            "| connected | | | | | {} | |{}\n",
            mb(self.rss_mb_connected),
            if churn { " | | | | | | | |" } else { "" }
        ));
        for s in &self.samples {
            out.push_str(&format!(
                "| {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                s.minute,
                s.deliveries_per_second,
                s.latency_ms_p50,
                s.latency_ms_p99,
                s.latency_ms_max,
                mb(s.rss_mb),
                s.open_fds.map_or("n/a".into(), |n| n.to_string())
            ));
            if let Some(c) = &s.churn {
                out.push_str(&format!(
                    " {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.2} | {:.0} | {} |",
                    c.reconnects.per_second,
                    c.reconnects.ms_p99,
                    c.caught_up_per_reconnect,
                    c.history.per_second,
                    c.history.ms_p99,
                    c.uploads.per_second,
                    c.uploads.ms_p99,
                    c.failed()
                ));
            }
            out.push('\n');
        }
        if let Some(growth) = self.growth_after_warmup_mb() {
            out.push_str(&format!("RSS growth after the first interval (warm-up): {growth:+.1} MB\n"));
        }
        out
    }

    pub fn chart(&self) -> String {
        let series = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
            self.samples.iter().filter_map(|s| f(s).map(|v| (s.minute, v))).collect()
        };
        let mut panels = vec![
            ("server RSS, MB", series(&|s| s.rss_mb)),
            ("open fds", series(&|s| s.open_fds.map(|n| n as f64))),
            ("deliveries per second", series(&|s| Some(s.deliveries_per_second))),
            ("send to receive p99, ms", series(&|s| Some(s.latency_ms_p99))),
        ];
        if self.churn.is_some() {
            panels.extend([
                ("reconnect and catch-up p99, ms", series(&|s| Some(s.churn?.reconnects.ms_p99))),
                ("history page p99, ms", series(&|s| Some(s.churn?.history.ms_p99))),
                ("upload to ready p99, ms", series(&|s| Some(s.churn?.uploads.ms_p99))),
            ]);
        }
        // The full settings are in the table; a chart's title must fit its width.
        let title = format!(
            "soak: {} rooms x {} members, {} msg/s{}",
            self.rooms,
            self.members,
            self.rate,
            if self.churn.is_some() { " + reconnects, history, uploads" } else { "" }
        );
        crate::chart::stack(&title, "minutes", &panels)
    }
}

pub async fn run(target: &Target, args: &SoakArgs) -> anyhow::Result<SoakReport> {
    if args.interval == 0 || args.duration < args.interval {
        bail!("need --interval >= 1 and --duration >= --interval");
    }
    let Traffic { rooms, members, rate } = args.traffic;
    let churn_users = match args.churn.any() {
        true => Some(ChurnUsers::register(target, &args.churn).await?),
        false => None,
    };
    let outsiders = churn_users.as_ref().map(ChurnUsers::members).unwrap_or_default();
    let mut fleet = Fleet::assemble_with(target, rooms, members, 1, &outsiders).await?;
    let mut churn = match churn_users {
        Some(users) => Some(Churn::start(target, &args.churn, users, fleet.conversations())?),
        None => None,
    };
    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let rss_mb_connected = target.rss_bytes().map(mb);
    let intervals = args.duration.div_ceil(args.interval);
    eprintln!("sending {rate} msg/s for {} s, sampling every {} s ...", args.duration, args.interval);
    let started = Instant::now();
    let mut samples = Vec::with_capacity(intervals as usize);
    for _ in 0..intervals {
        let phase = fleet.phase(target, rate, args.interval).await?;
        let churned = match churn.as_mut() {
            Some(churn) => {
                churn.check().await?;
                Some(churn.take())
            }
            None => None,
        };
        let sample = Sample {
            minute: started.elapsed().as_secs_f64() / 60.0,
            deliveries: phase.deliveries,
            deliveries_per_second: phase.deliveries_per_second,
            latency_ms_p50: phase.latency.p50,
            latency_ms_p99: phase.latency.p99,
            latency_ms_max: phase.latency.max,
            rss_mb: target.rss_bytes().map(mb),
            open_fds: target.open_fds(),
            churn: churned,
        };
        eprintln!(
            "{:.1} min: {:.0} deliveries/s, p99 {:.2} ms, RSS {} MB, {} fds{}",
            sample.minute,
            sample.deliveries_per_second,
            sample.latency_ms_p99,
            sample.rss_mb.map_or("n/a".into(), |v| format!("{v:.1}")),
            sample.open_fds.map_or("n/a".into(), |n| n.to_string()),
            churned.map_or(String::new(), |c| format!(
                "; {} reconnects (p99 {:.0} ms), {} history pages, {} uploads (p99 {:.0} ms), {} failed",
                c.reconnects.done,
                c.reconnects.ms_p99,
                c.history.done,
                c.uploads.done,
                c.uploads.ms_p99,
                c.failed()
            ))
        );
        samples.push(sample);
    }
    if let Some(churn) = churn {
        churn.finish().await?;
    }
    fleet.finish().await?;
    let churn = args.churn.any().then_some(args.churn);
    Ok(SoakReport { rooms, members, rate, churn, rss_mb_connected, samples })
}
