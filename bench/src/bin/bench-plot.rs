//! `bench-plot` owns the report of the comparison scripts (`ci/bench-redis`,
//! `ci/bench-cluster`): it reads their results as CSV and writes one SVG of
//! grouped bars, Shoal against its peers, with three panels (requests/s, p50 and
//! p99 latency), one group per (test, pipeline) and one bar per server.
//!
//! Input, a header then one row per server, test and pipeline; a latency may be
//! `n/a` or empty (redis-benchmark before 7 prints none), and that bar is left out:
//!
//! ```text
//! server,test,pipeline,rps,p50_ms,p99_ms
//! shoal,SET,1,81234,0.311,0.687
//! ```
//!
//! Usage: `bench-plot --csv IN --svg OUT [--title T]`. Bad arguments or input
//! exit with 2 and a message naming the file and line; a failed write exits 1.
//! Layout (axes, ticks, labels) is the `plotters` crate's; this file only
//! decides what goes where.

use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::HashMap;
use std::process::ExitCode;

const HEADER: &str = "server,test,pipeline,rps,p50_ms,p99_ms";
const USAGE: &str = "usage: bench-plot --csv IN --svg OUT [--title T]";
const DEFAULT_TITLE: &str = "Shoal benchmark";
const WIDTH_PX: u32 = 1000;
const PANEL_HEIGHT_PX: u32 = 320;
const TITLE_HEIGHT_PX: u32 = 40;
const LEGEND_HEIGHT_PX: u32 = 30;
const FONT: &str = "sans-serif";
/// The x axis counts thousandths of a group: group g spans [g * SCALE, (g + 1) *
/// SCALE). Integer, because plotters formats ticks of integer ranges itself.
const GROUP_SCALE: i32 = 1000;
/// One color per server, in the order the servers first appear; Shoal, first in
/// both scripts, gets the blue.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Why the program stops: bad arguments or input (exit 2), or the SVG could not
/// be drawn or written (exit 1).
#[derive(Debug)]
enum Failure {
    Input(String),
    Output(String),
}

struct Args {
    csv: String,
    svg: String,
    title: String,
}

/// One CSV row: one server's result for one test at one pipeline depth.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    server: String,
    test: String,
    pipeline: u32,
    rps: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// What one panel plots.
#[derive(Debug, Clone, Copy)]
enum Metric {
    Rps,
    P50,
    P99,
}

impl Metric {
    fn of(self, row: &Row) -> Option<f64> {
        match self {
            Metric::Rps => Some(row.rps),
            Metric::P50 => row.p50_ms,
            Metric::P99 => row.p99_ms,
        }
    }

    fn caption(self) -> &'static str {
        match self {
            Metric::Rps => "Throughput (higher is better)",
            Metric::P50 => "p50 latency (lower is better)",
            Metric::P99 => "p99 latency (lower is better)",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::Rps => "requests/s",
            Metric::P50 | Metric::P99 => "ms",
        }
    }

    fn label(self, value: f64) -> String {
        match self {
            Metric::Rps => format_rps(value),
            Metric::P50 | Metric::P99 => format_ms(value),
        }
    }
}

/// The rows arranged for plotting: servers and (test, pipeline) groups in the
/// order they first appear in the file.
struct Table {
    servers: Vec<String>,
    groups: Vec<(String, u32)>,
    rows: HashMap<(usize, usize), Row>,
}

impl Table {
    fn new(rows: Vec<Row>) -> Table {
        let mut table = Table {
            servers: Vec::new(),
            groups: Vec::new(),
            rows: HashMap::new(),
        };
        for row in rows {
            let server = index_of(&mut table.servers, row.server.clone());
            let group = index_of(&mut table.groups, (row.test.clone(), row.pipeline));
            table.rows.insert((server, group), row);
        }
        table
    }

    fn value(&self, server: usize, group: usize, metric: Metric) -> Option<f64> {
        self.rows
            .get(&(server, group))
            .and_then(|row| metric.of(row))
    }

    fn max(&self, metric: Metric) -> Option<f64> {
        self.rows
            .values()
            .filter_map(|row| metric.of(row))
            .reduce(f64::max)
    }

