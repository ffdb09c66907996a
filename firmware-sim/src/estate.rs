//! The simulated estate: which devices exist, of what kind, and where they are.
//!
//! [`demo_devices`] mirrors the demo device list that `config/gateway.toml` ships, so
//! events the simulator publishes arrive at the gateway as *registered* devices. Devices
//! the gateway does not know are only ever produced by [`unregistered_devices`], and the
//! simulator uses them only when a caller adds them to its device list explicitly.

use estate_protocols::model::{DeviceKind, Location};

/// One simulated field device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDevice {
    /// Device id as configured on the gateway; the last topic level before `event`.
    pub id: String,
    /// What the device is; decides its topic's kind level and which scenarios use it.
    pub kind: DeviceKind,
    /// Where it is, as in the gateway's config (the gateway takes the location from there, not from the message).
    pub location: Location,
}

impl SimDevice {
    /// A device `id` of `kind` at `location`.
    pub fn new(id: &str, kind: DeviceKind, location: Location) -> Self {
        SimDevice {
            id: id.to_owned(),
            kind,
            location,
        }
    }
}

fn loc(building: &str, unit: &str, floor: &str, room: &str, zone: &str) -> Location {
    Location {
        building: building.to_owned(),
        unit: unit.to_owned(),
        floor: floor.to_owned(),
        room: room.to_owned(),
        zone: zone.to_owned(),
    }
}

/// The demo estate: one device of every [`DeviceKind`] except `gateway`, with the ids and
/// kinds of the demo device list in `config/gateway.toml`.
pub fn demo_devices() -> Vec<SimDevice> {
    use DeviceKind as K;
    // Locations as in config/gateway.toml, so a scenario's "building 1" is the gateway's.
    vec![
        SimDevice::new("smoke-1-1-3", K::Smoke, loc("1", "1", "3", "301", "")),
        SimDevice::new(
            "leak-b2-pump",
            K::WaterLeak,
            loc("2", "", "B1", "pump room", ""),
        ),
        SimDevice::new("gas-1-kitchen", K::Gas, loc("1", "", "1", "kitchen", "")),
        SimDevice::new(
            "door-1-main",
            K::AccessControl,
            loc("1", "1", "1", "", "lobby"),
        ),
        SimDevice::new(
            "cam-gate-north",
            K::Camera,
            loc("", "", "", "", "north gate"),
        ),
        SimDevice::new(
            "panel-1",
            K::FirePanel,
            loc("1", "", "1", "fire control room", ""),
        ),
        SimDevice::new(
            "mcp-1-1",
            K::ManualCallPoint,
            loc("1", "1", "1", "", "stairwell"),
        ),
        SimDevice::new("lift-1-a", K::Elevator, loc("1", "1", "", "", "lift A")),
        SimDevice::new(
            "sos-0307",
            K::EmergencyButton,
            loc("3", "1", "3", "307", ""),
        ),
        SimDevice::new(
            "valve-b2-main",
            K::Valve,
            loc("2", "", "B1", "pump room", ""),
        ),
        SimDevice::new("sounder-1", K::Sounder, loc("1", "", "1", "", "lobby")),
    ]
}

/// Devices that are *not* in the shipped configuration (ids prefixed `unreg-`), for
/// exercising the gateway's path for unknown devices. Append them to
/// [`crate::publish::PublishOptions::devices`] to use them.
pub fn unregistered_devices() -> Vec<SimDevice> {
    use DeviceKind as K;
    vec![
        SimDevice::new("unreg-smoke-1-2-7", K::Smoke, loc("1", "2", "7", "", "")),
        SimDevice::new("unreg-leak-b1", K::WaterLeak, loc("", "", "B1", "", "")),
        SimDevice::new(
            "unreg-sos-1102",
            K::EmergencyButton,
            loc("1", "", "11", "1102", ""),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_estate_has_every_kind_but_gateway_once() {
        let devices = demo_devices();
        for kind in DeviceKind::ALL {
            let n = devices.iter().filter(|d| d.kind == *kind).count();
            let want = usize::from(*kind != DeviceKind::Gateway);
            assert_eq!(n, want, "{kind}");
        }
        let mut ids: Vec<_> = devices.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), devices.len(), "ids are unique");
    }

    /// The simulator's devices must be registered on the shipped demo gateway.
    #[test]
    fn demo_estate_matches_the_shipped_gateway_config() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");
        let text = std::fs::read_to_string(path).expect("config/gateway.toml is readable");
        let cfg: toml::Value = text.parse().expect("config/gateway.toml parses");
        let mut shipped: Vec<(String, String)> = cfg
            .get("devices")
            .and_then(|d| d.as_array())
            .expect("[[devices]] list")
            .iter()
            // Devices of third-party sources are formats::mixed_estate's (checked there).
            .filter(|d| d.get("source").is_none())
            .map(|d| {
                let field = |k: &str| {
                    d.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                (field("id"), field("kind"))
            })
            .collect();
        let mut ours: Vec<(String, String)> = demo_devices()
            .into_iter()
            .map(|d| (d.id, d.kind.as_str().to_owned()))
            .collect();
        shipped.sort();
        ours.sort();
        assert_eq!(ours, shipped);
    }
}
