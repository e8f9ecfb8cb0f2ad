//! Drawing a sweep: offered load on x, delivered rate (left axis) and loss
//! (right axis) on y, so the knee where the flood begins stands out.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::report::{delivered_pps, UdpReport};

/// Writes the sweep's curve to `path` as SVG.
pub fn sweep_svg(steps: &[&UdpReport], path: &Path) -> anyhow::Result<()> {
    draw(steps, path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

/// 2500000 -> "2.5M", 12000 -> "12k".
fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 1e6 => format!("{:.1}M", v / 1e6),
        a if a >= 1e3 => format!("{:.0}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

fn draw(steps: &[&UdpReport], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let points: Vec<(f64, f64, f64, f64)> = steps
        .iter()
        .map(|r| {
            (
                r.requested_pps.unwrap_or(0.0),
                r.achieved_pps,
                delivered_pps(r),
                r.loss_pct,
            )
        })
        .collect();
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = points.iter().map(|p| p.1.max(p.2)).fold(1.0, f64::max) * 1.1;
    let target = steps.first().map_or(String::new(), |r| {
        format!(" -> {} ({} B)", r.target, r.size)
    });

    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("UDP offered load vs delivered{target}"),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?
        .set_secondary_coord(0.0..x_max, 0.0..100.0);
    chart
        .configure_mesh()
        .x_desc("offered (datagrams/s)")
        .y_desc("datagrams/s")
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()?;
    chart.configure_secondary_axes().y_desc("loss (%)").draw()?;

    let sent: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    let delivered: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.2)).collect();
    let loss: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.3)).collect();
    chart
        .draw_series(LineSeries::new(sent.clone(), BLUE.mix(0.5)))?
        .label("handed to the kernel")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.mix(0.5)));
    chart
        .draw_series(LineSeries::new(delivered.clone(), GREEN.stroke_width(2)))?
        .label("delivered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    chart.draw_series(delivered.iter().map(|&p| Circle::new(p, 3, GREEN.filled())))?;
    chart
        .draw_secondary_series(LineSeries::new(loss.clone(), RED.stroke_width(2)))?
        .label("loss (%, right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart.draw_secondary_series(loss.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes the shared-link lab's time series to `path` as SVG: TCP goodput
/// and UDP delivered per 100 ms, the phases marked and named.
pub fn shared_link_svg(
    report: &crate::shared_link::SharedReport,
    path: &Path,
) -> anyhow::Result<()> {
    draw_shared(report, path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

fn draw_shared(
    r: &crate::shared_link::SharedReport,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let at = |i: usize| i as f64 * r.bin_s;
    let tcp: Vec<(f64, f64)> = r
        .tcp_mbps
        .iter()
        .enumerate()
        .map(|(i, &v)| (at(i), v))
        .collect();
    let udp: Vec<(f64, f64)> = r
        .udp_mbps
        .iter()
        .enumerate()
        .map(|(i, &v)| (at(i), v))
        .collect();
    let x_max = r.phase_s * r.phases.len() as f64;
    let y_max = r.link_mbps * 1.15;
    let root = SVGBackend::new(path, (960, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "One TCP flow and one UDP flow sharing a {:.0} Mbit/s link",
                r.link_mbps
            ),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("Mbit/s (per 100 ms)")
        .draw()?;
    // The phases: a boundary line each, and the phase's name at its top.
    for (k, phase) in r.phases.iter().enumerate() {
        let x = k as f64 * r.phase_s;
        chart.draw_series(LineSeries::new(vec![(x, 0.0), (x, y_max)], BLACK.mix(0.3)))?;
        chart.draw_series(std::iter::once(Text::new(
            phase.name.to_string(),
            (x + r.phase_s * 0.04, y_max * 0.97),
            ("sans-serif", 15),
        )))?;
    }
    chart
        .draw_series(LineSeries::new(tcp, BLUE.stroke_width(2)))?
        .label("TCP goodput")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(udp, RED.stroke_width(2)))?
        .label("UDP delivered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One point of a rate-and-latency plot: where on x, the rate asked for,
/// the rate achieved, and p99 in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct RatePoint {
    /// Seconds (a ramp) or offered requests/s (a sweep).
    pub x: f64,
    /// Requests/s the profile or step asked for.
    pub asked: f64,
    /// Requests/s sent (a ramp) or answered (a sweep).
    pub achieved: f64,
    /// The 99th percentile of latency, microseconds (0: no sample).
    pub p99_us: f64,
}

/// Writes a TCP or HTTP rate plot to `path` as SVG: the rate asked for and
/// achieved (left axis) and p99 on a log scale (right axis) against x, with
/// the knee marked where given, so where p99 bends stands out.
pub fn rate_svg(
    title: &str,
    x_desc: &str,
    points: &[RatePoint],
    knee: Option<f64>,
    path: &Path,
) -> anyhow::Result<()> {
    draw_rate(title, x_desc, points, knee, path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

fn draw_rate(
    title: &str,
    x_desc: &str,
    points: &[RatePoint],
    knee: Option<f64>,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let x_max = points.iter().map(|p| p.x).fold(1.0, f64::max) * 1.05;
    let y_max = points
        .iter()
        .map(|p| p.asked.max(p.achieved))
        .fold(1.0, f64::max)
        * 1.1;
    let p99_ms: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.p99_us > 0.0)
        .map(|p| (p.x, p.p99_us / 1000.0))
        .collect();
    let lo = p99_ms
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(1.0)
        / 2.0;
    let hi = p99_ms.iter().map(|p| p.1).fold(0.0, f64::max).max(lo * 4.0) * 2.0;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?
        .set_secondary_coord(0.0..x_max, (lo..hi).log_scale());
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("requests/s")
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("p99 latency (ms, log scale)")
        .draw()?;
    let asked: Vec<(f64, f64)> = points.iter().map(|p| (p.x, p.asked)).collect();
    let achieved: Vec<(f64, f64)> = points.iter().map(|p| (p.x, p.achieved)).collect();
    chart
        .draw_series(LineSeries::new(asked, BLUE.mix(0.5)))?
        .label("asked for")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.mix(0.5)));
    chart
        .draw_series(LineSeries::new(achieved.clone(), GREEN.stroke_width(2)))?
        .label("achieved")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    chart.draw_series(achieved.iter().map(|&p| Circle::new(p, 3, GREEN.filled())))?;
    chart
        .draw_secondary_series(LineSeries::new(p99_ms.clone(), RED.stroke_width(2)))?
        .label("p99 (right axis)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart.draw_secondary_series(p99_ms.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    if let Some(k) = knee {
        chart.draw_series(LineSeries::new(vec![(k, 0.0), (k, y_max)], BLACK.mix(0.4)))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("knee: {}", short(k)),
            (k, y_max * 0.95),
            ("sans-serif", 15),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
