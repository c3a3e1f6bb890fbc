//! Driver updates and the devices they are for, as text: driver update documents shaped like
//! Microsoft Update's (one `drv:WindowsDriverMetaData` per hardware id under
//! `ApplicabilityRules/Metadata`, no handler data), and the driver pass of a Windows 11 PC
//! (`SystemSpec`, `ComputerSpec`, `FeatureScoreMatchingKey`) as a real client sends it, with
//! the versions packed and the ranks Windows gives.
//!
//! The PC is a laptop of 2022 (Alder Lake): its ids have the shapes of real ones, inbox drivers
//! the dates and versions Windows 11 25H2 reports; vendor values are made up.

use std::fmt::Write as _;

use crate::soap::xsd::Guid;
use crate::soap::{escape, escape_text};

/// The WindowsDriver handler's namespace.
pub const DRIVER_NS: &str =
    "http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/WindowsDriver";
/// The Drivers classification of Microsoft Update.
pub const DRIVERS_CLASSIFICATION: &str = "ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0";

/// The driver installed on a device, as the client reports it.
#[derive(Debug, Clone)]
pub struct InstalledDriver {
    pub matching_id: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `a.b.c.d`.
    pub version: String,
    pub class: String,
    pub manufacturer: String,
    pub provider: String,
    /// Windows' rank `0xSSGGTHHH`; -1 for none (printers).
    pub rank: i64,
}

/// A device of the PC: hardware ids (most specific first), compatible ids, its driver.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: &'static str,
    pub hardware_ids: Vec<String>,
    pub compatible_ids: Vec<String>,
    pub installed: Option<InstalledDriver>,
}

/// A whole PC's driver pass.
#[derive(Debug, Clone)]
pub struct Pc {
    pub devices: Vec<Device>,
    /// Computer hardware ids, most specific first.
    pub computer: Vec<Guid>,
    pub feature_key: String,
}

/// `a.b.c.d` packed as clients send DriverVerVersion.
fn packed(version: &str) -> u64 {
    version
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0) & 0xffff)
        .fold(0, |v, p| v << 16 | p)
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn driver(
    matching_id: &str,
    date: &str,
    version: &str,
    class: &str,
    provider: &str,
    rank: i64,
) -> Option<InstalledDriver> {
    Some(InstalledDriver {
        matching_id: matching_id.to_owned(),
        date: date.to_owned(),
        version: version.to_owned(),
        class: class.to_owned(),
        manufacturer: provider.to_owned(),
        provider: provider.to_owned(),
        rank,
    })
}

/// The computer hardware ids of the laptop (CHIDs, most specific first).
pub const LAPTOP_COMPUTER_IDS: [&str; 4] = [
    "90fa9104-60a4-5842-9e03-41f17eb68d97",
    "26ae684a-addd-5d64-a310-acc5c40c5973",
    "8afba852-f42c-5a97-8cf4-c184da8e2d65",
    "f65d1791-a790-5de3-83d3-326f9012069f",
];

