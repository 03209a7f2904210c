//! A kernel program on the GPU: its buffers in device memory (one
//! allocation per persistent buffer, one for the arena), its loop kernels
//! from PTX, its products through cuBLAS. The program runs in the form
//! `library::for_gpu` gives it (attention as products and loop kernels),
//! which is what its PTX was lowered from.

use super::device::{Device, Memory};
use super::gemm::{gemm_call, GemmCall};
use crate::backend::BackendError;
use crate::cpu::library_error;
use crate::run::artifact::PtxProgram;
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as driver, CudaFunction, CudaModule};
use gsc_compiler::kernel::{
    analyse, DType, Entry, IntRange, Kernel, KernelProgram, ProgramFacts, Storage, BLOCK,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::Arc;

fn err(message: impl Into<String>) -> BackendError {
    BackendError {
        backend: "cuda",
        message: message.into(),
    }
}

/// One kernel, its buffers resolved to device addresses at load.
enum Step {
    Launch {
        func: CudaFunction,
        args: Vec<u64>,
        grid: u32,
        block: u32,
    },
    Gemm {
        call: GemmCall,
        /// cuBLAS's A and B: the kernel IR's `b` and `a`.
        first: u64,
        second: u64,
        out: u64,
    },
}

pub struct CudaProgram {
    device: Rc<Device>,
    /// The program as the GPU runs it.
    program: KernelProgram,
    /// One allocation per persistent storage (shared ones included).
    storages: HashMap<Storage, Rc<Memory>>,
    _arena: Memory,
    steps: Vec<Step>,
    /// Per I32 buffer: the range its values must lie in (checked on the
    /// host as they are written).
    int_ranges: Vec<Option<IntRange>>,
    /// Why the integer inputs written last cannot run, per storage: `run`
    /// refuses them before any kernel starts, as every backend does.
    refused: HashMap<Storage, String>,
    _module: Arc<CudaModule>,
}

impl CudaProgram {
    /// `gpu` (a program in its GPU form) with the loop kernels of `ptx`,
    /// parameters shared with `owner` when given.
    /// The kernel IR's analyses of `gpu`, a rejected kernel named and printed.
    pub fn check(gpu: &KernelProgram) -> Result<ProgramFacts, BackendError> {
        analyse(gpu).map_err(|e| err(library_error(gpu, e.kernel, e.what).to_string()))
    }

    pub fn load(
        device: &Rc<Device>,
        gpu: KernelProgram,
        facts: ProgramFacts,
        ptx: &PtxProgram,
        owner: Option<&CudaProgram>,
    ) -> Result<CudaProgram, BackendError> {
        device.bind().map_err(err)?;
        let module = device
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx.ptx.clone()))
            .map_err(|e| err(format!("the driver refused the PTX ({}): {e}", ptx.chip)))?;
        let mut storages: HashMap<Storage, Rc<Memory>> = HashMap::new();
        let arena = Memory::zeroed(device, gpu.arena_len * 4).map_err(err)?;
        let mut addresses = Vec::with_capacity(gpu.buffers.len());
        for b in &gpu.buffers {
            let bytes = b.len * b.dtype.bytes();
            let address = match b.storage {
                Storage::Arena { offset } => arena.ptr + 4 * offset as u64,
                s => {
                    let shared = match (s, owner) {
                        (Storage::Param(_), Some(o)) => {
                            Some(o.storages.get(&s).cloned().ok_or_else(|| {
                                err(format!("the program to share with has no {s:?}"))
                            })?)
                        }
                        _ => storages.get(&s).cloned(),
                    };
                    let memory = match shared {
                        Some(m) if m.bytes == bytes => m,
                        Some(m) => {
                            return Err(err(format!(
                                "{} ({s:?}) holds {bytes} bytes where it is shared at {}",
                                b.name, m.bytes
                            )))
                        }
                        None => Rc::new(Memory::zeroed(device, bytes).map_err(err)?),
                    };
                    let ptr = memory.ptr;
                    storages.insert(s, memory);
                    ptr
                }
            };
            addresses.push(address);
        }
        let entries: HashMap<usize, &Entry> = ptx.entries.iter().map(|e| (e.kernel, e)).collect();
        let mut steps = vec![];
        for (i, k) in gpu.kernels.iter().enumerate() {
            match k {
                Kernel::Loop(_) => {
                    let Some(e) = entries.get(&i) else {
                        // A loop kernel with nothing to do has no code.
                        continue;
                    };
                    let func = module
                        .load_function(&e.symbol)
                        .map_err(|x| err(format!("the PTX has no kernel {}: {x}", e.symbol)))?;
                    let (grid, block) = match e.parallel {
                        Some(n) => (n.div_ceil(BLOCK) as u32, BLOCK as u32),
                        None => (1, 1),
                    };
                    steps.push(Step::Launch {
                        func,
                        args: e.args.iter().map(|b| addresses[b.0]).collect(),
                        grid: grid.max(1),
                        block,
                    });
                }
                Kernel::MatMul { bf16: true, .. } => {
                    return Err(err(format!(
                        "kernel k{i} is a bf16 product, which the CUDA backend does not run \
                         yet: train with `precision = f32` on the GPU, or with bf16 on the CPU"
                    )))
                }
                Kernel::MatMul {
                    a,
                    b,
                    out,
                    m,
                    n,
                    k,
                    ta,
                    tb,
                    batch,
                    bf16: false,
                } => steps.push(Step::Gemm {
                    call: gemm_call(*m, *n, *k, *ta, *tb, *batch),
                    first: addresses[b.0],
                    second: addresses[a.0],
                    out: addresses[out.0],
                }),
                other => {
                    return Err(err(format!(
                        "kernel k{i} ({}) has no GPU form",
                        other.name()
                    )))
                }
            }
        }
        Ok(CudaProgram {
            device: device.clone(),
            program: gpu,
            storages,
            _arena: arena,
            steps,
            int_ranges: facts.int_ranges,
            refused: HashMap::new(),
            _module: module,
        })
    }

    fn memory(&self, s: Storage, len: usize, dtype: DType) -> Result<&Memory, BackendError> {
        let m = self
            .storages
            .get(&s)
            .ok_or_else(|| err(format!("the program has no {s:?} buffer")))?;
        if m.bytes != len * dtype.bytes() {
            return Err(err(format!(
                "{s:?} holds {} values, not {len}",
                m.bytes / dtype.bytes()
            )));
        }
        Ok(m)
    }

    pub fn write(&mut self, s: Storage, data: &[f32]) -> Result<(), BackendError> {
        self.memory(s, data.len(), DType::F32)?
            .upload(data)
            .map_err(err)
    }

    /// Values a gather would index outside a buffer with are written, and
    /// refused by the next `run`.
    pub fn write_ints(&mut self, s: Storage, data: &[i32]) -> Result<(), BackendError> {
        let memory = self.memory(s, data.len(), DType::I32)?;
        memory.upload(data).map_err(err)?;
        self.refused.remove(&s);
        for (id, b) in self.program.buffers.iter().enumerate() {
            let Some(IntRange { lo, hi, kernel }) = self.int_ranges.get(id).copied().flatten()
            else {
                continue;
            };
            if b.storage != s {
                continue;
            }
            if let Some((position, value)) = data
                .iter()
                .enumerate()
                .find(|(_, &v)| (v as i64) < lo || (v as i64) > hi)
            {
                let why = format!(
                    "{} holds {value} at position {position}, outside [{lo}, {hi}] (kernel \
                     k{kernel} would index outside a buffer with it)",
                    b.name
                );
                self.refused.insert(s, why);
                break;
            }
        }
        Ok(())
    }

    pub fn read(&self, s: Storage) -> Result<Vec<f32>, BackendError> {
        let m = self
            .storages
            .get(&s)
            .ok_or_else(|| err(format!("the program has no {s:?} buffer")))?;
        let mut out = vec![0f32; m.bytes / 4];
        m.download(&mut out).map_err(err)?;
        Ok(out)
    }

    pub fn run(&mut self) -> Result<(), BackendError> {
        if let Some(why) = self.refused.values().next() {
            return Err(err(why.clone()));
        }
        self.device.bind().map_err(err)?;
        let stream = std::ptr::null_mut();
        for step in &self.steps {
            match step {
                Step::Launch {
                    func,
                    args,
                    grid,
                    block,
                } => {
                    // The driver reads each argument through a pointer to it.
                    let mut params: Vec<*mut c_void> = args
                        .iter()
                        .map(|v| v as *const u64 as *mut c_void)
                        .collect();
                    // SAFETY: the kernel takes one device pointer per
                    // argument buffer (bare-pointer memrefs), each holding
                    // the buffer the kernel IR's analyses proved in bounds.
                    unsafe {
                        driver::launch_kernel(
                            func.cu_function(),
                            (*grid, 1, 1),
                            (*block, 1, 1),
                            0,
                            stream,
                            &mut params,
                        )
                    }
                    .map_err(|e| err(format!("launching a kernel: {e}")))?;
                }
                Step::Gemm {
                    call,
                    first,
                    second,
                    out,
                } => self.gemm(call, *first, *second, *out)?,
            }
        }
        self.device.synchronize().map_err(err)
    }

    fn gemm(&self, c: &GemmCall, first: u64, second: u64, out: u64) -> Result<(), BackendError> {
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let int = |x: usize| {
            i32::try_from(x)
                .map_err(|_| err(format!("a product dimension of {x} exceeds cuBLAS's")))
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the three buffers hold `batch` packed matrices of the
        // shapes validated with the program; the output is disjoint from
        // the operands (the kernel IR's library contract).
        unsafe {
            blas::sgemm_strided_batched(
                self.device.blas,
                op(c.trans_first),
                op(c.trans_second),
                int(c.m)?,
                int(c.n)?,
                int(c.k)?,
                &alpha,
                first as *const f32,
                int(c.ld_first)?,
                c.stride_first as i64,
                second as *const f32,
                int(c.ld_second)?,
                c.stride_second as i64,
                &beta,
                out as *mut f32,
                int(c.ld_out)?,
                c.stride_out as i64,
                int(c.batch)?,
            )
        }
        .map_err(|e| err(format!("cuBLAS: {e:?}")))
    }
}
