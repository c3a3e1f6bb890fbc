//! Cabinets as Microsoft WSUS sends large update documents (`XmlUpdateBlobCompressed`): one
//! file in one folder of compression type LZX with a 2 MB window (MS-WSUSSS §3.1.4.6.3.6),
//! for tests of the downstream side against such an upstream.
//!
//! The LZX stream is one uncompressed block (LZX block type 3: valid LZX that every decoder
//! reads, `cabextract` included); what WSUS's compressor would make of the document is out of
//! reach here, and decoding compressed blocks is the `lzxd` crate's own business.

/// Uncompressed bytes per CFDATA block (an LZX frame).
const FRAME: usize = 32_768;
/// typeCompress: LZX (3) with a window of 2^21 bytes.
const LZX_21: u16 = 0x0003 | (21 << 8);

/// A cabinet holding `data` as its one file, `name`.
pub fn lzx_cabinet(name: &str, data: &[u8]) -> Vec<u8> {
    // The LZX stream: a header of no E8 translation (1 bit), block type 3 (3 bits), the block
    // size (24 bits), padded to 16 bits; R0..R2 (12 bytes); the bytes; a pad byte if odd.
    let bits: u32 = ((0b0011 << 24) | (data.len() as u32 & 0xFF_FFFF)) << 4;
    let header = [(bits >> 16) as u16, bits as u16];
    let mut first = Vec::with_capacity(16);
    for word in header {
        first.extend(word.to_le_bytes());
    }
    for _ in 0..3 {
        first.extend(1u32.to_le_bytes());
    }
    // CFDATA blocks: each carries exactly one frame's bytes (the first also the headers).
    let frames: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(FRAME).collect()
    };
    let last = frames.len() - 1;
    let blocks: Vec<(Vec<u8>, usize)> = frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let mut block = if i == 0 { first.clone() } else { Vec::new() };
            block.extend_from_slice(frame);
            if i == last && data.len() % 2 == 1 {
                block.push(0);
            }
            (block, frame.len())
        })
        .collect();

    let name = name.as_bytes();
    let files_at = 36 + 8;
    let data_at = files_at + 16 + name.len() + 1;
    let total = data_at + blocks.iter().map(|(b, _)| 8 + b.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    // CFHEADER
    out.extend(b"MSCF");
    out.extend(0u32.to_le_bytes());
    out.extend((total as u32).to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend((files_at as u32).to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend([3, 1]); // version 1.3
    out.extend(1u16.to_le_bytes()); // folders
    out.extend(1u16.to_le_bytes()); // files
    out.extend(0u16.to_le_bytes()); // flags
    out.extend(0x1234u16.to_le_bytes()); // set id
    out.extend(0u16.to_le_bytes()); // index in the set
    // CFFOLDER
    out.extend((data_at as u32).to_le_bytes());
    out.extend((blocks.len() as u16).to_le_bytes());
    out.extend(LZX_21.to_le_bytes());
    // CFFILE
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(0u32.to_le_bytes()); // offset in the folder
    out.extend(0u16.to_le_bytes()); // folder
    out.extend(0x5B81u16.to_le_bytes()); // 2025-12-01
    out.extend(0u16.to_le_bytes()); // 00:00:00
    out.extend(0x20u16.to_le_bytes()); // archive
    out.extend(name);
    out.push(0);
    // CFDATA (no checksum: 0 says none)
    for (block, uncompressed) in &blocks {
        out.extend(0u32.to_le_bytes());
        out.extend((block.len() as u16).to_le_bytes());
        out.extend((*uncompressed as u16).to_le_bytes());
        out.extend(block);
    }
    debug_assert_eq!(out.len(), total);
    out
}