/// A Windows 11 laptop's devices as its driver pass lists them.
pub fn windows_11_laptop() -> Pc {
    let display = "{4d36e968-e325-11ce-bfc1-08002be10318}";
    let media = "{4d36e96c-e325-11ce-bfc1-08002be10318}";
    let net = "{4d36e972-e325-11ce-bfc1-08002be10318}";
    let system = "{4d36e97d-e325-11ce-bfc1-08002be10318}";
    let devices = vec![
        Device {
            name: "Intel Iris Xe Graphics",
            hardware_ids: ids(&[
                "PCI\\VEN_8086&DEV_46A8&SUBSYS_0B041028&REV_0C",
                "PCI\\VEN_8086&DEV_46A8&SUBSYS_0B041028",
                "PCI\\VEN_8086&DEV_46A8&CC_030000",
                "PCI\\VEN_8086&DEV_46A8&CC_0300",
            ]),
            compatible_ids: ids(&[
                "PCI\\VEN_8086&DEV_46A8&REV_0C",
                "PCI\\VEN_8086&DEV_46A8",
                "PCI\\VEN_8086&CC_030000",
                "PCI\\VEN_8086&CC_0300",
                "PCI\\VEN_8086",
                "PCI\\CC_030000",
                "PCI\\CC_0300",
            ]),
            installed: driver(
                "PCI\\VEN_8086&DEV_46A8",
                "2023-05-25",
                "31.0.101.4502",
                display,
                "Intel Corporation",
                0x00F6_2001,
            ),
        },
        Device {
            name: "Realtek High Definition Audio",
            hardware_ids: ids(&[
                "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0257&SUBSYS_10280B04&REV_1000",
                "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0257&SUBSYS_10280B04",
            ]),
            compatible_ids: ids(&[
                "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0257&REV_1000",
                "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0257",
                "HDAUDIO\\FUNC_01&VEN_10EC",
                "HDAUDIO\\FUNC_01",
            ]),
            installed: driver(
                "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0257&SUBSYS_10280B04",
                "2022-07-29",
                "6.0.9373.1",
                media,
                "Realtek Semiconductor Corp.",
                0x00FF_0001,
            ),
        },
        Device {
            name: "Intel Wi-Fi 6E AX211",
            hardware_ids: ids(&[
                "PCI\\VEN_8086&DEV_51F0&SUBSYS_00948086&REV_01",
                "PCI\\VEN_8086&DEV_51F0&SUBSYS_00948086",
                "PCI\\VEN_8086&DEV_51F0&CC_028000",
                "PCI\\VEN_8086&DEV_51F0&CC_0280",
            ]),
            compatible_ids: ids(&[
                "PCI\\VEN_8086&DEV_51F0&REV_01",
                "PCI\\VEN_8086&DEV_51F0",
                "PCI\\VEN_8086&CC_028000",
                "PCI\\VEN_8086&CC_0280",
                "PCI\\VEN_8086",
                "PCI\\CC_028000",
                "PCI\\CC_0280",
            ]),
            installed: driver(
                "PCI\\VEN_8086&DEV_51F0&SUBSYS_00948086",
                "2023-08-15",
                "22.250.1.2",
                net,
                "Intel",
                0x00FF_0001,
            ),
        },
        Device {
            name: "Intel Ethernet I219-LM",
            hardware_ids: ids(&[
                "PCI\\VEN_8086&DEV_1A1E&SUBSYS_0B041028&REV_01",
                "PCI\\VEN_8086&DEV_1A1E&SUBSYS_0B041028",
            ]),
            compatible_ids: ids(&[
                "PCI\\VEN_8086&DEV_1A1E&REV_01",
                "PCI\\VEN_8086&DEV_1A1E",
                "PCI\\VEN_8086&CC_020000",
                "PCI\\VEN_8086",
                "PCI\\CC_020000",
                "PCI\\CC_0200",
            ]),
            installed: driver(
                "PCI\\VEN_8086&DEV_1A1E&SUBSYS_0B041028",
                "2022-10-20",
                "12.19.2.45",
                net,
                "Intel",
                0x00FF_0001,
            ),
        },
        Device {
            name: "Intel Wireless Bluetooth",
            hardware_ids: ids(&["USB\\VID_8087&PID_0033&REV_0000", "USB\\VID_8087&PID_0033"]),
            compatible_ids: ids(&[
                "USB\\Class_E0&SubClass_01&Prot_01",
                "USB\\Class_E0&SubClass_01",
                "USB\\Class_E0",
            ]),
            installed: driver(
                "USB\\VID_8087&PID_0033",
                "2023-08-15",
                "22.250.0.2",
                "{e0cbf06c-cd8b-4647-bb8a-263b43f0f974}",
                "Intel Corporation",
                0x00FF_0001,
            ),
        },
        Device {
            name: "Integrated webcam (inbox UVC driver)",
            hardware_ids: ids(&[
                "USB\\VID_0BDA&PID_5634&REV_0001&MI_00",
                "USB\\VID_0BDA&PID_5634&MI_00",
            ]),
            compatible_ids: ids(&[
                "USB\\Class_0E&SubClass_03&Prot_00",
                "USB\\Class_0E&SubClass_03",
                "USB\\Class_0E",
            ]),
            installed: driver(
                "USB\\Class_0E",
                "2006-06-21",
                "10.0.26100.1",
                "{ca3e7ab9-b4c3-4ae6-8251-579ef933890f}",
                "Microsoft",
                0x00FF_2002,
            ),
        },
        Device {
            name: "Synaptics touchpad (inbox HID driver)",
            hardware_ids: ids(&["ACPI\\VEN_SYNA&DEV_2BA6", "ACPI\\SYNA2BA6", "*SYNA2BA6"]),
            compatible_ids: ids(&["ACPI\\PNP0C50", "*PNP0C50"]),
            installed: driver(
                "ACPI\\PNP0C50",
                "2006-06-21",
                "10.0.26100.1",
                "{745a17a0-74d3-11d0-b6fe-00a0c90f57da}",
                "Microsoft",
                0x00FF_2000,
            ),
        },
        Device {
            name: "Intel Management Engine Interface",
            hardware_ids: ids(&[
                "PCI\\VEN_8086&DEV_51E0&SUBSYS_0B041028&REV_01",
                "PCI\\VEN_8086&DEV_51E0&SUBSYS_0B041028",
            ]),
            compatible_ids: ids(&[
                "PCI\\VEN_8086&DEV_51E0&REV_01",
                "PCI\\VEN_8086&DEV_51E0",
                "PCI\\VEN_8086&CC_078000",
                "PCI\\VEN_8086",
            ]),
            installed: driver(
                "PCI\\VEN_8086&DEV_51E0",
                "2023-02-10",
                "2306.4.3.0",
                system,
                "Intel",
                0x00FF_2001,
            ),
        },
        Device {
            name: "Samsung NVMe controller (inbox stornvme)",
            hardware_ids: ids(&[
                "PCI\\VEN_144D&DEV_A80A&SUBSYS_A801144D&REV_00",
                "PCI\\VEN_144D&DEV_A80A&SUBSYS_A801144D",
            ]),
            compatible_ids: ids(&[
                "PCI\\VEN_144D&DEV_A80A&REV_00",
                "PCI\\VEN_144D&DEV_A80A",
                "PCI\\VEN_144D&CC_010802",
                "PCI\\VEN_144D",
                "PCI\\CC_010802",
                "PCI\\CC_0108",
            ]),
            installed: driver(
                "PCI\\CC_010802",
                "2006-06-21",
                "10.0.26100.1",
                "{4d36e97b-e325-11ce-bfc1-08002be10318}",
                "Microsoft",
                0x00FF_2005,
            ),
        },
        Device {
            name: "Goodix fingerprint reader (no driver)",
            hardware_ids: ids(&["USB\\VID_27C6&PID_63AC&REV_0100", "USB\\VID_27C6&PID_63AC"]),
            compatible_ids: ids(&[
                "USB\\Class_EF&SubClass_00&Prot_00",
                "USB\\Class_EF&SubClass_00",
                "USB\\Class_EF",
            ]),
            installed: None,
        },
        Device {
            name: "Computer",
            hardware_ids: LAPTOP_COMPUTER_IDS
                .iter()
                .map(|g| format!("COMPUTER\\{{{}}}", g.to_ascii_uppercase()))
                .collect(),
            compatible_ids: ids(&["COMPUTER\\Generic", "SWD\\GenericRaw", "SWD\\Generic"]),
            installed: driver(
                "COMPUTER\\Generic",
                "2006-06-21",
                "10.0.26100.1",
                "{4d36e966-e325-11ce-bfc1-08002be10318}",
                "Microsoft",
                0x0000_2000,
            ),
        },
        Device {
            name: "Microsoft Print to PDF (printer queue)",
            hardware_ids: ids(&["{084f01fa-e634-4d77-83ee-074817c03581}"]),
            compatible_ids: Vec::new(),
            installed: driver(
                "{084f01fa-e634-4d77-83ee-074817c03581}",
                "2006-06-21",
                "10.0.26100.4484",
                "Printer",
                "Microsoft",
                -1,
            ),
        },
    ];
    Pc {
        devices,
        computer: LAPTOP_COMPUTER_IDS
            .iter()
            .filter_map(|g| Guid::parse(g))
            .collect(),
        feature_key: "AMD64.10.0".into(),
    }
}

