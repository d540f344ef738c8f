//! CAP 1.2 XML in and out. Alerts shaped like real ones (the OASIS
//! specification's Appendix A, a bilingual geocode-only national feed, a
//! Cancel without `<info>`, several polygons with the public text in
//! parameters, a "threat over" Update) are read, written back, and compared
//! field by field with the original; bad documents are refused naming the
//! element, line and whose rule; hostile ones stay bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lifeline_consensus::alert::{
    Alert, AlertCategory, AlertMsgType, AlertResponseType, AlertSeverity, AlertStatus, Coverage,
    Point, sample_flood,
};
use lifeline_consensus::cap::{
    CapError, MAX_CAP_LEN, Rule, cap_fields, format_time, from_cap_xml, to_cap_xml,
};
use lifeline_consensus::wire::pb;
use lifeline_crypto::Timestamp;
use proptest::prelude::*;

const FLOOD: &str = include_str!("../../docs/examples/flood-alert.xml");
const REAL_SHAPED: &[(&str, &str)] = &[
    ("flood-alert", FLOOD),
    (
        "oasis-a2-thunderstorm",
        include_str!("cap/oasis-a2-thunderstorm.xml"),
    ),
    (
        "oasis-a3-earthquake-update",
        include_str!("cap/oasis-a3-earthquake-update.xml"),
    ),
    (
        "bilingual-geocode-only",
        include_str!("cap/bilingual-geocode-only.xml"),
    ),
    (
        "cancel-without-info",
        include_str!("cap/cancel-without-info.xml"),
    ),
    (
        "wea-polygons-media",
        include_str!("cap/wea-polygons-media.xml"),
    ),
    (
        "threat-over-update",
        include_str!("cap/threat-over-update.xml"),
    ),
];

fn no_lookup(_: &str) -> Option<(String, Timestamp)> {
    None
}

fn sorted_fields(xml: &str) -> Vec<(String, String)> {
    let mut f = cap_fields(xml).unwrap();
    f.sort();
    f
}

fn fixture(name: &str) -> &'static str {
    REAL_SHAPED.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn real_shaped_alerts_are_carried_and_written_back_field_by_field() {
    for (name, xml) in REAL_SHAPED {
        let import = from_cap_xml(xml).unwrap_or_else(|e| panic!("{name} refused: {e}"));
        let written = to_cap_xml(&import.alert, &no_lookup);
        assert_eq!(
            sorted_fields(&written),
            sorted_fields(xml),
            "{name}: the written alert differs from the original\n{written}"
        );
        let again = from_cap_xml(&written).unwrap();
        assert_eq!(again.alert, import.alert, "{name}");
        assert!(
            again.not_carried.is_empty(),
            "{name}: {:?}",
            again.not_carried
        );
    }
}

#[test]
fn what_people_act_on_is_kept() {
    let a = from_cap_xml(fixture("bilingual-geocode-only"))
        .unwrap()
        .alert;
    assert_eq!(a.infos.len(), 2);
    assert_eq!(a.infos[1].language, "fr-CA");
    assert_eq!(a.infos[1].instruction, "Évitez de voyager ce soir.");
    assert_eq!(a.infos[0].response_types, [AlertResponseType::Monitor]);
    assert_eq!(a.infos[0].areas.len(), 2);
    assert_eq!(a.infos[0].areas[0].geocodes[0].value, "3506008");
    assert_eq!(a.codes, ["profile:CAP-CP:0.4", "layer:SOREM:1.0"]);
    // A reader picks the language: a full tag, its primary part, or the first.
    assert_eq!(a.info_in("fr").unwrap().language, "fr-CA");
    assert_eq!(a.info_in("FR-ca").unwrap().language, "fr-CA");
    assert_eq!(a.info_in("de").unwrap().language, "en-CA");
    assert_eq!(a.info_in("").unwrap().language, "en-CA");
    // Known by code only: a point cannot be placed inside or outside.
    assert_eq!(
        a.coverage(Point {
            lat: 45.4,
            lon: -75.7
        }),
        Coverage::CodeOnly
    );

    let wea = from_cap_xml(fixture("wea-polygons-media")).unwrap();
    let info = &wea.alert.infos[0];
    assert!(
        info.headline.is_empty(),
        "the public text is in the parameters"
    );
    assert_eq!(info.parameters[0].name, "CMAMtext");
    assert!(info.parameters[0].value.starts_with("Wildfire: evacuate"));
    assert_eq!(info.areas[0].polygons.len(), 2);
    assert_eq!(info.expires, None);
    assert_eq!(
        info.resources[0].uri,
        "https://fire.example.gov/maps/ridge.png"
    );
    // Inside the second polygon only.
    assert_eq!(
        wea.alert.coverage(Point {
            lat: 34.32,
            lon: -117.02
        }),
        Coverage::Inside
    );
    assert_eq!(
        wea.alert.coverage(Point {
            lat: 35.0,
            lon: -117.02
        }),
        Coverage::Outside
    );
    // The embedded media is dropped with a note, not refused.
    assert!(
        wea.not_carried
            .iter()
            .any(|n| n.starts_with("<derefUri> (line 42)")),
        "{:?}",
        wea.not_carried
    );

    let cancel = from_cap_xml(fixture("cancel-without-info")).unwrap().alert;
    assert_eq!(cancel.msg_type, AlertMsgType::Cancel);
    assert!(cancel.infos.is_empty());
    assert_eq!(
        cancel.references[0].identifier,
        "urn:oid:2.49.0.1.124.2036.11.21.1"
    );

    let over = from_cap_xml(fixture("threat-over-update")).unwrap().alert;
    assert_eq!(over.infos[0].expires.map(|e| e.at), Some(over.sent.at));
    assert_eq!(over.references.len(), 2);

    let quake = from_cap_xml(fixture("oasis-a3-earthquake-update"))
        .unwrap()
        .alert;
    assert_eq!(quake.infos[0].areas[0].circles[0].radius_km, 0.0);
    assert_eq!(quake.severity(), AlertSeverity::Minor);
}

