//! Pure Modbus framing: the request PDU model, response and exception encoding, Modbus TCP
//! (MBAP header) and RTU (unit + PDU + CRC-16) frames.
//!
//! Only what a server needs: it parses requests and builds responses. Function codes 01–06,
//! 15 and 16 are understood; anything else is answered with exception 01.

/// Exception codes used by the simulator.
pub mod exception {
    /// 01: the function code is not supported.
    pub const ILLEGAL_FUNCTION: u8 = 0x01;
    /// 02: an address (or the range from it) the device does not have, or a read-only one
    /// written to.
    pub const ILLEGAL_DATA_ADDRESS: u8 = 0x02;
    /// 03: a value or count the request may not carry (a count of 0, too many items).
    pub const ILLEGAL_DATA_VALUE: u8 = 0x03;
    /// 04: the device failed while handling the request.
    pub const SERVER_DEVICE_FAILURE: u8 = 0x04;
    /// 06: busy with a long command; the client should retry later.
    pub const SERVER_DEVICE_BUSY: u8 = 0x06;
    /// 0B: a gateway got no answer from the target device.
    pub const GATEWAY_TARGET_FAILED: u8 = 0x0B;
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Coils: read/write bits (FC 01, 05, 15).
    Coil,
    /// Discrete inputs: read-only bits (FC 02).
    Discrete,
    /// Input registers: read-only 16-bit words (FC 04).
    Input,
    /// Holding registers: read/write 16-bit words (FC 03, 06, 16).
    Holding,
}

/// A decoded request PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FC 01 / 02 / 03 / 04.
    Read {
        /// The table the function code reads.
        table: Table,
        /// First address, zero-based.
        address: u16,
        /// Items to read (bits or registers).
        count: u16,
    },
    /// FC 05.
    WriteCoil {
        /// The coil, zero-based.
        address: u16,
        /// On (0xFF00 on the wire) or off (0x0000).
        value: bool,
    },
    /// FC 06.
    WriteRegister {
        /// The holding register, zero-based.
        address: u16,
        /// The value to write.
        value: u16,
    },
    /// FC 15.
    WriteCoils {
        /// First coil, zero-based.
        address: u16,
        /// One value per coil from `address` on.
        values: Vec<bool>,
    },
    /// FC 16.
    WriteRegisters {
        /// First holding register, zero-based.
        address: u16,
        /// One value per register from `address` on.
        values: Vec<u16>,
    },
    /// Anything else, or a malformed request: answered with this exception.
    Invalid {
        /// The request's function code (answered with it | 0x80).
        function: u8,
        /// The exception code to answer with ([`exception`]).
        exception: u8,
    },
}

impl Request {
    /// The function code.
    pub fn function(&self) -> u8 {
        match self {
            Request::Read { table, .. } => match table {
                Table::Coil => 1,
                Table::Discrete => 2,
                Table::Holding => 3,
                Table::Input => 4,
            },
            Request::WriteCoil { .. } => 5,
            Request::WriteRegister { .. } => 6,
            Request::WriteCoils { .. } => 15,
            Request::WriteRegisters { .. } => 16,
            Request::Invalid { function, .. } => *function,
        }
    }