impl Pc {
    /// The driver pass's own parameters, as Windows writes them: SystemSpec, then (after
    /// SkipSoftwareSync and the others, which the caller writes) ComputerSpec and
    /// FeatureScoreMatchingKey; returned as (system spec, computer spec and key).
    pub fn parameters(&self) -> (String, String) {
        let mut spec = String::from("<SystemSpec>");
        let strings = |out: &mut String, name: &str, list: &[String]| {
            if list.is_empty() {
                return;
            }
            let _ = write!(out, "<{name}>");
            for s in list {
                let _ = write!(out, "<string>{}</string>", escape_text(s));
            }
            let _ = write!(out, "</{name}>");
        };
        for d in &self.devices {
            spec.push_str("<Device>");
            strings(&mut spec, "HardwareIDs", &d.hardware_ids);
            strings(&mut spec, "CompatibleIDs", &d.compatible_ids);
            spec.push_str("<installedDriver>");
            match &d.installed {
                Some(i) => {
                    let _ = write!(
                        spec,
                        "<MatchingID>{}</MatchingID><DriverVerDate>{}T00:00:00Z</DriverVerDate>\
                         <DriverVerVersion>{}</DriverVerVersion><Class>{}</Class>",
                        escape_text(&i.matching_id),
                        i.date,
                        packed(&i.version),
                        escape_text(&i.class)
                    );
                    if i.class == "Printer" {
                        let _ = write!(
                            spec,
                            "<Manufacturer>{}</Manufacturer><Provider>{}</Provider>",
                            escape_text(&i.manufacturer),
                            escape_text(&i.provider)
                        );
                    }
                    let _ = write!(
                        spec,
                        "<MatchingComputerHWID a:nil=\"true\" \
                         xmlns:a=\"http://www.w3.org/2001/XMLSchema-instance\"/>\
                         <DriverRank>{}</DriverRank>",
                        i.rank
                    );
                }
                None => spec.push_str(
                    "<DriverVerDate>0001-01-01T00:00:00Z</DriverVerDate>\
                     <DriverVerVersion>0</DriverVerVersion><MatchingComputerHWID a:nil=\"true\" \
                     xmlns:a=\"http://www.w3.org/2001/XMLSchema-instance\"/>\
                     <DriverRank>-1</DriverRank>",
                ),
            }
            spec.push_str("</installedDriver>");
            if d.installed.as_ref().is_some_and(|i| i.class == "Printer") {
                spec.push_str("<DeviceFlags>1</DeviceFlags>");
            }
            spec.push_str("</Device>");
        }
        spec.push_str("</SystemSpec>");
        let mut rest = String::from("<ComputerSpec><HardwareIDs>");
        for g in &self.computer {
            let _ = write!(rest, "<guid>{g}</guid>");
        }
        let _ = write!(
            rest,
            "</HardwareIDs></ComputerSpec><FeatureScoreMatchingKey>{}</FeatureScoreMatchingKey>",
            self.feature_key
        );
        (spec, rest)
    }
}

