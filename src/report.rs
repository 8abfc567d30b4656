//! `framecast report`: reads `--stats-json` logs (one or more, sender's and receiver's) and
//! prints a table of the runs, and optionally plots fps, kbit/s, quality and latency over
//! time as SVG.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::stats::{read_json_lines, RecordType, Report, Side, Stage};

/// The records of one side in one log file.
#[derive(Clone, Debug)]
pub struct Run {
    pub file: PathBuf,
    pub role: Side,
    /// Interval records in order.
    pub intervals: Vec<Report>,
    /// The summary record, if the run ended cleanly.
    pub summary: Option<Report>,
}

impl Run {
    /// A short name for legends: file stem and role.
    pub fn label(&self) -> String {
        let stem = self.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        format!("{stem} {}", self.role.name())
    }
}

/// Reads stats logs ([`read_json_lines`]). A line that is not a stats record is an error
/// naming the file and line.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    for path in paths {
        let reports = read_json_lines(path)?;
        if reports.is_empty() {
            bail!("{}: no stats records", path.display());
        }
        for report in reports {
            let run = match runs.iter_mut().position(|r| r.file == *path && r.role == report.role) {
                Some(i) => &mut runs[i],
                None => {
                    runs.push(Run { file: path.clone(), role: report.role, intervals: Vec::new(), summary: None });
                    runs.last_mut().expect("just pushed")
                }
            };
            match report.kind {
                RecordType::Interval => run.intervals.push(report),
                RecordType::Summary => run.summary = Some(report),
            }
        }
    }
    Ok(runs)
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

/// The whole-run record of a run: its summary, or (for a run cut short) its last interval.
fn whole(run: &Run) -> Option<&Report> {
    run.summary.as_ref().or(run.intervals.last())
}

/// A plain-text table: one row per run, then latency percentiles per stage.
pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:>8} {:>8} {:>10} {:>9} {:>7} {:>9} {:>7}",
        "run", "seconds", "frames", "fps", "kbit/s", "KB/frame", "quality", "codec ms", "drops"
    );
    for run in runs {
        let Some(s) = whole(run) else { continue };
        let codec = s.encode_ms.or(s.decode_ms);
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>8} {:>8} {:>10} {:>9} {:>7} {:>9} {:>7}{}",
            run.label(),
            fmt_opt(Some(s.seconds), 1),
            fmt_opt(Some(s.frames as f64), 0),
            fmt_opt(Some(s.fps), 1),
            fmt_opt(Some(s.kbps), 0),
            fmt_opt(Some(s.mean_frame_bytes / 1000.0), 1),
            fmt_opt(s.quality.map(f64::from), 0),
            fmt_opt(codec, 2),
            fmt_opt(Some(s.drops_total as f64), 0),
            if run.summary.is_none() { "  (no summary: last interval)" } else { "" },
        );
    }
    udp_table(runs, &mut out);
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<28} {:<20} {:>9} {:>9} {:>9} {:>9}", "latency (ms)", "stage", "p50", "p95", "p99", "max");
    for run in runs {
        let Some(s) = whole(run) else { continue };
        for stage in Stage::LISTED {
            if let Some(p) = s.latency(stage) {
                let _ = writeln!(
                    out,
                    "{:<28} {:<20} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    run.label(),
                    stage.label(),
                    p.p50,
                    p.p95,
                    p.p99,
                    p.max,
                );
            }
        }
        if let Some(c) = &s.clock {
            let _ = writeln!(
                out,
                "{:<28} sender clock {}: offset {} ms ±{} ms, drift {} ppm",
                run.label(),
                c.source.name(),
                fmt_opt(c.offset_ms, 3),
                fmt_opt(c.uncertainty_ms, 3),
                fmt_opt(c.drift_ppm, 1),
            );
        }
    }
    out
}

