//! Replays every input kept from fuzzing (`tests/fuzz-corpus/<target>/`: seeds, and every input
//! a fuzz run found that once failed) through the same checks the fuzz targets run, so a
//! decoder that regresses fails the normal test suite. See `fuzz/README.md`.

mod support;

use std::path::Path;

#[test]
fn every_kept_fuzz_input_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut replayed = 0;
    for (name, check) in support::decoders::TARGETS {
        let dir = corpus.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{name}: {} fails", path.display());
            replayed += 1;
        }
    }
    assert!(
        replayed >= 8,
        "the corpus holds the seeds ({replayed} files)"
    );
}