/// One `WindowsDriverMetaData` of a driver document.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub hardware_id: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `a.b.c.d`.
    pub version: String,
    pub class: String,
    pub manufacturer: String,
    pub provider: String,
    pub whql_id: u32,
    /// (OperatingSystem, score 0..=255).
    pub feature_scores: Vec<(String, u8)>,
    /// Computer hardware ids it is targeted to (INF and distribution alike).
    pub computers: Vec<Guid>,
    pub compatible_providers: Vec<String>,
}

impl Metadata {
    /// An untargeted driver for `hardware_id`.
    pub fn new(hardware_id: &str, date: &str, version: &str, provider: &str) -> Metadata {
        Metadata {
            hardware_id: hardware_id.to_owned(),
            date: date.to_owned(),
            version: version.to_owned(),
            class: "System".to_owned(),
            manufacturer: provider.to_owned(),
            provider: provider.to_owned(),
            whql_id: 40_000_000,
            feature_scores: Vec::new(),
            computers: Vec::new(),
            compatible_providers: Vec::new(),
        }
    }
}

/// A driver update's document: identity, Drivers-classification and product prerequisites,
/// the driver applicability rules with `metadata`, and one cab file (`file`: its SHA-1 in
/// base64, its size).
pub fn document(
    id: Guid,
    revision: u32,
    title: &str,
    prerequisites: &[Guid],
    metadata: &[Metadata],
    file: Option<(&str, u64)>,
) -> String {
    let mut d = format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\" \
         xmlns:drv=\"{DRIVER_NS}\"><upd:UpdateIdentity UpdateID=\"{id}\" \
         RevisionNumber=\"{revision}\" /><upd:Properties DefaultPropertiesLanguage=\"en\" \
         UpdateType=\"Driver\" ExplicitlyDeployable=\"true\" \
         PublicationState=\"Published\" CreationDate=\"2024-02-13T08:00:00.000Z\" \
         PublisherID=\"395392a0-19c0-48b7-a927-f7c15066d905\" MaxDownloadSize=\"{}\" \
         MinDownloadSize=\"0\"><upd:InstallationBehavior RebootBehavior=\"CanRequestReboot\" />\
         </upd:Properties><upd:LocalizedPropertiesCollection><upd:LocalizedProperties>\
         <upd:Language>en</upd:Language><upd:Title>{}</upd:Title></upd:LocalizedProperties>\
         </upd:LocalizedPropertiesCollection>",
        file.map_or(0, |f| f.1),
        escape_text(title)
    );
    if !prerequisites.is_empty() {
        d.push_str("<upd:Relationships><upd:Prerequisites>");
        for p in prerequisites {
            let _ = write!(
                d,
                "<upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{p}\" />\
                 </upd:AtLeastOne>"
            );
        }
        d.push_str("</upd:Prerequisites></upd:Relationships>");
    }
    d.push_str(
        "<upd:ApplicabilityRules><upd:IsInstalled><drv:WindowsDriverInstalled /></upd:IsInstalled>\
         <upd:IsSuperseded><drv:WindowsDriverSuperseded /></upd:IsSuperseded>\
         <upd:IsInstallable><drv:WindowsDriverInstallable /></upd:IsInstallable><upd:Metadata>",
    );
    for m in metadata {
        let _ = write!(
            d,
            "<drv:WindowsDriverMetaData HardwareID=\"{}\" WhqlDriverID=\"{}\" \
             Manufacturer=\"{}\" Company=\"{}\" Provider=\"{}\" DriverVerDate=\"{}\" \
             DriverVerVersion=\"{}\" Class=\"{}\" Model=\"{}\">",
            escape(&m.hardware_id),
            m.whql_id,
            escape(&m.manufacturer),
            escape(&m.provider),
            escape(&m.provider),
            m.date,
            m.version,
            escape(&m.class),
            escape(title)
        );
        for p in &m.compatible_providers {
            let _ = write!(
                d,
                "<drv:CompatibleProvider>{}</drv:CompatibleProvider>",
                escape_text(p)
            );
        }
        for (os, score) in &m.feature_scores {
            let _ = write!(
                d,
                "<drv:FeatureScore OperatingSystem=\"{os}\" FeatureScore=\"{score:02X}\" />"
            );
        }
        for c in &m.computers {
            let _ = write!(
                d,
                "<drv:TargetComputerHardwareId>{c}</drv:TargetComputerHardwareId>\
                 <drv:DistributionComputerHardwareId>{c}</drv:DistributionComputerHardwareId>"
            );
        }
        d.push_str("</drv:WindowsDriverMetaData>");
    }
    d.push_str("</upd:Metadata></upd:ApplicabilityRules>");
    if let Some((sha1, size)) = file {
        let _ = write!(
            d,
            "<upd:Files><upd:File Digest=\"{sha1}\" DigestAlgorithm=\"SHA1\" \
             FileName=\"{id}.cab\" Size=\"{size}\" Modified=\"2024-01-20T03:11:52.000Z\" />\
             </upd:Files>"
        );
    }
    d.push_str("</upd:Update>");
    d
}

