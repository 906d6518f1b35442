//! Enrichers fill in what the kernel cannot know (container name and image,
//! Kubernetes pod) before events reach the plugin chain.
//!
//! They run on the chain's thread, batch by batch, so they must answer from
//! memory: a cache miss is filled in the background (or left unknown, never
//! invented) rather than blocking on I/O.

pub mod container;
pub mod exe_hash;
pub mod lineage;
pub mod program_file;
pub mod user;

use driftwatch_sdk::Event;

pub trait Enricher: Send {
    /// Fills fields of `event` it knows about; leaves the rest alone.
    fn enrich(&mut self, event: &mut Event);

    /// Fills a whole batch, in order. An enricher that hands work to
    /// another thread waits for it here, once per batch, never per event.
    fn enrich_batch(&mut self, events: &mut [Event]) {
        events.iter_mut().for_each(|ev| self.enrich(ev));
    }
}
