//! Driver updates (MS-WUSP §3.1.1's driver tables, §3.1.5.7's driver matching): the metadata a
//! driver update's document carries (one `WindowsDriverMetaData` per hardware id it installs
//! on), a computer's devices as the driver pass of SyncUpdates sends them (`SystemSpec`), and
//! which driver is the best for each device.
//!
//! Better, in this order (§3.1.5.7): targeted to a computer hardware id listed earlier in the
//! computer's `ComputerSpec` (untargeted last); a lower feature score for the client's
//! `FeatureScoreMatchingKey` (none: 255); matching a device id listed earlier in the device's
//! HardwareIDs then CompatibleIDs; a newer DriverVerDate; a higher DriverVerVersion. A driver is
//! sent for a device only when it is better than the one installed, and, for a printer, only
//! from the installed driver's manufacturer and provider (or a provider it names compatible).
//! Ties beyond the version go to the higher WhqlDriverID, then the higher revision.
//!
//! Sans-IO. May call: `soap` (the XML tree), `soap::xsd`.

use std::cmp::Reverse;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{CatalogError, Guid};
use crate::soap::Element;
use crate::soap::xsd::parse_datetime;

/// The most devices one SystemSpec may list, and ids one device may: a real PC lists 70–80
/// devices with up to a dozen ids each.
pub const MAX_DEVICES: usize = 4096;
pub const MAX_IDS_PER_DEVICE: usize = 256;

/// A feature score no driver beats: what a driver without one for the client's key has.
const NO_FEATURE_SCORE: u8 = 255;

/// One `WindowsDriverMetaData` of a driver update: the driver as it installs on one hardware id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverMeta {
    pub hardware_id: String,
    #[serde(default)]
    pub whql_id: u32,
    /// DriverVerDate, days since 1970-01-01.
    pub date: i64,
    /// DriverVerVersion `a.b.c.d` packed as `a<<48 | b<<32 | c<<16 | d`, as clients send it.
    pub version: u64,
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub manufacturer: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compatible_providers: Vec<String>,
    /// (OperatingSystem lower case, e.g. "amd64.10.0"; score, lower is better).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_scores: Vec<(String, u8)>,
    /// The computer hardware ids it is meant for: those both INF-targeted and
    /// distribution-targeted when it names both, else whichever it names; empty: any computer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub computers: Vec<Guid>,
}

impl DriverMeta {
    fn feature_score(&self, key: &str) -> u8 {
        self.feature_scores
            .iter()
            .find(|(os, _)| os.eq_ignore_ascii_case(key))
            .map_or(NO_FEATURE_SCORE, |(_, s)| *s)
    }

    pub fn is_printer(&self) -> bool {
        is_printer_class(&self.class)
    }
}

/// "Printer" is the setup class clients report; "Printers" the classification's name.
fn is_printer_class(class: &str) -> bool {
    class.eq_ignore_ascii_case("printer") || class.eq_ignore_ascii_case("printers")
}

/// `a.b.c.d`, each part 0..=65535, packed as clients send DriverVerVersion.
pub fn pack_version(text: &str) -> Option<u64> {
    let mut packed = 0u64;
    let mut parts = 0;
    for part in text.trim().split('.') {
        let n: u16 = part.parse().ok()?;
        packed = packed << 16 | u64::from(n);
        parts += 1;
    }
    (parts == 4).then_some(packed)
}

/// `a.b.c.d` of a packed version.
pub fn format_version(v: u64) -> String {
    format!(
        "{}.{}.{}.{}",
        v >> 48,
        (v >> 32) & 0xffff,
        (v >> 16) & 0xffff,
        v & 0xffff
    )
}

