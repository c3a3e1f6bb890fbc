//! A synthetic catalog shaped like Microsoft's, for tests, the demo and load: a company, product
//! families and products, classifications, detectoids, and `n` software updates with
//! prerequisite chains, bundles, second revisions, supersedence, titles in several languages,
//! and payload files from a few KB to hundreds of MB (scaled to a byte budget).
//!
//! Deterministic for a seed. The documents are written as WSUS stores them, so everything
//! downstream (fragments, scope, sync) runs on the real format.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha1::{Digest as _, Sha1};

use super::random::SplitMix;
use crate::soap::xsd::{Guid, base64_encode};

const LANGUAGES: [(&str, &str); 4] = [
    ("en", "Update"),
    ("de", "Aktualisierung"),
    ("fr", "Mise à jour"),
    ("ja", "更新プログラム"),
];
const CLASSIFICATIONS: [&str; 5] = [
    "Security Updates",
    "Critical Updates",
    "Updates",
    "Definition Updates",
    "Feature Packs",
];
const DETECTOIDS: [(&str, &str); 3] = [
    ("x64-based systems", "<bar:Processor Architecture=\"9\" />"),
    ("x86-based systems", "<bar:Processor Architecture=\"0\" />"),
    (
        "Windows 10 or later",
        "<bar:WindowsVersion Comparison=\"GreaterThanOrEqualTo\" MajorVersion=\"10\" />",
    ),
];

/// What was generated: the documents to import, and the payload files written.
#[derive(Debug, Default)]
pub struct Generated {
    pub documents: Vec<String>,
    pub files: Vec<PathBuf>,
    pub payload_bytes: u64,
    /// Software updates (bundles included), categories, detectoids.
    pub software: usize,
    pub categories: usize,
    pub detectoids: usize,
    /// The update ids of every software update that can be approved (explicitly deployable).
    pub deployable: Vec<Guid>,
    /// Updates whose file is encrypted, as a feature update's are (one in twenty, all
    /// deployable), and the decryption key of each such file by its SHA-1. The payloads are
    /// random bytes like the others: the keys are random too, and decrypt nothing.
    pub encrypted: Vec<Guid>,
    pub keys: Vec<([u8; 20], Vec<u8>)>,
}

/// A deterministic GUID for the `n`th thing of `kind` under `seed`.
fn guid(seed: u64, kind: u64, n: u64) -> Guid {
    let mut rng = SplitMix(seed ^ (kind << 56) ^ n.wrapping_mul(0x9e37_79b9));
    let v = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    let v = (v & !(0xf << 76)) | (0x4 << 76);
    Guid((v & !(0x3 << 62)) | (0x2 << 62))
}

fn header() -> &'static str {
    "<upd:Update xmlns:pub=\"http://schemas.microsoft.com/msus/2002/12/Publishing\" \
     xmlns:bar=\"http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules\" \
     xmlns:lar=\"http://schemas.microsoft.com/msus/2002/12/LogicalApplicabilityRules\" \
     xmlns:cat=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category\" \
     xmlns:cmd=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/CommandLineInstallation\" \
     xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
     xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\">"
}

fn localized(out: &mut String, titles: &[(&str, String)], description: &str) {
    out.push_str("<upd:LocalizedPropertiesCollection>");
    for (lang, title) in titles {
        let _ = write!(
            out,
            "<upd:LocalizedProperties><upd:Language>{lang}</upd:Language><upd:Title>{}</upd:Title>",
            crate::soap::escape_text(title)
        );
        if *lang == "en" {
            let _ = write!(
                out,
                "<upd:Description>{}</upd:Description>",
                crate::soap::escape_text(description)
            );
        }
        out.push_str("</upd:LocalizedProperties>");
    }
    out.push_str("</upd:LocalizedPropertiesCollection>");
}

