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
