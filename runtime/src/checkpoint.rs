//! Checkpoints: named f32 tensors (parameters and the optimizer's moments)
//! plus a small JSON document (step, stage, …) in one safetensors file.
//!
//! Files are written atomically — to a temporary file in the same folder,
//! flushed to disk, then renamed over the target — so a crash mid-save
//! leaves the previous checkpoint intact, never a half-written one. Every
//! tensor's CRC-32 and that of the JSON document are stored beside them and
//! verified on load, so a damaged file is refused, never trained on.
//! By convention parameters keep their plan names (`layers.0.attn.wq`) and
//! Adam's moments are prefixed `adam_m.` and `adam_v.`.

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The safetensors metadata key holding the JSON document.
const META_KEY: &str = "gsc";
/// The metadata key holding the checksums: `{"meta": crc, "tensors": {name: crc}}`.
const CRC_KEY: &str = "gsc.crc32";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {} is not a readable safetensors file (truncated or corrupt?): {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint {}: tensor {name} has {found} values, its shape {shape:?} needs {need}", path.display())]
    BadLength {
        path: PathBuf,
        name: String,
        shape: Vec<usize>,
        found: usize,
        need: usize,
    },
    #[error("checkpoint {}: tensor {name} appears twice", path.display())]
    Duplicate { path: PathBuf, name: String },
    #[error("checkpoint {}: tensor {name} is {dtype}, only F32 is supported", path.display())]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("checkpoint {} has no tensor {name}", path.display())]
    Missing { path: PathBuf, name: String },
    #[error("checkpoint {}: tensor {name} has shape {found:?}, the model needs {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("checkpoint {} holds tensors the model does not have: {}", path.display(), names.join(", "))]
    Unexpected { path: PathBuf, names: Vec<String> },
    #[error("checkpoint {}: metadata is not valid JSON: {reason}", path.display())]
    Metadata { path: PathBuf, reason: String },
    #[error("checkpoint {} has no checksums or no metadata (written by an older gsc, or its header is damaged)", path.display())]
    Unverified { path: PathBuf },
    #[error("checkpoint {} is corrupt: {what} does not match its checksum", path.display())]
    Checksum { path: PathBuf, what: String },
}

/// A tensor to save, borrowed from the caller's buffers.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// A loaded tensor.
#[derive(Clone, Debug, PartialEq)]
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Adapts f32 data to safetensors' byte view (little-endian, as the format says).
struct F32View<'a>(TensorRef<'a>);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        4 * self.0.data.len()
    }
}

/// Writes `tensors` and `metadata` to `path` atomically.
pub fn save(
    path: &Path,
    tensors: &[TensorRef],
    metadata: &serde_json::Value,
) -> Result<(), CheckpointError> {
    let meta = metadata.to_string();
    let crcs: BTreeMap<&str, u32> = tensors.iter().map(|t| (t.name, f32_crc(t.data))).collect();
    let crc = serde_json::json!({ "meta": crc32fast::hash(meta.as_bytes()), "tensors": crcs });
    let info = HashMap::from([
        (META_KEY.to_owned(), meta),
        (CRC_KEY.to_owned(), crc.to_string()),
    ]);
    save_plain(path, tensors, info)
}