/// A generated driver catalog: the documents to import, each driver as generated, the device
/// models they are for and the computer models (their hardware ids) some are targeted to.
#[derive(Debug, Default)]
pub struct DriverCatalog {
    pub documents: Vec<String>,
    pub drivers: Vec<GeneratedDriver>,
    pub models: Vec<DeviceModel>,
    /// Each computer model's hardware ids, most specific first.
    pub computers: Vec<Vec<Guid>>,
}

/// One generated driver update (one revision, one metadata).
#[derive(Debug, Clone)]
pub struct GeneratedDriver {
    pub update_id: Guid,
    pub model: usize,
    pub metadata: Metadata,
}

/// A kind of device: its ids as Windows enumerates them and its setup class.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    pub hardware_ids: Vec<String>,
    pub compatible_ids: Vec<String>,
    pub class: &'static str,
    pub vendor: &'static str,
}

/// PCI vendors, USB vendors and the HD Audio codec vendor of the generated models.
const PCI_VENDORS: [(&str, &str); 5] = [
    ("8086", "Intel Corporation"),
    ("10DE", "NVIDIA"),
    ("1002", "Advanced Micro Devices, Inc."),
    ("10EC", "Realtek Semiconductor Corp."),
    ("14E4", "Broadcom"),
];
const USB_VENDORS: [(&str, &str); 4] = [
    ("0BDA", "Realtek Semiconductor Corp."),
    ("8087", "Intel Corporation"),
    ("27C6", "Goodix"),
    ("046D", "Logitech"),
];
/// (class code, setup class GUID) of PCI devices.
const PCI_CLASSES: [(&str, &str); 4] = [
    ("030000", "{4d36e968-e325-11ce-bfc1-08002be10318}"),
    ("028000", "{4d36e972-e325-11ce-bfc1-08002be10318}"),
    ("020000", "{4d36e972-e325-11ce-bfc1-08002be10318}"),
    ("010802", "{4d36e97b-e325-11ce-bfc1-08002be10318}"),
];
/// Computer models in one fleet: a branch office buys a few lines of PCs.
pub const FLEET_MODELS: usize = 24;
/// Inbox drivers: dated as Windows dates them, versioned as 25H2's.
const INBOX_DATE: &str = "2006-06-21";
const INBOX_VERSION: &str = "10.0.26100.1";

