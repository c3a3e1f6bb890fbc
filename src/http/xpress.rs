//! The xpress content coding of MS-WUSP §2.1.1, both ways: what Windows clients ask answers
//! in (`Accept-Encoding: xpress`). The body is cut into blocks of at most 65,535 bytes, each
//! compressed alone with LZ77 and the DIRECT2 encoding (§2.1.1.1: 32-bit flag words read from
//! the high bit, a 1 for a match or the end, 13-bit offsets, lengths extended through shared
//! nibbles, a byte and 16 bits) and sent after an 8-byte header (original and compressed size,
//! little-endian). The same encoding is MS-XCA's "plain LZ77". Sans-IO: bytes in, bytes out,
//! the decoded size bounded before it is reached. Calls nothing.

use std::fmt;

/// Most bytes a block holds, before and after compression (§2.1.1).
pub const MAX_BLOCK: usize = 65_535;

/// Offsets are 13 bits, of one less than the distance back.
const WINDOW: usize = 1 << 13;
const MIN_MATCH: usize = 3;
/// Positions of a hash chain tried for a match: enough for XML's repeats, bounded for speed.
const CHAIN: usize = 4;
const HASH_BITS: u32 = 14;
/// Matches longer than this have only their ends entered in the hash chains: 2.5 times the
/// speed on escaped update XML, for 9% more bytes.
const LONG_MATCH: usize = 8;

/// Why a body is not xpress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XpressError {
    /// A block header or block that ends early, or sizes out of bounds.
    Truncated,
    /// A match reaching before the block's start, or a block that decodes to other than its
    /// header says.
    Corrupt(&'static str),
    /// More than the limit, decoded.
    TooLarge,
}

impl fmt::Display for XpressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XpressError::Truncated => write!(f, "xpress body cut short"),
            XpressError::Corrupt(why) => write!(f, "not xpress: {why}"),
            XpressError::TooLarge => write!(f, "xpress body over the limit decoded"),
        }
    }
}

impl std::error::Error for XpressError {}

/// `data` xpress-coded: blocks of at most [`MAX_BLOCK`] bytes, each with its header.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    let mut tables = Tables::new();
    for block in data.chunks(MAX_BLOCK) {
        framed_block(block, &mut tables, &mut out);
    }
    out
}

/// One block with its header; one that does not compress below [`MAX_BLOCK`] (bytes that
/// barely repeat: every 32 literals cost 4 bytes of flags) goes as two halves.
fn framed_block(block: &[u8], tables: &mut Tables, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend([0; 8]);
    compress_block(block, tables, out);
    let compressed = out.len() - start - 8;
    if compressed > MAX_BLOCK {
        out.truncate(start);
        let (a, b) = block.split_at(block.len() / 2);
        framed_block(a, tables, out);
        framed_block(b, tables, out);
        return;
    }
    // Both at most MAX_BLOCK, so they fit the header's signed 32 bits.
    out[start..start + 4].copy_from_slice(&(block.len() as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&(compressed as u32).to_le_bytes());
}

/// The match finder's hash chains, kept from block to block so that a block costs no
/// allocation: positions are counted across blocks (`base` is where the current block starts,
/// plus one), so an entry from an earlier block reads as none without clearing the table.
struct Tables {
    /// Position (across blocks, plus one) of the latest occurrence of each hash; below `base`:
    /// none.
    head: Vec<u32>,
    /// The occurrence before each position of the last [`WINDOW`] ones, by position modulo
    /// the window: all a match may reach.
    prev: Vec<u32>,
    base: u32,
}

impl Tables {
    fn new() -> Tables {
        Tables {
            head: vec![0; 1 << HASH_BITS],
            prev: vec![0; WINDOW],
            base: 1,
        }
    }
}

/// The DIRECT2 writer: flag words ahead of the elements they describe.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Where the current flag word goes.
    flag_at: usize,
    flags: u32,
    /// Bits of `flags` used.
    used: u32,
    /// The byte whose high nibble the next long match's length extension takes.
    nibble_at: Option<usize>,
}