/// The UDP transport's figures per run (packets lost, recovered by FEC, retransmitted, frames
/// concealed, lost and late, FEC overhead), for the runs that have any.
fn udp_table(runs: &[Run], out: &mut String) {
    let rows: Vec<_> = runs
        .iter()
        .filter_map(|r| whole(r).map(|s| (r, s)))
        .filter(|(_, s)| s.udp_figures().is_some() || s.concealed > 0)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "udp", "lost", "fec", "rtx", "concealed", "f.lost", "late", "ignored", "fec %"
    );
    for (run, s) in rows {
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9}",
            run.label(),
            s.packets_lost,
            s.fec_recovered,
            s.retransmitted,
            s.concealed,
            s.frames_lost,
            s.late_frames,
            s.udp_ignored,
            fmt_opt(s.fec_overhead_pct, 1),
        );
    }
}

/// The latency series plotted for a run: its end-to-end latency ([`Stage::END_TO_END`]),
/// else the ack round trip (a sender's log).
fn plotted_stage(run: &Run) -> Option<Stage> {
    Stage::END_TO_END
        .into_iter()
        .chain([Stage::AckRtt])
        .find(|stage| run.intervals.iter().any(|r| r.latency(*stage).is_some()))
}

/// Points (time in seconds, value) of one plotted line.
type Series = Vec<(f64, f64)>;

