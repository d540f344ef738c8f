//! The simulator on real scenarios: determinism, loaders on the shared
//! topologies, and the behaviour the scenarios promise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use lifeline_simulator::run::run;
use lifeline_simulator::scenario::Scenario;
use lifeline_simulator::topology::Topology;

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn shared(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/topologies")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): the shared topologies belong beside the repository",
            path.display()
        )
    })
}

#[test]
fn the_same_scenario_and_seed_give_a_byte_identical_report() {
    let scenario = Scenario::load(&scenarios().join("smoke.toml")).unwrap();
    let (a, _) = run(&scenario, 11, None).unwrap();
    let (b, _) = run(&scenario, 11, None).unwrap();
    assert_eq!(a.to_json(), b.to_json());
    let (c, _) = run(&scenario, 12, None).unwrap();
    assert_ne!(a.to_json(), c.to_json(), "another seed, another run");
}

#[test]
fn the_smoke_scenario_delivers_everything_with_real_crypto() {
    let scenario = Scenario::load(&scenarios().join("smoke.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for class in &report.classes {
        if !class.broadcast {
            assert_eq!(
                class.opened, class.delivered,
                "{}: every envelope opens at its recipient",
                class.class
            );
            // Unicast goes along the shortest path: transmissions per message
            // close to the shortest hop count.
            assert!(
                class.transmissions_per_message <= 1.2 * class.shortest_hops_mean + 0.5,
                "{}: {} transmissions per message for {} hops",
                class.class,
                class.transmissions_per_message,
                class.shortest_hops_mean
            );
        }
    }
    assert_eq!(report.duplicates_delivered, 0);
}

#[test]
fn messages_sent_during_a_partition_arrive_after_it_heals() {
    let scenario = Scenario::load(&scenarios().join("partition.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // Some messages crossed the cut: their latency is minutes, not milliseconds.
    let p2 = report.classes.iter().find(|c| c.class == "P2").unwrap();
    assert!(
        p2.latency_ms[2] > 60_000.0,
        "p99 {} ms: nothing waited for the heal?",
        p2.latency_ms[2]
    );
}

#[test]
fn the_shared_topologies_load_with_their_published_sizes() {
    let leipzig = Topology::from_meshnet_lab(&shared("freifunk-leipzig.json"), &[]).unwrap();
    assert_eq!((leipzig.nodes.len(), leipzig.edges.len()), (210, 413));
    let radio = Topology::from_meshnet_lab(
        &shared("freifunk-leipzig.json"),
        &["wifi".into(), "other".into()],
    )
    .unwrap();
    assert_eq!(radio.edges.len(), 330);
    let netjson = Topology::from_netjson(&shared("netjson.json")).unwrap();
    assert_eq!((netjson.nodes.len(), netjson.edges.len()), (147, 191));
    assert_eq!(
        netjson.components().len(),
        2,
        "reported per component, not rejected"
    );
    let abilene = Topology::from_graphml(&shared("Abilene.graphml")).unwrap();
    assert_eq!((abilene.nodes.len(), abilene.edges.len()), (11, 14));
    // Latency from great-circle distance: New York to Chicago is about 1,150 km, ~5.7 ms.
    assert!(
        abilene
            .edges
            .iter()
            .all(|e| e.latency_ms.is_some_and(|l| l > 0.0 && l < 25.0))
    );
    let geant = Topology::from_graphml(&shared("Geant2012.graphml")).unwrap();
    assert_eq!((geant.nodes.len(), geant.edges.len()), (40, 61));
}

#[test]
fn a_bad_scenario_says_where_and_what() {
    let err = Scenario::parse(
        "name = \"x\"\nduration_s = \"long\"\n[topology]\nkind = \"line\"\nnodes = 3\n",
        Path::new("bad.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
    let err = Scenario::parse(
        "name = \"x\"\nduration_s = 1\n[topology]\nkind = \"line\"\nnodes = 3\n[[traffic]]\nclass = \"P9\"\nrate_per_s = 1\n",
        Path::new("bad.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("P9"), "{err}");
}

#[test]
fn control_traffic_on_the_leipzig_mesh_stays_under_budget() {
    let scenario = Scenario::load(&scenarios().join("leipzig.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.control_bytes_per_node_s > 0.0 && report.control_bytes_per_node_s < 200.0);
}
