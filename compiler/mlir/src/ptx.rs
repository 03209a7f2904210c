//! The GPU path: the kernels' MLIR as a `gpu.module`, lowered to NVVM and
//! serialised to PTX by `gpu-module-to-binary`, the text read back through
//! MLIR's C API. libdevice (for `sqrt`, which the NVVM lowering sends to
//! it) comes from a CUDA toolkit, or from the `nvidia-cuda-nvcc-cu12`
//! wheel, found as [`CudaOptions::toolkit`] says.

use crate::emit::{Entry, Target};
use crate::pipeline::{PhaseError, Session, Timings};
use crate::MlirError;
use gsc_kernel_ir::KernelProgram;
use melior::ir::attribute::AttributeLike;
use melior::ir::operation::OperationLike;
use melior::ir::BlockLike;
use melior::ir::Module;
use std::path::{Path, PathBuf};

/// Code generation choices for NVIDIA GPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// `sm_80`, `sm_90`, …
    pub chip: String,
    /// The PTX ISA version, as an LLVM feature (`+ptx80`).
    pub features: String,
    /// A CUDA toolkit's root (holding `nvvm/libdevice/libdevice.10.bc`).
    pub toolkit: PathBuf,
}

impl CudaOptions {
    /// For `chip`, with the toolkit found by [`find_toolkit`].
    pub fn for_chip(chip: &str) -> Result<Self, MlirError> {
        Ok(CudaOptions {
            chip: chip.to_string(),
            features: "+ptx80".to_string(),
            toolkit: find_toolkit()?,
        })
    }
}

/// PTX for one program.
#[derive(Clone, Debug)]
pub struct PtxModule {
    pub chip: String,
    pub ptx: String,
    pub entries: Vec<Entry>,
    pub timings: Timings,
}

const LIBDEVICE: &str = "nvvm/libdevice/libdevice.10.bc";

/// The CUDA toolkit root: `$GSC_CUDA_TOOLKIT`, `$CUDA_HOME`, `$CUDA_PATH`,
/// `/usr/local/cuda`, or the `nvidia-cuda-nvcc-cu12` wheel of `python3`;
/// the first that holds libdevice.
pub fn find_toolkit() -> Result<PathBuf, MlirError> {
    let mut tried = vec![];
    let mut candidates: Vec<PathBuf> = ["GSC_CUDA_TOOLKIT", "CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    candidates.push(PathBuf::from("/usr/local/cuda"));
    if let Some(p) = wheel_toolkit() {
        candidates.push(p);
    }
    for c in candidates {
        if c.join(LIBDEVICE).is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(MlirError::Toolkit(format!(
        "no CUDA libdevice found (looked for {LIBDEVICE} under {}): install the PyPI wheel \
         nvidia-cuda-nvcc-cu12 or a CUDA toolkit, or set GSC_CUDA_TOOLKIT to a toolkit's root",
        tried.join(", ")
    )))
}

/// The `nvidia/cuda_nvcc` folder of the `nvidia-cuda-nvcc-cu12` wheel.
fn wheel_toolkit() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import nvidia.cuda_nvcc as m, os; print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])",
        ])
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let p = Path::new(s.trim());
    (out.status.success() && !s.trim().is_empty()).then(|| p.to_path_buf())
}

fn lower_to_nvvm(o: &CudaOptions) -> String {
    format!(
        "builtin.module(nvvm-attach-target{{chip={} features={} O=3}}, gpu.module(inline, \
         symbol-dce, convert-scf-to-cf, convert-gpu-to-nvvm{{use-bare-ptr-memref-call-conv=1}}, \
         canonicalize, cse, reconcile-unrealized-casts))",
        o.chip, o.features
    )
}

/// Lowers every loop kernel of `program` to PTX for `options.chip`.
pub fn compile_ptx(program: &KernelProgram, options: &CudaOptions) -> Result<PtxModule, MlirError> {
    crate::lower(
        program,
        Target::Cuda,
        (&|_| true, ""),
        |session, module, entries| serialize(session, module, entries, options),
    )
}

/// The NVVM lowering and the PTX of the canonical module.
fn serialize(
    session: &Session,
    module: &mut Module,
    entries: Vec<Entry>,
    options: &CudaOptions,
) -> Result<PtxModule, MlirError> {
    session.phase("lower-to-nvvm", &lower_to_nvvm(options), module)?;
    let serialize = format!(
        "builtin.module(gpu-module-to-binary{{format=isa toolkit={}}})",
        options.toolkit.display()
    );
    session.phase("serialize", &serialize, module)?;
    let ptx = read_ptx(module).ok_or_else(|| PhaseError {
        phase: "serialize".into(),
        kernel: None,
        diagnostics: vec!["the module holds no gpu.binary with a PTX object".into()],
    })?;
    Ok(PtxModule {
        chip: options.chip.clone(),
        ptx,
        entries,
        timings: session.timings(),
    })
}

/// The assembly of the first object of the module's `gpu.binary`.
fn read_ptx(module: &melior::ir::Module) -> Option<String> {
    let mut op = module.body().first_operation();
    while let Some(o) = op {
        if o.name().as_string_ref().as_str().ok() == Some("gpu.binary") {
            let objects = o.attribute("objects").ok()?;
            // SAFETY: `objects` is the ArrayAttr of #gpu.object attributes
            // that gpu.binary's verifier guarantees; the string is copied
            // out while the module lives.
            unsafe {
                let raw = objects.to_raw();
                if mlir_sys::mlirArrayAttrGetNumElements(raw) < 1 {
                    return None;
                }
                let obj = mlir_sys::mlirArrayAttrGetElement(raw, 0);
                let s = mlir_sys::mlirGPUObjectAttrGetObject(obj);
                let bytes = std::slice::from_raw_parts(s.data as *const u8, s.length);
                return Some(String::from_utf8_lossy(bytes).into_owned());
            }
        }
        op = o.next_in_block();
    }
    None
}