    /// (address, count) of the request, for the request log.
    pub fn span(&self) -> (u16, u16) {
        match self {
            Request::Read { address, count, .. } => (*address, *count),
            Request::WriteCoil { address, .. } | Request::WriteRegister { address, .. } => {
                (*address, 1)
            }
            Request::WriteCoils { address, values } => (*address, values.len() as u16),
            Request::WriteRegisters { address, values } => (*address, values.len() as u16),
            Request::Invalid { .. } => (0, 0),
        }
    }
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Parses a request PDU (function code first).
pub fn parse_request(pdu: &[u8]) -> Request {
    let Some(&function) = pdu.first() else {
        return Request::Invalid {
            function: 0,
            exception: exception::ILLEGAL_FUNCTION,
        };
    };
    let bad_value = Request::Invalid {
        function,
        exception: exception::ILLEGAL_DATA_VALUE,
    };
    let (Some(a), Some(b)) = (be16(pdu, 1), be16(pdu, 3)) else {
        return if matches!(function, 1..=6 | 15 | 16) {
            bad_value
        } else {
            Request::Invalid {
                function,
                exception: exception::ILLEGAL_FUNCTION,
            }
        };
    };
    match function {
        1..=4 => {
            let table = match function {
                1 => Table::Coil,
                2 => Table::Discrete,
                3 => Table::Holding,
                _ => Table::Input,
            };
            let max = if function <= 2 { 2000 } else { 125 };
            if b == 0 || b > max {
                return bad_value;
            }
            Request::Read {
                table,
                address: a,
                count: b,
            }
        }
        5 => match b {
            0xFF00 => Request::WriteCoil {
                address: a,
                value: true,
            },
            0x0000 => Request::WriteCoil {
                address: a,
                value: false,
            },
            _ => bad_value,
        },
        6 => Request::WriteRegister {
            address: a,
            value: b,
        },
        15 => {
            let bc = pdu.get(5).copied().unwrap_or(0) as usize;
            if b == 0 || b > 1968 || bc != (b as usize).div_ceil(8) || pdu.len() < 6 + bc {
                return bad_value;
            }
            let values = (0..b as usize)
                .map(|i| pdu[6 + i / 8] & (1 << (i % 8)) != 0)
                .collect();
            Request::WriteCoils { address: a, values }
        }
        16 => {
            let bc = pdu.get(5).copied().unwrap_or(0) as usize;
            if b == 0 || b > 123 || bc != 2 * b as usize || pdu.len() < 6 + bc {
                return bad_value;
            }
            let values = (0..b as usize)
                .map(|i| u16::from_be_bytes([pdu[6 + 2 * i], pdu[7 + 2 * i]]))
                .collect();
            Request::WriteRegisters { address: a, values }
        }
        _ => Request::Invalid {
            function,
            exception: exception::ILLEGAL_FUNCTION,
        },
    }
}

/// The response PDU to `req` given the data read (`words` for registers, `bits` for
/// coils / discrete inputs; ignored for writes).
pub fn response_pdu(req: &Request, words: &[u16], bits: &[bool]) -> Vec<u8> {
    let f = req.function();
    match req {
        Request::Read { table, .. } => match table {
            Table::Coil | Table::Discrete => {
                let n = bits.len().div_ceil(8);
                let mut out = vec![f, n as u8];
                out.resize(2 + n, 0);
                for (i, b) in bits.iter().enumerate() {
                    if *b {
                        out[2 + i / 8] |= 1 << (i % 8);
                    }
                }
                out
            }
            Table::Input | Table::Holding => {
                let mut out = vec![f, (words.len() * 2) as u8];
                for w in words {
                    out.extend_from_slice(&w.to_be_bytes());
                }
                out
            }
        },
        Request::WriteCoil { address, value } => {
            let v: u16 = if *value { 0xFF00 } else { 0 };
            let mut out = vec![f];
            out.extend_from_slice(&address.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
            out
        }
        Request::WriteRegister { address, value } => {
            let mut out = vec![f];
            out.extend_from_slice(&address.to_be_bytes());
            out.extend_from_slice(&value.to_be_bytes());
            out
        }
        Request::WriteCoils { address, values } => {
            let mut out = vec![f];
            out.extend_from_slice(&address.to_be_bytes());
            out.extend_from_slice(&(values.len() as u16).to_be_bytes());
            out
        }
        Request::WriteRegisters { address, values } => {
            let mut out = vec![f];
            out.extend_from_slice(&address.to_be_bytes());
            out.extend_from_slice(&(values.len() as u16).to_be_bytes());
            out
        }
        Request::Invalid { exception, .. } => exception_pdu(f, *exception),
    }
}

/// An exception response PDU.
pub fn exception_pdu(function: u8, code: u8) -> Vec<u8> {
    vec![function | 0x80, code]
}

// ---------------------------------------------------------------------------------------
// Modbus TCP
// ---------------------------------------------------------------------------------------

/// One MBAP frame split off a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFrame<'a> {
    /// The MBAP transaction id, echoed in the response.
    pub tid: u16,
    /// The unit id (the device behind a gateway; often 1 or 255 on plain TCP).
    pub unit: u8,
    /// The PDU: function code and data.
    pub pdu: &'a [u8],
    /// Bytes the frame took from the buffer.
    pub len: usize,
}

/// One complete MBAP frame at the start of `buf`. `Ok(None)` when more bytes are needed;
/// `Err` when the header is nonsense (the connection should be closed, as real servers
/// do).
pub fn split_tcp(buf: &[u8]) -> Result<Option<TcpFrame<'_>>, String> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let tid = u16::from_be_bytes([buf[0], buf[1]]);
    let proto = u16::from_be_bytes([buf[2], buf[3]]);
    let len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
    if proto != 0 {
        return Err(format!("MBAP protocol id {proto} is not 0"));
    }
    if !(2..=254).contains(&len) {
        return Err(format!("MBAP length {len} out of range"));
    }
    let total = 6 + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(TcpFrame {
        tid,
        unit: buf[6],
        pdu: &buf[7..total],
        len: total,
    }))
}

/// A Modbus TCP frame: MBAP header + PDU.
pub fn tcp_frame(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + pdu.len());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    out.push(unit);
    out.extend_from_slice(pdu);
    out
}

