//! The HTML report: one self-contained file with inline SVG charts (no
//! script, no fonts, nothing fetched), so it opens offline in any browser.
//!
//! Charts: latency distribution by class, delivery over time, the chain's
//! head and finalized height over time, and the topology coloured by how
//! much of the traffic meant for each node arrived.

use std::fmt::Write;

use crate::report::{HostReport, Report};

/// Where each node is drawn and what reached it (not in the JSON report:
/// it grows with the node count and says nothing a reader compares).
#[derive(Clone, Debug, Default)]
pub struct MapData {
    /// Node positions (x east, y north, any unit), if the topology has them.
    pub positions: Vec<Option<(f64, f64)>>,
    /// Links as node index pairs.
    pub edges: Vec<(usize, usize)>,
    /// Per node: unicast messages meant for it, and those delivered.
    pub expected: Vec<u32>,
    /// See `expected`.
    pub delivered: Vec<u32>,
}

const W: f64 = 640.0;
const H: f64 = 260.0;
const PAD: f64 = 40.0;
/// A chart line: its name, its colour, its points.
type Series<'a> = (String, &'a str, Vec<(f64, f64)>);

const COLOURS: [&str; 4] = ["#d62728", "#ff7f0e", "#1f77b4", "#7f7f7f"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Column `k` of a timeline sampled every 10 s, as chart points (s, value).
fn every_10_s<const N: usize>(rows: &[[u64; N]], k: usize) -> Vec<(f64, f64)> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| (i as f64 * 10.0, r[k] as f64))
        .collect()
}