#[test]
fn the_example_alert_reads_with_every_field() {
    let import = from_cap_xml(FLOOD).unwrap();
    let a = &import.alert;
    assert_eq!(a.identifier, "DE-SN-LZ-2026-1121-001");
    // 14:30 at +01:00 is 13:30 UTC, and is written back at +01:00.
    assert_eq!(format_time(a.sent.at), "2026-11-21T13:30:00-00:00");
    assert_eq!(a.sent.offset_minutes, 60);
    assert!(to_cap_xml(a, &no_lookup).contains("<sent>2026-11-21T14:30:00+01:00</sent>"));
    assert_eq!(a.status, AlertStatus::Exercise);
    assert_eq!(a.note, "Exercise: Leipzig flood drill, November 2026");
    let info = &a.infos[0];
    assert_eq!(info.categories, [AlertCategory::Met, AlertCategory::Safety]);
    assert_eq!(info.sender_name, "Civil protection, Leipzig district");
    assert_eq!(info.parameters[0].value, "412");
    assert!(a.covers(Point {
        lat: 51.335,
        lon: 12.33
    }));
    assert!(import.not_carried.is_empty(), "{:?}", import.not_carried);
}

#[test]
fn a_first_form_update_names_the_alert_it_replaces_as_a_cap_triple() {
    let mut pb = sample_flood("flood-2", 1_800_000_000_000);
    pb.msg_type = AlertMsgType::Update.into();
    pb.references = vec!["flood-1".into()];
    let update = Alert::from_pb(pb).unwrap();
    let earlier = Timestamp::from_unix_millis(1_799_999_000_000);
    let lookup = |id: &str| (id == "flood-1").then(|| ("agency@example.org".to_owned(), earlier));
    let xml = to_cap_xml(&update, &lookup);
    let triple = format!("agency@example.org,flood-1,{}", format_time(earlier));
    assert!(xml.contains(&triple), "{xml}");
    let read = from_cap_xml(&xml).unwrap().alert;
    assert_eq!(read.references[0].identifier, "flood-1");
    assert_eq!(read.references[0].sender, "agency@example.org");
}

fn edited(from: &str, to: &str) -> String {
    assert!(FLOOD.contains(from), "the example has no {from:?}");
    FLOOD.replacen(from, to, 1)
}

fn refused(xml: &str) -> CapError {
    from_cap_xml(xml).expect_err("a bad document was accepted")
}

#[track_caller]
fn check(e: &CapError, element: &str, line: u32, rule: Rule, says: &str) {
    assert_eq!(
        (e.element.as_str(), e.line, e.rule),
        (element, line, rule),
        "{e}"
    );
    assert!(e.to_string().contains(says), "{e}");
    assert!(
        e.to_string().contains(&format!("a {rule} rule")),
        "the message says whose rule: {e}"
    );
}