fn category(id: Guid, kind: &str, title: &str, parent: Option<Guid>) -> String {
    let mut d = String::from(header());
    let _ = write!(
        d,
        "<upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"100\" />\
         <upd:Properties DefaultPropertiesLanguage=\"en\" UpdateType=\"Category\" \
         ExplicitlyDeployable=\"false\" PerUser=\"false\" IsPublic=\"true\" \
         Handler=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category\" \
         PublicationState=\"Published\" CreationDate=\"2024-01-01T00:00:00.000Z\" \
         PublisherID=\"395392a0-19c0-48b7-a927-f7c15066d905\" />"
    );
    localized(
        &mut d,
        &[("en", title.to_owned())],
        &format!("{kind}: {title}"),
    );
    if let Some(parent) = parent {
        let _ = write!(
            d,
            "<upd:Relationships><upd:Prerequisites><upd:AtLeastOne IsCategory=\"true\">\
             <upd:UpdateIdentity UpdateID=\"{parent}\" /></upd:AtLeastOne></upd:Prerequisites>\
             </upd:Relationships>"
        );
    }
    let _ = write!(
        d,
        "<upd:ApplicabilityRules><upd:IsInstalled><lar:True /></upd:IsInstalled>\
         </upd:ApplicabilityRules><upd:HandlerSpecificData xsi:type=\"cat:Category\">\
         <cat:CategoryInformation CategoryType=\"{kind}\" /></upd:HandlerSpecificData></upd:Update>"
    );
    d
}

fn detectoid(id: Guid, title: &str, rule: &str) -> String {
    let mut d = String::from(header());
    let _ = write!(
        d,
        "<upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"100\" />\
         <upd:Properties DefaultPropertiesLanguage=\"en\" UpdateType=\"Detectoid\" \
         ExplicitlyDeployable=\"false\" IsPublic=\"false\" DetectoidType=\"Processor Architecture\" \
         PublicationState=\"Published\" CreationDate=\"2024-01-01T00:00:00.000Z\" \
         PublisherID=\"395392a0-19c0-48b7-a927-f7c15066d905\" />"
    );
    localized(&mut d, &[("en", title.to_owned())], title);
    let _ = write!(
        d,
        "<upd:ApplicabilityRules><upd:IsInstalled>{rule}</upd:IsInstalled></upd:ApplicabilityRules>\
         </upd:Update>"
    );
    d
}

/// One payload file: written to `dir` while hashed; returns (file name, sha1, sha256, size).
fn payload(
    dir: &Path,
    n: u64,
    seed: u64,
    size: u64,
) -> io::Result<(PathBuf, [u8; 20], [u8; 32], u64)> {
    let name = format!("payload-{n:05}.cab");
    let path = dir.join(&name);
    let mut file = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    let mut rng = SplitMix(seed ^ 0xfeed_0000 ^ n);
    let mut sha1 = Sha1::new();
    let mut sha256 = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let chunk = &mut buf[..left.min(1 << 20) as usize];
        rng.fill(chunk);
        sha1.update(&*chunk);
        sha256.update(chunk);
        file.write_all(chunk)?;
        left -= chunk.len() as u64;
    }
    file.flush()?;
    let mut s256 = [0u8; 32];
    s256.copy_from_slice(sha256.finish().as_ref());
    Ok((path, sha1.finalize().into(), s256, size))
}

/// Payload sizes: mostly small, some medium, a few large, scaled to `budget` bytes in all.
fn sizes(count: usize, budget: u64, rng: &mut SplitMix) -> Vec<u64> {
    let raw: Vec<u64> = (0..count)
        .map(|_| match rng.next_u64() % 100 {
            0..=69 => 4 << 10 | (rng.next_u64() % (2 << 20)),
            70..=94 => (8 << 20) + rng.next_u64() % (40 << 20),
            _ => (100 << 20) + rng.next_u64() % (200 << 20),
        })
        .collect();
    let total: u64 = raw.iter().sum();
    if total <= budget {
        return raw;
    }
    let scale = budget as f64 / total as f64;
    raw.iter()
        .map(|&s| ((s as f64 * scale) as u64).max(1024))
        .collect()
}

/// Generate `n` software updates (and their categories and detectoids); payload files go into
/// `dir` (their total under `budget` bytes).
pub fn generate(n: usize, seed: u64, budget: u64, dir: &Path) -> io::Result<Generated> {
    generate_with_progress(n, seed, budget, dir, &mut |_| {})
}