    fn group_label(&self, group: usize) -> String {
        self.groups
            .get(group)
            .map(|(test, pipeline)| format!("{test} -P {pipeline}"))
            .unwrap_or_default()
    }
}

fn index_of<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(args.into_iter()) {
        Ok(path) => {
            println!("bench-plot: wrote {path}");
            ExitCode::SUCCESS
        }
        Err(Failure::Input(message)) => {
            eprintln!("bench-plot: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Output(message)) => {
            eprintln!("bench-plot: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(args: impl Iterator<Item = String>) -> Result<String, Failure> {
    let args = parse_args(args).map_err(|e| Failure::Input(format!("{e}\n{USAGE}")))?;
    let text = std::fs::read_to_string(&args.csv)
        .map_err(|e| Failure::Input(format!("cannot read {}: {e}", args.csv)))?;
    let rows = parse_csv(&text).map_err(|e| Failure::Input(format!("{}:{e}", args.csv)))?;
    let svg = render(&Table::new(rows), &args.title).map_err(Failure::Output)?;
    std::fs::write(&args.svg, svg)
        .map_err(|e| Failure::Output(format!("cannot write {}: {e}", args.svg)))?;
    Ok(args.svg)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut csv, mut svg, mut title) = (None, None, None);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--csv" => &mut csv,
            "--svg" => &mut svg,
            "--title" => &mut title,
            other => return Err(format!("unknown argument '{other}'")),
        };
        *slot = Some(args.next().ok_or_else(|| format!("{flag} needs a value"))?);
    }
    Ok(Args {
        csv: csv.ok_or("--csv IN is required")?,
        svg: svg.ok_or("--svg OUT is required")?,
        title: title.unwrap_or_else(|| DEFAULT_TITLE.to_string()),
    })
}

/// The rows of a results file; an error names the 1-based line. Blank lines are
/// skipped; the first other line must be the header.
fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    match lines.next() {
        Some((_, header)) if header.trim() == HEADER => {}
        Some((i, header)) => {
            return Err(format!(
                "{}: expected the header '{HEADER}', found '{header}'",
                i + 1
            ))
        }
        None => return Err(format!(" empty, expected the header '{HEADER}' and rows")),
    }
    let mut rows: Vec<Row> = Vec::new();
    for (i, line) in lines {
        let row = parse_row(line).map_err(|e| format!("{}: {e}", i + 1))?;
        if rows
            .iter()
            .any(|r| r.server == row.server && r.test == row.test && r.pipeline == row.pipeline)
        {
            return Err(format!(
                "{}: a second row for {} {} -P {}",
                i + 1,
                row.server,
                row.test,
                row.pipeline
            ));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(" no rows after the header".to_string());
    }
    Ok(rows)
}

fn parse_row(line: &str) -> Result<Row, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [server, test, pipeline, rps, p50, p99] = fields[..] else {
        return Err(format!(
            "expected 6 fields ({HEADER}), found {} in '{line}'",
            fields.len()
        ));
    };
    if server.is_empty() || test.is_empty() {
        return Err(format!("server and test must not be empty in '{line}'"));
    }
    let pipeline = match pipeline.parse::<u32>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("pipeline '{pipeline}' is not a positive integer")),
    };
    let rps = number("rps", rps)?.ok_or_else(|| format!("rps is required, found '{rps}'"))?;
    Ok(Row {
        server: server.to_string(),
        test: test.to_string(),
        pipeline,
        rps,
        p50_ms: number("p50_ms", p50)?,
        p99_ms: number("p99_ms", p99)?,
    })
}

/// A non-negative number, or None for `n/a` or an empty field.
fn number(name: &str, field: &str) -> Result<Option<f64>, String> {
    if field.is_empty() || field.eq_ignore_ascii_case("n/a") {
        return Ok(None);
    }
    match field.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
        _ => Err(format!("{name} '{field}' is not a non-negative number")),
    }
}

