//! The links' executor: `LinkUp`/`LinkDown` queued to the link drivers
//! (`crate::links`; never blocks). Its stream carries the drivers' reports
//! to the engine: a failure as `Event::LinkFailed` (with the attempt id of
//! the `LinkUp`), each finished `down` as `Event::LinkReleased`.
//!
//! A reload starts the drivers of new links before the engine's actions (a
//! group may ask for one at once) and ends those of removed links after
//! them (after their queued `down`).

use tokio::sync::mpsc;

use super::Executor;
use crate::config::{Config, LinkConfig};
use crate::ids::Slots;
use crate::links::{DriverEvent, DriverState, LinkDrivers};
use crate::model::{Action, Event, LinkId};
use crate::status::{DriverReport, DriverStatus};

pub(super) struct Links {
    drivers: LinkDrivers,
    reports: mpsc::UnboundedReceiver<DriverEvent>,
    configs: Slots<LinkId, LinkConfig>,
    /// Links a reload removed: their drivers end in `finish_reload`.
    retire: Vec<LinkId>,
}

impl Links {
    /// Starts the drivers (inside the tokio runtime).
    pub fn start(config: &Config) -> Links {
        let (report_tx, reports) = mpsc::unbounded_channel();
        Links {
            drivers: LinkDrivers::new(&config.links, report_tx),
            reports,
            configs: config.links.clone(),
            retire: Vec::new(),
        }
    }

    /// Each configured link's driver state, for `status`.
    pub fn status(&self) -> Vec<DriverStatus> {
        self.configs
            .iter()
            .map(|(i, l)| DriverStatus {
                link: l.name.clone(),
                driver: driver_report(self.drivers.state(i)),
            })
            .collect()
    }

    /// At stop: takes every link down, unless `keep` (`--keep-fastpath`).
    pub async fn shutdown(self, keep: bool) {
        self.drivers.shutdown(keep).await;
    }
}

impl Executor for Links {
    type Event = Event;

    fn execute(&mut self, action: &Action, requested_by: Option<&str>) {
        match action {
            Action::LinkUp { link, attempt } => {
                self.drivers.up(*link, *attempt, requested_by.unwrap_or(""));
            }
            Action::LinkDown { link } => self.drivers.down(*link),
            _ => {}
        }
    }

    async fn next_event(&mut self) -> Event {
        match self.reports.recv().await {
            Some(DriverEvent::Failed {
                link,
                attempt,
                error,
            }) => Event::LinkFailed {
                link,
                attempt,
                error,
            },
            Some(DriverEvent::Released { link }) => Event::LinkReleased { link },
            // Closed only once the drivers are shut down.
            None => std::future::pending().await,
        }
    }

    fn prepare_reload(&mut self, config: &Config) {
        let old_links = std::mem::replace(&mut self.configs, config.links.clone());
        for (i, l) in config.links.iter() {
            if old_links.is_vacant(i) {
                self.drivers.add(i, l);
            }
        }
        self.retire = old_links
            .iter()
            .filter(|(i, old)| config.links.get(*i).is_none_or(|n| n.name != old.name))
            .map(|(i, _)| i)
            .collect();
    }

    fn finish_reload(&mut self, _config: &Config) {
        for link in std::mem::take(&mut self.retire) {
            self.drivers.retire(link);
        }
    }
}

fn driver_report(s: DriverState) -> DriverReport {
    match s {
        DriverState::Idle => DriverReport::Idle,
        DriverState::Up => DriverReport::Up,
        DriverState::Running { pid } => DriverReport::Running { pid },
        DriverState::Stopping => DriverReport::Stopping,
    }
}
