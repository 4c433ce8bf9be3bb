//! Selection throughput and latency at 10,000 nodes, in process. Ignored by default
//! (timing, not correctness); run it with
//! `cargo test --release -p shoal-balancer --test bench -- --ignored --nocapture`.

use std::time::Duration;

use shoal_balancer::select_throughput;
use shoal_protocol::Strategy;

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture, in release"]
fn bench_select_10k_nodes() {
    for strategy in Strategy::ALL {
        let report = select_throughput(10_000, 200_000, strategy);
        println!("{report}");
        // The selection goal (100k/s), meaningful in release builds only.
        if !cfg!(debug_assertions) {
            assert!(report.per_sec >= 100_000.0, "{report}");
            assert!(report.p99 < Duration::from_millis(1), "{report}");
        }
    }
}

#[test]
fn bench_entry_point_reports_sane_figures() {
    let report = select_throughput(500, 2_000, Strategy::Weighted);
    assert_eq!((report.nodes, report.selections), (500, 2_000));
    assert!(report.per_sec > 0.0);
    assert!(report.p50 <= report.p99 && report.p99 <= report.max);
}