fn hex4(rng: &mut super::random::SplitMix) -> String {
    format!("{:04X}", rng.next_u64() & 0xffff)
}

fn model(rng: &mut super::random::SplitMix) -> DeviceModel {
    match rng.next_u64() % 10 {
        0..=4 => {
            let (vendor, name) = PCI_VENDORS[(rng.next_u64() % 5) as usize];
            let (cc, class) = PCI_CLASSES[(rng.next_u64() % 4) as usize];
            let (dev, subsys) = (hex4(rng), format!("{}{}", hex4(rng), hex4(rng)));
            let rev = format!("{:02X}", rng.next_u64() & 0xff);
            let base = format!("PCI\\VEN_{vendor}&DEV_{dev}");
            DeviceModel {
                hardware_ids: vec![
                    format!("{base}&SUBSYS_{subsys}&REV_{rev}"),
                    format!("{base}&SUBSYS_{subsys}"),
                    format!("{base}&CC_{cc}"),
                    format!("{base}&CC_{}", &cc[..4]),
                ],
                compatible_ids: vec![
                    format!("{base}&REV_{rev}"),
                    base.clone(),
                    format!("PCI\\VEN_{vendor}&CC_{cc}"),
                    format!("PCI\\VEN_{vendor}"),
                    format!("PCI\\CC_{cc}"),
                ],
                class,
                vendor: name,
            }
        }
        5..=7 => {
            let (vid, name) = USB_VENDORS[(rng.next_u64() % 4) as usize];
            let pid = hex4(rng);
            let class = ["E0", "0E", "EF", "03"][(rng.next_u64() % 4) as usize];
            DeviceModel {
                hardware_ids: vec![
                    format!("USB\\VID_{vid}&PID_{pid}&REV_0100"),
                    format!("USB\\VID_{vid}&PID_{pid}"),
                ],
                compatible_ids: vec![
                    format!("USB\\Class_{class}&SubClass_01&Prot_01"),
                    format!("USB\\Class_{class}&SubClass_01"),
                    format!("USB\\Class_{class}"),
                ],
                class: "{88bae032-5a81-49f0-bc3d-a4ff138216d6}",
                vendor: name,
            }
        }
        _ => {
            let (dev, subsys) = (hex4(rng), format!("{}{}", hex4(rng), hex4(rng)));
            let base = format!("HDAUDIO\\FUNC_01&VEN_10EC&DEV_{dev}");
            DeviceModel {
                hardware_ids: vec![
                    format!("{base}&SUBSYS_{subsys}&REV_1000"),
                    format!("{base}&SUBSYS_{subsys}"),
                ],
                compatible_ids: vec![
                    format!("{base}&REV_1000"),
                    base,
                    "HDAUDIO\\FUNC_01&VEN_10EC".into(),
                    "HDAUDIO\\FUNC_01".into(),
                ],
                class: "{4d36e96c-e325-11ce-bfc1-08002be10318}",
                vendor: "Realtek Semiconductor Corp.",
            }
        }
    }
}

