//! A fixed, dependency-free hash for the places that need the same value in every
//! release: alert ids (`alerts::rules`) and the console's ETags (`api::console`).

/// 64-bit FNV-1a of `bytes`. Stable across releases and platforms; not for security.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    /// The published FNV-1a test vectors: ids and ETags must never change.
    #[test]
    fn matches_the_reference_vectors() {
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
