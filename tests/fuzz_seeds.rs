//! Runs the decoder fuzz seeds (`fuzz/seeds/decoder/`) through the fuzz oracle on stable, so the
//! round-trip and chunking checks of `cargo fuzz run decoder` are part of every `cargo test`.
//! The oracle is not copied: `fuzz/src/lib.rs` is compiled here as a module.

#[path = "../fuzz/src/lib.rs"]
mod oracle;

use std::fs;
use std::path::Path;

/// Chunk-size prefixes each seed's stream is also replayed with (see the input layout in
/// `fuzz/src/lib.rs`): whole, byte by byte, and uneven sizes that split headers and lengths.
const CHUNKINGS: &[&[u8]] = &[&[0], &[1], &[2, 3, 5, 7], &[4, 1, 250]];

#[test]
fn fuzz_seeds_decode_and_round_trip_in_any_chunking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/decoder");
    let mut seeds = 0;
    for entry in fs::read_dir(&dir).expect("fuzz/seeds/decoder exists") {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let name = path.display();
        // Seeds are valid sessions: every byte must come out as packets, without an error.
        let outcome = oracle::decode_stream(&data);
        assert!(outcome.error.is_none(), "{name}: {:?}", outcome.error);
        assert_eq!(outcome.leftover, 0, "{name}: trailing bytes");
        assert!(outcome.packets.len() >= 2, "{name}: too few packets");

        let stream = &data[2 + usize::from(data[1] % 16)..];
        for chunks in CHUNKINGS {
            let mut input = vec![data[0], chunks.len() as u8];
            input.extend_from_slice(chunks);
            input.extend_from_slice(stream);
            assert_eq!(oracle::decode_stream(&input), outcome, "{name}: {chunks:?}");
        }
        seeds += 1;
    }
    assert!(
        seeds >= 6,
        "expected the committed seeds in {}",
        dir.display()
    );
}