/// `YYYY-MM-DD`, `days` after 2018-01-01.
fn date_after_2018(days: u64) -> String {
    crate::soap::xsd::format_date(1_514_764_800 + days as i64 * 86_400)
}

/// `n` driver updates for about `n / 8` device models (several versions of each, on its
/// specific or its vendor-and-device id), some with feature scores, one in ten targeted to a
/// computer model. Deterministic for a seed.
pub fn generate_drivers(n: usize, seed: u64) -> DriverCatalog {
    let mut rng = super::random::SplitMix(seed ^ 0xd21e_0000);
    let mut c = DriverCatalog::default();
    let models = (n / 8).max(4);
    c.models = (0..models).map(|_| model(&mut rng)).collect();
    c.computers = (0..(n / 50).max(4))
        .map(|k| {
            (0..4)
                .map(|j| {
                    let mut r = super::random::SplitMix(seed ^ 0xc41d ^ (k as u64) << 8 ^ j);
                    let v = (u128::from(r.next_u64()) << 64) | u128::from(r.next_u64());
                    Guid((v & !(0xf << 76)) | (0x5 << 76))
                })
                .collect()
        })
        .collect();
    for i in 0..n {
        let m = i % models;
        let model = &c.models[m];
        // A USB device's compatible ids are its class's, which no vendor driver names.
        let hardware_id = match rng.next_u64() % 20 {
            12..=16 if !model.compatible_ids[1].starts_with("USB\\Class") => {
                &model.compatible_ids[1]
            }
            17..=19 => &model.hardware_ids[0],
            _ => &model.hardware_ids[1],
        };
        let days = rng.next_u64() % 2900;
        let version = format!(
            "{}.{}.{}.{}",
            10 + rng.next_u64() % 20,
            days / 365,
            days % 365,
            rng.next_u64() % 1000
        );
        let mut metadata =
            Metadata::new(hardware_id, &date_after_2018(days), &version, model.vendor);
        metadata.class = model.class.to_owned();
        metadata.whql_id = 40_000_000 + i as u32;
        match rng.next_u64() % 10 {
            0..=3 => metadata.feature_scores = vec![("AMD64.10.0".into(), 0xF6)],
            4 => {
                metadata.feature_scores =
                    vec![("AMD64.10.0".into(), 0xF5), ("ARM64.10.0".into(), 0)]
            }
            _ => {}
        }
        if rng.next_u64().is_multiple_of(10) {
            let computer = &c.computers[(rng.next_u64() as usize) % c.computers.len()];
            metadata.computers = vec![computer[(rng.next_u64() % 2) as usize]];
        }
        let update_id = {
            let mut r = super::random::SplitMix(seed ^ 0xd0c5_0000_0000 ^ i as u64);
            let v = (u128::from(r.next_u64()) << 64) | u128::from(r.next_u64());
            Guid((v & !(0xf << 76)) | (0x4 << 76))
        };
        let title = format!("{} - Driver - {version}", model.vendor);
        c.documents.push(document(
            update_id,
            100,
            &title,
            &[],
            std::slice::from_ref(&metadata),
            None,
        ));
        c.drivers.push(GeneratedDriver {
            update_id,
            model: m,
            metadata,
        });
    }
    c
}

