//! One NVIDIA GPU: its context, a cuBLAS handle and device memory, opened
//! with an error that names what is missing (the driver, a GPU, cuBLAS)
//! instead of the panic `cudarc` gives when a library cannot be loaded.
//! Everything runs on the context's default stream, in order.

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as driver, sys, CudaContext};
use std::rc::Rc;
use std::sync::Arc;

pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub blas: blas_sys::cublasHandle_t,
    /// `NVIDIA H100 80GB HBM3`, …
    pub name: String,
    /// Compute capability: `(9, 0)` for an H100.
    pub capability: (u32, u32),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (sm_{}{})",
            self.name, self.capability.0, self.capability.1
        )
    }
}

impl Device {
    /// GPU `ordinal`, or why it cannot be used.
    pub fn open(ordinal: usize) -> Result<Device, String> {
        // SAFETY: only tries to load the library, reporting whether it could.
        if !unsafe { sys::is_culib_present() } {
            return Err(
                "no CUDA driver: libcuda.so could not be loaded. A GPU run needs an \
                        NVIDIA GPU and its driver; on a machine that has them, check that \
                        libcuda.so.1 is on the library path"
                    .into(),
            );
        }
        driver::init().map_err(|e| format!("the CUDA driver failed to start: {e}"))?;
        let count = CudaContext::device_count()
            .map_err(|e| format!("the CUDA driver cannot count its GPUs: {e}"))?;
        if count < 1 {
            return Err("the CUDA driver is installed but sees no GPU".into());
        }
        if ordinal >= count as usize {
            return Err(format!(
                "there is no GPU {ordinal}: the driver sees {count}"
            ));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| format!("cannot open a context on GPU {ordinal}: {e}"))?;
        let name = ctx.name().unwrap_or_else(|_| "an NVIDIA GPU".into());
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| format!("cannot read GPU {ordinal}'s compute capability: {e}"))?;
        // SAFETY: as above.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(
                "cuBLAS could not be loaded (libcublas.so.12): install CUDA's cuBLAS, \
                        or put a folder holding it on LD_LIBRARY_PATH (a PyTorch install has \
                        one under site-packages/nvidia/cublas/lib)"
                    .into(),
            );
        }
        let handle = blas::create_handle().map_err(|e| format!("cuBLAS did not start: {e:?}"))?;
        Ok(Device {
            ctx,
            blas: handle,
            name,
            capability: (major as u32, minor as u32),
        })
    }

    /// Makes the context current on the calling thread.
    pub fn bind(&self) -> Result<(), String> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| format!("cannot make the GPU's context current: {e}"))
    }

    /// Waits for everything queued, reporting the first failure of it.
    pub fn synchronize(&self) -> Result<(), String> {
        self.ctx
            .synchronize()
            .map_err(|e| format!("a GPU kernel failed: {e}"))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `open` and is used by no one now.
        let _ = unsafe { blas::destroy_handle(self.blas) };
    }
}

/// One device allocation, freed on drop.
#[derive(Debug)]
pub struct Memory {
    pub ptr: sys::CUdeviceptr,
    pub bytes: usize,
    device: Rc<Device>,
}

impl Memory {
    /// `bytes` of zeroed device memory.
    pub fn zeroed(device: &Rc<Device>, bytes: usize) -> Result<Memory, String> {
        device.bind()?;
        // SAFETY: a fresh allocation (at least one word, as the driver
        // refuses zero bytes), cleared before anyone reads it.
        let ptr = unsafe {
            let ptr = driver::malloc_sync(bytes.max(4))
                .map_err(|e| format!("cannot allocate {bytes} bytes on {}: {e}", device.name))?;
            driver::memset_d8_sync(ptr, 0, bytes.max(4))
                .map_err(|e| format!("cannot clear device memory: {e}"))?;
            ptr
        };
        Ok(Memory {
            ptr,
            bytes,
            device: device.clone(),
        })
    }

    pub fn upload<T: cudarc::driver::DeviceRepr>(&self, data: &[T]) -> Result<(), String> {
        assert_eq!(std::mem::size_of_val(data), self.bytes);
        self.device.bind()?;
        // SAFETY: the allocation holds exactly `data`'s bytes.
        unsafe { driver::memcpy_htod_sync(self.ptr, data) }
            .map_err(|e| format!("copying to the GPU: {e}"))
    }

    pub fn download<T: cudarc::driver::DeviceRepr>(&self, out: &mut [T]) -> Result<(), String> {
        assert_eq!(std::mem::size_of_val(out), self.bytes);
        self.device.bind()?;
        // SAFETY: as in `upload`; the copy waits for queued kernels.
        unsafe { driver::memcpy_dtoh_sync(out, self.ptr) }
            .map_err(|e| format!("copying from the GPU: {e}"))
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.device.bind().is_ok() {
            // SAFETY: allocated by `zeroed`, freed once.
            let _ = unsafe { driver::free_sync(self.ptr) };
        }
    }
}
