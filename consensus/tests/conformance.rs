//! Vote-replay conformance: our cases and the shared examples must all give
//! their expected outcome through the real chain code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use lifeline_consensus::conformance::{self, Case};

fn check_file(path: &Path) -> usize {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let expected = case
            .expect
            .clone()
            .expect("every case states its expectation");
        let got = conformance::run(case);
        if got != expected {
            failures.push(format!("{}: expected {expected:?}, got {got:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn our_vote_replay_cases_pass() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/vote-replay.json");
    assert!(check_file(&path) >= 40);
}

#[test]
fn shared_vote_replay_examples_pass() {
    // shared/ sits beside the repository (as in CI and every developer's checkout).
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/vote-replay-examples.json");
    assert!(
        path.exists(),
        "{} is missing: the shared conformance files belong beside the repository",
        path.display()
    );
    assert!(check_file(&path) >= 1);
}