impl DriverCatalog {
    /// The `n`th computer of a fleet, as an office's are alike: one of [`FLEET_MODELS`]
    /// computer models (some far more common than others), each with its own 10 to 17 of the
    /// catalog's device models, plus up to two peripherals from the twentieth of the models
    /// that is popular. Each device has an inbox driver (on its last compatible id), a vendor
    /// driver (on its specific id; one in six newer than anything generated) or none.
    pub fn pc(&self, n: u64) -> Pc {
        let mut rng = super::random::SplitMix(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x9c);
        let kinds = FLEET_MODELS.min(self.computers.len());
        // Skewed: the square of a uniform draw favours the first models.
        let draw = (rng.next_u64() % 1000) as usize;
        let kind = (draw * draw * kinds / 1_000_000).min(kinds - 1);
        let computer = self.computers[kind].clone();
        let mut picked: Vec<usize> = (0..self.models.len()).collect();
        let mut of_kind = super::random::SplitMix(0xc0de ^ kind as u64);
        of_kind.shuffle(&mut picked);
        picked.truncate(10 + (of_kind.next_u64() % 8) as usize);
        let popular = (self.models.len() / 20).max(1);
        for _ in 0..rng.next_u64() % 3 {
            let m = (rng.next_u64() as usize) % popular;
            if !picked.contains(&m) {
                picked.push(m);
            }
        }
        let devices = picked
            .into_iter()
            .map(|m| {
                let model = &self.models[m];
                let installed = match rng.next_u64() % 12 {
                    0..=1 => None,
                    2..=7 => {
                        let at = model.compatible_ids.len() - 1;
                        driver(
                            &model.compatible_ids[at],
                            INBOX_DATE,
                            INBOX_VERSION,
                            model.class,
                            "Microsoft",
                            0x00FF_2000 + at as i64,
                        )
                    }
                    8..=9 => driver(
                        &model.hardware_ids[1],
                        &date_after_2018(rng.next_u64() % 2900),
                        "20.1.2.3",
                        model.class,
                        model.vendor,
                        0x00FF_0001,
                    ),
                    _ => driver(
                        &model.hardware_ids[1],
                        "2027-01-01",
                        "99.0.0.0",
                        model.class,
                        model.vendor,
                        0x00F0_0001,
                    ),
                };
                Device {
                    name: "generated device",
                    hardware_ids: model.hardware_ids.clone(),
                    compatible_ids: model.compatible_ids.clone(),
                    installed,
                }
            })
            .collect();
        Pc {
            devices,
            computer,
            feature_key: "AMD64.10.0".into(),
        }
    }
}
