//! Which launch each event of the log belongs to: built from the log at
//! start and kept up to date with every recorded event.

use std::collections::{HashMap, HashSet};

use attestation_proto::eventlog::{Event, ZoneEvent};
use attestation_proto::launch::{LaunchRecord, StopRecord};

/// Launch and stop events of the log, by launch id.
#[derive(Debug, Default, Clone)]
pub struct LogIndex {
    /// Per event: the launch id it belongs to (zone events only).
    pub owners: Vec<Option<String>>,
    /// Launch id → index of its launch event.
    pub launches: HashMap<String, usize>,
    /// Launch ids with a stop event.
    pub stopped: HashSet<String>,
}

/// The launch id of a zone event, and whether it is a launch (else a stop).
pub fn owner_of(event: &Event) -> Option<(String, bool)> {
    match event.zone_event()? {
        ZoneEvent::Launch(d) => LaunchRecord::decode(d).ok().map(|r| (r.launch_id, true)),
        ZoneEvent::Stop(d) => StopRecord::decode(d).ok().map(|r| (r.launch_id, false)),
        ZoneEvent::Redacted => None,
    }
}

impl LogIndex {
    /// The index of `events`.
    pub fn of(events: &[Event]) -> Self {
        let mut index = Self::default();
        for e in events {
            index.push(owner_of(e));
        }
        index
    }

    /// Adds the next event, given its owner.
    pub fn push(&mut self, owner: Option<(String, bool)>) {
        if let Some((id, is_launch)) = &owner {
            if *is_launch {
                self.launches.insert(id.clone(), self.owners.len());
            } else {
                self.stopped.insert(id.clone());
            }
        }
        self.owners.push(owner.map(|(id, _)| id));
    }
}
