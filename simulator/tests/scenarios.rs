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
    // The same bound as a scenario assertion: met here, and a bound the
    // run misses fails it, saying by how much.
    let mut bounds = scenario.assertions.clone();
    bounds.transmissions_max = [("P2".to_string(), 1.2)].into();
    assert!(
        report.check(&bounds).is_empty(),
        "{:?}",
        report.check(&bounds)
    );
    bounds.transmissions_max = [("P2".to_string(), 0.5)].into();
    let failures = report.check(&bounds);
    assert!(
        failures.len() == 1 && failures[0].contains("at most 0.5 times is allowed"),
        "{failures:?}"
    );
    // The chain ran beside the traffic and kept finalizing everywhere.
    let chain = report.chain.as_ref().expect("smoke runs the chain");
    assert!(chain.finalized_min >= 40 && chain.finalized_conflicts == 0);

    // The HTML report: well-formed SVG charts, one dot per node on the map,
    // every dot green (everything meant for it arrived) or grey (nothing was).
    let html = lifeline_simulator::html::render(&report, &Default::default(), &report.map);
    let svgs: Vec<&str> = html
        .split("<svg")
        .skip(1)
        .map(|rest| rest.split("</svg>").next().unwrap())
        .collect();
    assert_eq!(svgs.len(), 4, "latency, delivery, chain, map");
    for svg in &svgs {
        roxmltree::Document::parse(&format!("<svg{svg}</svg>")).unwrap();
    }
    let map = svgs[3];
    assert_eq!(map.matches("<circle").count() as u64, report.nodes);
    assert!(
        !map.contains("rgb(220,0,40)"),
        "a node got nothing meant for it"
    );
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "opens offline: nothing to run or fetch"
    );
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
fn every_shipped_scenario_loads() {
    // The long ones (scale-10k, scale-50k) are not run by `make test`; a
    // mistake in them must still show here.
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenarios()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            names.push(scenario.name);
        }
    }
    names.sort();
    assert!(names.len() >= 15, "{names:?}");
    assert!(names.contains(&"scale-50k".to_string()), "{names:?}");
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
    // Equal links: hops decide, whatever the delay weighs.
    let p2 = report.classes.iter().find(|c| c.class == "P2").unwrap();
    assert!(
        p2.transmissions_per_message <= 1.1 * p2.shortest_hops_mean,
        "{} transmissions per message for {} hops",
        p2.transmissions_per_message,
        p2.shortest_hops_mean
    );
}

/// Where links differ a lot in delay (long-haul links between cities), SOS
/// and messages take the fastest paths, not the fewest hops. While a hop
/// outweighed 256 ms of round trip, GEANT's P0 p99 stretch was 1.55.
#[test]
fn on_wide_area_graphs_sos_take_the_fastest_paths() {
    for name in ["geant.toml", "abilene.toml"] {
        let scenario = Scenario::load(&scenarios().join(name)).unwrap();
        let (report, _) = run(&scenario, scenario.seed, None).unwrap();
        assert!(report.failures.is_empty(), "{name}: {:?}", report.failures);
        for class in ["P0", "P2"] {
            let c = report.classes.iter().find(|c| c.class == class).unwrap();
            let bound = scenario.assertions.p99_stretch_max[&c.class];
            assert!(bound <= 1.5, "{name}: the issue's bound is 1.5");
            assert!(c.delivered > 200, "{name}: {} delivered", c.delivered);
            assert!(
                c.stretch[1] <= bound,
                "{name} {}: {}",
                c.class,
                c.stretch[1]
            );
        }
    }
}

/// A small chain mesh: 7 authorities on 60 nodes, a block every 2 s, with
/// `chain` added to its `[chain]` table and the faults `faults`.
fn chain_mesh(chain: &str, faults: &str) -> Scenario {
    chain_mesh_of(60, 800, chain, faults)
}

/// [`chain_mesh`] on `nodes` nodes in a square of `side_m` metres.
fn chain_mesh_of(nodes: usize, side_m: u32, chain: &str, faults: &str) -> Scenario {
    let text = format!(
        r#"
name = "chain-small"
warmup_s = 10
duration_s = 120
drain_s = 20
[topology]
kind = "random_geometric"
nodes = {nodes}
side_m = {side_m}
range_m = 260
[chain]
authorities = 7
period_s = 2
tx_rate_per_s = 0.2
{chain}
{faults}
"#
    );
    Scenario::parse(&text, Path::new("chain-small.toml")).unwrap()
}

/// [`chain_mesh`] on 30 nodes at the same density: each of issue 22's
/// fault tests runs 100 seeds, and half the nodes take half the time.
fn small_chain_mesh(chain: &str, faults: &str) -> Scenario {
    chain_mesh_of(30, 566, chain, faults)
}