/// The SVG text of the whole report: title, legend, then one panel per metric.
fn render(table: &Table, title: &str) -> Result<String, String> {
    let height = TITLE_HEIGHT_PX + LEGEND_HEIGHT_PX + 3 * PANEL_HEIGHT_PX;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH_PX, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let root = root.titled(title, (FONT, 24)).map_err(draw_error)?;
        let (legend, panels) = root.split_vertically(LEGEND_HEIGHT_PX);
        draw_legend(&legend, &table.servers)?;
        let panels = panels.split_evenly((3, 1));
        for (panel, metric) in panels.iter().zip([Metric::Rps, Metric::P50, Metric::P99]) {
            draw_panel(panel, table, metric)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

fn draw_error(e: impl std::fmt::Display) -> String {
    format!("drawing the chart failed: {e}")
}

/// A row of colored squares and server names, centered.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    servers: &[String],
) -> Result<(), String> {
    let style = TextStyle::from((FONT, 15)).color(&BLACK);
    let entry_width = |name: &str| -> Result<i32, String> {
        let (w, _) = area.estimate_text_size(name, &style).map_err(draw_error)?;
        Ok(w as i32 + 40)
    };
    let widths = servers
        .iter()
        .map(|s| entry_width(s))
        .collect::<Result<Vec<_>, _>>()?;
    let (area_width, _) = area.dim_in_pixel();
    let mut x = (area_width as i32 - widths.iter().sum::<i32>()).max(0) / 2;
    for (i, (server, width)) in servers.iter().zip(widths).enumerate() {
        let square = Rectangle::new([(x, 8), (x + 14, 22)], color(i).filled());
        area.draw(&square).map_err(draw_error)?;
        area.draw(&Text::new(server.as_str(), (x + 20, 8), style.clone()))
            .map_err(draw_error)?;
        x += width;
    }
    Ok(())
}

fn color(server: usize) -> RGBColor {
    COLORS[server % COLORS.len()]
}

/// One metric's grouped bars, each labelled with its value.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    table: &Table,
    metric: Metric,
) -> Result<(), String> {
    let groups = table.groups.len();
    // Headroom above the tallest bar for its value label.
    let y_max = table.max(metric).filter(|m| *m > 0.0).unwrap_or(1.0) * 1.15;
    let ticks: Vec<i32> = (0..groups as i32)
        .map(|g| g * GROUP_SCALE + GROUP_SCALE / 2)
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(metric.caption(), (FONT, 18))
        .margin(8)
        .margin_right(20)
        .x_label_area_size(28)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0..groups as i32 * GROUP_SCALE).with_key_points(ticks),
            0.0..y_max,
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_style((FONT, 15))
        .x_label_formatter(&|x| table.group_label((x / GROUP_SCALE) as usize))
        .y_desc(metric.unit())
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|y| trim_zeros(&metric.label(*y)))
        .draw()
        .map_err(draw_error)?;
    let label_style = TextStyle::from((FONT, 12)).pos(Pos::new(HPos::Center, VPos::Bottom));
    for server in 0..table.servers.len() {
        let bars: Vec<(i32, i32, f64)> = (0..groups)
            .filter_map(|g| {
                table
                    .value(server, g, metric)
                    .map(|v| bar_span(g, server, table.servers.len(), v))
            })
            .collect();
        let fill = color(server).filled();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x0, x1, v)| Rectangle::new([(x0, 0.0), (x1, v)], fill)),
            )
            .map_err(draw_error)?;
        let labels = bars.iter().map(|&(x0, x1, v)| {
            Text::new(metric.label(v), ((x0 + x1) / 2, v), label_style.clone())
        });
        chart.draw_series(labels).map_err(draw_error)?;
    }
    Ok(())
}

/// Left and right x of server `server`'s bar (of `servers`) in group `group`, and
/// its height: the bars share the middle eight tenths of the group's span, each
/// with a twentieth of its share as a gap either side.
fn bar_span(group: usize, server: usize, servers: usize, value: f64) -> (i32, i32, f64) {
    let share = GROUP_SCALE * 8 / 10 / servers.max(1) as i32;
    let x0 = group as i32 * GROUP_SCALE + GROUP_SCALE / 10 + server as i32 * share;
    (x0 + share / 20, x0 + share - share / 20, value)
}