/// One panel of the plot: its title, and the named lines one run contributes to it.
type Panel = (&'static str, fn(&Run) -> Vec<(String, Series)>);

/// The points of `run` where `f` has a value.
fn series(run: &Run, f: &dyn Fn(&Report) -> Option<f64>) -> Series {
    run.intervals.iter().filter_map(|r| Some((r.t, f(r)?))).collect()
}

/// The four panels of the plot, top to bottom.
fn panels() -> [Panel; 4] {
    [
        ("frames per second", |r: &Run| vec![(r.label(), series(r, &|v| Some(v.fps)))]),
        ("kbit/s", |r: &Run| vec![(r.label(), series(r, &|v| Some(v.kbps)))]),
        ("JPEG quality", |r: &Run| vec![(r.label(), series(r, &|v| v.quality.map(f64::from)))]),
        ("latency p50 / p95 (ms)", |r: &Run| match plotted_stage(r) {
            Some(st) => vec![
                (format!("{} {} p50", r.label(), st.key()), series(r, &|v| Some(v.latency(st)?.p50))),
                (format!("{} {} p95", r.label(), st.key()), series(r, &|v| Some(v.latency(st)?.p95))),
            ],
            None => Vec::new(),
        }),
    ]
}

/// The error for a failed drawing step of the plot written to `out`.
fn draw_error(out: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cannot draw {}: {e}", out.display())
}

/// Plots fps, kbit/s, quality and latency p50/p95 over time, one line per run.
pub fn svg(runs: &[Run], out: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let t_max = runs.iter().flat_map(|r| r.intervals.iter().map(|v| v.t)).fold(1.0f64, f64::max);
    let root = SVGBackend::new(out, (1000, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(out, e))?;
    let areas = root.split_evenly((4, 1));
    let mut colour = 0usize;
    for ((title, make), area) in panels().iter().zip(areas.iter()) {
        let lines: Vec<(String, Series)> = runs.iter().flat_map(make).filter(|(_, s)| !s.is_empty()).collect();
        draw_panel(area, title, lines, t_max, &mut colour, out)?;
    }
    root.present().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    Ok(())
}

/// Draws one panel: its axes from 0 to `t_max` seconds, `lines` in the next colours from
/// `colour` on, and their legend. `out` is the file named in errors.
fn draw_panel(
    area: &plotters::drawing::DrawingArea<plotters::backend::SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    lines: Vec<(String, Series)>,
    t_max: f64,
    colour: &mut usize,
    out: &Path,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let y_max = lines.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(|e| draw_error(out, e))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.15))
        .x_desc("time (s)")
        .draw()
        .map_err(|e| draw_error(out, e))?;
    for (name, points) in lines {
        let style = Palette99::pick(*colour).stroke_width(2);
        *colour += 1;
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(|e| draw_error(out, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw_error(out, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fc-report-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn table_lists_runs_and_stages() {
        let d = tmp("table");
        let recv = write_log(
            &d,
            "r.jsonl",
            &[
                r#"{"schema":2,"type":"interval","role":"receiver","t":1.0,"seconds":1.0,"frames":30,"fps":30.0,"bytes":798000,"kbps":6400.0,"mean_frame_bytes":26600,"quality":75,"decode_ms":1.2,"drops":{},"drops_total":0,"latency_capture_decoded_ms":{"p50":2.5,"p95":3.5,"p99":4.0,"max":5.0,"count":30}}"#,
                r#"{"schema":2,"type":"summary","role":"receiver","t":2.0,"seconds":2.0,"frames":60,"fps":30.0,"bytes":1596000,"kbps":6400.0,"mean_frame_bytes":26600,"quality":75,"decode_ms":1.2,"drops":{"decoder_busy":1},"drops_total":1,"latency_capture_decoded_ms":{"p50":2.5,"p95":3.6,"p99":4.1,"max":5.5,"count":60},"clock":{"source":"synced","offset_ms":3600000.1,"uncertainty_ms":0.05,"drift_ppm":99.0,"exchanges":9}}"#,
            ],
        );
        let runs = load(&[recv]).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].intervals.len(), 1);
        let t = table(&runs);
        assert!(t.contains("r receiver"), "{t}");
        assert!(t.contains("60") && t.contains("26.6") && t.contains("1.20"), "{t}");
        assert!(t.contains("capture->decoded") && t.contains("3.60"), "{t}");
        assert!(t.contains("synced") && t.contains("3600000.100"), "{t}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let d = tmp("bad");
        let good = include_str!("testdata/stats-v2.jsonl").lines().next().unwrap();
        let p = write_log(&d, "x.jsonl", &[good, "not json"]);
        let e = format!("{:#}", load(&[p]).unwrap_err());
        assert!(e.contains("x.jsonl:2") && e.contains("not JSON"), "{e}");
        let p = write_log(&d, "y.jsonl", &[r#"{"fps":3}"#]);
        let e = format!("{:#}", load(&[p]).unwrap_err());
        assert!(e.contains("y.jsonl:1: not a framecast stats record"), "{e}");
        let p = write_log(&d, "z.jsonl", &[""]);
        assert!(format!("{:#}", load(&[p]).unwrap_err()).contains("no stats records"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn svg_has_a_line_per_series() {
        let d = tmp("svg");
        let lines: Vec<String> = (1..=5)
            .map(|i| {
                format!(
                    r#"{{"schema":2,"type":"interval","role":"receiver","t":{i}.0,"seconds":1.0,"frames":30,"fps":{},"bytes":750000,"kbps":6000,"mean_frame_bytes":25000.0,"quality":75,"drops":{{}},"drops_total":0,"latency_capture_displayed_ms":{{"p50":2.0,"p95":{i}.5,"p99":4,"max":5,"count":30}}}}"#,
                    28 + i
                )
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let p = write_log(&d, "r.jsonl", &refs);
        let out = d.join("plot.svg");
        svg(&load(&[p]).unwrap(), &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("<svg"));
        // Each series is drawn once as a line and once in its legend, 2 px wide (axes are 1 px).
        let series = text.lines().filter(|l| l.starts_with("<polyline") && l.contains(r#"stroke-width="2""#)).count();
        assert_eq!(series, 2 * 5, "fps, kbit/s, quality, p50, p95");
        assert!(text.contains("frames per second") && text.contains("latency p50 / p95"));
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// `framecast report`'s table of the stats schema fixture (`src/testdata/stats-v2.jsonl`).
#[cfg(test)]
mod fixture {
    use super::*;

    #[test]
    fn table_of_the_schema_fixture() {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/stats-v2.jsonl"));
        let t = table(&load(&[path]).unwrap());
        assert_eq!(t, include_str!("testdata/stats-v2-report.txt"));
    }
}
