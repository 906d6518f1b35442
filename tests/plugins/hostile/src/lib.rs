//! A plugin that misbehaves on purpose, to prove the host contains it.
//! It implements the raw ABI (not the SDK trait) so it can return garbage.
//!
//! Config: `mode` picks the misbehaviour; with `trigger` set it misbehaves
//! only on batches holding an event whose `process.name` equals it, and
//! passes everything otherwise. `prefilter` goes into the manifest as is.
//! Modes starting with `init-` misbehave in `init` instead of on batches.

use std::cell::RefCell;

use driftwatch_sdk::codec;
use driftwatch_sdk::guest::bindings::Guest;
use driftwatch_sdk::guest::{Level, log};
use driftwatch_sdk::{Condition, Event, EventKind, Manifest, Priority, RuleSpec, Verdict};
use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
struct Config {
    mode: String,
    trigger: Option<String>,
    /// For `mode = "fail-init"`.
    init_error: Option<String>,
    /// Declared in the manifest as is, to test the host's prefiltering.
    prefilter: Vec<Condition>,
}

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

struct Hostile;

impl Guest for Hostile {
    fn init(config: Vec<u8>) -> Result<Vec<u8>, String> {
        driftwatch_sdk::guest::install_panic_hook();
        let cfg: Config = driftwatch_sdk::plugin::decode_config(&config)?;
        match cfg.mode.as_str() {
            "fail-init" => {
                return Err(cfg.init_error.unwrap_or_else(|| "refusing to start".into()));
            }
            "init-loop" => spin(),
            "init-memory-bomb" => hoard(),
            _ => {}
        }
        // One declared rule; `init-bad-rule` declares a template naming a
        // field nobody knows.
        let output = match cfg.mode.as_str() {
            "init-bad-rule" => "hostile saw %proc.nmae",
            _ => "hostile saw %proc.name",
        };
        let m = Manifest::new("hostile", "0.0.1", &EventKind::ALL)
            .with_prefilter(cfg.prefilter.clone())
            .with_rule(RuleSpec::new("Hostile Rule", output));
        CONFIG.with_borrow_mut(|c| *c = cfg);
        codec::encode(&m).map_err(|e| e.to_string())
    }

    fn process_batch(events: Vec<u8>) -> Result<Vec<u8>, String> {
        let cfg = CONFIG.with_borrow(|c| c.clone());
        let mut evs: Vec<Event> = Vec::new();
        codec::decode_array(&events, |e| evs.push(e)).map_err(|e| e.to_string())?;
        let triggered = match &cfg.trigger {
            None => true,
            Some(t) => evs.iter().any(|e| e.process.name == *t),
        };
        let pass_all =
            || codec::encode_array(&vec![Verdict::pass(); evs.len()]).map_err(|e| e.to_string());
        if !triggered {
            return pass_all();
        }
        match cfg.mode.as_str() {
            "loop" => spin(),
            "memory-bomb" => hoard(),
            "panic" => panic!("hostile plugin panics on purpose"),
            "error" => Err("hostile plugin returns an error".into()),
            "garbage" => Ok(vec![0xc1, 0xff, 0x00, 0x13, 0x37]),
            "wrong-count" => codec::encode_array(&vec![Verdict::pass(); evs.len() + 1])
                .map_err(|e| e.to_string()),
            "huge-output" => {
                // 8 MiB of valid-looking verdict padding: under the memory
                // cap, over the output bound the tests set.
                let mut out = Vec::with_capacity(8 << 20);
                codec::write_array_header(&mut out, evs.len());
                out.resize(8 << 20, 0x80);
                Ok(out)
            }
            "log-flood" => {
                for i in 0..2_000 {
                    log(Level::Warn, &format!("flood {i}"));
                }
                pass_all()
            }
            // Marks every event it is given, so a test sees which it got.
            "mark" => {
                let mut v = Verdict::pass();
                v.fields.insert("hostile.seen".into(), "yes".into());
                codec::encode_array(&vec![v; evs.len()]).map_err(|e| e.to_string())
            }
            // Fires the declared rule (0), or one it never declared (3).
            "fire" | "undeclared-rule" => {
                let rule = if cfg.mode == "fire" { 0 } else { 3 };
                codec::encode_array(&vec![Verdict::fire(rule, Priority::Notice); evs.len()])
                    .map_err(|e| e.to_string())
            }
            "drop-all" => {
                codec::encode_array(&vec![Verdict::drop(); evs.len()]).map_err(|e| e.to_string())
            }
            _ => pass_all(),
        }
    }
}

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

driftwatch_sdk::guest::bindings::__export_plugin_world!(Hostile with_types_in driftwatch_sdk::guest::bindings);