fn format_rps(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// An axis tick without trailing zeros: "3.500" is "3.5", "800.0k" is "800k".
fn trim_zeros(label: &str) -> String {
    let digits = label.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &label[digits.len()..];
    if !digits.contains('.') {
        return label.to_string();
    }
    format!(
        "{}{suffix}",
        digits.trim_end_matches('0').trim_end_matches('.')
    )
}

fn format_ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SERVERS: &str = "server,test,pipeline,rps,p50_ms,p99_ms\n\
        shoal,SET,1,81234,0.311,0.687\n\
        redis-aof-always,SET,1,40000.5,0.9,n/a\n\
        shoal,GET,16,950000,0.5,1.2\n\
        redis-aof-always,GET,16,1200000,,\n";

    #[test]
    fn parses_rows_and_missing_latencies() {
        let rows = parse_csv(TWO_SERVERS).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].server, "redis-aof-always");
        assert_eq!(rows[1].rps, 40000.5);
        assert_eq!(rows[1].p99_ms, None);
        assert_eq!(rows[2].pipeline, 16);
        assert_eq!(rows[3].p50_ms, None);
    }

    #[test]
    fn rejects_a_malformed_row_naming_its_line() {
        let text = "server,test,pipeline,rps,p50_ms,p99_ms\nshoal,SET,1,100,0.1,0.2\nshoal,GET,1\n";
        let err = parse_csv(text).unwrap_err();
        assert!(err.starts_with("3: expected 6 fields"), "{err}");
        let text = "server,test,pipeline,rps,p50_ms,p99_ms\n\nshoal,SET,1,fast,0.1,0.2\n";
        let err = parse_csv(text).unwrap_err();
        assert!(err.starts_with("3: rps 'fast'"), "{err}");
        let err = parse_csv("server,rps\n").unwrap_err();
        assert!(err.starts_with("1: expected the header"), "{err}");
        let dup = "server,test,pipeline,rps,p50_ms,p99_ms\na,SET,1,1,,\na,SET,1,2,,\n";
        assert!(parse_csv(dup).unwrap_err().starts_with("3: a second row"));
    }

    #[test]
    fn arguments_need_csv_and_svg() {
        let args = |list: &[&str]| parse_args(list.iter().map(|s| s.to_string()));
        assert!(args(&["--csv", "in.csv"]).is_err());
        assert!(args(&["--csv", "in.csv", "--svg"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        let parsed = args(&["--csv", "in.csv", "--svg", "out.svg", "--title", "T"]).unwrap();
        assert_eq!(
            (
                parsed.csv.as_str(),
                parsed.svg.as_str(),
                parsed.title.as_str()
            ),
            ("in.csv", "out.svg", "T")
        );
    }

    #[test]
    fn two_servers_yield_an_svg_naming_both() {
        let table = Table::new(parse_csv(TWO_SERVERS).unwrap());
        assert_eq!(table.servers, ["shoal", "redis-aof-always"]);
        assert_eq!(
            table.groups,
            [("SET".to_string(), 1), ("GET".to_string(), 16)]
        );
        let svg = render(&table, "Shoal vs Redis").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        for text in [
            "Shoal vs Redis",
            "shoal",
            "redis-aof-always",
            "SET -P 1",
            "GET -P 16",
            "81.2k",
            "1.20M",
        ] {
            assert!(svg.contains(text), "no '{text}' in the SVG");
        }
        // Four throughput bars, three p50 and two p99 bars: one rect each, in the
        // servers' colors.
        assert_eq!(
            svg.matches("fill=\"#1F77B4\"").count(),
            2 + 2 + 2 + 1,
            "shoal's bars and legend square"
        );
    }

    #[test]
    fn axis_ticks_drop_trailing_zeros() {
        let ticks = ["3.500", "800.0k", "1.20M", "0.000", "150", "12.5"].map(trim_zeros);
        assert_eq!(ticks, ["3.5", "800k", "1.2M", "0", "150", "12.5"]);
    }

    #[test]
    fn bars_stay_inside_their_group() {
        let (x0, x1, _) = bar_span(2, 0, 3, 1.0);
        let (y0, y1, _) = bar_span(2, 2, 3, 1.0);
        assert!(2 * GROUP_SCALE < x0 && x0 < x1 && x1 < y0 && y0 < y1 && y1 < 3 * GROUP_SCALE);
    }
}