impl Writer<'_> {
    fn flag(&mut self, bit: u32) {
        if self.used == 32 {
            self.out[self.flag_at..self.flag_at + 4].copy_from_slice(&self.flags.to_le_bytes());
            self.flag_at = self.out.len();
            self.out.extend([0; 4]);
            self.flags = 0;
            self.used = 0;
        }
        self.flags = (self.flags << 1) | bit;
        self.used += 1;
    }

    fn literal(&mut self, byte: u8) {
        self.flag(0);
        self.out.push(byte);
    }

    /// A match `distance` back (1..=8192) of `length` (3..=65538) bytes.
    fn matched(&mut self, distance: usize, length: usize) {
        self.flag(1);
        let offset = ((distance - 1) as u16) << 3;
        let extra = length - MIN_MATCH;
        if extra < 7 {
            self.out.extend((offset | extra as u16).to_le_bytes());
            return;
        }
        self.out.extend((offset | 7).to_le_bytes());
        let extra = extra - 7;
        let nibble = extra.min(15) as u8;
        match self.nibble_at.take() {
            Some(at) => self.out[at] |= nibble << 4,
            None => {
                self.nibble_at = Some(self.out.len());
                self.out.push(nibble);
            }
        }
        if extra < 15 {
            return;
        }
        let extra = extra - 15;
        if extra < 255 {
            self.out.push(extra as u8);
        } else {
            // The whole length less the minimum, not added to what came before.
            self.out.push(255);
            self.out.extend(((length - MIN_MATCH) as u16).to_le_bytes());
        }
    }

    /// The end bit, and the last flag word aligned to its high bit.
    fn finish(mut self) {
        self.flag(1);
        let flags = self.flags << (32 - self.used);
        self.out[self.flag_at..self.flag_at + 4].copy_from_slice(&flags.to_le_bytes());
    }
}

