//! `simulate`: a fleet of simulated Windows Update clients against a node, and how a fleet's
//! outcome is printed (the demo prints its own fleet the same way).
//! Calls `super` (`Exit`), the crate's `simulate::wua` and `metrics` (its own CPU time); no
//! sibling.

use std::time::Duration;

use crate::config::units::format_duration;
use crate::simulate;

use super::Exit;

/// Run `fleet`, print what happened; a failure when a scan, download or rescan failed. The
/// first scans are printed as soon as they end, before the rescans start: a script measuring
/// the node can tell the two apart by that line.
pub(super) async fn simulate(fleet: &simulate::wua::Fleet) -> Exit {
    let cpu_before = crate::metrics::own_cpu_seconds();
    let (mut outcome, caches) = simulate::wua::first_scans(fleet).await;
    print_first_scans(&outcome);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    if fleet.rescans > 0 {
        let rescans = simulate::wua::rescans(fleet, caches).await;
        print_rescans(&rescans);
        outcome.rescans = Some(rescans);
    }
    // What the load generator itself spent: a node is measured only while this stays below
    // the CPUs it was given.
    if let (Some(before), Some(after)) = (cpu_before, crate::metrics::own_cpu_seconds()) {
        let scans = outcome.scans + outcome.rescans.as_ref().map_or(0, |r| r.scans);
        let wall = outcome.elapsed
            + outcome
                .rescans
                .as_ref()
                .map_or(Duration::ZERO, |r| r.elapsed);
        println!(
            "simulator CPU       {:.2} s ({:.1} ms per scan, {:.2} CPUs busy)",
            after - before,
            (after - before) * 1e3 / scans.max(1) as f64,
            (after - before) / wall.as_secs_f64().max(1e-3)
        );
    }
    let rescans_failed = outcome
        .rescans
        .as_ref()
        .is_some_and(|r| !r.failures.is_empty());
    if outcome.failures.is_empty() && !rescans_failed {
        Exit::Ok
    } else {
        Exit::Failure
    }
}

pub(super) fn print_fleet(r: &simulate::wua::FleetReport) {
    print_first_scans(r);
    if let Some(re) = &r.rescans {
        print_rescans(re);
    }
}

fn print_first_scans(r: &simulate::wua::FleetReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-3);
    println!(
        "scans               {} in {} ({:.1} scans/s), {} SyncUpdates pages, {} failed",
        r.scans,
        format_duration(r.elapsed),
        r.scans as f64 / secs,
        r.pages,
        r.failures.len()
    );
    println!(
        "SOAP calls          {} (latency p50 {}, p99 {})",
        r.calls.len(),
        format_duration(r.percentile(50.0)),
        format_duration(r.percentile(99.0))
    );
    print_answer_bytes("SOAP answers", r.answer_bytes, r.scans);
    print_busy(r.busy);
    println!(
        "offered updates     {} ({:.1} per client)",
        r.offered,
        r.offered as f64 / r.scans.max(1) as f64
    );
    if r.drivers > 0 {
        println!(
            "drivers sent        {} ({:.1} per client)",
            r.drivers,
            r.drivers as f64 / r.scans.max(1) as f64
        );
    }
    if !r.downloads.is_empty() {
        let verified = r.downloads.iter().filter(|d| d.verified).count();
        println!(
            "downloads           {} ({verified} verified against their SHA-1)",
            r.downloads.len()
        );
    }
    if r.events > 0 {
        println!("events reported     {}", r.events);
    }
    for f in r.failures.iter().take(5) {
        println!("failed: {f}");
    }
}

fn print_rescans(re: &simulate::wua::RescanReport) {
    println!(
        "rescans             {} in {} ({:.1} scans/s), {} SyncUpdates pages, {} revisions \
         received, {} deployments changed, {} failed",
        re.scans,
        format_duration(re.elapsed),
        re.scans as f64 / re.elapsed.as_secs_f64().max(1e-3),
        re.pages,
        re.received,
        re.changed,
        re.failures.len()
    );
    println!(
        "rescan SOAP calls   {} (latency p50 {}, p99 {})",
        re.calls.len(),
        format_duration(simulate::wua::percentile(&re.calls, 50.0)),
        format_duration(simulate::wua::percentile(&re.calls, 99.0))
    );
    print_answer_bytes("rescan answers", re.answer_bytes, re.scans);
    print_busy(re.busy);
    for f in re.failures.iter().take(5) {
        println!("failed rescan: {f}");
    }
}

/// Calls the node answered ServerBusy, when there were any.
fn print_busy(busy: usize) {
    if busy > 0 {
        println!("ServerBusy answers  {busy} (each call made again a second later)");
    }
}

/// The bytes of SOAP answers on the wire, in all and per scan.
fn print_answer_bytes(what: &str, bytes: u64, scans: usize) {
    println!(
        "{what:<20}{:.2} MiB on the wire ({:.1} KiB per scan)",
        bytes as f64 / f64::from(1 << 20),
        bytes as f64 / 1024.0 / scans.max(1) as f64
    );
}
