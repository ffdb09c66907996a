//! The read planner: a device's points → the fewest read requests.
//!
//! Pure. Points of one table are sorted by address and merged while they are adjacent
//! (no unmapped address in between: many devices answer a read that touches an address
//! they do not have with exception 02) and the request stays within the protocol's limit
//! (125 registers, 2000 bits).

use estate_config::{Point, Table};

/// One read request: `count` registers or bits of `table` from `address`, covering the
/// points at these indices of the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Coils, discrete inputs, holding or input registers (which function code reads it).
    pub table: Table,
    /// The first address read (0-based, as on the wire).
    pub address: u16,
    /// Registers or bits read: at most 125 registers or 2000 bits.
    pub count: u16,
    /// Indices into the profile's points, in address order.
    pub points: Vec<usize>,
}

impl ReadRequest {
    /// One past the last address read.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

/// Plans the reads for `points`. Points that could never be read (no span, or beyond
/// the address space) are left out; config validation rejects them anyway.
pub fn plan(points: &[Point]) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            p.span() > 0 && p.end() <= 65_536 && p.span() <= u32::from(p.table.max_read())
        })
        .collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address));
    let mut out: Vec<ReadRequest> = Vec::new();
    for i in order {
        let p = &points[i];
        if let Some(last) = out.last_mut() {
            let limit = u32::from(p.table.max_read());
            let adjacent = u32::from(p.address) <= last.end();
            let new_end = last.end().max(p.end());
            if last.table == p.table && adjacent && new_end - u32::from(last.address) <= limit {
                // Fits in u16: at most `limit` (≤ 2000).
                last.count = (new_end - u32::from(last.address)) as u16;
                last.points.push(i);
                continue;
            }
        }
        out.push(ReadRequest {
            table: p.table,
            address: p.address,
            count: p.span() as u16,
            points: vec![i],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use estate_config::{DataType, Order};

    fn pt(table: Table, address: u16, ty: DataType, count: u16) -> Point {
        Point {
            name: format!("p{address}"),
            table,
            address,
            data_type: ty,
            count,
            word_order: Order::HighFirst,
            byte_order: Order::HighFirst,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
            bits: Vec::new(),
            thresholds: Vec::new(),
            report: None,
        }
    }

    #[test]
    fn adjacent_points_of_one_table_become_one_read() {
        // The rope leak detector: 30001-30009 and 38001-38002.
        let mut points: Vec<Point> = (0..9)
            .map(|a| pt(Table::Input, a, DataType::U16, 1))
            .collect();
        points.push(pt(Table::Input, 8000, DataType::F32, 1));
        let reads = plan(&points);
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert_eq!((reads[0].address, reads[0].count), (0, 9));
        assert_eq!(reads[0].points, (0..9).collect::<Vec<_>>());
        assert_eq!(
            (reads[1].address, reads[1].count, reads[1].table),
            (8000, 2, Table::Input)
        );
    }

    #[test]
    fn gaps_and_tables_split_reads() {
        let points = vec![
            pt(Table::Holding, 5, DataType::U16, 1),
            pt(Table::Holding, 0, DataType::U32, 1),
            pt(Table::Input, 2, DataType::U16, 1),
            pt(Table::Holding, 3, DataType::U16, 1), // gap at 2
            pt(Table::Holding, 4, DataType::U16, 1),
        ];
        let reads = plan(&points);
        let got: Vec<_> = reads
            .iter()
            .map(|r| (r.table, r.address, r.count))
            .collect();
        assert_eq!(
            got,
            vec![
                (Table::Input, 2, 1),
                (Table::Holding, 0, 2),
                (Table::Holding, 3, 3)
            ]
        );
        assert_eq!(reads[2].points, vec![3, 4, 0]);
    }

    #[test]
    fn reads_stay_within_the_protocol_limits() {
        // 200 adjacent registers: 125 + 75.
        let points: Vec<Point> = (0..100)
            .map(|i| pt(Table::Holding, i * 2, DataType::F32, 1))
            .collect();
        let reads = plan(&points);
        assert!(reads.iter().all(|r| r.count <= 125));
        assert_eq!(reads.iter().map(|r| u32::from(r.count)).sum::<u32>(), 200);
        assert_eq!(reads.len(), 2);
        // A 32-bit value never straddles two requests.
        assert_eq!(reads[0].count, 124);
        // 2500 coils: 2000 + 500.
        let coils = vec![
            pt(Table::Coil, 0, DataType::Bool, 1500),
            pt(Table::Coil, 1500, DataType::Bool, 1000),
        ];
        let reads = plan(&coils);
        assert_eq!(
            reads.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![1500, 1000]
        );
        let coils = vec![
            pt(Table::Coil, 0, DataType::Bool, 1000),
            pt(Table::Coil, 1000, DataType::Bool, 1000),
        ];
        assert_eq!(plan(&coils).len(), 1);
    }

    #[test]
    fn array_points_count_their_whole_span() {
        let points = vec![
            pt(Table::Holding, 0, DataType::U16, 32),
            pt(Table::Holding, 9499, DataType::U16, 1),
        ];
        let reads = plan(&points);
        assert_eq!(
            reads
                .iter()
                .map(|r| (r.address, r.count))
                .collect::<Vec<_>>(),
            vec![(0, 32), (9499, 1)]
        );
    }
}
