//! The fuzz targets' checks as part of every `cargo test`, on stable: each committed seed
//! (`fuzz/seeds/<target>/`) runs through its target's oracle, and so does a fixed number of
//! mutations of the seeds, made by a seeded generator so that every run executes the very same
//! inputs. Long runs that search for new inputs are cargo-fuzz's job (`fuzz/README.md`). The
//! oracles are not copied: `fuzz/src/*.rs` are compiled here as modules.

#[path = "../fuzz/src/core.rs"]
mod core_oracle;
#[path = "../fuzz/src/decoder.rs"]
mod decoder_oracle;

use std::fs;
use std::path::{Path, PathBuf};

/// Chunk-size prefixes each decoder seed's stream is also replayed with (see the input layout in
/// `fuzz/src/decoder.rs`): whole, byte by byte, and uneven sizes that split headers and lengths.
const CHUNKINGS: &[&[u8]] = &[&[0], &[1], &[2, 3, 5, 7], &[4, 1, 250]];

/// Mutated inputs run per target: enough to leave the seeds' paths, few enough for seconds.
const MUTATIONS: usize = 3000;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    // Directory order differs between file systems; the mutations must not.
    seeds.sort();
    seeds
}

/// A small deterministic generator (xorshift64*): the same inputs on every run and machine.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    /// `seed` with a few of libFuzzer's simplest mutations: a byte changed, inserted, removed or
    /// copied from elsewhere, or the tail cut off.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut data = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(data.len());
            match self.below(5) {
                0 if !data.is_empty() => data[at] = self.next() as u8,
                1 => data.insert(at, self.next() as u8),
                2 if !data.is_empty() => {
                    data.remove(at);
                }
                3 if !data.is_empty() => data[at] = data[self.below(data.len())],
                _ => data.truncate(at.max(1)),
            }
        }
        data
    }
}

/// Runs `oracle` over [`MUTATIONS`] mutations of `seeds`; a panic names the input to replay.
fn run_mutations(seeds: &[(PathBuf, Vec<u8>)], oracle: impl Fn(&[u8])) {
    let mut mutator = Mutator(0x9e37_79b9_7f4a_7c15);
    for round in 0..MUTATIONS {
        let (path, seed) = &seeds[round % seeds.len()];
        let input = mutator.mutate(seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| oracle(&input)));
        if outcome.is_err() {
            let saved = std::env::temp_dir().join(format!("fuzz-mutation-{round}"));
            fs::write(&saved, &input).unwrap();
            panic!(
                "mutation {round} of {} failed; the input is in {} (replay it with cargo fuzz run)",
                path.display(),
                saved.display()
            );
        }
    }
}

#[test]
fn decoder_seeds_decode_and_round_trip_in_any_chunking() {
    let seeds = seeds("decoder");
    for (path, data) in &seeds {
        let name = path.display();
        // Seeds are valid sessions: every byte must come out as packets, without an error.
        let outcome = decoder_oracle::decode_stream(data);
        assert!(outcome.error.is_none(), "{name}: {:?}", outcome.error);
        assert_eq!(outcome.leftover, 0, "{name}: trailing bytes");
        assert!(outcome.packets.len() >= 2, "{name}: too few packets");

        let stream = &data[2 + usize::from(data[1] % 16)..];
        for chunks in CHUNKINGS {
            let mut input = vec![data[0], chunks.len() as u8];
            input.extend_from_slice(chunks);
            input.extend_from_slice(stream);
            assert_eq!(
                decoder_oracle::decode_stream(&input),
                outcome,
                "{name}: {chunks:?}"
            );
        }
    }
    assert!(seeds.len() >= 6, "expected the committed decoder seeds");
}

#[test]
fn decoder_mutations_pass_the_oracle() {
    run_mutations(&seeds("decoder"), |input| {
        decoder_oracle::decode_stream(input);
    });
}

#[test]
fn core_seeds_keep_every_promise() {
    let seeds = seeds("core");
    let mut total = core_oracle::Exercised::default();
    for (_, data) in &seeds {
        let exercised = core_oracle::run(data);
        total.steps += exercised.steps;
        total.promised += exercised.promised;
        total.crashes += exercised.crashes;
    }
    // The seeds must reach the checks, not stop at the input format: many steps, acknowledged
    // messages the witness had to get, and crashes the broker restarted from.
    assert!(seeds.len() >= 100, "{} core seeds", seeds.len());
    assert!(total.steps >= 10 * seeds.len(), "{total:?}");
    assert!(total.promised >= 200, "{total:?}");
    assert!(total.crashes >= 50, "{total:?}");
}

#[test]
fn core_mutations_keep_every_promise() {
    run_mutations(&seeds("core"), |input| {
        core_oracle::run(input);
    });
}
