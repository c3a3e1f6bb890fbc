//! Import: files from a folder put into the store under their SHA-1 (a root node's content).

// A part of the store, split out by concern: it sees the store's types as the store does.
use super::*;

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub files: u64,
    pub new: u64,
    pub bytes: u64,
    /// Every file imported: its digest and size (the catalog of what this node now serves).
    pub objects: Vec<(Digest, u64)>,
}

/// Put every regular file under `dir` (recursively) into the store of `data_dir` under its
/// SHA-1, so that a root node serves it. Blocking; safe while a node runs on the same
/// `data_dir` (each file appears by an atomic rename).
pub fn import_dir(data_dir: &std::path::Path, dir: &std::path::Path) -> Result<ImportReport> {
    import_dir_with_progress(data_dir, dir, &mut |_| {})
}

/// [`import_dir`], telling `progress` the size of each file once it is in the store.
pub fn import_dir_with_progress(
    data_dir: &std::path::Path,
    dir: &std::path::Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport> {
    let dirs = Dirs::new(data_dir);
    dirs.create()
        .map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
    let mut report = ImportReport::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .map_err(|e| Error::io(format!("reading {}", folder.display()), e))?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let meta = std::fs::metadata(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                let (digest, size, new) = disk::import_file(&dirs, &path)
                    .map_err(|e| Error::io(format!("importing {}", path.display()), e))?;
                progress(size);
                report.files += 1;
                report.bytes += size;
                report.new += u64::from(new);
                report.objects.push((digest, size));
            }
        }
    }
    Ok(report)
}