/// Writes `tensors` to `path` atomically, with `info` as the file's
/// metadata and none of gsc's: a safetensors file for other tools.
pub fn save_plain(
    path: &Path,
    tensors: &[TensorRef],
    info: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let mut seen = std::collections::HashSet::new();
    for t in tensors {
        let need: usize = t.shape.iter().product();
        if t.data.len() != need {
            return Err(CheckpointError::BadLength {
                path: path.to_owned(),
                name: t.name.to_owned(),
                shape: t.shape.to_vec(),
                found: t.data.len(),
                need,
            });
        }
        if !seen.insert(t.name) {
            return Err(CheckpointError::Duplicate {
                path: path.to_owned(),
                name: t.name.to_owned(),
            });
        }
    }
    let info = Some(info);
    let tmp = temp_path(path);
    let write = || -> Result<(), CheckpointError> {
        let views = tensors.iter().map(|t| (t.name, F32View(*t)));
        safetensors::serialize_to_file(views, &info, &tmp).map_err(|e| match e {
            SafeTensorError::IoError(source) => CheckpointError::Write {
                path: path.to_owned(),
                source,
            },
            other => CheckpointError::Corrupt {
                path: path.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let io = |source| CheckpointError::Write {
            path: path.to_owned(),
            source,
        };
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        // Make the rename itself durable; not every filesystem allows
        // syncing a directory, and the data is already safe, so best effort.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// CRC-32 of `data` as stored: little-endian bytes.
fn f32_crc(data: &[f32]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut bytes = Vec::with_capacity(4 * 4096.min(data.len()));
    for chunk in data.chunks(4096) {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        h.update(&bytes);
    }
    h.finalize()
}

/// `dir/.name.tmp-PID`: in the target's folder so the rename cannot cross
/// filesystems, hidden, and distinct per process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The JSON document of the checkpoint at `path`, read from its header
/// alone and not verified: enough to order files, never to trust them.
pub fn peek_metadata(path: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    let mut f = File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    // safetensors' own bound on a header.
    if len > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    serde_json::from_str(header["__metadata__"][META_KEY].as_str()?).ok()
}

/// The checksums a file was written with.
#[derive(serde::Deserialize)]
struct Checksums {
    meta: Option<u32>,
    tensors: BTreeMap<String, u32>,
}

impl Checksums {
    fn read(path: &Path, text: Option<&String>) -> Result<Checksums, CheckpointError> {
        let unverified = || CheckpointError::Unverified {
            path: path.to_owned(),
        };
        serde_json::from_str(text.ok_or_else(unverified)?).map_err(|_| unverified())
    }
}

/// `found` against `stored`: a part without a checksum is as bad as a
/// wrong one (a damaged header can drop it).
fn verify(path: &Path, what: &str, found: u32, stored: Option<u32>) -> Result<(), CheckpointError> {
    if stored == Some(found) {
        Ok(())
    } else {
        Err(CheckpointError::Checksum {
            path: path.to_owned(),
            what: what.to_owned(),
        })
    }
}

/// A checkpoint read back into memory.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    path: PathBuf,
    pub metadata: serde_json::Value,
    tensors: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads and checks the whole file: header, offsets, dtypes, metadata,
    /// and every checksum.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
            path: path.to_owned(),
            source,
        })?;
        let corrupt = |e: SafeTensorError| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let st = SafeTensors::deserialize(&bytes).map_err(corrupt)?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
        let info = header.metadata().as_ref();
        let text = info.and_then(|m| m.get(META_KEY));
        let crcs = Checksums::read(path, info.and_then(|m| m.get(CRC_KEY)))?;
        let text = text.ok_or_else(|| CheckpointError::Unverified {
            path: path.to_owned(),
        })?;
        verify(
            path,
            "its metadata",
            crc32fast::hash(text.as_bytes()),
            crcs.meta,
        )?;
        let metadata = serde_json::from_str(text).map_err(|e| CheckpointError::Metadata {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(CheckpointError::Dtype {
                    path: path.to_owned(),
                    name: name.to_owned(),
                    dtype: format!("{:?}", view.dtype()),
                });
            }
            let stored = crcs.tensors.get(name).copied();
            let what = format!("tensor {name}");
            verify(path, &what, crc32fast::hash(view.data()), stored)?;
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let shape = view.shape().to_vec();
            tensors.insert(name.to_owned(), Tensor { shape, data });
        }
        if let Some(name) = crcs.tensors.keys().find(|n| !tensors.contains_key(*n)) {
            return Err(CheckpointError::Missing {
                path: path.to_owned(),
                name: name.clone(),
            });
        }
        Ok(Checkpoint {
            path: path.to_owned(),
            metadata,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The data of tensor `name`, which must have shape `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<&[f32], CheckpointError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::Missing {
                path: self.path.clone(),
                name: name.to_owned(),
            })?;
        if t.shape != shape {
            return Err(CheckpointError::Shape {
                path: self.path.clone(),
                name: name.to_owned(),
                found: t.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(&t.data)
    }

    /// Checks that the file holds exactly `expected` (name, shape) pairs:
    /// the first missing or misshapen tensor is the error, then any extras.
    pub fn validate<'a>(
        &self,
        expected: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<(), CheckpointError> {
        let mut extra: std::collections::BTreeSet<&str> = self.names().collect();
        for (name, shape) in expected {
            self.tensor(name, shape)?;
            extra.remove(name);
        }
        if extra.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Unexpected {
                path: self.path.clone(),
                names: extra.into_iter().map(str::to_owned).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::random_vec;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("gsc-ckpt-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sample() -> Vec<(String, Vec<usize>, Vec<f32>)> {
        vec![
            ("tok_emb".into(), vec![8, 4], random_vec(32, 1)),
            ("layers.0.attn.wq".into(), vec![4, 4], random_vec(16, 2)),
            (
                "adam_m.layers.0.attn.wq".into(),
                vec![4, 4],
                random_vec(16, 3),
            ),
            (
                "adam_v.layers.0.attn.wq".into(),
                vec![4, 4],
                random_vec(16, 4),
            ),
            ("layers.0.attn_norm.gain".into(), vec![4], random_vec(4, 5)),
        ]
    }

    fn refs(s: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<TensorRef<'_>> {
        s.iter()
            .map(|(n, sh, d)| TensorRef {
                name: n,
                shape: sh,
                data: d,
            })
            .collect()
    }

    #[test]
    fn round_trip_keeps_every_bit_and_the_metadata() {
        let dir = TempDir::new("rt");
        let path = dir.0.join("step-100.safetensors");
        let tensors = sample();
        let meta = serde_json::json!({"step": 100, "stage": 2, "lr": 0.002});
        save(&path, &refs(&tensors), &meta).unwrap();
        let ck = Checkpoint::load(&path).unwrap();
        assert_eq!(ck.metadata, meta);
        for (name, shape, data) in &tensors {
            let got = ck.tensor(name, shape).unwrap();
            assert!(got
                .iter()
                .zip(data)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        ck.validate(tensors.iter().map(|(n, s, _)| (n.as_str(), s.as_slice())))
            .unwrap();
        // No temporary file is left beside the checkpoint.
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn saving_again_replaces_the_file() {
        let dir = TempDir::new("replace");
        let path = dir.0.join("latest.safetensors");
        let tensors = sample();
        save(&path, &refs(&tensors), &serde_json::json!({"step": 1})).unwrap();
        save(&path, &refs(&tensors[..1]), &serde_json::json!({"step": 2})).unwrap();
        let ck = Checkpoint::load(&path).unwrap();
        assert_eq!(ck.metadata["step"], 2);
        assert_eq!(ck.names().count(), 1);
    }

    #[test]
    fn truncated_file_is_an_error_naming_it() {
        let dir = TempDir::new("trunc");
        let path = dir.0.join("cut.safetensors");
        save(&path, &refs(&sample()), &serde_json::json!({})).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for keep in [bytes.len() - 10, 100, 7, 0] {
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let err = Checkpoint::load(&path).unwrap_err();
            assert!(
                matches!(err, CheckpointError::Corrupt { .. }),
                "{keep}: {err}"
            );
            assert!(err.to_string().contains("cut.safetensors"), "{err}");
        }
    }

    #[test]
    fn missing_file_and_wrong_model_are_clear_errors() {
        let dir = TempDir::new("wrong");
        let missing = Checkpoint::load(&dir.0.join("nope.safetensors")).unwrap_err();
        assert!(missing.to_string().contains("nope.safetensors"));

        let path = dir.0.join("m.safetensors");
        let tensors = sample();
        save(&path, &refs(&tensors), &serde_json::json!({})).unwrap();
        let ck = Checkpoint::load(&path).unwrap();
        let err = ck.tensor("tok_emb", &[8, 5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "checkpoint {}: tensor tok_emb has shape [8, 4], the model needs [8, 5]",
                path.display()
            )
        );
        let err = ck.validate([("tok_emb", &[8usize, 4][..])]).unwrap_err();
        assert!(matches!(err, CheckpointError::Unexpected { ref names, .. } if names.len() == 4));
        let err = ck.validate([("lm_head", &[8usize, 4][..])]).unwrap_err();
        assert!(matches!(err, CheckpointError::Missing { .. }));
    }

    /// The bytes of a saved checkpoint of [`sample`], and where its data begins.
    fn saved(dir: &TempDir) -> (PathBuf, Vec<u8>, usize) {
        let path = dir.0.join("ck.safetensors");
        save(&path, &refs(&sample()), &serde_json::json!({"step": 100})).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        (path, bytes, 8 + header)
    }

    #[test]
    fn a_flipped_bit_in_a_tensor_or_the_metadata_is_named() {
        let dir = TempDir::new("flip");
        let (path, bytes, data_start) = saved(&dir);
        let mut flipped = bytes.clone();
        flipped[data_start + 4 * 32 + 3] ^= 0x10; // one bit of some tensor
        std::fs::write(&path, &flipped).unwrap();
        let err = Checkpoint::load(&path).unwrap_err();
        assert!(matches!(err, CheckpointError::Checksum { .. }), "{err}");
        assert!(
            err.to_string().contains("ck.safetensors") && err.to_string().contains("tensor"),
            "{err}"
        );

        // `"step":100` → `"step":900`: still valid JSON, caught by its checksum.
        let text = String::from_utf8_lossy(&bytes[..data_start]).into_owned();
        let at = text.find("100").unwrap();
        let mut lied = bytes.clone();
        lied[at] = b'9';
        std::fs::write(&path, &lied).unwrap();
        let err = Checkpoint::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "checkpoint {} is corrupt: its metadata does not match its checksum",
                path.display()
            )
        );
    }

    #[test]
    fn a_file_without_checksums_is_refused() {
        let dir = TempDir::new("nocrc");
        let path = dir.0.join("plain.safetensors");
        let data = [1.0f32, 2.0];
        let view = F32View(TensorRef {
            name: "w",
            shape: &[2],
            data: &data,
        });
        let info = Some(HashMap::from([(META_KEY.to_owned(), "{}".to_owned())]));
        safetensors::serialize_to_file([("w", view)], &info, &path).unwrap();
        let err = Checkpoint::load(&path).unwrap_err();
        assert!(matches!(err, CheckpointError::Unverified { .. }), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        /// Random byte changes and truncations: every damaged file is refused
        /// with an error naming it, or (a header byte that JSON ignores)
        /// loads exactly what was saved; never a panic, never other numbers.
        #[test]
        fn damaged_checkpoints_never_lie(
            edits in proptest::collection::vec((0usize..1 << 20, 0u8..=255), 1..4),
            cut in proptest::option::of(0usize..1 << 20),
        ) {
            let dir = TempDir::new(&format!("fuzz-{}", edits[0].0));
            let (path, bytes, _) = saved(&dir);
            let original = Checkpoint::load(&path).unwrap();
            let mut damaged = bytes.clone();
            for &(at, value) in &edits {
                let at = at % damaged.len();
                damaged[at] = value;
            }
            if let Some(cut) = cut {
                damaged.truncate(cut % damaged.len());
            }
            std::fs::write(&path, &damaged).unwrap();
            match Checkpoint::load(&path) {
                Err(e) => proptest::prop_assert!(e.to_string().contains("ck.safetensors"), "{e}"),
                Ok(ck) => {
                    proptest::prop_assert_eq!(ck.metadata, original.metadata);
                    proptest::prop_assert_eq!(ck.tensors, original.tensors);
                }
            }
        }
    }

    #[test]
    fn inconsistent_tensors_are_refused_before_writing() {
        let dir = TempDir::new("bad");
        let path = dir.0.join("bad.safetensors");
        let data = [0.0f32; 5];
        let bad = TensorRef {
            name: "w",
            shape: &[2, 3],
            data: &data,
        };
        let err = save(&path, &[bad], &serde_json::json!({})).unwrap_err();
        assert!(matches!(err, CheckpointError::BadLength { need: 6, .. }));
        let dup = TensorRef {
            name: "w",
            shape: &[5],
            data: &data,
        };
        let err = save(&path, &[dup, dup], &serde_json::json!({})).unwrap_err();
        assert!(matches!(err, CheckpointError::Duplicate { .. }));
        assert!(!path.exists());
    }
}
