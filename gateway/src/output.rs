//! What a device output is told: a write to one coil or one holding register. Linkage
//! (`alerts/`) and broadcasts (`duty/`) ask for it, the Modbus stage (`ingest/modbus/`)
//! carries it out; it lives here so that neither side imports the other.

/// A write to a device output: one coil (FC05) or one holding register (FC06).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Set one coil (FC05): `value` on or off.
    Coil {
        /// The coil's 0-based address.
        address: u16,
        /// On (`true`) or off.
        value: bool,
    },
    /// Write one holding register (FC06).
    Register {
        /// The register's 0-based address.
        address: u16,
        /// The raw 16-bit value written.
        value: u16,
    },
}