// ---------------------------------------------------------------------------------------
// Modbus RTU
// ---------------------------------------------------------------------------------------

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF). Sent low byte first.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// An RTU frame: unit, PDU, CRC (low byte first).
pub fn rtu_frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + pdu.len());
    out.push(unit);
    out.extend_from_slice(pdu);
    let crc = crc16(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Result of looking for one RTU request frame at the start of a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum RtuSplit<'a> {
    /// More bytes needed.
    Incomplete,
    /// A frame with a good CRC: unit, PDU, frame length.
    Frame(u8, &'a [u8], usize),
    /// A frame of known length whose CRC does not match: skip this many bytes (a real
    /// slave ignores it and stays silent).
    BadCrc(usize),
}

/// Splits one RTU *request* off `buf`. RTU has no length field: a request's length
/// follows from its function code (01–06: 8 bytes; 15/16: 9 + byte count). For an
/// unknown function code the whole buffer is taken as one frame (on a serial line the
/// 3.5-character gap would end it).
pub fn split_rtu_request(buf: &[u8]) -> RtuSplit<'_> {
    if buf.len() < 2 {
        return RtuSplit::Incomplete;
    }
    let len = match buf[1] {
        1..=6 => 8,
        15 | 16 => {
            if buf.len() < 7 {
                return RtuSplit::Incomplete;
            }
            9 + buf[6] as usize
        }
        _ => buf.len().max(4),
    };
    if buf.len() < len {
        return RtuSplit::Incomplete;
    }
    let frame = &buf[..len];
    let crc = u16::from_le_bytes([frame[len - 2], frame[len - 1]]);
    if crc16(&frame[..len - 2]) != crc {
        return RtuSplit::BadCrc(len);
    }
    RtuSplit::Frame(frame[0], &frame[1..len - 2], len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_frame() {
        // Read holding registers 0x006B x3 from unit 0x11: CRC 0x8776 (sent 76 87).
        let f = rtu_frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03]);
        assert_eq!(&f[f.len() - 2..], &[0x76, 0x87]);
        assert_eq!(
            split_rtu_request(&f),
            RtuSplit::Frame(0x11, &[0x03, 0x00, 0x6B, 0x00, 0x03][..], 8)
        );
        let mut bad = f.clone();
        bad[7] ^= 1;
        assert_eq!(split_rtu_request(&bad), RtuSplit::BadCrc(8));
        assert_eq!(split_rtu_request(&f[..5]), RtuSplit::Incomplete);
    }

    #[test]
    fn rtu_write_multiple_length_from_byte_count() {
        let pdu = [16, 0, 2, 0, 2, 4, 0, 1, 0, 2];
        let f = rtu_frame(7, &pdu);
        assert_eq!(split_rtu_request(&f[..8]), RtuSplit::Incomplete);
        assert_eq!(split_rtu_request(&f), RtuSplit::Frame(7, &pdu[..], 13));
        assert_eq!(
            parse_request(&pdu),
            Request::WriteRegisters {
                address: 2,
                values: vec![1, 2]
            }
        );
    }

    #[test]
    fn tcp_frames_round_trip() {
        let f = tcp_frame(0x1234, 5, &[4, 0, 0, 0, 9]);
        assert_eq!(f, vec![0x12, 0x34, 0, 0, 0, 6, 5, 4, 0, 0, 0, 9]);
        let t = split_tcp(&f).expect("valid").expect("complete");
        assert_eq!((t.tid, t.unit, t.len), (0x1234, 5, 12));
        assert_eq!(
            parse_request(t.pdu),
            Request::Read {
                table: Table::Input,
                address: 0,
                count: 9
            }
        );
        assert_eq!(split_tcp(&f[..9]), Ok(None));
        let mut bad = f.clone();
        bad[2] = 1;
        assert!(split_tcp(&bad).is_err());
    }

    #[test]
    fn request_limits_and_exceptions() {
        assert_eq!(
            parse_request(&[3, 0, 0, 0, 126]),
            Request::Invalid {
                function: 3,
                exception: exception::ILLEGAL_DATA_VALUE
            }
        );
        assert!(matches!(
            parse_request(&[1, 0, 0, 0x07, 0xD0]),
            Request::Read { count: 2000, .. }
        ));
        assert_eq!(
            parse_request(&[5, 0, 0, 0x12, 0x34]),
            Request::Invalid {
                function: 5,
                exception: exception::ILLEGAL_DATA_VALUE
            }
        );
        let r = parse_request(&[0x2B, 0x0E, 1, 0]);
        assert_eq!(response_pdu(&r, &[], &[]), vec![0xAB, 0x01]);
    }

    #[test]
    fn bit_and_word_responses() {
        let r = Request::Read {
            table: Table::Coil,
            address: 0,
            count: 10,
        };
        let bits = [
            true, false, true, false, false, false, false, false, false, true,
        ];
        assert_eq!(response_pdu(&r, &[], &bits), vec![1, 2, 0b0000_0101, 0b10]);
        let r = Request::Read {
            table: Table::Holding,
            address: 0,
            count: 2,
        };
        assert_eq!(
            response_pdu(&r, &[0x0102, 0xA0B0], &[]),
            vec![3, 4, 1, 2, 0xA0, 0xB0]
        );
        let w = Request::WriteCoil {
            address: 0,
            value: true,
        };
        assert_eq!(response_pdu(&w, &[], &[]), vec![5, 0, 0, 0xFF, 0]);
    }
}
