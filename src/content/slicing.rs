//! How an object is cut into aligned slices: slice `i` covers bytes `i × slice_bytes` up to the
//! next multiple or the object's end. The one place this arithmetic is written; the fill, the
//! disk layout, the memory tier and responses ask it. Sans-IO.

/// The slice geometry of a store (`cache.slice_bytes`). Invariant: `slice_bytes > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    slice_bytes: u64,
}

impl Slicing {
    /// Slices of `slice_bytes` (at least 1; the configuration refuses smaller ones).
    pub fn new(slice_bytes: u64) -> Slicing {
        Slicing {
            slice_bytes: slice_bytes.max(1),
        }
    }

    /// Bytes per slice (the last slice of an object may hold fewer).
    pub fn slice_bytes(self) -> u64 {
        self.slice_bytes
    }

    /// Slices of an object of `size` bytes (0 for an empty one).
    pub fn count(self, size: u64) -> u64 {
        size.div_ceil(self.slice_bytes)
    }

    /// The slice holding byte `offset`.
    pub fn index_of(self, offset: u64) -> u64 {
        offset / self.slice_bytes
    }

    /// The first byte of slice `index`.
    pub fn start(self, index: u64) -> u64 {
        index.saturating_mul(self.slice_bytes)
    }

    /// One past the last byte of slice `index` of an object of `size` bytes (not known: where
    /// a full slice would end).
    pub fn end(self, index: u64, size: Option<u64>) -> u64 {
        let full = self.start(index).saturating_add(self.slice_bytes);
        size.map_or(full, |size| full.min(size))
    }

    /// Bytes in slice `index` of an object of `size` bytes (0 past its end).
    pub fn len(self, size: u64, index: u64) -> u64 {
        self.slice_bytes.min(size.saturating_sub(self.start(index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_an_object_exactly_once() {
        let s = Slicing::new(4);
        for size in 0..20u64 {
            let n = s.count(size);
            let total: u64 = (0..n).map(|i| s.len(size, i)).sum();
            assert_eq!(total, size, "size {size}");
            for i in 0..n {
                assert_eq!(s.end(i, Some(size)) - s.start(i), s.len(size, i));
                assert_eq!(s.index_of(s.start(i)), i);
                assert_eq!(s.index_of(s.end(i, Some(size)) - 1), i);
                assert!(s.len(size, i) > 0);
            }
            assert_eq!(s.len(size, n), 0, "nothing past the end");
        }
        assert_eq!(s.end(2, None), 12);
        assert_eq!(Slicing::new(0).slice_bytes(), 1);
    }
}
