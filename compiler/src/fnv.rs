//! FNV-1a, 64 bits: stable across builds and machines, unlike std's hasher.
//! The build scripts of the compiler and the runtime include this file too
//! (`#[path]`), to fingerprint their crates' sources; the runtime keys
//! compiled artifacts with it.

/// The hash of `parts`, each followed by a 0xff separator, as 16 hex digits.
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xffu8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The fingerprint of every file under `dir` (paths and contents, in path
/// order), for a build script: it also tells cargo to rerun on changes.
pub fn sources(dir: &str) -> String {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    println!("cargo:rerun-if-changed={dir}");
    let mut files = Vec::new();
    walk(std::path::Path::new(dir), &mut files);
    files.sort();
    let named: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| {
            (
                p.to_string_lossy().into_owned(),
                std::fs::read(p).unwrap_or_default(),
            )
        })
        .collect();
    hash_parts(
        named
            .iter()
            .flat_map(|(name, bytes)| [name.as_bytes(), bytes.as_slice()]),
    )
}