#[test]
fn bad_documents_are_refused_naming_element_line_and_rule() {
    let e = refused(&edited(
        "<identifier>DE-SN-LZ-2026-1121-001</identifier>",
        "",
    ));
    check(&e, "identifier", 4, Rule::Cap, "required in the <alert>");

    let e = refused(&edited(
        "<status>Exercise</status>",
        "<status>Real</status>",
    ));
    check(
        &e,
        "status",
        8,
        Rule::Cap,
        "\"Real\"; CAP 1.2 allows Actual, Exercise",
    );

    let e = refused(&edited(
        "<severity>Severe</severity>",
        "<severity>severe</severity>",
    ));
    check(&e, "severity", 19, Rule::Cap, "\"severe\"");

    let e = refused(&edited("2026-11-21T14:30:00+01:00", "2026-11-21T13:30:00Z"));
    check(&e, "sent", 7, Rule::Cap, "-00:00");

    let e = refused(&edited(
        "<scope>Public</scope>",
        "<scope>Restricted</scope>",
    ));
    check(&e, "scope", 10, Rule::Lifeline, "only Public");

    let e = refused(&edited(
        "51.3300,12.3200 51.3300,12.3450",
        "51.33;12.32 51.33,12.345",
    ));
    check(&e, "polygon", 32, Rule::Cap, "\"lat,lon\"");

    let e = refused(&edited(
        "51.3420,12.3200 51.3300,12.3200</polygon>",
        "51.3420,12.3200</polygon>",
    ));
    check(&e, "area", 30, Rule::Cap, "closed");

    let e = refused(&edited("<event>Flood</event>", ""));
    check(&e, "event", 12, Rule::Cap, "required in the <info>");

    let long = "x".repeat(300);
    let e = refused(&edited(
        "<event>Flood</event>",
        &format!("<event>{long}</event>"),
    ));
    check(&e, "info", 12, Rule::Lifeline, "too long");

    let e = refused(&edited(
        "<identifier>DE-SN-LZ-2026-1121-001</identifier>",
        "<identifier>DE SN 1</identifier>",
    ));
    check(&e, "identifier", 5, Rule::Cap, "spaces, commas");

    let e = refused(&FLOOD.replace("cap:1.2", "cap:1.1"));
    check(&e, "alert", 4, Rule::Lifeline, "change the namespace");
    let e = refused("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\"><identifier>");
    assert_eq!(e.rule, Rule::Xml, "{e}");
    let e = refused("<html><body>not an alert</body></html>");
    check(&e, "html", 1, Rule::Cap, "not a CAP <alert>");
}

#[test]
fn what_lifeline_used_to_refuse_is_valid() {
    // Several <info> blocks, no <expires>, expires equal to sent, several
    // polygons, geocodes only, a Cancel without <info>: all in the fixtures.
    for (name, xml) in REAL_SHAPED {
        assert!(from_cap_xml(xml).is_ok(), "{name}");
    }
    // Expires before sent is CAP-valid too: the chain decides whether it
    // says anything (a new Alert already over is refused there).
    let old = edited("2036-11-21T20:30:00+01:00", "2020-01-01T00:00:00+00:00");
    assert!(from_cap_xml(&old).is_ok());
}

#[test]
fn hostile_documents_are_bounded() {
    // An entity expansion bomb: DTDs are refused outright.
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x \"xxxxxxxxxx\">\
                <!ENTITY y \"&x;&x;&x;&x;&x;&x;&x;&x;&x;&x;\">]><alert>&y;</alert>";
    assert_eq!(from_cap_xml(bomb).unwrap_err().rule, Rule::Xml);
    let big = format!("{FLOOD}{}", " ".repeat(MAX_CAP_LEN));
    let e = from_cap_xml(&big).unwrap_err();
    assert!(e.message.contains("at most 4 MiB"), "{e}");
    let many = FLOOD.replace(
        "<note>",
        &format!("{}<note>", "<code>x</code>".repeat(30_000)),
    );
    assert!(from_cap_xml(&many).is_err());
    // Within the file limit but more than the chain stores: the size it
    // would take is named.
    let parameters = "<parameter><valueName>x</valueName><value>".to_owned()
        + &"y".repeat(8000)
        + "</value></parameter>";
    let huge = edited("<area>", &format!("{}<area>", parameters.repeat(6)));
    let e = from_cap_xml(&huge).unwrap_err();
    assert_eq!(e.rule, Rule::Lifeline, "{e}");
    assert!(e.message.contains("as lifeline stores it"), "{e}");
}

