//! The reporting phase of the server-server protocol, upstream side (MS-WSUSSS §3.1.4.13–17):
//! what a node answers its downstream servers on the Reporting path when they roll up their
//! servers, computers and update states. GetRollupConfiguration, RollupDownstreamServers,
//! RollupComputers, GetOutOfSyncComputers, RollupComputerStatus. What they send is kept by
//! `report` in the tables this node's own computers are in.
//!
//! The protocol's rollup cookie is fixed (no authorization): these calls are gated like the
//! other server-server ones, by `downstream.token_file` or mutual TLS. Faults carry no
//! defined cause (§3.1.4.13): ours say which parameter was wrong.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::SERVER_SYNC_NS;
use crate::catalog::{CatalogError, Guid};
use crate::lock::lock;
use crate::report::{
    Activity, ClientSummary, Computer, OsGroup, RolledComputer, RolledServer, RolledStatus,
    ServerSummary, UpdateState,
};
use crate::soap::Element;
use crate::soap::wsus::Fault;
use crate::soap::xsd::{parse_bool, parse_datetime};
use crate::state::Journal;

/// The operations of the Reporting path that belong to this protocol.
pub const OPERATIONS: [&str; 5] = [
    "GetRollupConfiguration",
    "RollupDownstreamServers",
    "RollupComputers",
    "GetOutOfSyncComputers",
    "RollupComputerStatus",
];

/// Batch maxima, as WSUS gives them (MS-WSUSSS example 16): client summaries per
/// RollupDownstreamServers, computers per RollupComputers, computers per
/// GetOutOfSyncComputers, computers per RollupComputerStatus.
pub const MAX_CLIENT_SUMMARIES: usize = 5000;
pub const MAX_COMPUTERS: usize = 1500;
pub const MAX_OUT_OF_SYNC: usize = 20000;
pub const MAX_STATUS: usize = 500;
/// Update states per computer in one RollupComputerStatus (a bound on a hostile request).
const MAX_UPDATES_PER_COMPUTER: usize = 100_000;

/// Parse limits of a rollup call: a RollupComputerStatus of 500 computers with a few hundred
/// update states each is ~15 MB and ~600,000 elements.
pub const LIMITS: crate::soap::Limits = crate::soap::Limits {
    max_bytes: 32 << 20,
    max_depth: 32,
    max_elements: 2_000_000,
    packed: &[],
};

type Result<T> = std::result::Result<T, Fault>;

/// Answer one reporting call, `op` being one of [`OPERATIONS`]. Blocking (state.db).
pub fn answer(
    journal: &std::sync::Mutex<Journal>,
    server_id: Guid,
    op: &Element,
    now: i64,
) -> Result<String> {
    let mut journal = lock(journal);
    let store = |e: CatalogError| Fault::internal(e);
    match op.name.as_str() {
        "GetRollupConfiguration" => {
            let reset = journal.rollup_reset_guid().map_err(store)?;
            Ok(format!(
                "<GetRollupConfigurationResponse xmlns=\"{SERVER_SYNC_NS}\">\
                 <GetRollupConfigurationResult><DoDetailedRollup>true</DoDetailedRollup>\
                 <RollupResetGuid>{reset}</RollupResetGuid><ServerId>{server_id}</ServerId>\
                 <RollupDownstreamServersMaxBatchSize>{MAX_CLIENT_SUMMARIES}\
                 </RollupDownstreamServersMaxBatchSize>\
                 <RollupComputersMaxBatchSize>{MAX_COMPUTERS}</RollupComputersMaxBatchSize>\
                 <GetOutOfSyncComputersMaxBatchSize>{MAX_OUT_OF_SYNC}\
                 </GetOutOfSyncComputersMaxBatchSize>\
                 <RollupComputerStatusMaxBatchSize>{MAX_STATUS}</RollupComputerStatusMaxBatchSize>\
                 </GetRollupConfigurationResult></GetRollupConfigurationResponse>"
            ))
        }
        "RollupDownstreamServers" => {
            let mut servers = read_servers(op, now)?;
            // A server's parent is this one (the nil GUID), one below it, or one in this
            // request (parents and children may come in either order).
            let in_request: HashSet<Guid> = servers.iter().map(|s| s.id).collect();
            for s in &mut servers {
                if s.parent == Guid::NIL {
                    s.parent = server_id;
                }
                if s.parent != server_id
                    && !in_request.contains(&s.parent)
                    && !journal.knows_server(s.parent).map_err(store)?
                {
                    return Err(Fault::new(
                        crate::soap::wsus::ErrorCode::InternalServerError,
                        format!("ParentServerId {} is no server below this one", s.parent),
                    ));
                }
            }
            journal.roll_servers(&servers, now).map_err(store)?;
            Ok(format!(
                "<RollupDownstreamServersResponse xmlns=\"{SERVER_SYNC_NS}\"/>"
            ))
        }
        "RollupComputers" => {
            let computers = read_computers(op)?;
            for c in &computers {
                if !journal.knows_server(c.parent).map_err(store)? {
                    return Err(Fault::new(
                        crate::soap::wsus::ErrorCode::InternalServerError,
                        format!("ParentServerId {} is no server below this one", c.parent),
                    ));
                }
            }
            let need_details = journal.roll_computers(&computers, now).map_err(store)?;
            let mut out = format!(
                "<RollupComputersResponse xmlns=\"{SERVER_SYNC_NS}\"><RollupComputersResult>"
            );
            for id in need_details {
                let attr = crate::soap::escape(&id);
                let _ = write!(
                    out,
                    "<ChangedComputer ComputerId=\"{attr}\" Change=\"NewParent\"/>"
                );
            }
            out.push_str("</RollupComputersResult></RollupComputersResponse>");
            Ok(out)
        }
        "GetOutOfSyncComputers" => {
            let parent = guid(op, "parentServerId")?;
            let list = items(
                op,
                "lastRollupNumbers",
                "ComputerLastRollupNumber",
                MAX_OUT_OF_SYNC,
            )?;
            let numbers = list
                .iter()
                .map(|n| {
                    let id = n.child_text("ComputerId").filter(|i| !i.is_empty());
                    let number = n.child_text("RollupNumber").and_then(|r| r.parse().ok());
                    id.map(str::to_owned)
                        .zip(number)
                        .ok_or_else(|| Fault::invalid("lastRollupNumbers"))
                })
                .collect::<Result<Vec<_>>>()?;
            let behind = journal.out_of_sync(parent, &numbers).map_err(store)?;
            let mut out = format!(
                "<GetOutOfSyncComputersResponse xmlns=\"{SERVER_SYNC_NS}\">\
                 <GetOutOfSyncComputersResult>"
            );
            for id in behind {
                crate::soap::text_element(&mut out, "string", &id);
            }
            out.push_str("</GetOutOfSyncComputersResult></GetOutOfSyncComputersResponse>");
            Ok(out)
        }
        "RollupComputerStatus" => {
            guid(op, "parentServerId")?;
            let statuses = read_statuses(op)?;
            journal.roll_status(&statuses).map_err(store)?;
            Ok(format!(
                "<RollupComputerStatusResponse xmlns=\"{SERVER_SYNC_NS}\">\
                 <RollupComputerStatusResult>true</RollupComputerStatusResult>\
                 </RollupComputerStatusResponse>"
            ))
        }
        other => Err(Fault::invalid(format!(
            "{other} is not a reporting operation"
        ))),
    }
}

