//! The CUDA backend (cargo feature `cuda`): programs in device memory, loop
//! kernels from the PTX the artifact carries (MLIR → NVVM, made where gsc
//! has MLIR), products through cuBLAS. It links no LLVM: a `gsc` built with
//! `--features cuda` alone runs artifacts compiled elsewhere.
//!
//! What needs no GPU is always built and tested: the cuBLAS mapping of the
//! kernel IR's products and the choice of PTX for a device.

pub mod gemm;
pub mod ptx;

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod program;

#[cfg(feature = "cuda")]
pub use backend::Cuda;

#[cfg(feature = "cuda")]
mod backend {
    use super::device::Device;
    use super::program::CudaProgram;
    use crate::backend::{Backend, BackendError, Program};
    use crate::run::artifact::PtxProgram;
    use gsc_compiler::kernel::{library, KernelProgram, Storage};
    use std::any::Any;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn err(message: impl Into<String>) -> BackendError {
        BackendError {
            backend: "cuda",
            message: message.into(),
        }
    }

    /// One GPU and the PTX its programs may use.
    pub struct Cuda {
        device: Rc<Device>,
        ptx: RefCell<Vec<PtxProgram>>,
    }

    impl Cuda {
        /// GPU `ordinal`, running programs whose PTX is among `ptx` (with
        /// the `mlir` feature, PTX that is missing is compiled on load).
        pub fn open(ordinal: usize, ptx: Vec<PtxProgram>) -> Result<Cuda, BackendError> {
            Ok(Cuda {
                device: Rc::new(Device::open(ordinal).map_err(err)?),
                ptx: RefCell::new(ptx),
            })
        }

        /// `NVIDIA H100 80GB HBM3 (sm_90)`.
        pub fn describe(&self) -> String {
            format!("{:?}", self.device)
        }

        /// The chip code is generated for on this device: `sm_90`.
        pub fn chip(&self) -> String {
            let (major, minor) = self.device.capability;
            format!("sm_{major}{minor}")
        }

        fn ptx_for(&self, program: &KernelProgram) -> Result<PtxProgram, BackendError> {
            if let Some(p) = super::ptx::pick(&self.ptx.borrow(), program, self.device.capability) {
                return Ok(p.clone());
            }
            self.compile(program)
        }

        #[cfg(feature = "mlir")]
        fn compile(&self, program: &KernelProgram) -> Result<PtxProgram, BackendError> {
            let options =
                gsc_mlir::CudaOptions::for_chip(&self.chip()).map_err(|e| err(e.to_string()))?;
            let p =
                PtxProgram::compile(program, "loaded", &options).map_err(|e| err(e.to_string()))?;
            self.ptx.borrow_mut().push(p.clone());
            Ok(p)
        }

        #[cfg(not(feature = "mlir"))]
        fn compile(&self, program: &KernelProgram) -> Result<PtxProgram, BackendError> {
            Err(err(format!(
                "the artifact carries no PTX for this program (hash {}) that {} can run, and \
                 this gsc was built without MLIR to make it: compile the artifact where gsc has \
                 MLIR (`gsc compile --target cuda --chip {} --emit=artifact FILE.gs > \
                 artifact.json`) and run with `--artifact artifact.json`",
                crate::run::artifact::program_hash(program),
                self.describe(),
                self.chip()
            )))
        }

        fn load_program(
            &self,
            program: &KernelProgram,
            owner: Option<&dyn Program>,
        ) -> Result<Box<dyn Program>, BackendError> {
            let gpu = library::for_gpu(program);
            let facts = CudaProgram::check(&gpu)?;
            let ptx = self.ptx_for(program)?;
            let owner = match owner {
                None => None,
                Some(o) => {
                    let o: &dyn Any = o;
                    Some(o.downcast_ref::<GpuProgram>().ok_or_else(|| {
                        err("the program to share parameters with is not on the GPU")
                    })?)
                }
            };
            let p = CudaProgram::load(&self.device, gpu, facts, &ptx, owner.map(|o| &o.0))?;
            Ok(Box::new(GpuProgram(p)))
        }
    }

    struct GpuProgram(CudaProgram);

    impl Backend for Cuda {
        fn name(&self) -> &'static str {
            "cuda"
        }

        fn load(&self, program: &KernelProgram) -> Result<Box<dyn Program>, BackendError> {
            self.load_program(program, None)
        }

        fn load_sharing(
            &self,
            program: &KernelProgram,
            owner: &dyn Program,
        ) -> Result<Box<dyn Program>, BackendError> {
            self.load_program(program, Some(owner))
        }
    }

    impl Program for GpuProgram {
        fn write(&mut self, s: Storage, data: &[f32]) -> Result<(), BackendError> {
            self.0.write(s, data)
        }

        fn write_ints(&mut self, s: Storage, data: &[i32]) -> Result<(), BackendError> {
            self.0.write_ints(s, data)
        }

        fn read(&self, s: Storage) -> Result<Vec<f32>, BackendError> {
            self.0.read(s)
        }

        fn run(&mut self) -> Result<(), BackendError> {
            self.0.run()
        }

        fn code(&self) -> &'static str {
            "ptx"
        }
    }
}