fn text() -> impl Strategy<Value = String> {
    // Letters, spaces and the characters XML must escape; no outer spaces
    // (CAP readers trim).
    "[a-zA-Z0-9<>&\"'][a-zA-Z0-9<>&\"' ]{0,30}[a-zA-Z0-9<>&]"
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9.:@_-]{1,20}"
}

fn time() -> impl Strategy<Value = pb::CapTime> {
    (0i64..4_000_000_000, -12i32..14).prop_map(|(s, h)| pb::CapTime {
        unix_secs: s,
        offset_minutes: h * 60 + if h == 5 { 30 } else { 0 },
    })
}

fn values() -> impl Strategy<Value = Vec<pb::CapValue>> {
    prop::collection::vec(
        (token(), text()).prop_map(|(name, value)| pb::CapValue { name, value }),
        0..3,
    )
}

fn area() -> impl Strategy<Value = pb::CapArea> {
    let point = (-80.0f64..80.0, -170.0f64..170.0).prop_map(|(lat, lon)| pb::Point { lat, lon });
    (
        text(),
        prop::collection::vec(prop::collection::vec(point.clone(), 3..6), 0..3),
        prop::collection::vec((point, 0.0f64..500.0), 0..2),
        values(),
        prop::option::of(0.0f64..30_000.0),
    )
        .prop_map(
            |(description, rings, circles, geocodes, altitude)| pb::CapArea {
                description,
                polygons: rings
                    .into_iter()
                    .map(|mut points| {
                        points.push(points[0]);
                        pb::Polygon { points }
                    })
                    .collect(),
                circles: circles
                    .into_iter()
                    .map(|(center, radius_km)| pb::Circle {
                        center: Some(center),
                        radius_km,
                    })
                    .collect(),
                geocodes,
                altitude,
                ceiling: altitude.map(|a| a + 100.0),
            },
        )
}

fn info() -> impl Strategy<Value = pb::CapInfo> {
    (
        (
            token(),
            prop::collection::vec(1i32..=12, 1..3),
            text(),
            prop::collection::vec(1i32..=9, 0..3),
        ),
        (1i32..=5, 1i32..=5, 1i32..=5, values()),
        (prop::option::of(time()), prop::option::of(time())),
        (text(), text(), text(), values()),
        prop::collection::vec(area(), 0..3),
    )
        .prop_map(
            |(
                (language, categories, event, response_types),
                (u, s, c, event_codes),
                (onset, expires),
                (headline, description, contact, parameters),
                areas,
            )| {
                pb::CapInfo {
                    language,
                    categories,
                    event,
                    response_types,
                    urgency: u,
                    severity: s,
                    certainty: c,
                    audience: String::new(),
                    event_codes,
                    effective: None,
                    onset,
                    expires,
                    sender_name: String::new(),
                    headline,
                    description,
                    instruction: String::new(),
                    web: String::new(),
                    contact,
                    parameters,
                    resources: vec![pb::CapResource {
                        description: "map".into(),
                        mime_type: "image/png".into(),
                        size: Some(10),
                        uri: "https://example.org/m.png".into(),
                        digest: String::new(),
                    }],
                    areas,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any alert lifeline accepts writes out as CAP that a reader takes
    /// back to the same alert, and whose fields match it.
    #[test]
    fn any_accepted_alert_round_trips_to_an_equivalent_one(
        identifier in token(),
        sender in token(),
        sent in time(),
        status in 1i32..=5,
        msg_type in 1i32..=5,
        references in prop::collection::vec((token(), token(), time()), 0..3),
        note in text(),
        infos in prop::collection::vec(info(), 0..3),
    ) {
        let needs_references = msg_type == 2 || msg_type == 3;
        let references: Vec<pb::CapReference> = references
            .into_iter()
            .map(|(sender, identifier, sent)| pb::CapReference { sender, identifier, sent: Some(sent) })
            .collect();
        prop_assume!(!needs_references || !references.is_empty());
        let cap = pb::CapAlert {
            identifier, sender, sent: Some(sent), status, msg_type, source: String::new(),
            codes: vec!["profile:x".into()], note, references, incidents: String::new(), infos,
        };
        let Ok(alert) = Alert::from_cap_pb(cap) else {
            // Too large: nothing to round-trip.
            return Ok(());
        };
        let xml = to_cap_xml(&alert, &no_lookup);
        let back = from_cap_xml(&xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(&back.alert, &alert);
        let again = to_cap_xml(&back.alert, &no_lookup);
        prop_assert_eq!(sorted_fields(&again), sorted_fields(&xml));
    }
}
