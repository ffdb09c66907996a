//! The `GatewayStatus` the link publishes: taken from what the stages already keep
//! (store counters, the alert engine's devices and open alerts, `/healthz`'s registry,
//! the metrics, the audit chain's head), plus one store read for the age of the oldest
//! unforwarded event.
//! Blocking (sled, statvfs, a walk of the store's folder): call from the blocking pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use estate_protocols::model::{DeviceKind, Lane};
use estate_protocols::pb;

use crate::alerts::model::DeviceStatus;
use crate::alerts::AlertsHandle;
use crate::events::now_ms;
use crate::store::{StoreError, StoreReader};
use crate::telemetry::{Metrics, ModbusBusLabel};

/// Everything a status is read from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub gateway_id: String,
    pub estate_id: String,
    pub boot_id: String,
    pub started: Instant,
    pub reader: StoreReader,
    pub alerts: AlertsHandle,
    pub metrics: Arc<Metrics>,
    /// The store's folder (its size; the filesystem's used and free space).
    pub store_dir: PathBuf,
    /// `[[modbus.buses]]` names.
    pub buses: Vec<String>,
}

impl Sources {
    /// The status now; `command_id` set when it answers a STATUS command.
    pub fn take(&self, command_id: &str) -> Result<pb::GatewayStatus, StoreError> {
        let now = now_ms();
        let r = &self.reader;
        let lanes = self.lanes(now)?;
        let devices = self.device_counts();
        let open_alerts = self.open_alert_counts()?;
        let head = self.alerts.store().audit_head();
        let dir = &self.store_dir;
        let total = fs2::total_space(dir).unwrap_or(0);
        let disk_free_bytes = crate::store::free_bytes(dir).ok().flatten().unwrap_or(0);
        let disk_used_bytes = total.saturating_sub(fs2::free_space(dir).unwrap_or(total));
        let store_bytes = crate::store::dir_disk_bytes(dir).unwrap_or(0);
        let m = &self.metrics;
        let modbus_buses_failing = self.buses_failing();
        let conditions = m.health.conditions();
        let health = m
            .health
            .worst()
            .map_or("ok", crate::health::Level::as_str)
            .to_owned();
        let reasons = conditions
            .into_iter()
            .map(|(key, c)| format!("{key}: {}", c.reason))
            .collect();
        Ok(pb::GatewayStatus {
            gateway_id: self.gateway_id.clone(),
            estate_id: self.estate_id.clone(),
            boot_id: self.boot_id.clone(),
            store_epoch: r.epoch(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            at_ms: now,
            lanes,
            devices: Some(devices),
            open_alerts: Some(open_alerts),
            disk_used_bytes,
            disk_free_bytes,
            store_bytes,
            ingest_connected: m.ingest_connected.get() == 1,
            modbus_buses: self.buses.len() as u32,
            modbus_buses_failing,
            health,
            reasons,
            audit_head: head
                .map(|h| crate::alerts::chain::hex(&h.hash))
                .unwrap_or_default(),
            audit_head_n: head.map_or(0, |h| h.n),
            command_id: command_id.to_owned(),
        })
    }
    /// Each lane's backlog, cursor and the age of its oldest unforwarded event.
    fn lanes(&self, now: i64) -> Result<Vec<pb::LaneStatus>, StoreError> {
        let r = &self.reader;
        let mut lanes = Vec::with_capacity(2);
        for lane in Lane::ALL {
            let backlog = r.backlog(lane);
            let cursor = r.cursor(lane);
            let oldest_unforwarded_age_ms = if backlog == 0 {
                0
            } else {
                r.read_lane(lane, cursor, 1, usize::MAX)?
                    .first()
                    .map_or(0, |e| now.saturating_sub(e.gateway_time_ms).max(0) as u64)
            };
            lanes.push(pb::LaneStatus {
                lane: pb::Lane::from(lane).into(),
                backlog,
                oldest_unforwarded_age_ms,
                last_seq: r.last_seq(lane),
                forwarded_seq: cursor,
            });
        }
        Ok(lanes)
    }

    /// Devices online, offline (and of those, life-safety ones) and unknown.
    fn device_counts(&self) -> pb::DeviceCounts {
        let mut devices = pb::DeviceCounts::default();
        for d in self.alerts.devices() {
            match d.status {
                DeviceStatus::Online => devices.online += 1,
                DeviceStatus::Unknown => devices.unknown += 1,
                DeviceStatus::Offline => {
                    devices.offline += 1;
                    let life_safety = d
                        .kind
                        .as_deref()
                        .and_then(|k| k.parse::<DeviceKind>().ok())
                        .is_some_and(DeviceKind::is_life_safety);
                    if life_safety {
                        devices.offline_life_safety += 1;
                    }
                }
            }
        }
        devices
    }

    /// Open alerts by severity.
    fn open_alert_counts(&self) -> Result<pb::AlertCounts, StoreError> {
        let mut open_alerts = pb::AlertCounts::default();
        for a in self.alerts.store().open_alerts()? {
            match a.severity {
                1 => open_alerts.critical += 1,
                2 => open_alerts.major += 1,
                3 => open_alerts.minor += 1,
                _ => open_alerts.info += 1,
            }
        }
        Ok(open_alerts)
    }

    /// How many configured Modbus buses are not connected.
    fn buses_failing(&self) -> u32 {
        let m = &self.metrics;
        self.buses
            .iter()
            .filter(|bus| {
                m.modbus_bus_connected
                    .get_or_create(&ModbusBusLabel {
                        bus: (*bus).clone(),
                    })
                    .get()
                    != 1
            })
            .count() as u32
    }
}
