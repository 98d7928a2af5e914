//! Property: whatever prefix of a journal survives a crash (any truncation point, any garbage
//! after it), recovery hands back exactly the records that were wholly written, quietly.

use std::fs::{self, OpenOptions};
use std::io::Write;

use proptest::prelude::*;

use super::util::*;
use crate::journal::{HEADER_LEN, RECORD_OVERHEAD};
use crate::Fsync;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_truncation_recovers_an_exact_prefix(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..30),
        cut_fraction in 0.0f64..=1.0,
        garbage in prop::option::of(prop::collection::vec(any::<u8>(), 1..64)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1, Fsync::Never);
        let writer = store.writer(0).unwrap();
        write_all(&writer, records.clone());
        store.close().unwrap();
        let segment = last_segment(dir.path(), 0);
        let full = fs::metadata(&segment).unwrap().len() as usize;
        let cut = HEADER_LEN + ((full - HEADER_LEN) as f64 * cut_fraction) as usize;
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(cut as u64).unwrap();
        if let Some(garbage) = &garbage {
            OpenOptions::new().append(true).open(&segment).unwrap().write_all(garbage).unwrap();
        }

        let mut end = HEADER_LEN;
        let expected: Vec<Vec<u8>> = records
            .iter()
            .take_while(|r| {
                end += RECORD_OVERHEAD + r.len();
                end <= cut
            })
            .cloned()
            .collect();
        let (store, recovery) = open(dir.path(), 1, Fsync::Never);
        prop_assert!(recovery.report.is_clean(), "{:?}", recovery.report.issues);
        prop_assert_eq!(data(&recovery, 0), expected.clone());
        let prefix_end = HEADER_LEN + expected.iter().map(|r| RECORD_OVERHEAD + r.len()).sum::<usize>();
        let torn = cut > prefix_end || garbage.is_some();
        prop_assert_eq!(recovery.report.torn_tails.len(), usize::from(torn));

        // Appending after recovery extends that prefix.
        store.writer(0).unwrap().append(b"next".to_vec()).unwrap();
        store.close().unwrap();
        let (_s, recovery) = open(dir.path(), 1, Fsync::Never);
        let mut want = expected;
        want.push(b"next".to_vec());
        prop_assert_eq!(data(&recovery, 0), want);
    }
}