fn guid(op: &Element, name: &str) -> Result<Guid> {
    op.child_text(name)
        .and_then(Guid::parse)
        .ok_or_else(|| Fault::invalid(name))
}

/// The items of a required array, at most `max`.
fn items<'a>(op: &'a Element, list: &str, item: &'a str, max: usize) -> Result<Vec<&'a Element>> {
    let items: Vec<&Element> = op
        .child(list)
        .filter(|l| !l.is_nil())
        .ok_or_else(|| Fault::invalid(list))?
        .children_named(item)
        .collect();
    if items.len() > max {
        return Err(Fault::invalid(format!("{list}: more than {max}")));
    }
    Ok(items)
}

/// A dateTime; the protocol's "none" (0001-01-01) and anything before 1970 are None.
fn time(text: Option<&str>) -> Option<i64> {
    text.and_then(parse_datetime).filter(|t| *t > 0)
}

/// The servers of a RollupDownstreamServers, their LastRollupTime moved to this server's
/// clock by how far the sender's (clientTime) is off (MS-WSUSSS §3.1.4.14).
fn read_servers(op: &Element, now: i64) -> Result<Vec<RolledServer>> {
    let list = items(
        op,
        "downstreamServers",
        "DownstreamServerRollupInfo",
        MAX_CLIENT_SUMMARIES,
    )?;
    let summaries: usize = list
        .iter()
        .filter_map(|s| s.child("ClientSummaries"))
        .map(|c| {
            c.children_named("DownstreamServerRollupClientSummary")
                .count()
        })
        .sum();
    if summaries > MAX_CLIENT_SUMMARIES {
        return Err(Fault::invalid(
            "downstreamServers: too many client summaries",
        ));
    }
    let skew = time(op.child_text("clientTime")).map_or(0, |sent| now - sent);
    list.into_iter()
        .map(|s| {
            let counts = s.child("ServerSummary");
            let sent_at = time(s.child_text("LastRollupTime"));
            Ok(RolledServer {
                id: guid(s, "ServerId")?,
                name: s.child_text("FullDomainName").unwrap_or("").to_owned(),
                parent: guid(s, "ParentServerId")?,
                is_replica: s
                    .child_text("IsReplica")
                    .and_then(parse_bool)
                    .unwrap_or(false),
                version: s.child_text("Version").unwrap_or("").to_owned(),
                last_sync: time(s.child_text("LastSyncTime")),
                last_rollup: sent_at.map(|t| t + skew),
                sent_at: sent_at.unwrap_or(0),
                summary: ServerSummary::from_counts(|name| {
                    counts
                        .and_then(|m| m.child_text(name))
                        .and_then(|n| n.parse().ok())
                }),
                clients: s
                    .child("ClientSummaries")
                    .map(|c| {
                        c.children_named("DownstreamServerRollupClientSummary")
                            .map(read_client_summary)
                            .collect::<Result<_>>()
                    })
                    .transpose()?
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn read_client_summary(c: &Element) -> Result<ClientSummary> {
    let bad = |what: &str| Fault::invalid(format!("ClientSummaries: {what}"));
    let int = |name: &str| -> Result<i64> {
        c.child_text(name)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(name))
    };
    let mut version = [0; 5];
    for (slot, name) in version.iter_mut().zip([
        "OSMajorVersion",
        "OSMinorVersion",
        "OSBuildNumber",
        "OSServicePackMajorNumber",
        "OSServicePackMinorNumber",
    ]) {
        *slot = int(name)?;
    }
    let activity = c
        .child("ActivitySummaries")
        .map(|a| {
            a.children_named("DownstreamServerRollupClientActivitySummary")
                .map(|a| {
                    let count = |name: &str| {
                        a.child_text(name)
                            .and_then(|n| n.parse::<i64>().ok())
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| bad(name))
                    };
                    Ok(Activity {
                        update: a
                            .child_text("UpdateId")
                            .and_then(Guid::parse)
                            .ok_or_else(|| bad("UpdateId"))?,
                        revision: a
                            .child_text("RevisionNumber")
                            .and_then(|n| n.parse().ok())
                            .ok_or_else(|| bad("RevisionNumber"))?,
                        succeeded: count("InstallSuccessCount")?,
                        failed: count("InstallFailureCount")?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(ClientSummary {
        os: OsGroup {
            version,
            locale: c.child_text("OSLocale").unwrap_or("").to_owned(),
            processor: c
                .child_text("ProcessorArchitecture")
                .unwrap_or("")
                .to_owned(),
        },
        count: int("Count")?,
        activity,
    })
}

fn read_computers(op: &Element) -> Result<Vec<RolledComputer>> {
    items(op, "computers", "ComputerRollupInfo", MAX_COMPUTERS)?
        .into_iter()
        .map(|c| {
            let id = c
                .attr("ComputerId")
                .filter(|i| !i.is_empty() && i.len() <= 256)
                .ok_or_else(|| Fault::invalid("computers: ComputerId"))?;
            let parent = c
                .attr("ParentServerId")
                .and_then(Guid::parse)
                .ok_or_else(|| Fault::invalid("computers: ParentServerId"))?;
            let details = c.child("Details").map(|d| {
                let a = |name: &str| d.attr(name).unwrap_or("").to_owned();
                Computer {
                    client_id: id.to_owned(),
                    dns_name: a("FullDomainName"),
                    os_version: format!(
                        "{}.{}.{}.{}",
                        a("OSMajorVersion"),
                        a("OSMinorVersion"),
                        a("OSBuildNumber"),
                        a("OSServicePackMajorNumber")
                    ),
                    os_locale: a("OSLocale"),
                    manufacturer: a("ComputerMake"),
                    model: a("ComputerModel"),
                    processor: a("ProcessorArchitecture"),
                    client_version: a("ClientVersion"),
                    groups: d
                        .child("TargetGroupIdList")
                        .map(|l| {
                            l.children_named("guid")
                                .filter_map(|g| Guid::parse(g.text()))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            });
            Ok(RolledComputer {
                id: id.to_owned(),
                parent,
                last_sync: time(c.attr("LastSyncTime")),
                last_status: time(c.attr("LastReportedStatusTime")),
                details,
            })
        })
        .collect()
}

fn read_statuses(op: &Element) -> Result<Vec<RolledStatus>> {
    items(op, "computers", "ComputerStatusRollupInfo", MAX_STATUS)?
        .into_iter()
        .map(|c| {
            let bad = || Fault::invalid("computers");
            let updates: Vec<&Element> = c
                .child("UpdateStatus")
                .map(|u| {
                    u.children_named("ComputerStatusRollupUpdateStatus")
                        .collect()
                })
                .unwrap_or_default();
            if updates.len() > MAX_UPDATES_PER_COMPUTER {
                return Err(bad());
            }
            Ok(RolledStatus {
                id: c
                    .child_text("ComputerId")
                    .filter(|i| !i.is_empty())
                    .ok_or_else(bad)?
                    .to_owned(),
                rollup_number: c
                    .child_text("RollupNumber")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?,
                full: c
                    .child_text("IsFullRollup")
                    .and_then(parse_bool)
                    .ok_or_else(bad)?,
                detection: time(c.child_text("EffectiveLastDetectionTime")),
                updates: updates
                    .into_iter()
                    .map(|u| {
                        let id = u.child_text("UpdateId").and_then(Guid::parse);
                        let state = u
                            .child_text("SummarizationState")
                            .and_then(|s| s.parse().ok())
                            .and_then(UpdateState::from_code);
                        let changed = time(u.child_text("LastChangeTime")).unwrap_or(0);
                        id.zip(state).map(|(i, s)| (i, s, changed)).ok_or_else(bad)
                    })
                    .collect::<Result<_>>()?,
            })
        })
        .collect()
}