/// How many bytes `a` and `b` share from their start, eight at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let most = a.len().min(b.len());
    let mut n = 0;
    while n + 8 <= most {
        let x = u64::from_le_bytes(a[n..n + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[n..n + 8].try_into().unwrap_or([0; 8]));
        if x != y {
            return n + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + a[n..most]
        .iter()
        .zip(&b[n..most])
        .take_while(|(x, y)| x == y)
        .count()
}

fn hash(bytes: &[u8]) -> usize {
    let v = u32::from(bytes[0]) | u32::from(bytes[1]) << 8 | u32::from(bytes[2]) << 16;
    (v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize
}

/// One block, LZ77 with hash chains (greedy, the longest of `CHAIN` candidates).
fn compress_block(block: &[u8], tables: &mut Tables, out: &mut Vec<u8>) {
    let flag_at = out.len();
    out.extend([0; 4]);
    let mut w = Writer {
        out,
        flag_at,
        flags: 0,
        used: 0,
        nibble_at: None,
    };
    let base = tables.base;
    // The next block's positions start past this one's; the u32 counts wrap only after 4 GiB
    // of one answer, where the tables start over.
    tables.base = match base.checked_add(MAX_BLOCK as u32 + 1) {
        Some(next) if next < u32::MAX - MAX_BLOCK as u32 => next,
        _ => {
            tables.head.fill(0);
            1
        }
    };
    let Tables { head, prev, .. } = tables;
    let insert = |at: usize, head: &mut [u32], prev: &mut [u32]| {
        if at + MIN_MATCH <= block.len() {
            let h = hash(&block[at..]);
            prev[at % WINDOW] = head[h];
            head[h] = base + at as u32;
        }
    };
    let mut at = 0;
    while at < block.len() {
        let mut best = (0, 0);
        if at + MIN_MATCH <= block.len() {
            let mut candidate = head[hash(&block[at..])];
            let most = block.len() - at;
            for _ in 0..CHAIN {
                // Before this block, or none.
                let Some(from) = candidate.checked_sub(base).map(|c| c as usize) else {
                    break;
                };
                // A ring entry overwritten since is a later position: still before `at`.
                if from >= at {
                    break;
                }
                let distance = at - from;
                if distance > WINDOW {
                    break;
                }
                // A candidate whose first bytes differ (another text of the same hash) is
                // passed over without the full comparison.
                if block[from + best.1.min(most - 1)] != block[at + best.1.min(most - 1)]
                    || block[from..from + MIN_MATCH] != block[at..at + MIN_MATCH]
                {
                    candidate = prev[from % WINDOW];
                    continue;
                }
                let length = common_prefix(&block[from..], &block[at..at + most]);
                if length > best.1 {
                    best = (distance, length);
                    if length == most {
                        break;
                    }
                }
                candidate = prev[from % WINDOW];
            }
        }
        if best.1 >= MIN_MATCH {
            w.matched(best.0, best.1);
            // Every position of a short match; of a long one its first and its last few (as
            // zlib's fastest levels do): inside a long repeat, later text finds its match at
            // the repeat's ends as well, and hashing each byte of it would cost most of the
            // time of repetitive XML.
            let end = at + best.1;
            if best.1 <= LONG_MATCH {
                (at..end).for_each(|p| insert(p, head, prev));
            } else {
                insert(at, head, prev);
                (end - MIN_MATCH..end).for_each(|p| insert(p, head, prev));
            }
            at = end;
        } else {
            w.literal(block[at]);
            insert(at, head, prev);
            at += 1;
        }
    }
    w.finish();
}

/// An xpress body decoded, at most `limit` bytes.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, XpressError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let header = rest.get(..8).ok_or(XpressError::Truncated)?;
        let size =
            |i: usize| i32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (original, compressed) = (size(0), size(4));
        let in_bounds = |n: i32| (1..=MAX_BLOCK as i32).contains(&n);
        if !in_bounds(original) || !in_bounds(compressed) {
            return Err(XpressError::Corrupt("a block size out of bounds"));
        }
        let (original, compressed) = (original as usize, compressed as usize);
        if out.len() + original > limit {
            return Err(XpressError::TooLarge);
        }
        let block = rest.get(8..8 + compressed).ok_or(XpressError::Truncated)?;
        let start = out.len();
        decompress_block(block, original, &mut out)?;
        if out.len() - start != original {
            return Err(XpressError::Corrupt("a block shorter than its header says"));
        }
        rest = &rest[8 + compressed..];
    }
    Ok(out)
}

/// One block onto `out`, at most `original` bytes of it.
fn decompress_block(input: &[u8], original: usize, out: &mut Vec<u8>) -> Result<(), XpressError> {
    let start = out.len();
    let end = start + original;
    let byte = |i: usize| input.get(i).copied().ok_or(XpressError::Truncated);
    let word = |i: usize| Ok(u16::from(byte(i)?) | u16::from(byte(i + 1)?) << 8);
    let (mut i, mut flags, mut left) = (0usize, 0u32, 0u32);
    let mut nibble_at: Option<usize> = None;
    loop {
        if left == 0 {
            let bytes = input.get(i..i + 4).ok_or(XpressError::Truncated)?;
            flags = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            left = 32;
            i += 4;
        }
        left -= 1;
        if flags & (1 << left) == 0 {
            if out.len() == end {
                return Err(XpressError::Corrupt("a block longer than its header says"));
            }
            out.push(byte(i)?);
            i += 1;
            continue;
        }
        if i == input.len() {
            return Ok(());
        }
        let meta = word(i)?;
        i += 2;
        let distance = usize::from(meta >> 3) + 1;
        let mut length = usize::from(meta & 7);
        if length == 7 {
            length = match nibble_at.take() {
                Some(at) => usize::from(byte(at)? >> 4),
                None => {
                    nibble_at = Some(i);
                    i += 1;
                    usize::from(byte(i - 1)? & 15)
                }
            };
            if length == 15 {
                length = usize::from(byte(i)?);
                i += 1;
                if length == 255 {
                    length = usize::from(word(i)?);
                    i += 2;
                    length = length
                        .checked_sub(15 + 7)
                        .ok_or(XpressError::Corrupt("a 16-bit length below 22"))?;
                }
                length += 15;
            }
            length += 7;
        }
        length += MIN_MATCH;
        if distance > out.len() - start {
            return Err(XpressError::Corrupt("a match before the block's start"));
        }
        if out.len() + length > end {
            return Err(XpressError::Corrupt("a block longer than its header says"));
        }
        // Byte by byte: a match may overlap what it writes (a run).
        let from = out.len() - distance;
        for k in 0..length {
            let b = out[from + k];
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One raw block (no header) decoded.
    fn block(raw: &[u8], original: usize) -> Result<Vec<u8>, XpressError> {
        let mut out = Vec::new();
        decompress_block(raw, original, &mut out).map(|()| out)
    }

    #[test]
    fn the_specs_metadata_reads_as_the_spec_says() {
        // "ABCABC": three literals then 0x0010 (distance 3, length 3), then the end bit.
        // Flags: 0001 1 then zeros, high bit first.
        let flags = 0b00011_u32 << 27;
        let mut raw = flags.to_le_bytes().to_vec();
        raw.extend(b"ABC");
        raw.extend(0x0010u16.to_le_bytes());
        assert_eq!(block(&raw, 6).unwrap(), b"ABCABC");
        // §2.1.1.1.2: metadata 0x0018 is offset 4, length 3.
        let flags = 0b000011_u32 << 26;
        let mut raw = flags.to_le_bytes().to_vec();
        raw.extend(b"WXYZ");
        raw.extend(0x0018u16.to_le_bytes());
        assert_eq!(block(&raw, 7).unwrap(), b"WXYZWXY");
        // The length table: 24 (b'111' + nibble 14), 25 (nibble 15 + byte 0), 279 (byte 254),
        // 280 (byte 255 + 0x0115) and 281 (0x0116); each a run of the one literal before it.
        for (length, tail) in [
            (24usize, vec![14u8]),
            (25, vec![15, 0]),
            (26, vec![15, 1]),
            (279, vec![15, 254]),
            (280, vec![15, 255, 0x15, 0x01]),
            (281, vec![15, 255, 0x16, 0x01]),
        ] {
            let flags = 0b011u32 << 29;
            let mut raw = flags.to_le_bytes().to_vec();
            raw.push(b'a');
            raw.extend(0x0007u16.to_le_bytes());
            raw.extend(&tail);
            assert_eq!(
                block(&raw, length + 1).unwrap(),
                vec![b'a'; length + 1],
                "{length}"
            );
            // And the encoder writes it so.
            let mut out = Vec::new();
            compress_block(&vec![b'a'; length + 1], &mut Tables::new(), &mut out);
            assert_eq!(out, raw, "{length}");
        }
    }

    #[test]
    fn the_shared_nibble_serves_two_long_matches() {
        // Two runs of 20 and 23 (extensions 10 and 13): one byte 0xDA after the first match.
        let mut data = vec![b'x'; 21];
        data.extend(b"-");
        data.extend(vec![b'y'; 24]);
        let mut raw = Vec::new();
        compress_block(&data, &mut Tables::new(), &mut raw);
        assert_eq!(block(&raw, data.len()).unwrap(), data);
        assert!(raw.contains(&0xDA), "{raw:02x?}");
    }

    #[test]
    fn bodies_round_trip_through_blocks() {
        let xml: String = (0..20_000)
            .map(|i| format!("<UpdateInfo><ID>{i}</ID><IsLeaf>true</IsLeaf></UpdateInfo>"))
            .collect();
        let mut noise = Vec::with_capacity(200_000);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x as u8);
        }
        for data in [b"".to_vec(), b"a".to_vec(), xml.into_bytes(), noise] {
            let coded = compress(&data);
            assert_eq!(decompress(&coded, data.len()).unwrap(), data);
            let mut rest = &coded[..];
            while !rest.is_empty() {
                let original = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                let compressed = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
                assert!(original <= MAX_BLOCK && compressed <= MAX_BLOCK);
                rest = &rest[8 + compressed..];
            }
        }
    }

    #[test]
    fn xml_compresses_and_bad_input_is_an_error() {
        let xml: String = (0..5_000)
            .map(|i| format!("<UpdateInfo><ID>{i}</ID><Deployment><Action>Install</Action></Deployment></UpdateInfo>"))
            .collect();
        let coded = compress(xml.as_bytes());
        assert!(
            coded.len() * 5 < xml.len(),
            "{} of {}",
            coded.len(),
            xml.len()
        );
        assert_eq!(
            decompress(&coded, xml.len() - 1),
            Err(XpressError::TooLarge)
        );
        assert_eq!(
            decompress(&coded[..coded.len() - 1], xml.len()),
            Err(XpressError::Truncated)
        );
        assert!(decompress(&[0xFF; 8], 100).is_err());
        // A match reaching before the block's start.
        let mut raw = (1u32 << 31).to_le_bytes().to_vec();
        raw.extend(0x0000u16.to_le_bytes());
        assert!(matches!(block(&raw, 3), Err(XpressError::Corrupt(_))));
    }

    /// A block as `rust-lzxpress` reads it: that decoder stops where the input does and takes
    /// no end bit, so a last flag word that holds only the end bit (the spec's "even if an
    /// additional bitmask has to be allocated") is left off for it.
    fn their_end(raw: &[u8]) -> &[u8] {
        raw.strip_suffix(&(1u32 << 31).to_le_bytes()).unwrap_or(raw)
    }

    /// Checked against an independent decoder of the same encoding (MS-XCA's plain LZ77, the
    /// `rust-lzxpress` crate). Not against its encoder: that writes each offset one too far
    /// (the distance itself where the format has one less, as its own decoder reads it).
    #[test]
    fn another_decoder_reads_these_blocks() {
        let xml: String = (0..3_000)
            .map(|i| {
                format!(
                    "<UpdateInfo><ID>{i}</ID><Deployment><ID>{}</ID><Action>Install</Action>\
                     </Deployment><IsLeaf>{}</IsLeaf></UpdateInfo>",
                    i * 7,
                    i % 3 == 0
                )
            })
            .collect();
        let runs = [vec![b'r'; 70_000], b"ab".repeat(40_000)].concat();
        for data in [xml.into_bytes(), runs] {
            // One set of tables for all blocks, as `compress` keeps them.
            let mut tables = Tables::new();
            for chunk in data.chunks(MAX_BLOCK) {
                let mut ours = Vec::new();
                compress_block(chunk, &mut tables, &mut ours);
                let theirs_read =
                    lzxpress::data::decompress(their_end(&ours)).expect("it reads ours");
                assert_eq!(theirs_read, chunk);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn anything_round_trips(data in proptest::collection::vec(0u8..4, 0..3_000)) {
            let coded = compress(&data);
            proptest::prop_assert_eq!(&decompress(&coded, data.len()).unwrap(), &data);
            let mut raw = Vec::new();
            compress_block(&data, &mut Tables::new(), &mut raw);
            proptest::prop_assert_eq!(lzxpress::data::decompress(their_end(&raw)).unwrap(), data);
        }

        #[test]
        fn no_input_makes_the_decoder_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decompress(&data, 1 << 16);
            let _ = block(&data, 1 << 10);
        }
    }
}
