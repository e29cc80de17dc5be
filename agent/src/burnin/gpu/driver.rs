//! Starting the NVIDIA stack for the burn-in: the libraries cudarc would panic without, NVML,
//! and `cuInit` with the CUDA ordinal of each GPU, each bounded in time. What fails becomes
//! the one reason every GPU gives (`cannot_validate`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::DriverError;
use cudarc::driver::sys::CUresult;
use nvml_wrapper::Nvml;

use super::peers;
use super::supervise;

/// NVML and the CUDA ordinals of the GPUs by PCI address, or why there are none.
pub fn open(limit: Duration) -> Result<(Arc<Nvml>, BTreeMap<String, usize>), String> {
    missing_libraries().map_err(|missing| format!("no NVIDIA driver: {missing}"))?;
    // Without persistence mode NVML's start brings up every GPU: seconds, or a hang.
    let nvml = match supervise::bounded(limit, Nvml::init) {
        Ok(Ok(nvml)) => Arc::new(nvml),
        Ok(Err(e)) => return Err(format!("no NVIDIA driver: NVML: {e}")),
        Err(e) => return Err(format!("NVML start-up {e}")),
    };
    match supervise::bounded(limit, peers::pci_ordinals) {
        Ok(Ok(ordinals)) => Ok((nvml, ordinals)),
        Ok(Err(e)) => Err(cuda_start_error(e)),
        Err(e) => Err(format!("CUDA start-up {e}")),
    }
}

/// Why CUDA would not start. On NVSwitch systems (HGX, GB200) CUDA waits for the fabric
/// manager, and says so with `CUDA_ERROR_SYSTEM_NOT_READY`: the driver is there.
fn cuda_start_error(e: DriverError) -> String {
    match e {
        DriverError(CUresult::CUDA_ERROR_SYSTEM_NOT_READY) => {
            "fabric manager not running (CUDA_ERROR_SYSTEM_NOT_READY)".into()
        }
        // The code's name only: `DriverError`'s Display asks libcuda for the text, and the
        // libcuda that just failed to start may be the broken part.
        DriverError(code) => format!("no NVIDIA driver: cuInit: {code:?}"),
    }
}

/// The libraries cudarc would otherwise panic without: the driver's libcuda, NVRTC and cuBLAS.
fn missing_libraries() -> Result<(), String> {
    // SAFETY: each only tries to dlopen the library under its usual names.
    let found = unsafe {
        [
            ("libcuda", cudarc::driver::sys::is_culib_present()),
            ("libnvrtc", cudarc::nvrtc::sys::is_culib_present()),
            ("libcublas", cudarc::cublas::sys::is_culib_present()),
        ]
    };
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    Err(format!(
        "{} not found (LD_LIBRARY_PATH={path:?})",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_fabric_manager_is_not_a_missing_driver() {
        let why = cuda_start_error(DriverError(CUresult::CUDA_ERROR_SYSTEM_NOT_READY));
        assert_eq!(
            why,
            "fabric manager not running (CUDA_ERROR_SYSTEM_NOT_READY)"
        );
        let why = cuda_start_error(DriverError(CUresult::CUDA_ERROR_NO_DEVICE));
        assert_eq!(why, "no NVIDIA driver: cuInit: CUDA_ERROR_NO_DEVICE");
    }
}
