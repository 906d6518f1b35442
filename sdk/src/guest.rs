//! Guest-side glue: the wit-bindgen bindings and the state behind
//! [`crate::export_plugin!`]. Plugin authors never touch this directly.

use std::any::Any;
use std::cell::RefCell;

use crate::{Plugin, codec, plugin};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "driftwatch_sdk::guest::bindings",
    });
}

pub use bindings::driftwatch::plugin::host::Level;

/// Logs through the host, which prefixes the plugin's name and rate-limits.
pub fn log(level: Level, message: &str) {
    bindings::driftwatch::plugin::host::log(level, message);
}

thread_local! {
    // A component instance is single-threaded; the host re-creates the
    // instance (and so this state) after any failure.
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Makes a panic log its message through the host before it traps (a
/// panic aborts into a trap, and the host sees no message otherwise).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        log(Level::Error, &format!("panic: {info}"))
    }));
}

#[doc(hidden)]
pub fn init<P: Plugin>(config: &[u8]) -> Result<Vec<u8>, String> {
    install_panic_hook();
    let cfg = plugin::decode_config::<P::Config>(config)?;
    let p = P::new(cfg)?;
    let manifest = codec::encode(&p.manifest()).map_err(|e| e.to_string())?;
    STATE.with_borrow_mut(|s| *s = Some(Box::new(p)));
    Ok(manifest)
}

#[doc(hidden)]
pub fn process_batch<P: Plugin>(events: &[u8]) -> Result<Vec<u8>, String> {
    STATE.with_borrow_mut(|s| {
        let p = s
            .as_mut()
            .and_then(|b| b.downcast_mut::<P>())
            .ok_or_else(|| "process-batch called before init".to_string())?;
        plugin::process_batch(p, events).map_err(|e| e.to_string())
    })
}

/// Exports a [`Plugin`] implementation as the component's `init` and
/// `process-batch`.
///
/// ```ignore
/// driftwatch_sdk::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        // Only a wasm build exports: natively (the chain bench links every
        // built-in) each plugin's `cabi_*` symbols would clash with the next.
        #[doc(hidden)]
        #[cfg(target_arch = "wasm32")]
        struct __DriftwatchExport;
        #[cfg(target_arch = "wasm32")]
        impl $crate::guest::bindings::Guest for __DriftwatchExport {
            fn init(config: ::std::vec::Vec<u8>) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                $crate::guest::init::<$ty>(&config)
            }
            fn process_batch(events: ::std::vec::Vec<u8>) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                $crate::guest::process_batch::<$ty>(&events)
            }
        }
        #[cfg(target_arch = "wasm32")]
        $crate::guest::bindings::__export_plugin_world!(__DriftwatchExport with_types_in $crate::guest::bindings);
    };
}
