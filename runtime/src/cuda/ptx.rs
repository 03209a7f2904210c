//! Which PTX a GPU runs: the artifact's PTX for the program at hand, for
//! the newest architecture the device can run (PTX compiled for `sm_80`
//! is JIT-compiled by the driver for any later GPU).

use crate::fsutil::write_atomic;
use crate::run::artifact::{program_hash, PtxProgram};
use gsc_compiler::kernel::KernelProgram;
use std::path::Path;

/// Writes `ptx` into the folder `dir` as `<program hash>.<chip>.json`.
pub fn save(dir: &Path, ptx: &PtxProgram) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.{}.json", ptx.program_hash, ptx.chip));
    let json = serde_json::to_vec(ptx).map_err(|e| e.to_string())?;
    write_atomic(&path, &json).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Every PTX file of the folder `dir` (as [`save`] writes them).
pub fn load_dir(dir: &Path) -> Result<Vec<PtxProgram>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("reading the PTX folder {}: {e}", dir.display()))?;
    let mut out = vec![];
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let bytes =
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            out.push(
                serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is not a PTX file of gsc: {e}", path.display()))?,
            );
        }
    }
    Ok(out)
}

/// `sm_90` → 90; `None` for anything else.
pub fn chip_number(chip: &str) -> Option<u32> {
    chip.strip_prefix("sm_")?.trim_end_matches('a').parse().ok()
}

/// The PTX among `available` made from `program`, for the newest chip not
/// newer than compute capability `capability` (`(9, 0)` for an H100).
pub fn pick<'a>(
    available: &'a [PtxProgram],
    program: &KernelProgram,
    capability: (u32, u32),
) -> Option<&'a PtxProgram> {
    let hash = program_hash(program);
    let device = capability.0 * 10 + capability.1;
    available
        .iter()
        .filter(|p| p.program_hash == hash)
        .filter_map(|p| Some((chip_number(&p.chip)?, p)))
        .filter(|(chip, _)| *chip <= device)
        .max_by_key(|(chip, _)| *chip)
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptx(program: &KernelProgram, chip: &str) -> PtxProgram {
        PtxProgram {
            program: "step".into(),
            program_hash: program_hash(program),
            chip: chip.into(),
            llvm: "22".into(),
            ptx: format!("// {chip}"),
            entries: vec![],
        }
    }

    #[test]
    fn the_newest_chip_the_device_runs_and_only_for_its_program() {
        let p = KernelProgram {
            buffers: vec![],
            kernels: vec![],
            arena_len: 0,
        };
        let other = KernelProgram {
            arena_len: 1,
            ..p.clone()
        };
        let all = vec![ptx(&p, "sm_80"), ptx(&p, "sm_90"), ptx(&other, "sm_86")];
        let chip = |cc| pick(&all, &p, cc).map(|x| x.chip.as_str());
        assert_eq!(chip((9, 0)), Some("sm_90"));
        assert_eq!(chip((8, 9)), Some("sm_80"));
        assert_eq!(chip((7, 5)), None);
        assert_eq!(chip_number("sm_90a"), Some(90));
        assert_eq!(
            pick(&all, &other, (8, 6)).map(|x| x.chip.as_str()),
            Some("sm_86")
        );
    }
}