/// A split after 30 s whose first side has the authorities `sides[k]` from
/// 30 + 6k s on (three periods each), healed at 90 s.
fn shuffle(sides: &str) -> String {
    format!(
        r#"
[[faults]]
kind = "authority_shuffle"
at_s = 30
every_s = 6
heal_s = 90
sides = {sides}
"#
    )
}

/// A 4/3 split of the authorities after 30 s for 60 s, then healed.
const SPLIT_4_3: &str = r#"
[[faults]]
kind = "authority_split"
at_s = 30
heal_s = 90
side = 4
"#;

fn chain_split(equivocators: usize) -> Scenario {
    chain_mesh(&format!("equivocators = {equivocators}"), SPLIT_4_3)
}

/// Runs `scenario` with seeds 1 to `seeds` on both cores (the seeds are
/// independent runs), in seed order.
fn over_seeds(scenario: &Scenario, seeds: u64) -> Vec<(u64, lifeline_simulator::report::Report)> {
    std::thread::scope(|s| {
        let halves: Vec<_> = [1..=seeds / 2, seeds / 2 + 1..=seeds]
            .into_iter()
            .map(|seeds| {
                s.spawn(move || {
                    seeds
                        .map(|seed| (seed, run(scenario, seed, None).unwrap().0))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// What every chain fault must leave: no two nodes ever finalized different
/// blocks at one height, finality went on after the heal (150 s at one
/// block per 2 s), and every node was on one head within 2 periods of the
/// last heal. Returns the periods to agree.
fn safe_and_agreed(seed: u64, chain: &lifeline_simulator::chain::ChainReport) -> f64 {
    assert_eq!(
        chain.finalized_conflicts, 0,
        "seed {seed}: two nodes finalized different blocks"
    );
    assert!(
        chain.finalized_min >= 50,
        "seed {seed}: a node finalized only up to {}",
        chain.finalized_min
    );
    let agreed = chain
        .heal_agreement_periods
        .unwrap_or_else(|| panic!("seed {seed}: nodes never agreed after the heal"));
    assert!(
        agreed <= 2.0,
        "seed {seed}: {agreed} periods to agree after the heal"
    );
    agreed
}

#[test]
fn a_four_three_split_of_the_authorities_never_reverts_finality_over_100_seeds() {
    let scenario = chain_split(0);
    let mut worst_agreement: f64 = 0.0;
    for (seed, report) in over_seeds(&scenario, 100) {
        let chain = report.chain.as_ref().expect("the scenario runs a chain");
        worst_agreement = worst_agreement.max(safe_and_agreed(seed, chain));
        // During the split neither side has the 5 signers finality needs:
        // only blocks sealed before it (up to the head at the split, the
        // sample at 40 s) may still become final.
        let at_split = chain.timeline[4][0];
        for row in &chain.timeline[5..9] {
            assert!(
                row[2] <= at_split,
                "seed {seed}: block {} sealed during the split became final (head at the split: {at_split})",
                row[2]
            );
        }
        assert_eq!(
            chain.txs_registered, chain.txs_submitted,
            "seed {seed}: a registration was lost"
        );
    }
    eprintln!("worst agreement after the heal: {worst_agreement:.2} periods");
}

/// Issue 22: authorities (and the nodes near them) move between the halves
/// of a split while it lasts, so that signers switch branches with a stale
/// view: {0,1,2,3} | {4,5,6}, then {0,1,4,5} | {2,3,6} three periods
/// later, then {2,3,4,6} | {0,1,5}, then healed. With finality by seals,
/// movers could give two branches five sealers each.
#[test]
fn splits_that_reshuffle_their_authorities_never_finalize_two_blocks_over_100_seeds() {
    let scenario = small_chain_mesh(
        "",
        &shuffle("[[0, 1, 2, 3], [0, 1, 4, 5], [2, 3, 4, 6], [0, 1, 2, 3], [0, 1, 4, 5]]"),
    );
    for (seed, report) in over_seeds(&scenario, 100) {
        let chain = report.chain.as_ref().unwrap();
        safe_and_agreed(seed, chain);
    }
}

/// Issue 22: a 5/2 split of 7. The side with five keeps finalizing while
/// the split lasts, the side with two does not, and after the heal both
/// agree on one head (the two come over to the five's final blocks).
#[test]
fn in_a_five_two_split_the_five_finalize_and_the_two_wait() {
    let faults = SPLIT_4_3.replace("side = 4", "side = 5");
    let scenario = small_chain_mesh("", &faults);
    for (seed, report) in over_seeds(&scenario, 100) {
        let chain = report.chain.as_ref().unwrap();
        safe_and_agreed(seed, chain);
        // Samples every 10 s from the warm-up: the split lasts from 40 s to
        // 100 s (rows 4 to 10).
        let at_split = chain.timeline[4];
        let before_heal = chain.timeline[9];
        assert!(
            before_heal[2] >= at_split[0] + 15,
            "seed {seed}: the five finalized only up to {} during the split (head {} at its start)",
            before_heal[2],
            at_split[0]
        );
        assert!(
            before_heal[3] <= at_split[0],
            "seed {seed}: the two finalized block {} sealed during the split",
            before_heal[3]
        );
    }
}

/// Issue 22: two of seven authorities each run twice, with one key and two
/// stores, on nodes far apart, while the sides of a split reshuffle so that
/// honest authorities move between them. Nothing conflicts, and the
/// evidence names only the cloned keys.
#[test]
fn cloned_authorities_and_a_mover_never_finalize_two_blocks_and_are_named() {
    let scenario = small_chain_mesh(
        "clones = 2",
        &shuffle("[[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 3]]"),
    );
    let mut named = 0;
    for (seed, report) in over_seeds(&scenario, 100) {
        let chain = report.chain.as_ref().unwrap();
        safe_and_agreed(seed, chain);
        assert_eq!(chain.cloned_signers.len(), 2);
        for named in [&chain.vote_evidence_signers, &chain.block_evidence_signers] {
            assert!(
                named.iter().all(|s| chain.cloned_signers.contains(s)),
                "seed {seed}: evidence names {named:?}, the clones are {:?}",
                chain.cloned_signers
            );
        }
        named += usize::from(!chain.vote_evidence_signers.is_empty());
    }
    assert!(
        named >= 90,
        "the clones were caught in only {named} of 100 runs"
    );
}

/// Issue 22: crashes that hit authorities; each comes back with its vote
/// record from its store, so that it never votes twice for one height.
#[test]
fn authorities_that_crash_and_restart_never_finalize_two_blocks_over_100_seeds() {
    let faults = format!(
        "{SPLIT_4_3}{}",
        r#"
[[faults]]
kind = "crash"
fraction = 0.3
authorities = true
at_s = 20
down_s = 40
"#
    );
    let scenario = small_chain_mesh("", &faults);
    for (seed, report) in over_seeds(&scenario, 100) {
        let chain = report.chain.as_ref().unwrap();
        safe_and_agreed(seed, chain);
        assert_eq!(report.restarts, 2, "seed {seed}: two of seven authorities");
    }
}

#[test]
fn nodes_catch_an_authority_that_seals_two_blocks_at_one_height() {
    let scenario = chain_split(1);
    let (report, _) = run(&scenario, 5, None).unwrap();
    let chain = report.chain.as_ref().unwrap();
    assert!(chain.equivocations_sealed > 0);
    assert!(
        chain.equivocation_detected_nodes >= 30,
        "only {} of 60 nodes hold proof",
        chain.equivocation_detected_nodes
    );
    assert_eq!(chain.finalized_conflicts, 0);
    assert!(chain.finalized_min >= 50, "{}", chain.finalized_min);
}

/// Issue 22: two equivocators that vote as well as seal (each shows half
/// its neighbours its other blocks), through a 4/3 split, over 100 seeds:
/// nothing conflicts, all agree after the heal, and the block evidence
/// names only them.
#[test]
fn equivocators_that_vote_never_finalize_two_blocks_over_100_seeds() {
    let scenario = small_chain_mesh("equivocators = 2", SPLIT_4_3);
    for (seed, report) in over_seeds(&scenario, 100) {
        let chain = report.chain.as_ref().unwrap();
        safe_and_agreed(seed, chain);
        assert!(chain.equivocations_sealed > 0, "seed {seed}");
        assert!(
            !chain.block_evidence_signers.is_empty()
                && chain
                    .block_evidence_signers
                    .iter()
                    .all(|s| chain.equivocator_signers.contains(s)),
            "seed {seed}: block evidence names {:?}, the equivocators are {:?}",
            chain.block_evidence_signers,
            chain.equivocator_signers
        );
        assert!(
            chain.vote_evidence_signers.is_empty(),
            "seed {seed}: an equivocator's votes keep the rule, yet {:?} are named",
            chain.vote_evidence_signers
        );
    }
}

#[test]
fn an_sos_goes_around_blackholes() {
    let scenario = Scenario::load(&scenarios().join("blackholes.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let p0 = report.classes.iter().find(|c| c.class == "P0").unwrap();
    assert!(p0.sent > 250, "{} SOS", p0.sent);
    assert!(p0.deliverable_ratio >= 0.99, "{}", p0.deliverable_ratio);
    // Half the SOS meet a blackhole on the way, but once a node knows its
    // neighbour is silent, later SOS go around it at once.
    assert!(p0.latency_ms[0] < 1_000.0, "p50 {} ms", p0.latency_ms[0]);
    // The detours stay near the way: far fewer transmissions than a flood.
    assert!(
        p0.transmissions_per_message < 0.3 * p0.flooding_transmissions_per_message,
        "{} transmissions per SOS against {} for a flood",
        p0.transmissions_per_message,
        p0.flooding_transmissions_per_message
    );
}

#[test]
fn sos_flooders_get_no_more_than_the_origin_limit_through() {
    let scenario = Scenario::load(&scenarios().join("flooders.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let flood = report.flood.as_ref().expect("the scenario has flooders");
    assert_eq!(flood.flooders, 6);
    // They did send at 100 times the rate: 3 per 20 s allowed, 15 a second sent.
    let allowed_per_flooder = 3 + 120 / 20;
    assert!(
        flood.sent >= 6 * 100 * allowed_per_flooder / 2,
        "the flooders sent only {}",
        flood.sent
    );
    // Honest nodes saw some of it (the limit lets a little through), never more.
    assert!(flood.delivered_to_honest > 0);
    assert!(flood.admitted_ratio <= 1.0, "{}", flood.admitted_ratio);
    for class in ["P0", "P2"] {
        let c = report.classes.iter().find(|c| c.class == class).unwrap();
        assert_eq!(c.deliverable_ratio, 1.0, "{class} suffered from the flood");
    }
}

#[test]
fn replayed_frames_are_never_delivered_twice_even_after_an_hour_or_a_restart() {
    let scenario = Scenario::load(&scenarios().join("replayers.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let replay = report.replay.as_ref().expect("the scenario has replayers");
    assert_eq!(replay.replayers, 6);
    // 40 nodes restarted between the first and second round, with only
    // what their stores kept (before seen ids were stored: 11 deliveries
    // twice).
    assert_eq!(report.restarts, 40);
    // Each replay round sends every recorded frame to every neighbour:
    // thousands of frames, three rounds, the last one after an hour (when
    // ids kept for a fixed hour had been forgotten: 1,207 deliveries twice).
    assert!(
        replay.frames_replayed > 10_000,
        "only {} frames replayed",
        replay.frames_replayed
    );
    assert_eq!(report.duplicates_delivered, 0);
    for c in &report.classes {
        assert_eq!(c.delivery_ratio, 1.0, "{}: {}", c.class, c.delivery_ratio);
    }
}

#[test]
fn an_sos_crosses_links_kept_80_percent_busy_with_bulk_within_its_stretch() {
    let scenario = Scenario::load(&scenarios().join("bulk-load.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let b = report
        .background
        .as_ref()
        .expect("the scenario has bulk load");
    // The load really was there: about 80% of every link, all of it carried.
    assert!(
        (0.75..0.85).contains(&b.link_utilisation),
        "links {:.3} busy",
        b.link_utilisation
    );
    assert_eq!(b.refused, 0);
    assert!(b.delivered as f64 >= 0.99 * b.sent as f64);
    let p0 = report.classes.iter().find(|c| c.class == "P0").unwrap();
    assert_eq!(p0.delivery_ratio, 1.0);
    // The bound the file states (1.6: the buffer below the router, see
    // there); `failures` above checks it too.
    let bound = scenario.assertions.p99_stretch_max["P0"];
    assert!(p0.stretch[1] <= bound, "P0 p99 stretch {}", p0.stretch[1]);
    assert!(p0.sent > 50);
}

#[test]
fn an_sos_wave_from_one_district_reaches_the_responders() {
    let scenario = Scenario::load(&scenarios().join("sos-burst.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let p0 = report.classes.iter().find(|c| c.class == "P0").unwrap();
    // About 300 * pi * 400^2 / 1400^2 nodes are in the circle; the ones that
    // are responders themselves send nothing.
    assert!((50..=110).contains(&p0.sent), "{} SOS", p0.sent);
    assert_eq!(p0.delivery_ratio, 1.0);
    assert!(p0.latency_ms[2] < 500.0, "{:?}", p0.latency_ms);
}

#[test]
fn a_burst_outside_every_node_or_to_nobody_is_refused_with_the_reason() {
    let base = std::fs::read_to_string(scenarios().join("sos-burst.toml")).unwrap();
    let far = base.replace("center_m = [500, 700]", "center_m = [90000, 90000]");
    let scenario = Scenario::parse(&far, &scenarios().join("far.toml")).unwrap();
    let error = run(&scenario, 1, None).expect_err("no node in the circle");
    assert!(
        error.to_string().contains("no node lies within 400 m"),
        "{error}"
    );
    let bad = base.replace("to = \"authorities\"", "to = \"everyone\"");
    let error = Scenario::parse(&bad, &scenarios().join("bad.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is not \"authorities\", \"any\" or \"circle\""),
        "{error}"
    );
    let half = base.replace("to = \"authorities\"", "to = \"circle\"\nto_radius_m = 50");
    let error = Scenario::parse(&half, &scenarios().join("bad.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("needs `to = \"circle\"` with both"),
        "{error}"
    );
    let load = base.replace("[assert]", "[background]\nload = 1.5\n\n[assert]");
    let error = Scenario::parse(&load, &scenarios().join("bad.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not a fraction of link capacity"),
        "{error}"
    );
}

#[test]
fn walkers_carry_messages_between_shelters_that_are_never_in_range() {
    let scenario = Scenario::load(&scenarios().join("shelters.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        report.components,
        vec![40, 40],
        "the shelters must be apart"
    );
    let m = report.mobility.as_ref().expect("the scenario has walkers");
    assert_eq!(m.walkers, 8);
    // 900 m between the shelters' centres at 1 to 1.5 m/s: nothing can
    // arrive before a walker has covered most of that.
    let walk_ms = 500.0 / 1.5 * 1_000.0;
    for c in &report.classes {
        assert!(c.sent > 10, "{} {}", c.class, c.sent);
        assert!(c.delivered > 0, "walkers carried no {}", c.class);
        assert!(
            c.latency_ms[0] > walk_ms,
            "{} arrived in {} ms: faster than walking",
            c.class,
            c.latency_ms[0]
        );
        assert_eq!(c.lost, 0, "{}", c.class);
        assert_eq!(c.delivered + c.held_at_end, c.sent, "{}", c.class);
    }
}

#[test]
fn walkers_make_and_break_links_and_no_message_is_lost() {
    let scenario = Scenario::load(&scenarios().join("walkers.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let m = report.mobility.as_ref().expect("the scenario has walkers");
    assert_eq!(m.walkers, 30);
    assert!(m.links_made > 100, "{} new links", m.links_made);
    assert!(m.links_down > 100, "{} links went down", m.links_down);
    for c in &report.classes {
        // Whatever did not arrive waits in some node's custody.
        assert_eq!(c.lost, 0, "{}", c.class);
        assert_eq!(c.delivered + c.held_at_end, c.sent, "{}", c.class);
        assert!(c.delivery_ratio >= 0.9, "{} {}", c.class, c.delivery_ratio);
    }
    // The same walk twice: the same report.
    let (again, _) = run(&scenario, scenario.seed, None).unwrap();
    assert_eq!(
        serde_json::to_string(&report).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
}

#[test]
fn mobility_without_positions_or_range_is_refused_with_the_reason() {
    let base = std::fs::read_to_string(scenarios().join("walkers.toml")).unwrap();
    let line = base.replace(
        "kind = \"random_geometric\"\nnodes = 150\nside_m = 1500\nrange_m = 170",
        "kind = \"line\"\nnodes = 10",
    );
    let error = Scenario::parse(&line, &scenarios().join("line.toml")).unwrap_err();
    assert!(
        error.to_string().contains("mobility needs `range_m`"),
        "{error}"
    );
    let slow = base.replace("speed_mps = [0.5, 1.5]", "speed_mps = [2, 1]");
    let error = Scenario::parse(&slow, &scenarios().join("slow.toml")).unwrap_err();
    assert!(error.to_string().contains("speed_mps"), "{error}");
}

/// Scoped routing delivers everything with a fraction of the routes, and of
/// the control traffic to build them, of the same mesh unscoped, where
/// every node keeps a route to every other. (After the warm-up both are
/// quiet: refreshes send digests.)
#[test]
fn scoped_routes_deliver_everything_for_a_fraction_of_the_control_traffic() {
    let scoped = Scenario::load(&scenarios().join("scoped.toml")).unwrap();
    let (report, _) = run(&scoped, scoped.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // Sources looked their far destinations up, and every lookup was
    // answered (nothing fails in this run).
    assert!(report.lookups_sent > 100, "{} lookups", report.lookups_sent);
    assert_eq!(report.lookups_answered, report.lookups_sent);
    let mut flat = scoped.clone();
    flat.router.zone_hops = 0;
    let (unscoped, _) = run(&flat, flat.seed, None).unwrap();
    assert!(unscoped.failures.is_empty(), "{:?}", unscoped.failures);
    assert!(
        report.routes_per_node < 0.5 * unscoped.routes_per_node,
        "scoped {} routes per node, unscoped {}",
        report.routes_per_node,
        unscoped.routes_per_node
    );
    assert!(
        report.warmup_control_bytes_per_node < 0.5 * unscoped.warmup_control_bytes_per_node,
        "scoped {} B per node to build them, unscoped {}",
        report.warmup_control_bytes_per_node,
        unscoped.warmup_control_bytes_per_node
    );
}

/// Issue 23, items 3 and 4, mesh-wide: Sybil attackers send SOS from a
/// fresh key each time, and bulk broadcasts with SOS payloads, asking for
/// 255 hops. No honest relay is reported for what it passed on (the daemon
/// bans on reports; with relays blamed for the origin limits, as before,
/// this run had honest relays reported), honest P2 is all delivered and no
/// honest SOS is lost. Item 7: the honest nodes are registered, so at least
/// 99% of their SOS arrive, about as fast as on an idle mesh. Before their
/// SOS had a neighbour budget of their own, some waited in custody for a
/// retry here: p99 70 s, a stretch of 3,716.
#[test]
fn sybil_floods_get_no_honest_relay_reported_and_lose_no_sos() {
    let scenario = Scenario::load(&scenarios().join("sybils.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let sybil = report.sybil.as_ref().expect("the scenario has Sybils");
    assert_eq!(sybil.sybils, 6);
    assert!(sybil.sent >= 6 * 5 * 55, "only {} sent", sybil.sent);
    assert!(sybil.delivered_to_honest > 0, "the attack reached nobody");
    assert_eq!(report.honest_reported, 0);
    let p0 = report.classes.iter().find(|c| c.class == "P0").unwrap();
    assert_eq!(p0.lost, 0, "an honest SOS was lost");
    assert!(p0.delivery_ratio >= 0.99, "honest P0 {}", p0.delivery_ratio);
    assert!(
        p0.stretch[1] <= 2.0,
        "honest P0 stretch p99 {}",
        p0.stretch[1]
    );
    let p2 = report.classes.iter().find(|c| c.class == "P2").unwrap();
    assert_eq!(p2.delivery_ratio, 1.0);
}

/// Issue 23, item 7, mesh-wide: crowders fill custody with P2 and SOS to
/// addresses no route reaches, each signed by a fresh key, while a split
/// makes honest messages wait in custody too (quotas of 300). Every honest
/// message arrives after the heal and none is lost. With the old eviction
/// (a crowder's SOS outranked every honest P2, and no neighbour had a fair
/// share), this run delivered 103 of 111 P2: 7 still held, 1 lost.
#[test]
fn crowders_fill_only_their_own_share_of_custody() {
    let scenario = Scenario::load(&scenarios().join("crowders.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let sybil = report.sybil.as_ref().expect("the scenario has crowders");
    assert!(sybil.sent >= 4_000, "only {} sent", sybil.sent);
    for class in ["P0", "P2"] {
        let c = report.classes.iter().find(|c| c.class == class).unwrap();
        assert_eq!(c.lost, 0, "an honest {class} message was lost");
        assert_eq!(c.delivery_ratio, 1.0, "{class}");
    }
    assert_eq!(report.honest_reported, 0);
}

/// Issue 23, item 5, mesh-wide: pullers ask for everything custody
/// summaries list, claim custody of each copy and drop it, while a split
/// makes honest messages wait in custody. Every honest message arrives
/// after the heal and none is lost: a pull gets a copy, and the holder
/// keeps custody unless the puller is closer by its own routes.
#[test]
fn pullers_that_drop_take_no_custody_away() {
    let scenario = Scenario::load(&scenarios().join("pullers.toml")).unwrap();
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let [asked, dropped] = report.pull.expect("the scenario has pullers");
    assert!(dropped > 0, "the pullers got nothing ({asked} asked)");
    for class in ["P0", "P2"] {
        let c = report.classes.iter().find(|c| c.class == class).unwrap();
        assert_eq!(c.lost, 0, "an honest {class} message was lost");
        assert_eq!(c.deliverable_ratio, 1.0, "{class}");
    }
}

/// P0 p50 and p99 (ms) the daemons measured under the same load, on
/// their links: `cargo bench --locked -p lifeline --bench line_latency`,
/// release daemons, 100 samples a phase, with bulk cruising below the
/// link. The simulator has links but no CPU, so the p99 is each run's
/// loaded p99 less what the same bulk added to it over links without
/// limits (the bench's host floor, loaded p99 minus idle p99, in the same
/// run): the work of carrying bulk through five daemons on one two-core
/// machine. Over TCP, three runs: p50 3, 3 and 3, p99 11 - (7 - 5) = 9,
/// 7 - (6 - 4) = 5 and 9 - (8 - 5) = 6; over QUIC, two: p50 2 and 3, p99
/// 7 - (6 - 4) = 5 and 10 - (11 - 4) = 3. The medians of the five.
/// (Unsubtracted: p99 11, 7, 9, 7 and 10. Before bulk cruised below the
/// link, alternated with these in the same sitting: p50 3 to 4, p99 12,
/// 10, 15, 9 and 9 unsubtracted.)
const DAEMONS_LOADED_P0_MS: [f64; 2] = [3.0, 5.0];

/// Issue 24: the simulator models the buffer below each router, so it no
/// longer promises an SOS more than the daemons deliver. With the buffers
/// of before (the writer's 64 KiB and a kernel send buffer autotuned to
/// megabytes) and no pacing, an SOS behind bulk waits out the buffer at
/// every hop, as the daemons did (`line_latency`: p50 466 ms over TCP);
/// with today's buffers and bulk paced it stays close to idle. And it
/// predicts what the daemons measure: P0's p50 and p99 under load, the
/// medians of four seeds, within 25% of theirs.
///
/// Issue 24's target holds here: loaded P0 p50 and p99 within 1.25 times
/// idle (about 1.05 and 1.23 with these seeds), where they were 1.15 and
/// 2.77 before bulk cruised below the link.
///
/// Bulk keeps up with its load on every seed: with seed 26 a pacer kept a
/// capacity it had measured as 1.2 MB/s on a 2.5 MB/s link for 25 s, cut
/// its pace below that at every queue, and bulk waited 20 s at p99 (the
/// other seeds: under 0.7 s).
#[test]
fn an_sos_waits_out_the_buffers_below_the_router_unless_bulk_is_paced() {
    let base = Scenario::load(&scenarios().join("line-latency.toml")).unwrap();
    let run_seed = |scenario: &Scenario, seed: u64| {
        let (report, _) = run(scenario, seed, None).unwrap();
        assert!(
            report.failures.is_empty(),
            "seed {seed}: {:?}",
            report.failures
        );
        let class = |name: &str| report.classes.iter().find(|c| c.class == name).cloned();
        (class("P0").unwrap().latency_ms, class("P3"))
    };
    let mut idle = base.clone();
    idle.traffic.retain(|t| t.class == "P0");
    let (idle, _) = run_seed(&idle, base.seed);
    let mut paced = Vec::new();
    for seed in base.seed..base.seed + 4 {
        let (p0, p3) = run_seed(&base, seed);
        let p3 = p3.unwrap();
        assert_eq!(p3.delivered, p3.sent, "seed {seed}: bulk lost");
        assert!(
            p3.latency_ms[2] < 2_000.0,
            "seed {seed}: bulk p50/p90/p99 {:?} ms",
            p3.latency_ms
        );
        paced.push(p0);
    }
    let median = |k: usize| {
        let mut v: Vec<f64> = paced.iter().map(|p| p[k]).collect();
        v.sort_by(f64::total_cmp);
        (v[1] + v[2]) / 2.0
    };
    let paced = [median(0), median(1), median(2)];
    let mut before = base.clone();
    before.links.buffer_bytes = 64 * 1024 + 4 * 1024 * 1024;
    before.router.pace_target_ms = 0.0;
    let (unpaced, _) = run_seed(&before, base.seed);
    eprintln!(
        "P0 latency p50/p90/p99 ms: idle {idle:?}, paced (medians of 4 seeds) {paced:?}, \
         before {unpaced:?}; the daemons loaded: p50 {}, p99 {}",
        DAEMONS_LOADED_P0_MS[0], DAEMONS_LOADED_P0_MS[1]
    );
    // Four hops of 0.3 to 1.3 ms and a little transmission.
    assert!(idle[0] < 6.0, "{idle:?}");
    assert!(
        unpaced[0] > 10.0 * idle[0],
        "with the old buffers an SOS waits behind bulk: {unpaced:?} against {idle:?}"
    );
    // Nine SOS in ten wait less than one idle trip more: the pace does not
    // creep above a link's rate behind its token bucket (it did: p90 12 ms
    // in the simulator, 10 to 13 in the daemons).
    assert!(
        paced[1] <= 2.0 * idle[1],
        "loaded P0 p90 {:.2} ms against {:.2} idle",
        paced[1],
        idle[1]
    );
    // And 99 in 100 wait little more than idle: bulk cruises below the
    // link, so no queue stands on the hops for an SOS to wait out (with
    // the pace settling where the queue reached its target: 12.1 ms
    // against 4.4 idle).
    assert!(
        paced[2] <= 1.5 * idle[2],
        "loaded P0 p99 {:.2} ms against {:.2} idle",
        paced[2],
        idle[2]
    );
    for (got, daemons, what) in [
        (paced[0], DAEMONS_LOADED_P0_MS[0], "p50"),
        (paced[2], DAEMONS_LOADED_P0_MS[1], "p99"),
    ] {
        assert!(
            (got / daemons - 1.0).abs() <= 0.25,
            "loaded P0 {what}: the simulator says {got:.2} ms, the daemons {daemons} ms"
        );
    }
    assert!(
        unpaced[0] > 20.0 * paced[0],
        "{unpaced:?} against {paced:?}"
    );
}

/// The line of `line-latency.toml` with every node's synced writes taking
/// `sync_ms` (an SD card: tens of ms).
fn line_with_disk(sync_ms: f64) -> Scenario {
    let mut scenario = Scenario::load(&scenarios().join("line-latency.toml")).unwrap();
    scenario.disk.sync_ms = sync_ms;
    scenario
}

/// The daemons write custody on a thread of their own and forward first,
/// and a destination shows a message before its router's write (it keeps
/// it in its inbox with the seen record). So a slow disk, 20 ms a sync at
/// every node, holds up custody acknowledgements, not an SOS: idle and
/// under bulk, P0 crosses the line about as fast as with an instant disk,
/// and bulk keeps up with its load. A delivery that waited for the
/// destination's write (as before 2026-12-07) would add 20 ms; forwarding
/// only after the write, 80.
///
/// The SOS's receipt is another matter: its sender hears "delivered" only
/// once the destination has it on disk (as the daemon does since
/// 2026-12-07), so a sync later than with an instant disk.
#[test]
fn a_slow_disk_holds_up_acknowledgements_and_receipts_not_an_sos() {
    let p0_and_p3 = |scenario: &Scenario| {
        let (report, _) = run(scenario, scenario.seed, None).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let class = |name: &str| report.classes.iter().find(|c| c.class == name).cloned();
        (class("P0").unwrap(), class("P3"))
    };
    let idle = |mut scenario: Scenario| {
        scenario.traffic.retain(|t| t.class == "P0");
        scenario
    };
    let (instant, _) = p0_and_p3(&idle(line_with_disk(0.0)));
    let (slow_idle, _) = p0_and_p3(&idle(line_with_disk(20.0)));
    for (p0, sync_ms) in [(&instant, 0.0), (&slow_idle, 20.0)] {
        eprintln!(
            "{sync_ms} ms syncs: P0 delivered p50 {:.2} ms, its receipt p50 / p90 / p99 {:?} ms",
            p0.latency_ms[0], p0.receipt_ms
        );
        assert_eq!(
            p0.receipts, p0.delivered,
            "P0 receipts with {sync_ms} ms syncs"
        );
        // From delivery to the sender hearing of it: the destination's
        // inbox write, then the way back.
        let back = p0.receipt_ms[0] - p0.latency_ms[0];
        assert!(
            back >= sync_ms && back < sync_ms + 2.0 * p0.latency_ms[0],
            "with {sync_ms} ms syncs, the receipt came {back:.2} ms after the delivery \
             (P0 p50 {:.2} ms)",
            p0.latency_ms[0]
        );
    }
    let (instant, slow_idle) = (instant.latency_ms, slow_idle.latency_ms);
    let (slow_loaded, p3) = p0_and_p3(&line_with_disk(20.0));
    let slow_loaded = slow_loaded.latency_ms;
    eprintln!(
        "P0 latency p50/p90/p99 ms: instant disk {instant:?}, 20 ms syncs {slow_idle:?}, \
         and under bulk {slow_loaded:?}"
    );
    for k in [0, 2] {
        assert!(
            slow_idle[k] <= instant[k] + 1.0,
            "idle: {slow_idle:?} against {instant:?} with an instant disk"
        );
    }
    assert!(
        slow_loaded[2] <= 1.5 * instant[2],
        "under bulk: {slow_loaded:?} against {instant:?} idle with an instant disk"
    );
    let p3 = p3.unwrap();
    assert_eq!(p3.delivered, p3.sent, "bulk lost");
    assert!(p3.latency_ms[2] < 2_000.0, "bulk {:?} ms", p3.latency_ms);
}

/// Nothing lost with a slow disk: a node that crashes with a write out
/// loses that write, and had acknowledged nothing of it, so the previous
/// hop still holds what it would have taken in. Relays on the line crash
/// under bulk and SOS traffic, with 20 ms syncs, so that most crashes
/// find a write out.
#[test]
fn nodes_that_crash_with_a_write_out_lose_no_message() {
    let mut scenario = line_with_disk(20.0);
    scenario.faults = toml::from_str::<Scenario>(
        r#"
        name = "crashes"
        duration_s = 1
        [topology]
        kind = "line"
        nodes = 2
        [[faults]]
        kind = "crash"
        authorities = true
        fraction = 0.4
        at_s = 12
        down_s = 3
        [[faults]]
        kind = "crash"
        authorities = true
        fraction = 0.4
        at_s = 24
        down_s = 3
        "#,
    )
    .unwrap()
    .faults;
    let (report, _) = run(&scenario, scenario.seed, None).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.restarts >= 2, "{} restarts", report.restarts);
    for c in &report.classes {
        assert_eq!(c.lost, 0, "{}: {} lost", c.class, c.lost);
        assert_eq!(c.delivered, c.sent, "{}", c.class);
    }
    assert_eq!(report.duplicates_delivered, 0);
}
