//! `lifeline chain replay`: output format and exit statuses of VOTE-REPLAY.md.
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::str::contains;

fn replay(json: &str, check: bool) -> assert_cmd::assert::Assert {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, json).unwrap();
    let mut cmd = Command::cargo_bin("lifeline").unwrap();
    cmd.args(["chain", "replay"]).arg(&file);
    if check {
        cmd.arg("--check");
    }
    cmd.assert()
}

const CASES: &str = r#"[
 {"name": "add D", "epoch": null, "signers": ["A", "B", "C"],
  "blocks": [{"signer": "A", "vote": {"target": "D", "authorize": true}},
             {"signer": "B", "vote": {"target": "D", "authorize": true}},
             {"signer": "D"}],
  "expect": {"signers": ["A", "B", "C", "D"]}},
 {"name": "recent", "signers": ["A", "B"], "blocks": [{"signer": "A"}, {"signer": "A"}],
  "expect": {"error": "recently_signed"}}
]"#;

#[test]
fn prints_one_json_line_per_case_in_order() {
    replay(CASES, false).success().stdout(
        "{\"name\":\"add D\",\"signers\":[\"A\",\"B\",\"C\",\"D\"]}\n\
         {\"name\":\"recent\",\"error\":\"recently_signed\"}\n",
    );
}

#[test]
fn check_passes_when_outcomes_match() {
    replay(CASES, true)
        .success()
        .stderr(contains("2 passed, 0 failed"));
}

#[test]
fn check_fails_with_status_1_on_a_mismatch() {
    let wrong = CASES.replace("\"C\", \"D\"]}}", "\"C\"]}}");
    replay(&wrong, true)
        .code(1)
        .stderr(contains("mismatch: \"add D\"").and(contains("1 passed, 1 failed")));
    // Without --check the outcomes are only reported.
    replay(&wrong, false).success();
}

#[test]
fn invalid_input_is_status_2_with_a_reason() {
    replay("{\"not\": \"an array\"}", false)
        .code(2)
        .stderr(contains("not a vote-replay file"));
    replay("[{\"name\": \"x\", \"signers\": [\"A\"], \"blocks\": [{\"signer\": \"A\", \"votes\": 1}]}]", false)
        .code(2)
        .stderr(contains("unknown field `votes`"));
    let mut cmd = Command::cargo_bin("lifeline").unwrap();
    cmd.args(["chain", "replay", "/nonexistent/cases.json"])
        .assert()
        .code(2)
        .stderr(contains("cannot read"));
}

use predicates::prelude::PredicateBooleanExt;

#[test]
fn genesis_writes_a_file_that_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    let a = lifeline_consensus::conformance::identity_of("A")
        .unwrap()
        .id()
        .to_string();
    let b = lifeline_consensus::conformance::identity_of("B")
        .unwrap()
        .id()
        .to_string();
    let out = dir.path().join("genesis.toml");
    let mut cmd = Command::cargo_bin("lifeline").unwrap();
    cmd.args([
        "chain",
        "genesis",
        "--authority",
        &a,
        "--authority",
        &b,
        "--period-secs",
        "3",
        "--out",
    ])
    .arg(&out)
    .assert()
    .success()
    .stderr(contains("genesis hash"));
    let text = std::fs::read_to_string(&out).unwrap();
    let file = lifeline_consensus::genesis::GenesisFile::from_toml(&text).unwrap();
    let genesis = file.to_genesis().unwrap();
    assert_eq!(genesis.signers.len(), 2);
    assert_eq!(genesis.config.period, std::time::Duration::from_secs(3));
    // Never overwritten by accident.
    let mut again = Command::cargo_bin("lifeline").unwrap();
    again
        .args(["chain", "genesis", "--authority", &a, "--out"])
        .arg(&out)
        .assert()
        .failure()
        .stderr(contains("already exists"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
}

#[test]
fn genesis_names_a_bad_authority() {
    let mut cmd = Command::cargo_bin("lifeline").unwrap();
    cmd.args(["chain", "genesis", "--authority", "not-an-id"])
        .assert()
        .failure()
        .stderr(contains("--authority \"not-an-id\" is not a lifeline id"));
}