/// A line chart of `series` (name, colour, points) with axis labels.
fn line_chart(title: &str, x_label: &str, series: &[Series<'_>]) -> String {
    let mut svg = String::new();
    let all = series.iter().flat_map(|s| s.2.iter());
    let (mut x_max, mut y_max) = (1e-9f64, 1e-9f64);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let sx = |x: f64| PAD + x / x_max * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD - y / y_max * (H - 2.0 * PAD);
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#,
        esc(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#444"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="#444"/>"##,
        b = H - PAD,
        r = W - PAD
    );
    let _ = write!(
        svg,
        r#"<text x="{PAD}" y="{}" font-size="11">0</text><text x="{}" y="{}" font-size="11" text-anchor="end">{:.0} {}</text><text x="4" y="{}" font-size="11">{:.0}</text>"#,
        H - PAD + 14.0,
        W - PAD,
        H - PAD + 14.0,
        x_max,
        esc(x_label),
        PAD - 4.0,
        y_max
    );
    for (k, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/><text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            path.join(" "),
            W - PAD - 150.0,
            PAD + 14.0 * k as f64,
            esc(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The topology, each node coloured from red (nothing meant for it
/// arrived) to green (everything did); grey if no traffic was meant for it.
fn map_svg(map: &MapData) -> String {
    let placed: Vec<(f64, f64)> = map.positions.iter().flatten().copied().collect();
    if placed.is_empty() {
        return "<p>The topology has no node positions to draw.</p>".into();
    }
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in &placed {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let side = 600.0;
    let span = (x1 - x0).max(y1 - y0).max(1e-9);
    let at = |p: (f64, f64)| {
        (
            10.0 + (p.0 - x0) / span * side,
            10.0 + (y1 - p.1) / span * side,
        )
    };
    let mut svg = format!(
        r#"<figure><figcaption>Topology: each node coloured by the share of unicast messages meant for it that arrived</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{w}" viewBox="0 0 {w} {w}">"#,
        w = side + 20.0
    );
    for &(a, b) in &map.edges {
        if let (Some(Some(pa)), Some(Some(pb))) = (map.positions.get(a), map.positions.get(b)) {
            let ((xa, ya), (xb, yb)) = (at(*pa), at(*pb));
            let _ = write!(
                svg,
                r##"<line x1="{xa:.1}" y1="{ya:.1}" x2="{xb:.1}" y2="{yb:.1}" stroke="#ccc" stroke-width="0.5"/>"##
            );
        }
    }
    for (v, p) in map.positions.iter().enumerate() {
        let Some(p) = p else { continue };
        let (x, y) = at(*p);
        let expected = map.expected.get(v).copied().unwrap_or(0);
        let colour = if expected == 0 {
            "#999".to_string()
        } else {
            let ratio = f64::from(map.delivered.get(v).copied().unwrap_or(0)) / f64::from(expected);
            let red = ((1.0 - ratio) * 220.0) as u8;
            let green = (ratio * 170.0) as u8;
            format!("rgb({red},{green},40)")
        };
        let _ = write!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"><title>node {v}: {}/{expected}</title></circle>"#,
            map.delivered.get(v).copied().unwrap_or(0)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The whole page.
pub fn render(report: &Report, host: &HostReport, map: &MapData) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>lifeline sim: {name}</title><style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}figure{{margin:1em 0}}figcaption{{font-weight:bold}}.fail{{color:#b00}}.ok{{color:#070}}</style></head><body><h1>lifeline sim: {name}</h1><p>seed {seed}; {nodes} nodes, {edges} links, components {comps:?}</p>"#,
        name = esc(&report.scenario),
        seed = report.seed,
        nodes = report.nodes,
        edges = report.edges,
        comps = &report.components[..report.components.len().min(5)],
    );
    if report.failures.is_empty() {
        page.push_str(r#"<p class="ok">All assertions hold.</p>"#);
    } else {
        page.push_str(r#"<ul class="fail">"#);
        for f in &report.failures {
            let _ = write!(page, "<li>FAILED: {}</li>", esc(f));
        }
        page.push_str("</ul>");
    }
    page.push_str("<h2>Messages</h2><table><tr><th>class</th><th>sent</th><th>delivered</th><th>ratio</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>stretch p50</th><th>stretch p99</th><th>hops</th><th>shortest hops</th><th>tx/msg</th><th>flooding tx/msg</th></tr>");
    for c in &report.classes {
        let _ = write!(
            page,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.0}</td></tr>",
            c.class,
            if c.broadcast { " (broadcast)" } else { "" },
            c.sent,
            c.delivered,
            c.delivery_ratio,
            c.latency_ms[0],
            c.latency_ms[1],
            c.latency_ms[2],
            c.stretch[0],
            c.stretch[1],
            c.hops_mean,
            c.shortest_hops_mean,
            c.transmissions_per_message,
            c.flooding_transmissions_per_message
        );
    }
    let _ = write!(
        page,
        "</table><p>Control {:.1} B/s per node ({:.0} bytes per node in the warm-up to build routing tables of {:.0} routes); custody peak {} messages, {} evicted, {} expired; {} duplicates; {} envelopes failed to open.</p>",
        report.control_bytes_per_node_s,
        report.warmup_control_bytes_per_node,
        report.routes_per_node,
        report.custody_peak,
        report.custody_evictions,
        report.custody_expired,
        report.duplicates_delivered,
        report.open_failures
    );
    // Latency distribution: share of each class's messages per log bucket.
    let latency: Vec<Series<'_>> = report
        .classes
        .iter()
        .filter(|c| !c.broadcast && !c.latency_histogram_ms.is_empty())
        .map(|c| {
            let total: u64 = c.latency_histogram_ms.iter().map(|b| b.1).sum();
            let colour = COLOURS
                .get(crate::class_of(&c.class).map_or(3, |k| k as usize))
                .copied()
                .unwrap_or("#000");
            let points = c
                .latency_histogram_ms
                .iter()
                .enumerate()
                .map(|(i, b)| (i as f64, 100.0 * b.1 as f64 / total.max(1) as f64))
                .collect();
            (c.class.clone(), colour, points)
        })
        .collect();
    if !latency.is_empty() {
        page.push_str(&line_chart(
            "Latency distribution by class (% of messages per bucket; bucket k ends at 2^k ms)",
            "bucket",
            &latency,
        ));
    }
    page.push_str(&line_chart(
        "Delivery over time (unicast messages per 10 s after the warm-up)",
        "s",
        &[
            ("sent".into(), "#1f77b4", every_10_s(&report.timeline, 0)),
            (
                "delivered".into(),
                "#2ca02c",
                every_10_s(&report.timeline, 1),
            ),
        ],
    ));
    if let Some(chain) = &report.chain {
        let _ = write!(
            page,
            "<h2>Chain</h2><table><tr><th>authorities</th><th>period s</th><th>blocks sealed</th><th>head</th><th>lowest finalized</th><th>finality lag p50/p99/max (periods)</th><th>reorgs</th><th>finalized conflicts</th><th>equivocations sealed / nodes with proof</th><th>agreement after heal (periods)</th><th>registrations</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} / {:.2} / {:.2}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{} of {}</td></tr></table>",
            chain.authorities,
            chain.period_s,
            chain.blocks_sealed,
            chain.head_max,
            chain.finalized_min,
            chain.finality_lag_periods[0],
            chain.finality_lag_periods[1],
            chain.finality_lag_periods[2],
            chain.reorgs,
            chain.finalized_conflicts,
            chain.equivocations_sealed,
            chain.equivocation_detected_nodes,
            chain
                .heal_agreement_periods
                .map_or("-".to_string(), |p| format!("{p:.2}")),
            chain.txs_registered,
            chain.txs_submitted
        );
        let line = |k: usize| every_10_s(&chain.timeline, k);
        page.push_str(&line_chart(
            "Chain height over time (highest and lowest over nodes)",
            "s",
            &[
                ("head, highest".into(), "#1f77b4", line(0)),
                ("head, lowest".into(), "#aec7e8", line(1)),
                ("finalized, highest".into(), "#2ca02c", line(2)),
                ("finalized, lowest".into(), "#98df8a", line(3)),
            ],
        ));
    }
    page.push_str("<h2>Topology</h2>");
    page.push_str(&map_svg(map));
    let _ = write!(
        page,
        "<h2>Engine</h2><p>{} events, {} packets, {} bytes, {:.0} simulated s; {:.1} s wall ({:.0} events/s), peak memory {:.0} MiB (host figures vary from run to run).</p></body></html>",
        report.engine.events,
        report.engine.packets,
        report.engine.bytes,
        report.engine.simulated_s,
        host.wall_s,
        host.events_per_s,
        host.peak_memory_mib
    );
    page.push('\n');
    page
}
