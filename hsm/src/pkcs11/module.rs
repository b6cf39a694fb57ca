//! One initialised PKCS#11 module per library path per process.
//!
//! `C_Initialize` and `C_Finalize` act on the whole library, not on one caller: a second
//! `C_Initialize` fails with `CKR_CRYPTOKI_ALREADY_INITIALIZED`, and a `C_Finalize` invalidates every
//! session anybody in the process holds. So every store on the same module shares one [`Module`],
//! found in a process-wide map, and the module is never finalised behind a store's back except
//! through [`Module::reinitialize`], which waits for in-flight calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock, RwLockReadGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::Error;

/// A loaded and initialised PKCS#11 library.
#[derive(Debug)]
pub(crate) struct Module {
    path: PathBuf,
    context: Pkcs11,
    /// Held for reading by every call that uses a session or slot, for writing while the library
    /// is finalised and initialised again.
    calls: RwLock<()>,
    /// Bumped each time the library is initialised again. Session and object handles of an older
    /// epoch are dead, and their numbers may have been handed out again, so they are never used
    /// or closed.
    epoch: AtomicU64,
}

/// Proof that the module is initialised and will stay so until the guard drops.
pub(crate) struct Calls<'a> {
    _guard: RwLockReadGuard<'a, ()>,
    /// The epoch the guard was taken in.
    pub(crate) epoch: u64,
}

static MODULES: LazyLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = LazyLock::new(Default::default);

// === impl Module ===

impl Module {
    /// The module at `path`, loaded and initialised on first use.
    ///
    /// # Errors
    ///
    /// [`Error::Module`] when the library cannot be loaded or initialised.
    pub(crate) fn get(path: &Path) -> Result<Arc<Module>, Error> {
        // Two spellings of one path must not load the library twice.
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut modules = MODULES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(module) = modules.get(&key) {
            return Ok(Arc::clone(module));
        }
        let module_error = |reason: String| Error::Module {
            module: path.to_owned(),
            reason,
        };
        let context = Pkcs11::new(&key).map_err(|e| module_error(e.to_string()))?;
        initialize(&context).map_err(|e| module_error(format!("C_Initialize: {e}")))?;
        tracing::info!(module = %key.display(), "loaded PKCS#11 module");
        let module = Arc::new(Module {
            path: path.to_owned(),
            context,
            calls: RwLock::new(()),
            epoch: AtomicU64::new(0),
        });
        modules.insert(key, Arc::clone(&module));
        Ok(module)
    }

    /// The module path as configured.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The cryptoki context. Callers hold a [`Calls`] guard while they use it.
    pub(crate) fn context(&self) -> &Pkcs11 {
        &self.context
    }

    /// Takes the guard that keeps the library initialised during a call.
    pub(crate) fn calls(&self) -> Calls<'_> {
        let guard = self
            .calls
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Calls {
            _guard: guard,
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    /// Initialises the library again if somebody finalised it (`CKR_CRYPTOKI_NOT_INITIALIZED`).
    /// The caller MUST NOT hold a [`Calls`] guard.
    pub(crate) fn ensure_initialized(&self) -> Result<(), CkError> {
        let _guard = self
            .calls
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match self.context.initialize(init_args()) {
            Ok(()) => {
                self.epoch.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(module = %self.path.display(), "PKCS#11 module was finalised; initialised it again");
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Finalises and initialises the library, once no call is in flight. Every session in the
    /// process is lost. The caller MUST NOT hold a [`Calls`] guard.
    pub(crate) fn reinitialize(&self) -> Result<(), CkError> {
        let _guard = self
            .calls
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match self.context.clone().finalize() {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
            Err(e) => return Err(e),
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        initialize(&self.context)
    }
}

fn init_args() -> CInitializeArgs {
    // Many threads call in at once; the library must lock with the operating system's mutexes.
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

/// `C_Initialize`, where "already initialised" (by another user of the library in this process)
/// counts as success.
fn initialize(context: &Pkcs11) -> Result<(), CkError> {
    match context.initialize(init_args()) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}