/// The `WindowsDriverMetaData` of an update document's `ApplicabilityRules/Metadata`.
pub fn read_metadata(rules: &Element) -> Result<Vec<DriverMeta>, CatalogError> {
    let Some(metadata) = rules.child("Metadata") else {
        return Ok(Vec::new());
    };
    metadata
        .children_named("WindowsDriverMetaData")
        .map(|m| {
            let bad = |what: &str| CatalogError::Document(format!("WindowsDriverMetaData: {what}"));
            let text = |name: &str| m.attr(name).unwrap_or("").trim().to_owned();
            let hardware_id = text("HardwareID");
            if hardware_id.is_empty() {
                return Err(bad("no HardwareID"));
            }
            let date = m
                .attr("DriverVerDate")
                .and_then(parse_datetime)
                .ok_or_else(|| bad(&format!("{hardware_id}: DriverVerDate is not a date")))?
                .div_euclid(86_400);
            let version = m
                .attr("DriverVerVersion")
                .and_then(pack_version)
                .ok_or_else(|| bad(&format!("{hardware_id}: DriverVerVersion is not a.b.c.d")))?;
            let feature_scores = m
                .children_named("FeatureScore")
                .map(|f| {
                    let os = f.attr("OperatingSystem").unwrap_or("").trim();
                    let score = f.attr("FeatureScore").unwrap_or("").trim();
                    let score = score
                        .strip_prefix("0x")
                        .or_else(|| score.strip_prefix("0X"))
                        .unwrap_or(score);
                    u8::from_str_radix(score, 16)
                        .ok()
                        .filter(|_| !os.is_empty())
                        .map(|s| (os.to_ascii_lowercase(), s))
                        .ok_or_else(|| bad(&format!("{hardware_id}: a FeatureScore")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let guids = |name: &str| {
                m.children_named(name)
                    .map(|g| Guid::parse(g.text()))
                    .collect::<Option<Vec<Guid>>>()
                    .ok_or_else(|| bad(&format!("{hardware_id}: a {name} is not a GUID")))
            };
            let target = guids("TargetComputerHardwareId")?;
            let distribution = guids("DistributionComputerHardwareId")?;
            let computers = match (target.is_empty(), distribution.is_empty()) {
                (false, false) => target
                    .into_iter()
                    .filter(|g| distribution.contains(g))
                    .collect(),
                (false, true) => target,
                _ => distribution,
            };
            Ok(DriverMeta {
                whql_id: text("WhqlDriverID").parse().unwrap_or(0),
                date,
                version,
                class: text("Class"),
                manufacturer: text("Manufacturer"),
                provider: text("Provider"),
                model: text("Model"),
                compatible_providers: m
                    .children_named("CompatibleProvider")
                    .map(|p| p.text().trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect(),
                feature_scores,
                computers,
                hardware_id,
            })
        })
        .collect()
}

/// The driver installed on a device, as the client describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// The device id (hardware or compatible) it was installed for, lower case.
    pub matching_id: String,
    pub date: i64,
    pub version: u64,
    pub class: String,
    pub manufacturer: String,
    pub provider: String,
    pub computer: Option<Guid>,
    /// Windows' PnP rank `0xSSGGTHHH` (GG: its feature score); negative: none.
    pub rank: i64,
}

/// One device of a SystemSpec. Ids are kept lower case: matching ignores case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub hardware_ids: Vec<String>,
    pub compatible_ids: Vec<String>,
    pub installed: Option<Installed>,
}

impl Device {
    /// Where `id` (lower case) stands in HardwareIDs then CompatibleIDs.
    fn position(&self, id: &str) -> Option<u32> {
        self.hardware_ids
            .iter()
            .chain(&self.compatible_ids)
            .position(|d| d == id)
            .map(|p| p as u32)
    }
}

/// What the driver pass tells of a computer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemSpec {
    pub devices: Vec<Device>,
    /// ComputerSpec's hardware ids, most specific first.
    pub computer: Vec<Guid>,
    /// FeatureScoreMatchingKey ("AMD64.10.0"), lower case; empty when not sent.
    pub feature_key: String,
}

impl SystemSpec {
    /// Read SyncUpdates' `parameters` (SystemSpec, ComputerSpec, FeatureScoreMatchingKey) by
    /// local name, ignoring what is not known (Windows sends more than the WSDL says). `None`
    /// when there is no SystemSpec; Err names the parameter that is not acceptable.
    pub fn read(parameters: &Element) -> Result<Option<SystemSpec>, String> {
        let Some(spec) = parameters.child("SystemSpec").filter(|s| !s.is_nil()) else {
            return Ok(None);
        };
        let strings = |e: Option<&Element>| -> Vec<String> {
            e.filter(|l| !l.is_nil())
                .map(|l| {
                    l.children_named("string")
                        .map(|s| s.text().trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut devices = Vec::new();
        for d in spec.children_named("Device") {
            if devices.len() == MAX_DEVICES {
                return Err("parameters.SystemSpec".into());
            }
            let hardware_ids = strings(d.child("HardwareIDs"));
            let compatible_ids = strings(d.child("CompatibleIDs"));
            if hardware_ids.len() + compatible_ids.len() > MAX_IDS_PER_DEVICE {
                return Err("parameters.SystemSpec.Device".into());
            }
            let installed = match d.child("installedDriver").filter(|i| !i.is_nil()) {
                None => None,
                Some(i) => {
                    let bad =
                        |what: &str| format!("parameters.SystemSpec.Device.installedDriver.{what}");
                    let text = |name: &str| i.child_text(name).unwrap_or("").trim().to_owned();
                    let matching_id = text("MatchingID").to_ascii_lowercase();
                    let date = parse_datetime(&text("DriverVerDate"))
                        .ok_or_else(|| bad("DriverVerDate"))?
                        .div_euclid(86_400);
                    let version = text("DriverVerVersion")
                        .parse::<i64>()
                        .map_err(|_| bad("DriverVerVersion"))?;
                    let rank = match text("DriverRank") {
                        r if r.is_empty() => -1,
                        r => r.parse::<i64>().map_err(|_| bad("DriverRank"))?,
                    };
                    let computer = i
                        .child("MatchingComputerHWID")
                        .filter(|c| !c.is_nil() && !c.text().trim().is_empty())
                        .map(|c| Guid::parse(c.text()).ok_or_else(|| bad("MatchingComputerHWID")))
                        .transpose()?;
                    // A device without a driver says so with no MatchingID (and rank -1).
                    (!matching_id.is_empty()).then(|| Installed {
                        matching_id,
                        date,
                        version: version as u64,
                        class: text("Class"),
                        manufacturer: text("Manufacturer"),
                        provider: text("Provider"),
                        computer,
                        rank,
                    })
                }
            };
            devices.push(Device {
                hardware_ids,
                compatible_ids,
                installed,
            });
        }
        let computer = parameters
            .child("ComputerSpec")
            .and_then(|c| c.child("HardwareIDs"))
            .filter(|l| !l.is_nil())
            .map(|l| {
                l.children_named("guid")
                    .map(|g| Guid::parse(g.text()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| "parameters.ComputerSpec".to_owned())
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Some(SystemSpec {
            devices,
            computer,
            feature_key: parameters
                .child_text("FeatureScoreMatchingKey")
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase(),
        }))
    }

    fn computer_position(&self, id: Guid) -> Option<u32> {
        self.computer
            .iter()
            .position(|c| *c == id)
            .map(|p| p as u32)
    }
}

/// How good a driver is for a device; lower is better (§3.1.5.7's rules in their order).
type Rank = (u32, u8, u32, Reverse<i64>, Reverse<u64>);
/// A candidate's [`Rank`], then the tie-breaks: the higher WhqlDriverID, the higher revision.
type Choice = (Rank, Reverse<u32>, Reverse<u32>);

/// Driver metadata by lower-case hardware id: (revision id, index in its `drivers`).
#[derive(Debug, Clone, Default)]
pub struct DriverIndex(HashMap<String, Vec<(u32, u16)>>);

impl DriverIndex {
    pub fn new<'a>(revisions: impl Iterator<Item = (u32, &'a [DriverMeta])>) -> DriverIndex {
        let mut index: HashMap<String, Vec<(u32, u16)>> = HashMap::new();
        for (revision, drivers) in revisions {
            for (i, m) in drivers.iter().enumerate().take(usize::from(u16::MAX)) {
                index
                    .entry(m.hardware_id.to_ascii_lowercase())
                    .or_default()
                    .push((revision, i as u16));
            }
        }
        DriverIndex(index)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The metadata for a hardware id (lower case).
    pub fn get(&self, id: &str) -> &[(u32, u16)] {
        self.0.get(id).map_or(&[], |v| &v[..])
    }
}

/// A driver chosen for a device: its revision and the hardware id it matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Best {
    pub revision: u32,
    pub hardware_id: String,
}

/// The best driver for each device of `spec` that beats what is installed there, among the
/// revisions `eligible` accepts (deployed to the computer, prerequisites met); `meta` gives a
/// revision's driver metadata and its revision number. One entry per device at most.
pub fn best_drivers<'a>(
    index: &DriverIndex,
    spec: &SystemSpec,
    meta: impl Fn(u32) -> Option<(&'a [DriverMeta], u32)>,
    eligible: impl Fn(u32) -> bool,
) -> Vec<Best> {
    let mut out = Vec::new();
    for device in &spec.devices {
        let installed = device.installed.as_ref();
        let printer = installed.filter(|i| is_printer_class(&i.class));
        let mut best: Option<(Choice, u32, &DriverMeta)> = None;
        for (pos, id) in device
            .hardware_ids
            .iter()
            .chain(&device.compatible_ids)
            .enumerate()
        {
            for &(revision, i) in index.get(id) {
                if !eligible(revision) {
                    continue;
                }
                let Some((drivers, number)) = meta(revision) else {
                    continue;
                };
                let Some(m) = drivers.get(usize::from(i)) else {
                    continue;
                };
                let computer = if m.computers.is_empty() {
                    u32::MAX
                } else {
                    // Targeted to computers this is not: not for it.
                    match m
                        .computers
                        .iter()
                        .filter_map(|c| spec.computer_position(*c))
                        .min()
                    {
                        Some(p) => p,
                        None => continue,
                    }
                };
                if let Some(p) = printer
                    && !(m.is_printer()
                        && m.manufacturer.eq_ignore_ascii_case(&p.manufacturer)
                        && (m.provider.eq_ignore_ascii_case(&p.provider)
                            || m.compatible_providers
                                .iter()
                                .any(|c| c.eq_ignore_ascii_case(&p.provider))))
                {
                    continue;
                }
                let rank: Rank = (
                    computer,
                    m.feature_score(&spec.feature_key),
                    pos as u32,
                    Reverse(m.date),
                    Reverse(m.version),
                );
                let key: Choice = (rank, Reverse(m.whql_id), Reverse(number));
                if best.as_ref().is_none_or(|(b, _, _)| key < *b) {
                    best = Some((key, revision, m));
                }
            }
        }
        let Some(((rank, _, _), revision, m)) = best else {
            continue;
        };
        if let Some(i) = installed {
            let score = if i.rank >= 0 {
                ((i.rank >> 16) & 0xff) as u8
            } else {
                NO_FEATURE_SCORE
            };
            let current: Rank = (
                i.computer
                    .and_then(|c| spec.computer_position(c))
                    .unwrap_or(u32::MAX),
                score,
                device.position(&i.matching_id).unwrap_or(u32::MAX),
                Reverse(i.date),
                Reverse(i.version),
            );
            if rank >= current {
                continue;
            }
        }
        out.push(Best {
            revision,
            hardware_id: m.hardware_id.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::drivers::{LAPTOP_COMPUTER_IDS, Metadata, document, windows_11_laptop};

    fn guid(n: u128) -> Guid {
        Guid(0x1000 + n)
    }

    /// Each driver update (one revision, number 100) by its position in `drivers`.
    fn catalog(drivers: &[Vec<Metadata>]) -> Vec<Vec<DriverMeta>> {
        drivers
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let doc = document(guid(i as u128), 100, "driver", &[], m, None);
                crate::catalog::update::parse(&doc).unwrap().drivers
            })
            .collect()
    }

    /// The laptop's driver pass against `drivers`: the chosen (driver, hardware id).
    fn chosen(drivers: &[Vec<Metadata>]) -> Vec<(usize, String)> {
        let metas = catalog(drivers);
        let index = DriverIndex::new(metas.iter().enumerate().map(|(i, m)| (i as u32, &m[..])));
        let pc = windows_11_laptop();
        let (spec, rest) = pc.parameters();
        let xml = format!(
            "<parameters>{spec}<SkipSoftwareSync>true</SkipSoftwareSync>{rest}</parameters>"
        );
        let parameters =
            crate::soap::parse_tree(xml.as_bytes(), &crate::soap::Limits::default()).unwrap();
        let spec = SystemSpec::read(&parameters).unwrap().unwrap();
        assert_eq!(spec.devices.len(), pc.devices.len());
        assert_eq!(spec.feature_key, "amd64.10.0");
        let mut out: Vec<(usize, String)> = best_drivers(
            &index,
            &spec,
            |r| metas.get(r as usize).map(|m| (&m[..], 100)),
            |_| true,
        )
        .into_iter()
        .map(|b| (b.revision as usize, b.hardware_id))
        .collect();
        out.sort();
        out
    }

    fn display(hardware_id: &str, date: &str, version: &str) -> Metadata {
        let mut m = Metadata::new(hardware_id, date, version, "Intel Corporation");
        m.class = "Display".into();
        m.feature_scores = vec![("AMD64.10.0".into(), 0xF6)];
        m
    }

    const GPU: &str = "PCI\\VEN_8086&DEV_46A8";
    const GPU_SUBSYS: &str = "PCI\\VEN_8086&DEV_46A8&SUBSYS_0B041028";

    #[test]
    fn versions_pack_as_clients_send_them() {
        assert_eq!(pack_version("10.0.26100.8036"), Some(2_814_751_477_604_196));
        assert_eq!(format_version(2_814_751_477_604_196), "10.0.26100.8036");
        assert_eq!(pack_version("1.2.3"), None);
        assert_eq!(pack_version("1.2.3.65536"), None);
    }

    /// A newer driver on the same id beats the installed one; an older one does not.
    #[test]
    fn newer_than_installed_is_sent_older_is_not() {
        let newer = display(GPU, "2024-01-12", "31.0.101.5186");
        assert_eq!(chosen(&[vec![newer]]), [(0, GPU.to_owned())]);
        let older = display(GPU, "2023-02-01", "31.0.101.4255");
        assert!(chosen(&[vec![older]]).is_empty());
        // The same date and version as installed: not better.
        let same = display(GPU, "2023-05-25", "31.0.101.4502");
        assert!(chosen(&[vec![same]]).is_empty());
    }

    /// Rule 1: a driver targeted to a computer hardware id of this PC beats an untargeted
    /// newer one, and one targeted to other computers is not for this PC at all.
    #[test]
    fn computer_targeted_drivers_come_first_and_only_for_their_computers() {
        let untargeted = display(GPU, "2024-01-12", "31.0.101.5186");
        let mut targeted = display(GPU_SUBSYS, "2023-11-01", "31.0.101.5000");
        targeted.computers = vec![Guid::parse(LAPTOP_COMPUTER_IDS[1]).unwrap()];
        assert_eq!(
            chosen(&[vec![untargeted.clone()], vec![targeted.clone()]]),
            [(1, GPU_SUBSYS.to_owned())]
        );
        let mut elsewhere = targeted;
        elsewhere.computers = vec![guid(99)];
        assert_eq!(
            chosen(&[vec![untargeted], vec![elsewhere.clone()]]),
            [(0, GPU.to_owned())]
        );
        assert!(chosen(&[vec![elsewhere]]).is_empty());
    }

    /// Rule 2: the lower feature score for the client's key wins; a score for another key
    /// counts for nothing.
    #[test]
    fn the_lower_feature_score_for_the_clients_key_wins() {
        let wifi = "PCI\\VEN_8086&DEV_51F0&SUBSYS_00948086";
        let mut a = Metadata::new(wifi, "2024-03-01", "23.30.0.6", "Intel");
        a.feature_scores = vec![("AMD64.10.0".into(), 0xF6), ("ARM64.10.0".into(), 0x00)];
        let mut b = a.clone();
        b.feature_scores = vec![("amd64.10.0".into(), 0xF5)];
        assert_eq!(chosen(&[vec![a.clone()], vec![b]]), [(1, wifi.to_owned())]);
        // Without a score for the key (255), an equal driver with one wins.
        let mut c = a.clone();
        c.feature_scores.clear();
        assert_eq!(chosen(&[vec![c], vec![a]]), [(1, wifi.to_owned())]);
    }

    /// Rule 3: a match on an id listed earlier wins over a newer driver on a later id; a
    /// vendor driver on a hardware id beats an inbox driver on a compatible id whatever the
    /// dates.
    #[test]
    fn an_earlier_device_id_wins_over_a_newer_date() {
        let audio_hw = "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0257&SUBSYS_10280B04";
        let audio_compat = "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0257";
        let on_hw = Metadata::new(audio_hw, "2023-09-01", "6.0.9585.1", "Realtek");
        let on_compat = Metadata::new(audio_compat, "2024-09-01", "6.0.9700.1", "Realtek");
        assert_eq!(
            chosen(&[vec![on_compat], vec![on_hw]]),
            [(1, audio_hw.to_owned())]
        );
        let touchpad = Metadata::new("ACPI\\SYNA2BA6", "2021-04-01", "19.5.35.1", "Synaptics");
        assert_eq!(
            chosen(&[vec![touchpad]]),
            [(0, "ACPI\\SYNA2BA6".to_owned())]
        );
    }

    /// Rules 4 and 5 and the tie: newer date, then higher version, then higher WhqlDriverID.
    #[test]
    fn then_date_then_version_then_whql_id() {
        let older = display(GPU, "2024-01-12", "31.0.101.5186");
        let newer = display(GPU, "2024-02-12", "31.0.101.5100");
        assert_eq!(
            chosen(&[vec![older.clone()], vec![newer]]),
            [(1, GPU.to_owned())]
        );
        let higher = display(GPU, "2024-01-12", "31.0.101.5187");
        assert_eq!(
            chosen(&[vec![higher], vec![older.clone()]]),
            [(0, GPU.to_owned())]
        );
        let mut later = older.clone();
        later.whql_id += 1;
        assert_eq!(chosen(&[vec![older], vec![later]]), [(1, GPU.to_owned())]);
    }

    /// A device without a driver takes any that matches; a printer takes only drivers of its
    /// installed driver's manufacturer and provider (or one naming it compatible); ids match
    /// whatever their case; one driver per device.
    #[test]
    fn empty_devices_printers_and_case() {
        let finger = Metadata::new(
            "usb\\vid_27c6&pid_63ac",
            "2022-01-01",
            "3.12.804.1",
            "Goodix",
        );
        let queue = "{084f01fa-e634-4d77-83ee-074817c03581}";
        let mut hp = Metadata::new(queue, "2024-01-01", "61.290.1.1", "HP");
        hp.class = "Printers".into();
        let mut compatible = hp.clone();
        compatible.manufacturer = "Microsoft".into();
        compatible.compatible_providers = vec!["microsoft".into()];
        assert_eq!(
            chosen(&[vec![finger.clone()], vec![hp.clone()]]),
            [(0, "usb\\vid_27c6&pid_63ac".to_owned())]
        );
        assert_eq!(
            chosen(&[vec![hp], vec![compatible]]),
            [(1, queue.to_owned())]
        );
        // Two metadata of one driver matching one device: it is chosen once, on the better id.
        let mut both = vec![finger.clone(), finger];
        both[1].hardware_id = "USB\\VID_27C6&PID_63AC&REV_0100".into();
        assert_eq!(
            chosen(&[both]),
            [(0, "USB\\VID_27C6&PID_63AC&REV_0100".to_owned())]
        );
    }

    #[test]
    fn bad_metadata_and_bad_specs_are_named() {
        let mut m = Metadata::new("PCI\\X", "2024-01-01", "1.2.3", "Contoso");
        let doc = document(guid(1), 100, "x", &[], std::slice::from_ref(&m), None);
        let e = crate::catalog::update::parse(&doc).unwrap_err().to_string();
        assert!(e.contains("DriverVerVersion"), "{e}");
        m.version = "1.2.3.4".into();
        m.date = "yesterday".into();
        let doc = document(guid(1), 100, "x", &[], &[m], None);
        let e = crate::catalog::update::parse(&doc).unwrap_err().to_string();
        assert!(e.contains("DriverVerDate"), "{e}");
        let read = |xml: &str| {
            let p =
                crate::soap::parse_tree(xml.as_bytes(), &crate::soap::Limits::default()).unwrap();
            SystemSpec::read(&p)
        };
        assert_eq!(
            read(
                "<parameters><SystemSpec xsi:nil=\"true\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"/></parameters>"
            ),
            Ok(None)
        );
        let e = read(
            "<parameters><SystemSpec><Device><installedDriver><MatchingID>x</MatchingID>\
             <DriverVerDate>no</DriverVerDate><DriverVerVersion>1</DriverVerVersion>\
             <DriverRank>1</DriverRank></installedDriver></Device></SystemSpec></parameters>",
        )
        .unwrap_err();
        assert!(e.ends_with("installedDriver.DriverVerDate"), "{e}");
        let e = read(
            "<parameters><SystemSpec/><ComputerSpec><HardwareIDs><guid>nope</guid>\
             </HardwareIDs></ComputerSpec></parameters>",
        )
        .unwrap_err();
        assert_eq!(e, "parameters.ComputerSpec");
    }
}