/// [`generate`], telling `progress` after each software update (with its payload) is written.
pub fn generate_with_progress(
    n: usize,
    seed: u64,
    budget: u64,
    dir: &Path,
    progress: &mut dyn FnMut(usize),
) -> io::Result<Generated> {
    let mut g = Generated::default();
    let mut rng = SplitMix(seed);
    let company = guid(seed, 1, 0);
    g.documents
        .push(category(company, "Company", "Contoso", None));
    let families = [guid(seed, 2, 0), guid(seed, 2, 1)];
    for (i, f) in families.iter().enumerate() {
        g.documents.push(category(
            *f,
            "ProductFamily",
            ["Contoso Windows", "Contoso Office"][i],
            Some(company),
        ));
    }
    let products: Vec<Guid> = (0..(n / 50).clamp(2, 40))
        .map(|i| guid(seed, 3, i as u64))
        .collect();
    for (i, p) in products.iter().enumerate() {
        g.documents.push(category(
            *p,
            "Product",
            &format!("Contoso Product {i}"),
            Some(families[i % 2]),
        ));
    }
    let classifications: Vec<Guid> = (0..CLASSIFICATIONS.len())
        .map(|i| guid(seed, 4, i as u64))
        .collect();
    for (c, name) in classifications.iter().zip(CLASSIFICATIONS) {
        g.documents
            .push(category(*c, "UpdateClassification", name, None));
    }
    g.categories = 1 + families.len() + products.len() + classifications.len();
    let detectoids: Vec<Guid> = (0..DETECTOIDS.len())
        .map(|i| guid(seed, 5, i as u64))
        .collect();
    for (d, (title, rule)) in detectoids.iter().zip(DETECTOIDS) {
        g.documents.push(detectoid(*d, title, rule));
    }
    g.detectoids = detectoids.len();

    // Every fifth update is a bundle of the one or two before it; those become hidden members.
    let is_bundle = |i: usize| i % 5 == 4;
    let file_count = (0..n).filter(|&i| !is_bundle(i)).count();
    let mut file_sizes = sizes(file_count, budget, &mut rng).into_iter();
    let ids: Vec<Guid> = (0..n).map(|i| guid(seed, 6, i as u64)).collect();
    let mut member: Vec<bool> = vec![false; n];
    // Each bundle (i ≡ 4 mod 5) takes the update before it, and sometimes the one before that.
    let mut members_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).filter(|&i| is_bundle(i)) {
        members_of[i].push(i - 1);
        if rng.next_u64().is_multiple_of(2) {
            members_of[i].push(i - 2);
        }
        for &m in &members_of[i] {
            member[m] = true;
        }
    }
    for i in 0..n {
        progress(i);
        let id = ids[i];
        let product = products[i % products.len()];
        let classification = classifications[(i / 3) % classifications.len()];
        let detect = detectoids[i % detectoids.len()];
        let bundle = is_bundle(i);
        let deployable = !member[i];
        // Never a bundle or a bundle's member (i ≡ 1 mod 5).
        let encrypted = i % 20 == 11;
        // Some updates exist in two revisions; the catalog serves the higher.
        let revisions: &[u32] = if i % 7 == 3 { &[100, 101] } else { &[100] };
        let file = if bundle {
            None
        } else {
            let size = file_sizes.next().unwrap_or(4096);
            let (path, sha1, sha256, size) = payload(dir, i as u64, seed, size)?;
            g.payload_bytes += size;
            g.files.push(path.clone());
            if encrypted {
                let mut key = vec![0u8; 32];
                SplitMix(seed ^ 0x6b65_7900 ^ i as u64).fill(&mut key);
                g.keys.push((sha1, key));
                g.encrypted.push(id);
            }
            Some((path, sha1, sha256, size))
        };
        for &rev in revisions {
            let kb = 5_000_000 + i;
            let titles: Vec<(&str, String)> = LANGUAGES
                .iter()
                .map(|(l, word)| (*l, format!("Contoso {word} {i} (KB{kb})")))
                .collect();
            let mut d = String::from(header());
            let _ = write!(
                d,
                "<upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"{rev}\" />\
                 <upd:Properties DefaultPropertiesLanguage=\"en\" UpdateType=\"Software\" \
                 ExplicitlyDeployable=\"{deployable}\" AutoSelectOnWebSites=\"true\" \
                 Handler=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/CommandLineInstallation\" \
                 MaxDownloadSize=\"{size}\" MinDownloadSize=\"0\" PublicationState=\"Published\" \
                 CreationDate=\"2026-09-08T17:00:00.000Z\" \
                 PublisherID=\"bccf8ca0-2819-4598-8d15-c1506e363e92\">\
                 <upd:SupportUrl>https://support.contoso.example/kb/{kb}</upd:SupportUrl>\
                 <upd:KBArticleID>{kb}</upd:KBArticleID>\
                 <upd:InstallationBehavior Impact=\"Minor\" RebootBehavior=\"CanRequestReboot\" />\
                 {secured}</upd:Properties>",
                size = file.as_ref().map_or(0, |f| f.3),
                secured = if encrypted {
                    "<upd:SecuredFragment>FileDecryption</upd:SecuredFragment>"
                } else {
                    ""
                }
            );
            localized(
                &mut d,
                &titles,
                &format!("Fixes issue {i} in Contoso products."),
            );
            d.push_str("<upd:Relationships>");
            if i % 11 == 6 && i >= 6 {
                let _ = write!(
                    d,
                    "<upd:SupersededUpdates><upd:UpdateIdentity UpdateID=\"{}\" />\
                     </upd:SupersededUpdates>",
                    ids[i - 6]
                );
            }
            let _ = write!(
                d,
                "<upd:Prerequisites><upd:UpdateIdentity UpdateID=\"{detect}\" />\
                 <upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{product}\" />\
                 </upd:AtLeastOne><upd:AtLeastOne IsCategory=\"true\">\
                 <upd:UpdateIdentity UpdateID=\"{classification}\" /></upd:AtLeastOne>"
            );
            // A servicing-stack style chain: some standalone updates need the one before them
            // (never with bundle members on either side, so that a bundle's members are always
            // deliverable with it).
            if i % 10 == 7 && !member[i - 1] && !member[i] {
                let _ = write!(d, "<upd:UpdateIdentity UpdateID=\"{}\" />", ids[i - 1]);
            }
            d.push_str("</upd:Prerequisites>");
            if bundle {
                d.push_str("<upd:BundledUpdates>");
                for &m in &members_of[i] {
                    let _ = write!(
                        d,
                        "<upd:AtLeastOne><upd:UpdateIdentity UpdateID=\"{}\" \
                         RevisionNumber=\"{}\" /></upd:AtLeastOne>",
                        ids[m],
                        if m % 7 == 3 { 101 } else { 100 }
                    );
                }
                d.push_str("</upd:BundledUpdates>");
            }
            d.push_str("</upd:Relationships>");
            if let Some((path, sha1, sha256, size)) = &file {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let _ = write!(
                    d,
                    "<upd:ApplicabilityRules><upd:IsInstalled><bar:RegValueExists \
                     Key=\"HKEY_LOCAL_MACHINE\" Subkey=\"SOFTWARE\\Contoso\\KB{kb}\" \
                     Value=\"Installed\" /></upd:IsInstalled><upd:IsInstallable><lar:And>\
                     <bar:WindowsVersion Comparison=\"GreaterThanOrEqualTo\" MajorVersion=\"10\" />\
                     <lar:Not><bar:RegKeyExists Key=\"HKEY_LOCAL_MACHINE\" \
                     Subkey=\"SOFTWARE\\Contoso\\Blocked\" /></lar:Not></lar:And>\
                     </upd:IsInstallable></upd:ApplicabilityRules><upd:Files>\
                     <upd:File Digest=\"{}\" DigestAlgorithm=\"SHA1\" FileName=\"{name}\" \
                     Size=\"{size}\"{encrypted} Modified=\"2026-09-01T00:00:00Z\"><upd:AdditionalDigest \
                     Algorithm=\"SHA256\">{}</upd:AdditionalDigest></upd:File></upd:Files>\
                     <upd:HandlerSpecificData xsi:type=\"cmd:CommandLineInstallation\">\
                     <cmd:InstallCommand Program=\"{name}\" Arguments=\"/quiet /norestart\">\
                     <cmd:ReturnCode Code=\"0\" Result=\"Succeeded\" /></cmd:InstallCommand>\
                     </upd:HandlerSpecificData>",
                    base64_encode(sha1),
                    base64_encode(sha256),
                    encrypted = if encrypted {
                        " IsEncrypted=\"true\""
                    } else {
                        ""
                    }
                );
            }
            d.push_str("</upd:Update>");
            g.documents.push(d);
        }
        g.software += 1;
        if deployable {
            g.deployable.push(id);
        }
    }
    Ok(g)
}
