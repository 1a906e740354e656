//! The report's statistics, ratios and table.

use super::machine::cpu_model;
use super::*;

#[test]
fn percentiles_use_the_nearest_rank() {
    let sorted: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
    assert!((percentile_ms(&sorted, 50.0) - 50.0).abs() < 1e-9);
    assert!((percentile_ms(&sorted, 99.0) - 99.0).abs() < 1e-9);
    assert!((percentile_ms(&[7000], 99.0) - 7.0).abs() < 1e-9);
    assert!(percentile_ms(&[], 50.0).abs() < 1e-9);
}

#[test]
fn the_median_run_is_the_middle_by_throughput() {
    let run = |rps: f64| {
        vec![Summary {
            requests: 0,
            errors: 0,
            rps,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            first_error: None,
            stopped: 0,
            cpu_us_per_request: None,
            server_cpu_us: None,
            store_cpu_us: None,
            client_cpu: None,
        }]
    };
    assert_eq!(median_run(&[run(30.0), run(10.0), run(20.0)]), 2);
    let (bare, layer) = ([run(100.0), run(50.0), run(200.0)], [run(90.0), run(100.0), run(160.0)]);
    assert_eq!(paired_ratio(&layer, &bare), Some(0.9));
    assert_eq!(paired_ratio(&[], &[]), None);
}

#[test]
fn the_layer_ratio_and_the_logout_delay_are_reported() {
    let summary = |rps: f64, p99_ms: f64| Summary { rps, p99_ms, ..Summary::of_samples(vec![1000], 0, None, rps) };
    let row = |label: &str, target, summary| Row {
        label: label.into(),
        connections: 32,
        target,
        summary,
        ratio: None,
        ceiling: None,
        ceiling_ratio: None,
    };
    let ctx = context();
    let layer = Target::Ratio { baseline: "rs-bare", min: 0.9 };
    let delay = Target::Delay { max_p99_ms: 1000.0 };
    let rows = [
        row("rs-bare", Target::None, summary(1000.0, 1.0)),
        row("rs-layer", layer, summary(950.0, 1.0)),
        row("logout-latency: 1 instance", delay, summary(0.0, 1200.0)),
    ];
    let out = markdown(&ctx, &rows);
    assert!(out.contains("rs-layer / rs-bare throughput: 0.950 (target ≥ 0.90: yes)"), "{out}");
    assert!(out.contains("| rs-layer | 32 | 1 | 950 |"), "{out}");
    assert!(out.contains("| logout-latency: 1 instance | 32 | 1 | — |"), "{out}");
    assert!(out.contains("p99 ≤ 1000 ms | **no** |"), "{out}");
    let mut paired = rows;
    paired[1].ratio = Some(0.5);
    paired[0].summary.cpu_us_per_request = Some(10.0);
    paired[1].summary.cpu_us_per_request = Some(12.5);
    let out = markdown(&ctx, &paired);
    assert!(out.contains("rs-layer / rs-bare throughput: 0.500, median of"), "{out}");
    assert!(out.contains("CPU per request: 0.800"), "{out}");
    assert!(out.contains("rs-bare 10.00 µs, rs-layer 12.50 µs"), "{out}");
    assert!(out.contains("≥ 0.90 × rs-bare req/s | **no** |"), "{out}");
    let alone = markdown(&ctx, &paired[1..2]);
    assert!(alone.contains("run rs-bare as well"), "{alone}");
    assert!(alone.contains("≥ 0.90 × rs-bare req/s | — |"), "{alone}");
}

fn context() -> Context {
    Context {
        machine: Machine { cores: 2, cpu_model: "test CPU".into(), kernel: "6.1".into() },
        duration: Duration::from_secs(3),
        warmup: Duration::from_secs(1),
        runs: 1,
        connections: 32,
        client_threads: 1,
        peak_rss_kib: None,
        poll_ms: 2,
        sqlite_full: false,
        trivial_body_bytes: Some(180),
        argon2: HashParams::default(),
        idle_sockets: None,
    }
}

#[test]
fn rows_show_their_ratio_to_their_ceiling_and_the_load_generator_cpu() {
    let summary = |rps: f64, client_cpu| Summary { client_cpu, ..Summary::of_samples(vec![1000], 0, None, rps) };
    let row = |label: &str, summary, ceiling: Option<(&'static str, f64)>, ratio| Row {
        label: label.into(),
        connections: 32,
        target: Target::None,
        summary,
        ratio: None,
        ceiling: ceiling.map(|(name, min)| Ceiling { name, min }),
        ceiling_ratio: ratio,
    };
    let rows = [
        row("me", summary(40_000.0, Some(0.30)), Some((CEILING_HTTP, 0.6)), Some(0.44)),
        row(CEILING_HTTP, summary(90_000.0, Some(0.48)), None, None),
        row("refresh", summary(8_000.0, Some(0.2)), Some((CEILING_SQLITE, 1.5)), Some(1.6)),
        row(CEILING_SQLITE, summary(5_000.0, None), None, None),
        row("login", summary(100.0, Some(0.01)), Some((CEILING_ARGON2, 0.95)), None),
    ];
    let out = markdown(&context(), &rows);
    assert!(out.contains("- machine: test CPU, 2 cores, Linux 6.1"), "{out}");
    assert!(out.contains("| 0.44 × ceiling-http (≥ 0.60: **no**) | 30 % |"), "{out}");
    assert!(out.contains("| 1.60 × ceiling-sqlite (≥ 1.50: yes) | 20 % |"), "{out}");
    assert!(out.contains("| — (no ceiling-argon2) | 1 % |"), "{out}");
    assert!(out.contains("| — | **48 %** |"), "{out}");
    assert!(out.contains("| — | — |\n"), "{out}");
    assert!(out.contains("**warning**: during `ceiling-http` the load generator used 48 %"), "{out}");
    assert!(!out.contains("during `me`"), "{out}");
    assert!(out.contains("180-byte `/api/auth/me` body"), "{out}");
    assert!(out.contains("synchronous=NORMAL) committing"), "{out}");
    assert!(!out.contains("`ceiling-argon2` (for"), "{out}");
}

#[test]
fn the_cpu_model_falls_back_to_the_vendor_numbers() {
    let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n";
    assert_eq!(cpu_model(info), "AMD EPYC (family 25 model 1)");
    let bare = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n";
    assert_eq!(cpu_model(bare), "GenuineIntel family 6 model 85");
    assert_eq!(cpu_model(""), "unknown CPU");
}

#[test]
fn the_gateway_lines_say_what_it_adds_and_what_idle_sockets_cost() {
    let summary = |p50_ms: f64, p99_ms: f64, cpu: Option<f64>| Summary {
        p50_ms,
        p99_ms,
        cpu_us_per_request: cpu,
        ..Summary::of_samples(vec![1000], 0, None, 1000.0)
    };
    let row = |label: &str, summary| Row {
        label: label.into(),
        connections: 32,
        target: Target::None,
        summary,
        ratio: None,
        ceiling: None,
        ceiling_ratio: None,
    };
    let rows = [
        row("upstream-direct", summary(0.2, 0.5, None)),
        row("nginx-proxy", summary(0.4, 0.9, Some(10.0))),
        row("gateway", summary(0.5, 1.7, Some(30.0))),
    ];
    let idle = crate::gateway::IdleSockets {
        wanted: 10_000,
        sockets: 5_000,
        sessions: 10,
        before_kib: 10_240,
        after_kib: 51_200,
    };
    let ctx = Context { idle_sockets: Some(idle), ..context() };
    let out = markdown(&ctx, &rows);
    assert!(out.contains("p50 +0.30 ms, p99 +1.20 ms (target p99 ≤ +1 ms: **no**)"), "{out}");
    assert!(out.contains("30.0 µs (target ≤ 25 µs: **no**); nginx's: nginx-proxy 10.0 µs"), "{out}");
    // 8.2 KiB per socket over 10 MiB: 90 MiB at 10 000, extrapolated from the 5 000 opened.
    assert!(out.contains("10000 idle proxied WebSockets of 10 sessions"), "{out}");
    assert!(out.contains("90.0 MiB resident (extrapolated: the open-file limit left room for 5000 sockets"), "{out}");
    assert!(out.contains("8.2 KiB per socket"), "{out}");
}
